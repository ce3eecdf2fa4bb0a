// The Express side of sesame's interop tests: the real express-session with the real store
// packages, configured from the environment exactly like sesame's `interop` example, so the two
// apps share one cookie and one store. The routes mirror `examples/interop.rs` one for one.
//
//   SESAME_STORE=redis|postgres|mongodb  PORT  SESSION_SECRET (comma-separated, first signs)
//   COOKIE_NAME (connect.sid)  COOKIE_MAX_AGE (ms, unset = browser-session cookie)
//   redis:    REDIS_URL, REDIS_PREFIX (sess:)
//   postgres: DATABASE_URL, PG_SCHEMA (public), PG_TABLE (session)
//   mongodb:  MONGODB_URL, MONGODB_COLLECTION (sessions), MONGODB_STRINGIFY (true)
'use strict';

const express = require('express');
const session = require('express-session');
const flash = require('connect-flash');

const env = (name, fallback) => process.env[name] ?? fallback;

async function makeStore(kind) {
  switch (kind) {
    case 'redis': {
      const { createClient } = require('redis');
      const { RedisStore } = require('connect-redis');
      const client = createClient({ url: env('REDIS_URL', 'redis://127.0.0.1:6379') });
      client.on('error', (error) => console.error('redis:', error.message));
      await client.connect();
      return new RedisStore({ client, prefix: env('REDIS_PREFIX', 'sess:') });
    }
    case 'postgres': {
      const { Pool } = require('pg');
      const PgStore = require('connect-pg-simple')(session);
      const pool = new Pool({
        connectionString: env('DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/test'),
      });
      return new PgStore({
        pool,
        schemaName: env('PG_SCHEMA', 'public'),
        tableName: env('PG_TABLE', 'session'),
        // sesame creates the table; both sides then use the same one.
        createTableIfMissing: false,
        pruneSessionInterval: false,
      });
    }
    case 'mongodb': {
      const { MongoStore } = require('connect-mongo');
      return MongoStore.create({
        mongoUrl: env('MONGODB_URL', 'mongodb://127.0.0.1:27017/sesame?directConnection=true'),
        collectionName: env('MONGODB_COLLECTION', 'sessions'),
        stringify: env('MONGODB_STRINGIFY', 'true') === 'true',
        // sesame creates the TTL index (the same one connect-mongo's `native` mode creates).
        autoRemove: 'disabled',
      });
    }
    default:
      throw new Error(`unknown SESAME_STORE ${JSON.stringify(kind)}: expected redis, postgres or mongodb`);
  }
}

// What a route answers: the session's id, its data without the cookie, and its expiry as the
// session itself sees it.
function describe(req) {
  if (!req.session) return { id: null, data: null };
  const { cookie, ...data } = req.session;
  return {
    id: req.sessionID,
    data,
    originalMaxAge: cookie.originalMaxAge,
    expires: cookie.expires ? new Date(cookie.expires).toISOString() : null,
  };
}

async function main() {
  const store = await makeStore(env('SESAME_STORE', ''));
  const maxAge = process.env.COOKIE_MAX_AGE ? Number(process.env.COOKIE_MAX_AGE) : undefined;
  const app = express();
  app.use(express.json());
  app.use(
    session({
      secret: env('SESSION_SECRET', '').split(',').filter(Boolean),
      name: env('COOKIE_NAME', 'connect.sid'),
      store,
      resave: false,
      saveUninitialized: false,
      cookie: { path: '/', httpOnly: true, sameSite: 'lax', maxAge },
    }),
  );
  app.use(flash());

  app.get('/session', (req, res) => res.json(describe(req)));
  // Sets every key of the JSON body.
  app.post('/session', (req, res) => {
    Object.assign(req.session, req.body);
    res.json(describe(req));
  });
  // Sets the cookie's max age (ms) and marks the session modified so it is saved.
  app.post('/max-age', (req, res) => {
    req.session.cookie.maxAge = Number(req.query.ms);
    req.session.maxAgeSetBy = 'express';
    res.json(describe(req));
  });
  app.post('/destroy', (req, res, next) =>
    req.session.destroy((error) => (error ? next(error) : res.json({ destroyed: true }))),
  );
  // A new id for the session; the data is kept, as a login handler would (`regenerate` itself
  // starts empty, so copy the data over like express apps do).
  app.post('/regenerate', (req, res, next) => {
    const { cookie, ...data } = req.session;
    req.session.regenerate((error) => {
      if (error) return next(error);
      Object.assign(req.session, data);
      res.json(describe(req));
    });
  });
  app.post('/flash', (req, res) => {
    req.flash(String(req.query.kind), String(req.query.message));
    res.json(describe(req));
  });
  app.get('/flash', (req, res) => res.json({ messages: req.flash(String(req.query.kind)) }));
  app.use((error, req, res, _next) => {
    console.error(error);
    res.status(500).json({ error: String(error && error.message) });
  });

  const port = Number(env('PORT', '3001'));
  app.listen(port, '127.0.0.1', () => console.log(`express listening on 127.0.0.1:${port}`));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

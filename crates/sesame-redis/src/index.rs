//! The user index: for each user, a sorted set of the ids of the sessions the user is logged in
//! to, scored by each session's expiry. See [Sessions of a user](crate#sessions-of-a-user).
//!
//! The index key and a session's key are two keys, in two slots of a cluster, so the index is
//! updated by its own command (the [`INDEX`](crate::script::INDEX) script, on the index key
//! alone), never inside a session's script. On one Redis that command is pipelined behind the
//! session's write, so a write with a user still costs one round trip; on a cluster it is a second
//! one, to the index key's node. The session is always written first: a listing that sees an id
//! in the index and finds no session under it can drop the id, since a session being created is
//! in Redis before its id is in the index.

use std::time::Duration;

use redis::{Cmd, ScriptInvocation, Value};
use sesame_core::serde_json::Value as Json;
use sesame_core::time::OffsetDateTime;
use sesame_core::{CookieState, Record, Result, SessionId, unix_millis};

use crate::conn::Connection;
use crate::{Expiry, RedisStore, ScriptError, backend, redis_error, script};

/// How long past its score an index member is kept, and its key past its highest score. It
/// absorbs clock skew between application servers (scores are their clocks; the sessions' TTLs
/// are Redis's) and concurrent writes of one session whose index updates land out of order, so
/// that a live session is never pruned from the index. A listing still checks every session it
/// returns.
pub(crate) const GRACE: Duration = Duration::from_secs(60);

/// A member's score: when its session expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Score {
    /// Milliseconds since the Unix epoch.
    At(i64),
    /// Never (`disable_ttl`, and a browser-session cookie without a deadline).
    Never,
}

impl Score {
    /// The score of a session written at `now` with `cookie` and the expiry `expiry`: the Redis
    /// TTL's end, or with `disable_ttl` the earlier of the cookie's `expires` and the deadline.
    pub(crate) fn of(cookie: &CookieState, now: OffsetDateTime, expiry: Expiry) -> Self {
        match expiry {
            Expiry::Millis(ms) => {
                Self::At(unix_millis(now).saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
            }
            Expiry::Never => cookie
                .expires
                .into_iter()
                .chain(cookie.deadline)
                .min()
                .map_or(Self::Never, |at| Self::At(unix_millis(at))),
        }
    }

    fn arg(self) -> String {
        match self {
            Self::At(ms) => ms.to_string(),
            Self::Never => "+inf".to_owned(),
        }
    }
}

/// The lowest score a member may have at `now` and still be kept: now less the grace period, in
/// milliseconds.
fn floor(now: OffsetDateTime) -> i64 {
    let grace = i64::try_from(GRACE.as_millis()).unwrap_or(i64::MAX);
    unix_millis(now).saturating_sub(grace)
}

/// A session's write, run before the index update.
pub(crate) enum Write<'a> {
    /// A plain command.
    Cmd(&'a Cmd),
    /// A script (`EVALSHA`, loaded on `NOSCRIPT`).
    Script(&'a ScriptInvocation<'static>),
}

/// Whether a reply is the server's `NOSCRIPT` (it lost its script cache: a restart, `SCRIPT
/// FLUSH`).
fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(error) if error.kind() == Some(redis::ServerErrorKind::NoScript))
}

impl RedisStore {
    /// The index update adding session `id` of `user` with `score`, written at `now`.
    pub(crate) fn index_add(
        &self,
        user: &str,
        id: &SessionId,
        score: Score,
        now: OffsetDateTime,
    ) -> ScriptInvocation<'static> {
        let mut invocation = script::INDEX.prepare_invoke();
        invocation
            .key(self.user_index_key(user))
            .arg(id.as_str())
            .arg(score.arg())
            .arg(floor(now));
        invocation
    }

    /// Runs a session's write, then the index update, and returns the write's reply. On one Redis
    /// both go in one pipeline (one round trip, run in that order); on a cluster, one after the
    /// other (the keys live on different nodes).
    pub(crate) async fn write_then_index(
        &self,
        write: Write<'_>,
        index: &ScriptInvocation<'static>,
    ) -> Result<Value> {
        if let Connection::Cluster(_) = self.inner.conn {
            let reply = match write {
                Write::Cmd(cmd) => self.query(cmd).await?,
                Write::Script(invocation) => self.invoke(invocation).await?,
            };
            self.invoke::<()>(index).await?;
            return Ok(reply);
        }
        let mut pipe = redis::pipe();
        // Each reply on its own, to tell a script the server lost from a real error.
        pipe.ignore_errors();
        match write {
            Write::Cmd(cmd) => {
                pipe.add_command(cmd.clone());
            }
            Write::Script(invocation) => {
                pipe.invoke_script(invocation);
            }
        }
        pipe.invoke_script(index);
        let mut conn = self.inner.conn.clone();
        let replies: Vec<Value> = self.bounded(pipe.query_async(&mut conn)).await?;
        let [reply, indexed] = <[Value; 2]>::try_from(replies).map_err(|replies| {
            backend(ScriptError::UnexpectedCommandReply {
                command: "a pipeline of two commands",
                reply: Value::Array(replies),
            })
        })?;
        if let (Write::Script(invocation), true) = (&write, is_noscript(&reply)) {
            // The server lost its scripts: run the write again (loading its script), then the
            // index update, in order.
            let reply = self.invoke(invocation).await?;
            self.invoke::<()>(index).await?;
            return Ok(reply);
        }
        if is_noscript(&indexed) {
            self.invoke::<()>(index).await?;
        } else {
            indexed.extract_error().map_err(|e| self.driver_error(e))?;
        }
        reply.extract_error().map_err(|e| self.driver_error(e))
    }

    /// A touch's `PEXPIRE` and its index update. The session exists already (a touch never
    /// creates one), so their order does not matter: pipelined on one Redis, sent concurrently
    /// to the two nodes of a cluster, one round trip either way.
    pub(crate) async fn touch_and_index(
        &self,
        pexpire: &Cmd,
        index: &ScriptInvocation<'static>,
    ) -> Result<()> {
        if let Connection::Cluster(_) = self.inner.conn {
            let (touched, indexed) =
                tokio::join!(self.query::<()>(pexpire), self.invoke::<()>(index));
            return touched.and(indexed);
        }
        self.write_then_index(Write::Cmd(pexpire), index)
            .await
            .map(drop)
    }

    /// After a compare-and-swap of the meta member: indexes the session under the new value's
    /// user, with the expiry the record keeps (`pttl` milliseconds, or none when -1).
    pub(crate) async fn index_swapped_meta(
        &self,
        id: &SessionId,
        new: Option<&Json>,
        pttl: i64,
    ) -> Result<()> {
        let Some(user) = new.and_then(|meta| meta.get("user")).and_then(Json::as_str) else {
            return Ok(());
        };
        let now = sesame_core::now();
        let score = if pttl >= 0 {
            Score::At(unix_millis(now).saturating_add(pttl))
        } else {
            Score::Never
        };
        self.invoke::<()>(&self.index_add(user, id, score, now))
            .await
    }

    /// `user_sessions`: the members of the user's index scored at or above the floor
    /// (`ZRANGEBYSCORE`), their records (`MGET` in batches), kept when live and still the
    /// user's. The members that are not (destroyed, expired, logged out, another user's now, or
    /// corrupt) are pruned afterwards, best effort.
    pub(crate) async fn list_user(&self, user: &str) -> Result<Vec<(SessionId, Record)>> {
        let key = self.user_index_key(user);
        let floor = floor(sesame_core::now());
        let reply: Value = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(floor)
                    .arg("+inf")
                    .arg("WITHSCORES"),
            )
            .await?;
        let members = scored_members(reply)?;
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for batch in members.chunks(self.inner.scan_count) {
            let keys: Vec<Vec<u8>> = batch
                .iter()
                .map(|(member, _)| [self.inner.prefix.as_bytes(), member].concat())
                .collect();
            // On a cluster the driver splits the MGET by slot.
            let values: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
            for ((member, score), value) in batch.iter().zip(values) {
                let id = std::str::from_utf8(member)
                    .ok()
                    .and_then(|id| SessionId::parse(id).ok());
                let record = match (id, value) {
                    (Some(id), Some(bytes)) => match self.decode(&bytes) {
                        Ok(record) => record.map(|record| (id, record)),
                        Err(error) => {
                            tracing::warn!(%id, %error, "skipping a corrupt session record in Redis");
                            None
                        }
                    },
                    _ => None,
                };
                match record {
                    Some((id, record)) if record.user() == Some(user) => live.push((id, record)),
                    _ => stale.push((member.as_slice(), *score)),
                }
            }
        }
        if !stale.is_empty() {
            if let Err(error) = self.prune(&key, floor, &stale).await {
                tracing::debug!(%error, "could not prune a user index; the next listing will");
            }
        }
        Ok(live)
    }

    /// Removes the `stale` members from the index under `key` (each only if its score is still
    /// the one listed), and the members scored below `floor`.
    async fn prune(&self, key: &str, floor: i64, stale: &[(&[u8], f64)]) -> Result<()> {
        for batch in stale.chunks(self.inner.scan_count) {
            let mut invocation = script::PRUNE.prepare_invoke();
            invocation.key(key).arg(floor);
            for (member, score) in batch {
                invocation.arg(*member).arg(score_arg(*score));
            }
            self.invoke::<i64>(&invocation).await?;
        }
        Ok(())
    }

    /// A driver error found in a reply, mapped as [`redis_error`] does.
    fn driver_error(&self, error: redis::RedisError) -> sesame_core::Error {
        redis_error(error, self.inner.timeout)
    }
}

/// A score as an argument that reads back as the same number in Lua (`inf` for infinity; Rust
/// writes a float without an exponent, every digit of an integral one).
fn score_arg(score: f64) -> String {
    if score.is_infinite() {
        if score > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        score.to_string()
    }
}

/// The (member, score) pairs of a `WITHSCORES` reply: a flat array of members and scores in
/// RESP2, an array of pairs in RESP3.
fn scored_members(reply: Value) -> Result<Vec<(Vec<u8>, f64)>> {
    let unexpected = |reply: Value| {
        backend(ScriptError::UnexpectedCommandReply {
            command: "ZRANGEBYSCORE",
            reply,
        })
    };
    let Value::Array(items) = reply else {
        return Err(unexpected(reply));
    };
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(pair) => flat.extend(pair),
            other => flat.push(other),
        }
    }
    if flat.len() % 2 != 0 {
        return Err(unexpected(Value::Array(flat)));
    }
    let mut members = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(member), Some(score)) = (items.next(), items.next()) {
        let member: Vec<u8> = redis::from_redis_value(member)
            .map_err(|error| backend(redis::RedisError::from(error)))?;
        let score: f64 = redis::from_redis_value(score)
            .map_err(|error| backend(redis::RedisError::from(error)))?;
        members.push((member, score));
    }
    Ok(members)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn scores_are_expiries_in_milliseconds() {
        let now = datetime!(2026-01-01 00:00:00 UTC);
        let mut cookie = CookieState::default();
        let base = unix_millis(now);
        assert_eq!(
            Score::of(&cookie, now, Expiry::Millis(1500)),
            Score::At(base + 1500)
        );
        assert_eq!(Score::of(&cookie, now, Expiry::Never), Score::Never);
        cookie.expires = Some(now + Duration::from_secs(10));
        assert_eq!(
            Score::of(&cookie, now, Expiry::Never),
            Score::At(base + 10_000)
        );
        cookie.deadline = Some(now + Duration::from_secs(5));
        assert_eq!(
            Score::of(&cookie, now, Expiry::Never),
            Score::At(base + 5000)
        );
        assert_eq!(Score::Never.arg(), "+inf");
        assert_eq!(floor(now), base - 60_000);
    }

    #[test]
    fn scores_read_back_as_the_same_number() {
        assert_eq!(score_arg(1_767_225_600_123.0), "1767225600123");
        assert_eq!(score_arg(f64::INFINITY), "inf");
    }

    #[test]
    fn withscores_replies_of_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![bulk("a"), bulk("12"), bulk("b"), bulk("inf")]);
        let resp3 = Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(12.0)]),
            Value::Array(vec![bulk("b"), Value::Double(f64::INFINITY)]),
        ]);
        for reply in [resp2, resp3] {
            assert_eq!(
                scored_members(reply).unwrap(),
                vec![(b"a".to_vec(), 12.0), (b"b".to_vec(), f64::INFINITY)]
            );
        }
        assert!(scored_members(Value::Array(vec![bulk("a")])).is_err());
        assert!(scored_members(Value::Nil).is_err());
    }
}

//! The Lua scripts that change a stored record atomically, on the server, in one round trip.
//!
//! # Why the JSON is not decoded with `cjson`
//!
//! Redis's Lua has `cjson`, but a `cjson.decode`/`cjson.encode` round trip does not give back what
//! express-session wrote: an empty array `[]` comes back as `{}` (Lua has one table type), every
//! number becomes a double (so `9007199254740993` turns into `9007199254740992`, and `1.5e300`
//! or `0.1` may be printed differently), and `/` is escaped as `\/`. A per-key patch would then
//! silently rewrite keys it never touched.
//!
//! So the scripts never re-encode a value. They split the record's top-level object into its
//! members with a small scanner (strings, with escapes, and bracket depth), and copy every member
//! they do not change byte for byte. The members they write come from Rust, serialized by
//! `serde_json` exactly as [`Record::to_json`](sesame_core::Record::to_json) would. `cjson` only
//! decodes the name of a member when it holds an escape, and the `cookie` member when the scripts
//! must read its `expires` (only with `disable_ttl`, where no Redis TTL enforces expiry).

use std::sync::LazyLock;

use redis::Script;

/// Functions shared by every script: the member scanner and the expiry check.
const PRELUDE: &str = r#"
-- The index of the next non-whitespace character of s at or after i, or nil.
local function ws(s, i)
  return string.find(s, '[^ \t\r\n]', i)
end

-- The index of the closing quote of the JSON string opening at i, or nil.
local function string_end(s, i)
  local j = i + 1
  while true do
    local q = string.find(s, '["\\]', j)
    if not q then return nil end
    if string.byte(s, q) == 34 then return q end
    j = q + 2
  end
end

-- The index of the last character of the JSON value starting at i, or nil.
local function value_end(s, i)
  local c = string.byte(s, i)
  if c == 34 then return string_end(s, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local p = string.find(s, '[{}%[%]"]', j)
      if not p then return nil end
      local b = string.byte(s, p)
      if b == 34 then
        p = string_end(s, p)
        if not p then return nil end
      elseif b == 123 or b == 91 then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return p end
      end
      j = p + 1
    end
  end
  -- A number, true, false or null: up to the next delimiter.
  local e = string.find(s, '[,}%] \t\r\n]', i)
  if not e or e == i then return nil end
  return e - 1
end

-- The members of the JSON object s, in order: their names (decoded), their raw name texts (with
-- quotes) and their raw value texts. nil when s is not a JSON object.
local function members(s)
  local names, heads, values = {}, {}, {}
  local i = ws(s, 1)
  if not i or string.byte(s, i) ~= 123 then return nil end
  i = ws(s, i + 1)
  if not i then return nil end
  if string.byte(s, i) == 125 then
    if ws(s, i + 1) then return nil end
    return names, heads, values
  end
  while true do
    if string.byte(s, i) ~= 34 then return nil end
    local name_end = string_end(s, i)
    if not name_end then return nil end
    local head = string.sub(s, i, name_end)
    local name = string.sub(s, i + 1, name_end - 1)
    if string.find(name, '\\', 1, true) then
      local ok, decoded = pcall(cjson.decode, head)
      if not ok or type(decoded) ~= 'string' then return nil end
      name = decoded
    end
    local colon = ws(s, name_end + 1)
    if not colon or string.byte(s, colon) ~= 58 then return nil end
    local v = ws(s, colon + 1)
    if not v then return nil end
    local v_end = value_end(s, v)
    if not v_end then return nil end
    names[#names + 1] = name
    heads[#heads + 1] = head
    values[#values + 1] = string.sub(s, v, v_end)
    local n = ws(s, v_end + 1)
    if not n then return nil end
    local b = string.byte(s, n)
    if b == 125 then
      if ws(s, n + 1) then return nil end
      return names, heads, values
    end
    if b ~= 44 then return nil end
    i = ws(s, n + 1)
    if not i then return nil end
  end
end

-- Whether the record has expired by its cookie's expires, compared with now (both in JavaScript's
-- toISOString format). now == '' skips the check: a Redis TTL enforces expiry then.
local function dead(names, values, now)
  if now == '' then return false end
  local cookie = nil
  for i = 1, #names do
    if names[i] == 'cookie' then cookie = values[i] end
  end
  if not cookie then return false end
  local ok, decoded = pcall(cjson.decode, cookie)
  if not ok or type(decoded) ~= 'table' then return false end
  local expires = decoded['expires']
  if type(expires) ~= 'string' then return false end
  if not string.find(expires, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$') then
    return false
  end
  -- Compared as numbers (date, then time of day), not as strings: Lua compares strings with the
  -- locale's collation.
  local function stamp(t)
    local digits = string.gsub(t, '%D', '')
    return tonumber(string.sub(digits, 1, 8)), tonumber(string.sub(digits, 9))
  end
  local ed, et = stamp(expires)
  local nd, nt = stamp(now)
  return ed < nd or (ed == nd and et <= nt)
end
"#;

/// Applies a patch to the record under `KEYS[1]`.
///
/// - `ARGV[1]`: what to do with the key's expiry: `px` (set it to `ARGV[2]` milliseconds), `none`
///   (no expiry, for `disable_ttl`), or `del` (the patched record has expired: delete it);
/// - `ARGV[3]`: the current time for the expiry check, or `''` when a Redis TTL enforces it;
/// - `ARGV[4]`: the new `cookie` member (`"cookie":{...}`);
/// - `ARGV[5]`: how many keys are removed, followed by their names;
/// - then pairs of (name, member text `"name":value`) for the keys set.
///
/// Returns `{1, meta}` when applied, where `meta` is the raw text of the record's `sesame` member
/// ([`META_KEY`](sesame_core::META_KEY)) as it was before the patch, or nil: the caller learns the
/// session's user from it without a read of its own, to keep the user index up with the new
/// expiry. Returns 0 when there is no live record (nothing written), -2 when the stored value is
/// not a JSON object (nothing written).
const PATCH_BODY: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local names, heads, values = members(raw)
if not names then return -2 end
if dead(names, values, ARGV[3]) then return 0 end
local meta = false
for i = 1, #names do
  if names[i] == 'sesame' then meta = values[i] end
end
if ARGV[1] == 'del' then
  redis.call('DEL', KEYS[1])
  return {1, meta}
end
local change = { cookie = ARGV[4] }
local removed = tonumber(ARGV[5])
for i = 6, 5 + removed do change[ARGV[i]] = false end
for i = 6 + removed, #ARGV, 2 do change[ARGV[i]] = ARGV[i + 1] end
local out = {}
for i = 1, #names do
  local c = change[names[i]]
  if c == nil then
    out[#out + 1] = heads[i] .. ':' .. values[i]
  elseif c then
    out[#out + 1] = c
    change[names[i]] = false
  end
end
for i = 6 + removed, #ARGV, 2 do
  local c = change[ARGV[i]]
  if c then
    out[#out + 1] = c
    change[ARGV[i]] = false
  end
end
if change['cookie'] then out[#out + 1] = change['cookie'] end
local json = '{' .. table.concat(out, ',') .. '}'
if ARGV[1] == 'px' then
  redis.call('SET', KEYS[1], json, 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], json)
end
return {1, meta}
"#;

/// Compare-and-swap of one member of the record under `KEYS[1]`, keeping the key's TTL.
///
/// - `ARGV[1]`: the current time for the expiry check, or `''`;
/// - `ARGV[2]`: the member's name;
/// - `ARGV[3]`: `1` when a value is expected, followed by its exact text in `ARGV[4]`;
/// - `ARGV[5]`: `1` when the member is set (to the member text `ARGV[6]`), else it is removed.
///
/// Returns `{1, pttl}` when swapped (`pttl` is the key's `PTTL`, -1 without a TTL, so that a swap
/// of the `sesame` member can index the session with its expiry), `{0}` when there is no live record, `{-1, current}` when the member
/// is not as expected (`current` is its raw text, or nil when absent), `{-2}` when the stored
/// value is not a JSON object. The comparison is on text: the caller compares semantically and
/// retries with the exact text when only the formatting differs.
const SWAP_BODY: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {0} end
local names, heads, values = members(raw)
if not names then return {-2} end
if dead(names, values, ARGV[1]) then return {0} end
local at = nil
for i = 1, #names do
  if names[i] == ARGV[2] then at = i end
end
local current = false
if at then current = values[at] end
if ARGV[3] == '1' then
  if current ~= ARGV[4] then return {-1, current} end
elseif current then
  return {-1, current}
end
local out = {}
for i = 1, #names do
  if names[i] ~= ARGV[2] then
    out[#out + 1] = heads[i] .. ':' .. values[i]
  elseif i == at and ARGV[5] == '1' then
    out[#out + 1] = ARGV[6]
  end
end
if not at and ARGV[5] == '1' then out[#out + 1] = ARGV[6] end
redis.call('SET', KEYS[1], '{' .. table.concat(out, ',') .. '}', 'KEEPTTL')
return {1, redis.call('PTTL', KEYS[1])}
"#;

/// Insert-only write for stores without Redis TTLs (`disable_ttl`), where a dead record may still
/// sit under the id: writes `ARGV[2]` under `KEYS[1]` when the key is absent or holds a record
/// whose cookie has expired at `ARGV[1]`. A value that is not a JSON object is never overwritten.
/// Returns 1 when written, 0 when a live (or unreadable) record is there.
const CREATE_BODY: &str = r#"
local raw = redis.call('GET', KEYS[1])
if raw then
  local names, heads, values = members(raw)
  if not names or not dead(names, values, ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// Adds a session to a user's index (a sorted set of session ids scored by their expiry in
/// milliseconds since the Unix epoch), drops the members that expired, and sets the index key's
/// TTL to outlive its last session. One key, so it runs on a cluster too.
///
/// - `KEYS[1]`: the index key;
/// - `ARGV[1]`: the session id; `ARGV[2]`: its expiry (`+inf` when it has none, with
///   `disable_ttl`);
/// - `ARGV[3]`: the floor: now minus a grace period, in milliseconds. Members scored below it are
///   removed, and the key lives until its highest score plus the grace period (exactly: a touch
///   that shortens the last session shortens the key too). The grace absorbs clock skew between
///   application servers and reordered concurrent writes of one session, so a live session is
///   never pruned.
///
/// Scores and times are integers of milliseconds, formatted with `%d` (Lua's default number
/// format has 14 digits, which would round them).
const INDEX_BODY: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if not top[2] then return 0 end
if top[2] == 'inf' then
  redis.call('PERSIST', KEYS[1])
  return 1
end
local ttl = tonumber(top[2]) - tonumber(ARGV[3])
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return 1
"#;

/// Cleans a user's index after a listing: drops the members that expired (scored below the floor
/// `ARGV[1]`), and each member named in the pairs (session id, score) that follow, but only if its
/// score is still the one the listing saw. A write that re-indexed the session meanwhile (the same
/// id logged in again) changed its score, and keeps it. Returns how many named members it removed.
const PRUNE_BODY: &str = r#"
local function num(s)
  if s == 'inf' or s == '+inf' then return math.huge end
  return tonumber(s)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local removed = 0
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and num(score) == num(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"#;

/// Replaces the record under `KEYS[1]` with `ARGV[2]`, setting its TTL to `ARGV[3]` milliseconds,
/// if the key still holds exactly `ARGV[1]`: the fast path of a patch whose result was computed
/// from those bytes (see `replace.rs`). Returns 1 when replaced, 0 when the key holds anything
/// else or nothing (the caller then runs the patch script). No member scanning, no prelude: a
/// `GET`, a comparison and a `SET`.
///
/// Every `redis.call` costs Redis more than a whole `SET` from a client (running a script of two
/// calls takes it about 5 µs, of three about 7 µs, where a `SET` takes 0.6 µs), and this is every
/// write's script, so it makes no call it does not need: see [`REPLACE_TRACKED_BODY`] for the
/// one a client-side cache needs.
const REPLACE_BODY: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// [`REPLACE_BODY`] with a `PTTL` after the `SET`, for a store with a client-side cache: a read
/// for Redis' client tracking, so that the connection has the key tracked again right after its
/// own write, which ended the tracking (and told this connection nothing, under `NOLOOP`), and
/// hears of the next change by another connection (see `client_cache.rs`).
const REPLACE_TRACKED_BODY: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PTTL', KEYS[1])
return 1
"#;

/// The replace-if-unchanged script (see [`REPLACE_BODY`]).
pub(crate) static REPLACE: LazyLock<Script> = LazyLock::new(|| Script::new(REPLACE_BODY));

/// The replace-if-unchanged script of a store with a client-side cache (see
/// [`REPLACE_TRACKED_BODY`]).
pub(crate) static REPLACE_TRACKED: LazyLock<Script> =
    LazyLock::new(|| Script::new(REPLACE_TRACKED_BODY));

/// The patch script (see [`PATCH_BODY`]).
pub(crate) static PATCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PRELUDE}{PATCH_BODY}")));

/// The compare-and-swap script (see [`SWAP_BODY`]).
pub(crate) static SWAP: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PRELUDE}{SWAP_BODY}")));

/// The insert-only write for `disable_ttl` (see [`CREATE_BODY`]).
pub(crate) static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PRELUDE}{CREATE_BODY}")));

/// The user index update (see [`INDEX_BODY`]).
pub(crate) static INDEX: LazyLock<Script> = LazyLock::new(|| Script::new(INDEX_BODY));

/// The user index cleanup after a listing (see [`PRUNE_BODY`]).
pub(crate) static PRUNE: LazyLock<Script> = LazyLock::new(|| Script::new(PRUNE_BODY));

/// Every script, to load them into a server's script cache ahead of the first request.
pub(crate) fn all() -> [&'static Script; 7] {
    [
        &PATCH,
        &REPLACE,
        &REPLACE_TRACKED,
        &SWAP,
        &CREATE,
        &INDEX,
        &PRUNE,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_script_reads_the_meta_key() {
        assert!(PATCH_BODY.contains(&format!("'{}'", sesame_core::META_KEY)));
    }
}

//! Shared code of the scaling benchmark (`benches/scaling.rs`, the "Scaling" part of issue #9):
//! apps whose sessions carry a payload of a given size, a [`MemoryStore`] filled with many live
//! sessions through the store API, signed cookies for those sessions, latency statistics and the
//! process's resident memory.

use std::time::Duration;

use axum::routing::get;
use axum_sesame::core::CookieState;
use axum_sesame::core::serde_json::{Map, Value};
use axum_sesame::{KeyRing, MemoryStore, Record, SessionId, SessionLayer, SessionStore};
use tower::Layer;

use crate::{App, SECRET};

/// Session payloads of the payload benchmarks: a label (used in group names) and the size in
/// bytes of the session's data as JSON (what express-session would store for it).
pub const PAYLOAD_SIZES: [(&str, usize); 3] =
    [("100B", 100), ("4KB", 4 * 1024), ("64KB", 64 * 1024)];

/// The scenarios of the payload benchmarks.
pub const PAYLOAD_SCENARIOS: [&str; 2] = ["read", "write"];

/// Live sessions in the store for the lookup benchmarks: a label and the count.
pub const LIVE_SESSIONS: [(&str, usize); 3] = [("1k", 1_000), ("100k", 100_000), ("1M", 1_000_000)];

/// Sessions in the memory and sweep measurements.
pub const REPORT_SESSIONS: usize = 1_000_000;

/// Size of the payload in the memory measurement, as JSON bytes of the session's data.
pub const MEMORY_PAYLOAD_BYTES: usize = 100;

/// Session data whose JSON (`{"p":"xx…x","n":1}`) is exactly `bytes` long (at least 14).
pub fn payload_data(bytes: usize) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert(
        "p".to_owned(),
        Value::String("x".repeat(bytes.saturating_sub(14))),
    );
    data.insert("n".to_owned(), Value::from(1u64));
    data
}

/// The length of `data` as JSON.
pub fn json_len(data: &Map<String, Value>) -> usize {
    axum_sesame::core::serde_json::to_vec(data).map_or(0, |json| json.len())
}

/// The routes of the payload benchmarks: [`crate::sesame_router`]'s (`/read` and `/write` are
/// measured) and `/fill`, which starts a session carrying [`payload_data`].
pub fn sesame_payload_app(layer: SessionLayer, bytes: usize) -> impl App {
    use axum_sesame::Session;
    let router = crate::sesame_router().route(
        "/fill",
        get(move |s: Session| async move {
            for (key, value) in payload_data(bytes) {
                let _ = s.insert_value(&key, value);
            }
            "n=1"
        }),
    );
    layer.layer(router)
}

/// sesame on its memory store (the configuration of [`crate::sesame_memory_app`]) with
/// [`sesame_payload_app`]'s routes.
pub fn sesame_memory_payload_app(bytes: usize) -> impl App {
    sesame_payload_app(
        SessionLayer::builder()
            .secret(SECRET)
            .store_timeout(Some(Duration::from_secs(5)))
            .build()
            .expect("a valid layer"),
        bytes,
    )
}

/// tower-sessions with its memory store and the same routes.
pub fn tower_sessions_payload_app(bytes: usize) -> impl App {
    use tower_sessions::{MemoryStore, Session, SessionManagerLayer};
    let router = crate::tower_sessions_router::<Session>().route(
        "/fill",
        get(move |s: Session| async move {
            for (key, value) in payload_data(bytes) {
                let _ = s.insert_value(&key, value).await;
            }
            "n=1"
        }),
    );
    SessionManagerLayer::new(MemoryStore::default())
        .with_secure(false)
        .layer(router)
}

/// A small record, `{"n":1}` with a browser-session cookie (the store's default TTL applies).
pub fn small_record() -> Record {
    let mut record = Record::new(CookieState::default());
    record.data_mut().insert("n".to_owned(), Value::from(1u64));
    record
}

/// A record with `data` whose cookie expires `max_age` from now.
pub fn record_expiring_in(max_age: Duration, data: Map<String, Value>) -> Record {
    let mut cookie = CookieState::default();
    cookie.set_max_age(axum_sesame::core::now(), Some(max_age));
    Record::from_parts(data, cookie)
}

/// Saves `count` copies of `record` under fresh ids with [`SessionStore::save`], and returns
/// about `sample` of their ids, taken evenly over the fill and shuffled.
///
/// Each session gets its own deep copy of the data, as sessions of different users have: a
/// clone of `record` could share its data with all the others (`Record` keeps it behind an `Arc`),
/// which would hide the data's memory and keep it in the CPU caches for every lookup.
pub async fn fill(
    store: &MemoryStore,
    count: usize,
    sample: usize,
    record: &Record,
) -> Vec<SessionId> {
    let every = count
        .checked_div(sample)
        .map_or(usize::MAX, |every| every.max(1));
    let mut kept = Vec::with_capacity(sample.min(count));
    for i in 0..count {
        let id = SessionId::generate();
        let record = Record::from_parts(record.data().clone(), record.cookie().clone());
        store
            .save(&id, &record)
            .await
            .expect("the memory store never fails");
        if i % every == 0 && kept.len() < sample {
            kept.push(id);
        }
    }
    shuffle(&mut kept, 0x5e5a_3e00 ^ count as u64);
    // Fresh copies, allocated one after the other: a request's id comes from its freshly parsed
    // cookie, so reading the probe's own id should not be a cache miss of its own.
    kept.to_vec()
}

/// A deterministic Fisher-Yates shuffle (xorshift64*): probe order unrelated to fill order.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        items.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

/// `Cookie` header values (`connect.sid=s%3A…`) that the layer built with [`SECRET`] accepts for
/// `ids`.
pub fn signed_cookies(ids: &[SessionId]) -> Vec<String> {
    let keys = KeyRing::new([SECRET]).expect("a valid secret");
    ids.iter()
        .map(|id| format!("connect.sid={}", keys.sign_cookie_value(id)))
        .collect()
}

/// Bytes each session takes inline in a shard's hash table, empty slots included: the memory
/// store's entry is a [`Record`] and an expiry in milliseconds next to the [`SessionId`] key (its private `Entry`
/// type has exactly these fields).
pub fn inline_slot_bytes() -> usize {
    std::mem::size_of::<(SessionId, Record, i64)>()
}

/// The inline size of a [`Record`] and of its [`CookieState`].
pub fn record_inline_bytes() -> (usize, usize) {
    (
        std::mem::size_of::<Record>(),
        std::mem::size_of::<CookieState>(),
    )
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`); `None` off Linux.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CPU time all threads of this process have used so far, user and system (`utime` and
/// `stime` of `/proc/self/stat`, in the kernel's fixed 100 ticks a second); `None` off Linux.
pub fn process_cpu_time() -> Option<std::time::Duration> {
    /// `USER_HZ`: what `/proc` counts in, 100 on every Linux architecture.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(std::time::Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SECOND,
    ))
}

/// Order statistics of request latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    /// Requests slower than a millisecond.
    pub over_1ms: usize,
    /// The time spent in those requests.
    pub over_1ms_total: Duration,
}

impl Latencies {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let slow = samples.partition_point(|&d| d <= Duration::from_millis(1));
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Self {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples.last().copied().unwrap_or_default(),
            over_1ms: samples.len() - slow,
            over_1ms_total: samples[slow..].iter().sum(),
        }
    }

    pub fn to_json(&self) -> Value {
        let ns = |d: Duration| Value::from(d.as_nanos() as u64);
        let mut out = Map::new();
        out.insert("count".into(), Value::from(self.count));
        out.insert("p50_ns".into(), ns(self.p50));
        out.insert("p99_ns".into(), ns(self.p99));
        out.insert("p999_ns".into(), ns(self.p999));
        out.insert("max_ns".into(), ns(self.max));
        out.insert("over_1ms".into(), Value::from(self.over_1ms));
        out.insert("over_1ms_total_ns".into(), ns(self.over_1ms_total));
        Value::Object(out)
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, worst {:.1} µs, \
             {} over 1 ms ({:.1} ms in all)",
            self.count,
            micros(self.p50),
            micros(self.p99),
            micros(self.p999),
            micros(self.max),
            self.over_1ms,
            self.over_1ms_total.as_secs_f64() * 1e3
        )
    }
}

/// A duration in microseconds, for printing.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_data_has_the_requested_json_size() {
        for (_, bytes) in PAYLOAD_SIZES {
            assert_eq!(json_len(&payload_data(bytes)), bytes);
        }
    }

    #[test]
    fn latencies_order_statistics() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let stats = Latencies::of(samples);
        assert_eq!(stats.count, 1000);
        assert_eq!(stats.p50, Duration::from_micros(501));
        assert_eq!(stats.p99, Duration::from_micros(991));
        assert_eq!(stats.max, Duration::from_micros(1000));
    }
}

//! Round trips to Redis per request (issue #9), counted on the wire against the real Redis at
//! `REDIS_URL` by a relay in front of it, for sesame and for tower-sessions' Redis store, in the
//! benchmark's configuration (`sesame_bench::redis`). Skipped loudly without Redis, except under
//! CI, where Redis is required.
#![allow(clippy::unwrap_used)]

use sesame_bench::redis::{clear_prefix, count_round_trips, redis_url};
use sesame_conformance::{backend_missing, unique_name};

const SESAME: usize = 1;
const TOWER_SESSIONS: usize = 2;
const SESAME_CLIENT_CACHE: usize = 3;

/// `(scenario, [raw, sesame, tower-sessions, sesame with the client-side cache])`, or `None` when
/// Redis is missing.
async fn counts() -> Option<Vec<(&'static str, [f64; 4])>> {
    let url = redis_url();
    let prefix = format!("{}:", unique_name("sesame-bench-rt-"));
    let counted = count_round_trips(&url, &prefix).await;
    clear_prefix(&url, &prefix).await;
    match counted {
        Ok(rows) => Some(rows),
        Err(error) => backend_missing("Redis (REDIS_URL)", &error),
    }
}

fn of(rows: &[(&str, [f64; 4])], scenario: &str, implementation: usize) -> f64 {
    rows.iter().find(|(s, _)| *s == scenario).unwrap().1[implementation]
}

/// The bench's write handler reads the counter before it writes it: a load (`GET`) and a patch
/// (`EVALSHA`), the least any store can do for a read-modify-write; a write that does not read
/// first is one patch.
#[tokio::test]
async fn sesame_round_trips_per_request() {
    let Some(rows) = counts().await else { return };
    for (scenario, trips) in [
        ("none", 0.0),
        ("bad-cookie", 0.0),
        ("read", 1.0),
        ("write", 2.0),
        ("new", 1.0),
    ] {
        assert_eq!(of(&rows, scenario, SESAME), trips, "{scenario}: {rows:?}");
    }
}

/// With the client-side cache, a session the store has seen is read from memory: reads cost
/// nothing, and so does the write's load, so a write is its patch alone.
#[tokio::test]
async fn sesame_round_trips_per_request_with_the_client_side_cache() {
    let Some(rows) = counts().await else { return };
    for (scenario, trips) in [
        ("none", 0.0),
        ("bad-cookie", 0.0),
        ("read", 0.0),
        ("write", 1.0),
        ("new", 1.0),
    ] {
        assert_eq!(
            of(&rows, scenario, SESAME_CLIENT_CACHE),
            trips,
            "{scenario}: {rows:?}"
        );
    }
}

#[tokio::test]
async fn tower_sessions_round_trips_per_request() {
    let Some(rows) = counts().await else { return };
    let expected = [
        ("none", 0.0),
        ("read", 1.0),
        ("write", 2.0),
        ("new", 1.0),
        ("bad-cookie", 1.0),
    ];
    for (scenario, trips) in expected {
        assert_eq!(
            of(&rows, scenario, TOWER_SESSIONS),
            trips,
            "{scenario}: {rows:?}"
        );
    }
}

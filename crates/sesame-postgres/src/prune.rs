//! The background task that deletes expired rows.
//!
//! It holds only a weak reference to the store, upgraded for one batch at a time, and watches a
//! channel whose sender lives in the store: when the last clone of the store is dropped, the task
//! ends at once (it does not wait for its next tick), and the pool is freed.

use std::error::Error as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::{Inner, PostgresStore};

/// Spawns the pruning task of `inner`, once, when pruning is on and a tokio runtime is there.
pub(crate) fn start(inner: &Arc<Inner>) {
    let Some(interval) = inner.prune_interval else {
        return;
    };
    if inner.pruner_started.load(Ordering::Relaxed)
        || inner.pruner_started.swap(true, Ordering::AcqRel)
    {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Outside a runtime there is nothing to spawn on: try again on the next use.
        inner.pruner_started.store(false, Ordering::Release);
        return;
    };
    let weak = Arc::downgrade(inner);
    let mut stop = inner.stop.subscribe();
    let jitter = inner.prune_jitter;
    runtime.spawn(async move {
        loop {
            let wait = if jitter { jittered(interval) } else { interval };
            tokio::select! {
                // Nothing is ever sent: this only completes (with an error) when the store drops.
                _ = stop.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if !pass(&weak).await {
                return;
            }
        }
    });
}

/// One pruning pass, batch after batch until a batch deletes fewer rows than its limit. Errors are
/// logged and the pass ends; the next one comes at the next tick. `false` when the store is gone.
async fn pass(weak: &Weak<Inner>) -> bool {
    let mut deleted = 0;
    loop {
        let Some(inner) = weak.upgrade() else {
            return false;
        };
        let store = PostgresStore { inner };
        match store.prune_batch().await {
            Ok(batch) => {
                deleted += batch;
                if batch < u64::from(store.inner.prune_batch_size) {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(
                    table = %store.table(),
                    error = %chain(&error),
                    "pruning expired sessions failed; trying again at the next interval"
                );
                break;
            }
        }
        drop(store);
        // Let requests run between batches.
        tokio::task::yield_now().await;
    }
    if deleted > 0 {
        tracing::debug!(deleted, "pruned expired sessions from PostgreSQL");
    }
    true
}

/// `interval` times a random factor in [0.5, 1.5), as connect-pg-simple's randomized interval.
fn jittered(interval: Duration) -> Duration {
    // A fresh std `RandomState` is randomly keyed: hashing nothing with it is a random number,
    // good enough to spread instances apart (no cryptographic need here).
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (random >> 11) as f64 / (1_u64 << 53) as f64;
    Duration::try_from_secs_f64(interval.as_secs_f64() * (0.5 + unit)).unwrap_or(interval)
}

/// An error with its sources, for the log: `a: b: c`.
fn chain(error: &sesame_core::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half_intervals() {
        let interval = Duration::from_secs(100);
        let waits: Vec<Duration> = (0..1000).map(|_| jittered(interval)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(50) && *w < Duration::from_secs(150))
        );
        let low = waits.iter().filter(|w| **w < interval).count();
        assert!(
            (300..=700).contains(&low),
            "{low} of 1000 below the interval"
        );
        // No overflow panic on absurd intervals.
        let _ = jittered(Duration::MAX);
    }
}

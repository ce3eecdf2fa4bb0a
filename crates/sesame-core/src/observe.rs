//! Counters and latencies of store calls, for dashboards and alerts.
//!
//! The session layer reports every store call it makes to a [`StoreObserver`]: which operation,
//! how long it took, and whether it failed. [`StoreMetrics`] is a ready-made observer that keeps
//! counters an application can export (to Prometheus through the `metrics` crate, to logs, to a
//! health endpoint); implement the trait to forward events anywhere else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A store operation, as the layer calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOperation {
    /// A session read (the first use of the session in a request).
    Load,
    /// A full write of an existing session.
    Save,
    /// The first write of a new session.
    Create,
    /// A destroy (explicit, regenerate, revocation, or timeout).
    Destroy,
    /// An expiry refresh without a data write.
    Touch,
    /// A per-key write of an existing session.
    Patch,
    /// An atomic read-modify-write of one key (`Session::update`).
    CompareAndSwap,
    /// A user's sessions listed from the user index.
    UserSessions,
    /// A listing call (`ids`, `all`, `len`, `clear`).
    Listing,
}

impl StoreOperation {
    /// Every operation, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::Load,
        Self::Save,
        Self::Create,
        Self::Destroy,
        Self::Touch,
        Self::Patch,
        Self::CompareAndSwap,
        Self::UserSessions,
        Self::Listing,
    ];

    /// A short lowercase name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Save => "save",
            Self::Create => "create",
            Self::Destroy => "destroy",
            Self::Touch => "touch",
            Self::Patch => "patch",
            Self::CompareAndSwap => "compare_and_swap",
            Self::UserSessions => "user_sessions",
            Self::Listing => "listing",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One store call, as reported to a [`StoreObserver`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StoreEvent {
    /// The store's name (`"memory"`, `"redis"`, ...).
    pub store: &'static str,
    /// What was called.
    pub operation: StoreOperation,
    /// How long the call took, including a timeout's wait.
    pub latency: Duration,
    /// Whether the call failed (a store error or a timeout).
    pub failed: bool,
}

impl StoreEvent {
    /// An event (for layers and store wrappers that report calls).
    pub fn new(
        store: &'static str,
        operation: StoreOperation,
        latency: Duration,
        failed: bool,
    ) -> Self {
        Self {
            store,
            operation,
            latency,
            failed,
        }
    }
}

/// Receives every store call the session layer makes. Called on the request's task, right after
/// the call: keep it cheap (increment counters, record a histogram sample).
pub trait StoreObserver: Send + Sync + 'static {
    /// One store call finished.
    fn observe(&self, event: &StoreEvent);
}

impl<F: Fn(&StoreEvent) + Send + Sync + 'static> StoreObserver for F {
    fn observe(&self, event: &StoreEvent) {
        self(event);
    }
}

/// Counters of store calls per operation: calls, failures, total and worst latency. Lock-free;
/// share it (in an `Arc`) between the layer and whatever exports it.
///
/// ```
/// use std::sync::Arc;
/// use sesame_core::{StoreMetrics, StoreOperation};
///
/// let metrics = Arc::new(StoreMetrics::new());
/// // SessionLayer::builder().observe(Arc::clone(&metrics)) ... later, in a /metrics handler:
/// let loads = metrics.snapshot(StoreOperation::Load);
/// assert_eq!(loads.calls, 0);
/// ```
#[derive(Debug, Default)]
pub struct StoreMetrics {
    counters: [OperationCounters; StoreOperation::ALL.len()],
}

#[derive(Debug, Default)]
struct OperationCounters {
    calls: AtomicU64,
    failures: AtomicU64,
    total_nanos: AtomicU64,
    max_nanos: AtomicU64,
}

/// The counters of one operation at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationSnapshot {
    /// Calls made, failed or not.
    pub calls: u64,
    /// Calls that failed (store error or timeout).
    pub failures: u64,
    /// The sum of the calls' latencies (divide by `calls` for the mean).
    pub total_latency: Duration,
    /// The slowest call.
    pub max_latency: Duration,
}

impl StoreMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `operation` now.
    pub fn snapshot(&self, operation: StoreOperation) -> OperationSnapshot {
        let counters = &self.counters[operation.index()];
        OperationSnapshot {
            calls: counters.calls.load(Ordering::Relaxed),
            failures: counters.failures.load(Ordering::Relaxed),
            total_latency: Duration::from_nanos(counters.total_nanos.load(Ordering::Relaxed)),
            max_latency: Duration::from_nanos(counters.max_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Failed calls of every operation.
    pub fn failures(&self) -> u64 {
        StoreOperation::ALL
            .iter()
            .map(|&operation| self.snapshot(operation).failures)
            .sum()
    }
}

impl StoreObserver for StoreMetrics {
    fn observe(&self, event: &StoreEvent) {
        let counters = &self.counters[event.operation.index()];
        let nanos = u64::try_from(event.latency.as_nanos()).unwrap_or(u64::MAX);
        counters.calls.fetch_add(1, Ordering::Relaxed);
        if event.failed {
            counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        counters.total_nanos.fetch_add(nanos, Ordering::Relaxed);
        counters.max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

impl<O: StoreObserver + ?Sized> StoreObserver for std::sync::Arc<O> {
    fn observe(&self, event: &StoreEvent) {
        (**self).observe(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_failures_and_latency_per_operation() {
        let metrics = StoreMetrics::new();
        for (latency, failed) in [(5, false), (9, true), (1, false)] {
            metrics.observe(&StoreEvent {
                store: "memory",
                operation: StoreOperation::Load,
                latency: Duration::from_millis(latency),
                failed,
            });
        }
        let loads = metrics.snapshot(StoreOperation::Load);
        assert_eq!((loads.calls, loads.failures), (3, 1));
        assert_eq!(loads.total_latency, Duration::from_millis(15));
        assert_eq!(loads.max_latency, Duration::from_millis(9));
        assert_eq!(metrics.snapshot(StoreOperation::Save).calls, 0);
        assert_eq!(metrics.failures(), 1);
        assert_eq!(StoreOperation::CompareAndSwap.as_str(), "compare_and_swap");
    }
}

//! The error every store returns.

use std::time::Duration;

/// A boxed error source, as stores keep their backend's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store, by meaning. Backend errors keep their source (walk
/// [`std::error::Error::source`] to see the driver's error), so nothing is flattened into a string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `create` found a record under the id already: an id collision, never overwritten.
    #[error("a session with this id already exists in the {store} store")]
    AlreadyExists {
        /// The store's name.
        store: &'static str,
    },
    /// The store does not offer this optional capability.
    #[error("the {store} store does not support {operation}")]
    NotSupported {
        /// The store's name.
        store: &'static str,
        /// The operation asked for.
        operation: &'static str,
    },
    /// A stored record is not a valid express-session record (corrupt or foreign data).
    #[error("a stored session record could not be decoded")]
    Decode {
        /// The parser's error.
        #[source]
        source: BoxError,
    },
    /// A record could not be encoded for the store.
    #[error("a session record could not be encoded")]
    Encode {
        /// The serializer's error.
        #[source]
        source: BoxError,
    },
    /// A record is larger than the store accepts.
    #[error("a session record of {size} bytes is over the {limit}-byte limit of the {store} store")]
    TooLarge {
        /// The store's name.
        store: &'static str,
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store did not answer in time.
    #[error("the {store} store did not answer within {timeout:?}")]
    Timeout {
        /// The store's name.
        store: &'static str,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// The backend failed: connection refused or lost, a server error, a driver error.
    #[error("the {store} store failed")]
    Backend {
        /// The store's name.
        store: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A decode error from any parser error.
    pub fn decode(source: impl Into<BoxError>) -> Self {
        Self::Decode {
            source: source.into(),
        }
    }

    /// An encode error from any serializer error.
    pub fn encode(source: impl Into<BoxError>) -> Self {
        Self::Encode {
            source: source.into(),
        }
    }

    /// A backend error of `store`, keeping `source`.
    pub fn backend(store: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            store,
            source: source.into(),
        }
    }

    /// Whether the failure is the store being unreachable or slow (as opposed to bad data or a
    /// refused operation), which an outage policy may choose to ride out.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Backend { .. })
    }
}

/// The result type of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The crate's one error type.

/// A transport failure reported by a [`crate::Channel`].
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer closed the link or disappeared.
    #[error("peer disconnected")]
    Disconnected,
    /// Any other transport failure, described by the driver.
    #[error("transport: {0}")]
    Transport(String),
}

/// Everything a secure operator can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MpcError {
    /// The link to the peer failed.
    #[error("{op}: channel failed: {source}")]
    Channel {
        /// The operator that was communicating.
        op: &'static str,
        /// The transport's error.
        source: ChannelError,
    },
    /// The peer sent a message of the wrong length: a bug, a different model, or an attack.
    #[error("{op}: malformed message from peer: {got} bytes, expected {expected}")]
    Malformed {
        /// The operator that was receiving.
        op: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The pool of preprocessed correlated randomness has nothing left for this operator.
    #[error("{op}: correlated randomness exhausted (needed {needed})")]
    PoolExhausted {
        /// The operator asking.
        op: &'static str,
        /// The request that could not be served.
        needed: String,
    },
    /// The next item in the pool is not what the operator needs: the two sides ran different programs.
    #[error("{op}: correlated randomness out of step: needed {needed}, pool holds {found}")]
    OutOfStep {
        /// The operator asking.
        op: &'static str,
        /// The request the operator made.
        needed: String,
        /// The request the pool's next item was made for.
        found: String,
    },
    /// Operands whose shapes do not fit the operator.
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// The operator.
        op: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// Streamed material did not arrive (the dealer's link ended or stalled).
    #[error("{op}: correlated randomness did not arrive: {reason}")]
    MaterialUnavailable {
        /// The operator asking.
        op: &'static str,
        /// Why, as the feed reported it.
        reason: String,
    },
    /// The dealer cannot serve a request (for example an unknown weight mask).
    #[error("dealer: {0}")]
    Dealer(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, MpcError>;

/// Check that two lengths agree, else a [`MpcError::Shape`].
pub(crate) fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(MpcError::Shape {
            op,
            detail: format!("{what} has {got} elements, expected {want}"),
        })
    }
}

//! Bounds on connections and on shutdown, with their defaults: the one
//! home of these numbers (the flags of [`crate::cli`] default to them).
//!
//! Every listener of a party and of the dealer (client API, peer link,
//! dealer, plaintext health port) accepts through [`crate::listen`] with a
//! [`ConnLimits`]: a TLS handshake must finish within `handshake_timeout`
//! (on the plaintext health port: the first bytes must arrive within it), a
//! connection that receives nothing for `idle_timeout` is closed (the
//! server pings every `keepalive_interval`, so a live HTTP/2 peer always
//! answers something), and at most `max_connections` are open per listener.

use std::time::Duration;

/// Per-listener connection bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time from accepting a connection to the end of its TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection that receives no byte for this long is closed.
    pub idle_timeout: Duration,
    /// The server sends an HTTP/2 ping after this long without traffic...
    pub keepalive_interval: Duration,
    /// ...and closes the connection if the ping is not answered within this.
    pub keepalive_timeout: Duration,
    /// Connections open at once on one listener; more are closed at once.
    pub max_connections: usize,
}

/// Default of [`ConnLimits::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ConnLimits::idle_timeout`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`ConnLimits::keepalive_interval`].
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default of [`ConnLimits::keepalive_timeout`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default of [`ConnLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 512;

/// First pause after a failed `accept` (out of file descriptors, ...); it
/// doubles on each failure in a row, up to [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed `accept`s.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Shutdown: how long sessions in flight may take to finish before the
/// pairings end under them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Shutdown: how long the servers may take to close their connections
/// after the pairings ended; then the process stops regardless.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

impl ConnLimits {
    /// A tonic server builder with these limits' HTTP/2 keepalive. The
    /// pings come at least three times per idle timeout, so a live peer's
    /// answers keep its connection open however short the idle timeout.
    pub fn server_builder(&self) -> tonic::transport::Server {
        let third = self.idle_timeout / 3;
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.keepalive_interval.min(third)))
            .http2_keepalive_timeout(Some(self.keepalive_timeout.min(third)))
    }
}

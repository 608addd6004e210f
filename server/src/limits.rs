//! Bounds on connections. Their defaults live in [`crate::defaults`] with
//! every other default.
//!
//! Every listener of a party and of the dealer (client API, peer link,
//! dealer, plaintext health port) accepts through [`crate::listen`] with a
//! [`ConnLimits`]: a TLS handshake must finish within `handshake_timeout`
//! (on the plaintext health port: the first bytes must arrive within it), a
//! connection that receives nothing for `idle_timeout` is closed (the
//! server pings every `keepalive_interval`, so a live HTTP/2 peer always
//! answers something), and at most `max_connections` are open per listener.

use std::time::Duration;

use crate::defaults::{
    HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_CONNECTIONS,
};

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

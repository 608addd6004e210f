//! # mpcvit-server
//!
//! The deployed system: two computing parties (`mpcvit-server --party 0|1`)
//! and a dealer (`mpcvit-dealer`), talking gRPC over mutual TLS.
//!
//! - [`party`]: a computing party: client API, link to the other party
//!   (one stream per model load, one per inference session), pools of
//!   preprocessed material filled in the background, sessions on blocking
//!   threads.
//! - [`dealer`]: seeds by X25519 per connection, then corrections only.
//! - [`shares`]: the weight share file and the model owner's split.
//! - [`tls`]: certificates (rcgen), TLS configs, role checks.
//! - [`bridge`]: mpc-core's synchronous `Channel` over a gRPC stream.
//! - [`error`]: the one error type and its one mapping to gRPC statuses.
//! - [`health`]: the plaintext health port for orchestrators' probes, and
//!   the `health` probe command.
//! - [`listen`]: accepting connections: TLS handshakes with a timeout,
//!   idle timeout, a connection limit per listener, accept errors backed
//!   off; refusals logged. [`limits`]: those bounds and the shutdown's.
//!
//! Protocol code (mpc-core, the secure forward) never runs on the async
//! runtime's workers: sessions, model loads, dealing and pool expansion run
//! under `spawn_blocking`.

pub mod bridge;
pub mod cli;
pub mod dealer;
pub mod error;
pub mod health;
pub mod kx;
pub mod limits;
pub mod listen;
pub mod local;
pub mod party;
pub mod plan;
pub mod shares;
pub mod telemetry;
pub mod tls;

pub use error::ServerError;

/// Largest message on the internal links (party-to-party, dealer): openings
/// of a vit_9_12_64-sized matrix product fit with room to spare.
pub const MAX_INTERNAL_MESSAGE: usize = 64 << 20;

/// HTTP/2 flow-control window per stream on the internal links: a protocol
/// message of a few MB must not wait for window updates.
pub const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 flow-control window per connection on the internal links.
pub const CONNECTION_WINDOW: u32 = 64 << 20;

/// Lower-case hex of `bytes` (ids in logs and errors; never secrets).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 16-byte id (pairing or session) from a message field, or a message
/// naming `what` and the length found.
pub fn id16(bytes: &[u8], what: &str) -> Result<[u8; 16], String> {
    bytes
        .try_into()
        .map_err(|_| format!("{what} of {} bytes, expected 16", bytes.len()))
}

/// `https://` + `addr` unless `addr` already has a scheme.
pub fn https_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("https://{addr}")
    }
}

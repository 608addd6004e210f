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
//! - [`stamp`]: the split's record (`split.json`): its identifier and the
//!   digests a party checks its share file against.
//! - [`files`]: writing key and share files (0600).
//! - [`tls`]: certificates (rcgen), TLS configs, role checks.
//! - [`bridge`]: mpc-core's synchronous `Channel` over a gRPC stream.
//! - [`error`]: the one error type and its one mapping to gRPC statuses.
//! - [`health`]: the plaintext health port for orchestrators' probes, and
//!   the `health` probe command.
//! - [`listen`]: accepting connections: TLS handshakes with a timeout,
//!   idle timeout, a connection limit per listener, accept errors backed
//!   off; refusals logged. [`limits`]: those bounds.
//! - [`port_guard`]: a call to a service of another port (a client on the
//!   peer port, a party on a client API) is PERMISSION_DENIED, naming both.
//! - [`web`]: the client API for browsers: gRPC-web on a listener of its
//!   own, web tokens, CORS for configured origins.
//! - [`defaults`]: every default and fixed bound (timeouts, pool and buffer
//!   sizes, limits), used by the flags, the configs and the local mode.
//!
//! Protocol code (mpc-core, the secure forward) never runs on the async
//! runtime's workers: sessions, model loads, dealing and pool expansion run
//! under `spawn_blocking`.

pub mod admission;
pub mod bridge;
pub mod cli;
pub mod dealer;
pub mod defaults;
pub mod error;
pub mod files;
pub mod health;
pub mod kx;
pub mod limits;
pub mod listen;
pub mod local;
pub mod party;
pub mod plan;
pub mod port_guard;
pub mod shares;
pub mod stamp;
pub mod telemetry;
pub mod tls;
pub mod web;

pub use error::ServerError;

pub use defaults::{CONNECTION_WINDOW, MAX_INTERNAL_MESSAGE, STREAM_WINDOW};

/// Lower-case hex of `bytes` (ids in logs and errors; never secrets).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 16-byte id (pairing or session) from a message field, or
/// [`ServerError::FieldLength`] naming `field` and the length found.
pub fn id16(bytes: &[u8], field: &'static str) -> Result<[u8; 16], ServerError> {
    bytes.try_into().map_err(|_| ServerError::FieldLength {
        field,
        got: bytes.len(),
        expected: 16,
    })
}

/// `https://` + `addr` unless `addr` already has a scheme.
pub fn https_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("https://{addr}")
    }
}

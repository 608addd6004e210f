//! The crate's one error type, and the one place where errors become gRPC
//! statuses ([`ServerError::to_status`]).
//!
//! Messages never carry shares, seeds or weights: only names, shapes,
//! lengths and the kind of failure. A string that came from a caller is
//! echoed only through [`clip`], and a status message never exceeds
//! [`MAX_STATUS_MESSAGE`] bytes: a huge request field must not become a
//! huge `grpc-message` header (standard clients refuse headers over a few
//! KiB and report RESOURCE_EXHAUSTED instead of the real error).

use std::net::SocketAddr;
use std::path::Path;

use model::ModelError;
use mpc_core::MpcError;
use tonic::{Code, Status};
use tracing::warn;

pub use crate::defaults::{MAX_ECHO, MAX_STATUS_MESSAGE};

/// `s` cut to at most `max` bytes (on a character boundary), with the
/// original length when cut.
pub fn clip_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// A caller-supplied string, bounded for echoing in an error ([`MAX_ECHO`]).
pub fn clip(s: &str) -> String {
    clip_to(s, MAX_ECHO)
}

/// Everything the servers and the dealer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request names a model this party does not serve (the name as
    /// given, bounded by [`clip`]: build it with [`ServerError::unknown_model`]).
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    /// The request is malformed (wrong share length, bad session id, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A message or input exceeds a configured limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Another request already uses this session id.
    #[error("session {0} already exists")]
    DuplicateSession(String),
    /// The other party is not connected (or did not join the session in time).
    #[error("the other party is unavailable: {0}")]
    PeerUnavailable(String),
    /// The link to the other party failed during a session.
    #[error("session aborted: {0}")]
    Aborted(String),
    /// No preprocessed material is left and the dealer cannot make more.
    #[error("no preprocessed material: {0}")]
    PoolExhausted(String),
    /// The dealer cannot be reached or refused the pairing.
    #[error("dealer: {0}")]
    Dealer(String),
    /// The caller's certificate or token is not accepted here.
    #[error("not authorised: {0}")]
    Unauthenticated(String),
    /// The two sides run different programs (manifests, plans, builds).
    #[error("mismatch: {0}")]
    Mismatch(String),
    /// A secure operator failed.
    #[error("secure computation: {0}")]
    Mpc(#[from] MpcError),
    /// The model crate failed (manifest, preprocessing, secure forward).
    #[error("{0}")]
    Model(#[from] ModelError),
    /// A weight share file is not valid.
    #[error("weight share file: {0}")]
    ShareFile(String),
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be made or loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The gRPC transport failed to start or connect.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A remote call failed.
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] Status),
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A health probe found the service down or not serving.
    #[error("not healthy: {0}")]
    NotHealthy(String),
    /// A bug or an unexpected state.
    #[error("internal: {0}")]
    Internal(String),
}

impl ServerError {
    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        ServerError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// The request names a model this party does not serve.
    pub fn unknown_model(name: &str) -> Self {
        ServerError::UnknownModel(clip(name))
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            ServerError::UnknownModel(_) => Code::NotFound,
            ServerError::InvalidArgument(_) => Code::InvalidArgument,
            ServerError::TooLarge(_) => Code::ResourceExhausted,
            ServerError::DuplicateSession(_) => Code::AlreadyExists,
            ServerError::PeerUnavailable(_)
            | ServerError::PoolExhausted(_)
            | ServerError::Dealer(_)
            | ServerError::NotHealthy(_)
            | ServerError::Transport(_) => Code::Unavailable,
            ServerError::Aborted(_) => Code::Aborted,
            ServerError::Mismatch(_) => Code::FailedPrecondition,
            ServerError::Unauthenticated(_) => Code::Unauthenticated,
            ServerError::Mpc(e) => mpc_code(e),
            ServerError::Model(ModelError::Mpc(e)) => mpc_code(e),
            ServerError::Model(_) => Code::InvalidArgument,
            ServerError::Rpc(s) => match s.code() {
                // A failure of the other party's stream aborts this session.
                Code::Cancelled | Code::Unknown | Code::Internal => Code::Aborted,
                c => c,
            },
            ServerError::ShareFile(_)
            | ServerError::Io { .. }
            | ServerError::Tls(_)
            | ServerError::Config(_)
            | ServerError::Internal(_) => Code::Internal,
        }
    }

    /// The status a client sees. The one place errors become statuses; the
    /// message is bounded by [`MAX_STATUS_MESSAGE`].
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), clip_to(&self.to_string(), MAX_STATUS_MESSAGE))
    }

    /// A request refused before any work: logged (an operator sees probes
    /// and attacks) with the caller's address, then turned into its status.
    pub fn refuse(self, rpc: &'static str, remote: Option<SocketAddr>) -> Status {
        let status = self.to_status();
        warn!(
            rpc,
            remote = ?remote,
            code = ?status.code(),
            error = %status.message(),
            "request refused"
        );
        status
    }
}

fn mpc_code(e: &MpcError) -> Code {
    match e {
        MpcError::Channel { .. } | MpcError::Malformed { .. } => Code::Aborted,
        MpcError::PoolExhausted { .. } | MpcError::MaterialUnavailable { .. } => Code::Unavailable,
        MpcError::OutOfStep { .. } | MpcError::Dealer(_) => Code::Internal,
        MpcError::Shape { .. } => Code::InvalidArgument,
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        e.to_status()
    }
}

/// Statuses that tonic's transport makes before a handler runs, rewritten
/// on the way out of the client API to the codes of the README's error
/// table (trailers-only responses carry the status in the headers):
///
/// - a message over the size limit: tonic says OUT_OF_RANGE, gRPC's code
///   is RESOURCE_EXHAUSTED;
/// - bytes that are not a valid protobuf message: tonic says INTERNAL (as
///   gRPC's table does for parse errors), but it is the caller's input that
///   is wrong, not the server: INVALID_ARGUMENT.
pub fn fix_transport_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers();
    let code = h
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32);
    let message = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let says = |text: &str| message.contains(text) || message.contains(&text.replace(' ', "%20"));
    let fixed = match code {
        Some(Code::OutOfRange) if says("message length too large") => Code::ResourceExhausted,
        Some(Code::Internal) if says("failed to decode Protobuf message") => Code::InvalidArgument,
        _ => return resp,
    };
    resp.headers_mut()
        .insert("grpc-status", http::HeaderValue::from(fixed as i32));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_strings_and_status_messages_are_bounded() {
        let huge = "é".repeat(1 << 19); // 1 MiB, two bytes per character
        let e = ServerError::unknown_model(&huge);
        let s = e.to_status();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().len() < 200, "{} bytes", s.message().len());
        assert!(s.message().contains("(1048576 bytes)"), "{}", s.message());
        assert_eq!(clip("small"), "small");
        let long = ServerError::InvalidArgument("x".repeat(10_000)).to_status();
        assert!(long.message().len() <= MAX_STATUS_MESSAGE + 32);
    }

    fn response(code: Code, message: &str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from(code as i32));
        r.headers_mut()
            .insert("grpc-message", message.parse().unwrap());
        r
    }

    fn code_of(r: &http::Response<()>) -> String {
        r.headers()["grpc-status"].to_str().unwrap().to_string()
    }

    #[test]
    fn transport_statuses_get_the_tables_codes() {
        let r = fix_transport_status(response(
            Code::Internal,
            "failed%20to%20decode%20Protobuf%20message:%20invalid%20wire%20type",
        ));
        assert_eq!(code_of(&r), (Code::InvalidArgument as i32).to_string());
        let r = fix_transport_status(response(
            Code::OutOfRange,
            "Error,%20decoded%20message%20length%20too%20large",
        ));
        assert_eq!(code_of(&r), (Code::ResourceExhausted as i32).to_string());
        let r = fix_transport_status(response(Code::Internal, "something else"));
        assert_eq!(code_of(&r), (Code::Internal as i32).to_string());
    }
}

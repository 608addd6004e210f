//! The crate's one error type, and the one place where errors become gRPC
//! statuses ([`ServerError::to_status`]).
//!
//! Messages never carry shares, seeds or weights: only names, shapes,
//! lengths and the kind of failure.

use std::path::Path;

use model::ModelError;
use mpc_core::MpcError;
use tonic::{Code, Status};

/// Everything the servers and the dealer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request names a model this party does not serve.
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

    /// The status a client sees. The one place errors become statuses.
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
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

/// gRPC's status for a message over the size limit is RESOURCE_EXHAUSTED;
/// tonic's decoder reports OUT_OF_RANGE. This rewrites that one case on the
/// way out of the client API (trailers-only responses carry the status in
/// the headers).
pub fn fix_oversized_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers();
    let is_oversize = h.get("grpc-status").and_then(|v| v.to_str().ok())
        == Some(&(Code::OutOfRange as i32).to_string())
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if is_oversize {
        resp.headers_mut().insert(
            "grpc-status",
            http::HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
    resp
}

//! The crate's one error type, and the one place where errors become gRPC
//! statuses ([`ServerError::to_status`]).
//!
//! Each variant carries what the failure is about as typed fields: the
//! operation or step, the other end ([`Role`]), the model, the session or
//! pairing id, sizes and limits, the waited time, the source error. The
//! status code follows from the variant (and, for a failing peer, from who
//! the peer is: a dealer that fails is UNAVAILABLE, a party that fails
//! mid-session ABORTED); the table in the crate's README lists them.
//!
//! Messages never carry shares, seeds, keys or weights: only names, ids,
//! shapes, lengths and the kind of failure. A string that came from a caller
//! is echoed only through [`clip`], and a status message never exceeds
//! [`MAX_STATUS_MESSAGE`] bytes: a huge request field must not become a
//! huge `grpc-message` header (standard clients refuse headers over a few
//! KiB and report RESOURCE_EXHAUSTED instead of the real error).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::ModelError;
use mpc_core::{MpcError, Party};
use tonic::{Code, Status};
use tracing::warn;

use crate::hex;
use crate::tls::Role;

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
    // ---- The caller's request, refused before any work ----------------
    /// The request names a model this party does not serve (the name as
    /// given, bounded by [`clip`]: build it with [`ServerError::unknown_model`]).
    #[error("unknown model {name:?}")]
    UnknownModel {
        /// The requested name, clipped.
        name: String,
    },
    /// The input share does not have the model's length.
    #[error(
        "invalid argument: input share of {got} bytes; model {model} takes {elements} ring elements ({} bytes)",
        .elements * 8
    )]
    InputLength {
        /// The model.
        model: String,
        /// The share's length in bytes.
        got: usize,
        /// The model's input length in ring elements.
        elements: usize,
    },
    /// A fixed-length field (an id, a public key) has another length.
    #[error("invalid argument: {field} of {got} bytes, expected {expected}")]
    FieldLength {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        got: usize,
        /// The length it must have.
        expected: usize,
    },
    /// A stream did not begin with the message its protocol begins with
    /// (or with nothing in time).
    #[error("invalid argument: {rpc}: expected {expected} first")]
    NoHeader {
        /// The RPC.
        rpc: &'static str,
        /// The message it begins with.
        expected: &'static str,
    },
    /// A message or input exceeds a limit.
    #[error("too large: {what} of {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Another request already uses this session id.
    #[error("session {} already exists", hex(.session))]
    DuplicateSession {
        /// The session id.
        session: [u8; 16],
    },

    // ---- Not now: UNAVAILABLE -------------------------------------------
    /// This party is shutting down and admits no new work.
    #[error("unavailable: party {} is shutting down", .party.index())]
    ShuttingDown {
        /// This party.
        party: Party,
    },
    /// The dealer is shutting down and admits no new pairing.
    #[error("unavailable: the dealer is shutting down")]
    DealerStopping,
    /// Party 0 has no live pairing with party 1 for the model.
    #[error("unavailable: not paired with party 1 for model {model} (yet)")]
    NotPaired {
        /// The model.
        model: String,
    },
    /// `peer` did not take `step` in time, before the computation began.
    #[error("unavailable: {peer} did not {step} within {waited:?}")]
    NotJoined {
        /// Who was waited for.
        peer: Role,
        /// The step it did not take.
        step: &'static str,
        /// How long it was waited for.
        waited: Duration,
    },
    /// `peer` closed a stream before the computation began.
    #[error("unavailable: {peer} closed the {stream} stream")]
    Closed {
        /// Who closed it.
        peer: Role,
        /// Which stream.
        stream: &'static str,
    },
    /// Party 1: the client's request ended before party 0's stream came.
    #[error("unavailable: the client left before the session began")]
    ClientGone,
    /// No compute slot came free in time (party 0 is busy).
    #[error("unavailable: no compute slot free within {waited:?} (server busy)")]
    Busy {
        /// How long a slot was waited for.
        waited: Duration,
    },
    /// No preprocessed material arrived in time while the dealer was up.
    #[error("no preprocessed material: none arrived within {waited:?}")]
    PoolTimeout {
        /// How long it was waited for.
        waited: Duration,
    },
    /// The pool is empty and the dealer stream is gone.
    #[error("no preprocessed material: the pool is empty and the dealer is unreachable ({reason})")]
    PoolDealerLost {
        /// Why the dealer stream ended (the [`ServerError`] or frame problem
        /// that ended it, as text).
        reason: String,
    },
    /// A call to `peer` failed before any exchange.
    #[error("{peer} is unreachable: {rpc}: {}: {}", .status.code(), .status.message())]
    Unreachable {
        /// Who was called.
        peer: Role,
        /// The RPC.
        rpc: &'static str,
        /// Its status.
        #[source]
        status: Status,
    },

    // ---- A peer failed during a session or a pairing --------------------
    // ABORTED for a party, UNAVAILABLE for the dealer.
    /// `peer` left during `during`.
    #[error("session aborted: {peer} left {during}")]
    PeerLeft {
        /// Who left.
        peer: Role,
        /// When (what it left).
        during: &'static str,
    },
    /// `peer` did not take `step` in time after the session began.
    #[error("session aborted: {peer} did not {step} within {waited:?}")]
    PeerStalled {
        /// Who was waited for.
        peer: Role,
        /// The step it did not take.
        step: &'static str,
        /// How long it was waited for.
        waited: Duration,
    },
    /// `peer` sent something other than what the protocol expects next.
    #[error("{peer} sent something other than {expected}")]
    Unexpected {
        /// Who sent it.
        peer: Role,
        /// What was expected.
        expected: &'static str,
    },
    /// Party 0 named a pairing that party 1 does not have for this model.
    #[error(
        "session aborted: party 0 runs this session under pairing {} of another model or an ended pairing",
        hex(.pairing)
    )]
    UnknownPairing {
        /// The pairing id party 0 named.
        pairing: [u8; 16],
    },
    /// The batch a session needs was released or taken by another session.
    #[error("session aborted: batch {batch} was released or taken by another session")]
    BatchGone {
        /// The batch.
        batch: u64,
    },
    /// `peer`'s public key would make the agreed secret zero.
    #[error("key agreement with {peer}: low-order public key (the shared secret would be zero)")]
    LowOrderKey {
        /// Whose key.
        peer: Role,
    },

    // ---- UNAUTHENTICATED ------------------------------------------------
    /// The caller's certificate has a role this service does not accept.
    #[error(
        "not authorised: a {} certificate is not accepted by {service}",
        .caller.dns_name()
    )]
    WrongRole {
        /// The caller's role.
        caller: Role,
        /// This service and whom it serves.
        service: &'static str,
    },
    /// The caller's certificate does not verify against the CA.
    #[error("not authorised: the client certificate was refused: {reason}")]
    BadCertificate {
        /// Why, in words.
        reason: String,
    },
    /// The caller claims another party index than its certificate's.
    #[error("not authorised: a {} certificate cannot join as party {claimed}", .caller.dns_name())]
    RoleClaim {
        /// The caller's role.
        caller: Role,
        /// The party index it claimed.
        claimed: u32,
    },
    /// A party joined the same pairing twice at the dealer.
    #[error("not authorised: party {party} joined pairing {} twice", hex(.pairing))]
    JoinedTwice {
        /// The party.
        party: usize,
        /// The pairing.
        pairing: [u8; 16],
    },
    /// The caller shows no accepted credential.
    #[error("not authorised: {needed}")]
    NoCredential {
        /// What would be accepted.
        needed: &'static str,
    },

    // ---- FAILED_PRECONDITION --------------------------------------------
    /// `peer` runs another program for the model (manifest, plans, build).
    #[error(
        "mismatch: model {model}: {peer} holds different manifests or correlation plans (another build?)"
    )]
    PlanMismatch {
        /// The model.
        model: String,
        /// The other side.
        peer: Role,
    },

    /// Party 1: party 0 holds a share of another split of the model.
    #[error(
        "mismatch: model {model}: party 0 holds a share of split {party0}, party 1 of split {party1}: \
         the two shares are halves of different splits (give each party its directory of one `mpcvit-server split`)"
    )]
    SplitMismatch {
        /// The model.
        model: String,
        /// Party 0's split identifier (hex, or `none`).
        party0: String,
        /// Party 1's split identifier (hex).
        party1: String,
    },
    /// `peer` refused a call for a reason that waiting will not change (its
    /// status: FAILED_PRECONDITION).
    #[error("{peer} refused {rpc}: {}", .status.message())]
    Refused {
        /// Who refused.
        peer: Role,
        /// The RPC.
        rpc: &'static str,
        /// Its status.
        #[source]
        status: Status,
    },

    // ---- Wrapped errors of the other crates ----------------------------
    /// A secure operator failed.
    #[error("secure computation: {0}")]
    Mpc(#[from] MpcError),
    /// The model crate failed (manifest, preprocessing, secure forward).
    #[error("{0}")]
    Model(#[from] ModelError),
    /// The gRPC transport failed to start or connect.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A remote call failed (a peer's stream ended with this status).
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] Status),

    // ---- Files, certificates, configuration: INTERNAL -------------------
    /// A weight share file is not valid.
    #[error("{}{source}", in_path(.path))]
    ShareFile {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        #[source]
        source: ModelError,
    },
    /// A file does not match the split's record of it ([`crate::stamp`]).
    #[error("{} is damaged: {problem}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What differs, in words.
        problem: String,
    },
    /// A share directory has no split record (`split.json`).
    #[error(
        "configuration: {} has no split.json, the record of the split's identifier and digests \
         (the shares were split by an older mpcvit-server, or split.json was not copied with them): \
         split the model again (mpcvit-server split --model MODEL --out OUT [--per-party]) and give \
         each party its new directory, or record these shares as they are with \
         mpcvit-server stamp --dir DIR, where DIR holds both halves (DIR/share-0.safetensors and \
         DIR/share-1.safetensors, or DIR/party0/ and DIR/party1/)",
        .dir.display()
    )]
    Unstamped {
        /// The share file's directory.
        dir: PathBuf,
    },
    /// A split record cannot be used.
    #[error("{}: {problem}", .path.display())]
    Stamp {
        /// The record's file.
        path: PathBuf,
        /// What is wrong, in words.
        problem: String,
    },
    /// A file could not be read or written.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be made or loaded.
    #[error("tls: {what}: {reason}")]
    Tls {
        /// What was being made or read.
        what: &'static str,
        /// The library's message (never the key's bytes).
        reason: String,
    },
    /// An address does not parse.
    #[error("configuration: address {addr:?}: {reason}")]
    BadAddress {
        /// The address.
        addr: String,
        /// The parser's message.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("configuration: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A share file was written for the other party.
    #[error(
        "configuration: {} is party {}'s share, this is party {}",
        .path.display(), .file.index(), .this.index()
    )]
    WrongParty {
        /// The file.
        path: PathBuf,
        /// The party it was written for.
        file: Party,
        /// This party.
        this: Party,
    },
    /// A model's shares use another fixed point than this build computes at.
    #[error(
        "configuration: model {model}: shares at {shares} fractional bits, this build computes at {build}"
    )]
    FracBits {
        /// The model.
        model: String,
        /// The shares' fractional bits.
        shares: u32,
        /// This build's.
        build: u32,
    },
    /// The same model is given twice.
    #[error("configuration: model {model} is given twice")]
    ModelTwice {
        /// The model.
        model: String,
    },
    /// Invalid flags or arguments (a usage message).
    #[error("configuration: {0}")]
    Config(String),
    /// A health probe got no answer.
    #[error("not healthy: health port {addr}: {reason}")]
    HealthUnreachable {
        /// The health port.
        addr: String,
        /// The transport's message.
        reason: String,
    },
    /// A health probe found the service not serving.
    #[error("not healthy: {service} at {addr} is {status}")]
    NotServing {
        /// The service asked about (`the server` for `""`).
        service: String,
        /// The health port.
        addr: String,
        /// Its answer.
        status: &'static str,
    },
    /// A blocking task (a session, a model load, dealing, plan recording)
    /// panicked or was cancelled.
    #[error("internal: {op} task: {source}")]
    Task {
        /// The task.
        op: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A channel inside this process closed while `op` still needed it.
    #[error("internal: {op}: channel closed")]
    ChannelClosed {
        /// What needed it.
        op: &'static str,
    },
}

/// `"<path>: "` for a share file's message, or nothing.
fn in_path(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl ServerError {
    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        ServerError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The request names a model this party does not serve.
    pub fn unknown_model(name: &str) -> Self {
        ServerError::UnknownModel { name: clip(name) }
    }

    /// A blocking task failed.
    pub fn task(op: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| ServerError::Task { op, source }
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        use ServerError as E;
        // A failing dealer makes material unavailable; a failing party
        // aborts the session it was in.
        let failed = |peer: &Role| match peer {
            Role::Dealer => Code::Unavailable,
            _ => Code::Aborted,
        };
        match self {
            E::UnknownModel { .. } => Code::NotFound,
            E::InputLength { .. } | E::FieldLength { .. } | E::NoHeader { .. } => {
                Code::InvalidArgument
            }
            E::TooLarge { .. } => Code::ResourceExhausted,
            E::DuplicateSession { .. } => Code::AlreadyExists,
            E::ShuttingDown { .. }
            | E::DealerStopping
            | E::NotPaired { .. }
            | E::NotJoined { .. }
            | E::Closed { .. }
            | E::ClientGone
            | E::Busy { .. }
            | E::PoolTimeout { .. }
            | E::PoolDealerLost { .. }
            | E::Unreachable { .. }
            | E::HealthUnreachable { .. }
            | E::NotServing { .. }
            | E::Transport(_) => Code::Unavailable,
            E::PeerLeft { peer, .. } | E::PeerStalled { peer, .. } | E::Unexpected { peer, .. } => {
                failed(peer)
            }
            E::UnknownPairing { .. } | E::BatchGone { .. } => Code::Aborted,
            E::LowOrderKey { peer: Role::Dealer } => Code::Unavailable,
            E::LowOrderKey { .. } => Code::InvalidArgument,
            E::WrongRole { .. }
            | E::BadCertificate { .. }
            | E::RoleClaim { .. }
            | E::JoinedTwice { .. }
            | E::NoCredential { .. } => Code::Unauthenticated,
            E::PlanMismatch { .. } | E::SplitMismatch { .. } | E::Refused { .. } => {
                Code::FailedPrecondition
            }
            E::Mpc(e) => mpc_code(e),
            E::Model(ModelError::Mpc(e)) => mpc_code(e),
            E::Model(_) => Code::InvalidArgument,
            E::Rpc(s) => match s.code() {
                // A failure of the other party's stream aborts this session.
                Code::Cancelled | Code::Unknown | Code::Internal => Code::Aborted,
                c => c,
            },
            E::ShareFile { .. }
            | E::Damaged { .. }
            | E::Unstamped { .. }
            | E::Stamp { .. }
            | E::Io { .. }
            | E::Tls { .. }
            | E::BadAddress { .. }
            | E::Bind { .. }
            | E::WrongParty { .. }
            | E::FracBits { .. }
            | E::ModelTwice { .. }
            | E::Config(_)
            | E::Task { .. }
            | E::ChannelClosed { .. } => Code::Internal,
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
        let long = ServerError::Config("x".repeat(10_000)).to_status();
        assert!(long.message().len() <= MAX_STATUS_MESSAGE + 32);
    }

    /// Every row of the README's error table, from the variants that make it.
    #[test]
    fn codes_follow_the_readme_table() {
        use std::time::Duration;
        let sid = [7u8; 16];
        let s = Duration::from_secs(1);
        let table: Vec<(ServerError, Code)> = vec![
            (
                ServerError::InputLength {
                    model: "m".into(),
                    got: 3,
                    elements: 768,
                },
                Code::InvalidArgument,
            ),
            (
                crate::id16(&[1, 2], "session id").unwrap_err(),
                Code::InvalidArgument,
            ),
            (ServerError::unknown_model("m"), Code::NotFound),
            (
                ServerError::TooLarge {
                    what: "manifest",
                    size: 2 << 20,
                    limit: 1 << 20,
                },
                Code::ResourceExhausted,
            ),
            (
                ServerError::DuplicateSession { session: sid },
                Code::AlreadyExists,
            ),
            (
                ServerError::NotPaired { model: "m".into() },
                Code::Unavailable,
            ),
            (
                ServerError::NotJoined {
                    peer: Role::Party(0),
                    step: "open this session",
                    waited: s,
                },
                Code::Unavailable,
            ),
            (
                ServerError::PoolDealerLost {
                    reason: "the dealer closed the stream".into(),
                },
                Code::Unavailable,
            ),
            (
                ServerError::ShuttingDown { party: Party::P1 },
                Code::Unavailable,
            ),
            (
                ServerError::PeerLeft {
                    peer: Role::Party(1),
                    during: "during this session (the pairing ended)",
                },
                Code::Aborted,
            ),
            (
                ServerError::PeerStalled {
                    peer: Role::Party(0),
                    step: "start the session",
                    waited: s,
                },
                Code::Aborted,
            ),
            // A failing dealer is UNAVAILABLE, not ABORTED.
            (
                ServerError::Unexpected {
                    peer: Role::Dealer,
                    expected: "its hello",
                },
                Code::Unavailable,
            ),
            (
                ServerError::WrongRole {
                    caller: Role::Client,
                    service: "party 1's peer port",
                },
                Code::Unauthenticated,
            ),
            (
                ServerError::NoCredential {
                    needed: "a client certificate is required",
                },
                Code::Unauthenticated,
            ),
            (
                ServerError::PlanMismatch {
                    model: "m".into(),
                    peer: Role::Party(0),
                },
                Code::FailedPrecondition,
            ),
        ];
        for (e, code) in table {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.to_status().code(), code, "{e}");
        }
        // Messages name the peer, the step and the ids (never a value).
        let e = ServerError::NotJoined {
            peer: Role::Party(0),
            step: "open this session",
            waited: s,
        };
        assert_eq!(
            e.to_string(),
            "unavailable: party 0 did not open this session within 1s"
        );
        let e = ServerError::DuplicateSession { session: sid };
        assert_eq!(
            e.to_string(),
            "session 07070707070707070707070707070707 already exists"
        );
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

//! Every default and fixed bound of the servers, in one place: timeouts,
//! pool and buffer sizes, message and connection limits.
//!
//! The command-line flags ([`crate::cli`]), [`crate::party::PartyConfig::new`],
//! [`crate::dealer::DealerConfig::default`], [`crate::limits::ConnLimits::default`]
//! and the local mode ([`crate::local::LocalOptions::default`]) all take their
//! defaults from here, so a deployed party, `mpcvit-client`'s local mode and
//! the tests' clusters start from the same numbers. Constants without a flag
//! are fixed bounds of the protocol's steps; each says why it has its value.

use std::time::Duration;

// ---- A party's flags -------------------------------------------------------

/// `--pool`: online batches (one inference's material each) a party keeps
/// ready per model.
pub const POOL_TARGET: u64 = 2;
/// `--pool-buffer-mb` (in bytes): dealer bytes a party buffers per batch
/// before the dealer is made to wait. A `vit_7_4_32` batch (at most
/// 172 MB) fits whole; a `vit_9_12_64` batch (gigabytes) streams while its
/// session runs.
pub const POOL_BUFFER_BYTES: usize = 256 << 20;
/// `--max-sessions`: sessions party 0 computes at once (party 1 follows
/// party 0).
pub const MAX_SESSIONS: usize = 4;
/// `--join-timeout`: how long the two halves of a session (or of a
/// pairing) wait for each other.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// `--recv-timeout`: how long a protocol step waits for the other party's
/// message. A party that vanishes without closing its connection fails the
/// sessions in flight after this long (a broken connection fails them at
/// once).
pub const RECV_TIMEOUT: Duration = Duration::from_secs(30);
/// `--pool-wait`: how long a session waits for preprocessed material (a
/// batch, then each piece of it) while the dealer is up, and party 0 for a
/// free compute slot.
pub const POOL_WAIT: Duration = Duration::from_secs(60);
/// `--max-message-bytes`: the largest request accepted on the client API.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// `--shutdown-grace`: how long sessions in flight may take to finish on
/// Ctrl-C / SIGTERM before the pairings end under them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Party 0: pause between attempts to (re)pair with party 1.
pub const PAIR_RETRY: Duration = Duration::from_millis(500);

// ---- A party's fixed bounds ------------------------------------------------

/// Party 0's wait for the dealer's hello beyond [`JOIN_TIMEOUT`]: the dealer
/// answers at once, so this only covers a slow connection.
pub const DEALER_HELLO_SLACK: Duration = Duration::from_secs(5);
/// Party 0's wait for party 1's acknowledgement of a session (or of its
/// batch) beyond party 1's own bound on that step: party 1 answers within
/// its join timeout (or pool wait), plus this for the message to arrive.
pub const ACK_SLACK: Duration = Duration::from_secs(2);
/// Party 1: how long a session waits for the pairing party 0 names to
/// finish loading (party 0 can announce sessions of a pairing moments
/// before party 1 has it registered).
pub const PAIRING_LOOKUP_WAIT: Duration = Duration::from_secs(5);
/// Party 1: how long the first frame of a `Pair` or `Session` stream (its
/// header) may take to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Party 1: batches this many behind the highest one in use (beyond four
/// times the pool target) were never claimed by a session and are dropped.
pub const STALE_BATCH_SLACK: u64 = 64;

/// Outgoing connections (to the other party, to the dealer): time to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Outgoing connections: HTTP/2 ping interval, also while idle, so a dead
/// peer is noticed within seconds.
pub const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Outgoing connections: an unanswered ping closes the connection after this.
pub const CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest message on the internal links (party-to-party, dealer): openings
/// of a vit_9_12_64-sized matrix product fit with room to spare.
pub const MAX_INTERNAL_MESSAGE: usize = 64 << 20;
/// HTTP/2 flow-control window per stream on the internal links: a protocol
/// message of a few MB must not wait for window updates.
pub const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 flow-control window per connection on the internal links.
pub const CONNECTION_WINDOW: u32 = 64 << 20;
/// Frames buffered per direction of a peer stream ([`crate::bridge`]).
pub const FRAME_BUFFER: usize = 16;

// ---- The dealer ------------------------------------------------------------

/// How long the first party of a pairing waits at the dealer for the second.
pub const DEALER_JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the dealer waits for a party's hello after it connects.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest piece of a batch in one message from the dealer.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Largest manifest the dealer records plans for.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Manifests whose plans the dealer keeps recorded (then it starts afresh).
pub const PLAN_CACHE_ENTRIES: usize = 64;

// ---- Connections (every listener: [`crate::limits::ConnLimits`]) -----------

/// `--handshake-timeout`: time from accepting a connection to the end of
/// its TLS handshake (on the plaintext health port: to its first bytes).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `--idle-timeout`: a connection that receives no byte for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The servers send an HTTP/2 ping after this long without traffic...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// ...and close the connection if the ping is not answered within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// `--max-connections`: connections open at once on one listener; more are
/// closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// First pause after a failed `accept` (out of file descriptors, ...); it
/// doubles on each failure in a row, up to [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed `accept`s.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Shutdown: how long the servers may take to close their connections
/// after the pairings ended; then the process stops regardless.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Shutdown: how long a stopping process waits for its runtime's tasks (a
/// blocking secure forward whose peer is gone must not keep it alive).
pub const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);
/// Refused connections and requests: at most this many log lines per
/// [`REFUSAL_LOG_WINDOW`] per listener (the next line counts those left out).
pub const REFUSAL_LOG_LINES: u32 = 10;
/// See [`REFUSAL_LOG_LINES`].
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

// ---- Errors ----------------------------------------------------------------

/// Longest caller-supplied string echoed in an error, in bytes.
pub const MAX_ECHO: usize = 64;
/// Longest status message sent to a caller, in bytes (standard clients
/// refuse `grpc-message` headers over a few KiB).
pub const MAX_STATUS_MESSAGE: usize = 1024;

// ---- Tools -----------------------------------------------------------------

/// `mpcvit-server health --timeout`: how long the probe waits for an answer.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

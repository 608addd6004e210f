//! A computing party.
//!
//! **Pairings** (`pairing.rs`). For each model, party 0 sets up a *pairing*
//! with party 1: it opens a `Pair` stream (the model's name, a fresh 16-byte
//! id, the digest of the public manifest and correlation plans), both
//! parties connect to the dealer under that id and agree a seed with it, the
//! dealer sends the model-load material (batch 0), and both parties mask the
//! weights over the `Pair` stream (`SecureModel::prepare`). The stream then
//! stays open for the pairing's life; its end (a party died or left) drops
//! the pairing on both sides, and party 0 sets up a new one with backoff.
//!
//! **Pools** (`pool.rs`, `dealer_stream.rs`). Each pairing keeps a pool of
//! online batches (one inference's material each) that a background task
//! reads from the dealer stream; a party asks for more by credit (`want`). A
//! batch is streamed: it enters the pool at its first chunk, its bytes wait
//! in a channel bounded to `pool_buffer_bytes`, and the session that takes
//! it expands each request's material only when its operator asks
//! ([`mpc_core::StreamedPool`]). When the channel is full the reader stops
//! reading, and HTTP/2 flow control stops the dealer: memory stays bounded by
//! the buffer whatever the model's size, and a small model's batches still
//! arrive whole ahead of their sessions. If the dealer link breaks, the
//! pairing keeps serving from the pool and party 0 tries to set up a fresh
//! pairing; an empty pool with no dealer is a clear `UNAVAILABLE`.
//!
//! **Sessions** (`session.rs`, `start_up.rs`, `rendezvous.rs`). A client
//! sends the same 16-byte session id with its share to both parties. Party
//! 0 opens a `Session` stream to party 1 naming the pairing and the
//! session, takes the next batch from its pool and names it; party 1
//! matches the stream with the client's request by session id (a
//! rendezvous, bounded in time), takes the same batch, acknowledges, and
//! both run the secure forward on blocking threads over the stream. Party 0
//! does not wait for the acknowledgements before its forward starts: they
//! are checked beside it and arrive ahead of party 1's first message. Each
//! session has its own stream, so no session's values reach another. Party
//! 0 bounds the number of concurrent sessions; party 1 follows party 0.
//!
//! The gRPC services are thin adapters over this (`service.rs`); [`serve`]
//! puts a party together and runs it until shutdown (`run.rs`). Settings:
//! `config.rs`, with their defaults in [`crate::defaults`].

mod config;
mod dealer_stream;
mod pairing;
mod pool;
mod rendezvous;
mod run;
mod service;
mod session;
mod start_up;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mpc_core::{FixedPoint, Party};
use mpcvit_proto::v1::{PeerFrame, peer_frame};
use tokio::sync::{Semaphore, watch};
use tonic::transport::Channel;

use crate::error::ServerError;

pub use config::{PartyConfig, PartyListeners, ServedModel};
pub use run::serve;
pub use service::PartyService;

/// Default [`PartyConfig::pool_buffer_bytes`] (see
/// [`crate::defaults::POOL_BUFFER_BYTES`]).
pub const DEFAULT_POOL_BUFFER_BYTES: usize = crate::defaults::POOL_BUFFER_BYTES;

/// The state a party's services share: its models and their pairings, the
/// session bookkeeping, the settings, and the shutdown flags.
struct Shared {
    party: Party,
    fp: FixedPoint,
    models: HashMap<String, Arc<pairing::ModelEntry>>,
    client_token: Option<String>,
    /// Verifies client certificates per request (the client API's
    /// handshake takes them unverified, so a refusal can say why).
    client_certs: crate::tls::ClientCertCheck,
    pool_target: u64,
    pool_buffer_bytes: usize,
    join_timeout: Duration,
    recv_timeout: Duration,
    pool_wait: Duration,
    retry: Duration,
    /// Party 0: compute slots (party 1 follows party 0).
    sessions: Semaphore,
    rendezvous: Arc<rendezvous::Rendezvous>,
    /// Session ids in progress at this party (a second request with one of
    /// them is ALREADY_EXISTS); shutdown waits for it to empty.
    active: watch::Sender<HashSet<[u8; 16]>>,
    dealer: Channel,
    /// Party 0: the connection to party 1's peer port.
    peer: Option<Channel>,
    /// Set when shutdown begins: no new session is admitted.
    stop: watch::Receiver<bool>,
    /// Set once in-flight sessions ended (or the grace period ran out):
    /// pairings end and the other party is told.
    end_pairings: watch::Receiver<bool>,
}

impl Shared {
    /// Refuse new work (a session, a pairing) once shutdown began.
    fn refuse_if_stopping(&self) -> Result<(), ServerError> {
        if *self.stop.borrow() {
            return Err(ServerError::ShuttingDown { party: self.party });
        }
        Ok(())
    }
}

/// Lock one of the party's bookkeeping mutexes. Each critical section is a
/// few inserts or removals of whole entries and calls nothing that can
/// panic, so a poisoned lock still holds consistent data: take it as it is
/// rather than failing every later request.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A peer-link frame of `kind`.
fn frame(kind: peer_frame::Kind) -> PeerFrame {
    PeerFrame { kind: Some(kind) }
}

/// Resolves once `flag` is true (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

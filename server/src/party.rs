//! A computing party.
//!
//! **Pairings.** For each model, party 0 sets up a *pairing* with party 1: it
//! opens a `Pair` stream (the model's name, a fresh 16-byte id, the digest of
//! the public manifest and correlation plans), both parties connect to the
//! dealer under that id and agree a seed with it, the dealer sends the
//! model-load material (batch 0), and both parties mask the weights over the
//! `Pair` stream (`SecureModel::prepare`). The stream then stays open for the
//! pairing's life; its end (a party died or left) drops the pairing on both
//! sides, and party 0 sets up a new one with backoff.
//!
//! **Pools.** Each pairing keeps a pool of online batches (one inference's
//! material each) that a background task reads from the dealer stream; a
//! party asks for more by credit (`want`). A batch is streamed: it enters
//! the pool at its first chunk, its bytes wait in a channel bounded to
//! `pool_buffer_bytes`, and the session that takes it expands each request's
//! material only when its operator asks ([`mpc_core::StreamedPool`]). When
//! the channel is full the reader stops reading, and HTTP/2 flow control
//! stops the dealer: memory stays bounded by the buffer whatever the model's
//! size, and a small model's batches still arrive whole ahead of their
//! sessions. If the dealer link breaks, the pairing keeps serving from the
//! pool and party 0 tries to set up a fresh pairing; an empty pool with no
//! dealer is a clear `UNAVAILABLE`.
//!
//! **Sessions.** A client sends the same 16-byte session id with its share to
//! both parties. Party 0 takes the next batch from its pool and opens a
//! `Session` stream to party 1 naming the pairing, the session and the batch;
//! party 1 matches the stream with the client's request by session id (a
//! rendezvous, bounded in time), takes the same batch, acknowledges, and both
//! run the secure forward on blocking threads over the stream. Each session
//! has its own stream, so no session's values reach another. Party 0 bounds
//! the number of concurrent sessions; party 1 follows party 0.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use model::SecureParams;
use mpc_core::{
    CountingChannel, FixedPoint, MaterialGen, Party, Seed, Session, Share, StreamedPool,
};
use mpcvit_proto::v1::dealer_client::DealerClient;
use mpcvit_proto::v1::inference_server::{Inference, InferenceServer};
use mpcvit_proto::v1::peer_link_client::PeerLinkClient;
use mpcvit_proto::v1::peer_link_server::{PeerLink, PeerLinkServer};
use mpcvit_proto::v1::{
    Ack, DealerLost, Hello, InferRequest, InferResponse, ListModelsRequest, ListModelsResponse,
    ModelInfo, PairHeader, PeerFrame, ProvisionRequest, ReleaseBatch, SessionHeader, SessionStats,
    StartSession, peer_frame, provision_request, provision_response,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request as RpcRequest, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::bridge::{self, BlockingChannel, PeerStream, TokioFeed};
use crate::error::ServerError;
use crate::kx::{End, KeyPair};
use crate::plan::ModelPlans;
use crate::tls::{Role, TlsMaterial, require_client, require_role};
use crate::{MAX_INTERNAL_MESSAGE, hex, https_url, id16};
use model::secure::{SecureModel, WeightShares};

/// Everything a party needs besides its listeners.
#[derive(Debug)]
pub struct PartyConfig {
    /// Which party this is.
    pub party: Party,
    /// This party's share of every model it serves.
    pub models: Vec<WeightShares>,
    /// Party 0: address of party 1's peer port.
    pub peer_addr: Option<String>,
    /// Address of the dealer.
    pub dealer_addr: String,
    /// Certificates.
    pub tls: TlsMaterial,
    /// A bearer token accepted on the client API in place of a client certificate.
    pub client_token: Option<String>,
    /// Online batches to keep ready per model.
    pub pool_target: u64,
    /// Dealer bytes buffered per batch before the dealer is made to wait
    /// (a batch larger than this arrives while its session runs).
    pub pool_buffer_bytes: usize,
    /// Party 0: sessions computed at once (party 1 follows party 0).
    pub max_sessions: usize,
    /// How long the two halves of a session (or of a pairing) wait for each other.
    pub join_timeout: Duration,
    /// How long a protocol step waits for the other party's message.
    pub recv_timeout: Duration,
    /// How long a session waits for preprocessed material while the dealer is up.
    pub pool_wait: Duration,
    /// Largest message accepted on the client API.
    pub max_message_bytes: usize,
    /// Delay between attempts to (re)pair with party 1.
    pub retry: Duration,
    /// Bounds on the listeners' connections.
    pub limits: crate::limits::ConnLimits,
    /// Shutdown: how long sessions in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl PartyConfig {
    /// Defaults for everything but the party, models, addresses and TLS.
    pub fn new(
        party: Party,
        models: Vec<WeightShares>,
        dealer_addr: String,
        tls: TlsMaterial,
    ) -> Self {
        PartyConfig {
            party,
            models,
            peer_addr: None,
            dealer_addr,
            tls,
            client_token: None,
            pool_target: 2,
            pool_buffer_bytes: DEFAULT_POOL_BUFFER_BYTES,
            max_sessions: 4,
            join_timeout: Duration::from_secs(10),
            recv_timeout: Duration::from_secs(30),
            pool_wait: Duration::from_secs(60),
            max_message_bytes: 4 << 20,
            retry: Duration::from_millis(500),
            limits: crate::limits::ConnLimits::default(),
            shutdown_grace: crate::limits::SHUTDOWN_GRACE,
        }
    }
}

/// Default [`PartyConfig::pool_buffer_bytes`]: a `vit_7_4_32` batch (at
/// most 172 MB) fits whole; a `vit_9_12_64` batch (gigabytes) streams.
pub const DEFAULT_POOL_BUFFER_BYTES: usize = 256 << 20;

/// Listeners of a party: the client API, and party 1's peer port.
#[derive(Debug)]
pub struct PartyListeners {
    /// Client API (and health).
    pub client: tokio::net::TcpListener,
    /// Party 1: the port party 0 connects to.
    pub peer: Option<tokio::net::TcpListener>,
    /// The plaintext health port for orchestrators' probes ([`crate::health`]).
    pub health: Option<tokio::net::TcpListener>,
}

/// Liveness of a pairing's links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Health {
    /// Our dealer stream is up.
    dealer: bool,
    /// The other party's dealer stream is up (as it told us).
    peer_dealer: bool,
    /// The pairing's stream to the other party is up.
    peer: bool,
}

/// One batch's dealer bytes, as they arrive (see [`PoolStore`]): chunks in
/// a channel whose bytes are bounded by the `budget` semaphore (one permit
/// per byte; the reader takes permits before it queues a chunk, the session
/// gives them back as it reads).
#[derive(Debug)]
struct BatchFeed {
    batch: u64,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    budget: Arc<Semaphore>,
    /// The budget's permits in all.
    size: usize,
    /// Set once the batch arrived whole, or at once for a batch larger than
    /// the buffer (it can only arrive while its session runs).
    ready: Arc<std::sync::atomic::AtomicBool>,
}

/// The batches of one pairing, streamed from the dealer.
struct PoolStore {
    target: u64,
    party: Party,
    /// The seed agreed with the dealer: batch `k`'s material is expanded
    /// from its stream `k` ([`MaterialGen::for_batch`]).
    seed: Seed,
    plans: ModelPlans,
    state: Mutex<PoolState>,
    /// Bumped on every arrival and every health change.
    version: watch::Sender<u64>,
    /// Credit sent to the dealer.
    want: watch::Sender<u64>,
    health: watch::Sender<Health>,
}

#[derive(Default)]
struct PoolState {
    /// Batches that started arriving and no session took yet.
    batches: BTreeMap<u64, BatchFeed>,
    /// Batches party 0 released before they arrived.
    released: std::collections::BTreeSet<u64>,
    /// The highest batch that started arriving.
    arrived: Option<u64>,
    highest_used: u64,
    dealer_error: Option<String>,
}

impl PoolStore {
    fn new(target: u64, party: Party, seed: Seed, plans: ModelPlans) -> Arc<Self> {
        Arc::new(PoolStore {
            target,
            party,
            seed,
            plans,
            state: Mutex::new(PoolState::default()),
            version: watch::channel(0).0,
            want: watch::channel(target).0,
            health: watch::channel(Health {
                dealer: true,
                peer_dealer: true,
                peer: true,
            })
            .0,
        })
    }

    /// The material source of a taken batch, reading its bytes with `wait`
    /// per piece (call on the blocking thread that runs the protocol).
    fn source(
        &self,
        feed: BatchFeed,
        handle: tokio::runtime::Handle,
        wait: Duration,
    ) -> StreamedPool<TokioFeed> {
        let plan = if feed.batch == 0 {
            self.plans.prepare.clone()
        } else {
            self.plans.online.clone()
        };
        StreamedPool::new(
            MaterialGen::for_batch(self.party, &self.seed, feed.batch),
            plan,
            TokioFeed::new(feed.rx, feed.budget, feed.size, handle, wait),
        )
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Batch `feed.batch` started arriving; false if it was released
    /// (nobody will read it: the caller discards its bytes).
    fn put(&self, feed: BatchFeed) -> bool {
        let kept = {
            let mut st = self.state.lock().expect("pool lock");
            let id = feed.batch;
            st.arrived = Some(st.arrived.map_or(id, |a| a.max(id)));
            let released = st.released.contains(&id);
            st.released.retain(|r| *r > id);
            if !released {
                st.batches.insert(id, feed);
            }
            !released
        };
        self.bump();
        kept
    }

    /// Party 0 gave batch `id` up: drop it, now or when it arrives.
    fn release(&self, id: u64) {
        let mut st = self.state.lock().expect("pool lock");
        if st.batches.remove(&id).is_none() && st.arrived.is_none_or(|a| a < id) {
            st.released.insert(id);
        }
    }

    fn dealer_lost(&self, reason: String) {
        self.state.lock().expect("pool lock").dealer_error = Some(reason);
        self.health.send_modify(|h| h.dealer = false);
        self.bump();
    }

    /// Online batches ready for a session: arrived whole, or started if they
    /// are larger than the buffer.
    fn available(&self) -> u64 {
        let st = self.state.lock().expect("pool lock");
        st.batches
            .values()
            .filter(|b| b.batch > 0 && b.ready.load(std::sync::atomic::Ordering::SeqCst))
            .count() as u64
    }

    fn used(&self, st: &mut PoolState, id: u64) {
        st.highest_used = st.highest_used.max(id);
        // Party 1: batches far behind the ones in use were never claimed by
        // a session (party 0 gave up on it): drop them.
        let horizon = st.highest_used.saturating_sub(4 * self.target + 64);
        st.batches.retain(|k, _| *k == 0 || *k >= horizon);
        // Replacements are asked for when the session that took this batch
        // ends ([`Replenish`]), so that dealing and expansion do not take
        // the cores from its online phase; at once only if the pool is now
        // empty (under load, when waiting would starve the next session).
        if !st.batches.keys().any(|k| *k > 0) {
            self.grow_want(st.highest_used + self.target);
        }
    }

    /// The session that used batch `id` ended: keep `target` batches ahead of it.
    fn finished(&self, id: u64) {
        self.grow_want(id + self.target);
    }

    fn grow_want(&self, want: u64) {
        self.want.send_if_modified(|w| {
            let grow = want > *w;
            *w = (*w).max(want);
            grow
        });
    }

    /// Take batch `id` (or, with `None`, the lowest online batch), waiting up
    /// to `wait` while the dealer is up.
    async fn take(&self, id: Option<u64>, wait: Duration) -> Result<BatchFeed, ServerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut version = self.version.subscribe();
        loop {
            {
                let mut st = self.state.lock().expect("pool lock");
                let key = match id {
                    Some(i) => st.batches.contains_key(&i).then_some(i),
                    None => st.batches.keys().find(|k| **k > 0).copied(),
                };
                if let Some(k) = key {
                    let feed = st.batches.remove(&k).expect("present");
                    if k > 0 {
                        self.used(&mut st, k);
                    }
                    return Ok(feed);
                }
                if let (Some(i), Some(a)) = (id, st.arrived)
                    && i <= a
                {
                    return Err(ServerError::Aborted(format!(
                        "batch {i} was released or taken by another session"
                    )));
                }
                if let Some(e) = &st.dealer_error {
                    return Err(ServerError::PoolExhausted(format!(
                        "the pool is empty and the dealer is unreachable ({e})"
                    )));
                }
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    return Err(ServerError::Internal("pool closed".into()));
                }
                Err(_) => {
                    return Err(ServerError::PoolExhausted(format!(
                        "no preprocessed material arrived within {wait:?}"
                    )));
                }
            }
        }
    }
}

/// Held by a session for the batch it took; asks for its replacement when
/// dropped (the session ended, whichever way).
struct Replenish {
    store: Arc<PoolStore>,
    batch: u64,
}

impl Drop for Replenish {
    fn drop(&mut self) {
        self.store.finished(self.batch);
    }
}

/// Party 0: a batch its session took that party 1 has not acknowledged yet.
/// Dropped while still armed (the session ended first), it tells party 1 to
/// drop the batch ([`ReleaseBatch`]), so that the dealer stream, which
/// delivers batches in order, is not held up behind it.
struct Unclaimed {
    epoch: Option<Arc<Epoch>>,
    batch: u64,
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(epoch) = &self.epoch
            && let Some(tx) = epoch.pair_tx.lock().expect("epoch lock").as_ref()
        {
            let release = ReleaseBatch { batch: self.batch };
            if tx
                .try_send(Ok(frame(peer_frame::Kind::Release(release))))
                .is_err()
            {
                warn!(
                    batch = self.batch,
                    "could not tell party 1 to release a batch"
                );
            }
        }
    }
}

/// A live pairing: the prepared model and its pool.
struct Epoch {
    id: [u8; 16],
    model: Arc<SecureModel>,
    store: Arc<PoolStore>,
    /// Keeps the Pair stream open; dropping it ends the pairing at the peer.
    pair_tx: Mutex<Option<mpsc::Sender<Result<PeerFrame, Status>>>>,
}

impl Epoch {
    fn close(&self) {
        self.pair_tx.lock().expect("epoch lock").take();
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epoch({})", hex(&self.id))
    }
}

/// One served model.
struct ModelEntry {
    name: String,
    manifest_json: String,
    shares: Arc<WeightShares>,
    params: SecureParams,
    plans: ModelPlans,
    digest: [u8; 32],
    input_len: usize,
    output_len: usize,
    epochs: Mutex<EpochSet>,
    /// Bumped whenever a pairing of any served model starts or ends (one
    /// sender shared by every entry, so readiness watches a single value).
    epochs_version: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct EpochSet {
    /// Party 0: the pairing new sessions use.
    current: Option<Arc<Epoch>>,
    /// Party 1: pairings by id.
    by_id: HashMap<[u8; 16], Arc<Epoch>>,
}

impl ModelEntry {
    fn current(&self) -> Option<Arc<Epoch>> {
        self.epochs.lock().expect("epochs lock").current.clone()
    }

    fn set_current(&self, e: Option<Arc<Epoch>>) {
        let old = std::mem::replace(&mut self.epochs.lock().expect("epochs lock").current, e);
        if let Some(old) = old {
            old.close();
        }
        self.epochs_version.send_modify(|v| *v += 1);
    }

    fn insert(&self, e: Arc<Epoch>) {
        self.epochs
            .lock()
            .expect("epochs lock")
            .by_id
            .insert(e.id, e);
        self.epochs_version.send_modify(|v| *v += 1);
    }

    fn remove(&self, id: &[u8; 16]) {
        self.epochs.lock().expect("epochs lock").by_id.remove(id);
        self.epochs_version.send_modify(|v| *v += 1);
    }

    fn ready(&self) -> bool {
        let set = self.epochs.lock().expect("epochs lock");
        set.current.is_some() || !set.by_id.is_empty()
    }

    fn pool_available(&self) -> u64 {
        let set = self.epochs.lock().expect("epochs lock");
        set.current
            .iter()
            .chain(set.by_id.values())
            .map(|e| e.store.available())
            .sum()
    }

    async fn by_id(&self, id: &[u8; 16], wait: Duration) -> Option<Arc<Epoch>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut v = self.epochs_version.subscribe();
        loop {
            if let Some(e) = self.epochs.lock().expect("epochs lock").by_id.get(id) {
                return Some(e.clone());
            }
            match tokio::time::timeout_at(deadline, v.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }
}

/// Party 1's half of a session, waiting for the client's request or the other way round.
enum Slot {
    Peer(SessionHeader, PeerStream, u64),
    Waiter(
        tokio::sync::oneshot::Sender<(SessionHeader, PeerStream)>,
        u64,
    ),
}

/// Removes a client's waiter when its request ends (answered, timed out or
/// cancelled), so abandoned session ids do not pile up.
struct WaiterGuard {
    rendezvous: Arc<Rendezvous>,
    sid: [u8; 16],
    n: u64,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut slots = self.rendezvous.slots.lock().expect("rendezvous lock");
        if matches!(slots.get(&self.sid), Some(Slot::Waiter(_, m)) if *m == self.n) {
            slots.remove(&self.sid);
        }
    }
}

#[derive(Default)]
struct Rendezvous {
    slots: Mutex<HashMap<[u8; 16], Slot>>,
    counter: std::sync::atomic::AtomicU64,
}

struct Shared {
    party: Party,
    fp: FixedPoint,
    models: HashMap<String, Arc<ModelEntry>>,
    client_token: Option<String>,
    pool_target: u64,
    pool_buffer_bytes: usize,
    join_timeout: Duration,
    recv_timeout: Duration,
    pool_wait: Duration,
    retry: Duration,
    sessions: Semaphore,
    rendezvous: Arc<Rendezvous>,
    /// Session ids in progress at this party (a second request with one of
    /// them is ALREADY_EXISTS); shutdown waits for it to empty.
    active: watch::Sender<HashSet<[u8; 16]>>,
    dealer: Channel,
    peer: Option<Channel>,
    /// Set when shutdown begins: no new session is admitted.
    stop: watch::Receiver<bool>,
    /// Set once in-flight sessions ended (or the grace period ran out):
    /// pairings end and the other party is told.
    end_pairings: watch::Receiver<bool>,
}

/// A session id registered in [`Shared::active`]; removed when dropped.
struct ActiveSession<'a> {
    active: &'a watch::Sender<HashSet<[u8; 16]>>,
    sid: [u8; 16],
}

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.active.send_modify(|a| {
            a.remove(&self.sid);
        });
    }
}

fn endpoint(addr: &str, tls: &TlsMaterial, role: Role) -> Result<Endpoint, ServerError> {
    Ok(Endpoint::from_shared(https_url(addr))
        .map_err(|e| ServerError::Config(format!("address {addr:?}: {e}")))?
        .tls_config(tls.client(role))?
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(crate::STREAM_WINDOW))
        .initial_connection_window_size(Some(crate::CONNECTION_WINDOW))
        .tcp_nodelay(true))
}

fn session_id(bytes: &[u8]) -> Result<[u8; 16], ServerError> {
    id16(bytes, "session id").map_err(ServerError::InvalidArgument)
}

fn frame(kind: peer_frame::Kind) -> PeerFrame {
    PeerFrame { kind: Some(kind) }
}

/// Wait for an `Ack` on `rx` (party 1 accepted a header).
async fn expect_ack(
    rx: &mut mpsc::Receiver<Result<PeerFrame, Status>>,
    wait: Duration,
    what: &str,
) -> Result<(), ServerError> {
    match tokio::time::timeout(wait, rx.recv()).await {
        Err(_) => Err(ServerError::PeerUnavailable(format!(
            "party 1 did not accept the {what} within {wait:?}"
        ))),
        Ok(None) => Err(ServerError::PeerUnavailable(format!(
            "party 1 closed the {what} stream"
        ))),
        Ok(Some(Err(s))) => Err(ServerError::Rpc(s)),
        Ok(Some(Ok(PeerFrame {
            kind: Some(peer_frame::Kind::Ack(_)),
        }))) => Ok(()),
        Ok(Some(Ok(_))) => Err(ServerError::Aborted(format!(
            "unexpected frame instead of the {what} acknowledgement"
        ))),
    }
}

/// Resolves once `flag` is true (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// Party 0: a session failed. If party 1 went away under it, say so: when
/// a party leaves, the dealer ends the pairing's material stream too
/// ([`crate::dealer::PAIRING_ENDED`]), and a session waiting for material
/// would blame the dealer.
fn explain_peer_loss(e: ServerError, epoch: &Epoch) -> ServerError {
    let peer_gone = !epoch.store.health.borrow().peer;
    if !(peer_gone || e.to_string().contains(crate::dealer::PAIRING_ENDED)) {
        return e;
    }
    debug!(error = %e, "the session failed after party 1 left");
    ServerError::Aborted("party 1 left during this session (the pairing ended)".into())
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn to_bytes(s: &Share) -> Vec<u8> {
    s.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Shared {
    fn entry(&self, name: &str) -> Result<Arc<ModelEntry>, ServerError> {
        self.models
            .get(name)
            .cloned()
            .ok_or_else(|| ServerError::unknown_model(name))
    }

    /// Check a client's request before any work: the caller, this party
    /// not shutting down, the model, the session id and the share's length.
    fn admit(
        &self,
        req: RpcRequest<InferRequest>,
    ) -> Result<(Arc<ModelEntry>, [u8; 16], Share), ServerError> {
        require_client(&req, self.client_token.as_deref())?;
        if *self.stop.borrow() {
            return Err(ServerError::PeerUnavailable(format!(
                "party {} is shutting down",
                self.party.index()
            )));
        }
        let r = req.into_inner();
        let entry = self.entry(&r.model)?;
        let sid = session_id(&r.session_id)?;
        let want = entry.input_len * 8;
        if r.input_share.len() != want {
            return Err(ServerError::InvalidArgument(format!(
                "input share of {} bytes; model {} takes {} ring elements ({want} bytes)",
                r.input_share.len(),
                entry.name,
                entry.input_len
            )));
        }
        let input = Share::new(words(&r.input_share));
        Ok((entry, sid, input))
    }

    /// Party 1: check party 0's `Pair` request: its certificate, the
    /// header, the model and the digest of its plans.
    async fn admit_pairing(
        &self,
        req: RpcRequest<Streaming<PeerFrame>>,
    ) -> Result<(Arc<ModelEntry>, [u8; 16], Streaming<PeerFrame>), ServerError> {
        require_role(&req, &[Role::Party(0)])?;
        if *self.stop.borrow() {
            return Err(ServerError::PeerUnavailable(
                "party 1 is shutting down".into(),
            ));
        }
        let mut incoming = req.into_inner();
        let peer_frame::Kind::Pair(h) = first_frame(&mut incoming).await? else {
            return Err(ServerError::InvalidArgument(
                "expected a pair header".into(),
            ));
        };
        let entry = self.entry(&h.model)?;
        if h.plan_digest != entry.digest {
            return Err(ServerError::Mismatch(format!(
                "model {}: the parties hold different manifests or plans",
                entry.name
            )));
        }
        let id = id16(&h.pairing_id, "pairing id").map_err(ServerError::InvalidArgument)?;
        Ok((entry, id, incoming))
    }

    /// Register session `sid` as in progress at this party.
    fn register(&self, sid: [u8; 16]) -> Result<ActiveSession<'_>, ServerError> {
        let mut fresh = false;
        self.active.send_modify(|a| fresh = a.insert(sid));
        if !fresh {
            return Err(ServerError::DuplicateSession(hex(&sid)));
        }
        Ok(ActiveSession {
            active: &self.active,
            sid,
        })
    }

    /// Connect to the dealer for pairing `id`, agree the seed, and start
    /// filling a pool (batch 0 is the model-load material).
    async fn connect_dealer(
        &self,
        entry: &Arc<ModelEntry>,
        id: [u8; 16],
    ) -> Result<Arc<PoolStore>, ServerError> {
        let (req_tx, req_rx) = mpsc::channel(4);
        let keys = KeyPair::generate();
        let party_public = keys.public();
        req_tx
            .send(ProvisionRequest {
                kind: Some(provision_request::Kind::Hello(Hello {
                    party: self.party.index() as u32,
                    pairing_id: id.to_vec(),
                    public_key: party_public.to_vec(),
                    manifest_json: entry.manifest_json.clone(),
                    plan_digest: entry.digest.to_vec(),
                })),
            })
            .await
            .map_err(|_| ServerError::Internal("request channel closed".into()))?;
        let mut client = DealerClient::new(self.dealer.clone())
            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
            .max_encoding_message_size(MAX_INTERNAL_MESSAGE);
        let resp = client
            .provision(tokio_stream::wrappers::ReceiverStream::new(req_rx))
            .await
            .map_err(|s| ServerError::Dealer(format!("{}: {}", s.code(), s.message())))?;
        let mut inbound = resp.into_inner();
        let wait = self.join_timeout + Duration::from_secs(5);
        let hello = match tokio::time::timeout(wait, inbound.message()).await {
            Err(_) => return Err(ServerError::Dealer(format!("no answer within {wait:?}"))),
            Ok(Err(s)) => {
                return Err(ServerError::Dealer(format!(
                    "{}: {}",
                    s.code(),
                    s.message()
                )));
            }
            Ok(Ok(Some(m))) => match m.kind {
                Some(provision_response::Kind::Hello(h)) => h,
                _ => return Err(ServerError::Dealer("expected the dealer's hello".into())),
            },
            Ok(Ok(None)) => return Err(ServerError::Dealer("the dealer closed the stream".into())),
        };
        let dealer_public: [u8; 32] = hello
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| ServerError::Dealer("dealer public key must be 32 bytes".into()))?;
        let seed = keys.agree(&dealer_public, &id, self.party.index(), End::Party)?;
        let store = PoolStore::new(self.pool_target, self.party, seed, entry.plans.clone());
        // Credit forwarder: ends when the store is dropped.
        let mut want = store.want.subscribe();
        tokio::spawn(async move {
            loop {
                let w = *want.borrow_and_update();
                let msg = ProvisionRequest {
                    kind: Some(provision_request::Kind::Want(w)),
                };
                if req_tx.send(msg).await.is_err() || want.changed().await.is_err() {
                    break;
                }
            }
        });
        let reader = DealerReader {
            party: self.party,
            plans: entry.plans.clone(),
            store: Arc::downgrade(&store),
            buffer_bytes: self.pool_buffer_bytes,
        };
        let span = info_span!("dealer_stream", pairing = %hex(&id));
        tokio::spawn(reader.run(inbound).instrument(span));
        Ok(store)
    }

    /// Mask the weights over the pairing's stream (on a blocking thread),
    /// with batch 0 of `store`.
    async fn prepare(
        &self,
        entry: &Arc<ModelEntry>,
        stream: PeerStream,
        store: &Arc<PoolStore>,
    ) -> Result<(SecureModel, PeerStream), ServerError> {
        let feed = store.take(Some(0), self.pool_wait).await?;
        let (party, fp, params) = (self.party, self.fp, entry.params);
        let shares = entry.shares.clone();
        let handle = tokio::runtime::Handle::current();
        let (recv_timeout, wait) = (self.recv_timeout, self.pool_wait);
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let mut pool = store.source(feed, handle.clone(), wait);
            let mut ch = BlockingChannel::new(stream, handle, recv_timeout);
            let m = {
                let mut s = Session::new(party, fp, &mut ch, &mut pool);
                SecureModel::prepare(&mut s, &shares, params)?
            };
            Ok((m, ch.into_inner()))
        })
        .await
        .map_err(|e| ServerError::Internal(format!("model-load task: {e}")))?
    }

    /// Run one secure forward (on a blocking thread) with a taken batch.
    async fn forward(
        &self,
        epoch: &Epoch,
        stream: PeerStream,
        feed: BatchFeed,
        input: Share,
    ) -> Result<(Share, SessionStats), ServerError> {
        let (party, fp) = (self.party, self.fp);
        let handle = tokio::runtime::Handle::current();
        let (recv_timeout, wait) = (self.recv_timeout, self.pool_wait);
        let (model, store) = (epoch.model.clone(), epoch.store.clone());
        tokio::task::spawn_blocking(move || {
            let mut pool = store.source(feed, handle.clone(), wait);
            let mut ch = CountingChannel::new(BlockingChannel::new(stream, handle, recv_timeout));
            let t = Instant::now();
            let out = {
                let mut s = Session::new(party, fp, &mut ch, &mut pool);
                model.forward(&mut s, &input)?
            };
            let c = ch.stats();
            Ok((
                out,
                SessionStats {
                    bytes_sent: c.bytes_sent,
                    bytes_received: c.bytes_received,
                    rounds: c.rounds,
                    online_micros: t.elapsed().as_micros() as u64,
                    wait_micros: 0,
                },
            ))
        })
        .await
        .map_err(|e| ServerError::Internal(format!("session task: {e}")))?
    }

    /// Party 0: set up one pairing for `entry`.
    async fn pair_as_leader(
        self: &Arc<Self>,
        entry: &Arc<ModelEntry>,
    ) -> Result<Arc<Epoch>, ServerError> {
        let id: [u8; 16] = Seed::random().to_bytes()[..16]
            .try_into()
            .expect("16 bytes");
        let (tx, out) = bridge::outgoing();
        tx.send(Ok(frame(peer_frame::Kind::Pair(PairHeader {
            model: entry.name.clone(),
            pairing_id: id.to_vec(),
            plan_digest: entry.digest.to_vec(),
        }))))
        .await
        .map_err(|_| ServerError::Internal("pair channel closed".into()))?;
        let peer = self.peer.clone().expect("party 0 has a peer address");
        let mut client = PeerLinkClient::new(peer)
            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
            .max_encoding_message_size(MAX_INTERNAL_MESSAGE);
        let resp = client
            .pair(out.map_while(Result::ok))
            .await
            .map_err(|s| ServerError::PeerUnavailable(format!("{}: {}", s.code(), s.message())))?;
        let mut rx = bridge::pump(resp.into_inner());
        expect_ack(&mut rx, self.join_timeout, "pairing").await?;
        let store = self.connect_dealer(entry, id).await?;
        let t = Instant::now();
        let (model, stream) = self.prepare(entry, PeerStream { tx, rx }, &store).await?;
        info!(pairing = %hex(&id), ms = t.elapsed().as_millis() as u64, "model loaded (weights masked)");
        let epoch = Arc::new(Epoch {
            id,
            model: Arc::new(model),
            store: store.clone(),
            pair_tx: Mutex::new(Some(stream.tx)),
        });
        // Watch the pair stream: its end is the peer's end.
        let mut rx = stream.rx;
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Some(Ok(PeerFrame {
                        kind: Some(peer_frame::Kind::DealerLost(_)),
                    })) => store.health.send_modify(|h| h.peer_dealer = false),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        store.health.send_modify(|h| h.peer = false);
                        store.bump();
                        break;
                    }
                }
            }
        });
        Ok(epoch)
    }

    /// Party 0: keep a pairing alive for `entry` until shutdown.
    async fn lead(self: Arc<Self>, entry: Arc<ModelEntry>) {
        let mut stop = self.stop.clone();
        let mut logged_failure = false;
        loop {
            if *stop.borrow() {
                return;
            }
            let paired = tokio::select! {
                r = self.pair_as_leader(&entry) => r,
                () = raised(&mut stop) => return,
            };
            match paired {
                Ok(epoch) => {
                    logged_failure = false;
                    info!(model = %entry.name, pairing = %hex(&epoch.id), "paired with party 1");
                    let mut health = epoch.store.health.subscribe();
                    entry.set_current(Some(epoch.clone()));
                    // Wait until a link of this pairing breaks.
                    let h = loop {
                        let h = *health.borrow_and_update();
                        if !(h.peer && h.dealer && h.peer_dealer) {
                            break Some(h);
                        }
                        tokio::select! {
                            r = health.changed() => if r.is_err() { break None },
                            _ = stop.changed() => return,
                        }
                    };
                    match h {
                        Some(h) if h.peer => {
                            warn!(model = %entry.name, "dealer link lost: serving from the pool while setting up a new pairing");
                            // Keep the drained pairing current until a new one is up.
                            self.replace_when_paired(&entry, &epoch).await;
                            continue;
                        }
                        _ => {
                            warn!(model = %entry.name, "lost party 1: pairing dropped");
                            entry.set_current(None);
                        }
                    }
                }
                Err(e) => {
                    if !logged_failure {
                        warn!(model = %entry.name, error = %e, "pairing with party 1 failed; retrying");
                        logged_failure = true;
                    } else {
                        debug!(model = %entry.name, error = %e, "pairing failed again");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Party 0, dealer lost: retry pairing until it works (the old pairing
    /// keeps serving from its pool meanwhile) or the old pairing's peer dies.
    async fn replace_when_paired(self: &Arc<Self>, entry: &Arc<ModelEntry>, old: &Arc<Epoch>) {
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.retry) => {}
                _ = stop.changed() => return,
            }
            if !old.store.health.borrow().peer {
                entry.set_current(None);
                return;
            }
            let paired = tokio::select! {
                r = self.pair_as_leader(entry) => r,
                () = raised(&mut stop) => return,
            };
            match paired {
                Ok(epoch) => {
                    info!(model = %entry.name, pairing = %hex(&epoch.id), "new pairing replaces the drained one");
                    let mut health = epoch.store.health.subscribe();
                    entry.set_current(Some(epoch.clone()));
                    // Hand over to the normal watch loop by waiting here.
                    loop {
                        let h = *health.borrow_and_update();
                        if !(h.peer && h.dealer && h.peer_dealer) {
                            if h.peer {
                                Box::pin(self.replace_when_paired(entry, &epoch)).await;
                            } else {
                                entry.set_current(None);
                            }
                            return;
                        }
                        tokio::select! {
                            r = health.changed() => if r.is_err() { return },
                            _ = stop.changed() => return,
                        }
                    }
                }
                Err(e) => debug!(model = %entry.name, error = %e, "re-pairing failed"),
            }
        }
    }

    /// Party 1: the rest of a pairing after the header was accepted.
    async fn follow_pairing(
        self: Arc<Self>,
        entry: Arc<ModelEntry>,
        id: [u8; 16],
        stream: PeerStream,
    ) -> Result<(), ServerError> {
        let store = self.connect_dealer(&entry, id).await?;
        let t = Instant::now();
        let (model, stream) = self.prepare(&entry, stream, &store).await?;
        info!(pairing = %hex(&id), ms = t.elapsed().as_millis() as u64, "model loaded (weights masked)");
        let PeerStream { tx, mut rx } = stream;
        let epoch = Arc::new(Epoch {
            id,
            model: Arc::new(model),
            store: store.clone(),
            pair_tx: Mutex::new(Some(tx.clone())),
        });
        entry.insert(epoch.clone());
        info!(model = %entry.name, pairing = %hex(&id), "paired with party 0");
        let mut health = store.health.subscribe();
        let mut told = false;
        let mut end = self.end_pairings.clone();
        let mut shutting_down = false;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Ok(PeerFrame { kind: Some(peer_frame::Kind::Release(r)) })) => {
                        debug!(batch = r.batch, "party 0 released a batch");
                        store.release(r.batch);
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
                r = health.changed(), if !told => {
                    if r.is_err() { break }
                    if !health.borrow().dealer {
                        told = true;
                        let _ = tx.send(Ok(frame(peer_frame::Kind::DealerLost(DealerLost {})))).await;
                    }
                }
                () = raised(&mut end) => {
                    shutting_down = true;
                    break;
                }
            }
        }
        if shutting_down {
            // Ends the Pair stream with this status: party 0 drops the
            // pairing at once and pairs again with whoever takes over.
            let _ = tx
                .send(Err(Status::unavailable("party 1 is shutting down")))
                .await;
            info!(model = %entry.name, pairing = %hex(&id), "pairing ended: shutting down");
        } else {
            info!(model = %entry.name, pairing = %hex(&id), "pairing ended by party 0");
        }
        entry.remove(&id);
        epoch.close();
        Ok(())
    }

    /// Party 0's side of a session.
    async fn lead_session(
        &self,
        entry: &Arc<ModelEntry>,
        sid: [u8; 16],
        input: Share,
    ) -> Result<(Share, SessionStats), ServerError> {
        let t0 = Instant::now();
        let epoch = entry.current().ok_or_else(|| {
            ServerError::PeerUnavailable("not paired with party 1 for this model (yet)".into())
        })?;
        // Announce the session at once, so party 1 matches it with its own
        // request while this one waits for a slot and a batch.
        let (tx, out) = bridge::outgoing();
        tx.send(Ok(frame(peer_frame::Kind::Session(SessionHeader {
            pairing_id: epoch.id.to_vec(),
            session_id: sid.to_vec(),
        }))))
        .await
        .map_err(|_| ServerError::Internal("session channel closed".into()))?;
        let mut client = PeerLinkClient::new(self.peer.clone().expect("party 0 has a peer"))
            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
            .max_encoding_message_size(MAX_INTERNAL_MESSAGE);
        let resp = client
            .session(out.map_while(Result::ok))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::AlreadyExists => ServerError::DuplicateSession(hex(&sid)),
                c => ServerError::PeerUnavailable(format!("{c}: {}", s.message())),
            })?;
        let mut rx = bridge::pump(resp.into_inner());
        expect_ack(
            &mut rx,
            self.join_timeout + Duration::from_secs(2),
            "session",
        )
        .await?;
        let _permit = tokio::time::timeout(self.pool_wait, self.sessions.acquire())
            .await
            .map_err(|_| {
                ServerError::PeerUnavailable(format!(
                    "no compute slot free within {:?} (server busy)",
                    self.pool_wait
                ))
            })?
            .map_err(|_| ServerError::Internal("shutting down".into()))?;
        let feed = epoch.store.take(None, self.pool_wait).await?;
        let batch = feed.batch;
        let _replenish = Replenish {
            store: epoch.store.clone(),
            batch,
        };
        let mut unclaimed = Unclaimed {
            epoch: Some(epoch.clone()),
            batch,
        };
        tx.send(Ok(frame(peer_frame::Kind::Start(StartSession { batch }))))
            .await
            .map_err(|_| ServerError::Aborted("party 1 left the session".into()))?;
        expect_ack(&mut rx, self.pool_wait + Duration::from_secs(2), "batch").await?;
        unclaimed.epoch = None;
        let wait = t0.elapsed();
        let (out, mut stats) = self
            .forward(&epoch, PeerStream { tx, rx }, feed, input)
            .await?;
        stats.wait_micros = wait.as_micros() as u64;
        Ok((out, stats))
    }

    /// Party 1's side of a session.
    async fn follow_session(
        &self,
        entry: &Arc<ModelEntry>,
        sid: [u8; 16],
        input: Share,
    ) -> Result<(Share, SessionStats), ServerError> {
        let t0 = Instant::now();
        let (header, mut stream) = self.claim(sid).await?;
        let tx = stream.tx.clone();
        let result: Result<(Share, SessionStats), ServerError> = async {
            let pid = id16(&header.pairing_id, "party 0's pairing id").map_err(ServerError::Aborted)?;
            let epoch = entry.by_id(&pid, Duration::from_secs(5)).await.ok_or_else(|| {
                ServerError::Aborted(format!(
                    "party 0 runs this session under pairing {} of another model or an ended pairing",
                    hex(&pid)
                ))
            })?;
            let ack = || Ok(frame(peer_frame::Kind::Ack(Ack {})));
            tx.send(ack())
                .await
                .map_err(|_| ServerError::Aborted("party 0 left the session".into()))?;
            // Party 0 bounds its own waits for a slot and a batch by the pool wait.
            let start_wait = 2 * self.pool_wait + self.join_timeout;
            let batch = match tokio::time::timeout(start_wait, stream.rx.recv()).await {
                Err(_) => {
                    return Err(ServerError::Aborted(format!(
                        "party 0 did not start the session within {start_wait:?}"
                    )));
                }
                Ok(Some(Ok(PeerFrame {
                    kind: Some(peer_frame::Kind::Start(s)),
                }))) => s.batch,
                Ok(Some(Err(s))) => return Err(ServerError::Rpc(s)),
                Ok(_) => return Err(ServerError::Aborted("party 0 left the session".into())),
            };
            let feed = epoch.store.take(Some(batch), self.pool_wait).await?;
            let _replenish = Replenish {
                store: epoch.store.clone(),
                batch,
            };
            tx.send(ack())
                .await
                .map_err(|_| ServerError::Aborted("party 0 left the session".into()))?;
            let wait = t0.elapsed();
            let (out, mut stats) = self.forward(&epoch, stream, feed, input).await?;
            stats.wait_micros = wait.as_micros() as u64;
            Ok((out, stats))
        }
        .await;
        if let Err(e) = &result {
            let _ = tx.send(Err(e.to_status())).await;
        }
        result
    }

    /// Party 1: wait for party 0's stream for session `sid`.
    async fn claim(&self, sid: [u8; 16]) -> Result<(SessionHeader, PeerStream), ServerError> {
        let n = self
            .rendezvous
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rx = {
            let mut slots = self.rendezvous.slots.lock().expect("rendezvous lock");
            match slots.remove(&sid) {
                Some(Slot::Peer(h, s, _)) => return Ok((h, s)),
                Some(w @ Slot::Waiter(..)) => {
                    slots.insert(sid, w);
                    return Err(ServerError::DuplicateSession(hex(&sid)));
                }
                None => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    slots.insert(sid, Slot::Waiter(tx, n));
                    rx
                }
            }
        };
        let _guard = WaiterGuard {
            rendezvous: self.rendezvous.clone(),
            sid,
            n,
        };
        match tokio::time::timeout(self.join_timeout, rx).await {
            Ok(Ok(x)) => Ok(x),
            _ => Err(ServerError::PeerUnavailable(format!(
                "party 0 did not open this session within {:?}",
                self.join_timeout
            ))),
        }
    }

    /// Party 1: offer party 0's stream for session `sid`.
    fn offer(
        &self,
        sid: [u8; 16],
        header: SessionHeader,
        stream: PeerStream,
    ) -> Result<(), ServerError> {
        let mut slots = self.rendezvous.slots.lock().expect("rendezvous lock");
        match slots.remove(&sid) {
            Some(Slot::Waiter(w, _)) => {
                if let Err((_, s)) = w.send((header, stream)) {
                    drop(s);
                    return Err(ServerError::PeerUnavailable("the client left".into()));
                }
                Ok(())
            }
            Some(p @ Slot::Peer(..)) => {
                slots.insert(sid, p);
                Err(ServerError::DuplicateSession(hex(&sid)))
            }
            None => {
                let n = self
                    .rendezvous
                    .counter
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                slots.insert(sid, Slot::Peer(header, stream, n));
                let rv: Weak<Rendezvous> = Arc::downgrade(&self.rendezvous);
                let wait = self.join_timeout;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(rv) = rv.upgrade() {
                        let mut slots = rv.slots.lock().expect("rendezvous lock");
                        if matches!(slots.get(&sid), Some(Slot::Peer(_, _, m)) if *m == n) {
                            // Dropping the stream ends it at party 0.
                            slots.remove(&sid);
                        }
                    }
                });
                Ok(())
            }
        }
    }
}

/// Reads the dealer stream of one pairing into its pool: each batch enters
/// the pool at its first chunk, and its bytes go through a channel holding
/// at most `buffer_bytes` to the session that takes it. A full channel
/// makes the reader wait, which (by HTTP/2 flow control) makes the dealer
/// wait.
struct DealerReader {
    party: Party,
    plans: ModelPlans,
    store: Weak<PoolStore>,
    buffer_bytes: usize,
}

/// The sending side of a [`BatchFeed`].
struct Queue {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    budget: Arc<Semaphore>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    store: Weak<PoolStore>,
}

impl Queue {
    /// Queue a chunk once the budget has room for it (a chunk larger than
    /// the whole budget takes all of it); `None` once the session is gone.
    async fn push(self, chunk: Vec<u8>, buffer_bytes: usize) -> Option<Queue> {
        let n = chunk.len().min(buffer_bytes) as u32;
        tokio::select! {
            permits = self.budget.acquire_many(n) => permits.ok()?.forget(),
            _ = self.tx.closed() => return None,
        }
        self.tx.send(chunk).ok()?;
        Some(self)
    }

    fn mark_ready(&self) {
        if !self.ready.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Some(store) = self.store.upgrade()
        {
            store.bump();
        }
    }
}

impl DealerReader {
    async fn run(self, mut inbound: Streaming<mpcvit_proto::v1::ProvisionResponse>) {
        let mut next = 0u64;
        // Bytes of the model-load batch and of every online batch.
        let totals: [usize; 2] = [&self.plans.prepare, &self.plans.online]
            .map(|plan| plan.iter().map(|r| r.dealer_bytes(self.party)).sum());
        // The batch being received: its byte count and (unless nobody will
        // read it) the channel to its session.
        let mut current: Option<(usize, Option<Queue>)> = None;
        let reason = loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break "the dealer closed the stream".to_string(),
                Err(s) => break format!("{}: {}", s.code(), s.message()),
            };
            let Some(provision_response::Kind::Chunk(c)) = msg.kind else {
                break "unexpected message from the dealer".into();
            };
            if c.batch != next {
                break format!("batch {} arrived, expected {next}", c.batch);
            }
            let total = totals[usize::from(next > 0)];
            let (got, tx) = match current.take() {
                Some(c) => c,
                None => {
                    let Some(store) = self.store.upgrade() else {
                        return;
                    };
                    let (tx, rx) = mpsc::unbounded_channel();
                    let budget = Arc::new(Semaphore::new(self.buffer_bytes));
                    // A batch larger than the buffer streams: it is as
                    // ready as it gets once it starts.
                    let ready = Arc::new((total > self.buffer_bytes).into());
                    let feed = BatchFeed {
                        batch: next,
                        rx,
                        budget: budget.clone(),
                        size: self.buffer_bytes,
                        ready: Arc::clone(&ready),
                    };
                    let kept = store.put(feed);
                    let queue = Queue {
                        tx,
                        budget,
                        ready,
                        store: self.store.clone(),
                    };
                    (0, kept.then_some(queue))
                }
            };
            let got = got + c.data.len();
            if got > total {
                break format!("batch {next} is longer than its plan ({total} bytes)");
            }
            // A session that ended (or a released batch) no longer reads:
            // the rest of the batch is skipped.
            let tx = match tx {
                Some(q) if !c.data.is_empty() => q.push(c.data, self.buffer_bytes).await,
                other => other,
            };
            if !c.last {
                current = Some((got, tx));
                continue;
            }
            if got != total {
                break format!("batch {next} has {got} bytes, its plan {total}");
            }
            if let Some(q) = &tx {
                q.mark_ready();
            }
            debug!(batch = next, bytes = total, "batch received");
            next += 1;
        };
        if let Some(store) = self.store.upgrade() {
            warn!(reason = %reason, "dealer link lost");
            store.dealer_lost(reason);
        }
    }
}

/// The party's gRPC services (client API and peer link share the state).
#[derive(Clone)]
pub struct PartyService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PartyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartyService(party {})", self.shared.party.index())
    }
}

#[tonic::async_trait]
impl Inference for PartyService {
    async fn list_models(
        &self,
        req: RpcRequest<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        require_client(&req, self.shared.client_token.as_deref())
            .map_err(|e| e.refuse("ListModels", req.remote_addr()))?;
        let mut models: Vec<ModelInfo> = self
            .shared
            .models
            .values()
            .map(|e| ModelInfo {
                name: e.name.clone(),
                manifest_json: e.manifest_json.clone(),
                frac_bits: e.params.fp.frac_bits,
                input_len: e.input_len as u64,
                output_len: e.output_len as u64,
                ready: e.ready(),
                pool_available: e.pool_available(),
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListModelsResponse {
            models,
            party: self.shared.party.index() as u32,
        }))
    }

    async fn infer(
        &self,
        req: RpcRequest<InferRequest>,
    ) -> Result<Response<InferResponse>, Status> {
        let remote = req.remote_addr();
        let sh = &self.shared;
        let (entry, sid, input) = sh.admit(req).map_err(|e| e.refuse("Infer", remote))?;
        let _active = sh.register(sid).map_err(|e| e.refuse("Infer", remote))?;
        let span = info_span!("session", id = %hex(&sid), model = %entry.name);
        let result = async {
            match sh.party {
                Party::P0 => {
                    let epoch = entry.current();
                    let r = sh.lead_session(&entry, sid, input).await;
                    match (r, epoch) {
                        (Err(e), Some(epoch)) => Err(explain_peer_loss(e, &epoch)),
                        (r, _) => r,
                    }
                }
                Party::P1 => sh.follow_session(&entry, sid, input).await,
            }
        }
        .instrument(span.clone())
        .await;
        let _g = span.enter();
        match result {
            Ok((out, stats)) => {
                info!(
                    rounds = stats.rounds,
                    bytes_sent = stats.bytes_sent,
                    online_ms = stats.online_micros / 1000,
                    wait_ms = stats.wait_micros / 1000,
                    "session done"
                );
                Ok(Response::new(InferResponse {
                    output_share: to_bytes(&out),
                    stats: Some(stats),
                }))
            }
            Err(e) => {
                warn!(error = %e, code = ?e.code(), "session failed");
                Err(e.into())
            }
        }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<PeerFrame, Status>> + Send>>;

async fn first_frame(incoming: &mut Streaming<PeerFrame>) -> Result<peer_frame::Kind, ServerError> {
    match tokio::time::timeout(Duration::from_secs(5), incoming.message()).await {
        Ok(Ok(Some(PeerFrame { kind: Some(k) }))) => Ok(k),
        Ok(Err(s)) => Err(ServerError::Rpc(s)),
        _ => Err(ServerError::InvalidArgument("no header frame".into())),
    }
}

#[tonic::async_trait]
impl PeerLink for PartyService {
    type PairStream = FrameStream;
    type SessionStream = FrameStream;

    async fn pair(
        &self,
        req: RpcRequest<Streaming<PeerFrame>>,
    ) -> Result<Response<Self::PairStream>, Status> {
        let remote = req.remote_addr();
        let (entry, id, incoming) = self
            .shared
            .admit_pairing(req)
            .await
            .map_err(|e| e.refuse("Pair", remote))?;
        let (tx, out) = bridge::outgoing();
        let rx = bridge::pump(incoming);
        tx.send(Ok(frame(peer_frame::Kind::Ack(Ack {}))))
            .await
            .map_err(|_| Status::internal("pair channel closed"))?;
        let shared = self.shared.clone();
        let err_tx = tx.clone();
        let span = info_span!("pairing", id = %hex(&id), model = %entry.name);
        tokio::spawn(
            async move {
                if let Err(e) = shared
                    .follow_pairing(entry, id, PeerStream { tx, rx })
                    .await
                {
                    warn!(error = %e, "pairing failed");
                    let _ = err_tx.send(Err(e.to_status())).await;
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(out)))
    }

    async fn session(
        &self,
        req: RpcRequest<Streaming<PeerFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let remote = req.remote_addr();
        let refuse = |e: ServerError| e.refuse("Session", remote);
        require_role(&req, &[Role::Party(0)]).map_err(refuse)?;
        let mut incoming = req.into_inner();
        let peer_frame::Kind::Session(h) = first_frame(&mut incoming).await.map_err(refuse)? else {
            return Err(refuse(ServerError::InvalidArgument(
                "expected a session header".into(),
            )));
        };
        let sid = session_id(&h.session_id).map_err(refuse)?;
        if *self.shared.stop.borrow() {
            return Err(refuse(ServerError::PeerUnavailable(
                "party 1 is shutting down".into(),
            )));
        }
        let (tx, out) = bridge::outgoing();
        let rx = bridge::pump(incoming);
        self.shared.offer(sid, h, PeerStream { tx, rx })?;
        Ok(Response::new(Box::pin(out)))
    }
}

/// Serve a party until `shutdown` resolves.
pub async fn serve(
    config: PartyConfig,
    listeners: PartyListeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let party = config.party;
    let mut models = HashMap::new();
    let params = SecureParams::default();
    let pairings_changed = Arc::new(watch::channel(0u64).0);
    for shares in config.models {
        let cfg = shares.config().clone();
        let name = cfg.name.clone();
        if shares.frac_bits() != params.fp.frac_bits {
            return Err(ServerError::Config(format!(
                "model {name}: shares at {} fractional bits, this build computes at {}",
                shares.frac_bits(),
                params.fp.frac_bits
            )));
        }
        let manifest_json = cfg.to_manifest_json()?;
        let plans = tokio::task::spawn_blocking({
            let shares = shares.clone();
            move || ModelPlans::record(&shares, party, params)
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
        let digest = plans.digest(&manifest_json);
        info!(
            model = %name,
            prepare_requests = plans.prepare.len(),
            online_requests = plans.online.len(),
            dealer_bytes_per_inference = plans.online_dealer_bytes(party),
            "model loaded"
        );
        let entry = ModelEntry {
            input_len: cfg.input_len(),
            output_len: cfg.num_classes,
            name: name.clone(),
            manifest_json,
            shares: Arc::new(shares),
            params,
            plans,
            digest,
            epochs: Mutex::default(),
            epochs_version: pairings_changed.clone(),
        };
        if models.insert(name.clone(), Arc::new(entry)).is_some() {
            return Err(ServerError::Config(format!("model {name} is given twice")));
        }
    }
    let dealer = endpoint(&config.dealer_addr, &config.tls, Role::Dealer)?.connect_lazy();
    let peer = match (party, &config.peer_addr) {
        (Party::P0, Some(a)) => Some(endpoint(a, &config.tls, Role::Party(1))?.connect_lazy()),
        (Party::P0, None) => {
            return Err(ServerError::Config(
                "party 0 needs the address of party 1".into(),
            ));
        }
        (Party::P1, _) => None,
    };
    // Shutdown in three steps: `stop` (no new session; not ready), then
    // `end_pairings` once the sessions in flight ended or the grace ran out
    // (the other party is told), then `close` (the servers close their
    // connections, bounded by CLOSE_GRACE).
    let (stop_tx, stop) = watch::channel(false);
    let (end_tx, end_pairings) = watch::channel(false);
    let (close_tx, close) = watch::channel(false);
    let shared = Arc::new(Shared {
        party,
        fp: params.fp,
        models,
        client_token: config.client_token.clone(),
        pool_target: config.pool_target.max(1),
        pool_buffer_bytes: config.pool_buffer_bytes.clamp(1, u32::MAX as usize),
        join_timeout: config.join_timeout,
        recv_timeout: config.recv_timeout,
        pool_wait: config.pool_wait,
        retry: config.retry,
        sessions: Semaphore::new(config.max_sessions.max(1)),
        rendezvous: Arc::default(),
        active: watch::channel(HashSet::new()).0,
        dealer,
        peer,
        stop: stop.clone(),
        end_pairings,
    });
    let service = PartyService {
        shared: shared.clone(),
    };
    if party == Party::P0 {
        for entry in shared.models.values() {
            let span = info_span!("lead", model = %entry.name);
            tokio::spawn(shared.clone().lead(entry.clone()).instrument(span));
        }
    }
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let wait_stop = |mut s: watch::Receiver<bool>| async move {
        let _ = s.wait_for(|v| *v).await;
    };
    // Readiness: `mpcvit.v1.Inference` is SERVING while every model is
    // paired, and not once shutdown begins.
    let readiness = {
        let reporter = health_reporter.clone();
        let entries: Vec<Arc<ModelEntry>> = shared.models.values().cloned().collect();
        let mut changed = pairings_changed.subscribe();
        let mut stop = stop.clone();
        async move {
            loop {
                if entries.iter().all(|e| e.ready()) {
                    reporter
                        .set_serving::<InferenceServer<PartyService>>()
                        .await;
                } else {
                    reporter
                        .set_not_serving::<InferenceServer<PartyService>>()
                        .await;
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { break },
                    _ = stop.wait_for(|v| *v) => break,
                }
            }
            reporter
                .set_not_serving::<InferenceServer<PartyService>>()
                .await;
        }
    };
    let limits = config.limits;
    let health_srv = {
        let (listener, plain, stopped) =
            (listeners.health, health.clone(), wait_stop(close.clone()));
        async move {
            match listener {
                Some(l) => crate::health::serve_plain(l, plain, limits, stopped).await,
                None => Ok(()),
            }
        }
    };
    let client_addr: Option<SocketAddr> = listeners.client.local_addr().ok();
    info!(party = party.index(), ?client_addr, "client API listening");
    let client_tls = config.tls.server(config.client_token.is_some())?;
    let client_srv = limits
        .server_builder()
        .initial_stream_window_size(Some(crate::STREAM_WINDOW))
        .initial_connection_window_size(Some(crate::CONNECTION_WINDOW))
        .layer(tower::util::MapResponseLayer::new(
            crate::error::fix_transport_status,
        ))
        .add_service(health)
        .add_service(
            InferenceServer::new(service.clone())
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(MAX_INTERNAL_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            crate::listen::tls(listeners.client, client_tls, limits, "client API"),
            wait_stop(close.clone()),
        );
    let peer_srv = async {
        match listeners.peer {
            Some(l) if party == Party::P1 => {
                info!(addr = ?l.local_addr().ok(), "peer link listening");
                limits
                    .server_builder()
                    .initial_stream_window_size(Some(crate::STREAM_WINDOW))
                    .initial_connection_window_size(Some(crate::CONNECTION_WINDOW))
                    .add_service(
                        PeerLinkServer::new(service.clone())
                            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
                            .max_encoding_message_size(MAX_INTERNAL_MESSAGE),
                    )
                    .serve_with_incoming_shutdown(
                        crate::listen::tls(l, config.tls.server(false)?, limits, "peer link"),
                        wait_stop(close.clone()),
                    )
                    .await
                    .map_err(ServerError::from)
            }
            _ => {
                wait_stop(close.clone()).await;
                Ok(())
            }
        }
    };
    let grace = config.shutdown_grace;
    let stopper = tokio::spawn({
        let shared = shared.clone();
        async move {
            shutdown.await;
            let in_flight = shared.active.borrow().len();
            info!(in_flight, "shutting down: no new sessions");
            let _ = stop_tx.send(true);
            let mut active = shared.active.subscribe();
            if tokio::time::timeout(grace, active.wait_for(|a| a.is_empty()))
                .await
                .is_err()
            {
                let left = shared.active.borrow().len();
                warn!(
                    sessions = left,
                    "sessions still running after {grace:?}: ending them"
                );
            }
            info!("ending the pairings");
            let _ = end_tx.send(true);
            if party == Party::P0 {
                // Closing a pairing's stream tells party 1 at once.
                for entry in shared.models.values() {
                    entry.set_current(None);
                }
            }
            let _ = close_tx.send(true);
        }
    });
    let servers = async {
        let (a, b, c, ()) = tokio::join!(client_srv, peer_srv, health_srv, readiness);
        a?;
        b?;
        c
    };
    let deadline = async {
        let _ = close.clone().wait_for(|v| *v).await;
        tokio::time::sleep(crate::limits::CLOSE_GRACE).await;
    };
    let result = tokio::select! {
        r = servers => r,
        () = deadline => {
            warn!("connections still open {:?} after shutdown: closing them", crate::limits::CLOSE_GRACE);
            Ok(())
        }
    };
    stopper.abort();
    info!("stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_store() -> Arc<PoolStore> {
        let plans = ModelPlans {
            prepare: Arc::new(Vec::new()),
            online: Arc::new(Vec::new()),
        };
        PoolStore::new(2, Party::P1, Seed::for_tests(1), plans)
    }

    fn test_feed(batch: u64) -> BatchFeed {
        BatchFeed {
            batch,
            rx: mpsc::unbounded_channel().1,
            budget: Arc::new(Semaphore::new(1)),
            size: 1,
            ready: Arc::new(true.into()),
        }
    }

    /// Party 0 releases batches its sessions took but party 1 never
    /// acknowledged: party 1 drops them whether they arrived already or
    /// arrive later, and a late request for one fails at once.
    #[tokio::test]
    async fn released_batches_are_dropped_before_or_after_they_arrive() {
        let store = test_store();
        assert!(store.put(test_feed(1)));
        store.release(1);
        store.release(3);
        assert!(store.put(test_feed(2)));
        assert!(!store.put(test_feed(3)), "released before it arrived");
        assert!(store.put(test_feed(4)));
        assert_eq!(store.available(), 2);
        let t = Instant::now();
        let err = store
            .take(Some(1), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(err, ServerError::Aborted(_)), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10), "failed at once");
        assert_eq!(
            store
                .take(Some(4), Duration::from_secs(1))
                .await
                .unwrap()
                .batch,
            4
        );
        assert_eq!(
            store
                .take(None, Duration::from_secs(1))
                .await
                .unwrap()
                .batch,
            2
        );
    }

    /// A lone session takes a batch from a full pool: its replacement is
    /// asked for when it ends, not while it computes. A take that empties
    /// the pool asks at once.
    #[tokio::test]
    async fn replacements_are_asked_for_when_the_session_ends() {
        let store = test_store();
        let want = || *store.want.borrow();
        assert!(store.put(test_feed(1)));
        assert!(store.put(test_feed(2)));
        assert_eq!(want(), 2);
        let b = store
            .take(None, Duration::from_secs(1))
            .await
            .unwrap()
            .batch;
        assert_eq!(b, 1);
        let guard = Replenish {
            store: store.clone(),
            batch: b,
        };
        assert_eq!(want(), 2, "no dealing while the session computes");
        drop(guard);
        assert_eq!(want(), 3, "the session ended: two batches ahead of it");
        let b = store
            .take(None, Duration::from_secs(1))
            .await
            .unwrap()
            .batch;
        assert_eq!(b, 2);
        assert_eq!(want(), 4, "the pool ran empty: asked at once");
    }
}

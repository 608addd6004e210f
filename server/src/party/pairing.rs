//! The pairing lifecycle: a served model ([`ModelEntry`]) and its live
//! pairings ([`Epoch`]); party 0 leads (sets pairings up and keeps one
//! current, [`Shared::lead`]), party 1 follows ([`Shared::follow_pairing`]).
//! Both halves load a pairing the same way ([`Shared::load_pairing`]): the
//! dealer stream, then the weights masked over the `Pair` stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::SecureParams;
use model::secure::{SecureModel, WeightShares};
use mpc_core::{Seed, Session};
use mpcvit_proto::v1::peer_link_client::PeerLinkClient;
use mpcvit_proto::v1::{DealerLost, PairHeader, PeerFrame, peer_frame};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request as RpcRequest, Status, Streaming};
use tracing::{debug, info, warn};

use super::pool::PoolStore;
use super::service::first_frame;
use super::session::{Acked, expect_ack};
use super::{Shared, frame, lock, raised};
use crate::admission;
use crate::bridge::{self, BlockingChannel, PeerStream};
use crate::defaults::MAX_INTERNAL_MESSAGE;
use crate::error::ServerError;
use crate::hex;
use crate::plan::ModelPlans;
use crate::stamp::SplitId;
use crate::tls::{PEER_PORT, Role, require_role};

/// A live pairing: the prepared model and its pool.
pub(super) struct Epoch {
    pub id: [u8; 16],
    pub model: Arc<SecureModel>,
    pub store: Arc<PoolStore>,
    /// Keeps the Pair stream open; dropping it ends the pairing at the peer.
    pub pair_tx: Mutex<Option<mpsc::Sender<Result<PeerFrame, Status>>>>,
}

impl Epoch {
    /// End the pairing at the other party (its `Pair` stream closes).
    pub fn close(&self) {
        lock(&self.pair_tx).take();
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epoch({})", hex(&self.id))
    }
}

/// One served model.
pub(super) struct ModelEntry {
    pub name: String,
    pub manifest_json: String,
    pub shares: Arc<WeightShares>,
    pub params: SecureParams,
    pub plans: ModelPlans,
    pub digest: [u8; 32],
    /// The split this party's share comes from.
    pub split: SplitId,
    pub input_len: usize,
    pub output_len: usize,
    pub epochs: Mutex<EpochSet>,
    /// Bumped whenever a pairing of any served model starts or ends (one
    /// sender shared by every entry, so readiness watches a single value).
    pub epochs_version: Arc<watch::Sender<u64>>,
}

/// The pairings of one model.
#[derive(Default)]
pub(super) struct EpochSet {
    /// Party 0: the pairing new sessions use.
    current: Option<Arc<Epoch>>,
    /// Party 1: pairings by id.
    by_id: HashMap<[u8; 16], Arc<Epoch>>,
}

impl ModelEntry {
    /// Party 0: the pairing new sessions use.
    pub fn current(&self) -> Option<Arc<Epoch>> {
        lock(&self.epochs).current.clone()
    }

    /// Party 0: make `e` the current pairing; the one it replaces ends.
    pub fn set_current(&self, e: Option<Arc<Epoch>>) {
        let old = std::mem::replace(&mut lock(&self.epochs).current, e);
        if let Some(old) = old {
            old.close();
        }
        self.epochs_version.send_modify(|v| *v += 1);
    }

    /// Party 1: a pairing is up.
    fn insert(&self, e: Arc<Epoch>) {
        lock(&self.epochs).by_id.insert(e.id, e);
        self.epochs_version.send_modify(|v| *v += 1);
    }

    /// Party 1: pairing `id` ended.
    fn remove(&self, id: &[u8; 16]) {
        lock(&self.epochs).by_id.remove(id);
        self.epochs_version.send_modify(|v| *v += 1);
    }

    /// Paired with the other party (readiness).
    pub fn ready(&self) -> bool {
        let set = lock(&self.epochs);
        set.current.is_some() || !set.by_id.is_empty()
    }

    /// Online batches ready across this model's pairings.
    pub fn pool_available(&self) -> u64 {
        let set = lock(&self.epochs);
        set.current
            .iter()
            .chain(set.by_id.values())
            .map(|e| e.store.available())
            .sum()
    }

    /// Party 1: pairing `id`, waiting up to `wait` for it to be registered.
    pub async fn by_id(&self, id: &[u8; 16], wait: Duration) -> Option<Arc<Epoch>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut v = self.epochs_version.subscribe();
        loop {
            if let Some(e) = lock(&self.epochs).by_id.get(id) {
                return Some(e.clone());
            }
            match tokio::time::timeout_at(deadline, v.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }
}

/// How a live pairing's watch ended ([`Shared::until_link_breaks`]).
enum LinkEnd {
    /// Shutdown began.
    Stopped,
    /// The dealer stream (ours or the other party's) broke; the pairing can
    /// still serve from its pool.
    DealerLost,
    /// The other party is gone: the pairing is over.
    PeerLost,
}

/// A fresh 16-byte pairing id.
fn fresh_id() -> [u8; 16] {
    let bytes = Seed::random().to_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    id
}

impl Shared {
    /// Party 0's peer-link client. Invariant: [`super::serve`] refuses to
    /// start party 0 without party 1's address, so `peer` is set.
    pub(super) fn peer_client(&self) -> PeerLinkClient<Channel> {
        let peer = self.peer.clone().expect("party 0 has a peer address");
        PeerLinkClient::new(peer)
            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
            .max_encoding_message_size(MAX_INTERNAL_MESSAGE)
    }

    /// Party 1: check party 0's `Pair` request: its certificate, the
    /// header, the model, the digest of its plans, and that its share is
    /// the other half of this party's split.
    pub(super) async fn admit_pairing(
        &self,
        req: RpcRequest<Streaming<PeerFrame>>,
    ) -> Result<(Arc<ModelEntry>, [u8; 16], Streaming<PeerFrame>), ServerError> {
        require_role(&req, &[Role::Party(0)], PEER_PORT)?;
        self.refuse_if_stopping()?;
        let mut incoming = req.into_inner();
        let peer_frame::Kind::Pair(h) = first_frame(&mut incoming, "Pair").await? else {
            return Err(ServerError::NoHeader {
                rpc: "Pair",
                expected: "a pair header",
            });
        };
        let (entry, id) = admission::pair_header(&h, |name| {
            self.models.get(name).map(|e| (e.clone(), e.digest))
        })?;
        admission::same_split(&h, &entry.name, entry.split)?;
        Ok((entry, id, incoming))
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
        .map_err(ServerError::task("model-load"))?
    }

    /// Both parties, once the `Pair` stream is up: connect to the dealer
    /// under pairing `id`, mask the weights, and return the live pairing
    /// with the stream's receiving half (its end is the pairing's end).
    async fn load_pairing(
        &self,
        entry: &Arc<ModelEntry>,
        id: [u8; 16],
        stream: PeerStream,
    ) -> Result<(Arc<Epoch>, PeerStream), ServerError> {
        let store = self.connect_dealer(entry, id).await?;
        let t = Instant::now();
        let (model, stream) = self.prepare(entry, stream, &store).await?;
        info!(pairing = %hex(&id), ms = t.elapsed().as_millis() as u64, "model loaded (weights masked)");
        let epoch = Arc::new(Epoch {
            id,
            model: Arc::new(model),
            store,
            pair_tx: Mutex::new(Some(stream.tx.clone())),
        });
        Ok((epoch, stream))
    }

    /// Party 0: set up one pairing for `entry`.
    async fn pair_as_leader(&self, entry: &Arc<ModelEntry>) -> Result<Arc<Epoch>, ServerError> {
        let id = fresh_id();
        let (tx, out) = bridge::outgoing();
        tx.send(Ok(frame(peer_frame::Kind::Pair(PairHeader {
            model: entry.name.clone(),
            pairing_id: id.to_vec(),
            plan_digest: entry.digest.to_vec(),
            split_id: entry.split.0.to_vec(),
        }))))
        .await
        .map_err(|_| ServerError::ChannelClosed {
            op: "sending the pair header",
        })?;
        let resp = self
            .peer_client()
            .pair(out.map_while(Result::ok))
            .await
            .map_err(|status| match status.code() {
                // A mismatch (splits, plans): retrying will not change it.
                tonic::Code::FailedPrecondition => ServerError::Refused {
                    peer: Role::Party(1),
                    rpc: "Pair",
                    status,
                },
                _ => ServerError::Unreachable {
                    peer: Role::Party(1),
                    rpc: "Pair",
                    status,
                },
            })?;
        let mut rx = bridge::pump(resp.into_inner());
        expect_ack(&mut rx, self.join_timeout, Acked::Pairing).await?;
        let (epoch, stream) = self.load_pairing(entry, id, PeerStream { tx, rx }).await?;
        // Watch the pair stream: its end is the peer's end. Only this
        // pairing's sender is kept (by the epoch), so dropping `stream.tx`
        // here changes nothing.
        let PeerStream { mut rx, .. } = stream;
        let store = epoch.store.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Some(Ok(PeerFrame {
                        kind: Some(peer_frame::Kind::DealerLost(_)),
                    })) => store.health.send_modify(|h| h.peer_dealer = false),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        store.peer_lost();
                        break;
                    }
                }
            }
        });
        Ok(epoch)
    }

    /// Party 0: wait until a link of `epoch` breaks or shutdown begins.
    async fn until_link_breaks(&self, epoch: &Epoch, stop: &mut watch::Receiver<bool>) -> LinkEnd {
        let mut health = epoch.store.health.subscribe();
        loop {
            let h = *health.borrow_and_update();
            if !h.peer {
                return LinkEnd::PeerLost;
            }
            if !(h.dealer && h.peer_dealer) {
                return LinkEnd::DealerLost;
            }
            tokio::select! {
                r = health.changed() => if r.is_err() { return LinkEnd::PeerLost },
                _ = stop.changed() => return LinkEnd::Stopped,
            }
        }
    }

    /// Party 0: keep a pairing alive for `entry` until shutdown. When only
    /// the dealer link of the current pairing breaks, it stays current (it
    /// serves from its pool) until a new pairing replaces it or its peer
    /// goes.
    pub(super) async fn lead(self: Arc<Self>, entry: Arc<ModelEntry>) {
        let mut stop = self.stop.clone();
        let mut logged_failure = false;
        // The current pairing whose dealer link broke, while it is replaced.
        let mut draining: Option<Arc<Epoch>> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            if draining
                .as_ref()
                .is_some_and(|d| !d.store.health.borrow().peer)
            {
                draining = None;
                entry.set_current(None);
            }
            let paired = tokio::select! {
                r = self.pair_as_leader(&entry) => r,
                () = raised(&mut stop) => return,
            };
            match paired {
                Ok(epoch) => {
                    logged_failure = false;
                    if draining.take().is_some() {
                        info!(model = %entry.name, pairing = %hex(&epoch.id), "new pairing replaces the drained one");
                    } else {
                        info!(model = %entry.name, pairing = %hex(&epoch.id), "paired with party 1");
                    }
                    entry.set_current(Some(epoch.clone()));
                    match self.until_link_breaks(&epoch, &mut stop).await {
                        LinkEnd::Stopped => return,
                        LinkEnd::DealerLost => {
                            warn!(model = %entry.name, "dealer link lost: serving from the pool while setting up a new pairing");
                            draining = Some(epoch);
                        }
                        LinkEnd::PeerLost => {
                            warn!(model = %entry.name, "lost party 1: pairing dropped");
                            entry.set_current(None);
                        }
                    }
                }
                Err(e) if draining.is_some() => {
                    debug!(model = %entry.name, error = %e, "re-pairing failed");
                }
                Err(e) if !logged_failure => {
                    warn!(model = %entry.name, error = %e, "pairing with party 1 failed; retrying");
                    logged_failure = true;
                }
                Err(e) => debug!(model = %entry.name, error = %e, "pairing failed again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Party 1: the rest of a pairing after the header was accepted.
    pub(super) async fn follow_pairing(
        self: Arc<Self>,
        entry: Arc<ModelEntry>,
        id: [u8; 16],
        stream: PeerStream,
    ) -> Result<(), ServerError> {
        let (epoch, stream) = self.load_pairing(&entry, id, stream).await?;
        let PeerStream { tx, mut rx } = stream;
        let store = epoch.store.clone();
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
}

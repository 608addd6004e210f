//! Sessions: one inference, from a client's request to its answer. The
//! request is checked before any work ([`Shared::admit`]), its id
//! registered ([`Shared::register`]); party 0 announces the session to
//! party 1, takes a batch and names it ([`Shared::lead_session`]), party 1
//! matches the announcement with its client's request and takes the same
//! batch ([`Shared::follow_session`]); both then run the secure forward on
//! a blocking thread ([`Shared::forward`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpc_core::{CountingChannel, Session, Share};
use mpcvit_proto::v1::{
    Ack, InferRequest, PeerFrame, ReleaseBatch, SessionHeader, SessionStats, StartSession,
    peer_frame,
};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request as RpcRequest, Status};
use tracing::{debug, warn};

use super::pairing::{Epoch, ModelEntry};
use super::pool::{BatchFeed, Replenish};
use super::start_up::{Passed, StartUp};
use super::{Shared, frame, lock};
use crate::admission;
use crate::bridge::{self, BlockingChannel, PeerStream};
use crate::defaults::{ACK_SLACK, PAIRING_LOOKUP_WAIT};
use crate::error::ServerError;
use crate::tls::{Role, require_client};

/// A session id registered in [`Shared::active`]; removed when dropped.
pub(super) struct ActiveSession<'a> {
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
            && let Some(tx) = lock(&epoch.pair_tx).as_ref()
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

/// What party 0 waits for party 1 to acknowledge.
#[derive(Clone, Copy, Debug)]
pub(super) enum Acked {
    /// The pair header.
    Pairing,
    /// The session header.
    Session,
    /// The batch party 0 named.
    Batch,
}

impl Acked {
    fn step(self) -> &'static str {
        match self {
            Acked::Pairing => "accept the pairing",
            Acked::Session => "accept the session",
            Acked::Batch => "accept the batch",
        }
    }

    fn stream(self) -> &'static str {
        match self {
            Acked::Pairing => "pairing",
            Acked::Session | Acked::Batch => "session",
        }
    }

    fn frame(self) -> &'static str {
        match self {
            Acked::Pairing => "the pairing acknowledgement",
            Acked::Session => "the session acknowledgement",
            Acked::Batch => "the batch acknowledgement",
        }
    }
}

/// Wait for an `Ack` on `rx` (party 1 accepted a header).
pub(super) async fn expect_ack(
    rx: &mut mpsc::Receiver<Result<PeerFrame, Status>>,
    wait: Duration,
    what: Acked,
) -> Result<(), ServerError> {
    let peer = Role::Party(1);
    match tokio::time::timeout(wait, rx.recv()).await {
        Err(_) => Err(ServerError::NotJoined {
            peer,
            step: what.step(),
            waited: wait,
        }),
        Ok(None) => Err(ServerError::Closed {
            peer,
            stream: what.stream(),
        }),
        Ok(Some(Err(s))) => Err(ServerError::Rpc(s)),
        Ok(Some(Ok(PeerFrame {
            kind: Some(peer_frame::Kind::Ack(_)),
        }))) => Ok(()),
        Ok(Some(Ok(_))) => Err(ServerError::Unexpected {
            peer,
            expected: what.frame(),
        }),
    }
}

/// Party 0: a session failed. If party 1 went away under it, say so: when
/// a party leaves, the dealer ends the pairing's material stream too
/// ([`crate::dealer::PAIRING_ENDED`]), and a session waiting for material
/// would blame the dealer.
pub(super) fn explain_peer_loss(e: ServerError, epoch: &Epoch) -> ServerError {
    let peer_gone = !epoch.store.health.borrow().peer;
    if !(peer_gone || e.to_string().contains(crate::dealer::PAIRING_ENDED)) {
        return e;
    }
    debug!(error = %e, "the session failed after party 1 left");
    ServerError::PeerLeft {
        peer: Role::Party(1),
        during: "during this session (the pairing ended)",
    }
}

/// A share as little-endian bytes (the client API's encoding).
pub(super) fn to_bytes(s: &Share) -> Vec<u8> {
    s.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Shared {
    /// Check a client's request before any work: the caller, this party
    /// not shutting down, then the message itself ([`admission::infer`]:
    /// the model, the session id and the share's length).
    pub(super) fn admit(
        &self,
        req: RpcRequest<InferRequest>,
    ) -> Result<(Arc<ModelEntry>, [u8; 16], Share), ServerError> {
        require_client(&req, self.client_token.as_deref(), &self.client_certs)?;
        self.refuse_if_stopping()?;
        let a = admission::infer(req.into_inner(), |name| {
            self.models.get(name).map(|e| (e.clone(), e.input_len))
        })?;
        Ok((a.model, a.session, a.input))
    }

    /// Register session `sid` as in progress at this party.
    pub(super) fn register(&self, sid: [u8; 16]) -> Result<ActiveSession<'_>, ServerError> {
        let mut fresh = false;
        self.active.send_modify(|a| fresh = a.insert(sid));
        if !fresh {
            return Err(ServerError::DuplicateSession { session: sid });
        }
        Ok(ActiveSession {
            active: &self.active,
            sid,
        })
    }

    /// Run one secure forward (on a blocking thread) with a taken batch;
    /// `waited` is the time the session spent before it (joining, a slot,
    /// the batch).
    async fn forward(
        &self,
        epoch: &Epoch,
        stream: PeerStream,
        feed: BatchFeed,
        input: Share,
        started: Instant,
        start_up: Option<(Passed, Duration)>,
    ) -> Result<(Share, SessionStats), ServerError> {
        let waited = started.elapsed();
        let (party, fp) = (self.party, self.fp);
        let handle = tokio::runtime::Handle::current();
        let (recv_timeout, wait) = (self.recv_timeout, self.pool_wait);
        let (model, store) = (epoch.model.clone(), epoch.store.clone());
        tokio::task::spawn_blocking(move || {
            // the material is expanded on a thread of its own, a few
            // requests ahead, while this one computes and waits for the peer
            let source = store.source(feed, handle.clone(), wait);
            let plan = source.plan();
            let mut pool = mpc_core::Prefetch::spawn(source, plan, mpc_core::PREFETCH_AHEAD);
            let mut ch = BlockingChannel::new(stream, handle, recv_timeout);
            if let Some((passed, wait)) = start_up {
                ch = ch.after(passed, wait);
            }
            let mut ch = CountingChannel::new(ch);
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
                    wait_micros: waited.as_micros() as u64,
                },
            ))
        })
        .await
        .map_err(ServerError::task("session"))?
    }

    /// Party 0's side of a session. The session is announced at once, and
    /// the forward starts as soon as this party has a slot and a batch:
    /// party 1's acknowledgements are checked beside it ([`StartUp`]).
    pub(super) async fn lead_session(
        &self,
        entry: &Arc<ModelEntry>,
        sid: [u8; 16],
        input: Share,
    ) -> Result<(Share, SessionStats), ServerError> {
        let t0 = Instant::now();
        let epoch = entry.current().ok_or_else(|| ServerError::NotPaired {
            model: entry.name.clone(),
        })?;
        // Announce the session at once, so party 1 matches it with its own
        // request while this one waits for a slot and a batch.
        let (tx, out) = bridge::outgoing();
        tx.send(Ok(frame(peer_frame::Kind::Session(SessionHeader {
            pairing_id: epoch.id.to_vec(),
            session_id: sid.to_vec(),
        }))))
        .await
        .map_err(|_| ServerError::ChannelClosed {
            op: "sending the session header",
        })?;
        let (named_tx, named) = oneshot::channel();
        let (rx, passed, mut handshake) = StartUp {
            client: self.peer_client(),
            sid,
            session_wait: self.join_timeout + ACK_SLACK,
            batch_wait: self.pool_wait + ACK_SLACK,
        }
        .spawn(out, named);
        let own_waits = async {
            let permit = tokio::time::timeout(self.pool_wait, self.sessions.acquire())
                .await
                .map_err(|_| ServerError::Busy {
                    waited: self.pool_wait,
                })?
                // The semaphore is never closed; if it were, no slot would come.
                .map_err(|_| ServerError::ShuttingDown { party: self.party })?;
            let feed = epoch.store.take(None, self.pool_wait).await?;
            Ok::<_, ServerError>((permit, feed))
        };
        // party 1 refusing the session ends these waits too
        let (_permit, feed) = tokio::select! {
            taken = own_waits => taken?,
            e = handshake.failed() => return Err(e),
        };
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
            .map_err(|_| ServerError::PeerLeft {
                peer: Role::Party(1),
                during: "the session",
            })?;
        let _ = named_tx.send(());
        // the first message comes after both acknowledgements
        let start_up = (passed, self.join_timeout + self.pool_wait + 2 * ACK_SLACK);
        let result = self
            .forward(
                &epoch,
                PeerStream { tx, rx },
                feed,
                input,
                t0,
                Some(start_up),
            )
            .await;
        match (result, handshake.outcome()) {
            (Ok(done), _) => {
                unclaimed.epoch = None;
                Ok(done)
            }
            (Err(e), Some(Ok(()))) => {
                unclaimed.epoch = None;
                Err(e)
            }
            // the handshake's error says why the forward's stream ended
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), None) => Err(e),
        }
    }

    /// Party 1's side of a session.
    pub(super) async fn follow_session(
        &self,
        entry: &Arc<ModelEntry>,
        sid: [u8; 16],
        input: Share,
    ) -> Result<(Share, SessionStats), ServerError> {
        let t0 = Instant::now();
        let (header, mut stream) = self.rendezvous.claim(sid, self.join_timeout).await?;
        let tx = stream.tx.clone();
        let peer = Role::Party(0);
        let left = ServerError::PeerLeft {
            peer,
            during: "the session",
        };
        let result: Result<(Share, SessionStats), ServerError> =
            async {
                let pid: [u8; 16] = header.pairing_id.as_slice().try_into().map_err(|_| {
                    ServerError::Unexpected {
                        peer,
                        expected: "a 16-byte pairing id",
                    }
                })?;
                let epoch = entry
                    .by_id(&pid, PAIRING_LOOKUP_WAIT)
                    .await
                    .ok_or(ServerError::UnknownPairing { pairing: pid })?;
                let ack = || Ok(frame(peer_frame::Kind::Ack(Ack {})));
                if tx.send(ack()).await.is_err() {
                    return Err(left);
                }
                // Party 0 bounds its own waits for a slot and a batch by the pool wait.
                let start_wait = 2 * self.pool_wait + self.join_timeout;
                let batch = match tokio::time::timeout(start_wait, stream.rx.recv()).await {
                    Err(_) => {
                        return Err(ServerError::PeerStalled {
                            peer,
                            step: "start the session",
                            waited: start_wait,
                        });
                    }
                    Ok(Some(Ok(PeerFrame {
                        kind: Some(peer_frame::Kind::Start(s)),
                    }))) => s.batch,
                    Ok(Some(Err(s))) => return Err(ServerError::Rpc(s)),
                    Ok(_) => return Err(left),
                };
                let feed = epoch.store.take(Some(batch), self.pool_wait).await?;
                let _replenish = Replenish {
                    store: epoch.store.clone(),
                    batch,
                };
                if tx.send(ack()).await.is_err() {
                    return Err(left);
                }
                self.forward(&epoch, stream, feed, input, t0, None).await
            }
            .await;
        if let Err(e) = &result {
            let _ = tx.send(Err(e.to_status())).await;
        }
        result
    }
}

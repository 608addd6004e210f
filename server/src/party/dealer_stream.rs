//! A pairing's stream from the dealer: the `Provision` call (hello, seed
//! agreement, credit), and the reader that cuts the stream's chunks into
//! batches and hands each batch's bytes to the session that takes it.
//!
//! Framing: every chunk names its batch; batches come in order, each ends
//! with a chunk marked `last`, and each has exactly as many bytes as this
//! party's share of its plan ([`mpc_core::Request::dealer_bytes`]). Anything
//! else ends the stream, and the pool is told the dealer is lost; a batch
//! the stream ended inside is set aside, unless a session took it already.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use mpc_core::Party;
use mpcvit_proto::v1::dealer_client::DealerClient;
use mpcvit_proto::v1::{
    Hello, ProvisionRequest, ProvisionResponse, provision_request, provision_response,
};
use tokio::sync::{Semaphore, mpsc};
use tonic::Streaming;
use tracing::{Instrument, debug, info_span, warn};

use super::Shared;
use super::pairing::ModelEntry;
use super::pool::{BatchFeed, PoolStore};
use crate::defaults::{DEALER_HELLO_SLACK, MAX_INTERNAL_MESSAGE};
use crate::error::ServerError;
use crate::hex;
use crate::kx::{End, KeyPair};
use crate::plan::ModelPlans;
use crate::tls::Role;

impl Shared {
    /// Connect to the dealer for pairing `id`, agree the seed, and start
    /// filling a pool (batch 0 is the model-load material).
    pub(super) async fn connect_dealer(
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
            .map_err(|_| ServerError::ChannelClosed {
                op: "sending the dealer hello",
            })?;
        let unreachable = |status| ServerError::Unreachable {
            peer: Role::Dealer,
            rpc: "Provision",
            status,
        };
        let mut client = DealerClient::new(self.dealer.clone())
            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
            .max_encoding_message_size(MAX_INTERNAL_MESSAGE);
        let resp = client
            .provision(tokio_stream::wrappers::ReceiverStream::new(req_rx))
            .await
            .map_err(unreachable)?;
        let mut inbound = resp.into_inner();
        let wait = self.join_timeout + DEALER_HELLO_SLACK;
        let unexpected = |expected| ServerError::Unexpected {
            peer: Role::Dealer,
            expected,
        };
        let hello = match tokio::time::timeout(wait, inbound.message()).await {
            Err(_) => {
                return Err(ServerError::NotJoined {
                    peer: Role::Dealer,
                    step: "answer the hello",
                    waited: wait,
                });
            }
            Ok(Err(s)) => return Err(unreachable(s)),
            Ok(Ok(Some(m))) => match m.kind {
                Some(provision_response::Kind::Hello(h)) => h,
                _ => return Err(unexpected("its hello")),
            },
            Ok(Ok(None)) => {
                return Err(ServerError::Closed {
                    peer: Role::Dealer,
                    stream: "provision",
                });
            }
        };
        let dealer_public: [u8; 32] = hello
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| unexpected("a 32-byte public key"))?;
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
    ready: Arc<AtomicBool>,
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
        if !self.ready.swap(true, Ordering::SeqCst)
            && let Some(store) = self.store.upgrade()
        {
            store.bump();
        }
    }
}

impl DealerReader {
    /// A batch starts arriving: put it in the pool, and return the queue to
    /// its session (`None` if it was released: nobody will read it).
    fn start_batch(&self, store: &PoolStore, batch: u64, total: usize) -> Option<Queue> {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(self.buffer_bytes));
        // A batch larger than the buffer streams: it is as ready as it
        // gets once it starts.
        let ready = Arc::new(AtomicBool::new(total > self.buffer_bytes));
        let feed = BatchFeed {
            batch,
            rx,
            budget: budget.clone(),
            size: self.buffer_bytes,
            ready: Arc::clone(&ready),
        };
        let kept = store.put(feed);
        kept.then(|| Queue {
            tx,
            budget,
            ready,
            store: self.store.clone(),
        })
    }

    async fn run(self, mut inbound: Streaming<ProvisionResponse>) {
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
                    (0, self.start_batch(&store, next, total))
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
            // A batch cut short is set aside: no session may take material
            // that will never arrive whole (one that took it already fails).
            if current.is_some() && store.set_aside(next) {
                warn!(
                    batch = next,
                    "the dealer's stream ended inside a batch: batch set aside"
                );
            }
            store.dealer_lost(reason);
        }
    }
}

//! The dealer service: pairs the two parties' connections by pairing id,
//! agrees a seed with each by X25519, then answers their correlation plans
//! with corrections only (mpc-core's [`Dealer`]): the model-load plan once
//! (batch 0), then one online batch per inference as the parties ask for
//! more (credit: batch `n` is dealt once both parties want it).
//!
//! The dealer sees public shapes and nothing else: no input, weight, share
//! or result ever reaches it.
//!
//! On shutdown the dealer drains: it admits no new pairing, goes on dealing
//! every batch the parties ask for (a batch it has started always, a new one
//! only within the grace period, [`DealerConfig::shutdown_grace`]), and ends
//! each party's stream with UNAVAILABLE, between two batches, once the
//! parties asked for nothing more for `DRAIN_QUIET`. A session never loses the
//! batch it took because the dealer is stopping; the parties serve on from
//! their pools and pair again with whichever dealer takes over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpc_core::local::PieceCutter;
use mpc_core::{Dealer, Request, Seed};

use crate::plan::ModelPlans;
use mpcvit_proto::v1::dealer_server::{Dealer as DealerRpc, DealerServer};
use mpcvit_proto::v1::{
    Chunk, DealerHello, ProvisionRequest, ProvisionResponse, provision_request, provision_response,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request as RpcRequest, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::admission::{self, PartyHello};
use crate::defaults::{self, CLOSE_GRACE};
use crate::error::ServerError;
use crate::kx::{End, KeyPair};
use crate::limits::ConnLimits;
use crate::plan;
use crate::port_guard::PortGuardLayer;
use crate::tls::{DEALER_PORT, Role, TlsMaterial, require_role};
use crate::{MAX_INTERNAL_MESSAGE, hex};

/// How a party's stream ends when its pairing ends at the dealer without
/// another reason (the other party left): ABORTED with this message, so the
/// party can tell the other party's departure from the dealer's.
pub const PAIRING_ENDED: &str = "the pairing ended at the dealer: the other party left it";

/// Largest piece of a batch in one message (default of
/// [`DealerConfig::chunk_bytes`]; see [`defaults::CHUNK_BYTES`]).
pub const CHUNK_BYTES: usize = defaults::CHUNK_BYTES;

/// Dealer settings.
#[derive(Clone, Debug)]
pub struct DealerConfig {
    /// How long the first party waits for the second to join a pairing.
    pub join_timeout: Duration,
    /// Largest piece of a batch in one message.
    pub chunk_bytes: usize,
    /// Bounds on the listeners' connections.
    pub limits: ConnLimits,
    /// Shutdown: how long the pairings may go on dealing the batches the
    /// parties asked for; then every stream ends.
    pub shutdown_grace: Duration,
}

impl Default for DealerConfig {
    fn default() -> Self {
        DealerConfig {
            join_timeout: defaults::DEALER_JOIN_TIMEOUT,
            chunk_bytes: CHUNK_BYTES,
            limits: ConnLimits::default(),
            shutdown_grace: defaults::SHUTDOWN_GRACE,
        }
    }
}

/// How a stream ends when its pairing drained on shutdown.
const DEALER_STOPPING: &str = "the dealer is shutting down";

/// On shutdown, a pairing whose parties asked for no further batch for this
/// long is done (its sessions in flight hold every batch they need).
const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// A `Provision` stream that does not begin with a hello.
const NO_HELLO: ServerError = ServerError::NoHeader {
    rpc: "Provision",
    expected: "a hello",
};

type ResponseTx = mpsc::Sender<Result<ProvisionResponse, Status>>;
type WeakResponseTx = mpsc::WeakSender<Result<ProvisionResponse, Status>>;

/// One party's half of a pairing.
struct Joined {
    seed: Seed,
    plans: Arc<ModelPlans>,
    manifest: String,
    out: ResponseTx,
    want: watch::Receiver<u64>,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Joined(<seed>)")
    }
}

/// Parties waiting for the other party, by pairing id: (party, its half).
type Waiting = HashMap<Vec<u8>, (usize, Joined)>;

/// The dealer's gRPC service.
#[derive(Debug, Clone)]
pub struct DealerService {
    config: DealerConfig,
    waiting: Arc<Mutex<Waiting>>,
    /// Plans recorded per manifest.
    plans: Arc<tokio::sync::Mutex<HashMap<String, Arc<ModelPlans>>>>,
    /// Every party's response stream, to end them all on shutdown (weak:
    /// a stream still ends when its pairing lets it go).
    streams: Arc<Mutex<Vec<WeakResponseTx>>>,
    /// Raised when shutdown begins: no new pairing; running ones drain.
    stopping: Arc<watch::Sender<bool>>,
    /// Pairings dealing now (shutdown waits for them to drain).
    live: Arc<watch::Sender<usize>>,
}

/// Counts a running pairing in [`DealerService::live`] while it lives.
struct Live(Arc<watch::Sender<usize>>);

impl Live {
    fn new(live: &Arc<watch::Sender<usize>>) -> Self {
        live.send_modify(|n| *n += 1);
        Live(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl DealerService {
    /// A dealer with `config`.
    pub fn new(config: DealerConfig) -> Self {
        DealerService {
            config,
            waiting: Arc::default(),
            plans: Arc::default(),
            streams: Arc::default(),
            stopping: Arc::new(watch::channel(false).0),
            live: Arc::new(watch::channel(0).0),
        }
    }

    /// Refuse new pairings once shutdown began.
    fn refuse_if_stopping(&self) -> Result<(), ServerError> {
        if *self.stopping.borrow() {
            return Err(ServerError::DealerStopping);
        }
        Ok(())
    }

    /// Shutdown: no new pairing; wait up to the grace period for the
    /// running ones to deal what the parties asked for; then end every
    /// stream left.
    async fn drain(&self) {
        self.stopping.send_replace(true);
        let grace = self.config.shutdown_grace;
        let mut live = self.live.subscribe();
        let running = *live.borrow();
        info!(
            pairings = running,
            "shutting down: dealing the batches the parties asked for"
        );
        if tokio::time::timeout(grace, live.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            warn!(
                pairings = *self.live.borrow(),
                "pairings still dealing after {grace:?}: ending their streams"
            );
        }
        self.end_streams();
    }

    /// Shutdown: end every party's stream with UNAVAILABLE, so each party
    /// knows at once that this dealer is gone (and its pairings can be set
    /// up again with whoever takes over).
    fn end_streams(&self) {
        let streams = std::mem::take(&mut *self.streams.lock().expect("dealer lock"));
        let live: Vec<ResponseTx> = streams.iter().filter_map(|w| w.upgrade()).collect();
        info!(streams = live.len(), "ending the parties' streams");
        for out in live {
            tokio::spawn(async move {
                let bye = Err(Status::unavailable(DEALER_STOPPING));
                let _ = tokio::time::timeout(CLOSE_GRACE, out.send(bye)).await;
            });
        }
    }

    /// The plans of a manifest (recorded once, then cached; its size was
    /// bounded by [`admission::party_hello`]).
    async fn plans(&self, manifest_json: &str) -> Result<Arc<ModelPlans>, ServerError> {
        let mut cache = self.plans.lock().await;
        if let Some(p) = cache.get(manifest_json) {
            return Ok(p.clone());
        }
        let m = manifest_json.to_string();
        let p = tokio::task::spawn_blocking(move || {
            plan::for_manifest(&m, model::SecureParams::default())
        })
        .await
        .map_err(ServerError::task("recording plans"))??;
        let p = Arc::new(p);
        if cache.len() >= defaults::PLAN_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(manifest_json.to_string(), p.clone());
        Ok(p)
    }

    async fn provision(
        &self,
        req: RpcRequest<Streaming<ProvisionRequest>>,
    ) -> Result<mpsc::Receiver<Result<ProvisionResponse, Status>>, ServerError> {
        let role = require_role(&req, &[Role::Party(0), Role::Party(1)], DEALER_PORT)?;
        self.refuse_if_stopping()?;
        let mut incoming = req.into_inner();
        let first = tokio::time::timeout(defaults::HELLO_TIMEOUT, incoming.message())
            .await
            .map_err(|_| NO_HELLO)??;
        let hello = match first.and_then(|m| m.kind) {
            Some(provision_request::Kind::Hello(h)) => h,
            _ => {
                return Err(NO_HELLO);
            }
        };
        let PartyHello {
            party,
            pairing,
            public_key: party_public,
        } = admission::party_hello(&hello, role)?;
        let plans = self.plans(&hello.manifest_json).await?;
        if hello.plan_digest != plans.digest(&hello.manifest_json) {
            // The manifest parsed (its plans were recorded): name its model.
            let model = model::ModelConfig::from_manifest_json(&hello.manifest_json)
                .map(|c| crate::error::clip(&c.name))
                .unwrap_or_default();
            return Err(ServerError::PlanMismatch { model, peer: role });
        }
        let keys = KeyPair::generate();
        let dealer_public = keys.public();
        let seed = keys.agree(&party_public, &hello.pairing_id, party, End::Dealer)?;
        let (out, out_rx) = mpsc::channel(8);
        {
            let mut streams = self.streams.lock().expect("dealer lock");
            streams.retain(|w| w.strong_count() > 0);
            streams.push(out.downgrade());
        }
        out.send(Ok(ProvisionResponse {
            kind: Some(provision_response::Kind::Hello(DealerHello {
                public_key: dealer_public.to_vec(),
            })),
        }))
        .await
        .map_err(|_| ServerError::Closed {
            peer: role,
            stream: "provision",
        })?;
        // Credits from the party.
        let (want_tx, want) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok(Some(m)) = incoming.message().await {
                if let Some(provision_request::Kind::Want(n)) = m.kind {
                    want_tx.send_if_modified(|w| {
                        let grow = n > *w;
                        *w = (*w).max(n);
                        grow
                    });
                }
            }
        });
        let joined = Joined {
            seed,
            plans,
            manifest: hello.manifest_json,
            out,
            want,
        };
        let pid = hello.pairing_id.clone();
        let pair = {
            let mut w = self.waiting.lock().expect("dealer lock");
            match w.remove(&pid) {
                Some((p, other)) if p != party => Some((joined, other)),
                Some(same) => {
                    w.insert(pid.clone(), same);
                    return Err(ServerError::JoinedTwice { party, pairing });
                }
                None => {
                    w.insert(pid.clone(), (party, joined));
                    None
                }
            }
        };
        match pair {
            Some((mine, other)) => {
                let (p0, p1) = if party == 0 {
                    (mine, other)
                } else {
                    (other, mine)
                };
                let span = info_span!("pairing", id = %hex(&pid));
                let drain = Drain {
                    stopping: self.stopping.subscribe(),
                    grace: self.config.shutdown_grace,
                    _live: Live::new(&self.live),
                };
                let chunk_bytes = self.config.chunk_bytes.max(1);
                tokio::spawn(run_pairing(p0, p1, chunk_bytes, drain).instrument(span));
            }
            None => {
                let waiting = self.waiting.clone();
                let timeout = self.config.join_timeout;
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let stale = {
                        let mut w = waiting.lock().expect("dealer lock");
                        match w.get(&pid) {
                            Some((p, _)) if *p == party => w.remove(&pid),
                            _ => None,
                        }
                    };
                    if let Some((_, j)) = stale {
                        let _ = j
                            .out
                            .send(Err(Status::deadline_exceeded(
                                "the other party did not join this pairing in time",
                            )))
                            .await;
                    }
                });
            }
        }
        Ok(out_rx)
    }
}

/// Deal batch `batch` of `plan` request by request on a blocking thread and
/// stream each party's bytes as they are dealt ([`PieceCutter`]: pieces of
/// at most `chunk_bytes`, both parties' pieces sent together), then mark
/// the batch's end. A send waits while the party's stream is full (HTTP/2
/// flow control), so the dealer holds at most one request's answer per party
/// however large the batch. Returns the dealer for the next batch and the
/// bytes sent to each party, or `None` when a party left.
async fn deal_streamed(
    dealer: Dealer,
    batch: u64,
    plan: Arc<Vec<Request>>,
    outs: [ResponseTx; 2],
    chunk_bytes: usize,
) -> Result<Option<(Dealer, [u64; 2])>, ServerError> {
    tokio::task::spawn_blocking(move || {
        let mut dealer = dealer;
        dealer.start_batch(batch);
        let mut cutter = PieceCutter::new(chunk_bytes);
        let mut sent = [0u64; 2];
        let mut send = |pieces: Vec<(usize, Vec<u8>)>, last: bool| -> bool {
            // each party's last piece of the batch carries `last`
            let final_of = |party: usize| pieces.iter().rposition(|(i, _)| *i == party);
            let finals = [final_of(0), final_of(1)];
            for (j, (i, data)) in pieces.into_iter().enumerate() {
                sent[i] += data.len() as u64;
                let chunk = Chunk {
                    batch,
                    data,
                    last: last && finals[i] == Some(j),
                };
                if !send_chunk(&outs[i], chunk) {
                    return false;
                }
            }
            for i in 0..2 {
                if last && finals[i].is_none() {
                    let end = Chunk {
                        batch,
                        data: Vec::new(),
                        last: true,
                    };
                    if !send_chunk(&outs[i], end) {
                        return false;
                    }
                }
            }
            true
        };
        for req in plan.iter() {
            let d = dealer.deal(req)?;
            if !send(cutter.push(&d.to_p0, &d.to_p1), false) {
                return Ok(None);
            }
        }
        if !send(cutter.flush(), true) {
            return Ok(None);
        }
        Ok(Some((dealer, sent)))
    })
    .await
    .map_err(ServerError::task("dealing"))?
}

/// Send one chunk from a blocking thread; false when the party left.
fn send_chunk(out: &ResponseTx, chunk: Chunk) -> bool {
    let msg = ProvisionResponse {
        kind: Some(provision_response::Kind::Chunk(chunk)),
    };
    out.blocking_send(Ok(msg)).is_ok()
}

/// A pairing's view of shutdown ([`DealerService::drain`]).
struct Drain {
    stopping: watch::Receiver<bool>,
    grace: Duration,
    _live: Live,
}

async fn run_pairing(p0: Joined, p1: Joined, chunk_bytes: usize, mut drain: Drain) {
    if p0.manifest != p1.manifest {
        warn!("the parties sent different manifests; refusing the pairing");
        for j in [&p0, &p1] {
            let _ = j
                .out
                .send(Err(Status::failed_precondition(
                    "the two parties joined the pairing with different models",
                )))
                .await;
        }
        return;
    }
    info!(
        prepare = p0.plans.prepare.len(),
        online = p0.plans.online.len(),
        "pairing joined"
    );
    let dealer = Dealer::new(&p0.seed, &p1.seed);
    let (prepare, online) = (p0.plans.prepare.clone(), p0.plans.online.clone());
    let outs = [p0.out, p1.out];
    let (mut want0, mut want1) = (p0.want, p1.want);
    let mut dealer = match deal_streamed(dealer, 0, prepare, outs.clone(), chunk_bytes).await {
        Ok(Some((d, _))) => d,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "dealing the model-load plan failed");
            return;
        }
    };
    let mut next = 1u64;
    // Set when shutdown began: no batch starts after it.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        // Wait until both parties want batch `next`. On shutdown, go on
        // while they keep asking: end once they asked for nothing more for
        // DRAIN_QUIET, or the grace period is over.
        loop {
            let now = tokio::time::Instant::now();
            if drain_until.is_none() && *drain.stopping.borrow() {
                drain_until = Some(now + drain.grace);
            }
            let w = (*want0.borrow()).min(*want1.borrow());
            let quiet = match drain_until {
                Some(until) if now < until && w >= next => break,
                Some(until) if now < until => DRAIN_QUIET.min(until - now),
                Some(_) => Duration::ZERO,
                None if w >= next => break,
                None => Duration::from_secs(3600),
            };
            let drained = tokio::select! {
                r = want0.changed() => if r.is_err() { info!("party 0 left the pairing"); return } else { false },
                r = want1.changed() => if r.is_err() { info!("party 1 left the pairing"); return } else { false },
                _ = drain.stopping.wait_for(|s| *s), if drain_until.is_none() => false,
                () = tokio::time::sleep(quiet), if drain_until.is_some() => true,
            };
            if drained {
                info!(dealt_to = next - 1, "drained: ending the parties' streams");
                for out in &outs {
                    let bye = Err(Status::unavailable(DEALER_STOPPING));
                    let _ = tokio::time::timeout(CLOSE_GRACE, out.send(bye)).await;
                }
                return;
            }
        }
        dealer = match deal_streamed(dealer, next, online.clone(), outs.clone(), chunk_bytes).await
        {
            Ok(Some((d, [b0, b1]))) => {
                debug!(batch = next, bytes_p0 = b0, bytes_p1 = b1, "batch dealt");
                d
            }
            Ok(None) => {
                info!("a party left the pairing");
                return;
            }
            Err(e) => {
                warn!(error = %e, "dealing failed");
                return;
            }
        };
        next += 1;
    }
}

type ProvisionStream = Pin<Box<dyn Stream<Item = Result<ProvisionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DealerRpc for DealerService {
    type ProvisionStream = ProvisionStream;

    async fn provision(
        &self,
        req: RpcRequest<Streaming<ProvisionRequest>>,
    ) -> Result<Response<Self::ProvisionStream>, Status> {
        let remote = req.remote_addr();
        let rx = DealerService::provision(self, req)
            .await
            .map_err(|e| e.refuse("Provision", remote))?;
        // A stream ended with an error status ends there; one that just
        // ends was let go by its pairing.
        let s = tokio_stream::wrappers::ReceiverStream::new(rx)
            .chain(tokio_stream::once(Err(Status::aborted(PAIRING_ENDED))));
        Ok(Response::new(Box::pin(s)))
    }
}

/// Serve the dealer on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: &TlsMaterial,
    config: DealerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with_health(listener, None, tls, config, shutdown).await
}

/// [`serve`], plus the plaintext health port on `health` when given
/// ([`crate::health`]).
pub async fn serve_with_health(
    listener: tokio::net::TcpListener,
    health_listener: Option<tokio::net::TcpListener>,
    tls: &TlsMaterial,
    config: DealerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    info!(?addr, "dealer listening");
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<DealerServer<DealerService>>()
        .await;
    let limits = config.limits;
    let service = DealerService::new(config);
    let svc = DealerServer::new(service.clone())
        .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
        .max_encoding_message_size(MAX_INTERNAL_MESSAGE);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let wait_stop = |mut s: tokio::sync::watch::Receiver<bool>| async move {
        let _ = s.wait_for(|v| *v).await;
    };
    let health_srv = {
        let (plain, stopped) = (health.clone(), wait_stop(stop.clone()));
        async move {
            match health_listener {
                Some(l) => crate::health::serve_plain(l, plain, limits, stopped).await,
                None => Ok(()),
            }
        }
    };
    let dealer_srv = limits
        .server_builder()
        .initial_stream_window_size(Some(crate::STREAM_WINDOW))
        .initial_connection_window_size(Some(crate::CONNECTION_WINDOW))
        .layer(PortGuardLayer::new(
            "the dealer's port",
            &["/mpcvit.v1.Dealer/", "/grpc.health.v1.Health/"],
        ))
        .add_service(health)
        .add_service(svc)
        .serve_with_incoming_shutdown(
            crate::listen::tls(listener, tls.server()?, limits, "dealer"),
            wait_stop(stop.clone()),
        );
    let stopper = tokio::spawn(async move {
        shutdown.await;
        info!("shutting down");
        health_reporter
            .set_not_serving::<DealerServer<DealerService>>()
            .await;
        service.drain().await;
        let _ = stop_tx.send(true);
    });
    let servers = async {
        let (a, b) = tokio::join!(dealer_srv, health_srv);
        a?;
        b
    };
    let deadline = async {
        let _ = stop.clone().wait_for(|v| *v).await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    let result = tokio::select! {
        r = servers => r,
        () = deadline => {
            warn!("connections still open {CLOSE_GRACE:?} after shutdown: closing them");
            Ok(())
        }
    };
    stopper.abort();
    info!("stopped");
    result
}

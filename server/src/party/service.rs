//! The party's gRPC services, as thin adapters: the client API
//! ([`Inference`]) and party 1's peer link ([`PeerLink`]). Each handler
//! checks its request, hands the work to the pairing and session code, and
//! turns errors into statuses through [`ServerError::to_status`] (refused
//! requests through [`ServerError::refuse`], which logs them).

use std::pin::Pin;
use std::sync::Arc;

use mpc_core::Party;
use mpcvit_proto::v1::inference_server::Inference;
use mpcvit_proto::v1::peer_link_server::PeerLink;
use mpcvit_proto::v1::{
    Ack, InferRequest, InferResponse, ListModelsRequest, ListModelsResponse, ModelInfo, PeerFrame,
    peer_frame,
};
use tokio_stream::Stream;
use tonic::{Request as RpcRequest, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

use super::session::{explain_peer_loss, to_bytes};
use super::{Shared, frame};
use crate::admission;
use crate::bridge::{self, PeerStream};
use crate::defaults::HEADER_TIMEOUT;
use crate::error::ServerError;
use crate::hex;
use crate::tls::{PEER_PORT, Role, require_client, require_role};

/// The party's gRPC services (client API and peer link share the state).
#[derive(Clone)]
pub struct PartyService {
    pub(super) shared: Arc<Shared>,
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
        let sh = &self.shared;
        require_client(&req, sh.client_token.as_deref(), &sh.client_certs)
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

/// The header frame of a `Pair` or `Session` stream, waited for at most
/// [`HEADER_TIMEOUT`].
pub(super) async fn first_frame(
    incoming: &mut Streaming<PeerFrame>,
    rpc: &'static str,
) -> Result<peer_frame::Kind, ServerError> {
    match tokio::time::timeout(HEADER_TIMEOUT, incoming.message()).await {
        Ok(Ok(Some(PeerFrame { kind: Some(k) }))) => Ok(k),
        Ok(Err(s)) => Err(ServerError::Rpc(s)),
        _ => Err(ServerError::NoHeader {
            rpc,
            expected: "a header frame",
        }),
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
        require_role(&req, &[Role::Party(0)], PEER_PORT).map_err(refuse)?;
        let mut incoming = req.into_inner();
        let header = first_frame(&mut incoming, "Session")
            .await
            .map_err(refuse)?;
        let peer_frame::Kind::Session(h) = header else {
            return Err(refuse(ServerError::NoHeader {
                rpc: "Session",
                expected: "a session header",
            }));
        };
        let sid = admission::session_header(&h).map_err(refuse)?;
        self.shared.refuse_if_stopping().map_err(refuse)?;
        let (tx, out) = bridge::outgoing();
        let rx = bridge::pump(incoming);
        let sh = &self.shared;
        sh.rendezvous
            .offer(sid, h, PeerStream { tx, rx }, sh.join_timeout)?;
        Ok(Response::new(Box::pin(out)))
    }
}

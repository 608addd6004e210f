//! Putting a party together and running it: the served models (their plans
//! recorded), the connections to the dealer and to party 1, the listeners'
//! servers, readiness, and the three-step shutdown.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use model::SecureParams;
use mpc_core::Party;
use mpcvit_proto::v1::inference_server::InferenceServer;
use mpcvit_proto::v1::peer_link_server::PeerLinkServer;
use tokio::sync::{Semaphore, watch};
use tonic::transport::Endpoint;
use tracing::{Instrument, info, info_span, warn};

use super::pairing::ModelEntry;
use super::{PartyConfig, PartyListeners, PartyService, ServedModel, Shared};
use crate::defaults::{
    CLIENT_KEEPALIVE_INTERVAL, CLIENT_KEEPALIVE_TIMEOUT, CLOSE_GRACE, CONNECT_TIMEOUT,
    CONNECTION_WINDOW, MAX_INTERNAL_MESSAGE, STREAM_WINDOW,
};
use crate::error::ServerError;
use crate::https_url;
use crate::plan::ModelPlans;
use crate::port_guard::PortGuardLayer;
use crate::tls::{Role, TlsMaterial};

/// An outgoing connection to `addr`, whose certificate must have `role`.
fn endpoint(addr: &str, tls: &TlsMaterial, role: Role) -> Result<Endpoint, ServerError> {
    Ok(Endpoint::from_shared(https_url(addr))
        .map_err(|e| ServerError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .tls_config(tls.client(role))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(CLIENT_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(CLIENT_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .tcp_nodelay(true))
}

/// The served models: each share checked against this build's fixed point,
/// its correlation plans recorded (on a blocking thread) and digested.
async fn load_models(
    served: Vec<ServedModel>,
    party: Party,
    params: SecureParams,
    pairings_changed: &Arc<watch::Sender<u64>>,
) -> Result<HashMap<String, Arc<ModelEntry>>, ServerError> {
    let mut models = HashMap::new();
    for ServedModel { shares, split } in served {
        let cfg = shares.config().clone();
        let name = cfg.name.clone();
        if shares.frac_bits() != params.fp.frac_bits {
            return Err(ServerError::FracBits {
                model: name,
                shares: shares.frac_bits(),
                build: params.fp.frac_bits,
            });
        }
        let manifest_json = cfg.to_manifest_json()?;
        let shares = Arc::new(shares);
        let plans = tokio::task::spawn_blocking({
            let shares = Arc::clone(&shares);
            move || ModelPlans::record(&shares, party, params)
        })
        .await
        .map_err(ServerError::task("recording plans"))??;
        let digest = plans.digest(&manifest_json);
        info!(
            model = %name,
            %split,
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
            shares,
            params,
            plans,
            digest,
            split,
            epochs: Mutex::default(),
            epochs_version: pairings_changed.clone(),
        };
        if models.insert(name.clone(), Arc::new(entry)).is_some() {
            return Err(ServerError::ModelTwice { model: name });
        }
    }
    Ok(models)
}

/// Serve a party until `shutdown` resolves.
pub async fn serve(
    config: PartyConfig,
    listeners: PartyListeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let party = config.party;
    let web = match (listeners.web, &config.web) {
        (Some(l), Some(w)) => Some(crate::web::WebListener::new(l, w)?),
        (None, None) => None,
        _ => {
            return Err(ServerError::Config(
                "a web listener needs its settings, and the settings a listener".into(),
            ));
        }
    };
    let params = SecureParams::default();
    let pairings_changed = Arc::new(watch::channel(0u64).0);
    let models = load_models(config.models, party, params, &pairings_changed).await?;
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
    let (client_tls, client_certs) = config.tls.client_api_server()?;
    let shared = Arc::new(Shared {
        party,
        fp: params.fp,
        models,
        client_token: config.client_token.clone(),
        client_certs,
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
    let client_srv = limits
        .server_builder()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .layer(tower::util::MapResponseLayer::new(
            crate::error::fix_transport_status,
        ))
        .layer(PortGuardLayer::new(
            match party {
                Party::P0 => "party 0's client API",
                Party::P1 => "party 1's client API",
            },
            &["/mpcvit.v1.Inference/", "/grpc.health.v1.Health/"],
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
    let web_srv = async {
        match web {
            Some(w) => {
                w.serve(
                    service.clone(),
                    config.max_message_bytes,
                    limits,
                    wait_stop(close.clone()),
                )
                .await
            }
            None => Ok(()),
        }
    };
    let peer_srv = async {
        match listeners.peer {
            Some(l) if party == Party::P1 => {
                info!(addr = ?l.local_addr().ok(), "peer link listening");
                limits
                    .server_builder()
                    .initial_stream_window_size(Some(STREAM_WINDOW))
                    .initial_connection_window_size(Some(CONNECTION_WINDOW))
                    .layer(PortGuardLayer::new(
                        "party 1's peer port",
                        &["/mpcvit.v1.PeerLink/"],
                    ))
                    .add_service(
                        PeerLinkServer::new(service.clone())
                            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
                            .max_encoding_message_size(MAX_INTERNAL_MESSAGE),
                    )
                    .serve_with_incoming_shutdown(
                        crate::listen::tls(l, config.tls.server()?, limits, "peer link"),
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
        let (a, b, c, d, ()) = tokio::join!(client_srv, peer_srv, health_srv, web_srv, readiness);
        a?;
        b?;
        c?;
        d
    };
    let deadline = async {
        let _ = close.clone().wait_for(|v| *v).await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    let result = tokio::select! {
        r = servers => r,
        () = deadline => {
            warn!("connections still open {:?} after shutdown: closing them", CLOSE_GRACE);
            Ok(())
        }
    };
    stopper.abort();
    info!("stopped");
    result
}

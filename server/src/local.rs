//! The dealer and both parties in one process, on loopback ports, over real
//! gRPC with mutual TLS (certificates made in memory): the client's local
//! mode, tests and benchmarks. With [`LocalOptions::web`], each party also
//! has a web listener ([`crate::web`]) on loopback, in plain HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mpc_core::Party;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dealer::{self, DealerConfig};
use crate::defaults;
use crate::error::ServerError;
use crate::party::{self, PartyConfig, PartyListeners, ServedModel};
use crate::stamp::SplitId;
use crate::tls::{CertBundle, Role, TlsMaterial};
use crate::web::{WebConfig, WebTls, WebTokens};
use model::secure::WeightShares;

/// Settings of a local cluster; the defaults are a deployed party's
/// ([`crate::defaults`]).
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Online batches each party keeps ready.
    pub pool_target: u64,
    /// See [`PartyConfig::pool_buffer_bytes`].
    pub pool_buffer_bytes: usize,
    /// See [`DealerConfig::chunk_bytes`].
    pub dealer_chunk_bytes: usize,
    /// Sessions party 0 computes at once.
    pub max_sessions: usize,
    /// See [`PartyConfig::join_timeout`].
    pub join_timeout: Duration,
    /// See [`PartyConfig::recv_timeout`].
    pub recv_timeout: Duration,
    /// See [`PartyConfig::pool_wait`].
    pub pool_wait: Duration,
    /// See [`PartyConfig::client_token`].
    pub client_token: Option<String>,
    /// Web listeners for both parties ([`LocalCluster::web_addrs`]).
    pub web: Option<LocalWeb>,
}

/// The local cluster's web listeners: plain HTTP on 127.0.0.1 (a secure
/// origin to browsers), these tokens and origins.
#[derive(Clone, Debug)]
pub struct LocalWeb {
    /// The accepted tokens.
    pub tokens: Arc<WebTokens>,
    /// The origins whose pages may call the parties.
    pub origins: Vec<String>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            pool_target: defaults::POOL_TARGET,
            pool_buffer_bytes: defaults::POOL_BUFFER_BYTES,
            dealer_chunk_bytes: defaults::CHUNK_BYTES,
            max_sessions: defaults::MAX_SESSIONS,
            join_timeout: defaults::JOIN_TIMEOUT,
            recv_timeout: defaults::RECV_TIMEOUT,
            pool_wait: defaults::POOL_WAIT,
            client_token: None,
            web: None,
        }
    }
}

/// A running dealer and two parties.
#[derive(Debug)]
pub struct LocalCluster {
    /// Client API addresses of party 0 and party 1 (`127.0.0.1:port`).
    pub party_addrs: [String; 2],
    /// Party 1's peer address and the dealer's address.
    pub internal_addrs: [String; 2],
    /// The parties' web listeners (`127.0.0.1:port`), with [`LocalOptions::web`].
    pub web_addrs: Option<[String; 2]>,
    /// A client's TLS material for this cluster.
    pub client_tls: TlsMaterial,
    /// Every certificate of the cluster (tests use the others).
    pub certs: CertBundle,
    /// Stops the parties.
    stop: watch::Sender<bool>,
    /// Stops the dealer, once the parties have stopped (so a clean exit
    /// logs no lost dealer link).
    stop_dealer: watch::Sender<bool>,
    /// The dealer's task.
    dealer: JoinHandle<Result<(), ServerError>>,
    /// The parties' tasks.
    tasks: Vec<JoinHandle<Result<(), ServerError>>>,
}

async fn loopback() -> Result<(tokio::net::TcpListener, String), ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: "127.0.0.1:0".into(),
        source,
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(bind_error)?;
    let addr = l.local_addr().map_err(bind_error)?.to_string();
    Ok((l, addr))
}

impl LocalCluster {
    /// Start the dealer and both parties, serving `models[p]` at party `p`
    /// (the two parties' shares of a model are halves of one split).
    pub async fn start(
        models: [Vec<WeightShares>; 2],
        opts: LocalOptions,
    ) -> Result<Self, ServerError> {
        let certs = CertBundle::generate()?;
        let (stop, _) = watch::channel(false);
        let (stop_dealer, _) = watch::channel(false);
        let wait = |s: &watch::Sender<bool>| {
            let mut rx = s.subscribe();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        };
        let (dl, dealer_addr) = loopback().await?;
        let (c0, a0) = loopback().await?;
        let (c1, a1) = loopback().await?;
        let (p1, peer_addr) = loopback().await?;
        let mut tasks = Vec::new();
        let dealer_tls = certs.material(Role::Dealer);
        let stop_d = wait(&stop_dealer);
        let dealer = tokio::spawn(async move {
            let config = DealerConfig {
                chunk_bytes: opts.dealer_chunk_bytes,
                ..DealerConfig::default()
            };
            dealer::serve(dl, &dealer_tls, config, stop_d).await
        });
        let mut web_listeners = [None, None];
        let mut web_addrs = None;
        if opts.web.is_some() {
            let (w0, wa0) = loopback().await?;
            let (w1, wa1) = loopback().await?;
            web_listeners = [Some(w0), Some(w1)];
            web_addrs = Some([wa0, wa1]);
        }
        // The halves given are of one split (made in memory): a fresh
        // identifier per model name, the same at both parties.
        let [m0, m1] = models;
        let mut splits: HashMap<String, SplitId> = HashMap::new();
        let mut served = |shares: Vec<WeightShares>| -> Vec<ServedModel> {
            shares
                .into_iter()
                .map(|shares| {
                    let name = shares.config().name.clone();
                    let split = *splits.entry(name).or_insert_with(SplitId::random);
                    ServedModel { shares, split }
                })
                .collect()
        };
        let (m0, m1) = (served(m0), served(m1));
        let [w0, w1] = web_listeners;
        for (party, m, client, peer, web) in [
            (Party::P0, m0, c0, None, w0),
            (Party::P1, m1, c1, Some(p1), w1),
        ] {
            let mut cfg = PartyConfig::new(
                party,
                m,
                dealer_addr.clone(),
                certs.material(Role::Party(party.index() as u8)),
            );
            cfg.peer_addr = Some(peer_addr.clone());
            cfg.pool_target = opts.pool_target;
            cfg.pool_buffer_bytes = opts.pool_buffer_bytes;
            cfg.max_sessions = opts.max_sessions;
            cfg.join_timeout = opts.join_timeout;
            cfg.recv_timeout = opts.recv_timeout;
            cfg.pool_wait = opts.pool_wait;
            cfg.client_token = opts.client_token.clone();
            cfg.web = opts.web.as_ref().map(|w| WebConfig {
                tokens: w.tokens.clone(),
                origins: w.origins.clone(),
                tls: WebTls::LoopbackPlaintext,
            });
            let listeners = PartyListeners {
                client,
                peer,
                health: None,
                web,
            };
            let s = wait(&stop);
            tasks.push(tokio::spawn(party::serve(cfg, listeners, s)));
        }
        Ok(LocalCluster {
            party_addrs: [a0, a1],
            internal_addrs: [peer_addr, dealer_addr],
            web_addrs,
            client_tls: certs.material(Role::Client),
            certs,
            stop,
            stop_dealer,
            dealer,
            tasks,
        })
    }

    /// Stop every service and wait for them: the parties first, then the
    /// dealer.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.stop_dealer.send(true);
        let _ = self.dealer.await;
    }
}

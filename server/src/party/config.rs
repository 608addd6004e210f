//! A party's settings and listeners. Defaults: [`crate::defaults`].

use std::time::Duration;

use model::secure::WeightShares;
use mpc_core::Party;

use crate::defaults;
use crate::limits::ConnLimits;
use crate::stamp::SplitId;
use crate::tls::TlsMaterial;
use crate::web::WebConfig;

/// One model a party serves: its share and the split it comes from (the
/// other party must hold the other half of the same split).
#[derive(Debug)]
pub struct ServedModel {
    /// This party's share.
    pub shares: WeightShares,
    /// The split's identifier ([`crate::stamp`]).
    pub split: SplitId,
}

/// Everything a party needs besides its listeners.
#[derive(Debug)]
pub struct PartyConfig {
    /// Which party this is.
    pub party: Party,
    /// This party's share of every model it serves.
    pub models: Vec<ServedModel>,
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
    pub limits: ConnLimits,
    /// Shutdown: how long sessions in flight may take to finish.
    pub shutdown_grace: Duration,
    /// The web listener's settings (with [`PartyListeners::web`]); `None`:
    /// no web access.
    pub web: Option<WebConfig>,
}

impl PartyConfig {
    /// Defaults ([`crate::defaults`]) for everything but the party, models,
    /// addresses and TLS.
    pub fn new(
        party: Party,
        models: Vec<ServedModel>,
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
            pool_target: defaults::POOL_TARGET,
            pool_buffer_bytes: defaults::POOL_BUFFER_BYTES,
            max_sessions: defaults::MAX_SESSIONS,
            join_timeout: defaults::JOIN_TIMEOUT,
            recv_timeout: defaults::RECV_TIMEOUT,
            pool_wait: defaults::POOL_WAIT,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            retry: defaults::PAIR_RETRY,
            limits: ConnLimits::default(),
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            web: None,
        }
    }
}

/// Listeners of a party: the client API, party 1's peer port, the health
/// port and the web listener.
#[derive(Debug)]
pub struct PartyListeners {
    /// Client API (and health).
    pub client: tokio::net::TcpListener,
    /// Party 1: the port party 0 connects to.
    pub peer: Option<tokio::net::TcpListener>,
    /// The plaintext health port for orchestrators' probes ([`crate::health`]).
    pub health: Option<tokio::net::TcpListener>,
    /// The client API for browsers ([`crate::web`]), with [`PartyConfig::web`].
    pub web: Option<tokio::net::TcpListener>,
}

//! Command lines of `mpcvit-server` (a party, or the `dealer`, `split`,
//! `certs`, `health` and `web-token` commands) and `mpcvit-dealer`. Every flag can also be set by an
//! environment variable (`MPCVIT_*`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mpc_core::{FixedPoint, Party};

use crate::defaults;
use crate::error::ServerError;
use crate::limits::ConnLimits;
use crate::party::{PartyConfig, PartyListeners, ServedModel};
use crate::shares;
use crate::telemetry::{self, LogFormat};
use crate::tls::{CertBundle, KeyedCert, Role, TlsMaterial};
use crate::web::{WebConfig, WebTls, WebTokens};
use tracing::info;

/// `mpcvit-server`: a computing party of mpcvit, or one of its tools.
#[derive(Debug, Parser)]
#[command(
    name = "mpcvit-server",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A tool instead of a party.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Run a computing party.
    #[command(flatten)]
    pub party: PartyArgs,
}

/// The tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dealer of correlated randomness (same as `mpcvit-dealer`).
    Dealer(DealerArgs),
    /// Model owner: split a model into two weight share files, one per party
    /// (with `split.json`, their record: the split's identifier and digests).
    Split(SplitArgs),
    /// Model owner: write `split.json` for shares split without one (both
    /// halves of one split, intact: the record says what they are now).
    Stamp(StampArgs),
    /// Create a CA and certificates for the dealer, both parties and a client.
    Certs(CertsArgs),
    /// Ask a plaintext health port (`--health-listen`) whether a service is
    /// SERVING: exit status 0 if so (for container health checks).
    Health(HealthArgs),
    /// Issue a web token: print it once and append its hash to the token
    /// file the parties read (`--web-tokens`).
    WebToken(WebTokenArgs),
}

/// Flags common to every service.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Directory with `ca.pem` and `<role>.pem` / `<role>.key` (see `certs`).
    #[arg(long, env = "MPCVIT_CERTS", default_value = "certs")]
    pub certs: PathBuf,
    /// Log format.
    #[arg(long, env = "MPCVIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Also serve `grpc.health.v1.Health` without TLS on this address, for
    /// orchestrators' probes (status words only; see `mpcvit-server health`).
    #[arg(long, env = "MPCVIT_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Connections open at once per listener; more are closed at once.
    #[arg(long, env = "MPCVIT_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a connection may take to finish its TLS handshake.
    #[arg(long, env = "MPCVIT_HANDSHAKE_TIMEOUT", default_value_t = defaults::HANDSHAKE_TIMEOUT.as_secs_f64())]
    pub handshake_timeout: f64,
    /// Seconds without a received byte after which a connection is closed
    /// (live peers answer the server's pings well within it).
    #[arg(long, env = "MPCVIT_IDLE_TIMEOUT", default_value_t = defaults::IDLE_TIMEOUT.as_secs_f64())]
    pub idle_timeout: f64,
}

impl CommonArgs {
    /// The listeners' connection bounds from these flags.
    pub fn limits(&self) -> ConnLimits {
        ConnLimits {
            handshake_timeout: secs(self.handshake_timeout),
            idle_timeout: secs(self.idle_timeout),
            max_connections: self.max_connections.max(1),
            ..ConnLimits::default()
        }
    }
}

/// A computing party.
#[derive(Debug, Args, Clone)]
pub struct PartyArgs {
    /// Which party: 0 or 1.
    #[arg(long, env = "MPCVIT_PARTY", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub party: Option<u8>,
    /// A model to serve: a directory holding `share-<party>.safetensors`, or
    /// the share file itself. Repeat for several models.
    #[arg(long = "model", env = "MPCVIT_MODELS", value_delimiter = ',')]
    pub models: Vec<PathBuf>,
    /// Client API address [default: 127.0.0.1:50051 for party 0, 127.0.0.1:50052 for party 1].
    #[arg(long, env = "MPCVIT_LISTEN")]
    pub listen: Option<String>,
    /// Party 1: the address party 0 connects to.
    #[arg(long, env = "MPCVIT_PEER_LISTEN", default_value = "127.0.0.1:50061")]
    pub peer_listen: String,
    /// Party 0: party 1's peer address.
    #[arg(long, env = "MPCVIT_PEER", default_value = "127.0.0.1:50061")]
    pub peer: String,
    /// The dealer's address.
    #[arg(long, env = "MPCVIT_DEALER", default_value = "127.0.0.1:50070")]
    pub dealer: String,
    /// Accept this bearer token on the client API in place of a client certificate.
    #[arg(long, env = "MPCVIT_CLIENT_TOKEN", hide_env_values = true)]
    pub client_token: Option<String>,
    /// Online batches of preprocessed material to keep ready per model.
    #[arg(long, env = "MPCVIT_POOL", default_value_t = defaults::POOL_TARGET)]
    pub pool: u64,
    /// MiB of dealer material buffered per batch; a larger batch (a big
    /// model's) streams from the dealer while its session runs.
    #[arg(long, env = "MPCVIT_POOL_BUFFER_MB", default_value_t = defaults::POOL_BUFFER_BYTES >> 20)]
    pub pool_buffer_mb: usize,
    /// Party 0: sessions computed at once.
    #[arg(long, env = "MPCVIT_MAX_SESSIONS", default_value_t = defaults::MAX_SESSIONS)]
    pub max_sessions: usize,
    /// Threads for a session's local kernels (DCF evaluation, matrix
    /// products); 0: one per core.
    #[arg(long, env = "MPCVIT_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Seconds the two halves of a session wait for each other.
    #[arg(long, env = "MPCVIT_JOIN_TIMEOUT", default_value_t = defaults::JOIN_TIMEOUT.as_secs_f64())]
    pub join_timeout: f64,
    /// Seconds a protocol step waits for the other party.
    #[arg(long, env = "MPCVIT_RECV_TIMEOUT", default_value_t = defaults::RECV_TIMEOUT.as_secs_f64())]
    pub recv_timeout: f64,
    /// Seconds a session waits for preprocessed material.
    #[arg(long, env = "MPCVIT_POOL_WAIT", default_value_t = defaults::POOL_WAIT.as_secs_f64())]
    pub pool_wait: f64,
    /// Largest request accepted on the client API, in bytes.
    #[arg(long, env = "MPCVIT_MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Serve the client API to browsers (gRPC-web over TLS, web tokens) on
    /// this address as well; off unless given. Needs --web-tokens and
    /// --web-origin.
    #[arg(long, env = "MPCVIT_WEB_LISTEN", requires_all = ["web_tokens", "web_origins"])]
    pub web_listen: Option<String>,
    /// The web token file (hashes, from `mpcvit-server web-token`); re-read
    /// when it changes.
    #[arg(long, env = "MPCVIT_WEB_TOKENS")]
    pub web_tokens: Option<PathBuf>,
    /// An origin whose pages may call the web listener (CORS), as
    /// `scheme://host[:port]`. Repeat (or separate by commas) for several.
    #[arg(long = "web-origin", env = "MPCVIT_WEB_ORIGINS", value_delimiter = ',')]
    pub web_origins: Vec<String>,
    /// The web listener's certificate chain (PEM), the one browsers verify
    /// [default: the party's own certificate from --certs].
    #[arg(long, env = "MPCVIT_WEB_CERT", requires = "web_key")]
    pub web_cert: Option<PathBuf>,
    /// The web listener's private key (PEM).
    #[arg(long, env = "MPCVIT_WEB_KEY", requires = "web_cert")]
    pub web_key: Option<PathBuf>,
    /// Seconds sessions in flight may take to finish on Ctrl-C / SIGTERM
    /// before the pairings end under them (the process then stops within
    /// about two seconds more).
    #[arg(long, env = "MPCVIT_SHUTDOWN_GRACE", default_value_t = defaults::SHUTDOWN_GRACE.as_secs_f64())]
    pub shutdown_grace: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// The dealer.
#[derive(Debug, Args, Clone)]
pub struct DealerArgs {
    /// Address to listen on.
    #[arg(long, env = "MPCVIT_DEALER_LISTEN", default_value = "127.0.0.1:50070")]
    pub listen: String,
    /// Seconds the dealer may go on dealing, on Ctrl-C / SIGTERM, the
    /// batches the parties asked for (a batch it started is never cut
    /// short by it) before every stream ends (the process then stops within
    /// about two seconds more).
    #[arg(long, env = "MPCVIT_SHUTDOWN_GRACE", default_value_t = defaults::SHUTDOWN_GRACE.as_secs_f64())]
    pub shutdown_grace: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// The model owner's split.
#[derive(Debug, Args, Clone)]
pub struct SplitArgs {
    /// Plaintext model directory (`manifest.json` + `model.safetensors`).
    #[arg(long, conflicts_with = "random")]
    pub model: Option<PathBuf>,
    /// Instead of a model directory: a deterministic random model of this
    /// preset (`vit_7_4_32`, `vit_7_4_32_mu05`, `vit_9_12_64`,
    /// `vit_9_12_64_mu05`, `small`) for demos and tests.
    #[arg(long)]
    pub random: Option<String>,
    /// Seed of the random model.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory: `manifest.json`, `share-0.safetensors`, `share-1.safetensors`.
    #[arg(long)]
    pub out: PathBuf,
    /// Write `OUT/party0/{manifest.json,share-0.safetensors}` and
    /// `OUT/party1/{manifest.json,share-1.safetensors}`: one directory to
    /// hand to each party.
    #[arg(long)]
    pub per_party: bool,
    /// Do nothing if the output already exists (a second split would give
    /// a party that restarts shares that no longer match the other's);
    /// existing shares without `split.json` are stamped (see `stamp`).
    #[arg(long)]
    pub keep_existing: bool,
    /// Fixed-point fractional bits.
    #[arg(long, default_value_t = 16)]
    pub frac_bits: u32,
}

/// Recording existing shares.
#[derive(Debug, Args, Clone)]
pub struct StampArgs {
    /// The split's output directory: `DIR/share-{0,1}.safetensors`, or
    /// `DIR/party0/` and `DIR/party1/` (`split --per-party`).
    #[arg(long)]
    pub dir: PathBuf,
}

/// Certificates.
#[derive(Debug, Args, Clone)]
pub struct CertsArgs {
    /// Output directory.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Write `OUT/ca.pem`, `OUT/ca.key` and `OUT/<role>/{ca.pem,<role>.pem,<role>.key}`
    /// for dealer, party0, party1 and client: one directory to hand to each holder.
    #[arg(long)]
    pub per_role: bool,
    /// Do nothing if `OUT/ca.pem` already exists (re-running a deployment's
    /// one-shot step must not replace certificates under running services).
    #[arg(long)]
    pub keep_existing: bool,
    /// A host name or IP address browsers use to reach the parties' web
    /// listeners (e.g. `localhost`): added to both party certificates.
    /// Repeat for several.
    #[arg(long = "web-host")]
    pub web_hosts: Vec<String>,
}

/// Issuing a web token.
#[derive(Debug, Args, Clone)]
pub struct WebTokenArgs {
    /// The token file to append the token's hash to (created if missing);
    /// give the same file to both parties' --web-tokens.
    #[arg(long, env = "MPCVIT_WEB_TOKENS")]
    pub tokens: PathBuf,
    /// A label stored beside the hash (who the token is for).
    #[arg(long, default_value = "")]
    pub label: String,
    /// The page's address: also print it with the token in its fragment
    /// (`URL#token=...`; a fragment never leaves the browser).
    #[arg(long)]
    pub page_url: Option<String>,
}

/// The health probe.
#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// The plaintext health port.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub addr: String,
    /// The service to ask about: `""` (the process), `mpcvit.v1.Inference`
    /// (a party: every model paired), `mpcvit.v1.Dealer`.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = defaults::HEALTH_PROBE_TIMEOUT.as_secs_f64())]
    pub timeout: f64,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.001))
}

/// Resolve a `--model` path to party `p`'s share file.
pub fn share_path(path: &Path, party: Party) -> PathBuf {
    if path.is_dir() {
        path.join(shares::share_file_name(party))
    } else {
        path.to_path_buf()
    }
}

/// A runtime for a server process; hand it to [`finish`] when done.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Stop a server process's runtime without waiting for stragglers: a
/// blocking task (a secure forward whose peer is gone) or a connection task
/// left over must not keep a stopping process alive.
pub fn finish(rt: tokio::runtime::Runtime) {
    rt.shutdown_timeout(defaults::RUNTIME_SHUTDOWN);
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })
}

async fn bind_optional(addr: Option<&str>) -> Result<Option<tokio::net::TcpListener>, ServerError> {
    match addr {
        Some(a) => Ok(Some(bind(a).await?)),
        None => Ok(None),
    }
}

/// The pool of mpc-core's local kernels ([`mpc_core::parallel`]): `threads`
/// threads, or one per core for 0.
fn kernel_threads(threads: usize) -> Result<(), ServerError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("mpc-kernel-{i}"))
        .build_global()
        .map_err(|e| ServerError::Config(format!("--threads {threads}: {e}")))?;
    info!(threads = rayon::current_num_threads(), "kernel threads");
    Ok(())
}

/// Run a party from its flags.
pub async fn run_party(a: PartyArgs) -> Result<(), ServerError> {
    telemetry::init(a.common.log_format, "info");
    let p = a
        .party
        .ok_or_else(|| ServerError::Config("--party 0|1 is required (or a subcommand)".into()))?;
    let party = Party::from_index(p as usize).expect("0 or 1");
    if a.models.is_empty() {
        return Err(ServerError::Config("no --model given".into()));
    }
    kernel_threads(a.threads)?;
    let mut models = Vec::new();
    for m in &a.models {
        let path = share_path(m, party);
        let (loaded, split) = shares::load(&path)?;
        if loaded.party != party {
            return Err(ServerError::WrongParty {
                path,
                file: loaded.party,
                this: party,
            });
        }
        info!(model = %loaded.shares.config().name, %split, path = %path.display(), "share checked against its split record");
        models.push(ServedModel {
            shares: loaded.shares,
            split,
        });
    }
    let tls = TlsMaterial::load(&a.common.certs, Role::Party(p))?;
    let mut cfg = PartyConfig::new(party, models, a.dealer.clone(), tls);
    cfg.peer_addr = Some(a.peer.clone());
    cfg.client_token = a.client_token.clone();
    cfg.pool_target = a.pool;
    cfg.pool_buffer_bytes = a.pool_buffer_mb << 20;
    cfg.max_sessions = a.max_sessions;
    cfg.join_timeout = secs(a.join_timeout);
    cfg.recv_timeout = secs(a.recv_timeout);
    cfg.pool_wait = secs(a.pool_wait);
    cfg.max_message_bytes = a.max_message_bytes;
    cfg.limits = a.common.limits();
    cfg.shutdown_grace = Duration::from_secs_f64(a.shutdown_grace.max(0.0));
    cfg.web = web_config(&a, &cfg.tls)?;
    let listen = a.listen.clone().unwrap_or_else(|| {
        if p == 0 {
            "127.0.0.1:50051".into()
        } else {
            "127.0.0.1:50052".into()
        }
    });
    let listeners = PartyListeners {
        client: bind(&listen).await?,
        peer: if p == 1 {
            Some(bind(&a.peer_listen).await?)
        } else {
            None
        },
        health: bind_optional(a.common.health_listen.as_deref()).await?,
        web: bind_optional(a.web_listen.as_deref()).await?,
    };
    crate::party::serve(cfg, listeners, shutdown_signal()).await
}

/// The web listener's settings from a party's flags: its token file
/// (watched for changes), origins and certificate.
fn web_config(a: &PartyArgs, tls: &TlsMaterial) -> Result<Option<WebConfig>, ServerError> {
    if a.web_listen.is_none() {
        return Ok(None);
    }
    let path = a.web_tokens.clone().ok_or_else(|| {
        ServerError::Config(
            "--web-listen needs --web-tokens (from `mpcvit-server web-token`)".into(),
        )
    })?;
    let tokens = Arc::new(WebTokens::load(&path)?);
    if tokens.is_empty() {
        tracing::warn!(path = %path.display(), "the web token file holds no token yet: every web request is refused until one is issued");
    }
    tokens.watch(path);
    let cert = match (&a.web_cert, &a.web_key) {
        (Some(c), Some(k)) => {
            let read =
                |p: &Path| std::fs::read_to_string(p).map_err(|e| ServerError::io("reading", p, e));
            KeyedCert {
                cert_pem: read(c)?,
                key_pem: read(k)?,
            }
        }
        _ => tls.identity.clone(),
    };
    Ok(Some(WebConfig {
        tokens,
        origins: a.web_origins.clone(),
        tls: WebTls::Certificate(cert),
    }))
}

/// Issue a web token: its hash appended to the token file, the token printed.
pub fn run_web_token(a: WebTokenArgs) -> Result<(), ServerError> {
    let issued = crate::web::tokens::issue(&a.label);
    crate::web::tokens::append(&a.tokens, &issued.line)?;
    eprintln!(
        "appended the token's hash to {} (parties re-read it within seconds); the token is shown once:",
        a.tokens.display()
    );
    println!("{}", *issued.token);
    if let Some(url) = &a.page_url {
        eprintln!("open the page with it:");
        println!("{}#token={}", url.trim_end_matches('#'), *issued.token);
    }
    Ok(())
}

/// Run the dealer from its flags.
pub async fn run_dealer(a: DealerArgs) -> Result<(), ServerError> {
    telemetry::init(a.common.log_format, "info");
    let tls = TlsMaterial::load(&a.common.certs, Role::Dealer)?;
    let listener = bind(&a.listen).await?;
    let health = bind_optional(a.common.health_listen.as_deref()).await?;
    crate::dealer::serve_with_health(
        listener,
        health,
        &tls,
        crate::dealer::DealerConfig {
            limits: a.common.limits(),
            shutdown_grace: Duration::from_secs_f64(a.shutdown_grace.max(0.0)),
            ..crate::dealer::DealerConfig::default()
        },
        shutdown_signal(),
    )
    .await
}

/// A deterministic random model of a named preset (demos and tests, until
/// trained models ship).
pub fn random_model(preset: &str, seed: u64) -> Result<model::Model, ServerError> {
    let config = preset_config(preset)?;
    Ok(model::Model::random(config, seed)?)
}

/// The configuration of a named preset: the paper's `vit_7_4_32` (CIFAR,
/// all ReLU-softmax) and `vit_9_12_64` (Tiny-ImageNet, 257 tokens, all
/// ReLU-softmax), their `_mu05` variants (μ = 0.5: half the heads
/// ReLU-softmax, half ScaleAttn, alternating), or `small` (16 px, dim 32,
/// 2 blocks: for tests).
pub fn preset_config(preset: &str) -> Result<model::ModelConfig, ServerError> {
    use model::{AttnKind, ModelConfig};
    let mu05 = |mut c: ModelConfig| {
        for (b, row) in c.attention.iter_mut().enumerate() {
            for (h, k) in row.iter_mut().enumerate() {
                *k = if (b + h) % 2 == 0 {
                    AttnKind::ReluSoftmax
                } else {
                    AttnKind::ScaleAttn
                };
            }
        }
        c
    };
    Ok(match preset {
        "vit_7_4_32" => ModelConfig::vit_7_4_32(),
        "vit_7_4_32_mu05" => {
            let mut c = mu05(ModelConfig::vit_7_4_32());
            c.name = "vit_7_4_32_mu05".into();
            c
        }
        "vit_9_12_64" => ModelConfig::vit_9_12_64(),
        "vit_9_12_64_mu05" => {
            let mut c = mu05(ModelConfig::vit_9_12_64());
            c.name = "vit_9_12_64_mu05".into();
            c
        }
        "small" => {
            let mut c = mu05(ModelConfig {
                name: "small".into(),
                image_size: 16,
                patch_size: 4,
                dim: 32,
                depth: 2,
                heads: 4,
                mlp_hidden: 64,
                ..ModelConfig::vit_7_4_32()
            });
            c.attention = vec![
                vec![
                    AttnKind::ReluSoftmax,
                    AttnKind::ScaleAttn,
                    AttnKind::Softmax,
                    AttnKind::ScaleAttn
                ];
                2
            ];
            c.beta = vec![
                None,
                Some((0..c.num_tokens()).map(|t| t % 3 != 1).collect()),
            ];
            c
        }
        other => {
            return Err(ServerError::Config(format!(
                "unknown preset {other:?} (vit_7_4_32, vit_7_4_32_mu05, vit_9_12_64, vit_9_12_64_mu05, small)"
            )));
        }
    })
}

/// The model owner's split.
pub fn run_split(a: SplitArgs) -> Result<(), ServerError> {
    if a.keep_existing {
        let files = [Party::P0, Party::P1].map(|p| {
            let dir = if a.per_party {
                shares::party_dir(&a.out, p)
            } else {
                a.out.clone()
            };
            dir.join(shares::share_file_name(p))
        });
        match files.iter().filter(|f| f.exists()).count() {
            0 => {}
            2 => {
                let stamped = files.iter().all(|f| {
                    crate::stamp::parent_dir(f)
                        .join(crate::stamp::STAMP_FILE)
                        .exists()
                });
                if stamped {
                    eprintln!(
                        "{} and {} exist: keeping them",
                        files[0].display(),
                        files[1].display()
                    );
                } else {
                    let id = shares::stamp_dir(&a.out)?;
                    eprintln!(
                        "{} and {} exist without split.json: keeping them, recorded as split {id}",
                        files[0].display(),
                        files[1].display()
                    );
                }
                return Ok(());
            }
            _ => {
                return Err(ServerError::Config(format!(
                    "only one of {} and {} exists: remove it and split again",
                    files[0].display(),
                    files[1].display()
                )));
            }
        }
    }
    let model = match (&a.model, &a.random) {
        (Some(dir), None) => model::Model::load_dir(dir)?,
        (None, Some(p)) => random_model(p, a.seed)?,
        _ => {
            return Err(ServerError::Config(
                "give --model DIR or --random PRESET".into(),
            ));
        }
    };
    let fp = FixedPoint::new(a.frac_bits);
    if a.per_party {
        let id = shares::split_to_party_dirs(&model, fp, &a.out)?;
        eprintln!(
            "wrote {0}/party0/ (manifest.json, share-0.safetensors: party 0 only, split.json) and {0}/party1/ (manifest.json, share-1.safetensors: party 1 only, split.json); split {id}",
            a.out.display()
        );
    } else {
        let id = shares::split_to_dir(&model, fp, &a.out)?;
        eprintln!(
            "wrote {}/manifest.json (public), share-0.safetensors (party 0 only), share-1.safetensors (party 1 only), split.json (their record); split {id}",
            a.out.display()
        );
    }
    Ok(())
}

/// Record existing shares (`stamp`).
pub fn run_stamp(a: StampArgs) -> Result<(), ServerError> {
    let id = shares::stamp_dir(&a.dir)?;
    eprintln!(
        "wrote split.json beside the shares under {}: split {id}",
        a.dir.display()
    );
    Ok(())
}

/// Create the certificates.
pub fn run_certs(a: CertsArgs) -> Result<(), ServerError> {
    if a.keep_existing && a.out.join("ca.pem").exists() {
        eprintln!(
            "{}/ca.pem exists: keeping the certificates there",
            a.out.display()
        );
        return Ok(());
    }
    let bundle = CertBundle::generate_with_web_hosts(&a.web_hosts)?;
    if a.per_role {
        bundle.write_role_dirs(&a.out)?;
        eprintln!(
            "wrote {0}/ca.pem, {0}/ca.key (keep the CA key apart) and {0}/<role>/ (ca.pem, <role>.pem, <role>.key) for dealer, party0, party1, client: give each directory to its holder only",
            a.out.display()
        );
    } else {
        bundle.write_dir(&a.out)?;
        eprintln!(
            "wrote {}/ca.pem, ca.key and dealer, party0, party1, client .pem/.key (keys are secret: give each to its holder only)",
            a.out.display()
        );
    }
    Ok(())
}

/// Probe a plaintext health port.
pub async fn run_health(a: HealthArgs) -> Result<(), ServerError> {
    crate::health::probe(&a.addr, &a.service, secs(a.timeout)).await
}

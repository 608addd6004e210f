//! `mpcvit-client infer IMAGE|DIR [--top K] [--json]`, `mpcvit-client models`,
//! `mpcvit-client web`, `mpcvit-client page`, `mpcvit-client preprocess IMAGE`.
//!
//! With no `--party0`/`--party1`, the client starts the dealer and both
//! parties in this process on loopback ports (real gRPC, mutual TLS with
//! certificates made in memory) and uses them. `web` does the same with the
//! parties' web listeners and serves the web page to a browser.
//!
//! Results go to stdout as they are ready, in the folder's order, each
//! flushed at once (with `--json`, one JSON object per line), so an
//! interrupted run keeps every result it printed. When stdout closes (a
//! pipe into `head`), the client stops quietly with exit status 141 (as a
//! process killed by SIGPIPE). Images whose header announces more than
//! 25 megapixels ([`model::preprocess::MAX_IMAGE_PIXELS`]) are refused
//! before decoding.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mpc_core::{FixedPoint, Prg, Seed};
use mpcvit_client::page;
use mpcvit_client::{CONNECT_TIMEOUT, Client, ClientAuth, ClientError, Inference, RemoteModel};
use mpcvit_server::local::{LocalCluster, LocalOptions, LocalWeb};
use mpcvit_server::tls::{Role, TlsMaterial};
use mpcvit_server::web::WebTokens;

/// Private inference with mpcvit: your image is split into two random
/// shares, one per server; neither server sees it or the result.
#[derive(Debug, Parser)]
#[command(name = "mpcvit-client", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Classify an image, or every image in a folder.
    Infer(InferArgs),
    /// List the models both parties serve.
    Models(Conn),
    /// Local mode for a browser: start the dealer and both parties in this
    /// process with their web listeners, serve the web page on 127.0.0.1,
    /// and print its URL (with a fresh web token in its fragment).
    Web(WebArgs),
    /// Serve the web page for deployed parties, naming their web listeners.
    Page(PageArgs),
    /// Print the fixed-point input tensor this client would share for an
    /// image (JSON), to check another client's preprocessing against.
    Preprocess(PreprocessArgs),
}

/// Which model the local mode serves.
#[derive(Debug, Args, Clone)]
struct LocalModel {
    /// Local mode: a plaintext model directory (`manifest.json` +
    /// `model.safetensors`) to split and serve [default: the bundled
    /// fashion-mnist-mu0.5, trained by this project on Fashion-MNIST].
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Local mode: instead, a model of the paper's size with deterministic
    /// random weights (`vit_7_4_32_mu05`, `vit_7_4_32`, `vit_9_12_64_mu05`,
    /// `vit_9_12_64`, `small`): for timing, its labels mean nothing.
    #[arg(long, conflicts_with = "model_dir")]
    preset: Option<String>,
    /// Local mode: the random model's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Args, Clone)]
struct WebArgs {
    /// The page's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    local: LocalModel,
}

#[derive(Debug, Args, Clone)]
struct PageArgs {
    /// Address to serve the page on.
    #[arg(long, env = "MPCVIT_PAGE_LISTEN", default_value = "127.0.0.1:15480")]
    listen: String,
    /// Party 0's web listener as browsers dial it (e.g. https://localhost:15451).
    #[arg(long, env = "MPCVIT_PARTY0_WEB")]
    party0: String,
    /// Party 1's web listener as browsers dial it.
    #[arg(long, env = "MPCVIT_PARTY1_WEB")]
    party1: String,
}

#[derive(Debug, Args, Clone)]
struct PreprocessArgs {
    /// A PNG or JPEG image.
    image: PathBuf,
    /// The model whose manifest gives size, channels and normalisation: a
    /// model directory [default: the bundled fashion-mnist-mu0.5].
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Fixed-point fractional bits (the parties' `frac_bits`).
    #[arg(long, default_value_t = FixedPoint::default().frac_bits)]
    frac_bits: u32,
}

#[derive(Debug, Args, Clone)]
struct Conn {
    /// Party 0's client API address. Without it (and --party1), a local
    /// dealer and two parties are started in this process.
    #[arg(long, env = "MPCVIT_PARTY0", requires = "party1")]
    party0: Option<String>,
    /// Party 1's client API address.
    #[arg(long, env = "MPCVIT_PARTY1", requires = "party0")]
    party1: Option<String>,
    /// Directory with `ca.pem`, `client.pem`, `client.key` (from `mpcvit-server certs`).
    #[arg(long, env = "MPCVIT_CERTS", default_value = "certs")]
    certs: PathBuf,
    /// Replica pairs behind the addresses. When `--party0`/`--party1`
    /// contain `{k}`, one pair index k in 0..N is drawn at random and put
    /// in both, so the two shares reach replicas that are paired with each
    /// other (Kubernetes: pair k is `party0-k` + `party1-k`).
    #[arg(long, env = "MPCVIT_PAIRS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pairs: u64,
    /// Use this bearer token instead of a client certificate (needs only `ca.pem`).
    #[arg(long, env = "MPCVIT_CLIENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    local: LocalModel,
    /// Seconds to wait for the parties: for connecting to each, and for
    /// each answer (a model list, one image's inference). A party that
    /// accepts but never answers fails the command with a clear error.
    #[arg(long, env = "MPCVIT_TIMEOUT", default_value_t = 120.0)]
    timeout: f64,
}

#[derive(Debug, Args, Clone)]
struct InferArgs {
    /// An image (PNG or JPEG, at most 25 megapixels) or a folder of images.
    path: PathBuf,
    /// How many classes to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// One JSON object per image on stdout, one line each, written (and
    /// flushed) as each image's result is ready.
    #[arg(long)]
    json: bool,
    /// The model to use (default: the only one served).
    #[arg(long)]
    model: Option<String>,
    /// Images in flight at once (folders).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[command(flatten)]
    conn: Conn,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mpcvit_server::telemetry::init(mpcvit_server::telemetry::LogFormat::Human, "warn");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let r = rt.block_on(async {
        match cli.command {
            Cmd::Infer(a) => infer(a).await,
            Cmd::Models(c) => models(c).await,
            Cmd::Web(a) => web(a).await,
            Cmd::Page(a) => page(a).await,
            Cmd::Preprocess(a) => preprocess(a),
        }
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Stop::StdoutClosed) => std::process::ExitCode::from(STDOUT_CLOSED),
        Err(Stop::Failed(e)) => {
            eprintln!("mpcvit-client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Exit status when stdout closed under the client: 128 + SIGPIPE, what a
/// shell reports for a process killed by a broken pipe.
const STDOUT_CLOSED: u8 = 141;

/// Why a command stopped early.
#[derive(Debug)]
enum Stop {
    /// It failed (the message goes to stderr).
    Failed(ClientError),
    /// Stdout closed: nobody reads the results any more.
    StdoutClosed,
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Self {
        Stop::Failed(e)
    }
}

/// Write one result (a line, or a few for the human form) to stdout and
/// flush it, so it is out before the next one is computed.
fn emit(text: &str) -> Result<(), Stop> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Stop::StdoutClosed,
            _ => Stop::Failed(ClientError::Io {
                path: "stdout".into(),
                source: e,
            }),
        })
}

/// Put one random pair index k in 0..pairs into both addresses' `{k}`.
fn pick_pair(a0: &str, a1: &str, pairs: u64) -> Result<(String, String), ClientError> {
    const K: &str = "{k}";
    if a0.contains(K) != a1.contains(K) {
        return Err(ClientError::Config(format!(
            "either both or neither of --party0 and --party1 contain {K} (got {a0:?} and {a1:?})"
        )));
    }
    if !a0.contains(K) {
        if pairs > 1 {
            return Err(ClientError::Config(format!(
                "--pairs {pairs} needs {K} in --party0 and --party1 (e.g. party0-{K}.party0:50051)"
            )));
        }
        return Ok((a0.to_string(), a1.to_string()));
    }
    let k = (Prg::new(&Seed::random()).next_u64() % pairs).to_string();
    Ok((a0.replace(K, &k), a1.replace(K, &k)))
}

/// A connection, and the local cluster behind it when there is one.
struct Session {
    client: Client,
    local: Option<LocalCluster>,
}

async fn connect(c: &Conn) -> Result<Session, ClientError> {
    if let (Some(a0), Some(a1)) = (&c.party0, &c.party1) {
        let (a0, a1) = &pick_pair(a0, a1, c.pairs)?;
        let auth = match &c.token {
            Some(t) => ClientAuth::Token {
                ca_pem: std::fs::read_to_string(c.certs.join("ca.pem")).map_err(|source| {
                    ClientError::Io {
                        path: c.certs.join("ca.pem").display().to_string(),
                        source,
                    }
                })?,
                token: t.clone(),
            },
            None => ClientAuth::Cert(
                TlsMaterial::load(&c.certs, Role::Client)
                    .map_err(|e| ClientError::Config(e.to_string()))?,
            ),
        };
        let timeout = Duration::from_secs_f64(c.timeout.max(0.001));
        let client = Client::connect_within([a0, a1], &auth, timeout.min(CONNECT_TIMEOUT))
            .await?
            .with_timeout(timeout);
        return Ok(Session {
            client,
            local: None,
        });
    }
    let (local, client) = start_local(&c.local, None).await?;
    let client = client.with_timeout(Duration::from_secs_f64(c.timeout.max(0.001)));
    Ok(Session {
        client,
        local: Some(local),
    })
}

/// Start the dealer and both parties in this process serving `m`'s model
/// (with web listeners when `web` is given), and wait until they are paired.
async fn start_local(
    m: &LocalModel,
    web: Option<LocalWeb>,
) -> Result<(LocalCluster, Client), ClientError> {
    let t = Instant::now();
    let (model, origin) = match (&m.model_dir, &m.preset) {
        (Some(d), _) => (model::Model::load_dir(d)?, format!("from {}", d.display())),
        (None, Some(p)) => (
            mpcvit_server::cli::random_model(p, m.seed)
                .map_err(|e| ClientError::Config(e.to_string()))?,
            format!(
                "deterministic random weights, seed {}: for timing, the labels mean nothing",
                m.seed
            ),
        ),
        (None, None) => (
            mpcvit_client::bundled_model()?,
            "bundled, trained on Fashion-MNIST".to_string(),
        ),
    };
    eprintln!(
        "local mode: dealer and both parties in this process on loopback (mutual TLS), model {} ({origin})",
        model.config().name,
    );
    let mut prg = Prg::new(&Seed::random());
    let [s0, s1] = model::secure::split_weights(&model, FixedPoint::default(), &mut prg);
    let name = model.config().name.clone();
    let opts = LocalOptions {
        pool_target: 1,
        web,
        ..LocalOptions::default()
    };
    let local = LocalCluster::start([vec![s0], vec![s1]], opts)
        .await
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let auth = ClientAuth::Cert(local.client_tls.clone());
    let client = Client::connect([&local.party_addrs[0], &local.party_addrs[1]], &auth).await?;
    client.wait_ready(&name, Duration::from_secs(600)).await?;
    eprintln!(
        "local mode: parties paired and weights masked in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok((local, client))
}

/// `mpcvit-client web`: the local parties with web listeners, and the page.
async fn web(a: WebArgs) -> Result<(), Stop> {
    let bind = |e: std::io::Error| ClientError::Config(format!("127.0.0.1:{}: {e}", a.port));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .map_err(bind)?;
    let url = page::url_of(listener.local_addr().map_err(bind)?);
    let issued = mpcvit_server::web::tokens::issue("mpcvit-client web");
    let web = LocalWeb {
        tokens: Arc::new(WebTokens::from_tokens(&[issued.token.as_str()])),
        origins: vec![page::origin(&url)],
    };
    let (local, _client) = start_local(&a.local, Some(web)).await?;
    let [w0, w1] = local
        .web_addrs
        .clone()
        .expect("web listeners were asked for");
    let parties = [format!("http://{w0}"), format!("http://{w1}")];
    eprintln!(
        "local mode: party web listeners {} and {} (plain HTTP on loopback); Ctrl-C stops",
        parties[0], parties[1]
    );
    eprintln!("open the page (the token after # stays in the browser):");
    emit(&format!("{url}#token={}", *issued.token))?;
    let served = page::serve(listener, parties, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    local.shutdown().await;
    Ok(served.map_err(|e| ClientError::Config(format!("serving the page: {e}")))?)
}

/// `mpcvit-client page`: the page for deployed parties.
async fn page(a: PageArgs) -> Result<(), Stop> {
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| ClientError::Config(format!("{}: {e}", a.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ClientError::Config(format!("{}: {e}", a.listen)))?;
    eprintln!(
        "serving the page on {} for parties {} and {}",
        page::url_of(addr),
        a.party0,
        a.party1
    );
    page::serve(
        listener,
        [a.party0, a.party1],
        mpcvit_server::cli::shutdown_signal(),
    )
    .await
    .map_err(|e| ClientError::Config(format!("serving the page: {e}")))?;
    Ok(())
}

/// `mpcvit-client preprocess`: the input tensor, in fixed point, as JSON.
fn preprocess(a: PreprocessArgs) -> Result<(), Stop> {
    let config = match &a.model_dir {
        Some(d) => {
            let path = d.join("manifest.json");
            let text = std::fs::read_to_string(&path).map_err(|source| ClientError::Io {
                path: path.display().to_string(),
                source,
            })?;
            model::ModelConfig::from_manifest_json(&text).map_err(ClientError::from)?
        }
        None => mpcvit_client::bundled_model()
            .map_err(ClientError::from)?
            .config()
            .clone(),
    };
    if !(1..=30).contains(&a.frac_bits) {
        return Err(ClientError::Config(format!("--frac-bits {}: use 1..=30", a.frac_bits)).into());
    }
    let bytes = std::fs::read(&a.image).map_err(|source| ClientError::Io {
        path: a.image.display().to_string(),
        source,
    })?;
    let input = mpcvit_client::fixed_point_input(&config, &bytes, FixedPoint::new(a.frac_bits))?;
    let v = serde_json::json!({
        "model": config.name,
        "frac_bits": a.frac_bits,
        "shape": [config.in_channels, config.image_size, config.image_size],
        "input": input.iter().map(|v| *v as i64).collect::<Vec<_>>(),
    });
    emit(&v.to_string())
}

async fn models(c: Conn) -> Result<(), Stop> {
    let s = connect(&c).await?;
    let result = async {
        for m in s.client.models().await? {
            emit(&format!(
                "{}\t{}x{}x{} -> {} classes\tready={}\tpool={}",
                m.info.name,
                m.config.in_channels,
                m.config.image_size,
                m.config.image_size,
                m.config.num_classes,
                m.info.ready,
                m.info.pool_available
            ))?;
        }
        Ok(())
    }
    .await;
    if let Some(l) = s.local {
        l.shutdown().await;
    }
    result
}

fn images_in(path: &Path) -> Result<Vec<PathBuf>, ClientError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|source| ClientError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn mb(b: u64) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

fn report(path: &Path, m: &RemoteModel, r: &Inference, top: usize, json: bool) -> String {
    let best = r.top(&m.config, top);
    if json {
        let v = serde_json::json!({
            "image": path.display().to_string(),
            "model": m.info.name,
            "top": best.iter().map(|(i, l, p)| serde_json::json!({"class": i, "label": l, "score": p})).collect::<Vec<_>>(),
            "logits": r.logits,
            "seconds": r.elapsed.as_secs_f64(),
            "parties": r.stats.iter().map(|s| serde_json::json!({
                "bytes_sent": s.bytes_sent,
                "bytes_received": s.bytes_received,
                "rounds": s.rounds,
                "online_seconds": s.online_micros as f64 / 1e6,
                "wait_seconds": s.wait_micros as f64 / 1e6,
            })).collect::<Vec<_>>(),
            "client_bytes_sent": r.client_bytes_sent,
        });
        return v.to_string();
    }
    let mut s = format!("{}  [{}]\n", path.display(), m.info.name);
    for (rank, (i, label, p)) in best.iter().enumerate() {
        s += &format!(
            "  {}. {label:<12} {p:.3}  (class {i}, logit {:.3})\n",
            rank + 1,
            r.logits[*i]
        );
    }
    let [a, b] = &r.stats;
    s += &format!(
        "  {:.2} s end to end (party 0: {:.2} s queued for a slot and preprocessed material, {:.2} s online) · sent by party 0 {} / party 1 {} · {} rounds · client sent {}",
        r.elapsed.as_secs_f64(),
        a.wait_micros as f64 / 1e6,
        a.online_micros as f64 / 1e6,
        mb(a.bytes_sent),
        mb(b.bytes_sent),
        a.rounds,
        mb(r.client_bytes_sent)
    );
    s
}

async fn infer(a: InferArgs) -> Result<(), Stop> {
    let files = images_in(&a.path)?;
    if files.is_empty() {
        return Err(
            ClientError::Config(format!("no PNG or JPEG files in {}", a.path.display())).into(),
        );
    }
    let s = connect(&a.conn).await?;
    let m = s.client.model(a.model.as_deref()).await?;
    let result = if files.len() == 1 {
        let path = &files[0];
        match std::fs::read(path) {
            Ok(bytes) => match s.client.infer_image(&m, &bytes).await {
                Ok(r) => emit(&report(path, &m, &r, a.top, a.json)),
                Err(e) => Err(e.into()),
            },
            Err(source) => Err(Stop::Failed(ClientError::Io {
                path: path.display().to_string(),
                source,
            })),
        }
    } else {
        folder(&s.client, &m, &files, &a).await
    };
    if let Some(l) = s.local {
        l.shutdown().await;
    }
    result
}

/// Infer every image of a folder, `--concurrency` at a time, and write
/// each result as soon as it and every result before it in the folder's
/// order are ready.
async fn folder(
    client: &Client,
    m: &RemoteModel,
    files: &[PathBuf],
    a: &InferArgs,
) -> Result<(), Stop> {
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images · {elapsed} · eta {eta} {msg}")
            .expect("template"),
    );
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue = files.iter().cloned().enumerate();
    // Results that are ready while one before them is not.
    let mut ready: BTreeMap<usize, (PathBuf, Result<Inference, ClientError>)> = BTreeMap::new();
    let (mut next_out, mut failed) = (0, 0);
    loop {
        while tasks.len() < a.concurrency.max(1) {
            let Some((i, path)) = queue.next() else { break };
            let (client, m) = (client.clone(), m.clone());
            tasks.spawn(async move {
                // Off the runtime's workers: reading may block (a FIFO, a
                // network file system).
                let read = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || std::fs::read(path)).await
                };
                let read = read.unwrap_or_else(|e| Err(std::io::Error::other(e)));
                let r = match read {
                    Ok(bytes) => client.infer_image(&m, &bytes).await,
                    Err(source) => Err(ClientError::Io {
                        path: path.display().to_string(),
                        source,
                    }),
                };
                (i, path, r)
            });
        }
        let Some(j) = tasks.join_next().await else {
            break;
        };
        let (i, path, r) = j.map_err(|e| ClientError::Protocol(e.to_string()))?;
        bar.inc(1);
        ready.insert(i, (path, r));
        while let Some((path, r)) = ready.remove(&next_out) {
            next_out += 1;
            match r {
                Ok(r) => bar.suspend(|| emit(&report(&path, m, &r, a.top, a.json)))?,
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("{}: {e}", path.display()));
                }
            }
        }
    }
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} images in {secs:.1} s ({:.2} images/s), {failed} failed",
        files.len(),
        files.len() as f64 / secs
    );
    if failed > 0 {
        return Err(ClientError::Protocol(format!("{failed} images failed")).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pick_pair;

    #[test]
    fn pick_pair_puts_one_index_in_both_addresses() {
        let mut seen = [false; 3];
        for _ in 0..200 {
            let (a0, a1) =
                pick_pair("party0-{k}.party0:50051", "party1-{k}.party1:50052", 3).unwrap();
            let k0 = a0
                .strip_prefix("party0-")
                .unwrap()
                .split('.')
                .next()
                .unwrap();
            let k1 = a1
                .strip_prefix("party1-")
                .unwrap()
                .split('.')
                .next()
                .unwrap();
            assert_eq!(k0, k1);
            seen[k0.parse::<usize>().unwrap()] = true;
        }
        assert_eq!(seen, [true; 3], "every pair is used");
        assert_eq!(
            pick_pair("h0:1", "h1:2", 1).unwrap(),
            ("h0:1".to_string(), "h1:2".to_string())
        );
        assert!(pick_pair("p0-{k}:1", "h1:2", 2).is_err());
        assert!(pick_pair("h0:1", "h1:2", 2).is_err());
    }
}

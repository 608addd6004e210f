//! A model's accuracy under MPC, measured: Fashion-MNIST test images sent
//! through running services (two parties and a dealer, real gRPC with mutual
//! TLS) by a few concurrent clients, each secure result compared with the
//! plaintext model's (`Model::forward`) and with the true label.
//!
//! The first `images` test images are used, in order, so that runs with the
//! same count compare the same images. An image whose inference fails stops
//! the run with that image's index in the error: a failure is a finding, not
//! a sample to leave out.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use model::Model;
use mpc_core::{FixedPoint, Prg, Seed};
use mpcvit_server::ServerError;
use mpcvit_server::local::{LocalCluster, LocalOptions};

use crate::fashion_mnist::{DatasetError, TestSplit};
use crate::{Client, ClientAuth, ClientError, RemoteModel};

/// The largest |secure − plaintext| logit difference accepted for one image
/// (the bound the server tests hold every secure inference to).
pub const LOGIT_TOLERANCE: f32 = 0.05;

/// How long to wait for both parties to be paired and the weights masked.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// What to run.
#[derive(Clone, Debug)]
pub struct AccuracyOptions {
    /// How many test images, from the first (at most the split's size).
    pub images: usize,
    /// Clients sending images at once, each with its own connections.
    pub clients: usize,
    /// Show progress on stderr: a bar on a terminal, otherwise a line every
    /// 5% of the images.
    pub progress: bool,
}

impl Default for AccuracyOptions {
    fn default() -> Self {
        AccuracyOptions {
            images: 10_000,
            clients: 4,
            progress: false,
        }
    }
}

/// One test image's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageResult {
    /// Index in the test split.
    pub index: usize,
    /// The true class.
    pub label: usize,
    /// Top-1 class of the secure logits.
    pub secure_top1: usize,
    /// Top-1 class of the plaintext logits.
    pub plain_top1: usize,
    /// max over classes of |secure − plaintext logit|.
    pub max_logit_diff: f32,
}

/// The outcome of a run: every image's result and the run's wall time.
#[derive(Clone, Debug)]
pub struct AccuracyReport {
    /// The model's name.
    pub model: String,
    /// Clients that sent images at once.
    pub clients: usize,
    /// One result per image, by index.
    pub results: Vec<ImageResult>,
    /// Wall time from the first image sent to the last result (the
    /// cluster's start and the weights' masking excluded).
    pub elapsed: Duration,
}

impl AccuracyReport {
    /// Number of images.
    pub fn images(&self) -> usize {
        self.results.len()
    }

    /// Images whose secure top-1 is the true label.
    pub fn secure_correct(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.secure_top1 == r.label)
            .count()
    }

    /// Images whose plaintext top-1 is the true label.
    pub fn plain_correct(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.plain_top1 == r.label)
            .count()
    }

    /// Images whose secure and plaintext top-1 are the same class.
    pub fn agreements(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.secure_top1 == r.plain_top1)
            .count()
    }

    /// The images whose secure and plaintext top-1 differ.
    pub fn disagreements(&self) -> Vec<&ImageResult> {
        self.results
            .iter()
            .filter(|r| r.secure_top1 != r.plain_top1)
            .collect()
    }

    /// The image with the largest |secure − plaintext| logit difference.
    pub fn worst(&self) -> Option<&ImageResult> {
        self.results
            .iter()
            .max_by(|a, b| a.max_logit_diff.total_cmp(&b.max_logit_diff))
    }

    /// The images whose logits differ from the plaintext ones by more than
    /// [`LOGIT_TOLERANCE`].
    pub fn beyond_tolerance(&self) -> Vec<&ImageResult> {
        self.results
            .iter()
            .filter(|r| r.max_logit_diff > LOGIT_TOLERANCE || r.max_logit_diff.is_nan())
            .collect()
    }

    fn fraction(&self, n: usize) -> f64 {
        n as f64 / self.images().max(1) as f64
    }

    /// Secure accuracy, 0 to 1.
    pub fn secure_accuracy(&self) -> f64 {
        self.fraction(self.secure_correct())
    }

    /// Plaintext accuracy on the same images, 0 to 1.
    pub fn plain_accuracy(&self) -> f64 {
        self.fraction(self.plain_correct())
    }

    /// Top-1 agreement of secure and plaintext, 0 to 1.
    pub fn agreement(&self) -> f64 {
        self.fraction(self.agreements())
    }

    /// Images completed per second of wall time.
    pub fn images_per_second(&self) -> f64 {
        self.images() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The figures as a Markdown table, then the images where secure and
    /// plaintext disagree and those beyond [`LOGIT_TOLERANCE`].
    pub fn markdown(&self) -> String {
        let pct = |n: usize| format!("{:.2}% ({n})", 100.0 * self.fraction(n));
        let worst = self
            .worst()
            .map(|w| format!("{:.1e} (image {})", w.max_logit_diff, w.index))
            .unwrap_or_else(|| "-".into());
        let secs = self.elapsed.as_secs_f64();
        let mut s = String::from(
            "| model | images | clients | secure accuracy | plaintext accuracy | top-1 agreement | worst logit diff | images/s | wall |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {worst} | {:.2} | {}m {:02}s |\n",
            self.model,
            self.images(),
            self.clients,
            pct(self.secure_correct()),
            pct(self.plain_correct()),
            pct(self.agreements()),
            self.images_per_second(),
            (secs / 60.0).floor(),
            secs.round() as u64 % 60,
        );
        let dis = self.disagreements();
        if dis.is_empty() {
            s += "\nSecure and plaintext top-1 agree on every image.\n";
        } else {
            s += "\n| image | label | secure top-1 | plaintext top-1 | max logit diff |\n|---|---|---|---|---|\n";
            for r in dis {
                s += &format!(
                    "| {} | {} | {} | {} | {:.1e} |\n",
                    r.index, r.label, r.secure_top1, r.plain_top1, r.max_logit_diff
                );
            }
        }
        let beyond = self.beyond_tolerance();
        if !beyond.is_empty() {
            s += &format!(
                "\nLogits further than {LOGIT_TOLERANCE} from the plaintext ones:\n\n| image | label | secure top-1 | plaintext top-1 | max logit diff |\n|---|---|---|---|---|\n"
            );
            for r in beyond {
                s += &format!(
                    "| {} | {} | {} | {} | {:.1e} |\n",
                    r.index, r.label, r.secure_top1, r.plain_top1, r.max_logit_diff
                );
            }
        }
        s
    }
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum AccuracyError {
    /// The test split could not be read.
    #[error("{0}")]
    Dataset(#[from] DatasetError),
    /// The plaintext model failed (or an image did not fit it).
    #[error("{0}")]
    Model(#[from] model::ModelError),
    /// The local cluster did not start.
    #[error("starting the local cluster: {0}")]
    Server(#[from] ServerError),
    /// Connecting, or an image's secure inference, failed.
    #[error("{}{source}", .image.map(|i| format!("test image {i}: ")).unwrap_or_default())]
    Client {
        /// The image, when one was being inferred.
        image: Option<usize>,
        /// The cause.
        #[source]
        source: ClientError,
    },
    /// Invalid settings.
    #[error("{0}")]
    Config(String),
}

fn client_err(image: Option<usize>) -> impl FnOnce(ClientError) -> AccuracyError {
    move |source| AccuracyError::Client { image, source }
}

/// Index of the largest value (the first of equal ones).
pub fn top1(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Starts the dealer and both parties in this process on loopback (real
/// gRPC, mutual TLS with certificates made in memory; the client's local
/// mode), serves `model` split into fresh shares, runs [`evaluate`] against
/// them, and stops them.
pub async fn evaluate_local(
    model: Arc<Model>,
    data: Arc<TestSplit>,
    opts: &AccuracyOptions,
) -> Result<AccuracyReport, AccuracyError> {
    let clients = opts.clients.max(1);
    let mut prg = Prg::new(&Seed::random());
    let [s0, s1] = model::secure::split_weights(&model, FixedPoint::default(), &mut prg);
    let local = LocalCluster::start(
        [vec![s0], vec![s1]],
        LocalOptions {
            pool_target: clients as u64,
            max_sessions: clients,
            ..LocalOptions::default()
        },
    )
    .await?;
    let auth = ClientAuth::Cert(local.client_tls.clone());
    let addrs = local.party_addrs.clone();
    let r = evaluate([&addrs[0], &addrs[1]], &auth, model, data, opts).await;
    local.shutdown().await;
    r
}

/// Sends the first `opts.images` test images through the parties at
/// `addrs` (which serve `model` under its name), `opts.clients` clients at
/// once, and compares each secure result with `model`'s plaintext forward
/// and the true label.
pub async fn evaluate(
    addrs: [&str; 2],
    auth: &ClientAuth,
    model: Arc<Model>,
    data: Arc<TestSplit>,
    opts: &AccuracyOptions,
) -> Result<AccuracyReport, AccuracyError> {
    let n = opts.images;
    if n == 0 || n > data.len() {
        return Err(AccuracyError::Config(format!(
            "images must be 1 to {} (the test split's size), not {n}",
            data.len()
        )));
    }
    let clients = opts.clients.clamp(1, n);
    let name = model.config().name.clone();
    let first = Client::connect(addrs, auth)
        .await
        .map_err(client_err(None))?;
    let remote = first
        .wait_ready(&name, READY_TIMEOUT)
        .await
        .map_err(client_err(None))?;
    let mut conns = vec![first];
    for _ in 1..clients {
        conns.push(
            Client::connect(addrs, auth)
                .await
                .map_err(client_err(None))?,
        );
    }

    let progress = Progress::new(opts.progress, n);
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in conns {
        let (model, data, remote, next) =
            (model.clone(), data.clone(), remote.clone(), next.clone());
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(out);
                }
                out.push(one_image(&client, &remote, &model, &data, i).await?);
                progress.done(t);
            }
        });
    }
    let mut results = Vec::with_capacity(n);
    while let Some(j) = tasks.join_next().await {
        match j {
            Ok(Ok(r)) => results.extend(r),
            Ok(Err(e)) => {
                tasks.abort_all();
                progress.finish();
                return Err(e);
            }
            Err(e) => {
                tasks.abort_all();
                progress.finish();
                return Err(AccuracyError::Config(format!("a client task failed: {e}")));
            }
        }
    }
    let elapsed = t.elapsed();
    progress.finish();
    results.sort_by_key(|r| r.index);
    Ok(AccuracyReport {
        model: name,
        clients,
        results,
        elapsed,
    })
}

/// Image `i` through the parties and through the plaintext model (on a
/// blocking thread, beside the secure inference).
async fn one_image(
    client: &Client,
    remote: &RemoteModel,
    model: &Arc<Model>,
    data: &TestSplit,
    i: usize,
) -> Result<ImageResult, AccuracyError> {
    let input = model::preprocess_image(model.config(), &data.dynamic_image(i))?;
    let plain = {
        let (model, input) = (model.clone(), input.clone());
        tokio::task::spawn_blocking(move || model.forward(&input))
    };
    let secure = client
        .infer(remote, &input)
        .await
        .map_err(client_err(Some(i)))?;
    let plain = plain
        .await
        .map_err(|e| AccuracyError::Config(format!("plaintext forward of image {i}: {e}")))??;
    if plain.len() != secure.logits.len() {
        return Err(AccuracyError::Config(format!(
            "test image {i}: {} secure logits, {} plaintext",
            secure.logits.len(),
            plain.len()
        )));
    }
    let max_logit_diff = plain
        .iter()
        .zip(&secure.logits)
        .map(|(p, s)| (p - s).abs())
        .fold(0.0f32, |m, d| if d > m || d.is_nan() { d } else { m });
    Ok(ImageResult {
        index: i,
        label: usize::from(data.labels[i]),
        secure_top1: top1(&secure.logits),
        plain_top1: top1(&plain),
        max_logit_diff,
    })
}

/// Progress on stderr: a bar on a terminal, otherwise a line every 5%.
#[derive(Clone, Debug)]
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    done: Arc<AtomicUsize>,
    total: usize,
}

impl Progress {
    fn new(enabled: bool, total: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (enabled && tty).then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} images · {per_sec} · {elapsed} · eta {eta}",
                )
                .expect("template"),
            );
            b
        });
        Progress {
            bar,
            lines: enabled && !tty,
            done: Arc::new(AtomicUsize::new(0)),
            total,
        }
    }

    fn done(&self, start: Instant) {
        let d = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        let step = (self.total / 20).max(1);
        if self.lines && (d.is_multiple_of(step) || d == self.total) {
            let s = start.elapsed().as_secs_f64();
            eprintln!(
                "{d}/{} images in {s:.0} s ({:.2} images/s)",
                self.total,
                d as f64 / s
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

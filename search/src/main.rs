//! `mpcvit-search`: train the Softmax teacher, search the MPC-friendly attention (and
//! MPCViT+ GeLU linearisation), retrain with distillation, export and evaluate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use model::{AttnKind, Model, ModelConfig};
use search::data::{DatasetKind, Splits};
use search::export::{
    binarize_alpha, binarized, binarized_by, check_ratio, describe, export_dir, kept, random_alpha,
};
use search::train::{self, EpochStats, Objective, RunOptions, TrainConfig};
use search::vit::{SearchSpace, Vit, init_weights};
use search::{Error, Result};

#[derive(Debug, Parser)]
#[command(
    name = "mpcvit-search",
    version,
    about = "MPC-aware architecture search and training of MPCViT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the all-Softmax ViT (the distillation teacher) and export it to --out.
    TrainTeacher {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        arch: ArchArgs,
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        out: OutArgs,
        /// Start from this all-Softmax model directory's weights (a further cosine cycle
        /// for a teacher that is still improving) instead of a fresh initialisation; its
        /// shapes and normalisation override the architecture flags.
        #[arg(long)]
        init: Option<PathBuf>,
    },
    /// Search: train with a relaxed per-head alpha (and with --plus a per-token beta)
    /// under an L1 penalty; writes the checkpoint and search.json to --out.
    Search {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        arch: ArchArgs,
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        out: OutArgs,
        /// Start from this model directory's weights (e.g. the teacher) instead of a
        /// fresh initialisation; its shapes override the architecture flags.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Also search MPCViT+'s per-token beta (GeLU linearisation).
        #[arg(long)]
        plus: bool,
        /// λ of the L1 penalty on alpha.
        #[arg(long, default_value_t = 1e-4)]
        lambda: f64,
        /// λ of the L1 penalty on beta.
        #[arg(long, default_value_t = 1e-4)]
        lambda_beta: f64,
        /// JSON file with a per-head cost `[[c; heads]; depth]` weighting the alpha
        /// penalty (e.g. measured secure latency saved by ScaleAttn); normalised to mean 1.
        #[arg(long, conflicts_with = "cost")]
        head_cost: Option<PathBuf>,
        /// The engine's per-head and per-block latency costs on a link, written by
        /// `mpcvit-search cost --out` (replaces --head-cost).
        #[arg(long)]
        cost: Option<PathBuf>,
        /// Learning-rate multiplier of alpha and beta.
        #[arg(long, default_value_t = 1.0)]
        arch_lr_scale: f64,
        /// Project alpha and beta into [0, 1] after every step.
        #[arg(long)]
        clamp: bool,
        /// A budget: adapt the alpha penalty after every step so that the mean alpha
        /// settles at this ratio μ (the fraction of heads to keep as ReLU-Softmax).
        #[arg(long)]
        target_mu: Option<f64>,
        /// How fast the budget adapts the penalty (its multiplier changes by
        /// exp(rate·(mean alpha − μ)) per step).
        #[arg(long, default_value_t = 0.05)]
        budget_rate: f64,
        /// End a budgeted search with a commitment phase from this fraction of its steps
        /// on: each alpha is pushed away from the cut, with a push rising linearly to
        /// --commit-strength, so the alphas end at 0 or 1 on the loss's ranking.
        #[arg(long, requires = "target_mu")]
        commit_from: Option<f64>,
        /// The commitment phase's final push per step, in units of the alphas' learning rate.
        #[arg(long, default_value_t = 4.0)]
        commit_strength: f64,
    },
    /// How far searches agree: for each ratio μ, the fraction of the heads one search
    /// keeps that each other keeps too, and each search's gap at the cut.
    Agree {
        /// Search run directories (each with search.json); the first is the reference.
        #[arg(long = "search", required = true, num_args = 1..)]
        searches: Vec<PathBuf>,
        /// Ratios μ to compare at.
        #[arg(long, default_values_t = [0.1, 0.3, 0.5, 0.7])]
        mu: Vec<f64>,
    },
    /// Binarise a search (top round(μ·L·H) heads ReLU-Softmax) and retrain with
    /// knowledge distillation from the teacher; exports to --out.
    Retrain {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        out: OutArgs,
        /// The search run's directory (its checkpoint).
        #[arg(long)]
        search: PathBuf,
        /// The teacher's model directory.
        #[arg(long)]
        teacher: PathBuf,
        /// Fraction μ of heads kept as ReLU-Softmax.
        #[arg(long)]
        mu: f64,
        /// MPCViT+: fraction of (block, token) pairs that keep GeLU (when the search had
        /// --plus); 1 keeps GeLU everywhere, i.e. plain MPCViT without beta masks.
        #[arg(long, default_value_t = 0.5)]
        beta_keep: f64,
        /// Starting weights: the search's, the teacher's, or a fresh initialisation (the paper's code).
        #[arg(long, value_enum, default_value_t = Init::Search)]
        init: Init,
        /// Ignore the search's ranking: keep a uniformly random set of round(μ·L·H)
        /// heads drawn from this seed (the ablation's random masks; same weights).
        #[arg(long)]
        random_mask: Option<u64>,
        /// Weight of the hard-label cross-entropy.
        #[arg(long, default_value_t = 1.0)]
        ce: f64,
        /// Weight of the logit distillation (soft cross-entropy against the teacher).
        #[arg(long, default_value_t = 1.0)]
        kd: f64,
        /// Distillation temperature.
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Weight of the token-feature MSE against the teacher's final-norm features.
        #[arg(long, default_value_t = 1.0)]
        feat: f64,
    },
    /// Export a checkpoint directory to a model directory (a search checkpoint needs --mu).
    Export {
        /// Directory holding checkpoint.json and checkpoint.safetensors.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output model directory.
        #[arg(long)]
        out: PathBuf,
        /// For a search checkpoint: fraction of heads kept as ReLU-Softmax.
        #[arg(long)]
        mu: Option<f64>,
        /// For a --plus search checkpoint: fraction of tokens that keep GeLU.
        #[arg(long)]
        beta_keep: Option<f64>,
        /// The model's name in its manifest (what servers serve it as and clients
        /// ask for) [default: the architecture, e.g. vit_4_4_28].
        #[arg(long)]
        name: Option<String>,
    },
    /// Test accuracy of a model directory; --plain N also runs the `model` crate's
    /// plaintext forward on the first N test images and reports the largest logit difference.
    Eval {
        /// The model directory.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, default_value_t = 0)]
        plain: usize,
    },
    /// Latency of head masks on a link model, from the secure engine's counts (plan
    /// recorder) and measured stage times; with --out, the per-head and per-block costs
    /// of the first mask for `search --cost`.
    Cost {
        /// The network: a model directory (its manifest: shapes, head table, MPCViT+ beta masks).
        #[arg(long)]
        model: PathBuf,
        /// Masks to evaluate: `model` (the directory's table), `softmax`, `relu-softmax`,
        /// `scale-attn`, rows of 1 (ReLU-Softmax) / 0 (ScaleAttn) / s (Softmax) such as
        /// `0000,1011,1010,0111`, or a JSON file (table or manifest).
        #[arg(long = "mask", default_value = "model")]
        masks: Vec<String>,
        /// Also the mask a search binarises at --mu (its directory's search.json), first.
        #[arg(long, requires = "mu")]
        search: Option<PathBuf>,
        /// Fraction μ of ReLU-Softmax heads for --search.
        #[arg(long, requires = "search")]
        mu: Option<f64>,
        /// Link models: none (compute only), lan (0.25 ms, 1 Gbit/s), wan (20 ms,
        /// 400 Mbit/s) or DELAY_MS,MBIT (one way; MBIT 0 = no limit).
        #[arg(long = "link", default_value = "wan")]
        links: Vec<mpcvit_bench::Link>,
        /// Write the first mask's per-head and per-block costs on the (one) link here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stage times of this machine: read, and extended with what is measured
        /// (default: measured in this process and not kept).
        #[arg(long)]
        timings: Option<PathBuf>,
        /// Forwards per stage-time measurement (the least time is kept).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Also print rounds and bytes by operator kind.
        #[arg(long)]
        by_op: bool,
    },
    /// Accuracy against secure-inference cost: for every model directory, the
    /// test accuracy and one secure inference measured in this process (both
    /// parties as threads, in-memory channel); prints a Markdown table and
    /// writes the figure (SVG) and the numbers (JSON).
    Pareto {
        /// Model directories; a model whose heads are all Softmax is the baseline.
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        /// The figure.
        #[arg(long, default_value = "pareto.svg")]
        svg: PathBuf,
        /// The numbers.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Title of the figure.
        #[arg(
            long,
            default_value = "MPCViT on Fashion-MNIST: accuracy vs secure inference cost"
        )]
        title: String,
        /// Rows of `examples/e2e --model-dir DIR --csv FILE` runs (three processes, per
        /// link; `scripts/pareto.sh` makes them): the latencies of the table and the
        /// figure's WAN axis. Every model needs at least one row.
        #[arg(long)]
        e2e: Option<PathBuf>,
        /// The paper's points (`bench/paper.csv`) for the figure's shape panel (with --e2e).
        #[arg(long, requires = "e2e")]
        paper: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Init {
    Search,
    Teacher,
    Scratch,
}

#[derive(Debug, Args)]
struct DataArgs {
    /// The data set.
    #[arg(long, value_enum, default_value_t = DatasetKind::FashionMnist)]
    dataset: DatasetKind,
    /// Its directory (default for fashion-mnist: the Debian package's).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Image side for --dataset folder.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Channels (1 or 3) for --dataset folder.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Use only the first N training examples.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test examples.
    #[arg(long)]
    test_limit: Option<usize>,
}

impl DataArgs {
    fn load(&self) -> Result<Splits> {
        let dir = match (&self.data, self.dataset.default_dir()) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => PathBuf::from(d),
            (None, None) => {
                return Err(Error::Unsupported(format!(
                    "--data DIR is needed for {:?}",
                    self.dataset
                )));
            }
        };
        let t = Instant::now();
        let mut s = self.dataset.load(&dir, self.image_size, self.channels)?;
        if let Some(n) = self.train_limit {
            s.train = s.train.take(n);
        }
        if let Some(n) = self.test_limit {
            s.test = s.test.take(n);
        }
        eprintln!(
            "data: {:?} from {}: {} train, {} test, {}×{}×{}, mean {:?} std {:?} ({:.1} s)",
            self.dataset,
            dir.display(),
            s.train.len(),
            s.test.len(),
            s.train.channels,
            s.train.height,
            s.train.width,
            s.norm.mean,
            s.norm.std,
            t.elapsed().as_secs_f64()
        );
        Ok(s)
    }
}

#[derive(Debug, Args)]
struct ArchArgs {
    /// Patch side (kernel = stride of the tokenizer conv).
    #[arg(long, default_value_t = 4)]
    patch: usize,
    /// Embedding width C.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Transformer blocks L.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Heads per block H.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// FFN hidden width.
    #[arg(long, default_value_t = 128)]
    mlp: usize,
}

impl ArchArgs {
    fn config(&self, data: &Splits, kind: AttnKind) -> ModelConfig {
        let t = &data.train;
        ModelConfig {
            name: format!("vit_{}_{}_{}", self.depth, self.heads, t.height),
            image_size: t.height,
            in_channels: t.channels,
            patch_size: self.patch,
            dim: self.dim,
            depth: self.depth,
            heads: self.heads,
            mlp_hidden: self.mlp,
            num_classes: t.classes.len(),
            layer_norm_eps: model::config::PAPER_LAYER_NORM_EPS,
            relu_softmax_eps: model::config::PAPER_RELU_SOFTMAX_EPS,
            mean: data.norm.mean.clone(),
            std: data.norm.std.clone(),
            labels: t.classes.clone(),
            gelu: model::GeluKind::Erf,
            attention: vec![vec![kind; self.heads]; self.depth],
            beta: vec![None; self.depth],
        }
    }
}

#[derive(Debug, Args)]
struct TrainArgs {
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1e-5)]
    min_lr: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_epochs: f64,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Random-crop padding (0 disables the crop).
    #[arg(long, default_value_t = 2)]
    crop_pad: usize,
    /// Disable the random horizontal flip (it is always off for digits).
    #[arg(long)]
    no_flip: bool,
    /// Evaluate on the test set every N epochs (and after the last).
    #[arg(long, default_value_t = 1)]
    eval_every: usize,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_epochs: self.warmup_epochs,
            weight_decay: self.weight_decay,
            label_smoothing: self.label_smoothing,
            seed: self.seed,
            crop_pad: self.crop_pad,
            flip: !self.no_flip,
            eval_batch: 500,
            eval_every: self.eval_every,
        }
    }
}

#[derive(Debug, Args)]
struct OutArgs {
    /// Output directory: checkpoint (every epoch), exported model, train.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl OutArgs {
    fn run(&self) -> RunOptions {
        RunOptions {
            checkpoint_dir: Some(self.out.clone()),
            resume: self.resume,
            progress: !self.quiet,
            verbose: true,
        }
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Checkpoint(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What the commitment phase changed (read from the search's checkpoint): the alphas
/// when it began, the gap the loss had made at the budget's cut by then, and how many of
/// the heads kept at the end were already the top ones at its start.
fn commit_start_report(
    out: &Path,
    alpha: &[Vec<f32>],
    mu: f64,
) -> Result<Option<serde_json::Value>> {
    let (meta, _) = train::load_checkpoint(out)?;
    let Some(start) = meta.commit_start_alpha else {
        return Ok(None);
    };
    let start = vec![start];
    let gap = search::decision::cut_gap(&start, mu);
    let flat = vec![alpha.iter().flatten().copied().collect::<Vec<f32>>()];
    let same = search::decision::agreement(&flat, &start, mu);
    if let (Some(g), Some(a)) = (gap, same) {
        println!(
            "commitment phase: the gap at μ = {mu} was {g:.4} when it began; \
             {:.0}% of the kept heads were the top ones then",
            100.0 * a
        );
    }
    Ok(Some(serde_json::json!({
        "alpha": start[0],
        "gap": gap,
        "kept_unchanged": same,
    })))
}

fn finish(
    out: &Path,
    vit: &Vit,
    history: &[EpochStats],
    stage: &str,
    extra: serde_json::Value,
) -> Result<()> {
    println!(
        "\n{stage}: {}\n{}",
        describe(vit.config()),
        train::summary_table(history)
    );
    let total: f64 = history.iter().map(|h| h.train_seconds).sum();
    let acc = history.last().and_then(|h| h.test_acc);
    println!(
        "{} epochs, {:.0} s of training ({:.1} s/epoch), final test accuracy {}",
        history.len(),
        total,
        total / history.len().max(1) as f64,
        acc.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a))
    );
    let summary = serde_json::json!({
        "stage": stage,
        "architecture": describe(vit.config()),
        "test_acc": acc,
        "seconds_per_epoch": total / history.len().max(1) as f64,
        "history": history,
        "extra": extra,
    });
    write_json(&out.join("train.json"), &summary)
}

/// A searched network restored from a search checkpoint directory.
fn load_searched(dir: &Path) -> Result<Vit> {
    let (meta, tensors) = train::load_checkpoint(dir)?;
    if meta.stage != "search" {
        return Err(Error::Checkpoint(format!(
            "{} is a {} checkpoint, not a search",
            dir.display(),
            meta.stage
        )));
    }
    let space = SearchSpace {
        alpha: meta.search_alpha,
        beta: meta.search_beta,
    };
    let vit = Vit::new(&meta.model, space, 0, true)?;
    vit.load_params(&tensors)?;
    Ok(vit)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::TrainTeacher {
            data,
            arch,
            train,
            out,
            init,
        } => {
            let mut d = data.load()?;
            let tc = train.config();
            let vit = match &init {
                Some(dir) => {
                    let m = Model::load_dir(dir)?;
                    let cfg = m.config();
                    if cfg
                        .attention
                        .iter()
                        .flatten()
                        .any(|&k| k != AttnKind::Softmax)
                        || cfg.beta.iter().any(Option::is_some)
                    {
                        return Err(Error::Unsupported(format!(
                            "--init {}: a teacher starts from an all-Softmax model without beta masks",
                            dir.display()
                        )));
                    }
                    use_model_normalisation(&mut d, cfg);
                    Vit::from_weights(cfg, m.weights(), SearchSpace::default(), None, true)?
                }
                None => Vit::new(
                    &arch.config(&d, AttnKind::Softmax),
                    SearchSpace::default(),
                    tc.seed,
                    true,
                )?,
            };
            eprintln!(
                "teacher: {} ({} parameters)",
                describe(vit.config()),
                count(&vit)
            );
            let history = train::train(&vit, &d, &tc, &Objective::Supervised, &out.run())?;
            export_dir(&vit, &out.out)?;
            let extra = serde_json::json!({ "init": init });
            finish(&out.out, &vit, &history, "teacher", extra)
        }
        Command::Search {
            data,
            arch,
            train,
            out,
            init,
            plus,
            lambda,
            lambda_beta,
            head_cost,
            arch_lr_scale,
            clamp,
            target_mu,
            budget_rate,
            commit_from,
            commit_strength,
            cost,
        } => {
            if let Some(mu) = target_mu {
                check_ratio("--target-mu", mu)?;
            }
            let commit = match commit_from {
                Some(from) if !(0.0..1.0).contains(&from) => {
                    return Err(Error::Unsupported(format!(
                        "--commit-from {from}: a fraction of the search's steps in [0, 1)"
                    )));
                }
                Some(_) if !(commit_strength.is_finite() && commit_strength > 0.0) => {
                    return Err(Error::Unsupported(format!(
                        "--commit-strength {commit_strength}: must be a positive number"
                    )));
                }
                Some(from) => Some(train::Commit {
                    from,
                    strength: commit_strength,
                }),
                None => None,
            };
            if !(budget_rate.is_finite() && budget_rate > 0.0) {
                return Err(Error::Unsupported(format!(
                    "--budget-rate {budget_rate}: must be a positive number"
                )));
            }
            if !(arch_lr_scale.is_finite() && arch_lr_scale > 0.0) {
                return Err(Error::Unsupported(format!(
                    "--arch-lr-scale {arch_lr_scale}: must be a positive number"
                )));
            }
            let mut d = data.load()?;
            let tc = train.config();
            let space = SearchSpace {
                alpha: true,
                beta: plus,
            };
            let vit = match &init {
                Some(dir) => {
                    let m = Model::load_dir(dir)?;
                    use_model_normalisation(&mut d, m.config());
                    let mut cfg = m.config().clone();
                    cfg.attention = vec![vec![AttnKind::ReluSoftmax; cfg.heads]; cfg.depth];
                    cfg.beta = vec![None; cfg.depth];
                    Vit::from_weights(&cfg, m.weights(), space, None, true)?
                }
                None => Vit::new(
                    &arch.config(&d, AttnKind::ReluSoftmax),
                    space,
                    tc.seed,
                    true,
                )?,
            };
            let head_cost = match head_cost {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|source| Error::Io {
                        path: p.clone(),
                        source,
                    })?;
                    Some(
                        serde_json::from_str::<Vec<Vec<f32>>>(&text)
                            .map_err(|source| Error::Json { path: p, source })?,
                    )
                }
                None => None,
            };
            let (head_cost, block_cost) = match cost {
                Some(p) => {
                    let c = vit.config();
                    let (h, b) =
                        search::cost::CostFile::read(&p, c.depth, c.heads)?.penalty_weights();
                    (Some(h), Some(b))
                }
                None => (head_cost, None),
            };
            let objective = Objective::Search {
                lambda_alpha: lambda,
                lambda_beta,
                head_cost,
                arch: train::ArchOptim {
                    lr_scale: arch_lr_scale,
                    clamp,
                    target_mu,
                    budget_rate,
                    commit,
                },
                block_cost,
            };
            eprintln!(
                "search: alpha{} over {} parameters",
                if plus { " + beta" } else { "" },
                count(&vit)
            );
            let history = train::train(&vit, &d, &tc, &objective, &out.run())?;
            let relaxed = vit.relaxed()?;
            let total = vit.config().depth * vit.config().heads;
            let preview: Vec<serde_json::Value> = PARETO_MUS
                .iter()
                .map(|&mu| {
                    let mut c = vit.config().clone();
                    c.attention = binarize_alpha(&relaxed.alpha, mu);
                    serde_json::json!({"mu": mu, "relu_softmax_heads": kept(mu, total), "attention": c.attention})
                })
                .collect();
            println!("relaxed alpha (block × head):");
            for (i, row) in relaxed.alpha.iter().enumerate() {
                println!(
                    "  block {i}: {}",
                    row.iter()
                        .map(|a| format!("{a:+.4}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            let cuts = search::decision::cuts(&relaxed.alpha, &PARETO_MUS);
            for c in &cuts {
                if let Some(g) = c.gap {
                    println!("μ = {}: {} heads kept, gap at the cut {g:.4}", c.mu, c.kept);
                }
            }
            let hist = search::decision::histogram(relaxed.alpha.iter().flatten().copied());
            println!("alpha histogram (0.1 bins): {hist:?}");
            let commit_start = match (target_mu, commit) {
                (Some(mu), Some(_)) => commit_start_report(&out.out, &relaxed.alpha, mu)?,
                _ => None,
            };
            let extra = serde_json::json!({
                "relaxed": relaxed,
                "binarised": preview,
                "lambda": lambda,
                "lambda_beta": lambda_beta,
                "arch_lr_scale": arch_lr_scale,
                "clamp": clamp,
                "target_mu": target_mu,
                "budget_rate": budget_rate,
                "commit_from": commit_from,
                "commit_strength": commit_from.map(|_| commit_strength),
                "cuts": cuts,
                "alpha_histogram": hist,
                "commit_start": commit_start,
            });
            write_json(&out.out.join("search.json"), &extra)?;
            finish(&out.out, &vit, &history, "search", extra)
        }
        Command::Retrain {
            data,
            train,
            out,
            search,
            teacher,
            mu,
            beta_keep,
            init,
            random_mask,
            ce,
            kd,
            temperature,
            feat,
        } => {
            check_ratio("--mu", mu)?;
            check_ratio("--beta-keep", beta_keep)?;
            let mut d = data.load()?;
            let tc = train.config();
            let searched = load_searched(&search)?;
            let teacher_model = Model::load_dir(&teacher)?;
            use_model_normalisation(&mut d, searched.config());
            let teacher_vit = Vit::from_model(&teacher_model, SearchSpace::default(), false)?;
            let c = searched.config();
            let random = random_mask.map(|seed| random_alpha(c.depth, c.heads, seed));
            let bin = binarized_by(&searched, random.as_deref(), mu, Some(beta_keep), true)?;
            let cfg = bin.config().clone();
            let student = match init {
                Init::Search => bin,
                Init::Teacher => Vit::from_weights(
                    &cfg,
                    teacher_model.weights(),
                    SearchSpace::default(),
                    None,
                    true,
                )?,
                Init::Scratch => Vit::from_weights(
                    &cfg,
                    &init_weights(&cfg, tc.seed),
                    SearchSpace::default(),
                    None,
                    true,
                )?,
            };
            let (tl, ta) = train::evaluate(&teacher_vit, &d.test, &d.norm, 500)?;
            let (_, sa) = train::evaluate(&student, &d.test, &d.norm, 500)?;
            eprintln!(
                "retrain μ = {mu}: {}\nteacher test accuracy {:.2}% (loss {tl:.4}); student before retraining {:.2}%",
                describe(&cfg),
                100.0 * ta,
                100.0 * sa
            );
            let objective = Objective::Distill {
                teacher: Box::new(teacher_vit),
                ce,
                kd,
                temperature,
                feat,
            };
            let history = train::train(&student, &d, &tc, &objective, &out.run())?;
            export_dir(&student, &out.out)?;
            let extra = serde_json::json!({
                "mu": mu,
                "beta_keep": beta_keep,
                "teacher_test_acc": ta,
                "init": format!("{init:?}"),
                "random_mask": random_mask,
                "attention": cfg.attention,
            });
            finish(&out.out, &student, &history, "retrain", extra)
        }
        Command::Export {
            checkpoint,
            out,
            mu,
            beta_keep,
            name,
        } => {
            for (flag, v) in [("--mu", mu), ("--beta-keep", beta_keep)] {
                if let Some(v) = v {
                    check_ratio(flag, v)?;
                }
            }
            let (mut meta, tensors) = train::load_checkpoint(&checkpoint)?;
            if let Some(n) = name {
                meta.model.name = n;
            }
            let space = SearchSpace {
                alpha: meta.search_alpha,
                beta: meta.search_beta,
            };
            let vit = Vit::new(&meta.model, space, 0, true)?;
            vit.load_params(&tensors)?;
            let vit = if space.alpha || space.beta {
                let mu = mu.ok_or_else(|| {
                    Error::Unsupported("a search checkpoint needs --mu to be binarised".into())
                })?;
                binarized(&vit, mu, beta_keep, false)?
            } else {
                vit
            };
            export_dir(&vit, &out)?;
            println!(
                "exported {} to {}: {}",
                checkpoint.display(),
                out.display(),
                describe(vit.config())
            );
            Ok(())
        }
        Command::Agree { searches, mu } => agree(&searches, &mu),
        Command::Cost {
            model,
            masks,
            search,
            mu,
            links,
            out,
            timings,
            repeats,
            by_op,
        } => cost(
            &model,
            &masks,
            search.as_deref().zip(mu),
            &links,
            out.as_deref(),
            timings.as_deref(),
            repeats,
            by_op,
        ),
        Command::Pareto {
            models,
            data,
            svg,
            json,
            title,
            e2e,
            paper,
        } => pareto(
            &models,
            &data,
            &svg,
            json.as_deref(),
            &title,
            e2e.as_deref(),
            paper.as_deref(),
        ),
        Command::Eval { model, data, plain } => {
            let mut d = data.load()?;
            let m = Model::load_dir(&model)?;
            use_model_normalisation(&mut d, m.config());
            let vit = Vit::from_model(&m, SearchSpace::default(), false)?;
            let t = Instant::now();
            let (loss, acc) = train::evaluate(&vit, &d.test, &d.norm, 500)?;
            println!(
                "{}: {}\ntest accuracy {:.2}% (loss {loss:.4}) on {} images, {:.1} s",
                model.display(),
                describe(m.config()),
                100.0 * acc,
                d.test.len(),
                t.elapsed().as_secs_f64()
            );
            if plain > 0 {
                let n = plain.min(d.test.len());
                let idx: Vec<usize> = (0..n).collect();
                let (x, _) = train::batch_tensors(&d.test, &idx, &d.norm, None)?;
                let logits: Vec<Vec<f32>> = vit.forward(&x)?.logits.to_vec2()?;
                let mut max_diff = 0f32;
                let per = d.test.image_len();
                let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
                for (i, row) in logits.iter().enumerate() {
                    let p = m.forward(&xs[i * per..(i + 1) * per])?;
                    for (a, b) in p.iter().zip(row) {
                        max_diff = max_diff.max((a - b).abs());
                    }
                }
                println!(
                    "model crate plaintext forward on {n} images: max |Δlogit| = {max_diff:.2e}"
                );
            }
            Ok(())
        }
    }
}

/// The ratios μ of the Pareto front (the paper's, and the two ends).
const PARETO_MUS: [f64; 6] = [0.0, 0.1, 0.3, 0.5, 0.7, 1.0];

/// The relaxed alphas a search run wrote to its `search.json`.
fn searched_alpha(dir: &Path) -> Result<Vec<Vec<f32>>> {
    let path = dir.join("search.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    serde_json::from_value(v["relaxed"]["alpha"].clone()).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })
}

fn agree(searches: &[PathBuf], mus: &[f64]) -> Result<()> {
    for &mu in mus {
        check_ratio("--mu", mu)?;
    }
    let tables = searches
        .iter()
        .map(|d| searched_alpha(d))
        .collect::<Result<Vec<_>>>()?;
    let reference = &tables[0];
    for &mu in mus {
        let gaps: Vec<String> = tables
            .iter()
            .map(|t| search::decision::cut_gap(t, mu).map_or("-".into(), |g| format!("{g:.4}")))
            .collect();
        let agreements: Vec<String> = tables[1..]
            .iter()
            .zip(&searches[1..])
            .map(|(t, dir)| {
                search::decision::agreement(reference, t, mu).map_or_else(
                    || format!("{}: tables differ in size", dir.display()),
                    |a| format!("{:.0}%", 100.0 * a),
                )
            })
            .collect();
        println!(
            "μ = {mu}: gaps {}; agreement with {}: {}",
            gaps.join(" "),
            searches[0].display(),
            agreements.join(" ")
        );
    }
    Ok(())
}

/// `mpcvit-search cost` (see [`search::cost`]).
#[allow(clippy::too_many_arguments)]
fn cost(
    model_dir: &Path,
    specs: &[String],
    searched: Option<(&Path, f64)>,
    links: &[mpcvit_bench::Link],
    out: Option<&Path>,
    timings: Option<&Path>,
    repeats: usize,
    by_op: bool,
) -> Result<()> {
    use search::cost::{
        CostFile, Evaluator, StageTimes, cost_table, link_name, mask_string, parse_mask,
    };
    if out.is_some() && links.len() != 1 {
        return Err(Error::Unsupported(format!(
            "--out writes the costs on one link; {} --link given",
            links.len()
        )));
    }
    let manifest = model_dir.join(model::config::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).map_err(|source| Error::Io {
        path: manifest.clone(),
        source,
    })?;
    let config = ModelConfig::from_manifest_json(&text)
        .map_err(|e| Error::Unsupported(format!("{}: {e}", manifest.display())))?;
    let mut masks = Vec::new();
    if let Some((dir, mu)) = searched {
        let mu = check_ratio("--mu", mu)?;
        let alpha = searched_alpha(dir)?;
        if alpha.len() != config.depth || alpha.iter().any(|r| r.len() != config.heads) {
            return Err(Error::Unsupported(format!(
                "{}: alphas of {} blocks of {:?} heads; the network has {} blocks of {} heads",
                dir.join("search.json").display(),
                alpha.len(),
                alpha.iter().map(Vec::len).collect::<Vec<_>>(),
                config.depth,
                config.heads
            )));
        }
        masks.push((format!("search μ = {mu}"), binarize_alpha(&alpha, mu)));
    }
    for spec in specs {
        masks.push((spec.clone(), parse_mask(spec, &config.attention)?));
    }
    let mut times = match timings {
        Some(p) => StageTimes::load(p)?,
        None => StageTimes::in_memory(),
    };
    let params = model::SecureParams::default();
    let mut eval = Evaluator::new(&config, params, repeats.max(1), &mut times)?;
    println!(
        "{}: {}; stage times of {}",
        model_dir.display(),
        describe(&config),
        search::cost::machine()
    );
    println!(
        "\n| mask | heads (block,block,…; 1 ReLU-Softmax, 0 ScaleAttn, s Softmax) | link | rounds | MB / party | dealer MB | compute s | latency s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, table) in &masks {
        let c = eval.evaluate(table)?;
        for &link in links {
            println!(
                "| {name} | {} | {} | {} | {:.2} | {:.1} | {:.3} | {:.3} |",
                mask_string(table),
                link_name(link),
                c.count.rounds,
                c.count.bytes_per_party() as f64 / 1e6,
                c.count.dealer_bytes.iter().sum::<u64>() as f64 / 1e6,
                c.compute_seconds,
                c.latency(link)
            );
        }
        if by_op {
            println!("\n| {name}: operator | rounds | MB (party 0) |\n|---|---|---|");
            for (op, oc) in &c.count.by_op {
                println!("| {op} | {} | {:.3} |", oc.rounds, oc.bytes as f64 / 1e6);
            }
            println!();
        }
    }
    if let (Some(path), Some(&link), Some((_, reference))) = (out, links.first(), masks.first()) {
        let table = cost_table(&mut eval, reference, link)?;
        let reference_latency_s = eval.latency(reference, link)?;
        println!(
            "\ncosts on {} around {} (latency {reference_latency_s:.3} s), ms:",
            link_name(link),
            mask_string(reference)
        );
        for (l, (row, b)) in table.head.iter().zip(&table.block).enumerate() {
            let heads: Vec<String> = row.iter().map(|c| format!("{:7.2}", c * 1e3)).collect();
            println!(
                "  block {l}: heads {}  block {:7.2}",
                heads.join(" "),
                b * 1e3
            );
        }
        CostFile {
            format: search::cost::COST_FORMAT.into(),
            link: link_name(link),
            reference: reference.clone(),
            reference_latency_s,
            head: table.head,
            block: table.block,
        }
        .write(path)?;
        println!("wrote {}", path.display());
    }
    drop(eval);
    eprintln!("{} stage-time measurements", times.measured());
    times.save()
}

/// Accuracy against secure-inference cost for each model directory (table, SVG, JSON).
fn pareto(
    models: &[PathBuf],
    data: &DataArgs,
    svg: &Path,
    json: Option<&Path>,
    title: &str,
    e2e: Option<&Path>,
    paper: Option<&Path>,
) -> Result<()> {
    use search::pareto::{
        Point, head_mix, markdown_table, paper_shape, secure_latencies, write_svg,
    };
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let e2e_rows = match e2e {
        Some(p) => mpcvit_bench::report::read_e2e(p).map_err(read_err(p))?,
        None => Vec::new(),
    };
    let paper = match paper {
        Some(p) => paper_shape(&mpcvit_bench::report::read_paper(p).map_err(read_err(p))?),
        None => Vec::new(),
    };
    let mut points = Vec::new();
    let mut d = data.load()?;
    for dir in models {
        let m = Model::load_dir(dir)?;
        use_model_normalisation(&mut d, m.config());
        let vit = Vit::from_model(&m, SearchSpace::default(), false)?;
        let (_, acc) = train::evaluate(&vit, &d.test, &d.norm, 500)?;
        let (x, _) = train::batch_tensors(&d.test, &[0], &d.norm, None)?;
        let image: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let cost = model::secure::measure_inference(&m, &image)?;
        let plain = m.forward(&image)?;
        let diff = plain
            .iter()
            .zip(&cost.logits)
            .fold(0f32, |a, (p, s)| a.max((p - s).abs()));
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        eprintln!(
            "{name}: test accuracy {:.2}%, secure {:.2} s, {:.1} MB/party, {} rounds (max |secure - plaintext logit| {diff:.1e})",
            100.0 * acc,
            cost.online_seconds,
            cost.bytes_per_party as f64 / 1e6,
            cost.rounds
        );
        let baseline = m
            .config()
            .attention
            .iter()
            .flatten()
            .all(|&k| k == AttnKind::Softmax);
        let secure = secure_latencies(&e2e_rows, &m.config().name);
        if let Some(p) = e2e
            && secure.is_empty()
        {
            return Err(Error::Unsupported(format!(
                "{}: no run of model {:?} (its manifest's name) in {}; \
                 search/scripts/pareto.sh runs each model through examples/e2e",
                dir.display(),
                m.config().name,
                p.display()
            )));
        }
        let heads = m.config().attention.iter().flatten().count();
        let relu_softmax = m
            .config()
            .attention
            .iter()
            .flatten()
            .filter(|&&k| k == AttnKind::ReluSoftmax)
            .count();
        points.push(Point {
            name,
            mu: relu_softmax as f64 / heads.max(1) as f64,
            secure,
            heads: head_mix(m.config()),
            test_acc: acc,
            online_seconds: cost.online_seconds,
            bytes_per_party: cost.bytes_per_party,
            rounds: cost.rounds,
            dealer_bytes: cost.dealer_bytes.iter().sum(),
            baseline,
        });
    }
    print!("{}", markdown_table(&points));
    write_svg(&points, &paper, title, svg)?;
    println!("wrote {}", svg.display());
    if let Some(j) = json {
        write_json(j, &serde_json::to_value(&points).expect("points serialise"))?;
        println!("wrote {}", j.display());
    }
    Ok(())
}

/// Normalise the data with the constants a trained network was trained with (its
/// manifest), not with statistics of the data set at hand.
fn use_model_normalisation(d: &mut Splits, config: &ModelConfig) {
    if d.norm.mean != config.mean || d.norm.std != config.std {
        eprintln!(
            "data: normalising with the model's mean {:?} std {:?}",
            config.mean, config.std
        );
    }
    d.norm = search::data::Normalize {
        mean: config.mean.clone(),
        std: config.std.clone(),
    };
}

fn count(vit: &Vit) -> usize {
    vit.params().iter().map(|(_, t)| t.elem_count()).sum()
}

/// mimalloc: candle allocates and frees tensors of megabytes at every step.
/// Run with `MIMALLOC_PURGE_DELAY=-1` to keep freed pages (about 13% less CPU
/// time in training; see the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    search::alloc::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

//! The latency of a head mask on a network link, from the secure engine's own counts,
//! and the per-head and per-block costs the search's penalty weighs the alphas with.
//!
//! For a network (shapes, MPCViT+ beta masks) and an attention table, the latency of one
//! secure inference on a link of one-way delay `δ` and bandwidth `B` per direction is
//!
//! ```text
//! latency = rounds·δ + bytes/B + compute
//! ```
//!
//! - `rounds` and `bytes` (the larger party's online bytes) come from
//!   [`model::cost::count_forward`]: the engine's program for that exact table, run
//!   under the plan recorder. Everything the engine does for the table is in them: a
//!   block whose heads are all ScaleAttn folds its projection into the heads (fewer
//!   rounds), ScaleAttn heads beside ReLU-softmax ones are projected together, the
//!   one-round ReLU for models with few ReLU-softmax scores, the last block's attention
//!   for the class token only, the linearised MPCViT+ rows.
//! - `compute` is the sum of the stages' times ([`model::cost::time_stages`]: the real
//!   two-party forward in this process, least of `repeats` runs), each stage looked up
//!   by [`model::cost::stage_keys`]: a stage measured once stands for every table in
//!   which it has the same key. [`StageTimes`] keeps them, in a file per machine when
//!   asked ([`StageTimes::load`]), else for the process only.
//! - The link models are `mpcvit_bench`'s ([`Link`]): `none` (the parties on one
//!   machine: compute only), `lan` (0.25 ms, 1 Gbit/s), `wan` (20 ms, 400 Mbit/s), or
//!   `DELAY_MS,MBIT`; the estimate is [`mpcvit_bench::LinkSpec::estimate`], the one the
//!   end-to-end benchmark prints beside its measurement.
//!
//! [`cost_table`] linearises the latency around a reference table for the search:
//! per head, the marginal latency of keeping ReLU-softmax given the rest of the table
//! (with another head of its block attending, so that no fold is crossed); per block,
//! the bonus the first attending head costs on top of that (the block's fold, lost).
//! The search's penalty is `λ·(Σ c_lh·|alpha_lh| + Σ b_l·max_h |alpha_lh|) / mean(c)`,
//! which at a binary table close to the reference is the latency up to a constant.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use model::cost::{ForwardCount, count_forward, stage_keys, time_stages};
use model::{AttnKind, ModelConfig, SecureParams};
use mpcvit_bench::Link;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `format` of a [`StageTimes`] file.
pub const STAGE_TIMES_FORMAT: &str = "mpcvit-stage-times";
/// `format` of a [`CostFile`].
pub const COST_FORMAT: &str = "mpcvit-search-cost";

/// What one inference of a table costs: the engine's counts and the measured compute.
#[derive(Clone, Debug)]
pub struct MaskCost {
    /// The recorder's counts.
    pub count: ForwardCount,
    /// Compute time of one inference (the stages' times summed), seconds.
    pub compute_seconds: f64,
}

impl MaskCost {
    /// `rounds·δ + bytes/B + compute` on `link`, seconds.
    pub fn latency(&self, link: Link) -> f64 {
        let net = link.spec().map_or(0.0, |s| {
            s.estimate(self.count.rounds, self.count.bytes_per_party())
                .as_secs_f64()
        });
        net + self.compute_seconds
    }
}

/// A short name of a link (`none`, `lan`, `wan`, or its delay and bandwidth).
pub fn link_name(link: Link) -> String {
    match link.spec() {
        None => "none".into(),
        Some(s) if s == mpcvit_bench::LinkSpec::LAN => "lan".into(),
        Some(s) if s == mpcvit_bench::LinkSpec::WAN => "wan".into(),
        Some(s) => s.describe(),
    }
}

/// Stage compute times by network and stage key, for one machine.
#[derive(Debug, Serialize, Deserialize)]
pub struct StageTimes {
    format: String,
    /// The machine the times were measured on ([`machine`]).
    pub machine: String,
    /// Seconds by network signature, then by stage key.
    pub networks: BTreeMap<String, BTreeMap<String, f64>>,
    #[serde(skip)]
    path: Option<PathBuf>,
    #[serde(skip)]
    measured: usize,
}

/// This machine as the stage times name it: CPU model, logical cores and the thread
/// pool's size (times measured under other threads are not these).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cpu}, {cores} logical cores, {} threads",
        rayon::current_num_threads()
    )
}

impl StageTimes {
    /// Times kept for this process only.
    pub fn in_memory() -> Self {
        StageTimes {
            format: STAGE_TIMES_FORMAT.into(),
            machine: machine(),
            networks: BTreeMap::new(),
            path: None,
            measured: 0,
        }
    }

    /// The times in `path` (none yet when it does not exist); [`StageTimes::save`]
    /// writes the measured ones back. A file of another machine is refused.
    pub fn load(path: &Path) -> Result<Self> {
        let mut t = Self::in_memory();
        t.path = Some(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(t),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let file: StageTimes = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if file.format != STAGE_TIMES_FORMAT {
            return Err(Error::Unsupported(format!(
                "{}: not a stage times file (format is not {STAGE_TIMES_FORMAT:?})",
                path.display()
            )));
        }
        if file.machine != t.machine {
            return Err(Error::Unsupported(format!(
                "{}: stage times of another machine ({}); this one is {}: use another file",
                path.display(),
                file.machine,
                t.machine
            )));
        }
        let bad = file
            .networks
            .values()
            .flat_map(|m| m.iter())
            .find(|(_, s)| !(s.is_finite() && **s >= 0.0));
        if let Some((key, s)) = bad {
            return Err(Error::Unsupported(format!(
                "{}: stage {key:?} has time {s}",
                path.display()
            )));
        }
        t.networks = file.networks;
        Ok(t)
    }

    /// Write the times to the file they were loaded from (nothing without one).
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(self).expect("stage times serialise");
        std::fs::write(path, text + "\n").map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })
    }

    /// Stage-time measurements run so far by this process.
    pub fn measured(&self) -> usize {
        self.measured
    }

    /// Compute time of one inference of `config`: the sum of its stages' times,
    /// measuring (`repeats` forwards) when a stage is not known yet.
    pub fn compute(
        &mut self,
        config: &ModelConfig,
        params: SecureParams,
        repeats: usize,
    ) -> Result<f64> {
        let keys = stage_keys(config, &params);
        let sig = network_signature(config, &params);
        let known = self.networks.entry(sig.clone()).or_default();
        if keys.iter().any(|k| !known.contains_key(k)) {
            let times = time_stages(config, params, repeats)?;
            self.measured += 1;
            // a stage keeps its first measurement, so every mask sees the same time
            for (k, t) in keys.iter().zip(times) {
                known.entry(k.clone()).or_insert(t);
            }
        }
        Ok(keys.iter().map(|k| known[k]).sum())
    }
}

/// What every stage of `config` shares besides its [`stage_keys`] key: shapes, GeLU,
/// the secure parameters.
fn network_signature(c: &ModelConfig, p: &SecureParams) -> String {
    format!(
        "{}x{}x{} patch {} dim {} heads {} mlp {} classes {} gelu {:?}; {p:?}",
        c.image_size,
        c.image_size,
        c.in_channels,
        c.patch_size,
        c.dim,
        c.heads,
        c.mlp_hidden,
        c.num_classes,
        c.gelu
    )
}

/// Costs of tables of one network (its shapes and beta masks), memoised.
#[derive(Debug)]
pub struct Evaluator<'a> {
    base: ModelConfig,
    params: SecureParams,
    repeats: usize,
    times: &'a mut StageTimes,
    counts: HashMap<Vec<Vec<AttnKind>>, ForwardCount>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator for `base`'s network (its table is replaced by each evaluated one).
    pub fn new(
        base: &ModelConfig,
        params: SecureParams,
        repeats: usize,
        times: &'a mut StageTimes,
    ) -> Result<Self> {
        Ok(Evaluator {
            base: base.clone().normalized()?,
            params,
            repeats,
            times,
            counts: HashMap::new(),
        })
    }

    /// The network with `attention` as its table, checked.
    pub fn config(&self, attention: &[Vec<AttnKind>]) -> Result<ModelConfig> {
        let mut c = self.base.clone();
        c.attention = attention.to_vec();
        c.validate().map_err(|e| {
            Error::Unsupported(format!(
                "mask of {} blocks × {} heads for a network of {} × {}: {e}",
                attention.len(),
                attention.first().map_or(0, Vec::len),
                self.base.depth,
                self.base.heads
            ))
        })?;
        Ok(c)
    }

    /// The counts and compute of one inference with `attention`.
    pub fn evaluate(&mut self, attention: &[Vec<AttnKind>]) -> Result<MaskCost> {
        let c = self.config(attention)?;
        let count = match self.counts.get(attention) {
            Some(n) => n.clone(),
            None => {
                let n = count_forward(&c, self.params)?;
                self.counts.insert(attention.to_vec(), n.clone());
                n
            }
        };
        let compute_seconds = self.times.compute(&c, self.params, self.repeats)?;
        Ok(MaskCost {
            count,
            compute_seconds,
        })
    }

    /// The latency of `attention` on `link`.
    pub fn latency(&mut self, attention: &[Vec<AttnKind>], link: Link) -> Result<f64> {
        Ok(self.evaluate(attention)?.latency(link))
    }
}

/// Per-head and per-block costs of a reference table on a link (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostTable {
    /// `head[l][h]`: the latency head `h` of block `l` adds by keeping ReLU-softmax
    /// instead of ScaleAttn, the rest of the table as in the reference and another head
    /// of the block attending, seconds.
    pub head: Vec<Vec<f64>>,
    /// `block[l]`: what the first attending head of block `l` adds on top of its
    /// `head[l][h]` (the fold of an all-ScaleAttn block, lost), seconds.
    pub block: Vec<f64>,
}

fn with(table: &[Vec<AttnKind>], l: usize, h: usize, k: AttnKind) -> Vec<Vec<AttnKind>> {
    let mut t = table.to_vec();
    t[l][h] = k;
    t
}

/// The per-head and per-block costs of `reference` on `link`:
///
/// - `head[l][h] = T(R[lh ← RS]) − T(R[lh ← SA])`, where `R` is the reference with, if
///   no other head of block `l` attends in it, the block's first other head set to
///   ReLU-softmax (blocks of one head: 0);
/// - `block[l] = mean_h (T(Z_l[lh ← RS]) − T(Z_l)) − head[l][h]`, with `Z_l` the
///   reference with block `l` all ScaleAttn.
///
/// `T` is [`MaskCost::latency`]. Negative values (noise in the measured compute, where
/// the counts do not differ) are kept: [`CostFile::write`] writes them as 0.
pub fn cost_table(
    eval: &mut Evaluator<'_>,
    reference: &[Vec<AttnKind>],
    link: Link,
) -> Result<CostTable> {
    use AttnKind::{ReluSoftmax, ScaleAttn};
    eval.config(reference)?;
    let heads = reference.first().map_or(0, Vec::len);
    let mut head = vec![vec![0.0; heads]; reference.len()];
    let mut block = vec![0.0; reference.len()];
    for l in 0..reference.len() {
        for h in 0..heads {
            let other_attends = (0..heads).any(|j| j != h && reference[l][j] != ScaleAttn);
            let rest = if other_attends {
                reference.to_vec()
            } else if let Some(j) = (0..heads).find(|&j| j != h) {
                with(reference, l, j, ReluSoftmax)
            } else {
                continue;
            };
            head[l][h] = eval.latency(&with(&rest, l, h, ReluSoftmax), link)?
                - eval.latency(&with(&rest, l, h, ScaleAttn), link)?;
        }
        let mut empty = reference.to_vec();
        empty[l] = vec![ScaleAttn; heads];
        let t0 = eval.latency(&empty, link)?;
        let mut bonus = 0.0;
        for h in 0..heads {
            bonus += eval.latency(&with(&empty, l, h, ReluSoftmax), link)? - t0 - head[l][h];
        }
        block[l] = bonus / heads.max(1) as f64;
    }
    Ok(CostTable { head, block })
}

/// The file `mpcvit-search cost --out` writes and `search --cost` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CostFile {
    /// [`COST_FORMAT`].
    pub format: String,
    /// The link (`none`, `lan`, `wan`, or its delay and bandwidth).
    pub link: String,
    /// The reference table the costs are marginal to.
    pub reference: Vec<Vec<AttnKind>>,
    /// The reference's latency on the link, seconds.
    pub reference_latency_s: f64,
    /// Per-head costs `[L][H]`, seconds (see [`CostTable::head`]).
    pub head: Vec<Vec<f64>>,
    /// Per-block fold bonus `[L]`, seconds (see [`CostTable::block`]).
    pub block: Vec<f64>,
}

impl CostFile {
    /// Write to `path`, negative costs (noise) as 0.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut f = self.clone();
        f.head.iter_mut().flatten().for_each(|c| *c = c.max(0.0));
        f.block.iter_mut().for_each(|c| *c = c.max(0.0));
        let text = serde_json::to_string_pretty(&f).expect("cost file serialises");
        std::fs::write(path, text + "\n").map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Read and check a cost file for a network of `depth × heads`: the format,
    /// `head` of `depth × heads` and `block` of `depth` finite non-negative seconds,
    /// not all head costs zero. Every error names the file.
    pub fn read(path: &Path, depth: usize, heads: usize) -> Result<CostFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |m: String| Error::Unsupported(format!("cost file {}: {m}", path.display()));
        if text.trim().is_empty() {
            return Err(bad("empty".into()));
        }
        let f: CostFile = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if f.format != COST_FORMAT {
            return Err(bad(format!(
                "format is {:?}, not {COST_FORMAT:?}",
                f.format
            )));
        }
        if f.head.len() != depth || f.head.iter().any(|r| r.len() != heads) {
            return Err(bad(format!(
                "head costs are {} rows of {:?} heads; the network has {depth} blocks of {heads} heads",
                f.head.len(),
                f.head.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        if f.block.len() != depth {
            return Err(bad(format!(
                "{} block costs; the network has {depth} blocks",
                f.block.len()
            )));
        }
        let values = f.head.iter().flatten().chain(&f.block);
        if let Some(v) = values.clone().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(bad(format!(
                "cost {v} is not a finite non-negative number of seconds"
            )));
        }
        if f.head.iter().flatten().all(|v| *v == 0.0) {
            return Err(bad("every head cost is 0".into()));
        }
        Ok(f)
    }

    /// The penalty weights: head and block costs divided by the mean head cost (so λ
    /// weighs an average head as with unit costs).
    pub fn penalty_weights(&self) -> (Vec<Vec<f32>>, Vec<f32>) {
        let n = self.head.iter().map(Vec::len).sum::<usize>().max(1);
        let mean = self.head.iter().flatten().sum::<f64>() / n as f64;
        let head = self
            .head
            .iter()
            .map(|r| r.iter().map(|c| (c / mean) as f32).collect())
            .collect();
        let block = self.block.iter().map(|b| (b / mean) as f32).collect();
        (head, block)
    }
}

/// Parses a head mask for a network of `depth × heads` whose own table is `own`:
///
/// - `model`: `own`; `softmax`, `relu-softmax` (μ = 1), `scale-attn` (μ = 0): every head;
/// - rows separated by `,` or `/`, one character per head: `1` ReLU-softmax (alpha 1),
///   `0` ScaleAttn (alpha 0), `s` Softmax (`0000,1011,1010,0111`);
/// - otherwise a JSON file: an attention table as in a manifest, or a manifest.
pub fn parse_mask(spec: &str, own: &[Vec<AttnKind>]) -> Result<Vec<Vec<AttnKind>>> {
    let depth = own.len();
    let heads = own.first().map_or(0, Vec::len);
    let uniform = |k| Ok(vec![vec![k; heads]; depth]);
    let table = match spec {
        "model" => return Ok(own.to_vec()),
        "softmax" => return uniform(AttnKind::Softmax),
        "relu-softmax" | "mu1" => return uniform(AttnKind::ReluSoftmax),
        "scale-attn" | "mu0" => return uniform(AttnKind::ScaleAttn),
        s if !s.is_empty() && s.chars().all(|c| "01sS,/".contains(c)) => s
            .split([',', '/'])
            .map(|row| {
                row.chars()
                    .map(|c| match c {
                        '1' => AttnKind::ReluSoftmax,
                        '0' => AttnKind::ScaleAttn,
                        _ => AttnKind::Softmax,
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>(),
        path => {
            let p = Path::new(path);
            let text = std::fs::read_to_string(p).map_err(|source| Error::Io {
                path: p.to_path_buf(),
                source,
            })?;
            let json = |source| Error::Json {
                path: p.to_path_buf(),
                source,
            };
            let v: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
            let v = v.get("attention").cloned().unwrap_or(v);
            serde_json::from_value(v).map_err(json)?
        }
    };
    if table.len() != depth || table.iter().any(|r| r.len() != heads) {
        return Err(Error::Unsupported(format!(
            "mask {spec:?} has {} rows of {:?} heads; the network has {depth} blocks of {heads} heads",
            table.len(),
            table.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    Ok(table)
}

/// A table in `parse_mask`'s short form.
pub fn mask_string(table: &[Vec<AttnKind>]) -> String {
    table
        .iter()
        .map(|r| {
            r.iter()
                .map(|k| match k {
                    AttnKind::ReluSoftmax => '1',
                    AttnKind::ScaleAttn => '0',
                    AttnKind::Softmax => 's',
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The search objective's per-block penalty weights divided by `mean` (the head costs'
/// mean, which the head weights are divided by too); empty without block costs.
pub fn block_penalty(
    objective: &crate::train::Objective,
    depth: usize,
    mean: f32,
) -> Result<Vec<f64>> {
    let crate::train::Objective::Search {
        block_cost: Some(b),
        ..
    } = objective
    else {
        return Ok(Vec::new());
    };
    if b.len() != depth || b.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
        return Err(Error::Unsupported(format!(
            "block cost must be {depth} finite non-negative numbers, got {b:?}"
        )));
    }
    Ok(b.iter().map(|c| f64::from(c / mean)).collect())
}

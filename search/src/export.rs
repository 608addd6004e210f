//! Binarisation of the searched architecture parameters and export to a `model` directory.
//!
//! - [`binarize_alpha`]: the `k = round(μ·L·H)` heads with the largest relaxed alpha
//!   become ReLU-Softmax (alpha = 1), all others ScaleAttn (alpha = 0). Ties go to the
//!   earlier head (block-major order). The paper's `train.py --retrain-mode` keeps
//!   `L·H − int((1 − μ)·L·H)` heads, which differs from the rounding only when `μ·L·H`
//!   is not an integer.
//! - [`binarize_beta`]: MPCViT+: the `round(ρ·L·N)` tokens with the largest relaxed beta
//!   (over all blocks) keep the GeLU FFN (beta = 1), the others are linearised (beta = 0).
//! - [`random_alpha`]: a random ranking of the heads, for masks that ignore the search.
//! - [`export_dir`]: `model.safetensors` (the paper's state-dict names) and
//!   `manifest.json`, written by the `model` crate itself and read back to check.

use std::path::Path;

use model::{AttnKind, Model, ModelConfig};

use crate::Result;
use crate::vit::{SearchSpace, Vit};

/// Indices of the `k` largest values (ties: lower index first).
pub(crate) fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// A ratio (μ, or the GeLU keep ratio) given as `what`, checked: a number in `[0, 1]`
/// (NaN and infinities refused), or an error naming `what` and the value.
pub fn check_ratio(what: &str, value: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(crate::Error::Unsupported(format!(
            "{what} {value}: a ratio must lie in [0, 1]"
        )))
    }
}

/// Number of heads kept as ReLU-Softmax for ratio `mu` out of `total`.
pub fn kept(mu: f64, total: usize) -> usize {
    ((mu.clamp(0.0, 1.0) * total as f64).round() as usize).min(total)
}

/// Binarises a relaxed alpha table `[L][H]`: the top `round(μ·L·H)` heads are
/// [`AttnKind::ReluSoftmax`], the rest [`AttnKind::ScaleAttn`].
pub fn binarize_alpha(alpha: &[Vec<f32>], mu: f64) -> Vec<Vec<AttnKind>> {
    let flat: Vec<f32> = alpha.iter().flatten().copied().collect();
    let mut keep = vec![false; flat.len()];
    for i in top_k(&flat, kept(mu, flat.len())) {
        keep[i] = true;
    }
    let mut it = keep.into_iter();
    alpha
        .iter()
        .map(|row| {
            row.iter()
                .map(|_| {
                    if it.next().unwrap_or(false) {
                        AttnKind::ReluSoftmax
                    } else {
                        AttnKind::ScaleAttn
                    }
                })
                .collect()
        })
        .collect()
}

/// Binarises a relaxed beta table `[L][N]`: the top `round(ρ·L·N)` tokens keep GeLU
/// (`true`), the others are linearised (`false`). Every block gets a mask.
pub fn binarize_beta(beta: &[Vec<f32>], keep_ratio: f64) -> Vec<Option<Vec<bool>>> {
    let flat: Vec<f32> = beta.iter().flatten().copied().collect();
    let mut keep = vec![false; flat.len()];
    for i in top_k(&flat, kept(keep_ratio, flat.len())) {
        keep[i] = true;
    }
    let mut it = keep.into_iter();
    beta.iter()
        .map(|row| Some(row.iter().map(|_| it.next().unwrap_or(false)).collect()))
        .collect()
}

/// The binarised network of a searched one: the same weights, a fixed attention table
/// (`mu`) and, when beta was searched, fixed beta masks (`beta_keep`, default 0.5).
pub fn binarized(searched: &Vit, mu: f64, beta_keep: Option<f64>, trainable: bool) -> Result<Vit> {
    binarized_by(searched, None, mu, beta_keep, trainable)
}

/// A ranking of `depth × heads` heads that ignores the search: a uniformly random
/// permutation drawn from `seed`, as alpha values in `(0, 1]`. Binarised like a
/// search's alphas, it gives a random mask with the same number of ReLU-Softmax heads
/// (the ablation's baseline).
pub fn random_alpha(depth: usize, heads: usize, seed: u64) -> Vec<Vec<f32>> {
    let n = depth * heads;
    let order = crate::data::permutation(n, &mut crate::data::rng_for(seed, u64::MAX));
    let mut alpha = vec![vec![0.0; heads]; depth];
    for (rank, &i) in order.iter().enumerate() {
        alpha[i / heads][i % heads] = (n - rank) as f32 / n as f32;
    }
    alpha
}

/// [`binarized`], with the heads ranked by `alpha` instead of the search's own alphas
/// when given (e.g. [`random_alpha`]); the weights are the searched network's.
pub fn binarized_by(
    searched: &Vit,
    alpha: Option<&[Vec<f32>]>,
    mu: f64,
    beta_keep: Option<f64>,
    trainable: bool,
) -> Result<Vit> {
    let relaxed = searched.relaxed()?;
    let mut config: ModelConfig = searched.config().clone();
    if searched.space().alpha {
        config.attention = binarize_alpha(alpha.unwrap_or(&relaxed.alpha), mu);
    }
    if searched.space().beta {
        let keep = beta_keep.unwrap_or(0.5);
        // Keeping GeLU on every token is plain MPCViT: no beta masks at all.
        config.beta = if keep >= 1.0 {
            vec![None; config.depth]
        } else {
            binarize_beta(&relaxed.beta, keep)
        };
    }
    Vit::from_weights(
        &config,
        &searched.weights()?,
        SearchSpace::default(),
        None,
        trainable,
    )
}

/// Writes `dir/model.safetensors` and `dir/manifest.json` through the `model` crate and
/// loads them back (so a file that `model::Model::load_dir` refuses is never left
/// without an error). Returns the loaded model.
pub fn export_dir(vit: &Vit, dir: &Path) -> Result<Model> {
    let model = vit.to_model()?;
    model.save_dir(dir)?;
    Ok(Model::load_dir(dir)?)
}

/// A one-line description of an attention table and beta masks, e.g.
/// `RS 8/16 heads [RS RS SA RS | …], GeLU tokens 100/200`.
pub fn describe(config: &ModelConfig) -> String {
    let total = config.depth * config.heads;
    let rs = config
        .attention
        .iter()
        .flatten()
        .filter(|&&k| k == AttnKind::ReluSoftmax)
        .count();
    let sm = config
        .attention
        .iter()
        .flatten()
        .filter(|&&k| k == AttnKind::Softmax)
        .count();
    let rows: Vec<String> = config
        .attention
        .iter()
        .map(|r| {
            r.iter()
                .map(|k| match k {
                    AttnKind::Softmax => "SM",
                    AttnKind::ReluSoftmax => "RS",
                    AttnKind::ScaleAttn => "SA",
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut s = format!(
        "softmax {sm}/{total}, relu-softmax {rs}/{total} heads [{}]",
        rows.join(" | ")
    );
    let masks: Vec<&Vec<bool>> = config.beta.iter().flatten().collect();
    if !masks.is_empty() {
        let total: usize = masks.iter().map(|m| m.len()).sum();
        let gelu: usize = masks.iter().map(|m| m.iter().filter(|&&b| b).count()).sum();
        s.push_str(&format!(", GeLU tokens {gelu}/{total}"));
    }
    s
}

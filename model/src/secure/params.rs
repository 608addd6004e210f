//! The secure forward's settings, and the choices derived from them and
//! the model's configuration.

use mpc_core::FixedPoint;
use mpc_core::blocks::layer_norm::LayerNormParams;
use mpc_core::nonlinear::{Domain, ROW_SUMS};

use crate::config::{AttnKind, ModelConfig};

/// Fixed-point and domain settings of the secure forward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SecureParams {
    /// Fixed-point format.
    pub fp: FixedPoint,
    /// Comparison width for attention scores (|S| < 2^(bits−1−f)).
    pub score_bits: u32,
    /// Low bits the ReLU-softmax heads' score comparison ignores: the
    /// comparison's threshold is `2^coarse` ulps, so a score in `[0,
    /// 2^coarse)` ulps may come out as 0 (error below `2^coarse` ulps per
    /// score, never a negative output), and each DCF key is `coarse` levels
    /// shallower (see [`mpc_core::Ctx::relu`]).
    pub score_coarse: u32,
    /// Comparison width for the linearised FFN's ReLU (|y| < 2^(bits−1−f);
    /// with its input's truncation pending, `bits` plus that shift must stay
    /// within 62: 26 with the LayerNorm's `2f + 4`).
    pub relu_bits: u32,
    /// LayerNorm variance domain (eps comes from the model).
    pub layer_norm: LayerNormParams,
    /// Range of ReLU-softmax row sums.
    pub row_sums: Domain,
    /// Fold the output projection into the values of the ReLU-softmax and
    /// Softmax heads (`R·(V·W_h)`, so the attention feeds the residual with
    /// no projection round: 2 rounds less per block) when `C ≤ fold_ratio ·
    /// head_dim`; it costs `8·n·(C − d)` bytes more per such head twice
    /// (the product's and the row scaling's openings) and `n²·(C − d)` more
    /// multiply-adds. The default 4 folds `vit_7_4_32` (C = 4d) and the
    /// bundled models, not `vit_9_12_64` (C = 12d, where the bytes would
    /// grow 11-fold per head); 0 never folds.
    pub fold_ratio: usize,
    /// The ReLU-softmax heads' ReLU takes one round instead of two
    /// ([`mpc_core::Ctx::relu`], `Relu::one_round`) in a model with at most this
    /// many ReLU-softmax scores per image (heads × tokens², over all
    /// blocks), and a block whose attending heads are all ReLU-softmax then
    /// folds its ScaleAttn heads too (`stacked_heads`): one round less per
    /// such block, for about 1 kB more dealer material per score (two DCF
    /// keys of 628 bytes instead of 144 at the default score width) and
    /// `8n(n + C − d)` more online bytes per folded ScaleAttn head. The
    /// default 2^15 takes it for the bundled models (`fashion-mnist-mu0.5`:
    /// 20,000 scores, 60 rounds instead of 63), not for `vit_7_4_32` μ =
    /// 0.5 (59,150 scores: 7 rounds less for about twice the dealer
    /// material and more online bytes) nor `vit_9_12_64` (3.6 million
    /// scores: gigabytes more); 0 never takes it.
    pub relu_one_round_scores: usize,
}

impl Default for SecureParams {
    fn default() -> Self {
        SecureParams {
            fp: FixedPoint::default(),
            score_bits: 24,
            score_coarse: 8,
            relu_bits: 26,
            layer_norm: LayerNormParams::default(),
            row_sums: ROW_SUMS,
            fold_ratio: 4,
            relu_one_round_scores: 1 << 15,
        }
    }
}

/// Whether the ReLU-softmax heads' ReLU takes one round
/// ([`SecureParams::relu_one_round_scores`]).
pub(crate) fn one_round_relu(cfg: &ModelConfig, params: &SecureParams) -> bool {
    let n = cfg.num_tokens();
    let heads = cfg.attention.iter().flatten();
    let scores = heads.filter(|k| **k == AttnKind::ReluSoftmax).count() * n * n;
    scores <= params.relu_one_round_scores
}

/// LayerNorm settings of the secure forward, with the model's eps.
pub(super) fn layer_norm_params(cfg: &ModelConfig, params: &SecureParams) -> LayerNormParams {
    LayerNormParams {
        eps: f64::from(cfg.layer_norm_eps),
        ..params.layer_norm
    }
}

/// Whether the blocks fold the output projection into the heads' values
/// (see [`SecureParams::fold_ratio`]).
pub(crate) fn folds(cfg: &ModelConfig, params: &SecureParams) -> bool {
    params.fold_ratio > 0 && cfg.dim <= params.fold_ratio * cfg.head_dim()
}

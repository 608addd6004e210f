//! One party's model load: every linear weight masked and its `W − B`
//! opened once.

use mpc_core::{Ctx, MaskedWeight, Op, Session, Share};
use std::sync::Arc;

use super::params::{SecureParams, folds, one_round_relu};
use super::shares::{LinearShare, WeightShares};
use crate::config::{AttnKind, ModelConfig};
use crate::error::{ModelError, Result};

#[derive(Clone, Debug)]
pub(super) struct PreparedLinear {
    pub(super) w: MaskedWeight,
    pub(super) bias: Option<Share>,
}

/// The weights of a model in load order, each as `(share, rows, cols)`,
/// numbered for the dealer by their position.
struct WeightList(Vec<(Share, usize, usize)>);

impl WeightList {
    fn push(&mut self, w: &Share, k: usize, n: usize) {
        self.0.push((w.clone(), k, n));
    }

    fn linear(&mut self, l: &LinearShare) {
        self.push(&l.weight, l.in_features, l.out_features);
    }

    /// The output projection's rows (`in/heads` of them per head) of each
    /// head that folds them into its values as its own weight, in head
    /// order, then the rows of the heads projected together stacked into
    /// one ([`stacked_heads`], [`Projection::PerHead`]).
    fn head_rows(&mut self, l: &LinearShare, kinds: &[AttnKind], one_round_relu: bool) {
        let d = l.in_features / kinds.len();
        let rows = |h: usize| {
            l.weight
                .slice(h * d * l.out_features..(h + 1) * d * l.out_features)
        };
        let scale: Vec<usize> = stacked_heads(kinds, one_round_relu);
        for h in (0..kinds.len()).filter(|h| !scale.contains(h)) {
            self.0.push((rows(h), d, l.out_features));
        }
        if !scale.is_empty() {
            let stacked: Vec<u64> = scale
                .iter()
                .flat_map(|&h| rows(h).as_slice().to_vec())
                .collect();
            self.0
                .push((Share::new(stacked), scale.len() * d, l.out_features));
        }
    }

    /// Mask every weight in one round.
    fn mask(&self, c: &mut Ctx<'_>) -> Op<Vec<MaskedWeight>> {
        let ops = self
            .0
            .iter()
            .enumerate()
            .map(|(id, (w, k, n))| c.mask_weight(id as u32, w, *k, *n))
            .collect();
        Op::all(ops)
    }
}

#[derive(Clone, Debug)]
pub(super) enum Projection {
    Whole(PreparedLinear),
    /// Folded ([`SecureParams::fold_ratio`]): each attending head's `d × C`
    /// rows of the projection on their own (the head attends over `V·W_h`),
    /// and the ScaleAttn heads' rows stacked (`k·d × C` for `k` such heads,
    /// in head order): their outputs are projected together in one product,
    /// whose dealer triple (`8·n·C` bytes to party 1) is paid once per block
    /// instead of once per head. In a block with no attending head, each
    /// ScaleAttn head folds its own rows too ([`stacked_heads`]).
    PerHead {
        rows: Vec<(usize, MaskedWeight)>,
        scale: Option<(Vec<usize>, MaskedWeight)>,
        bias: Option<Share>,
    },
}

/// The heads among `kinds` whose outputs are projected together (stacked
/// rows of the projection, one product after the heads, 5 rounds): the
/// ScaleAttn heads, in order, of a block whose attending heads take as
/// long (ReLU-softmax with the two-round ReLU) or longer (Softmax); the
/// shared product is the cheaper way there. Otherwise none: each head
/// folds its own rows into its values ([`BlockStage::folded_head`](super::block::BlockStage::folded_head), 3
/// rounds), for `8n(n + C − d)` more bytes per head and party, so that a
/// block of ScaleAttn heads only takes 3 attention rounds instead of 5,
/// and one whose attending heads are ReLU-softmax with the one-round ReLU
/// takes 4.
pub(super) fn stacked_heads(kinds: &[AttnKind], one_round_relu: bool) -> Vec<usize> {
    let short = |k: &AttnKind| match k {
        AttnKind::ScaleAttn => true,
        AttnKind::ReluSoftmax => one_round_relu,
        AttnKind::Softmax => false,
    };
    if kinds.iter().all(short) {
        return Vec::new();
    }
    (0..kinds.len())
        .filter(|&h| kinds[h] == AttnKind::ScaleAttn)
        .collect()
}

#[derive(Clone, Debug)]
pub(super) struct PreparedNorm {
    pub(super) gamma: MaskedWeight,
    pub(super) beta: Share,
}

#[derive(Clone, Debug)]
pub(super) struct PreparedBlock {
    pub(super) qkv: PreparedLinear,
    /// The output projection, whole or (folded, see
    /// [`SecureParams::fold_ratio`]) as one masked `d × C` slice per head.
    pub(super) proj: Projection,
    pub(super) norm1: PreparedNorm,
    pub(super) ffn_in: PreparedLinear,
    pub(super) linear2: PreparedLinear,
}

/// One party's prepared model: weight masks opened, ready for requests.
#[derive(Debug)]
pub struct SecureModel {
    pub(super) config: Arc<ModelConfig>,
    pub(super) params: SecureParams,
    pub(super) conv: PreparedLinear,
    pub(super) class_emb: Share,
    pub(super) positional_emb: Share,
    pub(super) blocks: Vec<Arc<PreparedBlock>>,
    pub(super) fc: PreparedLinear,
}

impl SecureModel {
    /// Mask every linear weight (`8·in·out` bytes each, all in one round,
    /// once per model load). Both parties must call this with their own shares.
    pub fn prepare(s: &mut Session, shares: &WeightShares, params: SecureParams) -> Result<Self> {
        if shares.frac_bits != params.fp.frac_bits || s.frac_bits() != params.fp.frac_bits {
            return Err(ModelError::Secure(format!(
                "fixed point mismatch: shares at {} bits, params at {}, session at {}",
                shares.frac_bits,
                params.fp.frac_bits,
                s.frac_bits()
            )));
        }
        let cfg = &shares.config;
        let fold = folds(cfg, &params);
        let mut list = WeightList(Vec::new());
        list.linear(&shares.conv);
        for (i, b) in shares.blocks.iter().enumerate() {
            list.linear(&b.qkv);
            if fold {
                list.head_rows(&b.proj, &cfg.attention[i], one_round_relu(cfg, &params));
            } else {
                list.linear(&b.proj);
            }
            list.push(&b.norm1.gamma, 1, b.norm1.gamma.len());
            list.linear(&b.ffn_in);
            list.linear(&b.linear2);
        }
        list.linear(&shares.fc);
        let mut masked = s.run(|c| list.mask(c))?.into_iter();
        let mut mask = || masked.next().expect("one mask per listed weight");
        let linear = |w: MaskedWeight, l: &LinearShare| PreparedLinear {
            w,
            bias: l.bias.clone(),
        };
        let conv = linear(mask(), &shares.conv);
        let mut blocks = Vec::with_capacity(shares.blocks.len());
        for (i, b) in shares.blocks.iter().enumerate() {
            let qkv = linear(mask(), &b.qkv);
            let proj = if fold {
                let scale = stacked_heads(&cfg.attention[i], one_round_relu(cfg, &params));
                let rows = (0..cfg.heads)
                    .filter(|h| !scale.contains(h))
                    .map(|h| (h, mask()))
                    .collect();
                Projection::PerHead {
                    rows,
                    scale: (!scale.is_empty()).then(|| (scale, mask())),
                    bias: b.proj.bias.clone(),
                }
            } else {
                Projection::Whole(linear(mask(), &b.proj))
            };
            let norm1 = PreparedNorm {
                gamma: mask(),
                beta: b.norm1.beta.clone(),
            };
            let ffn_in = linear(mask(), &b.ffn_in);
            let linear2 = linear(mask(), &b.linear2);
            blocks.push(Arc::new(PreparedBlock {
                qkv,
                proj,
                norm1,
                ffn_in,
                linear2,
            }));
        }
        let fc = linear(mask(), &shares.fc);
        Ok(SecureModel {
            config: Arc::new(shares.config.clone()),
            params,
            conv,
            class_emb: shares.class_emb.clone(),
            positional_emb: shares.positional_emb.clone(),
            blocks,
            fc,
        })
    }

    /// The public configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

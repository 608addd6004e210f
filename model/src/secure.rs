//! The secure forward: the same network as [`crate::plain`], stage by stage,
//! over mpc-core's operators.
//!
//! The model owner splits the weights into two additive shares
//! ([`split_weights`]); each party prepares its share once per model load
//! ([`SecureModel::prepare`]: every linear weight is masked and its `W − B`
//! opened, so later products open only activations); then
//! [`SecureModel::forward`] runs on a shared image. Both parties call the same
//! methods in the same order; everything that steers the computation (shapes,
//! the attention table, the MPCViT+ `beta` masks) is public.
//!
//! Approximations under MPC (the plaintext model is exact): fixed point with
//! `f` fractional bits (default 16); the exact-erf GeLU is evaluated by the
//! piecewise quadratic of `mpc_core::gelu::gelu_piecewise`, its input read
//! at `f − 4` bits (`Ctx::gelu_pending`: error 1.12e-3 on a dense grid over
//! [−8, 8], asserted < 1.6e-3);
//! softmax's exponential by `(1 + x/256)^256`; ReLU-softmax's and LayerNorm's
//! reciprocal and rsqrt piecewise linearly (relative error ≤ 1e-3 on their domains).

use mpc_core::arith::Untruncated;
use mpc_core::blocks::attention::ReluAttention;
use mpc_core::blocks::layer_norm::{LayerNormParams, center_rows};
use mpc_core::nonlinear::{ATTN_INV_FRAC, Domain, ROW_SUMS, tile};
use std::collections::HashMap;
use std::sync::Arc;

use mpc_core::{Ctx, FixedPoint, MaskedWeight, Op, Party, Prg, Session, Share, ring};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::config::{AttnKind, GeluKind, ModelConfig};
use crate::error::{ModelError, Result};
use crate::network::Model;
use crate::weights::{LayerNorm, Linear, block_name};

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
    /// shallower (see [`mpc_core::Ctx::relu_coarse`]).
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
    /// ([`mpc_core::Ctx::relu_one_round`]) in a model with at most this
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

/// One party's share of a linear layer, weight stored transposed (`in × out`).
#[derive(Clone, Debug)]
pub struct LinearShare {
    in_features: usize,
    out_features: usize,
    weight: Share,
    bias: Option<Share>,
}

/// One party's share of a LayerNorm.
#[derive(Clone, Debug)]
pub struct LayerNormShare {
    gamma: Share,
    beta: Share,
}

/// One party's share of a block. The pre-attention LayerNorm's scale and
/// shift are folded into `qkv` by the model owner ([`fold_norm`]).
#[derive(Clone, Debug)]
pub struct BlockShare {
    qkv: LinearShare,
    proj: LinearShare,
    norm1: LayerNormShare,
    /// `linear1` with `norm1` folded in, and for MPCViT+ blocks the fused
    /// linearised FFN (also folded) beside it: `[W1' | F']`, C × (M + C).
    ffn_in: LinearShare,
    linear2: LinearShare,
}

/// One party's share of every weight, with the public configuration.
#[derive(Clone, Debug)]
pub struct WeightShares {
    config: ModelConfig,
    frac_bits: u32,
    conv: LinearShare,
    class_emb: Share,
    positional_emb: Share,
    blocks: Vec<BlockShare>,
    /// The classifier with the final LayerNorm's scale and shift folded in.
    fc: LinearShare,
}

impl WeightShares {
    /// The public configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Fractional bits the shares are encoded at.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// This share as a file for `party` (see [`SHARE_FORMAT`] for the layout).
    pub fn to_safetensors(&self, party: Party) -> Result<Vec<u8>> {
        let c = &self.config;
        let mut w = ShareWriter(Vec::new());
        w.linear(CONV, &self.conv);
        w.put("classifier.class_emb".into(), vec![c.dim], &self.class_emb);
        w.put(
            "classifier.positional_emb".into(),
            vec![c.num_tokens(), c.dim],
            &self.positional_emb,
        );
        for (i, b) in self.blocks.iter().enumerate() {
            w.linear(&block_name(i, "self_attn.qkv"), &b.qkv);
            w.linear(&block_name(i, "self_attn.proj"), &b.proj);
            w.put(block_name(i, "norm1.weight"), vec![c.dim], &b.norm1.gamma);
            w.put(block_name(i, "norm1.bias"), vec![c.dim], &b.norm1.beta);
            w.linear(&block_name(i, "ffn_in"), &b.ffn_in);
            w.linear(&block_name(i, "linear2"), &b.linear2);
        }
        w.linear("classifier.fc", &self.fc);
        let w = w.0;
        let views = w
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::U64, shape.clone(), bytes).map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), SHARE_FORMAT.to_string()),
            ("version".to_string(), SHARE_VERSION.to_string()),
            ("party".to_string(), party.index().to_string()),
            ("frac_bits".to_string(), self.frac_bits.to_string()),
            ("manifest".to_string(), c.to_manifest_json()?),
        ]);
        Ok(safetensors::serialize(views, &Some(metadata))?)
    }

    /// Parse a share file, checking every tensor against its manifest; returns
    /// the share and the party it was written for.
    pub fn from_safetensors(bytes: &[u8]) -> Result<(WeightShares, Party)> {
        let bad = share_file_error;
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(container_problem(&e, bytes)))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("metadata entry {k:?} is missing")))
        };
        if field("format")? != SHARE_FORMAT {
            return Err(bad(format!(
                "its format entry is not {SHARE_FORMAT:?} (a plaintext model or another file?)"
            )));
        }
        let version = field("version")?;
        if version != SHARE_VERSION {
            return Err(bad(format!(
                "version {version}, this build reads {SHARE_VERSION}"
            )));
        }
        let party = field("party")?
            .parse::<usize>()
            .ok()
            .and_then(Party::from_index)
            .ok_or_else(|| bad("party must be 0 or 1".into()))?;
        let frac_bits: u32 = field("frac_bits")?
            .parse()
            .map_err(|_| bad("frac_bits is not a number".into()))?;
        let config = ModelConfig::from_manifest_json(&field("manifest")?)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(container_problem(&e, bytes)))?;
        let total = st.len();
        let mut r = ShareReader { st, seen: 0 };
        let c = &config;
        let (dim, hid) = (c.dim, c.mlp_hidden);
        let conv = r.linear(CONV, c.in_channels * c.patch_size * c.patch_size, dim)?;
        let class_emb = r.get("classifier.class_emb", &[dim])?;
        let positional_emb = r.get("classifier.positional_emb", &[c.num_tokens(), dim])?;
        let mut blocks = Vec::with_capacity(c.depth);
        for i in 0..c.depth {
            let linearised = c.block_beta(i).is_some_and(|m| m.iter().any(|b| !b));
            let width = hid + if linearised { dim } else { 0 };
            blocks.push(BlockShare {
                qkv: r.linear(&block_name(i, "self_attn.qkv"), dim, 3 * dim)?,
                proj: r.linear(&block_name(i, "self_attn.proj"), dim, dim)?,
                norm1: LayerNormShare {
                    gamma: r.get(&block_name(i, "norm1.weight"), &[dim])?,
                    beta: r.get(&block_name(i, "norm1.bias"), &[dim])?,
                },
                ffn_in: r.linear(&block_name(i, "ffn_in"), dim, width)?,
                linear2: r.linear(&block_name(i, "linear2"), hid, dim)?,
            });
        }
        let fc = r.linear("classifier.fc", dim, c.num_classes)?;
        if r.seen != total {
            return Err(bad(format!(
                "{} tensors are not part of the configured network",
                total - r.seen
            )));
        }
        let shares = WeightShares {
            config,
            frac_bits,
            conv,
            class_emb,
            positional_emb,
            blocks,
            fc,
        };
        Ok((shares, party))
    }
}

/// `format` metadata of a weight share file. The file is safetensors, every
/// tensor `U64` (little-endian ring elements at `frac_bits` fractional bits),
/// linear weights stored `[in, out]`:
/// `tokenizer.conv_layers.0.0.{weight,bias}`, `classifier.class_emb` `[C]`,
/// `classifier.positional_emb` `[N, C]`, per block
/// `classifier.blocks.{i}.self_attn.qkv.*` (pre-attention LayerNorm folded in),
/// `self_attn.proj.*`, `norm1.{weight,bias}`, `ffn_in.*` (`linear1` with
/// `norm1` folded in, beside the folded fused FFN for MPCViT+ blocks: `[C, H]`
/// or `[C, H + C]`), `linear2.*`, and `classifier.fc.*` (final LayerNorm
/// folded in). Metadata: `format`, `version`, `party`, `frac_bits` and
/// `manifest` (the public manifest JSON, so a share file is self-contained).
pub const SHARE_FORMAT: &str = "mpcvit-weight-share";
/// Version of the share file this crate reads and writes.
pub const SHARE_VERSION: &str = "1";

const CONV: &str = "tokenizer.conv_layers.0.0";

fn share_file_error(m: String) -> ModelError {
    ModelError::ShareFile(m)
}

/// What a safetensors parse error means for a share file of `bytes`, in
/// words (the crate's own errors are bare variant names).
fn container_problem(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let len = bytes.len();
    let announced = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match e {
        E::HeaderTooSmall => {
            format!("truncated or empty: {len} bytes, too short for even the length of a header")
        }
        E::InvalidHeaderLength => format!(
            "truncated: its header announces {} bytes, the file holds {len}",
            announced.map_or(0, |a| a.saturating_add(8))
        ),
        E::HeaderTooLarge => format!(
            "damaged: its first 8 bytes announce a header of {} bytes, more than any share file has",
            announced.unwrap_or(0)
        ),
        E::MetadataIncompleteBuffer => {
            format!("truncated: the tensors its header lists need more bytes than the file's {len}")
        }
        E::InvalidHeader
        | E::InvalidHeaderStart
        | E::InvalidHeaderDeserialization
        | E::JsonError(_) => "damaged: its header is not the JSON a share file begins with".into(),
        E::InvalidOffset(name) => {
            format!("damaged: the header's byte offsets of tensor {name} are not valid")
        }
        E::TensorInvalidInfo | E::InvalidTensorView(..) | E::ValidationOverflow => {
            "damaged: a tensor's type, shape and size in the header do not agree".into()
        }
        other => format!("damaged: {other}"),
    }
}

struct ShareWriter(Vec<(String, Vec<usize>, Vec<u8>)>);

impl ShareWriter {
    fn put(&mut self, name: String, shape: Vec<usize>, s: &Share) {
        let bytes = s.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0.push((name, shape, bytes));
    }

    fn linear(&mut self, prefix: &str, l: &LinearShare) {
        self.put(
            format!("{prefix}.weight"),
            vec![l.in_features, l.out_features],
            &l.weight,
        );
        if let Some(b) = &l.bias {
            self.put(format!("{prefix}.bias"), vec![l.out_features], b);
        }
    }
}

struct ShareReader<'a> {
    st: SafeTensors<'a>,
    seen: usize,
}

impl ShareReader<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Share> {
        let v = self
            .st
            .tensor(name)
            .map_err(|_| share_file_error(format!("tensor {name} is missing")))?;
        if v.dtype() != Dtype::U64 {
            return Err(share_file_error(format!(
                "tensor {name} is {:?}, expected U64",
                v.dtype()
            )));
        }
        if v.shape() != shape {
            return Err(share_file_error(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                v.shape()
            )));
        }
        self.seen += 1;
        Ok(Share::new(
            v.data()
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ))
    }

    fn linear(&mut self, prefix: &str, inp: usize, out: usize) -> Result<LinearShare> {
        Ok(LinearShare {
            in_features: inp,
            out_features: out,
            weight: self.get(&format!("{prefix}.weight"), &[inp, out])?,
            bias: Some(self.get(&format!("{prefix}.bias"), &[out])?),
        })
    }
}

struct Splitter<'a> {
    fp: FixedPoint,
    prg: &'a mut Prg,
}

impl Splitter<'_> {
    fn vec(&mut self, v: &[f32]) -> [Share; 2] {
        let enc: Vec<u64> = v.iter().map(|x| self.fp.encode(f64::from(*x))).collect();
        let (a, b) = mpc_core::share_secret(&enc, self.prg);
        [a, b]
    }

    fn linear(&mut self, l: &Linear) -> [LinearShare; 2] {
        let wt = ring::transpose(&l.weight, l.out_features, l.in_features);
        let [w0, w1] = self.vec(&wt);
        let [b0, b1] = match &l.bias {
            Some(b) => self.vec(b).map(Some),
            None => [None, None],
        };
        let mk = |weight, bias| LinearShare {
            in_features: l.in_features,
            out_features: l.out_features,
            weight,
            bias,
        };
        [mk(w0, b0), mk(w1, b1)]
    }

    fn norm(&mut self, n: &LayerNorm) -> [LayerNormShare; 2] {
        let [g0, g1] = self.vec(&n.weight);
        let [b0, b1] = self.vec(&n.bias);
        [
            LayerNormShare {
                gamma: g0,
                beta: b0,
            },
            LayerNormShare {
                gamma: g1,
                beta: b1,
            },
        ]
    }
}

/// Split a model's weights into two additive shares at fixed point `fp`
/// (the model owner's step). Each share alone is uniformly random.
pub fn split_weights(model: &Model, fp: FixedPoint, prg: &mut Prg) -> [WeightShares; 2] {
    let (config, w) = (model.config(), model.weights());
    let mut sp = Splitter { fp, prg };
    let conv = Linear {
        out_features: config.dim,
        in_features: config.in_channels * config.patch_size * config.patch_size,
        weight: w.conv.weight.clone(),
        bias: Some(w.conv.bias.clone()),
    };
    let [conv0, conv1] = sp.linear(&conv);
    let [ce0, ce1] = sp.vec(&w.class_emb);
    let [pe0, pe1] = sp.vec(&w.positional_emb);
    let mut blocks: [Vec<BlockShare>; 2] = [Vec::new(), Vec::new()];
    for (i, b) in w.blocks.iter().enumerate() {
        let [q0, q1] = sp.linear(&fold_norm(&b.pre_norm, &b.qkv));
        let [p0, p1] = sp.linear(&b.proj);
        let [n0, n1] = sp.norm(&b.norm1);
        let mut ffn_in = fold_norm(&b.norm1, &b.linear1);
        if let Some(f) = model.fused_ffn(i) {
            let f = fold_norm(&b.norm1, f);
            ffn_in.out_features += f.out_features;
            ffn_in.weight.extend(f.weight);
            if let (Some(b1), Some(bf)) = (&mut ffn_in.bias, f.bias) {
                b1.extend(bf);
            }
        }
        let [i0, i1] = sp.linear(&ffn_in);
        let [l20, l21] = sp.linear(&b.linear2);
        blocks[0].push(BlockShare {
            qkv: q0,
            proj: p0,
            norm1: n0,
            ffn_in: i0,
            linear2: l20,
        });
        blocks[1].push(BlockShare {
            qkv: q1,
            proj: p1,
            norm1: n1,
            ffn_in: i1,
            linear2: l21,
        });
    }
    let [fc0, fc1] = sp.linear(&fold_norm(&w.norm, &w.fc));
    let [b0, b1] = blocks;
    let mk = |conv, class_emb, positional_emb, blocks, fc| WeightShares {
        config: config.clone(),
        frac_bits: fp.frac_bits,
        conv,
        class_emb,
        positional_emb,
        blocks,
        fc,
    };
    [mk(conv0, ce0, pe0, b0, fc0), mk(conv1, ce1, pe1, b1, fc1)]
}

/// Fold a LayerNorm's scale `γ` and shift `β` into the linear layer that
/// consumes it: `(n⊙γ + β)·Wᵀ + b = n·(W·diag(γ))ᵀ + (W·β + b)`. Exact in
/// real arithmetic (accumulated in f64); the secure forward then normalises
/// without an affine step, saving a product per element.
pub fn fold_norm(norm: &LayerNorm, next: &Linear) -> Linear {
    let (out, inp) = (next.out_features, next.in_features);
    let mut weight = next.weight.clone();
    let mut bias = next.bias.clone().unwrap_or_else(|| vec![0.0; out]);
    for o in 0..out {
        let row = &mut weight[o * inp..(o + 1) * inp];
        let mut acc = f64::from(bias[o]);
        for (i, w) in row.iter_mut().enumerate() {
            acc += f64::from(*w) * f64::from(norm.bias[i]);
            *w *= norm.weight[i];
        }
        bias[o] = acc as f32;
    }
    Linear {
        out_features: out,
        in_features: inp,
        weight,
        bias: Some(bias),
    }
}

/// Split a normalised CHW image into two shares (the client's step).
pub fn split_input(image: &[f32], fp: FixedPoint, prg: &mut Prg) -> [Share; 2] {
    let enc: Vec<u64> = image.iter().map(|x| fp.encode(f64::from(*x))).collect();
    let (a, b) = mpc_core::share_secret(&enc, prg);
    [a, b]
}

#[derive(Clone, Debug)]
struct PreparedLinear {
    w: MaskedWeight,
    bias: Option<Share>,
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
enum Projection {
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
/// folds its own rows into its values ([`BlockStage::folded_head`], 3
/// rounds), for `8n(n + C − d)` more bytes per head and party, so that a
/// block of ScaleAttn heads only takes 3 attention rounds instead of 5,
/// and one whose attending heads are ReLU-softmax with the one-round ReLU
/// takes 4.
fn stacked_heads(kinds: &[AttnKind], one_round_relu: bool) -> Vec<usize> {
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
struct PreparedNorm {
    gamma: MaskedWeight,
    beta: Share,
}

#[derive(Clone, Debug)]
struct PreparedBlock {
    qkv: PreparedLinear,
    /// The output projection, whole or (folded, see
    /// [`SecureParams::fold_ratio`]) as one masked `d × C` slice per head.
    proj: Projection,
    norm1: PreparedNorm,
    ffn_in: PreparedLinear,
    linear2: PreparedLinear,
}

/// Shares of one block's activations (`N × C` each), for stage-by-stage
/// checks. In the last block, `attn_out`, `residual`, `normed` and `output`
/// hold the class token's row only (`1 × C`): the classifier reads no
/// other, so its second half (LayerNorm and FFN) runs on that row alone.
#[derive(Debug, Clone)]
pub struct BlockTraceShare {
    /// The attention branch before the residual.
    pub attn_out: Share,
    /// `y = x + attn_out`.
    pub residual: Share,
    /// `z = LN_1(y)`.
    pub normed: Share,
    /// The block output.
    pub output: Share,
}

/// Shares of every stage's activations.
#[derive(Debug, Clone)]
pub struct TraceShare {
    /// After the tokenizer and embeddings.
    pub embedded: Share,
    /// One per block.
    pub blocks: Vec<BlockTraceShare>,
    /// The logits.
    pub logits: Share,
    /// This party's wall time of each stage, seconds: the embedding, each
    /// block, then the head (waiting on the peer included).
    pub stage_seconds: Vec<f64>,
    /// The process's CPU time in each stage, seconds: this party's work (and
    /// its peer's, when both run in this process), not other programs'
    /// ([`process_cpu_seconds`]).
    pub stage_cpu_seconds: Vec<f64>,
}

/// CPU time this process has used, seconds (every thread; 0 where the
/// platform has no process CPU clock).
pub fn process_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    }
    #[cfg(not(unix))]
    {
        0.0
    }
}

/// One party's prepared model: weight masks opened, ready for requests.
#[derive(Debug)]
pub struct SecureModel {
    config: Arc<ModelConfig>,
    params: SecureParams,
    conv: PreparedLinear,
    class_emb: Share,
    positional_emb: Share,
    blocks: Vec<Arc<PreparedBlock>>,
    fc: PreparedLinear,
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

    /// This party's share of the logits for a shared normalised CHW image.
    pub fn forward(&self, s: &mut Session, image: &Share) -> Result<Share> {
        Ok(self.forward_trace(s, image)?.logits)
    }

    /// Like [`SecureModel::forward`], keeping every stage's shares.
    ///
    /// Each stage (the embedding, each block, the head) is one [`Op`]
    /// composed of mpc-core's operators, so everything independent within a
    /// stage shares rounds (every head's attention, the branches of the
    /// FFN, a truncation beside the next LayerNorm's centring).
    pub fn forward_trace(&self, s: &mut Session, image: &Share) -> Result<TraceShare> {
        let cfg = &self.config;
        for i in 0..cfg.depth {
            let width = self.blocks[i].ffn_in.w.cols();
            let linearised = cfg.block_beta(i).is_some_and(|m| m.iter().any(|b| !b));
            if linearised && width != cfg.mlp_hidden + cfg.dim {
                return Err(ModelError::Secure(format!(
                    "block {i}: linearised tokens without a fused FFN"
                )));
            }
        }
        let (mut clock, mut cpu) = (std::time::Instant::now(), process_cpu_seconds());
        let mut stage_seconds = Vec::with_capacity(cfg.depth + 2);
        let mut stage_cpu_seconds = Vec::with_capacity(cfg.depth + 2);
        let mut lap = || {
            let (now, now_cpu) = (std::time::Instant::now(), process_cpu_seconds());
            stage_seconds.push((now - clock).as_secs_f64());
            stage_cpu_seconds.push(now_cpu - cpu);
            (clock, cpu) = (now, now_cpu);
        };
        let cols = Share::new(crate::plain::patches(cfg, image.as_slice())?);
        let mut x_raw = s.run(|c| self.embed(c, &cols))?;
        lap();
        let mut inputs = Vec::with_capacity(cfg.depth + 1);
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let stage = BlockStage {
                cfg: self.config.clone(),
                params: self.params,
                blk: self.blocks[i].clone(),
                i,
                class_only: i + 1 == cfg.depth,
            };
            let (x, t, out_raw) = s.run(|c| stage.run(c, &x_raw))?;
            lap();
            inputs.push(x);
            blocks.push(t);
            x_raw = out_raw;
        }
        let (output, logits) = s.run(|c| self.head(c, &x_raw))?;
        lap();
        inputs.push(output);
        let mut inputs = inputs.into_iter();
        let embedded = inputs.next().expect("the embedding");
        let blocks = blocks
            .into_iter()
            .zip(inputs)
            .map(|(b, output)| BlockTraceShare {
                attn_out: b.attn_out,
                residual: b.residual,
                normed: b.normed,
                output,
            })
            .collect();
        Ok(TraceShare {
            embedded,
            blocks,
            logits,
            stage_seconds,
            stage_cpu_seconds,
        })
    }

    /// Tokenizer (on the image's patch columns) and embeddings, returned at
    /// `2f` bits with the truncation pending (the first block truncates it
    /// beside its LayerNorm).
    fn embed(&self, c: &mut Ctx<'_>, cols: &Share) -> Op<Untruncated> {
        let cfg = &self.config;
        let f = c.frac_bits();
        let class = self.class_emb.scale_int(1 << f);
        let pos = self.positional_emb.scale_int(1 << f);
        linear_raw(c, cols, cfg.num_patches(), &self.conv, 0).map(move |tokens| Untruncated {
            raw: Share::concat(&[&class, &tokens]).add(&pos),
            shift: f,
        })
    }

    /// Final LayerNorm on the class token (the only row the classifier reads),
    /// then the classifier (which carries the norm's scale and shift), beside
    /// the truncation of the last block's output (for the trace).
    fn head(&self, c: &mut Ctx<'_>, x_raw: &Untruncated) -> Op<(Share, Share)> {
        let dim = self.config.dim;
        let p = layer_norm_params(&self.config, &self.params);
        let (xc, p) = centred(&x_raw.raw.slice(0..dim), 1, dim, x_raw.shift, p);
        let logits = c.layer_norm_linear(xc, &self.fc.w, self.fc.bias.as_ref(), 1, dim, p);
        x_raw.clone().truncate(c).join(logits)
    }
}

/// One block's stages for the trace, before its output is truncated.
struct BlockParts {
    attn_out: Share,
    residual: Share,
    normed: Share,
}

/// What one block's operators need: the public configuration, the
/// settings and this party's prepared block (cheap to clone into the
/// continuations of the block's [`Op`]).
#[derive(Clone, Debug)]
struct BlockStage {
    cfg: Arc<ModelConfig>,
    params: SecureParams,
    blk: Arc<PreparedBlock>,
    i: usize,
    /// The last block: after the attention, only the class token's row.
    class_only: bool,
}

impl BlockStage {
    /// The block on `x_raw` (the residual stream at `2f` bits, truncation
    /// pending): the truncated input, the block's stages and its output
    /// at `2f` bits, truncation pending. The input's truncation runs beside
    /// the attention (only the residual needs it), the residual's beside
    /// the second LayerNorm, and each LayerNorm truncates its centred rows
    /// in its own first opening. In the last block the residual, the
    /// second LayerNorm and the FFN take the class token's row only.
    fn run(&self, c: &mut Ctx<'_>, x_raw: &Untruncated) -> Op<(Share, BlockParts, Untruncated)> {
        let (n, dim) = (self.cfg.num_tokens(), self.cfg.dim);
        let (me, me2) = (self.clone(), self.clone());
        let lnp = layer_norm_params(&self.cfg, &self.params);
        let (xc, pre) = centred(&x_raw.raw, n, dim, x_raw.shift, lnp);
        let x = x_raw.clone().truncate(c);
        let rows = if self.class_only { 1 } else { n };
        x.join(self.attention(c, xc, pre))
            .then(move |c, (x, (attn_raw, extra))| {
                // the residual at f + extra bits (extra = f, or f + ATTN_INV_FRAC when folded)
                let kept = |s: &Share| s.slice(0..rows * dim);
                let raw = kept(&x).scale_int(1 << extra).add(&kept(&attn_raw));
                let (xc, lnp) = centred(&raw, rows, dim, extra, lnp);
                let blk = &me.blk;
                let residual = c.trunc(&raw, extra);
                let norm = c
                    .layer_norm_and_linear(
                        xc,
                        (&blk.norm1.gamma, &blk.norm1.beta),
                        (&blk.ffn_in.w, blk.ffn_in.bias.as_ref()),
                        rows,
                        dim,
                        lnp,
                    )
                    .then(move |c, (normed, first)| {
                        normed.truncate(c).join(me2.ffn(c, &first, rows))
                    });
                residual
                    .join(norm)
                    .map(move |(residual, (normed, ffn))| (x, residual, normed, ffn))
            })
            .map(move |(x, residual, normed, ffn)| {
                let out = Untruncated {
                    raw: normed.scale_int(1 << ffn.shift).add(&ffn.raw),
                    shift: ffn.shift,
                };
                let parts = BlockParts {
                    attn_out: residual.sub(&x.slice(0..residual.len())),
                    residual,
                    normed,
                };
                (x, parts, out)
            })
    }

    /// Attention branch: LayerNorm and qkv (one operator), then every head
    /// by the library's operator for its kind, all heads side by side
    /// (`Op::all`), then the projection; returned untruncated with its
    /// scale above `f` bits: `f` (the projection after the heads) or `f +
    /// ATTN_INV_FRAC` (folded into the heads' values, [`BlockStage::folded_head`]).
    /// In the last block only the class token's query attends (the keys
    /// and values are every token's), so the output is its row only.
    fn attention(
        &self,
        c: &mut Ctx<'_>,
        xc: Untruncated,
        lnp: LayerNormParams,
    ) -> Op<(Share, u32)> {
        let (n, dim) = (self.cfg.num_tokens(), self.cfg.dim);
        let queries = self.query_rows();
        let qkv = &self.blk.qkv;
        let me = self.clone();
        c.layer_norm_linear(xc, &qkv.w, qkv.bias.as_ref(), n, dim, lnp)
            .then(move |c, qkv| {
                let f = c.frac_bits();
                match &me.blk.proj {
                    Projection::Whole(proj) => {
                        let proj = proj.clone();
                        let heads = (0..me.cfg.heads).map(|h| me.head(c, &qkv, h)).collect();
                        Op::all(heads).then(move |c, outs| {
                            let d = me.cfg.head_dim();
                            // Concatenate heads: token t, head h → columns h·d..(h+1)·d.
                            let mut concat = vec![0u64; queries * dim];
                            for (h, o) in outs.iter().enumerate() {
                                for t in 0..queries {
                                    concat[t * dim + h * d..t * dim + (h + 1) * d]
                                        .copy_from_slice(&o.as_slice()[t * d..(t + 1) * d]);
                                }
                            }
                            linear_raw(c, &Share::new(concat), queries, &proj, 0)
                                .map(move |y| (y, f))
                        })
                    }
                    Projection::PerHead { rows, scale, bias } => {
                        let s = f + ATTN_INV_FRAC;
                        let bias = bias
                            .as_ref()
                            .map(|b| Share::new(tile(b.as_slice(), queries)).scale_int(1 << s));
                        let mut heads: Vec<Op<Share>> = rows
                            .iter()
                            .map(|(h, w)| me.folded_head(c, &qkv, *h, w))
                            .collect();
                        if let Some((hs, w)) = scale {
                            heads.push(me.scale_heads_projected(c, &qkv, hs, w));
                        }
                        Op::all(heads).map(move |outs| {
                            let mut sum = bias.unwrap_or_else(|| Share::zeros(queries * dim));
                            for o in &outs {
                                sum = sum.add(o);
                            }
                            (sum, s)
                        })
                    }
                }
            })
    }

    /// The ScaleAttn heads `hs` side by side, their outputs (n × d each)
    /// side by side projected by their stacked rows `w` of the output
    /// projection in one product (n × C at `2f + ATTN_INV_FRAC` bits,
    /// untruncated, `·2^ATTN_INV_FRAC` to match the attending heads).
    fn scale_heads_projected(
        &self,
        c: &mut Ctx<'_>,
        qkv: &Share,
        hs: &[usize],
        w: &MaskedWeight,
    ) -> Op<Share> {
        let cfg = &self.cfg;
        let (n, dim, d, rows) = (cfg.num_tokens(), cfg.dim, cfg.head_dim(), self.query_rows());
        let outs = hs
            .iter()
            .map(|&h| {
                let [q, k, v] = head_columns(qkv, n, dim, d, h);
                c.scale_attn(&q.slice(0..rows * d), &k, &v, rows, n, d, n)
            })
            .collect();
        let (w, k) = (w.clone(), hs.len());
        Op::all(outs)
            .then(move |c, outs| {
                // token t, j-th ScaleAttn head → columns j·d..(j+1)·d
                let mut side = vec![0u64; rows * k * d];
                for (j, o) in outs.iter().enumerate() {
                    for t in 0..rows {
                        side[t * k * d + j * d..t * k * d + (j + 1) * d]
                            .copy_from_slice(&o.as_slice()[t * d..(t + 1) * d]);
                    }
                }
                c.weight_matmul_raw(&Share::new(side), rows, &w)
            })
            .map(|y| y.scale_int(1 << ATTN_INV_FRAC))
    }

    /// Head `h` with its rows `w` of the output projection folded in (n × C
    /// at `2f + ATTN_INV_FRAC` bits, untruncated). A ReLU-softmax or
    /// Softmax head attends over the values `V·W_h` (computed beside the
    /// scores' comparison) and leaves the row scaling's product pending; a
    /// ScaleAttn head (in a block of ScaleAttn heads only, see
    /// [`stacked_heads`]) applies its attention matrix to `V·W_h`, both
    /// computed side by side, in one product left untruncated: 3 rounds.
    /// Other ScaleAttn heads go through [`BlockStage::scale_heads_projected`].
    fn folded_head(&self, c: &mut Ctx<'_>, qkv: &Share, h: usize, w: &MaskedWeight) -> Op<Share> {
        let cfg = &self.cfg;
        let (n, dim, d, rows) = (cfg.num_tokens(), cfg.dim, cfg.head_dim(), self.query_rows());
        let [q, k, v] = head_columns(qkv, n, dim, d, h);
        let q = q.slice(0..rows * d);
        let p = self.params;
        let w = w.clone();
        match cfg.attention[self.i][h] {
            AttnKind::ScaleAttn => {
                let vw = c.weight_matmul(&v, n, &w);
                c.scale_attn_weights(&q, &k, rows, n, d, n)
                    .join(vw)
                    .then(move |c, (a, vw)| c.matmul_raw(&a, &vw, rows, n, dim))
                    .map(|y| y.scale_int(1 << ATTN_INV_FRAC))
            }
            // V·W_h's product beside the scores, its truncation beside
            // the first round on them (the one-round ReLU's only round)
            kind => {
                let (rp, f) = (self.relu_attention_params(), c.frac_bits());
                let vw = c.weight_matmul_raw(&v, n, &w);
                c.attention_scores_untruncated(&q, &k, rows, n, d)
                    .join(vw)
                    .then(move |c, (s, vw)| {
                        let vw = c.trunc(&vw, f);
                        if kind == AttnKind::Softmax {
                            c.softmax_attention_untruncated(s, vw, rows, n, dim, p.score_bits)
                        } else {
                            c.relu_attention_untruncated(s, vw, rows, n, dim, rp)
                        }
                    })
                    .map(|y| y.raw)
            }
        }
    }

    /// The tokens whose queries attend: the class token's alone in the
    /// last block (nothing reads the other rows after it), else all.
    fn query_rows(&self) -> usize {
        if self.class_only {
            1
        } else {
            self.cfg.num_tokens()
        }
    }

    /// The ReLU-softmax heads' settings: the scores' comparison (in one
    /// round up to [`SecureParams::relu_one_round_scores`]), the model's eps.
    fn relu_attention_params(&self) -> ReluAttention {
        ReluAttention {
            bits: self.params.score_bits,
            coarse: self.params.score_coarse,
            one_round: one_round_relu(&self.cfg, &self.params),
            eps: f64::from(self.cfg.relu_softmax_eps),
            row_sum: self.params.row_sums,
        }
    }

    /// Head `h` of the attention on the qkv rows (N × 3C): ReLU-softmax,
    /// Softmax or ScaleAttn, each the mpc-core operator of that name.
    fn head(&self, c: &mut Ctx<'_>, qkv: &Share, h: usize) -> Op<Share> {
        let cfg = &self.cfg;
        let (n, dim, d, rows) = (cfg.num_tokens(), cfg.dim, cfg.head_dim(), self.query_rows());
        let [q, k, v] = head_columns(qkv, n, dim, d, h);
        let q = q.slice(0..rows * d);
        let p = self.params;
        match cfg.attention[self.i][h] {
            AttnKind::ScaleAttn => c.scale_attn(&q, &k, &v, rows, n, d, n),
            AttnKind::Softmax => c
                .attention_scores_untruncated(&q, &k, rows, n, d)
                .then(move |c, s| c.softmax_attention(s, &v, rows, n, d, p.score_bits)),
            AttnKind::ReluSoftmax => {
                let rp = self.relu_attention_params();
                c.attention_scores_untruncated(&q, &k, rows, n, d)
                    .then(move |c, s| c.relu_attention(s, &v, rows, n, d, rp))
            }
        }
    }

    /// FFN branch, given the first layer's output for the first `n` tokens
    /// (every token, or in the last block the class token; computed with
    /// `norm1`, see [`BlockStage::run`]): GeLU rows through GeLU and
    /// linear2; linearised rows (MPCViT+ `beta = 0`) through a ReLU of the
    /// fused layer, beside them. Returned untruncated at `3f − 5` bits:
    /// either GeLU reads its input at `f − 4` bits and its output goes into
    /// linear2 untruncated at `2f − 5` ([`GELU_INPUT_FRAC_DROP`]).
    fn ffn(&self, c: &mut Ctx<'_>, first: &Untruncated, n: usize) -> Op<Untruncated> {
        let cfg = &self.cfg;
        let (dim, m) = (cfg.dim, cfg.mlp_hidden);
        let f = c.frac_bits();
        let width = self.blk.ffn_in.w.cols();
        let mask = cfg.block_beta(self.i);
        let keep = |t: usize| mask.is_none_or(|m| m[t]);
        let gelu_rows: Vec<usize> = (0..n).filter(|&t| keep(t)).collect();
        let lin_rows: Vec<usize> = (0..n).filter(|&t| !keep(t)).collect();
        // `first` holds [z·W1' | z·F'] per token, its last truncation
        // pending (the GeLU's or ReLU's opening performs it).
        // the output's scale above f: the GeLU's untruncated output (at
        // 2·in_frac + 3 bits, so 2·in_frac + 3 − f above f) plus linear2's
        // weights' f
        let in_frac = f - GELU_INPUT_FRAC_DROP;
        let shift = 2 * in_frac + 3;
        let linearised = if lin_rows.is_empty() {
            Op::ready(Share::zeros(0))
        } else {
            let y = first.gather(&lin_rows, width, m..m + dim);
            c.relu_truncating(&y, self.params.relu_bits, 0)
                .map(move |r| r.scale_int(1 << shift))
        };
        let gelu = if gelu_rows.is_empty() {
            Op::ready(Share::zeros(0))
        } else {
            let h = first.gather(&gelu_rows, width, 0..m);
            let g = match cfg.gelu {
                GeluKind::Quad => c.gelu_quad_pending(h, in_frac),
                _ => c.gelu_pending(h, in_frac),
            }
            .map(move |g| {
                debug_assert_eq!(g.shift + f, shift);
                g.raw
            });
            let (rows, linear2) = (gelu_rows.len(), self.blk.linear2.clone());
            g.then(move |c, g| linear_raw(c, &g, rows, &linear2, shift - f))
        };
        linearised.join(gelu).map(move |(r, y)| {
            let mut out = vec![0u64; n * dim];
            for (j, &t) in lin_rows.iter().enumerate() {
                out[t * dim..(t + 1) * dim].copy_from_slice(&r.as_slice()[j * dim..(j + 1) * dim]);
            }
            for (j, &t) in gelu_rows.iter().enumerate() {
                out[t * dim..(t + 1) * dim].copy_from_slice(&y.as_slice()[j * dim..(j + 1) * dim]);
            }
            Untruncated {
                raw: Share::new(out),
                shift,
            }
        })
    }
}

/// Fractional bits below `f` at which the GeLU (quad or erf) reads its
/// input so that its output goes into linear2 untruncated
/// ([`Ctx::gelu_quad_pending`], [`Ctx::gelu_pending`]): the quad GeLU then
/// costs one round instead of two, the erf GeLU two instead of three, the
/// input keeps 2^−12 resolution, and the block's output (at `3f − 5` bits,
/// times the LayerNorm centring's `2^⌈log2 C⌉`) stays exact while `|x| <
/// 2^11`.
pub const GELU_INPUT_FRAC_DROP: u32 = 4;

/// Whether the ReLU-softmax heads' ReLU takes one round
/// ([`SecureParams::relu_one_round_scores`]).
pub(crate) fn one_round_relu(cfg: &ModelConfig, params: &SecureParams) -> bool {
    let n = cfg.num_tokens();
    let heads = cfg.attention.iter().flatten();
    let scores = heads.filter(|k| **k == AttnKind::ReluSoftmax).count() * n * n;
    scores <= params.relu_one_round_scores
}

/// LayerNorm settings of the secure forward, with the model's eps.
fn layer_norm_params(cfg: &ModelConfig, params: &SecureParams) -> LayerNormParams {
    LayerNormParams {
        eps: f64::from(cfg.layer_norm_eps),
        ..params.layer_norm
    }
}

/// The centred rows of a residual-stream value `raw` (rows × C at `f +
/// extra` bits) for a LayerNorm, scaled by `k = C / 2^⌈log2 C⌉` ∈ (1/2, 1]:
/// `center_rows` gives `C·(x − μ)` exactly, and the division by
/// `2^⌈log2 C⌉` joins the pending truncation (the LayerNorm's first opening
/// performs it), so no scale factor multiplies the rows on the way (which
/// would cost the ring 14 bits). With it, the LayerNorm settings for rows
/// scaled by `k`: eps and the variance domain times `k²`, so that
/// `LN(k·(x − μ)) = LN(x − μ)`.
fn centred(
    raw: &Share,
    rows: usize,
    dim: usize,
    extra: u32,
    p: LayerNormParams,
) -> (Untruncated, LayerNormParams) {
    let b = dim.next_power_of_two().trailing_zeros();
    let k2 = (dim as f64 / f64::from(1u32 << b)).powi(2);
    let scaled = LayerNormParams {
        eps: p.eps * k2,
        var: Domain {
            lo: p.var.lo * k2,
            hi: p.var.hi * k2,
        },
    };
    let xc = Untruncated {
        raw: center_rows(raw, rows, dim),
        shift: extra + b,
    };
    (xc, scaled)
}

/// Head `h`'s queries, keys and values (n × d each) from the qkv rows
/// (n × 3C; output channel `s·C + h·d + j` for s = q/k/v).
fn head_columns(qkv: &Share, n: usize, dim: usize, d: usize, h: usize) -> [Share; 3] {
    let column = |sel: usize| -> Share {
        let q = qkv.as_slice();
        let mut m = Vec::with_capacity(n * d);
        for t in 0..n {
            let start = t * 3 * dim + sel * dim + h * d;
            m.extend_from_slice(&q[start..start + d]);
        }
        Share::new(m)
    };
    [column(0), column(1), column(2)]
}

/// Whether the blocks fold the output projection into the heads' values
/// (see [`SecureParams::fold_ratio`]).
pub(crate) fn folds(cfg: &ModelConfig, params: &SecureParams) -> bool {
    params.fold_ratio > 0 && cfg.dim <= params.fold_ratio * cfg.head_dim()
}

/// `x·W + b` for `m` rows of `x` at `f + extra` bits, untruncated (`2f +
/// extra` bits; the bias is shifted up to match).
fn linear_raw(c: &mut Ctx<'_>, x: &Share, m: usize, l: &PreparedLinear, extra: u32) -> Op<Share> {
    let f = c.frac_bits();
    let bias = l
        .bias
        .as_ref()
        .map(|b| Share::new(tile(b.as_slice(), m)).scale_int(1 << (f + extra)));
    c.weight_matmul_raw(x, m, &l.w).map(move |y| match bias {
        Some(b) => y.add(&b),
        None => y,
    })
}

/// What one secure inference of a model costs, measured on this machine
/// with both parties as threads of one process over the in-memory channel
/// (no network; the model load and its weight masking are excluded).
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceCost {
    /// Wall time of the online phase (both parties in parallel), seconds.
    pub online_seconds: f64,
    /// Wall time of the dealer and the pool expansion, seconds.
    pub offline_seconds: f64,
    /// Bytes each party sends (the protocol is symmetric up to a few bytes: party 0's count).
    pub bytes_per_party: u64,
    /// Communication rounds.
    pub rounds: u64,
    /// Bytes the dealer sends to party 0 and to party 1.
    pub dealer_bytes: [u64; 2],
    /// Rounds and bytes of party 0 by operator kind (a round shared by
    /// several kinds counts for each; see [`mpc_core::OpProfile`]).
    pub by_op: Vec<(&'static str, mpc_core::OpCost)>,
    /// Bytes the dealer sends to party 0 and to party 1 by request kind
    /// ([`mpc_core::Request::kind`]), largest first.
    pub dealer_by_kind: Vec<(&'static str, [u64; 2])>,
    /// The reconstructed logits.
    pub logits: Vec<f32>,
}

/// Bytes the dealer sends to party 0 and to party 1 for `plan`, summed by
/// request kind.
fn dealer_bytes_by_kind(plan: &[mpc_core::Request]) -> Vec<(&'static str, [u64; 2])> {
    let mut by_kind: Vec<(&'static str, [u64; 2])> = Vec::new();
    for req in plan {
        let bytes = [mpc_core::Party::P0, mpc_core::Party::P1].map(|p| req.dealer_bytes(p) as u64);
        match by_kind.iter_mut().find(|(k, _)| *k == req.kind()) {
            Some((_, sum)) => {
                sum[0] += bytes[0];
                sum[1] += bytes[1];
            }
            None => by_kind.push((req.kind(), bytes)),
        }
    }
    by_kind
}

/// Run `model` securely on `image` (preprocessed, [`Model::forward`]'s
/// input) with both parties in this process and measure one inference:
/// the run with the image minus a run that only loads the model.
pub fn measure_inference(model: &Model, image: &[f32]) -> Result<InferenceCost> {
    measure_inference_with(model, image, SecureParams::default())
}

/// [`measure_inference`] with the given secure parameters.
pub fn measure_inference_with(
    model: &Model,
    image: &[f32],
    params: SecureParams,
) -> Result<InferenceCost> {
    use mpc_core::local::run_local;
    let mut prg = Prg::new(&mpc_core::Seed::random());
    let shares = split_weights(model, params.fp, &mut prg);
    let input = split_input(image, params.fp, &mut prg);
    let load = run_local(params.fp, |s| {
        SecureModel::prepare(s, &shares[s.party().index()], params)?;
        Ok::<_, ModelError>(s.profile().clone())
    })?;
    let full = run_local(params.fp, |s| {
        let p = s.party().index();
        let out = SecureModel::prepare(s, &shares[p], params)?.forward(s, &input[p])?;
        Ok::<_, ModelError>((out, s.profile().clone()))
    })?;
    let [(out0, profile), (out1, _)] = &full.outputs;
    let loaded = &load.outputs[0];
    let by_op = profile
        .iter()
        .filter_map(|(name, cost)| {
            let before = loaded.get(name).copied().unwrap_or_default();
            let cost = mpc_core::OpCost {
                rounds: cost.rounds - before.rounds,
                bytes: cost.bytes - before.bytes,
            };
            (cost.rounds > 0).then_some((*name, cost))
        })
        .collect();
    let logits = params
        .fp
        .decode_all(&mpc_core::reconstruct(out0, out1))
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let online = full.online[0] - load.online[0];
    let loaded_by_kind = dealer_bytes_by_kind(&load.plan);
    let mut dealer_by_kind = dealer_bytes_by_kind(&full.plan);
    for (kind, bytes) in &mut dealer_by_kind {
        if let Some((_, before)) = loaded_by_kind.iter().find(|(k, _)| k == kind) {
            bytes[0] -= before[0];
            bytes[1] -= before[1];
        }
    }
    dealer_by_kind.retain(|(_, b)| b[0] + b[1] > 0);
    dealer_by_kind.sort_by_key(|(_, b)| std::cmp::Reverse(b[0] + b[1]));
    Ok(InferenceCost {
        online_seconds: full
            .online_time
            .saturating_sub(load.online_time)
            .as_secs_f64(),
        offline_seconds: full
            .offline_time
            .saturating_sub(load.offline_time)
            .as_secs_f64(),
        bytes_per_party: online.bytes_sent,
        rounds: online.rounds,
        dealer_bytes: [
            full.dealer_bytes[0] - load.dealer_bytes[0],
            full.dealer_bytes[1] - load.dealer_bytes[1],
        ],
        by_op,
        dealer_by_kind,
        logits,
    })
}

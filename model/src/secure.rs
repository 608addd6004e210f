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
//! piecewise quadratic of `mpc_core::approx::gelu_piecewise` (error ≤ 7e-4);
//! softmax's exponential by `(1 + x/256)^256`; ReLU-softmax's and LayerNorm's
//! reciprocal and rsqrt piecewise linearly (relative error ≤ 1e-3 on their domains).

use mpc_core::nonlinear::{Domain, LayerNormParams, PiecewiseEval, ROW_SUMS, center_rows, tile};
use std::collections::HashMap;

use mpc_core::{FixedPoint, MaskedWeight, MatMulItem, Party, Prg, Session, Share, ring};
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
    /// Low bits the ReLU-softmax heads' score comparison ignores: a score in
    /// `[−2^coarse, 0)` ulps may pass the ReLU unchanged (error below
    /// `2^coarse` ulps per score), and each DCF key is `coarse` levels
    /// shallower (see `Session::relu_coarse`).
    pub score_coarse: u32,
    /// Comparison width for the linearised FFN's ReLU.
    pub relu_bits: u32,
    /// LayerNorm variance domain (eps comes from the model).
    pub layer_norm: LayerNormParams,
    /// Range of ReLU-softmax row sums.
    pub row_sums: Domain,
}

impl Default for SecureParams {
    fn default() -> Self {
        SecureParams {
            fp: FixedPoint::default(),
            score_bits: 24,
            score_coarse: 8,
            relu_bits: 32,
            layer_norm: LayerNormParams::default(),
            row_sums: ROW_SUMS,
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
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("metadata entry {k:?} is missing")))
        };
        if field("format")? != SHARE_FORMAT {
            return Err(bad(format!(
                "not a weight share file (format is not {SHARE_FORMAT:?})"
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
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
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
    ModelError::Secure(format!("weight share file: {m}"))
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

#[derive(Debug)]
struct PreparedLinear {
    w: MaskedWeight,
    bias: Option<Share>,
}

/// Masks weights in load order, numbering them for the dealer.
struct Masker(u32);

impl Masker {
    fn weight(&mut self, s: &mut Session, w: &Share, k: usize, n: usize) -> Result<MaskedWeight> {
        self.0 += 1;
        Ok(s.mask_weight(self.0 - 1, w, k, n)?)
    }

    fn linear(&mut self, s: &mut Session, l: &LinearShare) -> Result<PreparedLinear> {
        Ok(PreparedLinear {
            w: self.weight(s, &l.weight, l.in_features, l.out_features)?,
            bias: l.bias.clone(),
        })
    }
}

#[derive(Debug)]
struct PreparedNorm {
    gamma: MaskedWeight,
    beta: Share,
}

#[derive(Debug)]
struct PreparedBlock {
    qkv: PreparedLinear,
    proj: PreparedLinear,
    norm1: PreparedNorm,
    ffn_in: PreparedLinear,
    linear2: PreparedLinear,
}

/// Shares of one block's activations (`N × C` each), for stage-by-stage checks.
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
}

/// One party's prepared model: weight masks opened, ready for requests.
#[derive(Debug)]
pub struct SecureModel {
    config: ModelConfig,
    params: SecureParams,
    conv: PreparedLinear,
    class_emb: Share,
    positional_emb: Share,
    blocks: Vec<PreparedBlock>,
    fc: PreparedLinear,
}

impl SecureModel {
    /// Mask every linear weight (one round and `8·in·out` bytes each, once per
    /// model load). Both parties must call this with their own shares.
    pub fn prepare(s: &mut Session, shares: &WeightShares, params: SecureParams) -> Result<Self> {
        if shares.frac_bits != params.fp.frac_bits || s.frac_bits() != params.fp.frac_bits {
            return Err(ModelError::Secure(format!(
                "fixed point mismatch: shares at {} bits, params at {}, session at {}",
                shares.frac_bits,
                params.fp.frac_bits,
                s.frac_bits()
            )));
        }
        let mut m = Masker(0);
        let conv = m.linear(s, &shares.conv)?;
        let mut blocks = Vec::with_capacity(shares.blocks.len());
        for b in &shares.blocks {
            let c = b.norm1.gamma.len();
            blocks.push(PreparedBlock {
                qkv: m.linear(s, &b.qkv)?,
                proj: m.linear(s, &b.proj)?,
                norm1: PreparedNorm {
                    gamma: m.weight(s, &b.norm1.gamma, 1, c)?,
                    beta: b.norm1.beta.clone(),
                },
                ffn_in: m.linear(s, &b.ffn_in)?,
                linear2: m.linear(s, &b.linear2)?,
            });
        }
        let fc = m.linear(s, &shares.fc)?;
        Ok(SecureModel {
            config: shares.config.clone(),
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
    /// Each residual-stream value is formed untruncated (at `2f` fractional
    /// bits) and truncated in the same round as the next LayerNorm's centring
    /// ([`SecureModel::settle`]), which saves one round per LayerNorm.
    pub fn forward_trace(&self, s: &mut Session, image: &Share) -> Result<TraceShare> {
        let cfg = &self.config;
        let (embedded, mut xc) = self.embed(s, image)?;
        let mut x = embedded.clone();
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let (t, next_xc) = self.block(s, i, &x, &xc)?;
            x = t.output.clone();
            xc = next_xc;
            blocks.push(t);
        }
        let logits = self.head(s, &xc)?;
        Ok(TraceShare {
            embedded,
            blocks,
            logits,
        })
    }

    /// Truncate a residual-stream value `raw` (N×C at `2f` bits) to `f` bits,
    /// and in the same round centre its first `ln_rows` rows for the next
    /// LayerNorm (`x − μ`, from `center_rows` with the `1/C` folded in).
    fn settle(&self, s: &mut Session, raw: &Share, ln_rows: usize) -> Result<(Share, Share)> {
        let (f, c) = (s.frac_bits(), self.config.dim);
        let d = center_rows(&raw.slice(0..ln_rows * c), ln_rows, c);
        let mut t = s.trunc_scaled_many(&[(raw, f, 1.0), (&d, f, 1.0 / c as f64)])?;
        let xc = t.pop().expect("centred rows");
        Ok((t.pop().expect("residual"), xc))
    }

    /// Tokenizer and embeddings; returns the tokens and their centred rows.
    fn embed(&self, s: &mut Session, image: &Share) -> Result<(Share, Share)> {
        let cfg = &self.config;
        let f = s.frac_bits();
        let cols = Share::new(crate::plain::patches(cfg, image.as_slice())?);
        let tokens = linears_raw(s, &[(&cols, cfg.num_patches(), &self.conv)])?.remove(0);
        let raw = Share::concat(&[&self.class_emb.scale_int(1 << f), &tokens]);
        let raw = raw.add(&self.positional_emb.scale_int(1 << f));
        self.settle(s, &raw, cfg.num_tokens())
    }

    fn layer_norm_params(&self) -> LayerNormParams {
        LayerNormParams {
            eps: f64::from(self.config.layer_norm_eps),
            ..self.params.layer_norm
        }
    }

    /// LayerNorm of `rows` centred tokens followed by `next`, which carries
    /// the norm's scale and shift (see [`fold_norm`]).
    fn norm_linear(
        &self,
        s: &mut Session,
        xc: &Share,
        rows: usize,
        next: &PreparedLinear,
    ) -> Result<Share> {
        let p = self.layer_norm_params();
        Ok(s.layer_norm_linear(xc, &next.w, next.bias.as_ref(), rows, self.config.dim, p)?)
    }

    /// One block on `x` (with `xc`, its centred rows); returns the trace and
    /// the centred rows of the output for the next LayerNorm.
    fn block(
        &self,
        s: &mut Session,
        i: usize,
        x: &Share,
        xc: &Share,
    ) -> Result<(BlockTraceShare, Share)> {
        let (n, f) = (self.config.num_tokens(), s.frac_bits());
        let attn_raw = self.attention(s, i, xc)?;
        let (residual, yc) = self.settle(s, &x.scale_int(1 << f).add(&attn_raw), n)?;
        let attn_out = residual.sub(x);
        let blk = &self.blocks[i];
        let (normed, first) = s.layer_norm_and_linear(
            &yc,
            (&blk.norm1.gamma, &blk.norm1.beta),
            (&blk.ffn_in.w, blk.ffn_in.bias.as_ref()),
            n,
            self.config.dim,
            self.layer_norm_params(),
        )?;
        let ffn_raw = self.ffn(s, i, &first)?;
        let last = i + 1 == self.config.depth;
        let (output, next) = self.settle(
            s,
            &normed.scale_int(1 << f).add(&ffn_raw),
            if last { 1 } else { n },
        )?;
        let trace = BlockTraceShare {
            attn_out,
            residual,
            normed,
            output,
        };
        Ok((trace, next))
    }

    /// Attention branch, all heads of a kind batched: scores (one product
    /// round, one truncation with 1/√d or 1/(√d·N) folded in); softmax heads;
    /// ReLU of the ReLU-softmax heads; the second product of every head in one
    /// round (R·V, P·V, Q·(KᵀV)); the ReLU-softmax normalisation after the
    /// product; the projection, returned untruncated (`2f` bits).
    fn attention(&self, s: &mut Session, i: usize, xc: &Share) -> Result<Share> {
        let cfg = &self.config;
        let blk = &self.blocks[i];
        let (n, c, d) = (cfg.num_tokens(), cfg.dim, cfg.head_dim());
        let f = s.frac_bits();
        let qkv = self.norm_linear(s, xc, n, &blk.qkv)?;
        let column = |sel: usize, h: usize| -> Share {
            let q = qkv.as_slice();
            let mut m = Vec::with_capacity(n * d);
            for t in 0..n {
                let start = t * 3 * c + sel * c + h * d;
                m.extend_from_slice(&q[start..start + d]);
            }
            Share::new(m)
        };
        let kinds = &cfg.attention[i];
        let heads: Vec<(Share, Share, Share)> = (0..cfg.heads)
            .map(|h| (column(0, h), column(1, h), column(2, h)))
            .collect();
        let kts: Vec<Share> = heads
            .iter()
            .map(|(_, k, _)| Share::new(ring::transpose(k.as_slice(), n, d)))
            .collect();
        let scale_first = d < n; // ScaleAttn as Q·(KᵀV)
        // Round 1-2: scores (or KᵀV for ScaleAttn heads), then truncation.
        let mut items = Vec::with_capacity(cfg.heads);
        let mut scales = Vec::with_capacity(cfg.heads);
        for h in 0..cfg.heads {
            let (q, _, v) = &heads[h];
            let inv_sqrt_d = 1.0 / (d as f64).sqrt();
            if kinds[h] == AttnKind::ScaleAttn && scale_first {
                items.push(MatMulItem {
                    x: &kts[h],
                    y: v,
                    m: d,
                    k: n,
                    n: d,
                });
            } else {
                items.push(MatMulItem {
                    x: q,
                    y: &kts[h],
                    m: n,
                    k: d,
                    n,
                });
            }
            scales.push(if kinds[h] == AttnKind::ScaleAttn {
                inv_sqrt_d / n as f64
            } else {
                inv_sqrt_d
            });
        }
        let raw = s.matmul_raw_many(&items)?;
        let parts: Vec<(&Share, u32, f64)> =
            raw.iter().zip(&scales).map(|(r, sc)| (r, f, *sc)).collect();
        let first = s.trunc_scaled_many(&parts)?;

        let of_kind =
            |k: AttnKind| -> Vec<usize> { (0..cfg.heads).filter(|h| kinds[*h] == k).collect() };
        let (soft, rs) = (of_kind(AttnKind::Softmax), of_kind(AttnKind::ReluSoftmax));
        let stack =
            |hs: &[usize]| Share::concat(&hs.iter().map(|h| &first[*h]).collect::<Vec<_>>());
        let mut left: Vec<Option<Share>> = vec![None; cfg.heads];
        if !soft.is_empty() {
            let p = s.softmax(&stack(&soft), soft.len() * n, n, self.params.score_bits)?;
            for (j, part) in p.split(&vec![n * n; soft.len()]).into_iter().enumerate() {
                left[soft[j]] = Some(part);
            }
        }
        let mut rs_sums = None;
        if !rs.is_empty() {
            let r = s.relu_coarse(
                &stack(&rs),
                self.params.score_bits,
                self.params.score_coarse,
            )?;
            rs_sums = Some(Share::new(ring::row_sums(r.as_slice(), rs.len() * n, n)));
            for (j, part) in r.split(&vec![n * n; rs.len()]).into_iter().enumerate() {
                left[rs[j]] = Some(part);
            }
        }
        // Second product of every head in one round: P·V, R·V, Q·(KᵀV) or S·V.
        let mut items = Vec::with_capacity(cfg.heads);
        for h in 0..cfg.heads {
            let (q, _, v) = &heads[h];
            items.push(match (&left[h], kinds[h]) {
                (Some(p), _) => MatMulItem {
                    x: p,
                    y: v,
                    m: n,
                    k: n,
                    n: d,
                },
                (None, _) if scale_first => MatMulItem {
                    x: q,
                    y: &first[h],
                    m: n,
                    k: d,
                    n: d,
                },
                (None, _) => MatMulItem {
                    x: &first[h],
                    y: v,
                    m: n,
                    k: n,
                    n: d,
                },
            });
        }
        // The ReLU-softmax row sums' reciprocal starts in the same round (its
        // comparison) and ends in the same truncation round as the products.
        let second = s.matmul_raw_many_begin(&items)?;
        let (raw, recip) = match &rs_sums {
            Some(sums) => {
                let sums = s.add_scalar(sums, s.encode(f64::from(cfg.relu_softmax_eps)));
                let pe = PiecewiseEval::reciprocal(self.params.row_sums, f);
                let cmp = s.ge_thresholds_begin(&sums, &pe.thresholds(f), pe.bits)?;
                let (raw, g) = s.finish2(second, cmp)?;
                let (inv_raw, shift) =
                    s.piecewise_raw(&sums, &g, &pe.pw, pe.out_frac, pe.max_out)?;
                (raw, Some((inv_raw, shift)))
            }
            None => (s.finish(second)?, None),
        };
        let mut parts: Vec<(&Share, u32)> = raw.iter().map(|r| (r, f)).collect();
        if let Some((inv_raw, shift)) = &recip {
            parts.push((inv_raw, *shift));
        }
        let mut outs = s.trunc_many(&parts)?;
        if recip.is_some() {
            let inv = outs.pop().expect("reciprocal");
            let rv = Share::concat(&rs.iter().map(|h| &outs[*h]).collect::<Vec<_>>());
            let y = s.mul_rows_raw(&rv, &inv, rs.len() * n, d)?;
            let y = s.trunc(&y, f + mpc_core::nonlinear::EXTRA_FRAC)?;
            for (j, part) in y.split(&vec![n * d; rs.len()]).into_iter().enumerate() {
                outs[rs[j]] = part;
            }
        }
        // Concatenate heads: token t, head h → columns h·d..(h+1)·d.
        let mut concat = vec![0u64; n * c];
        for (h, o) in outs.iter().enumerate() {
            for t in 0..n {
                concat[t * c + h * d..t * c + (h + 1) * d]
                    .copy_from_slice(&o.as_slice()[t * d..(t + 1) * d]);
            }
        }
        Ok(linears_raw(s, &[(&Share::new(concat), n, &blk.proj)])?.remove(0))
    }

    /// FFN branch, given the first layer's output for every token (computed
    /// with `norm1`, see [`SecureModel::block`]): GeLU rows through GeLU and
    /// linear2; linearised rows (MPCViT+ `beta = 0`) through a ReLU of the
    /// fused layer. Returned untruncated (`2f` bits).
    fn ffn(&self, s: &mut Session, i: usize, first: &Share) -> Result<Share> {
        let cfg = &self.config;
        let blk = &self.blocks[i];
        let (n, c, m) = (cfg.num_tokens(), cfg.dim, cfg.mlp_hidden);
        let width = blk.ffn_in.w.cols();
        let mask = cfg.block_beta(i);
        let keep = |t: usize| mask.is_none_or(|m| m[t]);
        let gelu_rows: Vec<usize> = (0..n).filter(|&t| keep(t)).collect();
        let lin_rows: Vec<usize> = (0..n).filter(|&t| !keep(t)).collect();
        if !lin_rows.is_empty() && width != m + c {
            return Err(ModelError::Secure(format!(
                "block {i}: linearised tokens without a fused FFN"
            )));
        }
        // `first` holds [z·W1' | z·F'] per token; take each token's part.
        let gather = |rows: &[usize], cols: std::ops::Range<usize>| -> Share {
            Share::new(
                rows.iter()
                    .flat_map(|&t| {
                        first.as_slice()[t * width + cols.start..t * width + cols.end]
                            .iter()
                            .copied()
                    })
                    .collect(),
            )
        };
        let hidden = (!gelu_rows.is_empty()).then(|| gather(&gelu_rows, 0..m));
        let lin = (!lin_rows.is_empty()).then(|| gather(&lin_rows, m..m + c));
        let mut out = vec![0u64; n * c];
        if let Some(y) = lin {
            let r = s
                .relu(&y, self.params.relu_bits)?
                .scale_int(1 << s.frac_bits());
            for (j, &t) in lin_rows.iter().enumerate() {
                out[t * c..(t + 1) * c].copy_from_slice(&r.as_slice()[j * c..(j + 1) * c]);
            }
        }
        if let Some(h) = hidden {
            let g = match cfg.gelu {
                GeluKind::Quad => s.gelu_quad(&h)?,
                _ => s.gelu(&h)?,
            };
            let y = linears_raw(s, &[(&g, gelu_rows.len(), &blk.linear2)])?.remove(0);
            for (j, &t) in gelu_rows.iter().enumerate() {
                out[t * c..(t + 1) * c].copy_from_slice(&y.as_slice()[j * c..(j + 1) * c]);
            }
        }
        Ok(Share::new(out))
    }

    /// Final LayerNorm on the class token (the only row the classifier reads),
    /// then the classifier (which carries the norm's scale and shift).
    /// `xc` is the centred class-token row.
    fn head(&self, s: &mut Session, xc: &Share) -> Result<Share> {
        self.norm_linear(s, xc, 1, &self.fc)
    }
}

/// `x·W + b` for several layers in one product round, untruncated (`2f`
/// bits; the bias is shifted up to match).
fn linears_raw(s: &mut Session, items: &[(&Share, usize, &PreparedLinear)]) -> Result<Vec<Share>> {
    let f = s.frac_bits();
    let prods: Vec<(&Share, usize, &MaskedWeight)> =
        items.iter().map(|(x, m, l)| (*x, *m, &l.w)).collect();
    let raw = s.weight_matmul_raw_many(&prods)?;
    Ok(raw
        .into_iter()
        .zip(items)
        .map(|(y, (_, m, l))| match &l.bias {
            Some(b) => y.add(&Share::new(tile(b.as_slice(), *m)).scale_int(1 << f)),
            None => y,
        })
        .collect())
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
    /// The reconstructed logits.
    pub logits: Vec<f32>,
}

/// Run `model` securely on `image` (preprocessed, [`Model::forward`]'s
/// input) with both parties in this process and measure one inference:
/// the run with the image minus a run that only loads the model.
pub fn measure_inference(model: &Model, image: &[f32]) -> Result<InferenceCost> {
    use mpc_core::local::run_local;
    let params = SecureParams::default();
    let mut prg = Prg::new(&mpc_core::Seed::random());
    let shares = split_weights(model, params.fp, &mut prg);
    let input = split_input(image, params.fp, &mut prg);
    let load = run_local(params.fp, |s| {
        SecureModel::prepare(s, &shares[s.party().index()], params).map(|_| ())
    })?;
    let full = run_local(params.fp, |s| {
        let p = s.party().index();
        SecureModel::prepare(s, &shares[p], params)?.forward(s, &input[p])
    })?;
    let [out0, out1] = &full.outputs;
    let logits = params
        .fp
        .decode_all(&mpc_core::reconstruct(out0, out1))
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let online = full.online[0] - load.online[0];
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
        logits,
    })
}

//! Weights: the paper's PyTorch state dict, read from and written to safetensors.
//!
//! Names and layouts are exactly the paper's (`ViTLite` of PKU-SEC-Lab/mpcvit, CCT layout):
//!
//! | state-dict name | shape | role |
//! |---|---|---|
//! | `tokenizer.conv_layers.0.0.weight` | `[C, in, p, p]` | patch conv (kernel = stride = p) |
//! | `tokenizer.conv_layers.0.0.bias` | `[C]` | |
//! | `classifier.class_emb` | `[1, 1, C]` | class token |
//! | `classifier.positional_emb` | `[1, N, C]` | learnable (or fixed sine) positions, class token first |
//! | `classifier.blocks.{i}.pre_norm.{weight,bias}` | `[C]` | LayerNorm before attention |
//! | `classifier.blocks.{i}.self_attn.qkv.weight` | `[3C, C]` | no bias; row `s·C + h·d + j` |
//! | `classifier.blocks.{i}.self_attn.proj.{weight,bias}` | `[C, C]`, `[C]` | |
//! | `classifier.blocks.{i}.self_attn.alpha` | `[1, H, 1, 1]` | 1 = ReLU-Softmax, 0 = ScaleAttn |
//! | `classifier.blocks.{i}.linear1.{weight,bias}` | `[M, C]`, `[M]` | |
//! | `classifier.blocks.{i}.norm1.{weight,bias}` | `[C]` | LayerNorm after the attention residual |
//! | `classifier.blocks.{i}.linear2.{weight,bias}` | `[C, M]`, `[C]` | |
//! | `classifier.blocks.{i}.beta` | `[1, N, 1]` | MPCViT+ only: 1 = GeLU FFN, 0 = linearised |
//! | `classifier.norm.{weight,bias}` | `[C]` | final LayerNorm |
//! | `classifier.fc.{weight,bias}` | `[classes, C]`, `[classes]` | |
//!
//! `self_attn.alpha` may be absent only for a block whose heads are all
//! [`AttnKind::Softmax`] (the paper's teacher has no alpha); its entries for Softmax heads
//! are not checked. `beta` is present exactly for the blocks that have a mask in the
//! manifest.

use std::collections::{BTreeSet, HashMap};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::config::{AttnKind, ModelConfig};
use crate::error::{ModelError, Result};

/// A fully connected layer `y = W·x + b` with PyTorch's `[out, in]` row-major weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// Output width.
    pub out_features: usize,
    /// Input width.
    pub in_features: usize,
    /// `weight[o * in_features + i]`.
    pub weight: Vec<f32>,
    /// Bias of length `out_features`, if the layer has one.
    pub bias: Option<Vec<f32>>,
}

/// A LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) · weight + bias`
/// with the biased variance, as `torch.nn.LayerNorm`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    /// Scale (`gamma`).
    pub weight: Vec<f32>,
    /// Shift (`beta` of the norm, not MPCViT+'s beta).
    pub bias: Vec<f32>,
    /// Epsilon inside the square root.
    pub eps: f32,
}

/// The tokenizer's patch convolution: `Conv2d(in, C, kernel = stride = p, padding 0)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchConv {
    /// `weight[((o * in + c) * p + ky) * p + kx]`.
    pub weight: Vec<f32>,
    /// Bias of length `C`.
    pub bias: Vec<f32>,
}

/// Weights of one transformer block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockWeights {
    /// LayerNorm applied before attention.
    pub pre_norm: LayerNorm,
    /// `Linear(C, 3C, bias = False)`.
    pub qkv: Linear,
    /// Attention output projection `Linear(C, C)`.
    pub proj: Linear,
    /// LayerNorm applied after the attention residual (`norm1`).
    pub norm1: LayerNorm,
    /// FFN first layer `Linear(C, M)`.
    pub linear1: Linear,
    /// FFN second layer `Linear(M, C)`.
    pub linear2: Linear,
}

/// All weights of the network (alpha and beta live in the [`ModelConfig`] tables).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// Patch tokenizer.
    pub conv: PatchConv,
    /// Class token, length `C`.
    pub class_emb: Vec<f32>,
    /// Positional embedding, `N × C` row-major (token 0 is the class token).
    pub positional_emb: Vec<f32>,
    /// The transformer blocks.
    pub blocks: Vec<BlockWeights>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    /// Classifier `Linear(C, classes)`.
    pub fc: Linear,
}

/// The state-dict name of a block tensor, e.g. `block_name(3, "self_attn.alpha")`.
pub fn block_name(block: usize, suffix: &str) -> String {
    format!("classifier.blocks.{block}.{suffix}")
}

struct Reader<'a> {
    st: SafeTensors<'a>,
    used: BTreeSet<String>,
}

impl<'a> Reader<'a> {
    fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// Reads `name`, checks its shape, converts to f32 and checks every value is finite.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = self
            .st
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor {
                name: name.to_string(),
            })?;
        if view.shape() != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let data = to_f32(name, &view)?;
        if let Some(index) = data.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite {
                name: name.to_string(),
                index,
                value: data[index],
            });
        }
        self.used.insert(name.to_string());
        Ok(data)
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let weight = self.take(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(self.take(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear {
            out_features: out,
            in_features: inp,
            weight,
            bias,
        })
    }

    fn layer_norm(&mut self, prefix: &str, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.take(&format!("{prefix}.weight"), &[dim])?,
            bias: self.take(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    /// Fails on the first (in sorted order) tensor of the file that was not read.
    fn finish(self) -> Result<()> {
        let mut names: Vec<&String> = self.st.names();
        names.sort();
        match names.into_iter().find(|n| !self.used.contains(n.as_str())) {
            Some(name) => Err(ModelError::UnexpectedTensor { name: name.clone() }),
            None => Ok(()),
        }
    }
}

fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let bytes = view.data();
    let out = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        other => {
            return Err(ModelError::UnsupportedDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(out)
}

/// IEEE 754 binary16 to binary32 (exact: every half value is a float value).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    match exp {
        0 => sign * (mant as f32) * f32::powi(2.0, -24),
        0x1f => f32::from_bits((u32::from(h & 0x8000) << 16) | 0x7f80_0000 | (mant << 13)),
        _ => f32::from_bits((u32::from(h & 0x8000) << 16) | ((exp + 112) << 23) | (mant << 13)),
    }
}

/// The alpha value the paper stores for a head of this kind (Softmax heads have none in
/// the paper; 1, the paper's initial value, is written for them).
pub fn alpha_for(kind: AttnKind) -> f32 {
    match kind {
        AttnKind::ReluSoftmax | AttnKind::Softmax => 1.0,
        AttnKind::ScaleAttn => 0.0,
    }
}

/// Whether block `block` carries a `self_attn.alpha` tensor when written.
fn writes_alpha(config: &ModelConfig, block: usize) -> bool {
    config.attention[block]
        .iter()
        .any(|k| *k != AttnKind::Softmax)
}

const BINARY_TOL: f32 = 1e-6;

/// The sizes that shape the weights, read once from a config: `c` the width, `m` the
/// MLP's hidden width, `n` the tokens, `h` the heads, `p` the patch side, `k` the input
/// channels, `eps` the LayerNorm's epsilon.
struct Dims {
    c: usize,
    m: usize,
    n: usize,
    h: usize,
    p: usize,
    k: usize,
    eps: f32,
}

impl Dims {
    fn of(config: &ModelConfig) -> Self {
        Self {
            c: config.dim,
            m: config.mlp_hidden,
            n: config.num_tokens(),
            h: config.heads,
            p: config.patch_size,
            k: config.in_channels,
            eps: config.layer_norm_eps,
        }
    }
}

impl Weights {
    /// Reads weights from safetensors bytes for `config` (which must be normalised:
    /// [`ModelConfig::normalized`]), checking names, shapes, dtypes, finiteness, and that
    /// the file's `alpha` / `beta` agree with the manifest's tables.
    pub fn from_safetensors(config: &ModelConfig, bytes: &[u8]) -> Result<Self> {
        config.validate()?;
        let mut r = Reader {
            st: SafeTensors::deserialize(bytes)?,
            used: BTreeSet::new(),
        };
        let Dims {
            c,
            m,
            n,
            h,
            p,
            k,
            eps,
        } = Dims::of(config);
        let conv = PatchConv {
            weight: r.take("tokenizer.conv_layers.0.0.weight", &[c, k, p, p])?,
            bias: r.take("tokenizer.conv_layers.0.0.bias", &[c])?,
        };
        let class_emb = r.take("classifier.class_emb", &[1, 1, c])?;
        let positional_emb = r.take("classifier.positional_emb", &[1, n, c])?;
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let b = |s: &str| block_name(i, s);
            let block = BlockWeights {
                pre_norm: r.layer_norm(&b("pre_norm"), c, eps)?,
                qkv: r.linear(&b("self_attn.qkv"), 3 * c, c, false)?,
                proj: r.linear(&b("self_attn.proj"), c, c, true)?,
                norm1: r.layer_norm(&b("norm1"), c, eps)?,
                linear1: r.linear(&b("linear1"), m, c, true)?,
                linear2: r.linear(&b("linear2"), c, m, true)?,
            };
            let alpha_name = b("self_attn.alpha");
            if writes_alpha(config, i) || r.has(&alpha_name) {
                let alpha = r.take(&alpha_name, &[1, h, 1, 1])?;
                for (head, (&a, &kind)) in alpha.iter().zip(&config.attention[i]).enumerate() {
                    if kind != AttnKind::Softmax && (a - alpha_for(kind)).abs() > BINARY_TOL {
                        return Err(ModelError::AlphaMismatch {
                            name: alpha_name,
                            head,
                            alpha: a,
                            expected: kind,
                        });
                    }
                }
            }
            let beta_name = b("beta");
            match config.block_beta(i) {
                Some(mask) => {
                    let beta = r.take(&beta_name, &[1, n, 1])?;
                    for (token, (&v, &want)) in beta.iter().zip(mask).enumerate() {
                        let target = if want { 1.0 } else { 0.0 };
                        if (v - target).abs() > BINARY_TOL {
                            return Err(ModelError::BetaMismatch {
                                name: beta_name,
                                token,
                                beta: v,
                                expected: want,
                            });
                        }
                    }
                }
                None if r.has(&beta_name) => {
                    return Err(ModelError::UnexpectedBeta {
                        name: beta_name,
                        block: i,
                    });
                }
                None => {}
            }
            blocks.push(block);
        }
        let norm = r.layer_norm("classifier.norm", c, eps)?;
        let fc = r.linear("classifier.fc", config.num_classes, c, true)?;
        r.finish()?;
        Ok(Self {
            conv,
            class_emb,
            positional_emb,
            blocks,
            norm,
            fc,
        })
    }

    /// Every tensor with its state-dict name and shape, in a fixed order, including the
    /// `alpha` / `beta` tensors derived from `config`'s tables.
    pub fn named_tensors(&self, config: &ModelConfig) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let Dims { c, n, h, p, k, .. } = Dims::of(config);
        let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let mut push = |name: String, shape: Vec<usize>, data: &[f32]| {
            out.push((name, shape, data.to_vec()));
        };
        push(
            "tokenizer.conv_layers.0.0.weight".into(),
            vec![c, k, p, p],
            &self.conv.weight,
        );
        push(
            "tokenizer.conv_layers.0.0.bias".into(),
            vec![c],
            &self.conv.bias,
        );
        push(
            "classifier.class_emb".into(),
            vec![1, 1, c],
            &self.class_emb,
        );
        push(
            "classifier.positional_emb".into(),
            vec![1, n, c],
            &self.positional_emb,
        );
        fn lin(push: &mut impl FnMut(String, Vec<usize>, &[f32]), prefix: String, l: &Linear) {
            push(
                format!("{prefix}.weight"),
                vec![l.out_features, l.in_features],
                &l.weight,
            );
            if let Some(b) = &l.bias {
                push(format!("{prefix}.bias"), vec![l.out_features], b);
            }
        }
        fn ln(push: &mut impl FnMut(String, Vec<usize>, &[f32]), prefix: String, l: &LayerNorm) {
            push(format!("{prefix}.weight"), vec![l.weight.len()], &l.weight);
            push(format!("{prefix}.bias"), vec![l.bias.len()], &l.bias);
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            ln(&mut push, block_name(i, "pre_norm"), &blk.pre_norm);
            lin(&mut push, block_name(i, "self_attn.qkv"), &blk.qkv);
            lin(&mut push, block_name(i, "self_attn.proj"), &blk.proj);
            if writes_alpha(config, i) {
                let alpha: Vec<f32> = config.attention[i].iter().map(|&k| alpha_for(k)).collect();
                push(block_name(i, "self_attn.alpha"), vec![1, h, 1, 1], &alpha);
            }
            lin(&mut push, block_name(i, "linear1"), &blk.linear1);
            ln(&mut push, block_name(i, "norm1"), &blk.norm1);
            lin(&mut push, block_name(i, "linear2"), &blk.linear2);
            if let Some(mask) = config.block_beta(i) {
                let beta: Vec<f32> = mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
                push(block_name(i, "beta"), vec![1, n, 1], &beta);
            }
        }
        ln(&mut push, "classifier.norm".into(), &self.norm);
        lin(&mut push, "classifier.fc".into(), &self.fc);
        out
    }

    /// Writes the weights as F32 safetensors with the paper's names (alpha and beta
    /// written from `config`'s tables).
    pub fn to_safetensors(&self, config: &ModelConfig) -> Result<Vec<u8>> {
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .named_tensors(config)
            .into_iter()
            .map(|(name, shape, data)| {
                let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, shape, bytes)
            })
            .collect();
        let mut views = Vec::with_capacity(tensors.len());
        for (name, shape, bytes) in &tensors {
            views.push((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ));
        }
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        Ok(safetensors::serialize(views, &Some(metadata))?)
    }

    /// Checks that every tensor has the shape `config` implies and is finite (for weights
    /// built in memory rather than loaded).
    pub fn check(&self, config: &ModelConfig) -> Result<()> {
        if self.blocks.len() != config.depth {
            return Err(ModelError::InvalidConfig {
                field: "depth",
                reason: format!(
                    "config has {} blocks, weights have {}",
                    config.depth,
                    self.blocks.len()
                ),
            });
        }
        let bytes = self.to_safetensors(config)?;
        Self::from_safetensors(config, &bytes).map(|_| ())
    }

    /// Synthetic weights for tests and benchmarks: a deterministic function of `seed`,
    /// scaled so activations stay of order one (linear weights with std `1/√fan_in`,
    /// norms near identity).
    pub fn random(config: &ModelConfig, seed: u64) -> Self {
        let rng = &mut SplitMix64(seed);
        let Dims {
            c, m, n, p, k, eps, ..
        } = Dims::of(config);
        let conv = PatchConv {
            weight: rng.normals(c * k * p * p, 0.0, 1.0 / ((k * p * p) as f32).sqrt()),
            bias: rng.normals(c, 0.0, 0.1),
        };
        let class_emb = rng.normals(c, 0.0, 0.2);
        let positional_emb = rng.normals(n * c, 0.0, 0.2);
        let blocks = (0..config.depth)
            .map(|_| BlockWeights {
                pre_norm: rng.layer_norm(c, eps),
                qkv: rng.linear(3 * c, c, false),
                proj: rng.linear(c, c, true),
                norm1: rng.layer_norm(c, eps),
                linear1: rng.linear(m, c, true),
                linear2: rng.linear(c, m, true),
            })
            .collect();
        let norm = rng.layer_norm(c, eps);
        let fc = rng.linear(config.num_classes, c, true);
        Self {
            conv,
            class_emb,
            positional_emb,
            blocks,
            norm,
            fc,
        }
    }
}

/// A tiny deterministic generator for synthetic weights (not for anything secret).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]`.
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    fn normals(&mut self, len: usize, mean: f32, std: f32) -> Vec<f32> {
        (0..len).map(|_| mean + std * self.normal()).collect()
    }

    fn linear(&mut self, out: usize, inp: usize, bias: bool) -> Linear {
        Linear {
            out_features: out,
            in_features: inp,
            weight: self.normals(out * inp, 0.0, 1.0 / (inp as f32).sqrt()),
            bias: bias.then(|| self.normals(out, 0.0, 0.1)),
        }
    }

    fn layer_norm(&mut self, dim: usize, eps: f32) -> LayerNorm {
        LayerNorm {
            weight: self.normals(dim, 1.0, 0.1),
            bias: self.normals(dim, 0.0, 0.1),
            eps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), f32::powi(2.0, -24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}

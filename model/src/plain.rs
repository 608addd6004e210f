//! The plaintext f32 forward, layer by layer.
//!
//! Each stage is a free function with the same boundaries a secure forward will have:
//! [`embed`] (patch conv + class token + positions), per block [`attention`] (pre-norm,
//! qkv, per-head scores and weights, proj) and [`ffn`] (GeLU MLP or the MPCViT+
//! linearised path), and [`head`] (final norm, class token, classifier). Activations are
//! row-major `tokens × features` matrices in `Vec<f32>`.
//!
//! The block is the paper's CCT layout (not the usual pre-norm):
//!
//! ```text
//! y   = x + Proj(Attn(LN_pre(x)))
//! z   = LN_1(y)
//! out = z + FFN(z)
//! ```

use crate::config::{AttnKind, GeluKind, ModelConfig};
use crate::error::{ModelError, Result};
use crate::network::Model;
use crate::weights::{BlockWeights, LayerNorm, Linear, Weights};

/// Activations of one block, each `N × C`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTrace {
    /// `Proj(Attn(LN_pre(x)))`, the attention branch before the residual.
    pub attn_out: Vec<f32>,
    /// `y = x + attn_out`.
    pub residual: Vec<f32>,
    /// `z = LN_1(y)`.
    pub normed: Vec<f32>,
    /// The block output `z + FFN(z)`.
    pub output: Vec<f32>,
}

/// Every intermediate of a forward pass, for comparing another implementation (e.g. the
/// secure forward) stage by stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Tokens after the patch conv, class token and positional embedding, `N × C`.
    pub embedded: Vec<f32>,
    /// One entry per block.
    pub blocks: Vec<BlockTrace>,
    /// All tokens after the final LayerNorm, `N × C`.
    pub final_norm: Vec<f32>,
    /// The logits, length `classes`.
    pub logits: Vec<f32>,
}

impl Model {
    /// Logits for one normalised CHW image of length
    /// [`ModelConfig::input_len`].
    pub fn forward(&self, image: &[f32]) -> Result<Vec<f32>> {
        Ok(self.forward_trace(image)?.logits)
    }

    /// Like [`Model::forward`] but keeps every intermediate.
    pub fn forward_trace(&self, image: &[f32]) -> Result<Trace> {
        let (config, weights) = (self.config(), self.weights());
        let embedded = embed(config, weights, image)?;
        let mut x = embedded.clone();
        let mut blocks = Vec::with_capacity(config.depth);
        for (i, blk) in weights.blocks.iter().enumerate() {
            let t = block(config, i, blk, self.fused_ffn(i), &x);
            x.clone_from(&t.output);
            blocks.push(t);
        }
        let (final_norm, logits) = head(config, weights, &x);
        Ok(Trace {
            embedded,
            blocks,
            final_norm,
            logits,
        })
    }
}

/// `Σ a_i·b_i` with eight independent partial sums (vectorisable, and rounding closer to
/// a pairwise sum than a single running sum).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `A·Bᵀ` for row-major `A` (`rows × inner`) and `B` (`cols × inner`): the product
/// layout of a PyTorch `Linear` (`x·Wᵀ`) and of attention scores (`Q·Kᵀ`).
pub fn matmul_bt(a: &[f32], rows: usize, inner: usize, b: &[f32], cols: usize) -> Vec<f32> {
    debug_assert_eq!(a.len(), rows * inner);
    debug_assert_eq!(b.len(), cols * inner);
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let ar = &a[r * inner..(r + 1) * inner];
        for c in 0..cols {
            out.push(dot(ar, &b[c * inner..(c + 1) * inner]));
        }
    }
    out
}

/// `x·Wᵀ + b` for `rows` input rows.
pub fn linear(x: &[f32], rows: usize, layer: &Linear) -> Vec<f32> {
    let mut y = matmul_bt(
        x,
        rows,
        layer.in_features,
        &layer.weight,
        layer.out_features,
    );
    if let Some(bias) = &layer.bias {
        for row in y.chunks_exact_mut(layer.out_features) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
    y
}

/// LayerNorm of every row (biased variance, eps inside the square root).
pub fn layer_norm(x: &[f32], norm: &LayerNorm) -> Vec<f32> {
    let c = norm.weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(c) {
        let mean = row.iter().sum::<f32>() / c as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let inv = 1.0 / (var + norm.eps).sqrt();
        for ((v, w), b) in row.iter().zip(&norm.weight).zip(&norm.bias) {
            out.push((v - mean) * inv * w + b);
        }
    }
    out
}

/// The configured GeLU of one value.
pub fn gelu(kind: GeluKind, x: f32) -> f32 {
    match kind {
        GeluKind::Erf => {
            let x = f64::from(x);
            (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
        }
        GeluKind::Quad => 0.125 * x * x + 0.25 * x + 0.5,
    }
}

/// The image cut into patches ("im2col"): `P × (in·p·p)` with patches in row-major grid
/// order and each row ordered `(channel, ky, kx)`, so that `patches · convᵀ` is the
/// tokenizer's convolution.
pub fn patches<T: Copy>(config: &ModelConfig, image: &[T]) -> Result<Vec<T>> {
    if image.len() != config.input_len() {
        return Err(ModelError::InputLength {
            what: "image",
            expected: config.input_len(),
            found: image.len(),
        });
    }
    let (s, p, g, k) = (
        config.image_size,
        config.patch_size,
        config.grid(),
        config.in_channels,
    );
    let mut out = Vec::with_capacity(config.num_patches() * k * p * p);
    for gy in 0..g {
        for gx in 0..g {
            for c in 0..k {
                for ky in 0..p {
                    let start = (c * s + gy * p + ky) * s + gx * p;
                    out.extend_from_slice(&image[start..start + p]);
                }
            }
        }
    }
    Ok(out)
}

/// Tokenizer and embedding: patch conv (`tokenizer.conv_layers.0.0`), class token
/// prepended, positional embedding added. Returns `N × C`.
pub fn embed(config: &ModelConfig, weights: &Weights, image: &[f32]) -> Result<Vec<f32>> {
    let c = config.dim;
    let cols = patches(config, image)?;
    let conv = Linear {
        out_features: c,
        in_features: config.in_channels * config.patch_size * config.patch_size,
        weight: weights.conv.weight.clone(),
        bias: Some(weights.conv.bias.clone()),
    };
    let tokens = linear(&cols, config.num_patches(), &conv);
    let mut x = Vec::with_capacity(config.num_tokens() * c);
    x.extend_from_slice(&weights.class_emb);
    x.extend_from_slice(&tokens);
    for (v, p) in x.iter_mut().zip(&weights.positional_emb) {
        *v += p;
    }
    Ok(x)
}

/// Turns one head's scaled scores `S` (`n × n`, already multiplied by `1/√d`) into
/// attention weights in place.
pub fn attention_weights(kind: AttnKind, scores: &mut [f32], n: usize, relu_softmax_eps: f32) {
    for row in scores.chunks_exact_mut(n) {
        match kind {
            AttnKind::Softmax => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }
            AttnKind::ReluSoftmax => {
                let mut sum = 0.0f32;
                for v in row.iter_mut() {
                    *v = v.max(0.0);
                    sum += *v;
                }
                let denom = sum + relu_softmax_eps;
                row.iter_mut().for_each(|v| *v /= denom);
            }
            AttnKind::ScaleAttn => {
                let n = n as f32;
                row.iter_mut().for_each(|v| *v /= n);
            }
        }
    }
}

/// The attention branch of block `index`: `Proj(Attn(LN_pre(x)))`, `N × C`.
///
/// Head `h` reads q/k/v from qkv output columns `s·C + h·d + j` (s = 0, 1, 2) and writes
/// its output to columns `h·d + j` before the projection.
pub fn attention(config: &ModelConfig, index: usize, blk: &BlockWeights, x: &[f32]) -> Vec<f32> {
    let (n, c, d) = (config.num_tokens(), config.dim, config.head_dim());
    let normed = layer_norm(x, &blk.pre_norm);
    let qkv = linear(&normed, n, &blk.qkv);
    let scale = (d as f32).powf(-0.5);
    let mut concat = vec![0.0f32; n * c];
    let column = |s: usize, h: usize| -> Vec<f32> {
        let mut m = Vec::with_capacity(n * d);
        for t in 0..n {
            let start = t * 3 * c + s * c + h * d;
            m.extend_from_slice(&qkv[start..start + d]);
        }
        m
    };
    for (h, &kind) in config.attention[index].iter().enumerate() {
        let (q, k, v) = (column(0, h), column(1, h), column(2, h));
        let mut scores = matmul_bt(&q, n, d, &k, n);
        scores.iter_mut().for_each(|s| *s *= scale);
        attention_weights(kind, &mut scores, n, config.relu_softmax_eps);
        for t in 0..n {
            let out = &mut concat[t * c + h * d..t * c + (h + 1) * d];
            for u in 0..n {
                let a = scores[t * n + u];
                for (o, vv) in out.iter_mut().zip(&v[u * d..(u + 1) * d]) {
                    *o += a * vv;
                }
            }
        }
    }
    linear(&concat, n, &blk.proj)
}

/// The FFN branch of block `index` on `z = LN_1(y)`, `N × C` (without the residual).
///
/// A token with `beta = true` (or in a block without a mask) gets
/// `Linear2(GeLU(Linear1(z)))`; a token with `beta = false` gets `ReLU(F·z + f)` with the
/// fused layer `F = W2·W1`, `f = W2·b1 + b2` (`fused`, see [`Model::fused_ffn`]; when
/// `None` the two layers are applied one after the other, as the paper's code does).
pub fn ffn(
    config: &ModelConfig,
    index: usize,
    blk: &BlockWeights,
    fused: Option<&Linear>,
    z: &[f32],
) -> Vec<f32> {
    let (n, c) = (config.num_tokens(), config.dim);
    let mask = config.block_beta(index);
    let keep = |t: usize| mask.is_none_or(|m| m[t]);
    let gelu_rows: Vec<usize> = (0..n).filter(|&t| keep(t)).collect();
    let lin_rows: Vec<usize> = (0..n).filter(|&t| !keep(t)).collect();
    let gather = |rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&t| z[t * c..(t + 1) * c].iter().copied())
            .collect()
    };
    let mut out = vec![0.0f32; n * c];
    if !gelu_rows.is_empty() {
        let mut hidden = linear(&gather(&gelu_rows), gelu_rows.len(), &blk.linear1);
        hidden.iter_mut().for_each(|v| *v = gelu(config.gelu, *v));
        let y = linear(&hidden, gelu_rows.len(), &blk.linear2);
        for (i, &t) in gelu_rows.iter().enumerate() {
            out[t * c..(t + 1) * c].copy_from_slice(&y[i * c..(i + 1) * c]);
        }
    }
    if !lin_rows.is_empty() {
        let rows = gather(&lin_rows);
        let y = match fused {
            Some(fused) => linear(&rows, lin_rows.len(), fused),
            // Unfused, exactly as the paper's code: Linear2(Linear1(z)).
            None => linear(
                &linear(&rows, lin_rows.len(), &blk.linear1),
                lin_rows.len(),
                &blk.linear2,
            ),
        };
        for (i, &t) in lin_rows.iter().enumerate() {
            for (o, v) in out[t * c..(t + 1) * c]
                .iter_mut()
                .zip(&y[i * c..(i + 1) * c])
            {
                *o = v.max(0.0);
            }
        }
    }
    out
}

/// One block: attention branch and residual, `norm1`, FFN branch and residual.
pub fn block(
    config: &ModelConfig,
    index: usize,
    blk: &BlockWeights,
    fused: Option<&Linear>,
    x: &[f32],
) -> BlockTrace {
    let attn_out = attention(config, index, blk, x);
    let residual: Vec<f32> = x.iter().zip(&attn_out).map(|(a, b)| a + b).collect();
    let normed = layer_norm(&residual, &blk.norm1);
    let f = ffn(config, index, blk, fused, &normed);
    let output = normed.iter().zip(&f).map(|(a, b)| a + b).collect();
    BlockTrace {
        attn_out,
        residual,
        normed,
        output,
    }
}

/// Final LayerNorm over all tokens, then the classifier on the class token (token 0).
/// Returns `(final_norm, logits)`.
pub fn head(config: &ModelConfig, weights: &Weights, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let normed = layer_norm(x, &weights.norm);
    let logits = linear(&normed[..config.dim], 1, &weights.fc);
    (normed, logits)
}

//! Plaintext f64 references of every secure operator, used by the tests to
//! check each secure result and by the model crate's plaintext forward.
//! Where the secure operator evaluates an approximation (the exponential's
//! limit, the piecewise reciprocal/rsqrt/GeLU), two references exist: the
//! exact function and the approximation the protocol computes.

use crate::approx::{self, Piecewise};
use crate::nonlinear::{Domain, EXP_SQUARINGS, PER_OCTAVE};

/// `m×k · k×n` in f64.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                out[i * n + j] += x * b[p * n + j];
            }
        }
    }
    out
}

/// Transpose of a `rows×cols` matrix.
pub fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    crate::ring::transpose(a, rows, cols)
}

/// `max(x, 0)`.
pub fn relu(x: f64) -> f64 {
    x.max(0.0)
}

/// The exact GeLU `x·Φ(x)`.
pub fn gelu(x: f64) -> f64 {
    crate::gelu::gelu_exact(x)
}

/// MPCFormer's quadratic GeLU `0.125x² + 0.25x + 0.5`.
pub fn gelu_quad(x: f64) -> f64 {
    0.125 * x * x + 0.25 * x + 0.5
}

/// The piecewise-quadratic GeLU the secure [`crate::Ctx::gelu`] evaluates
/// (where the comparison picks the segment of `x`; it may pick the one
/// above for `x` up to 1/8 below a boundary).
pub fn gelu_piecewise(x: f64) -> f64 {
    thread_local!(static P: Piecewise = crate::gelu::gelu_piecewise());
    P.with(|p| p.eval(x))
}

/// The limit approximation `(1 + x/2^k)^(2^k)` evaluated by [`crate::Ctx::exp_neg`].
pub fn exp_limit(x: f64) -> f64 {
    let mut y = 1.0 + x / (1u64 << EXP_SQUARINGS) as f64;
    for _ in 0..EXP_SQUARINGS {
        y *= y;
    }
    y
}

/// The piecewise-linear `1/x` that [`crate::Ctx::reciprocal`] evaluates.
pub fn reciprocal_approx(x: f64, domain: Domain) -> f64 {
    approx::reciprocal_piecewise(domain.lo, domain.hi, PER_OCTAVE).eval(x)
}

/// Row softmax of a `rows×cols` matrix.
pub fn softmax(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    x.chunks_exact(cols)
        .take(rows)
        .flat_map(|r| {
            let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

/// ReLU-softmax: `ReLU(x) / (Σ ReLU(x) + eps)` per row.
pub fn relu_softmax(x: &[f64], rows: usize, cols: usize, eps: f64) -> Vec<f64> {
    x.chunks_exact(cols)
        .take(rows)
        .flat_map(|r| {
            let p: Vec<f64> = r.iter().map(|v| v.max(0.0)).collect();
            let s: f64 = p.iter().sum::<f64>() + eps;
            p.into_iter().map(move |v| v / s)
        })
        .collect()
}

/// Attention scores `Q·Kᵀ/√d` (Q, K: n×d).
pub fn attention_scores(q: &[f64], k: &[f64], n: usize, d: usize) -> Vec<f64> {
    let s = matmul(q, &transpose(k, n, d), n, d, n);
    let c = 1.0 / (d as f64).sqrt();
    s.into_iter().map(|v| v * c).collect()
}

/// ScaleAttn: `(Q·Kᵀ/√d)/N · V`.
pub fn scale_attn(q: &[f64], k: &[f64], v: &[f64], n: usize, d: usize, tokens: usize) -> Vec<f64> {
    let s: Vec<f64> = attention_scores(q, k, n, d)
        .into_iter()
        .map(|x| x / tokens as f64)
        .collect();
    matmul(&s, v, n, n, d)
}

/// LayerNorm of each row (`rows×c`) with biased variance, as PyTorch.
pub fn layer_norm(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    rows: usize,
    c: usize,
    eps: f64,
) -> Vec<f64> {
    x.chunks_exact(c)
        .take(rows)
        .flat_map(|r| {
            let mean = r.iter().sum::<f64>() / c as f64;
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
            let inv = 1.0 / (var + eps).sqrt();
            r.iter()
                .enumerate()
                .map(move |(i, v)| (v - mean) * inv * gamma[i] + beta[i])
                .collect::<Vec<_>>()
        })
        .collect()
}

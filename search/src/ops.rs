//! Fused CPU kernels (candle custom ops with their backward passes) for the parts of the
//! network where a chain of candle's ops would allocate, copy and traverse a large tensor
//! many times: the linear layers, LayerNorm, multi-head attention from the qkv projection
//! to the heads' outputs (every head kind, with the search relaxation), and the GeLU /
//! MPCViT+ beta mixing of the FFN.
//!
//! Each kernel is checked against the same function written with candle's primitive ops
//! (values and gradients) in this module's tests.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor, bail,
};
use rayon::prelude::*;

use std::sync::Mutex;

use crate::matmul::{Threads, View, matmul, pool_threads};

/// Rows per parallel task (small enough to balance two to a few dozen threads).
const ROWS_PER_TASK: usize = 64;

type CResult<T> = candle_core::Result<T>;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> CResult<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused op: input must be contiguous"),
    }
}

fn vec_of(t: &Tensor) -> CResult<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// Runs `f` on the elements of `t` in row-major order, without a copy when `t` is
/// contiguous.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> CResult<R>) -> CResult<R> {
    let t = if t.is_contiguous() {
        t.clone()
    } else {
        t.contiguous()?
    };
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice(s, layout)?),
        _ => bail!("fused op: CPU tensors only"),
    }
}

/// `e^x` in single precision without a library call, so that loops over rows
/// vectorise: Cephes' `expf` (`x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-5 polynomial
/// for `(e^r − 1 − r)/r²`, then `2^n` built in the exponent bits). Relative error below
/// 3e-7 (tested against `f32::exp`); inputs are clamped to `[−87, 88]`, so results below
/// `e^−87 ≈ 1.6e-38` come out as that instead of 0 or a subnormal.
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    /// `1.5·2^23`: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `erf` in single precision as a rational function of odd/even polynomials on
/// `[−4, 4]` (inputs beyond are clamped; `1 − erf(4)` is 1.5e-8): the approximation of
/// Eigen's and XLA's `erf`, branch-free so that loops vectorise. Absolute error below
/// 1e-6 (tested against `libm::erff`, which is exact to 1 ulp but branches and calls
/// `exp` twice).
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

/// LayerNorm over the last axis: `(x − mean)/√(var + eps)·w + b` (biased variance).
#[derive(Debug, Clone, Copy)]
pub struct LayerNormOp {
    /// Epsilon inside the square root.
    pub eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "mpcvit-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let c = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_exact_mut(c)
            .zip(x.par_chunks_exact(c))
            .for_each(|(o, row)| {
                let mean = row.iter().sum::<f32>() / c as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
                let rstd = 1.0 / (var + self.eps).sqrt();
                for j in 0..c {
                    o[j] = (row[j] - mean) * rstd * w[j] + b[j];
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ws = vec_of(w)?;
        let c = ws.len();
        let eps = self.eps;
        let (dx, dw, db) = with_data(x, |xs| {
            with_data(grad, |gs| {
                let mut dx = vec![0f32; xs.len()];
                let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
                    .par_chunks_mut(c * ROWS_PER_TASK)
                    .zip(xs.par_chunks(c * ROWS_PER_TASK))
                    .zip(gs.par_chunks(c * ROWS_PER_TASK))
                    .map(|((dx, xs), gs)| {
                        let mut dw = vec![0f32; c];
                        let mut db = vec![0f32; c];
                        let mut xhat = vec![0f32; c];
                        for ((row, g), d) in xs
                            .chunks_exact(c)
                            .zip(gs.chunks_exact(c))
                            .zip(dx.chunks_exact_mut(c))
                        {
                            let mean = row.iter().sum::<f32>() / c as f32;
                            let var =
                                row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
                            let rstd = 1.0 / (var + eps).sqrt();
                            let (mut m1, mut m2) = (0f32, 0f32);
                            for j in 0..c {
                                xhat[j] = (row[j] - mean) * rstd;
                                let gw = g[j] * ws[j];
                                m1 += gw;
                                m2 += gw * xhat[j];
                                dw[j] += g[j] * xhat[j];
                                db[j] += g[j];
                            }
                            let (m1, m2) = (m1 / c as f32, m2 / c as f32);
                            for j in 0..c {
                                d[j] = rstd * (g[j] * ws[j] - m1 - xhat[j] * m2);
                            }
                        }
                        (dw, db)
                    })
                    .collect();
                let mut dw = vec![0f32; c];
                let mut db = vec![0f32; c];
                for (pw, pb) in partial {
                    dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
                    db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
                }
                Ok((dx, dw, db))
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, w.shape(), dev)?),
        ))
    }
}

/// `x·Wᵀ (+ b)` over the last axis of a contiguous `x` (`[.., in]`, any rank ≥ 2) with
/// `W` `[out, in]` and an optional bias `b` `[out]` (apply with `apply_op2(w, LinearOp)`
/// or `apply_op3(w, b, LinearOp)`), as one matrix product, without the transposed
/// weight view, reshapes and broadcast add of the candle composition. Backward:
/// `dx = g·W`, `dW = gᵀ·x`, `db = Σ_rows g`.
#[derive(Debug, Clone, Copy)]
pub struct LinearOp;

impl LinearOp {
    fn forward(
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        b: Option<&[f32]>,
    ) -> CResult<(CpuStorage, Shape)> {
        let (out, inp) = wl.shape().dims2()?;
        let dims = xl.shape().dims();
        if dims.len() < 2 || dims[dims.len() - 1] != inp || b.is_some_and(|b| b.len() != out) {
            bail!(
                "linear op: input {:?}, weight {:?}, bias {:?}",
                xl.shape(),
                wl.shape(),
                b.map(<[f32]>::len)
            );
        }
        let rows = x.len() / inp;
        let mut y = vec![0f32; rows * out];
        if let Some(b) = b {
            y.chunks_exact_mut(out).for_each(|r| r.copy_from_slice(b));
        }
        matmul(
            &mut y,
            out,
            (rows, out, inp),
            View::rows(x, inp),
            View::transposed(w, inp),
            b.is_some(),
            pool_threads(),
        );
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank ≥ 2") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    /// `(dx, dW, db)`.
    fn backward(
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        bias: bool,
    ) -> CResult<(Tensor, Tensor, Option<Tensor>)> {
        let (out, inp) = w.dims2()?;
        let rows = x.elem_count() / inp;
        let threads = pool_threads();
        let (dx, dw, db) = with_data(x, |xs| {
            with_data(w, |ws| {
                with_data(grad, |gs| {
                    let mut dx = vec![0f32; rows * inp];
                    matmul(
                        &mut dx,
                        inp,
                        (rows, inp, out),
                        View::rows(gs, out),
                        View::rows(ws, inp),
                        false,
                        threads,
                    );
                    let mut dw = vec![0f32; out * inp];
                    matmul(
                        &mut dw,
                        inp,
                        (out, inp, rows),
                        View::transposed(gs, out),
                        View::rows(xs, inp),
                        false,
                        threads,
                    );
                    let db = bias.then(|| {
                        let mut db = vec![0f32; out];
                        for r in gs.chunks_exact(out) {
                            db.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                        }
                        db
                    });
                    Ok((dx, dw, db))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Tensor::from_vec(dx, x.shape(), dev)?,
            Tensor::from_vec(dw, w.shape(), dev)?,
            db.map(|db| Tensor::from_vec(db, out, dev)).transpose()?,
        ))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "mpcvit-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        Self::forward(slice(s1, l1)?, l1, slice(s2, l2)?, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::backward(x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "mpcvit-linear-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        Self::forward(slice(s1, l1)?, l1, slice(s2, l2)?, l2, Some(slice(s3, l3)?))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = Self::backward(x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// Multi-head attention from the qkv projection `[B, N, 3C]` (per token `[q | k | v]`,
/// each `H` heads of `d = C/H`, the `model` crate's layout) and a per-head `alpha` (`[H]`
/// values, any shape) to the heads' outputs `[B, N, C]` (head `h` in columns
/// `h·d..(h+1)·d`, ready for the output projection). Per head, with `P = Q·Kᵀ` and
/// `T = scale·P`, the weights are `softmax(T)` for a Softmax head (per `softmax`) and
/// `alpha·T⁺/(Σ T⁺ + eps) + (1 − alpha)·T/N` for any other head (ReLU-Softmax for
/// alpha = 1, ScaleAttn for alpha = 0, the search relaxation in between); the output is
/// `weights·V`.
///
/// Each head's `Q`, `Kᵀ`, `V` are strided views of the qkv rows (no copies). The raw
/// products and weights of every head (`[B, H, N, N]` each) are kept from the forward for
/// the backward inside the op, not as graph tensors (so no gradient buffers are built for
/// them).
#[derive(Debug)]
pub struct AttentionOp {
    /// `1/√d`.
    pub scale: f32,
    /// ReLU-Softmax denominator epsilon.
    pub eps: f32,
    /// Which heads are Softmax (its length is the head count).
    pub softmax: Vec<bool>,
    /// `(P, weights)` of the last forward.
    saved: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

/// Per-head views of one image's `[N, 3C]` qkv rows.
struct Heads {
    n: usize,
    c: usize,
    d: usize,
}

impl Heads {
    fn q<'a>(&self, x: &'a [f32], h: usize) -> View<'a> {
        View::rows(&x[h * self.d..], 3 * self.c)
    }

    fn k<'a>(&self, x: &'a [f32], h: usize) -> View<'a> {
        View::rows(&x[self.c + h * self.d..], 3 * self.c)
    }

    fn kt<'a>(&self, x: &'a [f32], h: usize) -> View<'a> {
        View::transposed(&x[self.c + h * self.d..], 3 * self.c)
    }

    fn v<'a>(&self, x: &'a [f32], h: usize) -> View<'a> {
        View::rows(&x[2 * self.c + h * self.d..], 3 * self.c)
    }

    fn vt<'a>(&self, x: &'a [f32], h: usize) -> View<'a> {
        View::transposed(&x[2 * self.c + h * self.d..], 3 * self.c)
    }
}

impl AttentionOp {
    /// The op for heads of scale `1/√d`, ReLU-Softmax epsilon `eps` and the Softmax flags.
    pub fn new(scale: f32, eps: f32, softmax: Vec<bool>) -> Self {
        Self {
            scale,
            eps,
            softmax,
            saved: Mutex::new(None),
        }
    }

    fn heads(&self, l: &Layout, alpha: usize) -> CResult<Heads> {
        let (_, n, c3) = l.shape().dims3()?;
        let h = self.softmax.len();
        if h == 0 || c3 % (3 * h) != 0 || alpha != h {
            bail!(
                "attention op: qkv {:?}, {alpha} alphas, {h} softmax flags",
                l.shape()
            );
        }
        Ok(Heads {
            n,
            c: c3 / 3,
            d: c3 / 3 / h,
        })
    }

    /// The weights of one head's `n × n` raw products `p` into `a`.
    fn weights(&self, p: &[f32], a: &mut [f32], n: usize, softmax: bool, alpha: f32) {
        for (row, o) in p.chunks_exact(n).zip(a.chunks_exact_mut(n)) {
            if softmax {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * self.scale;
                let mut sum = 0f32;
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = exp(v * self.scale - max);
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|v| *v *= inv);
            } else {
                let sum: f32 =
                    row.iter().map(|&v| (v * self.scale).max(0.0)).sum::<f32>() + self.eps;
                let (a, c) = (alpha / sum, (1.0 - alpha) * self.scale / n as f32);
                for (o, &v) in o.iter_mut().zip(row) {
                    let t = v * self.scale;
                    *o = a * t.max(0.0) + c * v;
                }
            }
        }
    }

    /// Overwrites `g` (the gradient of one head's weights) with the gradient of its raw
    /// products `p`, given the weights `a`; returns the head's `d loss / d alpha`.
    fn weights_backward(
        &self,
        p: &[f32],
        a: &[f32],
        g: &mut [f32],
        n: usize,
        softmax: bool,
        alpha: f32,
    ) -> f64 {
        let mut dalpha = 0f64;
        for ((prow, arow), grow) in p
            .chunks_exact(n)
            .zip(a.chunks_exact(n))
            .zip(g.chunks_exact_mut(n))
        {
            if softmax {
                let dot: f32 = grow.iter().zip(arow).map(|(g, a)| g * a).sum();
                for j in 0..n {
                    grow[j] = self.scale * arow[j] * (grow[j] - dot);
                }
            } else {
                let sum: f32 =
                    prow.iter().map(|&v| (v * self.scale).max(0.0)).sum::<f32>() + self.eps;
                // d(RS_j)/dT_k = [T_k > 0]·(δ_jk − RS_j)/sum, so
                // dT_k = [T_k > 0]·(g_k − Σ_j g_j·RS_j)/sum.
                let mut dot = 0f32;
                let mut da = 0f32;
                let inv_n = 1.0 / n as f32;
                for j in 0..n {
                    let t = prow[j] * self.scale;
                    let rs = t.max(0.0) / sum;
                    dot += grow[j] * rs;
                    da += grow[j] * (rs - t * inv_n);
                }
                dalpha += f64::from(da);
                for j in 0..n {
                    let t = prow[j] * self.scale;
                    let d_rs = if t > 0.0 { (grow[j] - dot) / sum } else { 0.0 };
                    grow[j] = self.scale * (alpha * d_rs + (1.0 - alpha) * grow[j] * inv_n);
                }
            }
        }
        dalpha
    }
}

impl CustomOp2 for AttentionOp {
    fn name(&self) -> &'static str {
        "mpcvit-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (qkv, alpha) = (slice(s1, l1)?, slice(s2, l2)?);
        let hs = self.heads(l1, alpha.len())?;
        let (b, n, c, d) = (l1.shape().dims()[0], hs.n, hs.c, hs.d);
        let h = self.softmax.len();
        let mut out = vec![0f32; b * n * c];
        let mut p_all = vec![0f32; b * h * n * n];
        let mut a_all = vec![0f32; b * h * n * n];
        out.par_chunks_exact_mut(n * c)
            .zip(qkv.par_chunks_exact(n * 3 * c))
            .zip(p_all.par_chunks_exact_mut(h * n * n))
            .zip(a_all.par_chunks_exact_mut(h * n * n))
            .for_each(|(((o, x), p_img), a_img)| {
                for (hd, ((&softmax, &alpha), (p, a))) in self
                    .softmax
                    .iter()
                    .zip(alpha)
                    .zip(
                        p_img
                            .chunks_exact_mut(n * n)
                            .zip(a_img.chunks_exact_mut(n * n)),
                    )
                    .enumerate()
                {
                    matmul(
                        p,
                        n,
                        (n, n, d),
                        hs.q(x, hd),
                        hs.kt(x, hd),
                        false,
                        Threads::One,
                    );
                    self.weights(p, a, n, softmax, alpha);
                    matmul(
                        &mut o[hd * d..],
                        c,
                        (n, d, n),
                        View::rows(a, n),
                        hs.v(x, hd),
                        false,
                        Threads::One,
                    );
                }
            });
        *self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention op: poisoned".into()))? =
            Some((p_all, a_all));
        Ok((CpuStorage::F32(out), (b, n, c).into()))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        alpha: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let al = vec_of(alpha)?;
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention op: poisoned".into()))?;
        let Some((p_all, a_all)) = saved.as_ref() else {
            bail!("attention op: backward without a forward");
        };
        let (dqkv, dalpha) = with_data(qkv, |xs| {
            with_data(grad, |gs| {
                let hs = self.heads(qkv.layout(), al.len())?;
                let (n, c, d, h) = (hs.n, hs.c, hs.d, al.len());
                let mut dx = vec![0f32; xs.len()];
                let per_image: Vec<Vec<f64>> = dx
                    .par_chunks_exact_mut(n * 3 * c)
                    .zip(xs.par_chunks_exact(n * 3 * c))
                    .zip(gs.par_chunks_exact(n * c))
                    .zip(p_all.par_chunks_exact(h * n * n))
                    .zip(a_all.par_chunks_exact(h * n * n))
                    .map(|((((dx, x), g), p_img), a_img)| {
                        let mut da = vec![0f32; n * n];
                        let mut dalpha = vec![0f64; h];
                        for (hd, (&softmax, &alpha)) in self.softmax.iter().zip(&al).enumerate() {
                            let one = Threads::One;
                            let (p, a) = (&p_img[hd * n * n..], &a_img[hd * n * n..]);
                            let (p, a) = (&p[..n * n], &a[..n * n]);
                            let gh = View::rows(&g[hd * d..], c);
                            // dV = Aᵀ·G, dA = G·Vᵀ.
                            let dv = &mut dx[2 * c + hd * d..];
                            matmul(dv, 3 * c, (n, d, n), View::transposed(a, n), gh, false, one);
                            matmul(&mut da, n, (n, n, d), gh, hs.vt(x, hd), false, one);
                            dalpha[hd] = self.weights_backward(p, a, &mut da, n, softmax, alpha);
                            // dQ = dP·K, dK = dPᵀ·Q.
                            let dp = View::rows(&da, n);
                            matmul(
                                &mut dx[hd * d..],
                                3 * c,
                                (n, d, n),
                                dp,
                                hs.k(x, hd),
                                false,
                                one,
                            );
                            let dpt = View::transposed(&da, n);
                            let dk = &mut dx[c + hd * d..];
                            matmul(dk, 3 * c, (n, d, n), dpt, hs.q(x, hd), false, one);
                        }
                        dalpha
                    })
                    .collect();
                let mut dalpha = vec![0f64; h];
                for v in per_image {
                    dalpha.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                }
                Ok((dx, dalpha))
            })
        })?;
        let dev = qkv.device();
        let dalpha: Vec<f32> = dalpha.iter().map(|&v| v as f32).collect();
        Ok((
            Some(Tensor::from_vec(dqkv, qkv.shape(), dev)?),
            Some(Tensor::from_vec(dalpha, alpha.shape(), dev)?),
        ))
    }
}

/// Exact (erf) GeLU.
#[derive(Debug, Clone, Copy)]
pub struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "mpcvit-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        Ok((
            CpuStorage::F32(x.par_iter().map(|&v| gelu(v)).collect()),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let d: Vec<f32> = with_data(x, |xs| {
            with_data(grad, |g| {
                Ok(xs
                    .par_iter()
                    .zip(g)
                    .map(|(&x, &g)| g * gelu_grad(x))
                    .collect())
            })
        })?;
        Ok(Some(Tensor::from_vec(d, x.shape(), x.device())?))
    }
}

/// MPCViT+ mixing of the FFN, per token `t` of `[B, N, F]` with `beta` `[N]`:
/// `Gelu`: `beta·GeLU(x) + (1 − beta)·x`; `Relu`: `(1 − beta)·ReLU(x) + beta·x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaMix {
    /// After `linear1`.
    Gelu,
    /// After `linear2`.
    Relu,
}

impl BetaMix {
    /// `(value, d value/dx, d value/dbeta)`.
    fn eval(self, x: f32, beta: f32) -> (f32, f32, f32) {
        match self {
            Self::Gelu => {
                let g = gelu(x);
                (
                    beta * g + (1.0 - beta) * x,
                    beta * gelu_grad(x) + 1.0 - beta,
                    g - x,
                )
            }
            Self::Relu => {
                let r = x.max(0.0);
                let dr = if x > 0.0 { 1.0 } else { 0.0 };
                ((1.0 - beta) * r + beta * x, (1.0 - beta) * dr + beta, x - r)
            }
        }
    }
}

impl CustomOp2 for BetaMix {
    fn name(&self) -> &'static str {
        "mpcvit-beta-mix"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, beta) = (slice(s1, l1)?, slice(s2, l2)?);
        let (_, n, f) = l1.shape().dims3()?;
        if beta.len() != n {
            bail!("beta mix: {} betas for {n} tokens", beta.len());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_exact_mut(f)
            .zip(x.par_chunks_exact(f))
            .enumerate()
            .for_each(|(i, (or, xr))| {
                let b = beta[i % n];
                for (o, &v) in or.iter_mut().zip(xr) {
                    *o = self.eval(v, b).0;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let bs = vec_of(beta)?;
        let (_, n, f) = x.dims3()?;
        let (dx, per_row) = with_data(x, |xs| {
            with_data(grad, |g| {
                let mut dx = vec![0f32; xs.len()];
                let per_row: Vec<f64> = dx
                    .par_chunks_exact_mut(f)
                    .enumerate()
                    .map(|(i, dr)| {
                        let t = i % n;
                        let (xr, gr) = (&xs[i * f..(i + 1) * f], &g[i * f..(i + 1) * f]);
                        let mut acc = 0f32;
                        for j in 0..f {
                            let (_, dxv, dbv) = self.eval(xr[j], bs[t]);
                            dr[j] = gr[j] * dxv;
                            acc += gr[j] * dbv;
                        }
                        f64::from(acc)
                    })
                    .collect();
                Ok((dx, per_row))
            })
        })?;
        let mut db = vec![0f64; n];
        for (i, v) in per_row.into_iter().enumerate() {
            db[i % n] += v;
        }
        let db: Vec<f32> = db.iter().map(|&v| v as f32).collect();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(db, beta.shape(), x.device())?),
        ))
    }
}

/// Hyper-parameters of one AdamW update (bias corrections `1 − β^t` precomputed).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f32,
    /// The parameter's multiplier of `lr` in the Adam step (not in the weight decay).
    pub lr_scale: f32,
    /// First-moment decay `β1`.
    pub beta1: f32,
    /// Second-moment decay `β2`.
    pub beta2: f32,
    /// `1 − β1^t`.
    pub bias1: f32,
    /// `1 − β2^t`.
    pub bias2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay (0 for parameters without decay).
    pub weight_decay: f32,
}

impl AdamWStep {
    /// One fused AdamW update of a parameter `theta` with gradient `g` and moments `m`,
    /// `v`, element by element: `m' = β1·m + (1 − β1)·g`, `v' = β2·v + (1 − β2)·g²`,
    /// `theta' = theta·(1 − lr·wd) − lr·lr_scale·(m'/bias1)/(√(v'/bias2) + eps)`. Returns
    /// `(theta', m', v')` as new tensors without autograd history.
    pub fn apply(
        &self,
        theta: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> CResult<(Tensor, Tensor, Tensor)> {
        let n = theta.elem_count();
        if g.elem_count() != n || m.elem_count() != n || v.elem_count() != n {
            bail!(
                "adamw: parameter {:?}, gradient {:?}, moments {:?} / {:?}",
                theta.shape(),
                g.shape(),
                m.shape(),
                v.shape()
            );
        }
        let mut t2 = vec![0f32; n];
        let mut m2 = vec![0f32; n];
        let mut v2 = vec![0f32; n];
        let decay = 1.0 - self.lr * self.weight_decay;
        let step = self.lr * self.lr_scale;
        with_data(theta, |ts| {
            with_data(g, |gs| {
                with_data(m, |ms| {
                    with_data(v, |vs| {
                        for i in 0..n {
                            let g = gs[i];
                            let m = self.beta1 * ms[i] + (1.0 - self.beta1) * g;
                            let v = self.beta2 * vs[i] + (1.0 - self.beta2) * g * g;
                            let upd = (m / self.bias1) / ((v / self.bias2).sqrt() + self.eps);
                            t2[i] = ts[i] * decay - step * upd;
                            m2[i] = m;
                            v2[i] = v;
                        }
                        Ok(())
                    })
                })
            })
        })?;
        let (shape, dev) = (theta.shape(), theta.device());
        Ok((
            Tensor::from_vec(t2, shape, dev)?,
            Tensor::from_vec(m2, shape, dev)?,
            Tensor::from_vec(v2, shape, dev)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::data::rng_for(seed, 9);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (crate::data::below(&mut rng, 20001) as f32 - 10000.0) / 5000.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Compares value and gradients of `fused` and `reference` (both given the same vars),
    /// with a random linear functional of the output as the loss.
    fn check(
        vars: &[Var],
        fused: impl Fn(&[Var]) -> Tensor,
        reference: impl Fn(&[Var]) -> Tensor,
        tol: f32,
    ) {
        let yf = fused(vars);
        let yr = reference(vars);
        assert!(
            max_diff(&yf, &yr) < tol,
            "values differ by {}",
            max_diff(&yf, &yr)
        );
        let w = randn(yf.dims(), 77);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in vars {
            let (a, b) = (
                gf.get(v.as_tensor()).unwrap(),
                gr.get(v.as_tensor()).unwrap(),
            );
            let scale = 1.0
                + b.abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
            assert!(
                max_diff(a, b) < tol * scale,
                "gradient of {:?} differs by {}",
                v.dims(),
                max_diff(a, b)
            );
        }
    }

    #[test]
    fn exp_and_erf_match_the_library() {
        let grid = (-400_000..=400_000).map(|i| i as f32 * 2.2e-4);
        let (mut exp_err, mut erf_err) = (0f32, 0f32);
        for x in grid {
            if x >= -87.0 {
                let want = x.exp();
                exp_err = exp_err.max((exp(x) - want).abs() / want);
            }
            let z = x * (6.0 / 88.0);
            erf_err = erf_err.max((erf(z) - libm::erff(z)).abs());
        }
        assert!(exp_err < 3e-7, "exp relative error {exp_err}");
        assert!(erf_err < 1e-6, "erf absolute error {erf_err}");
        eprintln!("exp relative error {exp_err:e}, erf absolute error {erf_err:e}");
        assert!((erf(9.0) - 1.0).abs() < 1e-6 && (erf(-9.0) + 1.0).abs() < 1e-6);
        assert!(exp(-100.0) < 2e-38 && exp(-100.0) > 0.0);
    }

    #[test]
    fn layer_norm_matches_candle() {
        let vars: Vec<Var> = [&[3usize, 5, 16][..], &[16], &[16]]
            .iter()
            .enumerate()
            .map(|(i, s)| Var::from_tensor(&randn(s, i as u64)).unwrap())
            .collect();
        check(
            &vars,
            |v| {
                v[0].apply_op3(&v[1], &v[2], LayerNormOp { eps: 1e-5 })
                    .unwrap()
            },
            |v| {
                let x = v[0].as_tensor();
                let mean = x.mean_keepdim(D::Minus1).unwrap();
                let xc = x.broadcast_sub(&mean).unwrap();
                let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                let xn = xc
                    .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
                    .unwrap();
                xn.broadcast_mul(&v[1])
                    .unwrap()
                    .broadcast_add(&v[2])
                    .unwrap()
            },
            1e-4,
        );
    }

    #[test]
    fn linear_matches_candle() {
        let vars: Vec<Var> = [&[3usize, 5, 7][..], &[4, 7], &[4]]
            .iter()
            .enumerate()
            .map(|(i, s)| Var::from_tensor(&randn(s, 20 + i as u64)).unwrap())
            .collect();
        let reference = |v: &[Var], bias: bool| {
            let y = v[0].broadcast_matmul(&v[1].t().unwrap()).unwrap();
            if bias {
                y.broadcast_add(&v[2]).unwrap()
            } else {
                y
            }
        };
        check(
            &vars,
            |v| v[0].apply_op3(&v[1], &v[2], LinearOp).unwrap(),
            |v| reference(v, true),
            1e-5,
        );
        check(
            &vars[..2],
            |v| v[0].apply_op2(&v[1], LinearOp).unwrap(),
            |v| reference(v, false),
            1e-5,
        );
    }

    #[test]
    fn attention_matches_candle() {
        let (b, n, h, d) = (2, 6, 4, 3);
        let c = h * d;
        let qkv = Var::from_tensor(&randn(&[b, n, 3 * c], 3)).unwrap();
        let alpha = Var::from_tensor(&Tensor::new(&[0.3f32, 1.0, 0.0, 0.7], &Device::Cpu).unwrap())
            .unwrap();
        let softmax = vec![false, false, true, false];
        let scale = 0.5f32;
        check(
            &[qkv, alpha],
            |v| {
                v[0].apply_op2(&v[1], AttentionOp::new(scale, 1e-5, softmax.clone()))
                    .unwrap()
            },
            |v| {
                let qkv = v[0]
                    .reshape((b, n, 3, h, d))
                    .unwrap()
                    .permute((2, 0, 3, 1, 4))
                    .unwrap()
                    .contiguous()
                    .unwrap();
                let (q, k, vv) = (
                    qkv.get(0).unwrap(),
                    qkv.get(1).unwrap(),
                    qkv.get(2).unwrap(),
                );
                let p = q.matmul(&k.t().unwrap()).unwrap();
                let t = (p * f64::from(scale)).unwrap();
                let e = t.exp().unwrap();
                let sm = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
                let r = t.relu().unwrap();
                let rs = r
                    .broadcast_div(&(r.sum_keepdim(D::Minus1).unwrap() + 1e-5).unwrap())
                    .unwrap();
                let sc = (&t / n as f64).unwrap();
                let a = v[1].reshape((1, h, 1, 1)).unwrap();
                let mix = (rs.broadcast_mul(&a).unwrap()
                    + sc.broadcast_mul(&(1.0 - &a).unwrap()).unwrap())
                .unwrap();
                let m = Tensor::new(&[0f32, 0., 1., 0.], &Device::Cpu)
                    .unwrap()
                    .reshape((1, h, 1, 1))
                    .unwrap();
                let w = (sm.broadcast_mul(&m).unwrap()
                    + mix.broadcast_mul(&(1.0 - &m).unwrap()).unwrap())
                .unwrap();
                w.matmul(&vv)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b, n, c))
                    .unwrap()
            },
            1e-4,
        );
    }

    #[test]
    fn adamw_matches_candle() {
        let theta = randn(&[4, 6], 30);
        let g = randn(&[4, 6], 31);
        let m = (randn(&[4, 6], 32) * 0.1).unwrap();
        let v = randn(&[4, 6], 33).sqr().unwrap();
        let (lr, b1, b2, eps, wd, t) = (1e-2, 0.9, 0.999, 1e-8, 0.05, 3);
        let (bc1, bc2) = (1.0 - f64::powi(b1, t), 1.0 - f64::powi(b2, t));
        let scale = 2.0;
        let step = AdamWStep {
            lr: lr as f32,
            lr_scale: scale as f32,
            beta1: b1 as f32,
            beta2: b2 as f32,
            bias1: bc1 as f32,
            bias2: bc2 as f32,
            eps: eps as f32,
            weight_decay: wd as f32,
        };
        let (t2, m2, v2) = step.apply(&theta, &g, &m, &v).unwrap();
        let rm = ((&m * b1).unwrap() + (&g * (1.0 - b1)).unwrap()).unwrap();
        let rv = ((&v * b2).unwrap() + (g.sqr().unwrap() * (1.0 - b2)).unwrap()).unwrap();
        let upd =
            ((&rm / bc1).unwrap() / ((&rv / bc2).unwrap().sqrt().unwrap() + eps).unwrap()).unwrap();
        let rt = ((&theta * (1.0 - lr * wd)).unwrap() - (upd * (lr * scale)).unwrap()).unwrap();
        for (a, b) in [(&t2, &rt), (&m2, &rm), (&v2, &rv)] {
            assert!(max_diff(a, b) < 1e-6, "differs by {}", max_diff(a, b));
        }
        assert!(max_diff(&t2, &theta) > 1e-3, "the parameter moved");
    }

    #[test]
    fn gelu_and_beta_mix_match_candle() {
        let x = Var::from_tensor(&randn(&[2, 5, 7], 5)).unwrap();
        check(
            std::slice::from_ref(&x),
            |v| v[0].apply_op1(GeluOp).unwrap(),
            |v| v[0].gelu_erf().unwrap(),
            1e-5,
        );
        let beta =
            Var::from_tensor(&Tensor::new(&[1f32, 0.0, 0.25, 0.5, 0.9], &Device::Cpu).unwrap())
                .unwrap();
        let b3 = |v: &[Var]| v[1].reshape((1, 5, 1)).unwrap();
        check(
            &[x.clone(), beta.clone()],
            |v| v[0].apply_op2(&v[1], BetaMix::Gelu).unwrap(),
            |v| {
                let b = b3(v);
                (v[0].gelu_erf().unwrap().broadcast_mul(&b).unwrap()
                    + v[0].broadcast_mul(&(1.0 - &b).unwrap()).unwrap())
                .unwrap()
            },
            1e-5,
        );
        check(
            &[x, beta],
            |v| v[0].apply_op2(&v[1], BetaMix::Relu).unwrap(),
            |v| {
                let b = b3(v);
                (v[0]
                    .relu()
                    .unwrap()
                    .broadcast_mul(&(1.0 - &b).unwrap())
                    .unwrap()
                    + v[0].broadcast_mul(&b).unwrap())
                .unwrap()
            },
            1e-5,
        );
    }
}

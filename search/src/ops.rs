//! Fused CPU kernels (candle custom ops with their backward passes) for the parts of the
//! network where a chain of candle's element-wise ops would allocate and traverse a
//! large tensor many times: LayerNorm, the attention weights of every head kind (with the
//! search relaxation), and the GeLU / MPCViT+ beta mixing of the FFN.
//!
//! Each kernel is checked against the same function written with candle's primitive ops
//! (values and gradients) in this module's tests.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

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

/// `erf` in single precision (Abramowitz–Stegun 7.1.26 is not accurate enough; libm's
/// `erff` is exact to 1 ulp).
fn erf(x: f32) -> f32 {
    libm::erff(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
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
        let (xs, ws, gs) = (vec_of(x)?, vec_of(w)?, vec_of(grad)?);
        let c = ws.len();
        let mut dx = vec![0f32; xs.len()];
        let eps = self.eps;
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
                    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
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
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, w.shape(), dev)?),
        ))
    }
}

/// Attention weights of every head from the raw products `P = Q·Kᵀ` (`[B, H, N, N]`)
/// and a per-head `alpha` (`[H]` values, any shape): with `T = scale·P`,
/// a Softmax head (per `softmax`) gets `softmax(T)`; any other head
/// `alpha·T⁺/(Σ T⁺ + eps) + (1 − alpha)·T/N` (ReLU-Softmax for alpha = 1, ScaleAttn for
/// alpha = 0, the search relaxation in between).
#[derive(Debug, Clone)]
pub struct AttnOp {
    /// `1/√d`.
    pub scale: f32,
    /// ReLU-Softmax denominator epsilon.
    pub eps: f32,
    /// Which heads are Softmax.
    pub softmax: Vec<bool>,
}

impl AttnOp {
    /// Forward of one head's `n × n` block into `out`.
    fn head(&self, p: &[f32], out: &mut [f32], n: usize, softmax: bool, alpha: f32) {
        for (row, o) in p.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            if softmax {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * self.scale;
                let mut sum = 0f32;
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = (v * self.scale - max).exp();
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
}

impl CustomOp2 for AttnOp {
    fn name(&self) -> &'static str {
        "mpcvit-attention-weights"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (p, alpha) = (slice(s1, l1)?, slice(s2, l2)?);
        let (b, h, n, n2) = l1.shape().dims4()?;
        if n != n2 || alpha.len() != h || self.softmax.len() != h {
            bail!(
                "attention op: scores {:?}, {} alphas, {} softmax flags",
                l1.shape(),
                alpha.len(),
                self.softmax.len()
            );
        }
        let mut out = vec![0f32; p.len()];
        out.par_chunks_exact_mut(n * n)
            .zip(p.par_chunks_exact(n * n))
            .enumerate()
            .for_each(|(bh, (oo, pp))| {
                let head = bh % h;
                self.head(pp, oo, n, self.softmax[head], alpha[head]);
            });
        let _ = b;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        p: &Tensor,
        alpha: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (ps, al, a, g) = (vec_of(p)?, vec_of(alpha)?, vec_of(res)?, vec_of(grad)?);
        let (_, h, n, _) = p.dims4()?;
        let mut dp = vec![0f32; ps.len()];
        let nn = n * n;
        let per_block: Vec<f64> = dp
            .par_chunks_exact_mut(nn)
            .enumerate()
            .map(|(bh, dd)| {
                let head = bh % h;
                let r = bh * nn..(bh + 1) * nn;
                let (pp, aa, gg) = (&ps[r.clone()], &a[r.clone()], &g[r]);
                let mut dalpha = 0f64;
                for i in 0..n {
                    let row = i * n..(i + 1) * n;
                    let (prow, arow, grow, drow) = (
                        &pp[row.clone()],
                        &aa[row.clone()],
                        &gg[row.clone()],
                        &mut dd[row],
                    );
                    if self.softmax[head] {
                        let dot: f32 = grow.iter().zip(arow).map(|(g, a)| g * a).sum();
                        for j in 0..n {
                            drow[j] = self.scale * arow[j] * (grow[j] - dot);
                        }
                    } else {
                        let alpha = al[head];
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
                            drow[j] = self.scale * (alpha * d_rs + (1.0 - alpha) * grow[j] * inv_n);
                        }
                    }
                }
                dalpha
            })
            .collect();
        let mut dalpha = vec![0f64; h];
        for (bh, v) in per_block.into_iter().enumerate() {
            dalpha[bh % h] += v;
        }
        let dev = p.device();
        let dalpha: Vec<f32> = dalpha.iter().map(|&v| v as f32).collect();
        Ok((
            Some(Tensor::from_vec(dp, p.shape(), dev)?),
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
        let (xs, g) = (vec_of(x)?, vec_of(grad)?);
        let d: Vec<f32> = xs
            .par_iter()
            .zip(&g)
            .map(|(&x, &g)| g * gelu_grad(x))
            .collect();
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
        let (xs, bs, g) = (vec_of(x)?, vec_of(beta)?, vec_of(grad)?);
        let (_, n, f) = x.dims3()?;
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
    fn attention_matches_candle() {
        let (h, n) = (4, 6);
        let p = Var::from_tensor(&randn(&[2, h, n, n], 3)).unwrap();
        let alpha = Var::from_tensor(&Tensor::new(&[0.3f32, 1.0, 0.0, 0.7], &Device::Cpu).unwrap())
            .unwrap();
        let softmax = vec![false, false, true, false];
        let scale = 0.5f32;
        check(
            &[p, alpha],
            |v| {
                v[0].apply_op2(
                    &v[1],
                    AttnOp {
                        scale,
                        eps: 1e-5,
                        softmax: softmax.clone(),
                    },
                )
                .unwrap()
            },
            |v| {
                let t = (v[0].as_tensor() * f64::from(scale)).unwrap();
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
                (sm.broadcast_mul(&m).unwrap() + mix.broadcast_mul(&(1.0 - &m).unwrap()).unwrap())
                    .unwrap()
            },
            1e-4,
        );
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

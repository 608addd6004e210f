//! Attention: softmax and its rows' normalisation, ReLU-Softmax, ScaleAttn
//! and the attention scores.

use crate::compare::Relu;
use crate::ctx::Ctx;
use crate::error::check_len;
use crate::fx::{Fx, Shape};
use crate::nonlinear::{ATTN_INV_FRAC, Domain, SOFTMAX_MAX_COARSE};
use crate::op::{Op, attempt};
use crate::ring;
use crate::share::Share;

impl Ctx<'_> {
    /// Row softmax of `x` (rows×cols, at `f` bits): `exp(x − max) / Σ
    /// exp(x − max)`, returned at `f` bits with `f + EXTRA_FRAC` pending.
    ///
    /// Steps: row maximum ([`Ctx::row_max`], one round per level, ignoring
    /// the low [`SOFTMAX_MAX_COARSE`] bits), [`Ctx::exp_neg`], row sums
    /// (local), [`Ctx::reciprocal`] on `[1, 2·cols]` (one round, its
    /// truncation left to the product), one row-broadcast product.
    /// Rounds `⌈log2 cols⌉ + k + 1 + 1 + 1`, one more with [`Ctx::settle`]
    /// (19 for cols = 65).
    /// Accuracy: absolute error ≤ 2e-3 per probability for scores whose
    /// pairwise differences stay within `2^(ℓ−1−f)` and above `−2^k`.
    pub fn softmax(&mut self, x: &Fx, bits: u32) -> Op<Fx> {
        let (rows, cols) = (x.rows(), x.cols());
        self.row_max(x.clone(), bits, SOFTMAX_MAX_COARSE)
            .then(move |c, (x, m)| {
                let d = x.sub(&Share::new(ring::repeat_rows(m.as_slice(), cols)));
                let d = c.fx(d, Shape::new(rows, cols));
                c.exp_neg(&d)
            })
            .then(move |c, e| {
                let s = c.fx(row_sums(e.share(), rows, cols), Shape::new(rows, 1));
                // row sums lie in [1, cols·e^0.03] (the maximum may be a little low)
                let dom = Domain {
                    lo: 1.0,
                    hi: 2.0 * cols as f64,
                };
                c.reciprocal(&s, dom).map(move |inv| (e, inv))
            })
            .then(move |c, (e, inv)| c.mul_rows(&e, &inv))
    }

    /// ReLU-softmax row normalisation of `x` (rows×cols, at `f` bits):
    /// `ReLU(x) / (Σ_j ReLU(x)_j + p.eps)`, returned at `f` bits with `f +
    /// EXTRA_FRAC` pending.
    ///
    /// Rounds 2 (the ReLU, `p.relu`; 1 in one round) + 1 (reciprocal of the
    /// row sums on `p.row_sum`, its truncation left to the next opening) +
    /// 1 (row-broadcast product), one more with [`Ctx::settle`]: 5. Bytes ≈
    /// `n·(8 + 1/8) + 8n + …`. Accuracy: relative error ≤ 1e-3 per entry
    /// (plus 1 ulp) while the row sum plus eps lies in `p.row_sum`.
    pub fn relu_softmax(&mut self, x: &Fx, p: ReluAttention) -> Op<Fx> {
        let (rows, cols) = (x.rows(), x.cols());
        self.relu(x, p.relu)
            .then(move |c, r| {
                let s = c.add_scalar(&row_sums(r.share(), rows, cols), c.encode(p.eps));
                let s = c.fx(s, Shape::new(rows, 1));
                c.reciprocal(&s, p.row_sum).map(move |inv| (r, inv))
            })
            .then(move |c, (r, inv)| c.mul_rows(&r, &inv))
    }

    /// ReLU-softmax attention for one head: `diag(1/(rowsum(R) + eps))·(R·V)`
    /// with `R = ReLU(S)` (by [`Ctx::relu`] with `p.relu`, so
    /// scores whose truncation is pending, as [`Ctx::attention_scores`]
    /// gives them, are truncated by the ReLU's own opening), `S` rows×n
    /// (`rows` queries: n, or fewer where only some tokens' outputs are
    /// read) and `V` n×d, given as an operator that runs beside the ReLU
    /// (for example the values already through the head's rows of the
    /// output projection, `V·W_h`, n×C, so the attention output feeds the
    /// residual with no projection round after it). Normalising after the
    /// product scales rows×d values instead of rows×n, and the reciprocal
    /// of the row sums runs beside the product `R·V`.
    ///
    /// Returned at `f` bits with `f + ATTN_INV_FRAC` pending (the row
    /// scaling's product): rounds 2 (ReLU; 1 with `p.relu.one_round`), then 1
    /// (the reciprocal, its truncation left to the next opening, ∥ the
    /// product `R·V`, its truncation left to the same opening), then 1 (row
    /// scaling, which performs both truncations): 4 (3); 5 (4) with
    /// [`Ctx::settle`].
    /// Bytes per party ≈ `8n² + n²/8` (ReLU) `+ 8(n² + nd)` (R·V) `+ 8n`
    /// (reciprocal) `+ 8(nd + n)` (scaling) plus the truncation's bits.
    pub fn relu_attention(&mut self, s: &Fx, v: Op<Fx>, p: ReluAttention) -> Op<Fx> {
        let n = s.cols();
        self.relu(s, p.relu).join(v).then(move |c, (r, v)| {
            attempt!(check_len("relu_attention", "values", v.rows(), n));
            let eps = c.encode(p.eps);
            c.normalised_product(&r, &v, eps, p.row_sum)
        })
    }

    /// `diag(1/(Σ_j W_ij + eps))·(W·V)` for attention weights `W` (rows×n, at
    /// `f` bits) and values `V` (n×d): the product and the reciprocal of the
    /// row sums on `row_sum` in one round, both left untruncated, then the
    /// row scaling that truncates both ([`Ctx::mul_rows`], the
    /// reciprocal read at `f + ATTN_INV_FRAC` bits); the result at `f`
    /// bits, `f + ATTN_INV_FRAC` pending. Rounds 2.
    fn normalised_product(&mut self, w: &Fx, v: &Fx, eps: u64, row_sum: Domain) -> Op<Fx> {
        let f = self.frac_bits();
        let sums = self.add_scalar(&row_sums(w.share(), w.rows(), w.cols()), eps);
        let sums = self.fx(sums, Shape::new(w.rows(), 1));
        let wv = self.matmul(w, v);
        wv.join(self.reciprocal(&sums, row_sum))
            .then(move |c, (wv, inv)| c.mul_rows(&wv, &inv.at_frac(f + ATTN_INV_FRAC)))
    }

    /// Softmax attention for one head: `softmax_row(S)·V` (S rows×n for
    /// `rows` queries, V n×d, given as an operator that runs beside the
    /// maximum and the exponential, as in [`Ctx::relu_attention`]),
    /// normalised after the product as `diag(1/Σ_j E_ij)·(E·V)` with
    /// `E = exp(S − max)`, so the reciprocal runs beside `E·V` and scales
    /// n×d values instead of n×n.
    ///
    /// The scores may carry a pending truncation ([`Ctx::attention_scores`]):
    /// the row maximum's first level performs it. Returned at `f` bits
    /// with `f + ATTN_INV_FRAC` pending.
    ///
    /// Rounds: the row maximum `⌈log2 n⌉` (as in [`Ctx::softmax`]),
    /// [`Ctx::exp_neg`]'s `k + 1`, then 1 (`E·V` ∥ the reciprocal of the
    /// row sums on `[1, 2n]`, both truncations left pending) + 1 (row
    /// scaling, which performs them); with [`Ctx::settle`], 19 for n = 65.
    pub fn softmax_attention(&mut self, s: Fx, v: Op<Fx>, bits: u32) -> Op<Fx> {
        let (rows, n) = (s.rows(), s.cols());
        self.row_max(s, bits, SOFTMAX_MAX_COARSE)
            .then(move |c, (x, m)| {
                let d = x.sub(&Share::new(ring::repeat_rows(m.as_slice(), n)));
                let d = c.fx(d, Shape::new(rows, n));
                c.exp_neg(&d)
            })
            .join(v)
            .then(move |c, (e, v)| {
                attempt!(check_len("softmax_attention", "values", v.rows(), n));
                let dom = Domain {
                    lo: 1.0,
                    hi: 2.0 * n as f64,
                };
                c.normalised_product(&e, &v, 0, dom)
            })
    }

    /// Attention scores `Q·Kᵀ/√d` for one head (Q rows×d for `rows`
    /// queries, K n×d; the scores rows×n), the product and its 1/√d left
    /// pending (at `f` bits) for a consumer that truncates in its own
    /// opening ([`Ctx::relu_attention`], [`Ctx::softmax_attention`]).
    /// Rounds 1; bytes `8(rows + n)d`.
    pub fn attention_scores(&mut self, q: &Fx, k: &Fx) -> Op<Fx> {
        let (n, d) = (k.rows(), k.cols());
        let kt = k.like(Share::new(ring::transpose(k.share().as_slice(), n, d)));
        let kt = kt.reshaped(Shape::new(d, n));
        self.matmul(q, &kt)
            .map(move |s| s.scaled(1.0 / (d as f64).sqrt()))
    }

    /// ScaleAttn for one head: `(Q·Kᵀ/√d)/N · V` with no nonlinearity, computed as
    /// `Q·(Kᵀ·V)` when `d < n` (2nd² instead of 2n²d multiply-adds) and as
    /// `(Q·Kᵀ)·V` otherwise; the public factor `1/(√d·N)` is folded into the
    /// first truncation. `tokens` is the paper's N (the token count). The
    /// queries are `rows` tokens' (Q rows×d, K and V n×d, the output
    /// rows×d at `f` bits; `rows = n` but where only some tokens' outputs
    /// are read).
    ///
    /// Rounds 4. Bytes: `8(nd + nd) + ⌈·/8⌉` for the first product and
    /// `8(rows·d + d²)` (or `8(rows·n + nd)`) for the second.
    /// Accuracy: a few ulps times √(inner dimension).
    pub fn scale_attn(&mut self, q: &Fx, k: &Fx, v: &Fx, tokens: usize) -> Op<Fx> {
        let (n, d) = (k.rows(), k.cols());
        attempt!(check_len("scale_attn", "values", v.len(), n * d));
        if d < n {
            let (kt, scale) = attempt!(scale_attn_keys(q, k, tokens));
            let q = q.clone();
            self.matmul(&kt, v)
                .then(move |c, m| c.settle(m.scaled(scale)))
                .then(move |c, m| c.matmul(&q, &m))
                .then(|c, y| c.settle(y))
        } else {
            let v = v.clone();
            self.scale_attn_weights(q, k, tokens)
                .then(move |c, s| c.matmul(&s, &v))
                .then(|c, y| c.settle(y))
        }
    }

    /// ScaleAttn's attention matrix for one head, `(Q·Kᵀ/√d)/N` (rows × n
    /// at `f` bits for `rows` queries), for a caller that applies it to
    /// values of its own (the model's heads with the output projection
    /// folded in apply it to `V·W_h`, computed beside it). `tokens` is the
    /// paper's N.
    ///
    /// Rounds 2 (the product; its truncation, with the public factor
    /// `1/(√d·N)` folded in). Bytes `8(rows + n)d + ⌈rows·n/8⌉`. Accuracy: one ulp
    /// plus the encoded factor's relative error ([`Fx::scaled`]).
    pub fn scale_attn_weights(&mut self, q: &Fx, k: &Fx, tokens: usize) -> Op<Fx> {
        let (kt, scale) = attempt!(scale_attn_keys(q, k, tokens));
        self.matmul(q, &kt)
            .then(move |c, s| c.settle(s.scaled(scale)))
    }
}

/// Each row's sum of a rows×cols share (local).
fn row_sums(x: &Share, rows: usize, cols: usize) -> Share {
    Share::new(ring::row_sums(x.as_slice(), rows, cols))
}

/// Settings of [`Ctx::relu_attention`] and [`Ctx::relu_softmax`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReluAttention {
    /// The scores' ReLU: comparison width (|S| < 2^(bits−1) ulps), the low
    /// bits it ignores, one round or two (see [`Ctx::relu`]).
    pub relu: Relu,
    /// Added to each row sum.
    pub eps: f64,
    /// Range of the row sums plus eps.
    pub row_sum: Domain,
}

/// ScaleAttn's inputs checked (`q` rows × d, `k` n × d), `Kᵀ` (d × n),
/// and the public factor `1/(√d·N)`.
fn scale_attn_keys(q: &Fx, k: &Fx, tokens: usize) -> crate::error::Result<(Fx, f64)> {
    let (n, d) = (k.rows(), k.cols());
    check_len("scale_attn", "queries", q.cols(), d)?;
    let kt = Share::new(ring::transpose(k.share().as_slice(), n, d));
    let kt = Fx::with_pending(kt, Shape::new(d, n), k.frac(), k.pending());
    Ok((kt, 1.0 / ((d as f64).sqrt() * tokens as f64)))
}

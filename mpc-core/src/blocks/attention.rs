//! Attention: softmax and its rows' normalisation, ReLU-Softmax, ScaleAttn
//! and the attention scores.

use crate::arith::Untruncated;
use crate::ctx::Ctx;
use crate::error::check_len;
use crate::nonlinear::{ATTN_INV_FRAC, Domain, EXTRA_FRAC, SOFTMAX_MAX_COARSE, narrowed};
use crate::op::{Op, attempt};
use crate::ring;
use crate::share::Share;

impl Ctx<'_> {
    /// Row softmax of `x` (rows×cols): `exp(x − max) / Σ exp(x − max)`.
    ///
    /// Steps: row maximum ([`Ctx::row_max`], one round per level, ignoring
    /// the low [`SOFTMAX_MAX_COARSE`] bits), [`Ctx::exp_neg`], row sums
    /// (local), [`Ctx::reciprocal`] on `[1, 2·cols]` (one round, its
    /// truncation left to the product), one row-broadcast product and a
    /// truncation.
    /// Rounds `⌈log2 cols⌉ + k + 1 + 1 + 2` (19 for cols = 65).
    /// Accuracy: absolute error ≤ 2e-3 per probability for scores whose
    /// pairwise differences stay within `2^(ℓ−1−f)` and above `−2^k`.
    pub fn softmax(&mut self, x: &Share, rows: usize, cols: usize, bits: u32) -> Op<Share> {
        attempt!(check_len("softmax", "scores", x.len(), rows * cols));
        self.row_max(x, rows, cols, bits, SOFTMAX_MAX_COARSE)
            .then(move |c, (x, m)| {
                let d = x.sub(&Share::new(ring::repeat_rows(m.as_slice(), cols)));
                c.exp_neg(&d)
            })
            .then(move |c, e| {
                let s = Share::new(ring::row_sums(e.as_slice(), rows, cols));
                // row sums lie in [1, cols·e^0.03] (the maximum may be a little low)
                let dom = Domain {
                    lo: 1.0,
                    hi: 2.0 * cols as f64,
                };
                c.reciprocal_untruncated(&s, dom).map(move |inv| (e, inv))
            })
            .then(move |c, (e, inv)| c.scale_rows(&e, inv, rows, cols))
    }

    /// `diag(inv)·x` for `x` (rows×cols, at `f` bits once its pending
    /// truncation, if any, is done) and row factors `inv` that reach
    /// `f + EXTRA_FRAC` bits after theirs (as [`Ctx::reciprocal_untruncated`]
    /// gives them): both truncations ride on the product's opening
    /// ([`Ctx::mul_rows_pending`]), then one truncation. Rounds 2; bytes
    /// `8(rows·cols + rows) + ⌈rows·cols/8⌉`.
    pub fn scale_rows(
        &mut self,
        x: impl Into<Untruncated>,
        inv: Untruncated,
        rows: usize,
        cols: usize,
    ) -> Op<Share> {
        let x: Untruncated = x.into();
        let s = self.frac_bits() + EXTRA_FRAC;
        self.mul_rows_pending(&x, &inv, rows, cols)
            .then(move |c, y| c.trunc(&y, s))
    }

    /// ReLU-softmax row normalisation: `ReLU(x) / (Σ_j ReLU(x)_j + eps)`.
    ///
    /// Rounds 2 (ReLU) + 1 (reciprocal of the row sums on `row_sum`, its
    /// truncation left to the next opening) + 2 (row-broadcast product,
    /// truncation) = 5. Bytes ≈ `n·(8 + 1/8) + 8n + …`.
    /// Accuracy: relative error ≤ 1e-3 per entry (plus 1 ulp) while the row
    /// sum plus eps lies in `row_sum`.
    pub fn relu_softmax(
        &mut self,
        x: &Share,
        rows: usize,
        cols: usize,
        bits: u32,
        eps: f64,
        row_sum: Domain,
    ) -> Op<Share> {
        attempt!(check_len("relu_softmax", "scores", x.len(), rows * cols));
        self.relu(x, bits)
            .then(move |c, r| {
                let s = Share::new(ring::row_sums(r.as_slice(), rows, cols));
                let s = c.add_scalar(&s, c.encode(eps));
                c.reciprocal_untruncated(&s, row_sum)
                    .map(move |inv| (r, inv))
            })
            .then(move |c, (r, inv)| c.scale_rows(&r, inv, rows, cols))
    }

    /// ReLU-softmax attention for one head: `diag(1/(rowsum(R) + eps))·(R·V)`
    /// with `R = ReLU(S)` (by [`Ctx::relu_truncating`] with `p.coarse`, so
    /// scores whose truncation is pending, as [`Ctx::attention_scores_untruncated`]
    /// gives them, are truncated by the ReLU's own opening), `S` rows×n
    /// (`rows` queries: n, or fewer where only some tokens' outputs are
    /// read) and `V` n×d. Normalising after the product scales rows×d values
    /// instead of rows×n, and the reciprocal of the row sums runs beside the
    /// product `R·V`.
    ///
    /// Rounds 2 (ReLU; 1 with `p.one_round`), then 1 (the reciprocal, its
    /// truncation left to the next opening, ∥ the product `R·V`, its
    /// truncation left to the same opening), then 2 (row scaling, which
    /// performs both truncations, then its own): 5 (4).
    /// Bytes per party ≈ `8n² + n²/8` (ReLU) `+ 8(n² + nd)` (R·V) `+ 8n`
    /// (reciprocal) `+ 8(nd + n)` (scaling) plus the truncation's bits.
    pub fn relu_attention(
        &mut self,
        s: impl Into<Untruncated>,
        v: &Share,
        rows: usize,
        n: usize,
        d: usize,
        p: ReluAttention,
    ) -> Op<Share> {
        self.relu_attention_untruncated(s, Op::ready(v.clone()), rows, n, d, p)
            .then(|c, y| y.truncate(c))
    }

    /// [`Ctx::relu_attention`] without its last truncation: the row
    /// scaling's product at `2f + ATTN_INV_FRAC` bits, `f + ATTN_INV_FRAC`
    /// pending (rounds 4, 3 with `p.one_round`), with the values given as an operator that runs
    /// beside the ReLU: for example the values already through the head's
    /// rows of the output projection (`V·W_h`, n×C), so the attention
    /// output feeds the residual with no projection round after it. The
    /// scores are `rows` queries' (rows×n; `rows < n` where only some
    /// tokens' outputs are read, as the class token's in a last block),
    /// the output rows×d.
    pub fn relu_attention_untruncated(
        &mut self,
        s: impl Into<Untruncated>,
        v: Op<Share>,
        rows: usize,
        n: usize,
        d: usize,
        p: ReluAttention,
    ) -> Op<Untruncated> {
        let s: Untruncated = s.into();
        attempt!(check_len("relu_attention", "scores", s.raw.len(), rows * n));
        let relu = if p.one_round {
            self.relu_one_round(&s, p.bits, p.coarse)
        } else {
            self.relu_truncating(&s, p.bits, p.coarse)
        };
        relu.join(v).then(move |c, (r, v)| {
            attempt!(check_len("relu_attention", "values", v.len(), n * d));
            let eps = c.encode(p.eps);
            c.normalised_product(r, v, eps, rows, n, d, p.row_sum)
        })
    }

    /// `diag(1/(Σ_j W_ij + eps))·(W·V)` for attention weights `W` (rows×n, at
    /// `f` bits) and values `V` (n×d): the product and the reciprocal of the
    /// row sums on `row_sum` in one round, both left untruncated, then the
    /// row scaling that truncates both ([`Ctx::mul_rows_pending`], the
    /// reciprocal to `f + ATTN_INV_FRAC` bits); the result at `2f +
    /// ATTN_INV_FRAC` bits, `f + ATTN_INV_FRAC` pending. Rounds 2.
    fn normalised_product(
        &mut self,
        w: Share,
        v: Share,
        eps: u64,
        rows: usize,
        n: usize,
        d: usize,
        row_sum: Domain,
    ) -> Op<Untruncated> {
        let f = self.frac_bits();
        let sums = self.add_scalar(&Share::new(ring::row_sums(w.as_slice(), rows, n)), eps);
        let wv = self
            .matmul_raw(&w, &v, rows, n, d)
            .map(move |raw| Untruncated { raw, shift: f });
        wv.join(self.reciprocal_untruncated(&sums, row_sum))
            .then(move |c, (wv, inv)| {
                c.mul_rows_pending(&wv, &narrowed(inv, ATTN_INV_FRAC), rows, d)
            })
            .map(move |raw| Untruncated {
                raw,
                shift: f + ATTN_INV_FRAC,
            })
    }

    /// Softmax attention for one head: `softmax_row(S)·V` (S rows×n for
    /// `rows` queries, V n×d),
    /// normalised after the product as `diag(1/Σ_j E_ij)·(E·V)` with
    /// `E = exp(S − max)`, so the reciprocal runs beside `E·V` and scales
    /// n×d values instead of n×n.
    ///
    /// The scores may carry a pending truncation ([`Ctx::attention_scores_untruncated`]):
    /// the row maximum's first level performs it.
    ///
    /// Rounds: the row maximum `⌈log2 n⌉` (as in [`Ctx::softmax`]),
    /// [`Ctx::exp_neg`]'s `k + 1`, then 1 (`E·V` ∥ the reciprocal of the
    /// row sums on `[1, 2n]`, both truncations left pending) + 2 (row
    /// scaling, which performs them, and its truncation): 19 for n = 65.
    pub fn softmax_attention(
        &mut self,
        s: impl Into<Untruncated>,
        v: &Share,
        rows: usize,
        n: usize,
        d: usize,
        bits: u32,
    ) -> Op<Share> {
        self.softmax_attention_untruncated(s, Op::ready(v.clone()), rows, n, d, bits)
            .then(|c, y| y.truncate(c))
    }

    /// [`Ctx::softmax_attention`] without its last truncation, the values
    /// given as an operator that runs beside the maximum and the
    /// exponential, for `rows` queries' scores (rows×n), as
    /// [`Ctx::relu_attention_untruncated`].
    pub fn softmax_attention_untruncated(
        &mut self,
        s: impl Into<Untruncated>,
        v: Op<Share>,
        rows: usize,
        n: usize,
        d: usize,
        bits: u32,
    ) -> Op<Untruncated> {
        let s: Untruncated = s.into();
        attempt!(check_len(
            "softmax_attention",
            "scores",
            s.raw.len(),
            rows * n
        ));
        self.row_max(s, rows, n, bits, SOFTMAX_MAX_COARSE)
            .then(move |c, (x, m)| {
                let d = x.sub(&Share::new(ring::repeat_rows(m.as_slice(), n)));
                c.exp_neg(&d)
            })
            .join(v)
            .then(move |c, (e, v)| {
                attempt!(check_len("softmax_attention", "values", v.len(), n * d));
                let dom = Domain {
                    lo: 1.0,
                    hi: 2.0 * n as f64,
                };
                c.normalised_product(e, v, 0, rows, n, d, dom)
            })
    }

    /// Attention scores `Q·Kᵀ/√d` for one head (Q, K: n×d); the 1/√d is folded
    /// into the truncation. Rounds 2; bytes `16nd + ⌈n²/8⌉`.
    pub fn attention_scores(&mut self, q: &Share, k: &Share, n: usize, d: usize) -> Op<Share> {
        self.attention_scores_untruncated(q, k, n, n, d)
            .then(|c, s| s.truncate(c))
    }

    /// [`Ctx::attention_scores`] with the truncation (and its 1/√d) left
    /// pending, for a consumer that truncates in its own opening
    /// ([`Ctx::relu_attention`]), for `rows` queries (Q rows×d, K n×d; the
    /// scores rows×n). Rounds 1; bytes `8(rows + n)d`.
    pub fn attention_scores_untruncated(
        &mut self,
        q: &Share,
        k: &Share,
        rows: usize,
        n: usize,
        d: usize,
    ) -> Op<Untruncated> {
        let kt = Share::new(ring::transpose(k.as_slice(), n, d));
        let f = self.frac_bits();
        self.matmul_raw(q, &kt, rows, d, n)
            .map(move |s| crate::arith::scaled(&s, f, 1.0 / (d as f64).sqrt()))
    }

    /// ScaleAttn for one head: `(Q·Kᵀ/√d)/N · V` with no nonlinearity, computed as
    /// `Q·(Kᵀ·V)` when `d < n` (2nd² instead of 2n²d multiply-adds) and as
    /// `(Q·Kᵀ)·V` otherwise; the public factor `1/(√d·N)` is folded into the
    /// first truncation. `tokens` is the paper's N (the token count). The
    /// queries are `rows` tokens' (Q rows×d, K and V n×d, the output
    /// rows×d; `rows = n` but where only some tokens' outputs are read).
    ///
    /// Rounds 4. Bytes: `8(nd + nd) + ⌈·/8⌉` for the first product and
    /// `8(rows·d + d²)` (or `8(rows·n + nd)`) for the second.
    /// Accuracy: a few ulps times √(inner dimension).
    #[allow(clippy::too_many_arguments)]
    pub fn scale_attn(
        &mut self,
        q: &Share,
        k: &Share,
        v: &Share,
        rows: usize,
        n: usize,
        d: usize,
        tokens: usize,
    ) -> Op<Share> {
        attempt!(check_len("scale_attn", "values", v.len(), n * d));
        if d < n {
            let (kt, scale) = attempt!(scale_attn_keys(q, k, rows, n, d, tokens));
            let (f, q) = (self.frac_bits(), q.clone());
            self.matmul_raw(&kt, v, d, n, d)
                .then(move |c, m| c.trunc_scaled(&m, f, scale))
                .then(move |c, m| c.matmul(&q, &m, rows, d, d))
        } else {
            let v = v.clone();
            self.scale_attn_weights(q, k, rows, n, d, tokens)
                .then(move |c, s| c.matmul(&s, &v, rows, n, d))
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
    /// plus the encoded factor's relative error ([`Ctx::trunc_scaled`]).
    pub fn scale_attn_weights(
        &mut self,
        q: &Share,
        k: &Share,
        rows: usize,
        n: usize,
        d: usize,
        tokens: usize,
    ) -> Op<Share> {
        let (kt, scale) = attempt!(scale_attn_keys(q, k, rows, n, d, tokens));
        let f = self.frac_bits();
        self.matmul_raw(q, &kt, rows, d, n)
            .then(move |c, s| c.trunc_scaled(&s, f, scale))
    }
}

/// Settings of [`Ctx::relu_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReluAttention {
    /// Comparison width for the scores (|S| < 2^(bits−1) ulps).
    pub bits: u32,
    /// Low bits of the scores the ReLU's comparison ignores (see [`Ctx::relu_coarse`]).
    pub coarse: u32,
    /// The ReLU in one round ([`Ctx::relu_one_round`], about 4× the
    /// scores' dealer material) instead of two ([`Ctx::relu_truncating`]).
    pub one_round: bool,
    /// Added to each row sum.
    pub eps: f64,
    /// Range of the row sums plus eps.
    pub row_sum: Domain,
}

/// ScaleAttn's inputs checked (`q`, `k`: n × d each), `Kᵀ`, and the
/// public factor `1/(√d·N)`.
fn scale_attn_keys(
    q: &Share,
    k: &Share,
    rows: usize,
    n: usize,
    d: usize,
    tokens: usize,
) -> crate::error::Result<(Share, f64)> {
    check_len("scale_attn", "queries", q.len(), rows * d)?;
    check_len("scale_attn", "keys", k.len(), n * d)?;
    let kt = Share::new(ring::transpose(k.as_slice(), n, d));
    Ok((kt, 1.0 / ((d as f64).sqrt() * tokens as f64)))
}

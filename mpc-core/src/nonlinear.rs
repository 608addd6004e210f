//! Nonlinear operators built from products, truncation and comparison:
//! exp, piecewise polynomials (reciprocal, rsqrt), softmax, ReLU-softmax,
//! ScaleAttn and LayerNorm (the GeLUs are in [`crate::gelu`]).
//!
//! Rounds and bytes below are per party and online; "n" is the element count.
//! Accuracy figures are measured by the tests in `tests/nonlinear.rs` at the
//! default `f = 16`.

use crate::approx::{self, Piecewise};
use crate::arith::{MaskedWeight, Untruncated, beaver_term};
use crate::channel;
use crate::dealer::{Request, Squares};
use crate::error::check_len;
use crate::fixed::encode_at;
use crate::op::{Op, attempt};
use crate::open::{NormProducts, masked_products};
use crate::ring;
use crate::session::{Ctx, expect_triple};
use crate::share::Share;

/// Fractional bits of reciprocal and rsqrt outputs above the session's `f`,
/// so that small results (such as `1/4096`) keep about 18 significant bits.
pub const EXTRA_FRAC: u32 = 14;

/// Fractional bits above `f` of a LayerNorm's `1/σ` when it scales products
/// still at `2f` bits (their truncation is then folded into the consumer's:
/// the product of the two is at `3f + NORM_INV_FRAC` bits, so the scaled
/// values must stay below `2^(61 − 3f − NORM_INV_FRAC)`, 2^9 at f = 16).
/// `1/σ ≥ 2^−7` keeps a relative precision of 2^−13 or better.
pub const NORM_INV_FRAC: u32 = 4;

/// Fractional bits above `f` of the reciprocal by which an attention head
/// scales its rows ([`Ctx::relu_attention_untruncated`],
/// [`Ctx::softmax_attention_untruncated`]): the head's output then sits at
/// `2f + ATTN_INV_FRAC` bits with its truncation pending, so a residual
/// stream that takes it untruncated (the projection folded into the
/// values) keeps `2^(62 − 2f − ATTN_INV_FRAC)` of headroom, 2^22 at f = 16
/// (with [`EXTRA_FRAC`] = 14 it would be 2^16, which after LayerNorm's
/// centring bounds the residual stream to `|x| < 256`). `1/s` for a row sum up to
/// 2^12 keeps 12 significant bits.
pub const ATTN_INV_FRAC: u32 = 8;

/// Segments per octave of the piecewise-linear reciprocal and rsqrt.
pub const PER_OCTAVE: usize = 10;

/// Relative resolution of a piecewise-linear function's comparisons
/// ([`Ctx::piecewise_linear_pending`]): the comparison with threshold `t`
/// ignores the input's bits below `2^−KNOT_BITS·|t|`, so an input that
/// close to `t` may take the neighbouring segment. With [`PER_OCTAVE`] =
/// 10 either segment's line stays within 9.0e-4 of `1/x` and 3.4e-4 of
/// `1/√x` (relative) there, so the 1e-3 of the operators holds (measured
/// under MPC: 8.1e-4 and 2.7e-4); at 2^−9 it would be 7.4e-4 for one more
/// DCF level per threshold.
pub const KNOT_BITS: u32 = 8;

/// Low bits the softmax's row maximum ignores ([`Ctx::row_max`] with
/// `coarse`): the shift it subtracts may lie up to `⌈log2 cols⌉·2^(8−f)`
/// below the maximum (0.027 for 65 columns at f = 16), which softmax's
/// shift invariance absorbs; each DCF key is 8 levels shallower.
pub const SOFTMAX_MAX_COARSE: u32 = 8;

/// Squarings in the exponential's limit approximation `(1 + x/2^k)^(2^k)`.
pub const EXP_SQUARINGS: u32 = 8;

/// Input domain of a piecewise-linear reciprocal or rsqrt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Domain {
    /// Smallest input approximated to the stated accuracy.
    pub lo: f64,
    /// Largest input approximated to the stated accuracy.
    pub hi: f64,
}

impl Domain {
    /// Comparison width for inputs up to `hi` at `f` fractional bits (sign bit and margin included).
    pub fn compare_bits(&self, f: u32) -> u32 {
        (self.hi.log2().ceil() as i64 + f as i64 + 2).clamp(8, 64) as u32
    }
}

/// A piecewise approximation with the settings its secure evaluation needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseEval {
    /// The segments.
    pub pw: Piecewise,
    /// Comparison width for inputs at `f` fractional bits.
    pub bits: u32,
    /// Output fractional bits.
    pub out_frac: u32,
    /// Bound on every term of the polynomial on the domain.
    pub max_out: f64,
}

impl PiecewiseEval {
    /// `1/x` on `domain`, output at `f + EXTRA_FRAC` bits (see [`Ctx::reciprocal`]).
    pub fn reciprocal(domain: Domain, f: u32) -> Self {
        PiecewiseEval {
            pw: approx::reciprocal_piecewise(domain.lo, domain.hi, PER_OCTAVE),
            bits: domain.compare_bits(f),
            out_frac: f + EXTRA_FRAC,
            max_out: 2.0 / domain.lo,
        }
    }

    /// `k/√x` on `domain`, output at `f + EXTRA_FRAC` bits (see [`Ctx::rsqrt_scaled`]).
    pub fn rsqrt(domain: Domain, k: f64, f: u32) -> Self {
        PiecewiseEval {
            pw: approx::rsqrt_piecewise(domain.lo, domain.hi, PER_OCTAVE, k),
            bits: domain.compare_bits(f),
            out_frac: f + EXTRA_FRAC,
            max_out: 2.0 * k / domain.lo.sqrt(),
        }
    }

    /// The scale `w` coefficients are encoded at (the widest for which every
    /// term, bounded by `max_out`, stays below 2^61 at `w + f` bits, so slopes
    /// keep their precision at the far end of a wide domain) and the shift
    /// that brings a `w + f`-bit result to `out_frac` bits.
    pub fn coefficient_scale(&self, f: u32) -> (u32, u32) {
        let w = (61 - f as i64 - self.max_out.log2().ceil().max(0.0) as i64)
            .clamp(self.out_frac as i64, (self.out_frac + 30) as i64) as u32;
        (w, w + f - self.out_frac)
    }

    /// The segment bounds encoded at `bits` fractional bits.
    pub fn thresholds(&self, bits: u32) -> Vec<u64> {
        self.pw
            .thresholds
            .iter()
            .map(|t| encode_at(*t, bits))
            .collect()
    }
}

/// Parameters of LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormParams {
    /// Added to the variance (PyTorch's default 1e-5).
    pub eps: f64,
    /// Range of the per-row variance over which `1/√(var + eps)` is accurate.
    pub var: Domain,
}

impl Default for LayerNormParams {
    fn default() -> Self {
        LayerNormParams {
            eps: 1e-5,
            var: Domain {
                lo: 1.0 / 1024.0,
                hi: 16384.0,
            },
        }
    }
}

impl Ctx<'_> {
    /// Evaluate a piecewise polynomial of degree ≤ 2 (see [`Piecewise`]).
    ///
    /// Steps, degree 1: [`Ctx::piecewise_linear_pending`] (one round) and a
    /// truncation. Degree 2: one multi-threshold comparison gives the bits
    /// `g_j = [x ≥ t_j]`; the segment's coefficients are the telescoping sums
    /// `c = c_0 + Σ_j (c_{j+1} − c_j)·g_j` (local); then `c₀ + c₁·x + c₂·x²`
    /// costs one product round after a square, and one truncation
    /// ([`Ctx::piecewise_from_bits`]).
    ///
    /// Rounds: 2 (degree 1) or 5 (degree 2). Bytes: `8n + ⌈n/8⌉` (degree
    /// 1); `⌈n·ℓ/8⌉ + 8n + ⌈n/8⌉ + 32n + ⌈n/8⌉` (degree 2). Each threshold
    /// costs two local DCF evaluations per element (degree 1; one of
    /// 2·(ℓ−1) AES blocks for degree 2).
    /// Domain: `|x − t_j| < 2^(ℓ−1−f)` for every threshold, and every term
    /// `|c_i·x^i| ≤ max_out`.
    pub fn piecewise(&mut self, x: &Share, pe: &PiecewiseEval) -> Op<Share> {
        self.piecewise_untruncated(x, pe).then(|c, u| u.truncate(c))
    }

    /// [`Ctx::piecewise`] before its final truncation (rounds 1 for degree
    /// 1, 4 for degree 2): for a consumer that merges the truncation into its
    /// own opening ([`Ctx::scale_rows`]).
    pub fn piecewise_untruncated(&mut self, x: &Share, pe: &PiecewiseEval) -> Op<Untruncated> {
        if pe.pw.degree() <= 1 {
            return self.piecewise_linear_pending(x, pe);
        }
        let t = pe.thresholds(self.frac_bits());
        let (x, pe) = (x.clone(), pe.clone());
        self.ge_thresholds(&x, &t, pe.bits)
            .then(move |c, g| c.piecewise_from_bits_untruncated(&x, None, &g, &pe))
    }

    /// The rest of [`Ctx::piecewise`] given the comparison bits
    /// `g_j = [x ≥ t_j]` (computed by the caller, possibly in a round shared
    /// with other work) and, for degree 2, optionally `x²` at `f` bits (for
    /// example from the comparison's own opening, saving the square's two
    /// rounds). Coefficients are encoded at the widest scale `w` for which
    /// every term, bounded by `max_out`, stays below 2^61 at `w + f` bits (so
    /// slopes keep their precision at the far end of a wide domain); the
    /// output carries `out_frac` fractional bits.
    ///
    /// Rounds 2 (degree 1, or degree 2 with `x2`) or 4 (degree 2 without).
    pub fn piecewise_from_bits(
        &mut self,
        x: &Share,
        x2: Option<&Share>,
        g: &[Share],
        pe: &PiecewiseEval,
    ) -> Op<Share> {
        self.piecewise_from_bits_untruncated(x, x2, g, pe)
            .then(|c, u| u.truncate(c))
    }

    /// [`Ctx::piecewise_from_bits`] before its final truncation (rounds 1,
    /// or 3 for degree 2 without `x2`).
    pub fn piecewise_from_bits_untruncated(
        &mut self,
        x: &Share,
        x2: Option<&Share>,
        g: &[Share],
        pe: &PiecewiseEval,
    ) -> Op<Untruncated> {
        let n = x.len();
        let f = self.frac_bits();
        let pw = &pe.pw;
        let (w, shift) = pe.coefficient_scale(f);
        let p0 = self.is_p0();
        let coef = |d: usize, scale: u32| -> Share {
            let enc: Vec<u64> = pw.coeffs.iter().map(|c| encode_at(c[d], scale)).collect();
            telescoped(&enc, &Share::new(vec![u64::from(p0); n]), g)
        };
        let a = coef(0, w + f);
        let b = coef(1, w);
        let prod = if pw.degree() == 2 {
            let cc = coef(2, w);
            let x = x.clone();
            let x2 = match x2 {
                Some(x2) => Op::ready(x2.clone()),
                None => self.square(&x),
            };
            x2.then(move |c, x2| {
                c.mul_raw(&Share::concat(&[&b, &cc]), &Share::concat(&[&x, &x2]))
                    .map(move |both| {
                        let parts = both.split(&[n, n]);
                        parts[0].add(&parts[1])
                    })
            })
        } else {
            self.mul_raw(&b, x)
        };
        prod.map(move |p| Untruncated {
            raw: a.add(&p),
            shift,
        })
    }

    /// A piecewise-linear function (see [`Piecewise`]) in one round, its
    /// input's pending truncation (if any) done by the same opening and its
    /// output's left pending: [`Ctx::compare_products`] gives the segment
    /// bits `g_j = [x ≥ t_j]` and `g_j·x`, so `c₀ + c₁·x` with the
    /// telescoping coefficients `c = c_0 + Σ_j (c_{j+1} − c_j)·g_j` is local.
    ///
    /// Rounds 1; bytes `8n` per party; dealer per element: 3 DCF keys
    /// (2 with nothing pending) of `ℓ − 1 − coarse` levels (ℓ = `pe.bits`
    /// plus the pending shift, less the bits below 2^−[`KNOT_BITS`] of the
    /// smallest threshold; each threshold's comparison stops at 2^−KNOT_BITS
    /// of itself, one stop per octave: `8w` bytes each) to each party and
    /// 40 (16) bytes to party 1. CPU: 3 (2) AES blocks per distinct DCF node
    /// the thresholds' points visit: for the reciprocal on [2^−10, 2^12]
    /// (221 thresholds, 31 levels) about a fifth of 221 full paths.
    /// Domain: as [`Ctx::piecewise`].
    pub fn piecewise_linear_pending(
        &mut self,
        x: impl Into<Untruncated>,
        pe: &PiecewiseEval,
    ) -> Op<Untruncated> {
        let x: Untruncated = x.into();
        assert!(
            pe.pw.degree() <= 1,
            "piecewise_linear_pending: degree 1 only"
        );
        let f = self.frac_bits();
        let s = x.shift;
        let (w, shift) = pe.coefficient_scale(f);
        let p0 = self.is_p0();
        let pw = pe.pw.clone();
        let t = pe.thresholds(f + s);
        // Each threshold's comparison ignores the input's bits below
        // 2^−KNOT_BITS of the threshold: there the neighbouring segment's
        // line is as good (the key is as deep as the smallest threshold
        // needs; the others stop early).
        let coarse: Vec<u32> = pe
            .pw
            .thresholds
            .iter()
            .map(|t| {
                (i64::from(f + s) + t.abs().log2().floor() as i64 - i64::from(KNOT_BITS))
                    .clamp(0, i64::from(pe.bits + s) - 2) as u32
            })
            .collect();
        self.compare_products(&x, &t, pe.bits + s, &coarse)
            .map(move |cp| {
                let n = cp.value.len();
                let enc = |d: usize, scale: u32| -> Vec<u64> {
                    pw.coeffs.iter().map(|c| encode_at(c[d], scale)).collect()
                };
                let a = telescoped(
                    &enc(0, w + f),
                    &Share::new(vec![u64::from(p0); n]),
                    &cp.bits,
                );
                let bx = telescoped(&enc(1, w), &cp.value, &cp.products);
                Untruncated {
                    raw: a.add(&bx),
                    shift,
                }
            })
    }

    /// `1/x` for `x` in `domain` (positive), with `f + EXTRA_FRAC` fractional bits out.
    ///
    /// Piecewise linear with [`PER_OCTAVE`] segments per octave, in one round
    /// ([`Ctx::piecewise_linear_pending`]: the comparison against all segment
    /// boundaries also yields their products with `x`), then one truncation.
    /// Rounds 2; bytes `8n + ⌈n/8⌉`; the comparison is `ℓ = ⌈log2 hi⌉ + f +
    /// 2` bits wide. Relative error ≤ 1e-3 on the domain (measured ≤ 4e-4);
    /// outside it the end segments are extrapolated.
    pub fn reciprocal(&mut self, x: &Share, domain: Domain) -> Op<Share> {
        let pe = PiecewiseEval::reciprocal(domain, self.frac_bits());
        self.piecewise(x, &pe)
    }

    /// [`Ctx::reciprocal`] before its final truncation (rounds 1), for
    /// [`Ctx::scale_rows`]; `x` may carry a pending truncation, which the
    /// comparison's opening performs.
    pub fn reciprocal_untruncated(
        &mut self,
        x: impl Into<Untruncated>,
        domain: Domain,
    ) -> Op<Untruncated> {
        let pe = PiecewiseEval::reciprocal(domain, self.frac_bits());
        self.piecewise_linear_pending(x, &pe)
    }

    /// `k/√x` for `x` in `domain`, with `f + EXTRA_FRAC` fractional bits out.
    /// Same method, rounds and bytes as [`Ctx::reciprocal`]; relative error ≤ 1e-3.
    pub fn rsqrt_scaled(&mut self, x: &Share, domain: Domain, k: f64) -> Op<Share> {
        let pe = PiecewiseEval::rsqrt(domain, k, self.frac_bits());
        self.piecewise(x, &pe)
    }

    /// `1/√x`: [`Ctx::rsqrt_scaled`] with `k = 1`.
    pub fn rsqrt(&mut self, x: &Share, domain: Domain) -> Op<Share> {
        self.rsqrt_scaled(x, domain, 1.0)
    }

    /// `exp(x)` for `x ≤ 0` by the limit `(1 + x/2^k)^(2^k)`, k = [`EXP_SQUARINGS`].
    ///
    /// `1 + x/2^k` is formed exactly by reading `x` at `f + k` fractional bits;
    /// each squaring opens its input once, which both truncates the previous
    /// square and squares it (a comparison with no threshold,
    /// [`Ctx::bit_compare`]), and a last truncation ends it. Rounds `k + 1`
    /// (9); bytes `8kn + ⌈n/8⌉`; dealer to party 1 `8n` for the first square,
    /// `22n` for each later one (`r_h²`, `r_h` in full; `r_h·msb(r)`,
    /// `msb(r)` modulo `2^(f+8)`) and `4n` for the last truncation (by
    /// `f + 16`, modulo `2^32`). Absolute error ≤ 1.1e-3 on `[−2^k, 0]`
    /// (the limit's `e^x·x²/2^(k+1)` plus rounding); inputs below `−2^k` give
    /// garbage.
    pub fn exp_neg(&mut self, x: &Share) -> Op<Share> {
        let hi = self.frac_bits() + EXP_SQUARINGS;
        let y = self.add_scalar(x, 1u64 << hi);
        exp_squarings(self, y.into(), 0, hi)
    }

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

    /// LayerNorm of each row of `x` (rows×c): `(x − μ)/√(σ² + eps)·γ + β`,
    /// with `γ` a masked 1×c weight (see [`Ctx::mask_weight`]) and `β` a
    /// shared vector; either may be absent (γ = 1, β = 0), for example when the
    /// model owner has folded them into the next linear layer.
    ///
    /// Steps: `d = c·x − Σx` (local); `x − μ = d/c` with its truncation
    /// pending ([`crate::arith::scaled`]), then [`Ctx::layer_norm_centered`],
    /// whose first opening performs it.
    ///
    /// Rounds 5. Bytes per party ≈ `rows·c·(8 + t/8 + 8 + 3/8) +
    /// rows·(ℓ/8 + 32)`, `t` the shift of the scaling by `1/c` (`log2 c`
    /// for a power of two, else about `SCALE_BITS + log2 c`): the second
    /// opening carries only its wrap part ([`crate::open::BitCompared::products`]).
    /// Dealer: about `36·rows·c` bytes to party 1 (28 without γ; narrowed
    /// corrections, see [`crate::Request`], and the squares summed per row
    /// by the dealer, `Squares::RowSums`).
    /// Accuracy: relative error ≤ 1e-3 of `(x − μ)/σ` while `σ²` lies in
    /// `params.var`, plus a few ulps; requires `|x − μ| < 2^(31 − f)`.
    pub fn layer_norm(
        &mut self,
        x: &Share,
        gamma: Option<&MaskedWeight>,
        beta: Option<&Share>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Op<Share> {
        attempt!(check_len("layer_norm", "input", x.len(), rows * c));
        let xc = crate::arith::scaled(&center_rows(x, rows, c), 0, 1.0 / c as f64);
        self.layer_norm_centered(xc, gamma, beta, rows, c, params)
            .then(|ctx, y| y.truncate(ctx))
    }

    /// [`Ctx::layer_norm`] from the centred rows `x − μ` on, which may carry
    /// a pending truncation (for example `scaled(center_rows(x_raw), f,
    /// 1/c)` of a residual-stream value `x_raw` at `2f` bits): the first
    /// opening performs it. The result is returned with its last truncation
    /// pending (`2f + NORM_INV_FRAC` bits with `γ`, `f + EXTRA_FRAC`
    /// without), for a consumer to merge.
    ///
    /// Steps, for a pending input: round 1 opens `x − μ + r` once for its
    /// truncation and square (a comparison with no threshold,
    /// [`Ctx::bit_compare`]), so `u = Σ(x − μ)² + c·eps = c·(σ² + eps)` is
    /// known after one round ([`Ctx::norm_opening`]); round 2 opens, for
    /// `(x − μ)·γ` (and `(x − μ)·W` in the linear variants), only the
    /// truncation's wrap part masked modulo `2^s` (`s` bits per element for
    /// a pending shift `s`, [`crate::open::BitCompared::products`]) beside the rsqrt's
    /// comparison of `u` and the truncation of `u`; round 3 the rsqrt's
    /// product beside the products' truncations; round 4 the row scaling
    /// by `√c/√u` (which also truncates the rsqrt). For an input with
    /// nothing pending, round 1 opens `x − μ − A` for every product at
    /// once and the rest moves up. Rounds 4 (5 with the final truncation).
    pub fn layer_norm_centered(
        &mut self,
        xc: impl Into<Untruncated>,
        gamma: Option<&MaskedWeight>,
        beta: Option<&Share>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Op<Untruncated> {
        let xc: Untruncated = xc.into();
        if let Some(b) = beta {
            attempt!(check_len("layer_norm", "beta", b.len(), c));
        }
        let f = self.frac_bits();
        // x·γ at 2f times 1/σ at f + NORM_INV_FRAC, or x − μ at f times 1/σ at f + EXTRA_FRAC
        let s = if gamma.is_some() {
            2 * f + NORM_INV_FRAC
        } else {
            f + EXTRA_FRAC
        };
        let beta = beta.map(|b| Share::new(tile(b.as_slice(), rows)).scale_int(1 << s));
        self.norm_inverse(&xc, gamma, None, rows, c, params)
            .then(move |ctx, n| match &n.scaled {
                Some(xg) => ctx.mul_rows_pending(&xg.into(), &n.narrow(), rows, c),
                None => ctx.mul_rows_pending(&(&n.centred).into(), &n.inv, rows, c),
            })
            .map(move |y| Untruncated {
                raw: match beta {
                    Some(b) => y.add(&b),
                    None => y,
                },
                shift: s,
            })
    }

    /// `LN(x)·W + b` for centred rows `xc` (rows×c, possibly with a pending
    /// truncation), a LayerNorm without affine step (fold `γ`, `β` into
    /// `W`, `b` beforehand) followed by a linear layer: the opening of
    /// `x − μ` for the products also serves `(x − μ)·W`, which is then
    /// scaled per row by `1/σ`. Rounds 5, as [`Ctx::layer_norm_centered`].
    /// Bytes per party ≈ `8·rows·(2c + out) + …` (the row scaling opens rows×out).
    pub fn layer_norm_linear(
        &mut self,
        xc: impl Into<Untruncated>,
        w: &MaskedWeight,
        bias: Option<&Share>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Op<Share> {
        let xc: Untruncated = xc.into();
        let out = w.cols();
        if let Some(b) = bias {
            attempt!(check_len("layer_norm_linear", "bias", b.len(), out));
        }
        let bias = bias.map(|b| Share::new(tile(b.as_slice(), rows)));
        self.norm_inverse(&xc, None, Some(w), rows, c, params)
            .then(move |ctx, n| {
                let xw = n.product.as_ref().expect("requested product");
                let s = 2 * ctx.frac_bits() + NORM_INV_FRAC;
                ctx.mul_rows_pending(&xw.into(), &n.narrow(), rows, out)
                    .then(move |ctx, y| ctx.trunc(&y, s))
            })
            .map(move |y| match bias {
                Some(b) => y.add(&b),
                None => y,
            })
    }

    /// `z = LN(x)·γ + β` and `LN(x)·W + b` together, for a LayerNorm whose
    /// output feeds both a residual and a linear layer (`W`, `b` must carry
    /// the norm's `γ`, `β`): one opening serves `(x − μ)·γ` and `(x − μ)·W`,
    /// and both are scaled by `1/σ` in one round. Both are returned with
    /// their last truncation pending (4 rounds from the centred rows), so
    /// the residual's truncation and the consumer of the linear output (a
    /// GeLU or ReLU that truncates in its own opening) can run side by side.
    pub fn layer_norm_and_linear(
        &mut self,
        xc: impl Into<Untruncated>,
        norm: (&MaskedWeight, &Share),
        next: (&MaskedWeight, Option<&Share>),
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Op<(Untruncated, Untruncated)> {
        let xc: Untruncated = xc.into();
        let ((gamma, beta), (w, bias)) = (norm, next);
        let out = w.cols();
        attempt!(check_len("layer_norm", "beta", beta.len(), c));
        if let Some(b) = bias {
            attempt!(check_len("layer_norm_and_linear", "bias", b.len(), out));
        }
        let s = 2 * self.frac_bits() + NORM_INV_FRAC;
        // the shifts at the products' scale before their pending truncation
        let beta = Share::new(tile(beta.as_slice(), rows)).scale_int(1 << s);
        let bias = bias.map(|b| Share::new(tile(b.as_slice(), rows)).scale_int(1 << s));
        self.norm_inverse(&xc, Some(gamma), Some(w), rows, c, params)
            .then(move |ctx, n| {
                let scaled = n.scaled.as_ref().expect("scaled");
                let product = n.product.as_ref().expect("product");
                let inv = n.narrow();
                let z = ctx.mul_rows_pending(&scaled.into(), &inv, rows, c);
                let y = ctx.mul_rows_pending(&product.into(), &inv, rows, out);
                z.join(y)
            })
            .map(move |(z, y)| {
                let y = match bias {
                    Some(b) => y.add(&b),
                    None => y,
                };
                let pending = |raw| Untruncated { raw, shift: s };
                (pending(z.add(&beta)), pending(y))
            })
    }

    /// Shared part of the LayerNorm variants (see
    /// [`Ctx::layer_norm_centered`] for the rounds): the truncated centred
    /// rows and their products, and `√c/√u` with `u = Σ(x − μ)² + c·eps`,
    /// its last truncation pending (for the row scaling).
    fn norm_inverse(
        &mut self,
        xc: &Untruncated,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Op<NormInverse> {
        attempt!(check_len("layer_norm", "input", xc.raw.len(), rows * c));
        if let Some(g) = gamma {
            attempt!(check_len("layer_norm", "gamma", g.rows() * g.cols(), c));
        }
        let f = self.frac_bits();
        let dom = Domain {
            lo: c as f64 * (params.var.lo + params.eps),
            hi: c as f64 * (params.var.hi + params.eps),
        };
        let pe = PiecewiseEval::rsqrt(dom, (c as f64).sqrt(), f);
        let eps = encode_at(c as f64 * params.eps, 2 * f);
        let (gamma, next) = (gamma.cloned(), next.cloned());
        // u = Σ(x − μ)² + c·eps = c·(σ² + eps), at 2f bits
        let u_of = move |ctx: &Ctx<'_>, sq: &Share| {
            ctx.add_scalar(&Share::new(ring::row_sums(sq.as_slice(), rows, c)), eps)
        };
        // the rsqrt in one round on u at 2f (its truncation done by the same opening)
        let rsqrt = move |ctx: &mut Ctx<'_>, u_raw: Share| {
            ctx.piecewise_linear_pending(
                Untruncated {
                    raw: u_raw,
                    shift: f,
                },
                &pe,
            )
        };
        let finish = move |xt: Share, p: NormProducts, inv: Untruncated| NormInverse {
            inv,
            centred: xt,
            scaled: p.scaled,
            product: p.product,
        };
        if xc.shift == 0 {
            // one opening for the square and every product
            let xt = xc.raw.clone();
            return self
                .norm_products_raw(&xc.raw, true, gamma.as_ref(), next.as_ref(), rows, c)
                .then(move |ctx, p| {
                    let u_raw = u_of(ctx, &p.square);
                    rsqrt(ctx, u_raw).map(move |inv| finish(xt, p, inv))
                });
        }
        // a truncating opening gives x − μ and its square; then the products
        self.norm_opening(xc, c, gamma.as_ref(), next.as_ref())
            .then(move |ctx, o| {
                let xt = o.value();
                let u_raw = ctx.add_scalar(&o.square_row_sums(), eps);
                let products = if gamma.is_none() && next.is_none() {
                    Op::ready(NormProducts {
                        square: Share::zeros(0),
                        scaled: None,
                        product: None,
                    })
                } else {
                    o.products(gamma.as_ref(), next.as_ref())
                };
                products
                    .join(rsqrt(ctx, u_raw))
                    .map(move |(p, inv)| finish(xt, p, inv))
            })
    }

    /// From one opening of `x − A` (x: rows×c): with `square`, `x ⊙ x`; with a masked
    /// scale `γ` (1×c), `x ⊙ γ` broadcast over rows; with a masked weight `W`
    /// (c×out), `x·W`. All without truncation.
    /// Rounds 1; sends `8·rows·c` bytes per party; local work includes one
    /// rows×c×out product pair for `W`.
    pub fn norm_products_raw(
        &mut self,
        x: &Share,
        square: bool,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
        rows: usize,
        c: usize,
    ) -> Op<NormProducts> {
        attempt!(check_len("norm_products", "input", x.len(), rows * c));
        if let Some(w) = next {
            attempt!(check_len("norm_products", "weight rows", w.rows(), c));
        }
        let req = Request::NormProducts {
            id: gamma.map(|g| g.id()),
            next: next.map(|w| (w.id(), w.cols())),
            rows,
            cols: c,
            square,
        };
        let (a, _, cc) = attempt!(
            self.take("norm_products", req)
                .and_then(|m| expect_triple("norm_products", m))
        );
        let e_mine = ring::sub(x.as_slice(), &a);
        let p0 = self.is_p0();
        let (gamma, next) = (gamma.cloned(), next.cloned());
        Op::exchange(
            "norm_products",
            channel::pack(&e_mine, 64),
            move |_, peer| {
                let other = channel::unpack(peer, rows * c, 64);
                let e = ring::add(&e_mine, &other);
                let n = rows * c;
                // x² = c_sq + 2e·a + e²  (e² by party 0)
                let sq: Vec<u64> = if square {
                    (0..n)
                        .map(|i| cc[i].wrapping_add(beaver_term(p0, e[i], e[i], a[i], a[i])))
                        .collect()
                } else {
                    Vec::new()
                };
                // x = E + A: E public, A this party's; the dealer's A·B after the squares
                let at = if square { n } else { 0 };
                let (scaled, product) =
                    masked_products((&e, &a, &cc[at..]), gamma.as_ref(), next.as_ref(), c);
                Op::ready(NormProducts {
                    square: Share::new(sq),
                    scaled,
                    product,
                })
            },
        )
    }
}

/// The squarings of [`Ctx::exp_neg`] from squaring `i` on.
/// `y` is the previous square with its truncation pending (nothing pending
/// before the first).
fn exp_squarings(c: &mut Ctx<'_>, y: Untruncated, i: u32, hi: u32) -> Op<Share> {
    if i == EXP_SQUARINGS {
        return y.truncate(c);
    }
    let shift = if i + 1 == EXP_SQUARINGS {
        hi + EXP_SQUARINGS
    } else {
        hi
    };
    c.bit_compare(&y.raw, &[], 62, 0, false, Squares::Each, y.shift)
        .then(move |c, o| {
            let sq = Untruncated {
                raw: o.square_raw(),
                shift,
            };
            exp_squarings(c, sq, i + 1, hi)
        })
}

/// What a LayerNorm's shared part (`Ctx::norm_inverse`) leaves: the
/// truncated centred rows, their requested products at `2f` bits
/// (untruncated) and the rows' `√c/√u` with its truncation pending (to
/// `f + EXTRA_FRAC` bits; [`NormInverse::narrow`] for the products).
struct NormInverse {
    inv: Untruncated,
    centred: Share,
    scaled: Option<Share>,
    product: Option<Share>,
}

impl NormInverse {
    /// `√c/√u` truncating to `f + NORM_INV_FRAC` bits, to scale the
    /// `2f`-bit products: their product then fits the ring untruncated.
    fn narrow(&self) -> Untruncated {
        narrowed(self.inv.clone(), NORM_INV_FRAC)
    }
}

/// A reciprocal or rsqrt whose pending truncation leaves `f + EXTRA_FRAC`
/// bits, truncated instead to `f + frac` bits (`frac ≤ EXTRA_FRAC`), for
/// a product that must fit the ring untruncated.
fn narrowed(inv: Untruncated, frac: u32) -> Untruncated {
    Untruncated {
        raw: inv.raw,
        shift: inv.shift + EXTRA_FRAC - frac,
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

/// Default range of ReLU-softmax row sums: `[2^−10, 2^12]`.
pub const ROW_SUMS: Domain = Domain {
    lo: 1.0 / 1024.0,
    hi: 4096.0,
};

/// `c·x − Σ_j x_j` for each row of `x` (rows×c): `c` times the centred rows,
/// exact and local. Divide by `c` with a scaled truncation.
pub fn center_rows(x: &Share, rows: usize, c: usize) -> Share {
    let sums = ring::row_sums(x.as_slice(), rows, c);
    Share::new(ring::sub(
        &ring::scale(x.as_slice(), c as u64),
        &ring::repeat_rows(&sums, c),
    ))
}

/// `enc_0·base + Σ_j (enc_{j+1} − enc_j)·terms_j` (local): a piecewise
/// function's coefficient (`base` = shares of 1, `terms` = the segment bits)
/// or that coefficient times `x` (`base` = `x`, `terms` = the bits times `x`).
fn telescoped(enc: &[u64], base: &Share, terms: &[Share]) -> Share {
    let mut acc: Vec<u64> = base
        .as_slice()
        .iter()
        .map(|b| b.wrapping_mul(enc[0]))
        .collect();
    for (j, t) in terms.iter().enumerate() {
        let delta = enc[j + 1].wrapping_sub(enc[j]);
        if delta != 0 {
            for (a, b) in acc.iter_mut().zip(t.as_slice()) {
                *a = a.wrapping_add(delta.wrapping_mul(*b));
            }
        }
    }
    Share::new(acc)
}

/// `v` repeated `times` times (a row vector broadcast over rows).
pub fn tile(v: &[u64], times: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(v.len() * times);
    for _ in 0..times {
        out.extend_from_slice(v);
    }
    out
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

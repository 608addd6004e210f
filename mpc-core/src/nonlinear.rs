//! Nonlinear primitives built from products, truncation and comparison:
//! piecewise polynomials (reciprocal, rsqrt) and exp, with the constants and
//! domains the blocks use (the blocks, softmax, ReLU-softmax, ScaleAttn,
//! LayerNorm and the GeLUs, are in [`crate::blocks`]).
//!
//! Rounds and bytes below are per party and online; "n" is the element count.
//! Accuracy figures are measured by the tests in `tests/nonlinear.rs` at the
//! default `f = 16`.

use crate::approx::{self, Piecewise};
use crate::ctx::Ctx;
use crate::dealer::Squares;
use crate::fixed::encode_at;
use crate::fx::Fx;
use crate::op::Op;
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
/// scales its rows ([`Ctx::relu_attention`],
/// [`Ctx::softmax_attention`]): the head's output then sits at
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
/// ([`Ctx::piecewise`] of degree 1): the comparison with threshold `t`
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

    /// `k/√x` on `domain`, output at `f + EXTRA_FRAC` bits (see [`Ctx::rsqrt`]).
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

impl Ctx<'_> {
    /// Evaluate a piecewise polynomial of degree ≤ 2 (see [`Piecewise`])
    /// of `x` (at `f` bits, its truncation possibly pending), returned at
    /// `pe.out_frac` bits with its last truncation pending.
    ///
    /// Steps, degree 1: one round (`Ctx::piecewise_linear`, which also
    /// performs `x`'s pending truncation). Degree 2 (`x` settled first):
    /// one multi-threshold comparison gives the bits `g_j = [x ≥ t_j]`;
    /// the segment's coefficients are the telescoping sums `c = c_0 + Σ_j
    /// (c_{j+1} − c_j)·g_j` (local); then `c₀ + c₁·x + c₂·x²` costs one
    /// product round after a square. Coefficients are encoded at the widest
    /// scale `w` for which every term, bounded by `max_out`, stays below
    /// 2^61 at `w + f` bits (so slopes keep their precision at the far end
    /// of a wide domain).
    ///
    /// Rounds 1 (degree 1) or 4 (degree 2), one more with [`Ctx::settle`].
    /// Bytes: `8n` (degree 1; `+ ⌈n/8⌉` settled); `⌈n·ℓ/8⌉ + 8n + ⌈n/8⌉ +
    /// 32n` (degree 2; `+ ⌈n/8⌉` settled). Each threshold costs two local
    /// DCF evaluations per element (degree 1; one of 2·(ℓ−1) AES blocks for
    /// degree 2). Domain: `|x − t_j| < 2^(ℓ−1−f)` for every threshold, and
    /// every term `|c_i·x^i| ≤ max_out`.
    pub fn piecewise(&mut self, x: &Fx, pe: &PiecewiseEval) -> Op<Fx> {
        if pe.pw.degree() <= 1 {
            return self.piecewise_linear(x.clone(), pe);
        }
        if x.pending() > 0 {
            let pe = pe.clone();
            return self
                .settle(x.clone())
                .then(move |c, x| c.piecewise(&x, &pe));
        }
        let t = pe.thresholds(self.frac_bits());
        let (x, pe) = (x.clone(), pe.clone());
        self.ge_thresholds(&x, &t, pe.bits, 0)
            .then(move |c, g| c.piecewise_from_bits(&x, &g, &pe))
    }

    /// The rest of a degree-2 [`Ctx::piecewise`] given the comparison bits
    /// `g_j = [x ≥ t_j]`: rounds 3, the output's truncation pending.
    fn piecewise_from_bits(&mut self, x: &Fx, g: &[Share], pe: &PiecewiseEval) -> Op<Fx> {
        let (n, shape) = (x.len(), x.shape());
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
        let cc = coef(2, w);
        let xs = x.share().clone();
        let prod = self.square(x).settled().then(move |c, x2| {
            c.mul_raw(
                &Share::concat(&[&b, &cc]),
                &Share::concat(&[&xs, x2.share()]),
            )
            .map(move |both| {
                let parts = both.split(&[n, n]);
                parts[0].add(&parts[1])
            })
        });
        let out_frac = pe.out_frac;
        prod.map(move |p| Fx::with_pending(a.add(&p), shape, out_frac, shift))
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
    pub(crate) fn piecewise_linear(&mut self, x: Fx, pe: &PiecewiseEval) -> Op<Fx> {
        assert!(pe.pw.degree() <= 1, "piecewise_linear: degree 1 only");
        let f = self.frac_bits();
        assert_eq!(x.frac(), f, "piecewise: input at {} bits", x.frac());
        let (s, shape, out_frac) = (x.pending(), x.shape(), pe.out_frac);
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
                Fx::with_pending(a.add(&bx), shape, out_frac, shift)
            })
    }

    /// `1/x` for `x` in `domain` (positive; at `f` bits, its truncation
    /// possibly pending), returned at `f + EXTRA_FRAC` fractional bits with
    /// its truncation pending.
    ///
    /// Piecewise linear with [`PER_OCTAVE`] segments per octave, in one round
    /// (the piecewise-linear [`Ctx::piecewise`]: the comparison against all segment
    /// boundaries also yields their products with `x`, and performs `x`'s
    /// pending truncation). Rounds 1 (2 with [`Ctx::settle`]); bytes `8n`
    /// (`+ ⌈n/8⌉` settled); the comparison is `ℓ = ⌈log2 hi⌉ + f + 2` bits
    /// wide. Relative error ≤ 1e-3 on the domain (measured ≤ 4e-4);
    /// outside it the end segments are extrapolated.
    pub fn reciprocal(&mut self, x: &Fx, domain: Domain) -> Op<Fx> {
        let pe = PiecewiseEval::reciprocal(domain, self.frac_bits());
        self.piecewise_linear(x.clone(), &pe)
    }

    /// `k/√x` for `x` in `domain` (`k = 1` for `1/√x`), returned at `f +
    /// EXTRA_FRAC` fractional bits with its truncation pending. Same method,
    /// rounds and bytes as [`Ctx::reciprocal`]; relative error ≤ 1e-3.
    pub fn rsqrt(&mut self, x: &Fx, domain: Domain, k: f64) -> Op<Fx> {
        let pe = PiecewiseEval::rsqrt(domain, k, self.frac_bits());
        self.piecewise(x, &pe)
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
    pub fn exp_neg(&mut self, x: &Fx) -> Op<Fx> {
        if x.pending() > 0 {
            return self.settle(x.clone()).then(|c, x| c.exp_neg(&x));
        }
        // 1 + x/2^k: x's elements read at k more fractional bits, plus one
        let hi = x.frac() + EXP_SQUARINGS;
        let y = self.add_scalar(x.share(), 1u64 << hi);
        exp_squarings(self, Fx::new(y, x.shape(), hi), 0)
    }
}

/// The squarings of [`Ctx::exp_neg`] from squaring `i` on.
/// `y` is the previous square with its truncation pending (nothing pending
/// before the first), at `f + EXP_SQUARINGS` fractional bits; the last
/// square is read at `f`.
fn exp_squarings(c: &mut Ctx<'_>, y: Fx, i: u32) -> Op<Fx> {
    if i == EXP_SQUARINGS {
        return c.settle(y);
    }
    let (shape, frac) = (y.shape(), y.frac());
    c.bit_compare(&y, &[], 62, 0, false, Squares::Each)
        .then(move |c, o| {
            let sq = Fx::with_pending(o.square_raw(), shape, frac, frac);
            let sq = if i + 1 == EXP_SQUARINGS {
                sq.at_frac(frac - EXP_SQUARINGS)
            } else {
                sq
            };
            exp_squarings(c, sq, i + 1)
        })
}

/// Default range of ReLU-softmax row sums: `[2^−10, 2^12]`.
pub const ROW_SUMS: Domain = Domain {
    lo: 1.0 / 1024.0,
    hi: 4096.0,
};

/// `enc_0·base + Σ_j (enc_{j+1} − enc_j)·terms_j` (local): a piecewise
/// function's coefficient (`base` = shares of 1, `terms` = the segment bits)
/// or that coefficient times `x` (`base` = `x`, `terms` = the bits times `x`).
pub(crate) fn telescoped(enc: &[u64], base: &Share, terms: &[Share]) -> Share {
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

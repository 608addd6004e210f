//! GeLU under MPC: MPCFormer's quadratic ([`Ctx::gelu_quad`]) and the
//! exact-erf GeLU by a piecewise quadratic ([`Ctx::gelu`]), each with its
//! output left untruncated (for the next linear layer to take, or
//! [`Ctx::settle`]), with the approximations both the operators and their
//! plaintext references use.
//!
//! Rounds and bytes are per party and online; "n" is the element count.
//! Accuracy figures are measured by the tests in `tests/nonlinear.rs` and
//! below at the default `f = 16`.

use crate::approx::Piecewise;
use crate::ctx::Ctx;
use crate::dealer::Squares;
use crate::fixed::encode_at;
use crate::fx::Fx;
use crate::op::Op;
use crate::share::Share;
use std::sync::OnceLock;

/// The exact GeLU, `x·Φ(x) = x/2·(1 + erf(x/√2))`.
pub fn gelu_exact(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// Segment boundaries of [`gelu_piecewise`]: multiples of 2^−[`GELU_STEP_BITS`],
/// symmetric about 1/8 (GeLU(x) − x/2 is even). Found by covering
/// `[−4.625, 3.625)` greedily with the widest segments whose minimax quadratic
/// on the segment widened by 1/8 to the left stays within 8.3e-4; 11
/// boundaries is the fewest for which that is possible (10 need 9.9e-4,
/// too close to 1e-3 once the fixed-point rounding is added). Below −4.625
/// the GeLU is within 4.9e-6 of 0; from 3.5 on, within 8.2e-4 of `x`.
pub const GELU_THRESHOLDS: [f64; 11] = [
    -4.625, -2.75, -1.375, -0.875, -0.5, 0.125, 0.625, 1.0, 1.5, 2.875, 3.625,
];

/// Resolution of the erf GeLU's segment comparison: it reads the input to
/// 2^−3, so a value up to 1/8 below a boundary may take the segment above
/// (whose polynomial is fitted to cover that, see [`gelu_piecewise`]).
pub const GELU_STEP_BITS: u32 = 3;

/// Integer bits (sign included) of the erf GeLU's comparison: boundaries are
/// compared exactly for `|x − t| < 2^(GELU_RANGE_BITS − 1) = 128`, which
/// with the boundaries in `[−4.625, 3.625]` makes the domain `|x| < 123`.
pub const GELU_RANGE_BITS: u32 = 8;

/// Bits by which [`Ctx::gelu`] read at `in_frac < f` truncates `x²` beside the bits'
/// opening (to `2·in_frac − 12` bits: 12 with the model's `in_frac = 12`;
/// at `f`, by at most `2f − 1`),
/// so that `x²`'s coefficient keeps 15 fractional bits within the output's
/// `2·in_frac + 3`. It balances the coefficient's rounding (`x² ≤ 21.4` on
/// the quadratic segments) against the square's: the maximum error on a
/// dense grid over [−8, 8] is 1.64e-3 at 10, 0.99e-3 at 11, 1.12e-3 at 12,
/// 1.13e-3 at 13 and 1.39e-3 at 14 (12: the middle of the plateau).
pub const GELU_SQUARE_SHIFT: u32 = 12;

/// Fractional bits of the erf GeLU's polynomial before its last
/// truncation: the outer segment's `x` stays below `2^7·2^54 = 2^61` on the
/// domain, `x` is multiplied by a coefficient at `54 − f` bits and `x²` by
/// one at `54 − 2f` (22 at f = 16).
pub const GELU_SCALE: u32 = 54;

/// The piecewise-quadratic GeLU evaluated under MPC by [`Ctx::gelu`]: 0 below
/// −4.625, `x` from 3.625, and on each of the 10 segments between the
/// [`GELU_THRESHOLDS`] the minimax quadratic of [`gelu_exact`] on the segment
/// widened by 2^−[`GELU_STEP_BITS`] to the left. Maximum error against
/// [`gelu_exact`] 8.3e-4 on the whole real line, also where the secure
/// comparison takes the segment above (asserted in tests).
pub fn gelu_piecewise() -> Piecewise {
    static P: OnceLock<Piecewise> = OnceLock::new();
    P.get_or_init(|| {
        let widen = 1.0 / f64::from(1u32 << GELU_STEP_BITS);
        Piecewise::fit_minimax(
            GELU_THRESHOLDS.to_vec(),
            2,
            gelu_exact,
            [0.0; 3],
            [0.0, 1.0, 0.0],
            widen,
        )
    })
    .clone()
}

/// Fractional bits of [`Ctx::gelu`]'s and [`Ctx::gelu_quad`]'s output for
/// an input read at `in_frac` bits below the session's `f`: `2·in_frac +
/// 3` (so `2·in_frac + 3 − f` pending at `f`).
pub fn gelu_output_bits(in_frac: u32) -> u32 {
    2 * in_frac + 3
}

impl Ctx<'_> {
    /// MPCFormer's quadratic GeLU, `0.125x² + 0.25x + 0.5`, of `x` read at
    /// its `frac` (`in_frac ≤ f`, with `2·in_frac + 3 ≥ f`), returned at
    /// `f` bits with its truncation pending: at `2·in_frac + 3` bits
    /// (`2·in_frac + 3 − f` pending), for [`Ctx::settle`] or for a linear
    /// layer to take as it is (its product is then at `2·in_frac + 3 + f`
    /// bits and its truncation merges into the next opening, so the GeLU
    /// costs one round, not two).
    ///
    /// Evaluated as `x² + 2x·2^in_frac + 4·2^(2·in_frac)`; `x²` comes from
    /// one opening of `x + r` that also performs `x`'s pending truncation,
    /// if any ([`Ctx::bit_compare`] with no threshold). Rounds 1 (2 with
    /// [`Ctx::settle`]); bytes `8n` (`8n + ⌈n/8⌉`); dealer to party 1: `8n`
    /// (`r²`), or with a pending truncation by `s` 16 bytes and `2s` bits
    /// per element (`r_h²`, `r_h` in full, `r_h·msb(r)`, `msb(r)` modulo
    /// `2^s`), plus the settling truncation's `f + 3` bits per element.
    /// Exact to 1 ulp of `in_frac` (2 with a pending truncation) for `|x| <
    /// 2^(29.5 − in_frac)`. With `in_frac = f − 4` (the model's choice) the
    /// input keeps a resolution of 2^−12 (the quadratic's error from it is
    /// at most `(0.25|x| + 0.25)·2^−12`) and the linear layer's output, at
    /// `3f − 5` bits, keeps `2^(67 − 3f)` of headroom (2^19 at f = 16).
    pub fn gelu_quad(&mut self, x: &Fx) -> Op<Fx> {
        let (f, in_frac, shape) = (self.frac_bits(), x.frac(), x.shape());
        assert!(
            in_frac <= f && 2 * in_frac + 3 >= f,
            "gelu_quad: input at {in_frac} of {f} fractional bits"
        );
        // a comparison at no threshold: just the (truncating) opening and its square
        self.bit_compare(x, &[], 62, 0, false, Squares::Each)
            .then(move |c, o| {
                let lin = o.value().scale_int(1u64 << (in_frac + 1));
                let raw = c.add_scalar(&o.square_raw().add(&lin), 4u64 << (2 * in_frac));
                Op::ready(Fx::with_pending(
                    raw,
                    shape,
                    f,
                    gelu_output_bits(in_frac) - f,
                ))
            })
    }

    /// The exact-erf GeLU `x·Φ(x)` by the piecewise quadratic of
    /// [`gelu_piecewise`] (11 boundaries on `[−4.625, 3.625]`, 0 below,
    /// `x` above): `GeLU(x) ≈ c₀(s) + c₁(s)·x + c₂(s)·x²` for the segment
    /// `s` of `x`, with `c(s) = c(0) + Σ_j (c(j+1) − c(j))·[x ≥ t_j]`.
    ///
    /// Steps: round 1 opens `m = x + r` once (64-bit mask; it also performs
    /// `x`'s pending truncation, if any) and gives `x`, `x²` (at `2f` bits,
    /// `m² − 2m·r + r²`) and, through one XOR-output DCF key per element
    /// ([`Ctx::bit_compare`]) evaluated at the 11 boundaries, XOR shares of
    /// `[x ≥ t_j] ⊕ ρ_j`; the comparison reads `x` to 2^−3 on `|x| < 128`
    /// (ℓ = f + 8 bits, the low `f − 3` ignored: a 10-bit DCF, 3 levels and
    /// the 128-bit leaf), and each segment's quadratic is fitted to also
    /// cover the 1/8 below it, where the comparison may pick it. Round 2
    /// opens the 11 masked bits `e_j` and beside them `x² + r₂`, which
    /// truncates `x²` by `q = min(`[`GELU_SQUARE_SHIFT`]`, 2f − 1)`
    /// ([`crate::open::BitCompared::open`]). Each bit is then `b_j = e_j
    /// + (1 − 2e_j)·ρ_j`, and with the dealer's `ρ_j·r` and `ρ_j·r₂` (their
    /// truncated parts) it selects `x` and the truncated `x²` locally
    /// ([`crate::open::BitsOpened::select`],
    /// [`crate::open::BitsOpened::select_square`]): the telescoped sum
    /// `c₀ + c₁·x + c₂·x²` (coefficients at 54, `54 − f` and `54 + q − 2f`
    /// fractional bits) needs no product round. It is returned at `f` bits
    /// with its truncation by `54 − f` pending (round 3: [`Ctx::settle`]).
    ///
    /// Read at `in_frac < f` bits (`x.frac()`, for example `x.at_frac(f −
    /// 4)`), the output is left at `2·in_frac + 3` bits instead
    /// (`2·in_frac + 3 − f` pending, as [`Ctx::gelu_quad`] leaves it), for a linear
    /// layer to take as it is: the GeLU then costs two rounds, not three,
    /// and the linear layer's truncation merges into the next opening. The
    /// coefficients are then at `2·in_frac + 3`, `in_frac + 3` and `3 +`
    /// [`GELU_SQUARE_SHIFT`] fractional bits (`x²`, at `2·in_frac`, is
    /// truncated by `GELU_SQUARE_SHIFT` beside the bits' opening), and the
    /// first opening's truncation parts grow by `f − in_frac` bits each.
    /// Error with `in_frac = f − 4` (the model's choice): the fit's 8.3e-4
    /// plus the input's resolution `2^−in_frac` through the slope (≤
    /// 1.13), the coefficients' rounding and the square's truncation
    /// (measured 1.12e-3 on a dense grid over [−8, 8], asserted < 1.6e-3);
    /// the output stays below `123·2^(2·in_frac + 3)`.
    ///
    /// Rounds 3 (2 at `in_frac < f`, with the output's truncation pending). Bytes `8n + ⌈11n/8⌉ + 8n + ⌈n/8⌉` per party (17.5 per
    /// element). Dealer per
    /// element: the DCF key (64 bytes) to each party; to party 1 `8·11`
    /// each for `ρ` and `ρ·r`, 8 for `r²`, for the square's truncation
    /// `8 + 8·11` (`r₂ >> q`, `ρ·(r₂ >> q)`) and `q + 11q` bits (`msb(r₂)`,
    /// `ρ·msb(r₂)` modulo `2^q`), and `54 − f` bits (the last truncation);
    /// with a pending truncation by `s`, `r_h`, `r_h²`, `ρ·r_h` replace
    /// `r`'s parts and `2s + 11s` bits more (`msb(r)`, `r_h·msb(r)`,
    /// `ρ·msb(r)` modulo `2^s`): 64 + 364.5 bytes in the model (`in_frac =
    /// f − 4`, `s = 36`, `f = 16`). CPU: 11 DCF
    /// evaluations of 4 AES blocks per element and party (the dealer: 14
    /// blocks per key), and 22 local multiply-adds. Error ≤ 8.3e-4
    /// (approximation) plus a few ulps (the truncations, the coefficients'
    /// rounding) against the exact GeLU everywhere on the domain (measured
    /// 8.5e-4 on a dense grid over [−8, 8], boundaries included). Domain
    /// `|x| < 123` (trained checkpoints give `|x| < 10`); `3 ≤ f ≤ 18` and,
    /// with a pending truncation by `s`, `f + 8 + s ≤ 62`.
    pub fn gelu(&mut self, x: &Fx) -> Op<Fx> {
        let (f, in_frac, shape) = (self.frac_bits(), x.frac(), x.shape());
        let (out, sq) = if in_frac == f {
            (GELU_SCALE, GELU_SQUARE_SHIFT.min(2 * f - 1))
        } else {
            assert!(
                in_frac < f && 2 * in_frac >= GELU_SQUARE_SHIFT,
                "gelu: input at {in_frac} of {f} fractional bits"
            );
            (gelu_output_bits(in_frac), GELU_SQUARE_SHIFT)
        };
        self.gelu_at(x, out, sq)
            .map(move |raw| Fx::with_pending(raw, shape, f, out - f))
    }

    /// The erf GeLU of `x` read at its `frac`, at `out` fractional bits,
    /// `x²` truncated by `sq` in round 2: rounds 2 (see [`Ctx::gelu`]).
    fn gelu_at(&mut self, x: &Fx, out: u32, sq: u32) -> Op<Share> {
        let f = self.frac_bits();
        assert!(
            (GELU_STEP_BITS..=18).contains(&f),
            "gelu: {f} fractional bits outside {GELU_STEP_BITS}..=18"
        );
        // coefficient d multiplies x^d, at out − d·in_frac (+ sq for x²) bits
        let in_frac = x.frac();
        let scales = [out, out - in_frac, out + sq - 2 * in_frac];
        let pw = gelu_piecewise();
        // the comparison reads every bit of x, the opening truncates it to in_frac
        let t: Vec<u64> = pw
            .thresholds
            .iter()
            .map(|t| encode_at(*t, x.bits()))
            .collect();
        let bits = x.bits() + GELU_RANGE_BITS;
        let coarse = x.bits() - GELU_STEP_BITS;
        let square = Squares::EachTruncated(sq);
        self.bit_compare(x, &t, bits, coarse, true, square)
            .then(|_, cmp| cmp.open())
            .then(move |c, opened| {
                // coefficient d at `scales[d]` fractional bits: c_d(0) plus
                // the boundaries' steps c_d(j+1) − c_d(j) weighted by the bits
                let encoded: Vec<Vec<u64>> = (0..3)
                    .map(|d| {
                        pw.coeffs
                            .iter()
                            .map(|c| encode_at(c[d], scales[d]))
                            .collect()
                    })
                    .collect();
                let steps: Vec<Vec<u64>> = encoded
                    .iter()
                    .map(|e| e.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect())
                    .collect();
                // c₀ + c₁·x + c₂·x² with each c_d(0)·x^d and each step times
                // the bit's selection of x^d (1, x, the truncated x²)
                let ones = opened.weighted(&[&steps[0]]).remove(0);
                let (v, v2) = (opened.value(), opened.square());
                let mut y = c
                    .add_scalar(&ones, encoded[0][0])
                    .add(&v.scale_int(encoded[1][0]))
                    .add(&v2.scale_int(encoded[2][0]))
                    .into_vec();
                let selected = [(1, opened.select()), (2, opened.select_square())];
                for (d, per_bit) in selected {
                    for (bit, w) in per_bit.iter().zip(&steps[d]) {
                        for (y, b) in y.iter_mut().zip(bit.as_slice()) {
                            *y = y.wrapping_add(b.wrapping_mul(*w));
                        }
                    }
                }
                Op::ready(Share::new(y))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest error of `p` against the exact GeLU on `[lo, hi]`, also
    /// evaluating each segment's polynomial on the 1/8 below it.
    fn worst(p: &Piecewise, lo: f64, hi: f64) -> f64 {
        let widen = 1.0 / f64::from(1u32 << GELU_STEP_BITS);
        let mut w: f64 = 0.0;
        let steps = ((hi - lo) * 4000.0) as usize;
        for i in 0..=steps {
            let x = lo + (hi - lo) * i as f64 / steps as f64;
            w = w.max((p.eval(x) - gelu_exact(x)).abs());
            // the segment above, where the comparison may pick it
            let up = p.segment(x + widen);
            let [c0, c1, c2] = p.coeffs[up];
            w = w.max((c0 + c1 * x + c2 * x * x - gelu_exact(x)).abs());
        }
        w
    }

    #[test]
    fn gelu_fit_error_is_below_8_4e_4_with_the_neighbour_segment() {
        let p = gelu_piecewise();
        assert_eq!(p.thresholds.len(), 11);
        let w = worst(&p, -130.0, 130.0);
        eprintln!("gelu piecewise worst error {w:.3e}");
        assert!(w < 8.4e-4, "gelu piecewise error {w}");
        // the thresholds are on the comparison's grid
        for t in &p.thresholds {
            assert_eq!((t * 8.0).fract(), 0.0, "threshold {t}");
        }
    }

    #[test]
    fn ten_boundaries_would_not_do() {
        // the best 10-boundary cover needs 9.1e-4: check one segment of the
        // greedy cover is already over 8.3e-4 when any two segments merge
        let widen = 0.125;
        let t = GELU_THRESHOLDS;
        for j in 0..t.len() - 2 {
            let (_, e) = crate::approx::minimax(t[j] - widen, t[j + 2], 2, gelu_exact);
            assert!(
                e > 8.3e-4,
                "segments {j} and {} merge with error {e}",
                j + 1
            );
        }
    }
}

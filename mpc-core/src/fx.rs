//! Fixed-point shares that carry their shape and scale.
//!
//! An [`Fx`] is one party's additive share of a rows × cols matrix of reals
//! `x` (a vector is one row) held as ring elements
//!
//! `x̃ = round(x · 2^(frac + pending))  (mod 2^ring)`,
//!
//! `frac` fractional bits that the value is meant at, and `pending` more
//! that a truncation by `pending` (not applied yet) removes. A value with
//! nothing pending is at its scale; a product is not: its elements carry
//! the sum of its operands' bits, and its truncation is left to whatever
//! consumes it.
//!
//! Conventions, stated once here and read by every operator:
//!
//! - **Products.** A product of operands at `frac` `a` and `b` (nothing
//!   pending) is at `frac min(a, b)`, pending `max(a, b)`: a product of two
//!   `f`-bit values is `frac f`, `pending f`; a value at `f` bits times a
//!   reciprocal at `f + 8` is `frac f`, `pending f + 8`.
//! - **Sums.** [`Fx::add`] and [`Fx::sub`] lift the operand with fewer bits
//!   locally (times `2^k`, exact while the result stays in the ring's
//!   domain) to the other's, at the finer of the two `frac`s.
//! - **Asking for a scale.** [`Fx::at_frac`] reads a value at another
//!   `frac`: fewer bits move into `pending` (the consumer's truncation
//!   removes them too), more lift the value locally.
//! - **Truncation.** An operator whose opening can truncate (a masked
//!   opening, see [`crate::open`]) takes its input with `pending > 0` and
//!   performs the truncation in that opening; [`Ctx::settle`] is the one
//!   place a pending truncation takes a round of its own ([`Ctx::trunc`]).
//!
//! `ring` is the ring's width in bits, 64 for every value here.
//! `Debug` shows the shape and the scale, never the elements.

use crate::ctx::Ctx;
use crate::op::Op;
use crate::share::Share;

/// The ring width, in bits, of every [`Fx`].
pub const RING_BITS: u32 = 64;

/// A matrix's rows and columns (a vector is one row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl Shape {
    /// `rows × cols`.
    pub fn new(rows: usize, cols: usize) -> Self {
        Shape { rows, cols }
    }

    /// A vector of `n`: one row.
    pub fn flat(n: usize) -> Self {
        Shape { rows: 1, cols: n }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True for a shape with no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One party's share of a fixed-point matrix with its shape, its
/// fractional bits and its pending truncation (see the module doc).
#[derive(Clone, PartialEq, Eq)]
pub struct Fx {
    share: Share,
    shape: Shape,
    frac: u32,
    pending: u32,
    ring: u32,
}

impl std::fmt::Debug for Fx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Fx(<{}×{} secret elements>, frac {}, pending {}, ring {})",
            self.shape.rows, self.shape.cols, self.frac, self.pending, self.ring
        )
    }
}

impl Fx {
    /// A share at `frac` fractional bits, nothing pending.
    ///
    /// Panics when `share` does not hold `shape.len()` elements.
    pub fn new(share: Share, shape: Shape, frac: u32) -> Self {
        Self::with_pending(share, shape, frac, 0)
    }

    /// A share at `frac + pending` bits whose truncation by `pending` is
    /// still to be applied. Panics when `share` does not hold
    /// `shape.len()` elements.
    pub fn with_pending(share: Share, shape: Shape, frac: u32, pending: u32) -> Self {
        assert_eq!(
            share.len(),
            shape.len(),
            "Fx: {} elements for a {}×{} shape",
            share.len(),
            shape.rows,
            shape.cols
        );
        assert!(
            frac + pending < RING_BITS,
            "Fx: {frac} + {pending} bits in a {RING_BITS}-bit ring"
        );
        Fx {
            share,
            shape,
            frac,
            pending,
            ring: RING_BITS,
        }
    }

    /// The product of operands at `frac` `a` and `b` (nothing pending on
    /// either), held in `share`: at `frac min(a, b)`, `max(a, b)` pending
    /// (the products' convention, see the module doc).
    pub(crate) fn product(share: Share, shape: Shape, a: u32, b: u32) -> Self {
        Self::with_pending(share, shape, a.min(b), a.max(b))
    }

    /// A share with this value's shape and scale.
    pub fn like(&self, share: Share) -> Self {
        Self::with_pending(share, self.shape, self.frac, self.pending)
    }

    /// The ring elements (`frac + pending` fractional bits).
    pub fn share(&self) -> &Share {
        &self.share
    }

    /// The ring elements, owned.
    pub fn into_share(self) -> Share {
        self.share
    }

    /// Rows and columns.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.shape.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.shape.cols
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.share.len()
    }

    /// True for a value with no element.
    pub fn is_empty(&self) -> bool {
        self.share.is_empty()
    }

    /// Fractional bits the value is meant at.
    pub fn frac(&self) -> u32 {
        self.frac
    }

    /// Bits of the pending truncation.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Fractional bits the ring elements carry: `frac + pending`.
    pub fn bits(&self) -> u32 {
        self.frac + self.pending
    }

    /// The ring's width in bits.
    pub fn ring(&self) -> u32 {
        self.ring
    }

    /// The same matrix read as `shape` (same number of elements).
    pub fn reshaped(self, shape: Shape) -> Self {
        let (frac, pending) = (self.frac, self.pending);
        Self::with_pending(self.into_share(), shape, frac, pending)
    }

    /// Times `2^k` (local, exact in the ring): `k` more bits pending.
    pub fn lift(&self, k: u32) -> Self {
        if k == 0 {
            return self.clone();
        }
        let share = self.share.scale_int(1u64 << k);
        Self::with_pending(share, self.shape, self.frac, self.pending + k)
    }

    /// The value read at `frac` fractional bits: with fewer bits than the
    /// elements carry, the rest joins the pending truncation (free); with
    /// more, the value is lifted locally ([`Fx::lift`]).
    pub fn at_frac(&self, frac: u32) -> Self {
        let bits = self.bits();
        if frac <= bits {
            Self::with_pending(self.share.clone(), self.shape, frac, bits - frac)
        } else {
            self.lift(frac - bits).at_frac(frac)
        }
    }

    /// The value read at every bit its elements carry, nothing pending
    /// (`frac + pending` fractional bits): for a product that takes it as
    /// it is, untruncated.
    pub fn whole(&self) -> Self {
        self.at_frac(self.bits())
    }

    /// `self` and `o` lifted to the larger of their bits, read at the finer
    /// of their `frac`s (see the module doc).
    fn aligned(&self, o: &Fx) -> (Fx, Fx) {
        assert_eq!(self.shape, o.shape, "Fx: adding different shapes");
        let bits = self.bits().max(o.bits());
        let frac = self.frac.max(o.frac);
        let lifted = |x: &Fx| x.lift(bits - x.bits()).at_frac(frac);
        (lifted(self), lifted(o))
    }

    /// `self + o` (local), aligned as the module doc says.
    pub fn add(&self, o: &Fx) -> Fx {
        let (a, b) = self.aligned(o);
        a.like(a.share.add(&b.share))
    }

    /// `self − o` (local), aligned as the module doc says.
    pub fn sub(&self, o: &Fx) -> Fx {
        let (a, b) = self.aligned(o);
        a.like(a.share.sub(&b.share))
    }

    /// `self · scale` for a public real `scale > 0` (local): the elements
    /// times the integer `k ≈ scale·2^t` of
    /// [`SCALE_BITS`](crate::arith::SCALE_BITS) significant bits, `t` more
    /// bits pending (exact, `k = 1`, for a power of two ≤ 1), so that the
    /// consumer's truncation (or [`Ctx::settle`], one round, `⌈n/8⌉` bytes)
    /// applies the scale. Error once truncated: 1 ulp plus a relative error
    /// ≤ 2^−`SCALE_BITS` (6.1e-5) of the encoded scale. Domain: the
    /// elements grow by `k < 2^SCALE_BITS` for a scale that is not a power
    /// of two and must stay below 2^62: `|x̃| < 2^48`. (With 20-bit
    /// factors, LayerNorm's centring at `2f` bits, `C·x` for `C = 192`,
    /// would pass 2^62 once `|x|` reached about 4.7 and fail on whole rows
    /// of `vit_9_12_64`.)
    pub fn scaled(&self, scale: f64) -> Fx {
        assert!(scale > 0.0 && scale.is_finite(), "Fx::scaled: {scale}");
        let (k, t) = crate::arith::scale_factor(scale);
        let share = if k == 1 {
            self.share.clone()
        } else {
            self.share.scale_int(k)
        };
        Self::with_pending(share, self.shape, self.frac, self.pending + t)
    }

    /// Rows `range`.
    pub fn row_range(&self, range: std::ops::Range<usize>) -> Fx {
        let cols = self.cols();
        let share = self.share.slice(range.start * cols..range.end * cols);
        Self::with_pending(
            share,
            Shape::new(range.len(), cols),
            self.frac,
            self.pending,
        )
    }

    /// Columns `cols` of each row in `rows`, in that order (the scale kept).
    pub fn gather(&self, rows: &[usize], cols: std::ops::Range<usize>) -> Fx {
        let width = self.cols();
        let v = self.share.as_slice();
        let share = rows
            .iter()
            .flat_map(|&t| {
                v[t * width + cols.start..t * width + cols.end]
                    .iter()
                    .copied()
            })
            .collect();
        Self::with_pending(
            Share::new(share),
            Shape::new(rows.len(), cols.len()),
            self.frac,
            self.pending,
        )
    }

    /// The parts' rows one after the other (equal columns), each lifted to
    /// the largest bits among them, read at the finest `frac` (as [`Fx::add`]).
    pub fn concat_rows(parts: &[&Fx]) -> Fx {
        let first = parts.first().expect("Fx::concat_rows: no part");
        let bits = parts.iter().map(|p| p.bits()).max().unwrap_or(0);
        let frac = parts.iter().map(|p| p.frac).max().unwrap_or(0);
        let lifted: Vec<Fx> = parts.iter().map(|p| p.lift(bits - p.bits())).collect();
        for p in &lifted {
            assert_eq!(
                p.cols(),
                first.cols(),
                "Fx::concat_rows: column counts differ"
            );
        }
        let shares: Vec<&Share> = lifted.iter().map(|p| &p.share).collect();
        let rows = lifted.iter().map(Fx::rows).sum();
        Self::with_pending(
            Share::concat(&shares),
            Shape::new(rows, first.cols()),
            frac,
            bits - frac,
        )
    }

    /// The parts side by side (equal rows and scale): row `t` is every
    /// part's row `t` in turn.
    pub fn concat_cols(parts: &[Fx]) -> Fx {
        let first = parts.first().expect("Fx::concat_cols: no part");
        let rows = first.rows();
        let cols: usize = parts.iter().map(Fx::cols).sum();
        let mut out = Vec::with_capacity(rows * cols);
        for t in 0..rows {
            for p in parts {
                assert_eq!(
                    (p.rows(), p.frac, p.pending),
                    (rows, first.frac, first.pending),
                    "Fx::concat_cols: parts differ in rows or scale"
                );
                out.extend_from_slice(&p.share.as_slice()[t * p.cols()..(t + 1) * p.cols()]);
            }
        }
        first.like_shaped(Share::new(out), Shape::new(rows, cols))
    }

    /// A `rows`-row matrix whose row `at[j]` is row `j` of `part`, for each
    /// part (equal columns and scale; every row given once).
    pub fn scatter_rows(rows: usize, parts: &[(&[usize], &Fx)]) -> Fx {
        let (_, first) = parts.first().expect("Fx::scatter_rows: no part");
        let cols = first.cols();
        let mut out = vec![0u64; rows * cols];
        for (at, p) in parts {
            assert_eq!(
                (p.cols(), p.frac, p.pending),
                (cols, first.frac, first.pending),
                "Fx::scatter_rows: parts differ in columns or scale"
            );
            for (j, &t) in at.iter().enumerate() {
                out[t * cols..(t + 1) * cols]
                    .copy_from_slice(&p.share.as_slice()[j * cols..(j + 1) * cols]);
            }
        }
        first.like_shaped(Share::new(out), Shape::new(rows, cols))
    }

    /// A share of `shape` with this value's scale.
    fn like_shaped(&self, share: Share, shape: Shape) -> Fx {
        Self::with_pending(share, shape, self.frac, self.pending)
    }
}

impl Op<Fx> {
    /// This operator's result with its pending truncation applied
    /// ([`Ctx::settle`]).
    pub fn settled(self) -> Op<Fx> {
        self.then(|c, y| c.settle(y))
    }
}

impl Ctx<'_> {
    /// `x` with its pending truncation applied ([`Ctx::trunc`], one round;
    /// none when nothing is pending): the one place a pending truncation
    /// takes a round of its own. Error ≤ 1 ulp at `x.frac()`; domain
    /// `|x̃| < 2^62`.
    pub fn settle(&mut self, x: Fx) -> Op<Fx> {
        if x.pending == 0 {
            return Op::ready(x);
        }
        let (shape, frac) = (x.shape, x.frac);
        self.trunc(&x.share, x.pending)
            .map(move |t| Fx::new(t, shape, frac))
    }

    /// `xs` with their pending truncations applied ([`Ctx::settle`]), all
    /// in one round, for an operator that needs its operands at their scale.
    pub(crate) fn settle_all(&mut self, xs: &[&Fx]) -> Op<Vec<Fx>> {
        let ops = xs.iter().map(|x| self.settle((*x).clone())).collect();
        Op::all(ops)
    }

    /// A share of `share` at the session's `f` fractional bits.
    pub fn fx(&self, share: Share, shape: Shape) -> Fx {
        Fx::new(share, shape, self.frac_bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::{Prg, Seed};
    use crate::share::{reconstruct, share_secret};

    fn shared(v: &[f64], frac: u32) -> [Fx; 2] {
        let enc: Vec<u64> = v
            .iter()
            .map(|x| crate::fixed::encode_at(*x, frac))
            .collect();
        let (a, b) = share_secret(&enc, &mut Prg::new(&Seed::for_tests(7)));
        let shape = Shape::flat(v.len());
        [Fx::new(a, shape, frac), Fx::new(b, shape, frac)]
    }

    fn value(x: &[Fx; 2]) -> Vec<f64> {
        reconstruct(x[0].share(), x[1].share())
            .iter()
            .map(|v| crate::fixed::decode_at(*v, x[0].bits()))
            .collect()
    }

    #[test]
    fn sums_align_by_lifting_the_coarser_operand() {
        let a = shared(&[1.5, -2.25], 16);
        let b = shared(&[0.25, 4.0], 16).map(|x| x.lift(8));
        let s = [a[0].add(&b[0]), a[1].add(&b[1])];
        assert_eq!((s[0].frac(), s[0].pending()), (16, 8));
        assert_eq!(value(&s), vec![1.75, 1.75]);
        let d = [b[0].sub(&a[0]), b[1].sub(&a[1])];
        assert_eq!(value(&d), vec![-1.25, 6.25]);
        // a finer frac wins, the other lifted to it
        let c = shared(&[0.5, 0.5], 20);
        let s = [a[0].add(&c[0]), a[1].add(&c[1])];
        assert_eq!((s[0].frac(), s[0].pending()), (20, 0));
        assert_eq!(value(&s), vec![2.0, -1.75]);
    }

    #[test]
    fn at_frac_moves_bits_into_pending_or_lifts() {
        let a = shared(&[3.0], 16);
        let low = a[0].at_frac(12);
        assert_eq!((low.frac(), low.pending(), low.bits()), (12, 4, 16));
        assert_eq!(low.share(), a[0].share());
        let high = a[0].at_frac(20);
        assert_eq!((high.frac(), high.pending()), (20, 0));
        assert_eq!(value(&[a[0].at_frac(20), a[1].at_frac(20)]), vec![3.0]);
    }

    #[test]
    fn scaled_folds_the_factor_into_the_pending_bits() {
        let a = shared(&[2.0, -1.0], 16);
        let half = [a[0].scaled(0.5), a[1].scaled(0.5)];
        assert_eq!((half[0].frac(), half[0].pending()), (16, 1));
        assert_eq!(value(&half), vec![1.0, -0.5]);
        let third = [a[0].scaled(1.0 / 3.0), a[1].scaled(1.0 / 3.0)];
        assert_eq!(third[0].frac(), 16);
        for (got, want) in value(&third).iter().zip([2.0 / 3.0, -1.0 / 3.0]) {
            assert!((got - want).abs() < 1e-4, "{got} against {want}");
        }
    }

    #[test]
    fn rows_and_gathers_keep_the_scale() {
        let enc: Vec<u64> = (0..6).collect();
        let x = Fx::with_pending(Share::new(enc), Shape::new(3, 2), 16, 4);
        let r = x.row_range(1..3);
        assert_eq!(
            (r.shape(), r.frac(), r.pending()),
            (Shape::new(2, 2), 16, 4)
        );
        assert_eq!(r.share().as_slice(), &[2, 3, 4, 5]);
        let g = x.gather(&[2, 0], 1..2);
        assert_eq!(g.shape(), Shape::new(2, 1));
        assert_eq!(g.share().as_slice(), &[5, 1]);
    }

    #[test]
    fn concatenations_and_scatters_keep_rows_in_place() {
        let m = |v: Vec<u64>, rows, cols| Fx::new(Share::new(v), Shape::new(rows, cols), 16);
        let a = m(vec![1, 2], 1, 2);
        let b = m(vec![3, 4, 5, 6], 2, 2).lift(1);
        let r = Fx::concat_rows(&[&a, &b]);
        assert_eq!((r.shape(), r.pending()), (Shape::new(3, 2), 1));
        assert_eq!(r.share().as_slice(), &[2, 4, 6, 8, 10, 12]);
        let c = Fx::concat_cols(&[m(vec![1, 2], 2, 1), m(vec![3, 4, 5, 6], 2, 2)]);
        assert_eq!(c.share().as_slice(), &[1, 3, 4, 2, 5, 6]);
        let s = Fx::scatter_rows(
            3,
            &[
                (&[2], &m(vec![7, 8], 1, 2)),
                (&[0, 1], &m(vec![1, 2, 3, 4], 2, 2)),
            ],
        );
        assert_eq!(s.share().as_slice(), &[1, 2, 3, 4, 7, 8]);
        let w = b.whole();
        assert_eq!((w.frac(), w.pending(), w.share()), (17, 0, b.share()));
    }

    #[test]
    fn debug_shows_shape_and_scale_only() {
        let x = Fx::with_pending(Share::new(vec![123_456; 6]), Shape::new(2, 3), 16, 8);
        assert_eq!(
            format!("{x:?}"),
            "Fx(<2×3 secret elements>, frac 16, pending 8, ring 64)"
        );
    }

    #[test]
    #[should_panic(expected = "elements for a")]
    fn a_share_must_fill_its_shape() {
        Fx::new(Share::zeros(5), Shape::new(2, 3), 16);
    }
}

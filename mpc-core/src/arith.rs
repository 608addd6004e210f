//! Products and truncation.
//!
//! Products use Beaver's method with dealer triples: open the masked operands
//! `E = X − A`, `F = Y − B`, then `XY = C + E·B + A·F + E·F` is linear in the
//! shares. A `*_raw` product carries `2f` fractional bits (or `f` when one
//! operand is an integer such as a comparison bit); the plain name truncates
//! back to `f` bits with [`Ctx::trunc`]. Every operator is a method on
//! [`Ctx`] returning an [`Op`].

use crate::channel;
use crate::ctx::{Ctx, expect_triple};
use crate::dealer::kinds::{WeightMask, Wrap};
use crate::dealer::{Material, Request};
use crate::error::{MpcError, check_len};
use crate::fx::{Fx, Shape};
use crate::op::{Op, attempt};
use crate::ring;
use crate::share::Share;
use std::sync::Arc;

/// A fixed weight prepared for repeated products: its mask `B` is opened once
/// as `F = W − B` when the model is loaded, so each later product opens only
/// the activation side. `Debug` shows only the shape.
#[derive(Clone)]
pub struct MaskedWeight {
    id: u32,
    k: usize,
    n: usize,
    /// `F = W − B`, public to both parties (shared by clones).
    f: Arc<[u64]>,
    /// `B_i + [i = 0]·F`: the matrix this party multiplies `E` by.
    eb: Arc<[u64]>,
}

impl std::fmt::Debug for MaskedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaskedWeight(id {}, {}x{})", self.id, self.k, self.n)
    }
}

impl MaskedWeight {
    /// Rows (input features).
    pub fn rows(&self) -> usize {
        self.k
    }
    /// Columns (output features).
    pub fn cols(&self) -> usize {
        self.n
    }
    /// The identifier the dealer knows the mask by.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The opened `F = W − B`.
    pub(crate) fn opened(&self) -> &[u64] {
        &self.f
    }
    /// This party's `B_i + [i = 0]·F`.
    pub(crate) fn eb_share(&self) -> &[u64] {
        &self.eb
    }
}

impl Ctx<'_> {
    /// Reveal a shared vector to both parties.
    ///
    /// Rounds 1; sends `8n` bytes per party.
    pub fn open(&mut self, x: &Share) -> Op<Vec<u64>> {
        let mine = x.as_slice().to_vec();
        Op::exchange("open", channel::pack(&mine, 64), move |_, peer| {
            let other = channel::unpack(peer, mine.len(), 64);
            Op::ready(crate::ring::add(&mine, &other))
        })
    }

    /// Elementwise product `x·y` (equal lengths), left untruncated: at
    /// `frac min(x.frac, y.frac)`, the rest pending (the products'
    /// convention, [`crate::fx`]). The operands' pending truncations are
    /// settled first.
    ///
    /// Rounds 1 (2 with [`Ctx::settle`]); sends `16n` bytes per party (`+
    /// ⌈n/8⌉` settled); dealer: one triple (`8n` bytes to party 1). Exact in
    /// the ring; settled, error ≤ 1 ulp for `|x·y| < 2^(62−2f)`.
    pub fn mul(&mut self, x: &Fx, y: &Fx) -> Op<Fx> {
        if x.pending() > 0 || y.pending() > 0 {
            return self.settle_all(&[x, y]).then(|c, xy| c.mul(&xy[0], &xy[1]));
        }
        let (shape, a, b) = (x.shape(), x.frac(), y.frac());
        self.mul_raw(x.share(), y.share())
            .map(move |z| Fx::product(z, shape, a, b))
    }

    /// [`Ctx::mul`] of ring shares, without truncation.
    pub(crate) fn mul_raw(&mut self, x: &Share, y: &Share) -> Op<Share> {
        let n = x.len();
        let taken = check_len("mul", "rhs", y.len(), n)
            .and_then(|()| expect_triple("mul", self.take("mul", Request::Triple { n })?));
        let triple = attempt!(taken);
        beaver_dot(self.is_p0(), "mul", triple, &[x], &[y], n)
    }

    /// Elementwise dot product `z = Σ_t x_t·y_t` over the terms `t` (all of
    /// one shape, every term's product at one scale), left untruncated at
    /// the products' scale (as [`Ctx::mul`]).
    ///
    /// Rounds 1; sends `16n` bytes per term and party (as [`Ctx::mul`]
    /// of each term); dealer: one dot-product triple, `8n` bytes to party 1
    /// whatever the number of terms (the masks' products are summed by the
    /// dealer: `Request::Dot`). Exact in the ring.
    pub fn dot(&mut self, x: &[&Fx], y: &[&Fx]) -> Op<Fx> {
        assert_eq!(x.len(), y.len(), "dot: one right-hand side per term");
        let terms = x.len();
        let (first, second) = (x.first().expect("dot: a term"), y[0]);
        let (shape, a, b) = (first.shape(), first.frac(), second.frac());
        let n = first.len();
        let lengths = x
            .iter()
            .chain(y)
            .try_for_each(|s| check_len("dot", "term", s.len(), n));
        let taken = lengths
            .and_then(|()| expect_triple("dot", self.take("dot", Request::Dot { n, terms })?));
        let triple = attempt!(taken);
        let xs: Vec<&Share> = x.iter().map(|t| t.share()).collect();
        let ys: Vec<&Share> = y.iter().map(|t| t.share()).collect();
        beaver_dot(self.is_p0(), "dot", triple, &xs, &ys, n)
            .map(move |z| Fx::product(z, shape, a, b))
    }

    /// Elementwise square `x²`, left untruncated at `frac x.frac`, as much
    /// pending (settled first if `x` has a pending truncation).
    ///
    /// Rounds 1 (2 with [`Ctx::settle`]); sends `8n` bytes per party (`+
    /// ⌈n/8⌉` settled); dealer: one square pair (`8n` bytes to party 1).
    pub fn square(&mut self, x: &Fx) -> Op<Fx> {
        if x.pending() > 0 {
            return self.settle(x.clone()).then(|c, x| c.square(&x));
        }
        let (shape, a) = (x.shape(), x.frac());
        self.square_raw(x.share())
            .map(move |z| Fx::product(z, shape, a, a))
    }

    /// [`Ctx::square`] of a ring share, without truncation.
    pub(crate) fn square_raw(&mut self, x: &Share) -> Op<Share> {
        let n = x.len();
        let (a, _, c) = attempt!(
            self.take("square", Request::Square { n })
                .and_then(|m| expect_triple("square", m))
        );
        let e_mine = ring::sub(x.as_slice(), &a);
        let p0 = self.is_p0();
        Op::exchange("square", channel::pack(&e_mine, 64), move |_, peer| {
            let other = channel::unpack(peer, n, 64);
            let e = ring::add(&e_mine, &other);
            let z = (0..n)
                .map(|i| c[i].wrapping_add(beaver_term(p0, e[i], e[i], a[i], a[i])))
                .collect();
            Op::ready(Share::new(z))
        })
    }

    /// Product of two secret matrices, `x` (m×k) · `y` (k×n), left
    /// untruncated: at `frac min(x.frac, y.frac)`, the rest pending (the
    /// products' convention, [`crate::fx`]); [`Ctx::settle`] truncates it
    /// in a round of its own, a consumer with a masked opening in its own.
    /// The operands' pending truncations are settled first.
    ///
    /// Rounds 1; sends `8(mk + kn)` bytes per party; dealer: one matrix triple
    /// (`8mn` bytes to party 1). Local work: two m×k×n ring matmuls.
    /// Several products (for example one per attention head) share their
    /// round with [`Op::all`]. Exact in the ring; truncated, error ≤ 1 ulp
    /// per product term's rounding.
    pub fn matmul(&mut self, x: &Fx, y: &Fx) -> Op<Fx> {
        if x.pending() > 0 || y.pending() > 0 {
            return self
                .settle_all(&[x, y])
                .then(|c, xy| c.matmul(&xy[0], &xy[1]));
        }
        let (m, k, n) = (x.rows(), x.cols(), y.cols());
        let (a, b) = (x.frac(), y.frac());
        self.matmul_raw(x.share(), y.share(), m, k, n)
            .map(move |z| Fx::product(z, Shape::new(m, n), a, b))
    }

    /// [`Ctx::matmul`] of ring shares (m×k, k×n), without truncation.
    pub(crate) fn matmul_raw(
        &mut self,
        x: &Share,
        y: &Share,
        m: usize,
        k: usize,
        n: usize,
    ) -> Op<Share> {
        let taken = check_len("matmul", "lhs", x.len(), m * k)
            .and_then(|()| check_len("matmul", "rhs", y.len(), k * n))
            .and_then(|()| {
                expect_triple("matmul", self.take("matmul", Request::MatMul { m, k, n })?)
            });
        let (a, b, c) = attempt!(taken);
        let mut msg = ring::sub(x.as_slice(), &a);
        msg.extend(ring::sub(y.as_slice(), &b));
        let p0 = self.is_p0();
        let bytes = channel::pack(&msg, 64);
        Op::exchange("matmul", bytes, move |_, peer| {
            let other = channel::unpack(peer, msg.len(), 64);
            let ef = ring::add(&msg, &other);
            let (e, f) = ef.split_at(m * k);
            // z = c + e·(b + [p0]·f) + a·f
            let mut rhs = b;
            if p0 {
                ring::add_assign(&mut rhs, f);
            }
            let mut z = c;
            ring::matmul_acc(e, &rhs, &mut z, m, k, n);
            ring::matmul_acc(&a, f, &mut z, m, k, n);
            Op::ready(Share::new(z))
        })
    }

    /// Prepare the weight `w` (k×n, this party's share) for repeated products:
    /// take its mask `B` from the dealer and open `F = W − B`.
    ///
    /// Once per model load: rounds 1; sends `8kn` bytes per party; no dealer bytes.
    pub fn mask_weight(&mut self, id: u32, w: &Share, k: usize, n: usize) -> Op<MaskedWeight> {
        attempt!(check_len("mask_weight", "weight", w.len(), k * n));
        let b = match attempt!(self.take("mask_weight", Request::WeightMask { id, k, n })) {
            Material::WeightMask(WeightMask { b }) => b,
            other => {
                return Op::fail(MpcError::OutOfStep {
                    op: "mask_weight",
                    needed: "weight-mask".into(),
                    found: format!("{other:?}"),
                });
            }
        };
        let f_mine = ring::sub(w.as_slice(), &b);
        let p0 = self.is_p0();
        Op::exchange("mask_weight", channel::pack(&f_mine, 64), move |_, peer| {
            let other = channel::unpack(peer, k * n, 64);
            let f = ring::add(&f_mine, &other);
            let mut eb = b;
            if p0 {
                ring::add_assign(&mut eb, &f);
            }
            Op::ready(MaskedWeight {
                id,
                k,
                n,
                f: f.into(),
                eb: eb.into(),
            })
        })
    }

    /// `x` (m×k) times a masked weight (k×n) at `f` fractional bits,
    /// left untruncated: `X·W = E·(B + F) + A·F + C` with only `E = X − A`
    /// opened, at `frac min(x.frac, f)`, the rest pending (the products'
    /// convention, [`crate::fx`]). A pending truncation of `x` is settled
    /// first.
    ///
    /// Rounds 1; sends `8mk` bytes per party; dealer: `A` from the seed and
    /// `C = A·B` (`8mn` bytes to party 1). Local work: two m×k×n ring matmuls.
    /// Exact in the ring.
    pub fn weight_matmul(&mut self, x: &Fx, w: &MaskedWeight) -> Op<Fx> {
        if x.pending() > 0 {
            let w = w.clone();
            return self
                .settle(x.clone())
                .then(move |c, x| c.weight_matmul(&x, &w));
        }
        let (m, n, a, f) = (x.rows(), w.n, x.frac(), self.frac_bits());
        self.weight_matmul_raw(x.share(), m, w)
            .map(move |z| Fx::product(z, Shape::new(m, n), a, f))
    }

    /// [`Ctx::weight_matmul`] of a ring share (m×k), without truncation.
    fn weight_matmul_raw(&mut self, x: &Share, m: usize, w: &MaskedWeight) -> Op<Share> {
        let (k, n) = (w.k, w.n);
        let req = Request::WeightMatMul { id: w.id, m, k, n };
        let taken = check_len("weight_matmul", "activation", x.len(), m * k)
            .and_then(|()| expect_triple("weight_matmul", self.take("weight_matmul", req)?));
        let (a, _, c) = attempt!(taken);
        let e_mine = ring::sub(x.as_slice(), &a);
        let w = w.clone();
        Op::exchange(
            "weight_matmul",
            channel::pack(&e_mine, 64),
            move |_, peer| {
                let other = channel::unpack(peer, m * k, 64);
                let e = ring::add(&e_mine, &other);
                let mut z = c;
                ring::matmul_acc(&e, &w.eb, &mut z, m, k, n);
                ring::matmul_acc(&a, &w.f, &mut z, m, k, n);
                Op::ready(Share::new(z))
            },
        )
    }

    /// Arithmetic shift right by `s` bits of a shared signed value: `⌊x / 2^s⌋`, possibly minus one.
    ///
    /// Method (SiRNN/Cheetah "known MSB"): party 0 adds the public offset 2^62,
    /// so `x' = x + 2^62` lies in `[0, 2^63)`. Then the shares wrap modulo 2^64
    /// exactly when `msb(x'₀) OR msb(x'₁)`, an AND of two private bits computed
    /// with one dealer bit-triple: each party sends its msb XOR a random bit.
    /// Each party shifts its share locally and subtracts `w·2^(64−s)` for the
    /// shared wrap bit `w`; party 0 removes the offset.
    ///
    /// Rounds 1; sends `⌈n/8⌉` bytes per party (one bit per element); dealer:
    /// `s` bits per element to party 1 (the AND's arithmetic share is only
    /// used times `2^(64−s)`, so it travels modulo `2^s`). Truncations
    /// joined with [`Op::all`] share the round and pack their bits into one
    /// message.
    ///
    /// Accuracy: the result is `⌊x/2^s⌋ − c` with `c ∈ {0, 1}` (the carry of the
    /// discarded low bits): at most one ulp below. It never fails
    /// catastrophically while `|x| < 2^62`; outside that range it is wrong,
    /// which the operators' documented domains exclude. (Local SecureML
    /// truncation would instead be wrong by 2^(64−s) with probability about
    /// 2^(ℓ+1−64) per element: for a million truncations per image that is a
    /// wrong answer every few hundred images. Here that probability is 0.)
    pub fn trunc(&mut self, x: &Share, s: u32) -> Op<Share> {
        assert!((1..64).contains(&s), "trunc: shift {s} outside 1..64");
        let n = x.len();
        if n == 0 {
            return Op::ready(Share::zeros(0));
        }
        let (mine, c) = match attempt!(self.take("trunc", Request::Wrap { n, shift: s })) {
            Material::Wrap(Wrap { bits, c }) => (bits, c),
            other => {
                return Op::fail(MpcError::OutOfStep {
                    op: "trunc",
                    needed: "wrap".into(),
                    found: format!("{other:?}"),
                });
            }
        };
        let p0 = self.is_p0();
        let xp: Vec<u64> = x
            .as_slice()
            .iter()
            .map(|v| if p0 { v.wrapping_add(TRUNC_OFFSET) } else { *v })
            .collect();
        let msb: Vec<u64> = xp.iter().map(|v| v >> 63).collect();
        let masked: Vec<u64> = msb.iter().zip(&mine).map(|(m, r)| m ^ *r as u64).collect();
        let msg = channel::pack(&masked, 1);
        Op::exchange("trunc", msg, move |_, peer| {
            let other = channel::unpack(peer, n, 1);
            let (u, v) = if p0 {
                (&masked, &other)
            } else {
                (&other, &masked)
            };
            let out: Vec<u64> = (0..n)
                .map(|i| {
                    let (u, v, r) = (u[i], v[i], mine[i] as u64);
                    let su = 1u64.wrapping_sub(2 * u);
                    let sv = 1u64.wrapping_sub(2 * v);
                    // share of m0·m1 with m0 = u ⊕ a, m1 = v ⊕ b
                    let prod = if p0 {
                        (u & v)
                            .wrapping_add(r.wrapping_mul(su).wrapping_mul(v))
                            .wrapping_add(su.wrapping_mul(sv).wrapping_mul(c[i]))
                    } else {
                        u.wrapping_mul(r)
                            .wrapping_mul(sv)
                            .wrapping_add(su.wrapping_mul(sv).wrapping_mul(c[i]))
                    };
                    let w = msb[i].wrapping_sub(prod);
                    let mut y = (xp[i] >> s).wrapping_sub(w << (64 - s));
                    if p0 {
                        y = y.wrapping_sub(TRUNC_OFFSET >> s);
                    }
                    y
                })
                .collect();
            Op::ready(Share::new(out))
        })
    }
}

/// `Σ_t x_t·y_t` (elementwise, `n` long, the terms laid out one after the
/// other in the triple's `a`, `b`) from one Beaver opening of every
/// `x_t − a_t` and `y_t − b_t`: `c + Σ_t (e_t·b_t + f_t·a_t)`, plus
/// `Σ_t e_t·f_t` at party 0. One term is [`Ctx::mul`]'s product.
fn beaver_dot(
    p0: bool,
    op: &'static str,
    (a, b, c): (Vec<u64>, Vec<u64>, Vec<u64>),
    x: &[&Share],
    y: &[&Share],
    n: usize,
) -> Op<Share> {
    let terms = x.len();
    let mut msg = Vec::with_capacity(2 * n * terms);
    for (t, xt) in x.iter().enumerate() {
        msg.extend(ring::sub(xt.as_slice(), &a[t * n..(t + 1) * n]));
    }
    for (t, yt) in y.iter().enumerate() {
        msg.extend(ring::sub(yt.as_slice(), &b[t * n..(t + 1) * n]));
    }
    let bytes = channel::pack(&msg, 64);
    Op::exchange(op, bytes, move |_, peer| {
        let other = channel::unpack(peer, 2 * n * terms, 64);
        let ef = ring::add(&msg, &other);
        let (e, f) = ef.split_at(n * terms);
        let mut z = c;
        for t in 0..terms {
            for i in 0..n {
                let j = t * n + i;
                z[i] = z[i].wrapping_add(beaver_term(p0, e[j], f[j], a[j], b[j]));
            }
        }
        Op::ready(Share::new(z))
    })
}

/// This party's share of `x·y − c` from a Beaver opening `e = x − a`, `f =
/// y − b` (public) and its shares of `a`, `b`: `e·b + f·a`, plus `e·f` on
/// party 0 (so `x·y = c + e·b + f·a + e·f`). A square is `f = e`, `b = a`.
#[inline]
pub(crate) fn beaver_term(p0: bool, e: u64, f: u64, a: u64, b: u64) -> u64 {
    let t = e.wrapping_mul(b).wrapping_add(f.wrapping_mul(a));
    if p0 {
        t.wrapping_add(e.wrapping_mul(f))
    } else {
        t
    }
}

/// Added by party 0 to a value it truncates, so that `x' = x + 2^62` lies
/// in `[0, 2^63)` for `|x| < 2^62` (both truncation methods rely on it).
pub(crate) const TRUNC_OFFSET: u64 = 1 << 62;

/// For a value opened as `m = x + 2^62 + r` (r a uniform 64-bit mask, see
/// the truncating row scaling of [`Ctx::mul_rows`]): `⌊x / 2^s⌋ = high(m) − (r >> s) +
/// wrap(m)·msb(r)` (plus at most one), with `high` and `wrap` public. This
/// is `high(m) = (m >> s) − 2^(62−s)`.
pub(crate) fn opened_high(m: u64, s: u32) -> u64 {
    (m >> s).wrapping_sub(TRUNC_OFFSET >> s)
}

/// The public coefficient of `msb(r)` in [`opened_high`]'s formula:
/// `2^(64−s)·(1 − msb(m))` (the wrap of `x' + r` is `msb(r)·(1 − msb(m))`).
pub(crate) fn opened_wrap(m: u64, s: u32) -> u64 {
    (1 - (m >> 63)) << (64 - s)
}

/// Significant bits of the integer factor that encodes a public scale in
/// [`Fx::scaled`]: its relative error is at most 2^−14, and it
/// costs the value 14 bits of headroom below 2^62.
pub const SCALE_BITS: u32 = 14;

/// `(k, t)` with `k / 2^t ≈ scale` and `k` an integer of [`SCALE_BITS`]
/// significant bits (exact, with `k = 1`, when `scale` is a power of two ≤ 1).
pub(crate) fn scale_factor(scale: f64) -> (u64, u32) {
    let lg = scale.log2();
    if lg.fract() == 0.0 && lg <= 0.0 {
        return (1, (-lg) as u32);
    }
    let t = (f64::from(SCALE_BITS) - 1.0 - lg.floor()).max(0.0) as u32;
    let k = (scale * (2f64).powi(t as i32)).round() as u64;
    (k, t)
}

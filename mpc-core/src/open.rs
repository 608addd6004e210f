//! The masked opening that comparison and LayerNorm share: a value opened
//! as `m = v + 2^62 + r` under a dealer mask, truncated in the same round
//! (`⌊v/2^s⌋ = P − R`, `P` public), with the squares, the bits'
//! selections and the products with masked weights that the same opening
//! serves ([`BitCompared`], [`BitsOpened`], [`NormProducts`]).

use crate::arith::MaskedWeight;
use crate::arith::{TRUNC_OFFSET, opened_high, opened_wrap};
use crate::channel;
use crate::dealer::{Squares, ValueProducts, low_mask};
use crate::op::Op;
use crate::ring;
use crate::share::Share;

/// A value opened as `m = v + 2^62 + r` and truncated by `s`: the public
/// `P = high(m)` and this party's shares of `R = r_h − wrap(m)·msb(r)` and,
/// per element and threshold (`k` per element), of `ρ·R` from its shares
/// of `(r_h, msb r)` and `(ρ·r_h, ρ·msb r)`, so that `⌊v/2^s⌋ = P − R`.
pub(crate) fn truncated_opening(
    m: &[u64],
    s: u32,
    k: usize,
    (high, msb): (&[u64], &[u64]),
    (rho_high, rho_msb): (&[u64], &[u64]),
) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let wrap: Vec<u64> = m.iter().map(|v| opened_wrap(*v, s)).collect();
    let public = m.iter().map(|v| opened_high(*v, s)).collect();
    let base = (0..m.len())
        .map(|i| high[i].wrapping_sub(wrap[i].wrapping_mul(msb[i])))
        .collect();
    let rho_base = (0..rho_high.len())
        .map(|p| rho_high[p].wrapping_sub(wrap[p / k].wrapping_mul(rho_msb[p])))
        .collect();
    (public, base, rho_base)
}

/// This party's share of `P − R` for a public `P` and its share of `R`.
pub(crate) fn public_minus_mask(p0: bool, public: &[u64], base: &[u64]) -> Share {
    Share::new(
        public
            .iter()
            .zip(base)
            .map(|(p, r)| {
                let z = r.wrapping_neg();
                if p0 { z.wrapping_add(*p) } else { z }
            })
            .collect(),
    )
}

/// A bit comparison after its first round (see [`Ctx::bit_compare`](crate::Ctx::bit_compare)).
/// The value `v` it opened (`x`, or `x` truncated) is `P − R` with `P`
/// public and `R` known to the dealer. `Debug` is opaque.
pub struct BitCompared {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) p0: bool,
    /// `P`, per element.
    pub(crate) public: Vec<u64>,
    pub(crate) e_mine: Vec<u8>,
    /// Share of `R`, per element.
    pub(crate) base: Vec<u64>,
    /// Share of `ρ`, per element and threshold.
    pub(crate) rho: Vec<u64>,
    /// Share of `ρ·R`, per element and threshold (with `select`).
    pub(crate) rho_base: Vec<u64>,
    /// Share of `R²`, per element (with `square`; without the dealer's
    /// `Σ r²` words for `Squares::RowSums`).
    pub(crate) sq_base: Vec<u64>,
    /// Share of `Σ r²` per row (with `Squares::RowSums`).
    pub(crate) sq_rows: Vec<u64>,
    pub(crate) square: Squares,
    /// The truncation (0: none).
    pub(crate) trunc: u32,
    /// Material for [`BitCompared::products`] (from [`Ctx::norm_opening`](crate::Ctx::norm_opening)).
    pub(crate) products: Option<Prepared>,
    /// Material for the square's truncation in [`BitCompared::open`]
    /// (with `Squares::EachTruncated`).
    pub(crate) square_mask: Option<SquareMask>,
}

/// What a [`BitCompared`] keeps to truncate `v²` by `q` in the bits'
/// round: shares of the mask `r₂`, of `r₂ >> q` and `msb(r₂)`, and per
/// threshold of `ρ·(r₂ >> q)` and `ρ·msb(r₂)` (the `msb` parts modulo `2^q`).
pub(crate) struct SquareMask {
    pub(crate) q: u32,
    pub(crate) r: Vec<u64>,
    pub(crate) high: Vec<u64>,
    pub(crate) msb: Vec<u64>,
    pub(crate) rho_high: Vec<u64>,
    pub(crate) rho_msb: Vec<u64>,
}

/// The truncated square `⌊v²/2^q⌋ = P₂ − R₂` after the bits' round: `P₂`
/// public, shares of `R₂` and, per threshold, of `ρ·R₂`.
pub(crate) struct OpenedSquare {
    pub(crate) public: Vec<u64>,
    pub(crate) base: Vec<u64>,
    pub(crate) rho_base: Vec<u64>,
}

/// What a [`BitCompared`] keeps for [`BitCompared::products`].
pub(crate) struct Prepared {
    pub(crate) spec: ValueProducts,
    /// Share of `T = (1 − msb m)·msb(r)` (modulo `2^trunc`).
    pub(crate) wrapped: Vec<u64>,
    /// Share of the mask `A_t` (modulo `2^trunc`).
    pub(crate) a_t: Vec<u64>,
    /// Share of `C* = (r_h − K·A_t)·B`, the scale's words then the weight's.
    pub(crate) c_star: Vec<u64>,
}

impl std::fmt::Debug for BitCompared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BitCompared(<{} x {}>)", self.n, self.k)
    }
}

impl BitCompared {
    /// This party's share of the opened value `v` (`x`, or `x` truncated
    /// when the comparison truncates): `v = P − R`.
    pub fn value(&self) -> Share {
        public_minus_mask(self.p0, &self.public, &self.base)
    }

    /// This party's share of `v²` (at twice `v`'s scale), from the opening:
    /// `v² = P² − 2P·R + R²`. Needs `Squares::Each` (or
    /// `Squares::EachTruncated`) in the request.
    pub fn square_raw(&self) -> Share {
        assert!(
            matches!(self.square, Squares::Each | Squares::EachTruncated(_)),
            "bit compare: no per-element square material"
        );
        Share::new((0..self.n).map(|i| self.square_part(i)).collect())
    }

    /// This party's share of `Σ_j v_j²` over each row (at twice `v`'s
    /// scale). Needs `Squares::RowSums` in the request.
    pub fn square_row_sums(&self) -> Share {
        let Squares::RowSums(cols) = self.square else {
            panic!("bit compare: no row-summed square material");
        };
        Share::new(
            self.sq_rows
                .iter()
                .enumerate()
                .map(|(row, r2)| {
                    (row * cols..(row + 1) * cols)
                        .fold(*r2, |acc, i| acc.wrapping_add(self.square_part(i)))
                })
                .collect(),
        )
    }

    /// Element `i`'s part of `v² = P² − 2P·R + R²` (all of it, unless the
    /// mask's `r²` comes per row).
    fn square_part(&self, i: usize) -> u64 {
        let p = self.public[i];
        let mut z = self.sq_base[i].wrapping_sub(p.wrapping_mul(self.base[i]).wrapping_mul(2));
        if self.p0 {
            z = z.wrapping_add(p.wrapping_mul(p));
        }
        z
    }

    /// The round after a [`Ctx::norm_opening`](crate::Ctx::norm_opening): the products of the
    /// truncated value `v` (rows×c) with the masked scale `γ` (1×c,
    /// broadcast over rows) and weight `W` (c×out) it was asked for, at
    /// the sum of the operands' scales (untruncated, exact).
    ///
    /// Method: `v = P − R` with `R = r_h − K·T`, `K = 2^(64−s)`, and `T`
    /// shared modulo `2^s` only (it only meets `K`). With `W = F + B`,
    /// `v·W = P·W − R·F − r_h·B + K·T·B`, where only `T·B` is a product
    /// of two unknowns, and it is needed modulo `2^s`: so the round opens
    /// `D = T − A_t` modulo `2^s` (`s` bits per element, instead of a
    /// 64-bit `v − A`), and `v·W = (P + K·D)·W − (R + K·D)·F − C*` with
    /// the dealer's `C* = (r_h − K·A_t)·B` (`R + K·D` counted once, by
    /// party 0's `K·D`). Rounds 1; sends `⌈s·n/8⌉` bytes per party; local
    /// work two rows×c×out products for `W`.
    pub fn products(
        self,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
    ) -> Op<NormProducts> {
        let prepared = self
            .products
            .as_ref()
            .expect("bit compare: no product material (see Ctx::norm_opening)");
        let spec = prepared.spec;
        assert_eq!(
            (gamma.map(|g| g.id()), next.map(|w| (w.id(), w.cols()))),
            (spec.scale, spec.next),
            "bit compare: products of other weights than prepared"
        );
        let (n, s, c) = (self.n, self.trunc, spec.cols);
        let d_mine: Vec<u64> = (0..n)
            .map(|i| prepared.wrapped[i].wrapping_sub(prepared.a_t[i]) & low_mask(s))
            .collect();
        let (gamma, next) = (gamma.cloned(), next.cloned());
        Op::exchange(
            "norm-products",
            channel::pack(&d_mine, s),
            move |_, peer| {
                let other = channel::unpack(peer, n, s);
                let prepared = self.products.as_ref().expect("checked above");
                // K·D, then P + K·D (public) and −(R + [p0]·K·D) (this party's)
                let kd = d_mine
                    .iter()
                    .zip(&other)
                    .map(|(a, b)| a.wrapping_add(*b) << (64 - s));
                let (left, right): (Vec<u64>, Vec<u64>) = kd
                    .enumerate()
                    .map(|(i, kd)| {
                        let own = if self.p0 { kd } else { 0 };
                        (
                            self.public[i].wrapping_add(kd),
                            self.base[i].wrapping_add(own).wrapping_neg(),
                        )
                    })
                    .unzip();
                // v = left + right, the dealer's right·B being −C*
                let base: Vec<u64> = prepared.c_star.iter().map(|v| v.wrapping_neg()).collect();
                let (scaled, product) =
                    masked_products((&left, &right, &base), gamma.as_ref(), next.as_ref(), c);
                Op::ready(NormProducts {
                    square: Share::zeros(0),
                    scaled,
                    product,
                })
            },
        )
    }

    /// The second round: open `e = [x ≥ t] ⊕ ρ` (`⌈n·k/8⌉` bytes per
    /// party); with `Squares::EachTruncated(q)` also `m₂ = v² + r₂` (8n
    /// bytes more), which truncates `v²` by `q` as [`Ctx::bit_compare`](crate::Ctx::bit_compare)
    /// truncates `x`: `⌊v²/2^q⌋ = P₂ − R₂` with `P₂` public and `R₂ = (r₂
    /// >> q) − 2^(64−q)·(1 − msb m₂)·msb(r₂)`, whose products with the bits
    /// come from the dealer's `ρ·(r₂ >> q)`, `ρ·msb(r₂)`
    /// ([`BitsOpened::square`], [`BitsOpened::select_square`]).
    pub fn open(self) -> Op<BitsOpened> {
        let bits = self.n * self.k;
        let mut msg = channel::pack(
            &self
                .e_mine
                .iter()
                .map(|b| u64::from(*b))
                .collect::<Vec<_>>(),
            1,
        );
        let offset = if self.p0 { TRUNC_OFFSET } else { 0 };
        let masked: Vec<u64> = match &self.square_mask {
            Some(m) => (0..self.n)
                .map(|i| {
                    self.square_part(i)
                        .wrapping_add(offset)
                        .wrapping_add(m.r[i])
                })
                .collect(),
            None => Vec::new(),
        };
        msg.extend(channel::pack(&masked, 64));
        Op::exchange("bit-open", msg, move |_, peer| {
            let (peer_bits, peer_square) = peer.split_at(channel::packed_len(bits, 1));
            let other = channel::unpack(peer_bits, bits, 1);
            let e = self
                .e_mine
                .iter()
                .zip(&other)
                .map(|(a, b)| u64::from(*a) ^ b)
                .collect();
            let square = self.square_mask.as_ref().map(|m| {
                let other = channel::unpack(peer_square, self.n, 64);
                let opened = crate::ring::add(&masked, &other);
                let (public, base, rho_base) = truncated_opening(
                    &opened,
                    m.q,
                    self.k,
                    (&m.high, &m.msb),
                    (&m.rho_high, &m.rho_msb),
                );
                OpenedSquare {
                    public,
                    base,
                    rho_base,
                }
            });
            Op::ready(BitsOpened { c: self, e, square })
        })
    }
}

/// A bit comparison with `e = [x ≥ t] ⊕ ρ` opened (and, with
/// `Squares::EachTruncated`, `v²` truncated). `Debug` is opaque.
pub struct BitsOpened {
    c: BitCompared,
    e: Vec<u64>,
    square: Option<OpenedSquare>,
}

impl std::fmt::Debug for BitsOpened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BitsOpened(<{} x {}>)", self.c.n, self.c.k)
    }
}

impl BitsOpened {
    /// This party's share of the opened value (see [`BitCompared::value`]).
    pub fn value(&self) -> Share {
        self.c.value()
    }

    /// Shares in Z_2^64 (0/1 integers) of `[x ≥ t_j]`, one share of length
    /// `n` per threshold: `b = e + (1 − 2e)·ρ` (local).
    pub fn bits(&self) -> Vec<Share> {
        let (n, k) = (self.c.n, self.c.k);
        let mut out = vec![vec![0u64; n]; k];
        for i in 0..n {
            for (j, o) in out.iter_mut().enumerate() {
                o[i] = self.bit(i * k + j);
            }
        }
        out.into_iter().map(Share::new).collect()
    }

    /// This party's share of the bit of point `p` (element-major).
    fn bit(&self, p: usize) -> u64 {
        let e = self.e[p];
        let b = self.c.rho[p].wrapping_mul(1u64.wrapping_sub(2 * e));
        if self.c.p0 { b.wrapping_add(e) } else { b }
    }

    /// Shares of `Σ_j w_j·[x ≥ t_j]` per element for each weight vector `w`
    /// (one weight per threshold, public ring elements), without forming
    /// the bits one by one: for a piecewise polynomial's coefficients,
    /// `w_j = c_{j+1} − c_j` (local).
    pub fn weighted(&self, weights: &[&[u64]]) -> Vec<Share> {
        let (n, k) = (self.c.n, self.c.k);
        for w in weights {
            assert_eq!(w.len(), k, "bit compare: {} weights for {k} bits", w.len());
        }
        let mut out = vec![vec![0u64; n]; weights.len()];
        for i in 0..n {
            for j in 0..k {
                let b = self.bit(i * k + j);
                for (o, w) in out.iter_mut().zip(weights) {
                    o[i] = o[i].wrapping_add(w[j].wrapping_mul(b));
                }
            }
        }
        out.into_iter().map(Share::new).collect()
    }

    /// Shares of `[x ≥ t_j]·v` per threshold (`v` the opened value, at its
    /// scale, exact): with `b = e + (1 − 2e)ρ` and `v = P − R`,
    /// `b·v = e·P − e·R + (1 − 2e)(P·ρ − ρR)` (local). Needs `select`.
    pub fn select(&self) -> Vec<Share> {
        let (n, k) = (self.c.n, self.c.k);
        assert_eq!(
            self.c.rho_base.len(),
            n * k,
            "bit compare: no select material"
        );
        self.selected(&self.c.public, &self.c.base, &self.c.rho_base)
    }

    /// This party's share of the truncated square `⌊v²/2^q⌋` (or one ulp
    /// above) at twice `v`'s scale less `q` bits. Needs
    /// `Squares::EachTruncated(q)`.
    pub fn square(&self) -> Share {
        let sq = self.opened_square();
        public_minus_mask(self.c.p0, &sq.public, &sq.base)
    }

    /// Shares of `[x ≥ t_j]·⌊v²/2^q⌋` per threshold (the truncated square
    /// of [`BitsOpened::square`], exactly as [`BitsOpened::select`] selects
    /// `v`; local). Needs `Squares::EachTruncated(q)`.
    pub fn select_square(&self) -> Vec<Share> {
        let sq = self.opened_square();
        self.selected(&sq.public, &sq.base, &sq.rho_base)
    }

    fn opened_square(&self) -> &OpenedSquare {
        self.square
            .as_ref()
            .expect("bit compare: no truncated square (see Squares::EachTruncated)")
    }

    /// `[x ≥ t_j]·(P − R)` per threshold for a value `P − R` with `P`
    /// public and shares of `R` and of `ρ_j·R`.
    fn selected(&self, public: &[u64], base: &[u64], rho_base: &[u64]) -> Vec<Share> {
        let (n, k) = (self.c.n, self.c.k);
        (0..k)
            .map(|j| {
                Share::new(
                    (0..n)
                        .map(|i| {
                            let p = i * k + j;
                            let (e, m) = (self.e[p], public[i]);
                            let t = m
                                .wrapping_mul(self.c.rho[p])
                                .wrapping_sub(rho_base[p])
                                .wrapping_mul(1u64.wrapping_sub(2 * e));
                            let mut z = t.wrapping_sub(e.wrapping_mul(base[i]));
                            if self.c.p0 {
                                z = z.wrapping_add(e.wrapping_mul(m));
                            }
                            z
                        })
                        .collect(),
                )
            })
            .collect()
    }
}

/// The products that a LayerNorm's opening of `x − A` (`Ctx::norm_products`)
/// or [`BitCompared::products`] computes from one opening.
#[derive(Clone, Debug)]
pub struct NormProducts {
    /// `x ⊙ x`, when asked for (empty otherwise).
    pub square: Share,
    /// `x ⊙ γ`, when a scale was given.
    pub scaled: Option<Share>,
    /// `x·W`, when a weight was given.
    pub product: Option<Share>,
}

/// `x ⊙ γ` (γ 1×c, broadcast over rows) and `x·W` (W c×out) with masked
/// weights `γ, W = F + B` (`F` opened, `B` shared), for `x` (rows×c) known
/// as `x = L + S`: `L` public, `S` this party's share, and `base` this
/// party's share of `S ⊙ B_γ` (n words, with γ) then `S·B_W` (rows×out,
/// with W), from the dealer. Then `x·W = L·(B + F) + S·F + S·B` is local:
/// `L` times this party's `B + [p0]F`, plus `S·F`, plus `base`.
pub(crate) fn masked_products(
    (public, own, base): (&[u64], &[u64], &[u64]),
    gamma: Option<&MaskedWeight>,
    next: Option<&MaskedWeight>,
    c: usize,
) -> (Option<Share>, Option<Share>) {
    let n = public.len();
    let mut base = base.iter().copied();
    let scaled = gamma.map(|g| {
        let (eb, f) = (g.eb_share(), g.opened());
        Share::new(
            (0..n)
                .map(|i| {
                    let j = i % c;
                    let b = base.next().expect("the scale's base words");
                    b.wrapping_add(public[i].wrapping_mul(eb[j]))
                        .wrapping_add(own[i].wrapping_mul(f[j]))
                })
                .collect(),
        )
    });
    let product = next.map(|w| {
        let rows = n / c;
        let mut z: Vec<u64> = base.collect();
        debug_assert_eq!(z.len(), rows * w.cols());
        ring::matmul_acc(public, w.eb_share(), &mut z, rows, c, w.cols());
        ring::matmul_acc(own, w.opened(), &mut z, rows, c, w.cols());
        Share::new(z)
    });
    (scaled, product)
}

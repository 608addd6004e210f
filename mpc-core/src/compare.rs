//! Comparison, ReLU and maximum.
//!
//! Method: function secret sharing with a dealer (a distributed comparison
//! function, [`crate::dcf`]). For `x` with `|x| < 2^(ℓ−1)` (ℓ = `bits`), reduce
//! the shares modulo 2^ℓ (local) and open `ĉ = x + r mod 2^ℓ` under the dealer's
//! mask `r`. With `y = x + 2^(ℓ−1)` (so `[x ≥ 0] = msb_ℓ(y)`) and `ŷ = ĉ + 2^(ℓ−1)`:
//!
//! `msb(y) = msb(ŷ) ⊕ msb(r) ⊕ [ŷ_low < r_low]`  (low = the other ℓ−1 bits).
//!
//! The dealer's DCF key outputs shares of `(1 − 2·msb(r))·[ŷ_low < r_low]`,
//! which added to shares of `msb(r)` is `msb(r) ⊕ borrow`; the XOR with the
//! public `msb(ŷ)` is then local. One opening serves several thresholds
//! `t`: `[x ≥ t]` is the same evaluation at `ĉ − t` with the same key.
//!
//! Rounds 1; sends `⌈n·ℓ/8⌉` bytes per party. Dealer: `(ℓ−1)·24 + ⌈(ℓ−1)/4⌉ + 8`
//! bytes of DCF correction words per element to each party, plus `8n` to
//! party 1. Exact for `|x − t| < 2^(ℓ−1)` (in ulps).
//! Used where the bits feed many thresholds' arithmetic (the piecewise
//! reciprocal and rsqrt: one key serves ~200 thresholds).
//!
//! Bit comparisons, whose bits are opened in the next round, are in
//! [`crate::bit_compare`]; their openings in [`crate::open`].

use crate::arith::{TRUNC_OFFSET, opened_high, opened_wrap};
use crate::channel;
use crate::ctx::Ctx;
use crate::dcf;
use crate::dealer::kinds::{Compare, CompareProducts};
use crate::dealer::{Material, Request, Squares, low_mask};
use crate::error::MpcError;
use crate::fx::{Fx, Shape};
use crate::op::{Op, attempt};
use crate::share::Share;

impl Ctx<'_> {
    /// Shares (0/1 integers, not fixed point) of `[x ≥ t]` for each public
    /// threshold `t` (raw ring values at `x`'s bits, for example
    /// `encode(0.5)`), one share of length `n` per threshold. With `coarse >
    /// 0` a bit may err where `|x − t| < 2^coarse` ulps: the DCF then
    /// compares only the top `ℓ − 1 − coarse` bits of the masked value (a
    /// shallower tree: less dealer material and local work), for piecewise
    /// approximations whose neighbouring segments agree near their shared
    /// boundary. See the module doc for cost and domain.
    pub fn ge_thresholds(
        &mut self,
        x: &Fx,
        thresholds: &[u64],
        bits: u32,
        coarse: u32,
    ) -> Op<Vec<Share>> {
        self.compare(x.share(), thresholds, bits, coarse)
    }

    fn compare(&mut self, x: &Share, thresholds: &[u64], bits: u32, coarse: u32) -> Op<Vec<Share>> {
        assert!((2..=64).contains(&bits), "compare: {bits} bits");
        assert!(
            coarse + 2 <= bits,
            "compare: {coarse} coarse bits of {bits}"
        );
        let n = x.len();
        let req = Request::Compare { n, bits, coarse };
        let (r, r_msb, roots, cws) = match attempt!(self.take("compare", req)) {
            Material::Compare(Compare {
                r,
                r_msb,
                roots,
                keys: cws,
            }) => (r, r_msb, roots, cws),
            other => {
                return Op::fail(MpcError::OutOfStep {
                    op: "compare",
                    needed: "compare".into(),
                    found: format!("{other:?}"),
                });
            }
        };
        let mask = low_mask(bits);
        let masked: Vec<u64> = x
            .as_slice()
            .iter()
            .zip(&r)
            .map(|(v, r)| v.wrapping_add(*r) & mask)
            .collect();
        let party = self.party().index();
        let p0 = self.is_p0();
        let recording = self.is_recording();
        let thresholds = thresholds.to_vec();
        let msg = channel::pack(&masked, bits);
        Op::exchange("compare", msg, move |_, peer| {
            let other = channel::unpack(peer, n, bits);
            let half = 1u64 << (bits - 1);
            let low = low_mask(bits - 1);
            let opened: Vec<u64> = masked
                .iter()
                .zip(&other)
                .map(|(a, b)| a.wrapping_add(*b) & mask)
                .collect();
            // y = ĉ − t + 2^(ℓ−1): its top bit is public, its low bits go to the DCF.
            // Points are laid out key by key (all thresholds of element i together)
            // so each key's correction words are read from cache once per level.
            let k = thresholds.len();
            let m = k * n;
            let ys: Vec<u64> = (0..m)
                .map(|p| {
                    opened[p / k]
                        .wrapping_sub(thresholds[p % k])
                        .wrapping_add(half)
                        & mask
                })
                .collect();
            let key_of: Vec<usize> = (0..m).map(|p| p / k).collect();
            let lows: Vec<u64> = ys.iter().map(|y| (y & low) >> coarse).collect();
            let mut borrow = vec![0u64; m];
            if !recording {
                dcf::eval_batch(party, &roots, &cws, &key_of, &lows, &mut borrow);
            }
            Op::ready(
                (0..thresholds.len())
                    .map(|j| {
                        let v = (0..n)
                            .map(|i| {
                                let top = ys[i * k + j] >> (bits - 1);
                                let z = r_msb[i].wrapping_add(borrow[i * k + j]);
                                // b = top ⊕ z = top + (1 − 2·top)·z
                                let mut b = if top == 1 { z.wrapping_neg() } else { z };
                                if p0 {
                                    b = b.wrapping_add(top);
                                }
                                b
                            })
                            .collect();
                        Share::new(v)
                    })
                    .collect(),
            )
        })
    }

    /// Comparison at several thresholds whose bits are multiplied by the
    /// compared value in the same round: shares of `b_j = [x ≥ t_j]` and of
    /// `b_j·v`, where `v` is `x` with its pending truncation done (`x` itself
    /// when nothing is pending). For piecewise-linear functions evaluated in
    /// one round ([`Ctx::piecewise`] of degree 1).
    ///
    /// Method: open `m = x + 2^62 + R` (64-bit mask `R`; no offset when
    /// nothing is pending), so `v = P − R'` with `P` public and `R' = Y₁ −
    /// wrap(m)·Y₂` known to the dealer (`Y₁ = R >> s`, `Y₂ = msb(R)`; `R'
    /// = R` untruncated). The comparison is the module's, on the low ℓ bits
    /// of `m` (the raw `x` at its scale; thresholds at that scale), and its
    /// DCF key carries the payload vector `β·(1, Y₁, Y₂)`, so the same
    /// evaluation gives shares of `borrow·Y_j` and with them `b_j·Y_j` and
    /// `b_j·v = P·b_j − b_j·Y₁ + wrap(m)·b_j·Y₂` (local).
    ///
    /// `coarse[j]` (one per threshold) is how many low bits of the raw `x`
    /// threshold `t_j`'s comparison ignores: `b_j` may be wrong where `|x −
    /// t_j| < 2^coarse[j]` ulps. The key's tree has `L = ℓ − 1 −
    /// min(coarse)` levels; a threshold with more coarse bits stops its walk
    /// that many levels early (a stop of the key, [`dcf::DcfKeys`]), and the
    /// thresholds' points share the nodes of their common prefixes
    /// ([`dcf::eval_batch_stopping`]).
    ///
    /// Rounds 1; bytes `8n` per party. Dealer per element: one DCF key of
    /// `L` levels with a 3-word payload (2 with nothing pending; `16 + 8w`
    /// bytes per level, `8w` per distinct stop) to each party and
    /// 24 bytes and `2s` bits to party 1 with a pending truncation by `s`
    /// (`msb(R)` and its product travel modulo `2^s`), 16 bytes with nothing
    /// pending. CPU: 3 (2) AES blocks per
    /// distinct tree node the element's points visit (at most one per level
    /// and threshold). Domain: `|x − t| < 2^(ℓ−1)` ulps of `x` for every
    /// threshold, `|x| < 2^62`.
    pub fn compare_products(
        &mut self,
        x: &Fx,
        thresholds: &[u64],
        bits: u32,
        coarse: &[u32],
    ) -> Op<ComparedProducts> {
        assert!((2..=62).contains(&bits), "compare_products: {bits} bits");
        assert_eq!(
            coarse.len(),
            thresholds.len(),
            "compare_products: one coarse width per threshold"
        );
        assert!(
            coarse.iter().all(|&c| c + 2 <= bits),
            "compare_products: coarse bits {coarse:?} of {bits}"
        );
        let finest = coarse.iter().copied().min().unwrap_or(0);
        let levels = bits - 1 - finest;
        let depths: Vec<u32> = coarse.iter().map(|c| levels - (c - finest)).collect();
        let mut stops: Vec<u32> = depths.iter().copied().filter(|&d| d < levels).collect();
        stops.sort_unstable();
        stops.dedup();
        let coarse = finest;
        let (n, s) = (x.len(), x.pending());
        let req = Request::CompareProducts {
            n,
            bits,
            coarse,
            trunc: s,
            stops,
        };
        let Material::CompareProducts(CompareProducts {
            r,
            r_msb,
            high,
            top: y2,
            msb_high,
            msb_top,
            roots,
            keys: cws,
        }) = attempt!(self.take("compare-products", req))
        else {
            return Op::fail(MpcError::OutOfStep {
                op: "compare-products",
                needed: "compare-products".into(),
                found: "another kind".into(),
            });
        };
        let w = crate::dealer::product_keys(s);
        let p0 = self.is_p0();
        let party = self.party().index();
        let recording = self.is_recording();
        let offset = if p0 && s > 0 { TRUNC_OFFSET } else { 0 };
        let mine: Vec<u64> = x
            .share()
            .as_slice()
            .iter()
            .zip(&r)
            .map(|(v, r)| v.wrapping_add(offset).wrapping_add(*r))
            .collect();
        let thresholds = thresholds.to_vec();
        Op::exchange(
            "compare-products",
            channel::pack(&mine, 64),
            move |_, peer| {
                let other = channel::unpack(peer, n, 64);
                let m = crate::ring::add(&mine, &other);
                let (mask, half, low) = (low_mask(bits), 1u64 << (bits - 1), low_mask(bits - 1));
                let k = thresholds.len();
                // Points key by key: element i's threshold j; w words out per point.
                let mut xs = Vec::with_capacity(n * k);
                let mut key_of = Vec::with_capacity(n * k);
                let mut tops = Vec::with_capacity(n * k);
                let mut point_depths = Vec::with_capacity(n * k);
                for (i, mi) in m.iter().enumerate() {
                    for (t, d) in thresholds.iter().zip(&depths) {
                        let y = (mi & mask).wrapping_sub(*t).wrapping_add(half) & mask;
                        tops.push(y >> (bits - 1));
                        xs.push((y & low) >> coarse);
                        key_of.push(i);
                        point_depths.push(*d);
                    }
                }
                let mut d = vec![0u64; n * k * w];
                if !recording {
                    dcf::eval_batch_stopping(
                        party,
                        &roots,
                        &cws,
                        &key_of,
                        &xs,
                        &point_depths,
                        &mut d,
                    );
                }
                // v = P − R' per element, R' = Y₁ − wrap·Y₂ (or R)
                let (public, wrap): (Vec<u64>, Vec<u64>) = if s > 0 {
                    m.iter()
                        .map(|&mi| (opened_high(mi, s), opened_wrap(mi, s)))
                        .unzip()
                } else {
                    (m.clone(), vec![0; n])
                };
                let y1 = if s > 0 { high } else { r };
                let mut bits_out = vec![vec![0u64; n]; k];
                let mut prod_out = vec![vec![0u64; n]; k];
                for i in 0..n {
                    for j in 0..k {
                        let p = i * k + j;
                        let top = tops[p];
                        let sign = 1u64.wrapping_sub(2 * top);
                        // b = top + (1 − 2·top)·(msb(r) + borrow), likewise times Y
                        let times = |msb_y: u64, dq: u64| sign.wrapping_mul(msb_y.wrapping_add(dq));
                        let mut b = times(r_msb[i], d[p * w]);
                        if p0 {
                            b = b.wrapping_add(top);
                        }
                        let b_y1 = top
                            .wrapping_mul(y1[i])
                            .wrapping_add(times(msb_high[i], d[p * w + 1]));
                        let b_r = if s > 0 {
                            let b_y2 = top
                                .wrapping_mul(y2[i])
                                .wrapping_add(times(msb_top[i], d[p * w + 2]));
                            b_y1.wrapping_sub(wrap[i].wrapping_mul(b_y2))
                        } else {
                            b_y1
                        };
                        bits_out[j][i] = b;
                        prod_out[j][i] = public[i].wrapping_mul(b).wrapping_sub(b_r);
                    }
                }
                let value: Vec<u64> = (0..n)
                    .map(|i| {
                        let rr = if s > 0 {
                            y1[i].wrapping_sub(wrap[i].wrapping_mul(y2[i]))
                        } else {
                            y1[i]
                        };
                        let z = rr.wrapping_neg();
                        if p0 { z.wrapping_add(public[i]) } else { z }
                    })
                    .collect();
                Op::ready(ComparedProducts {
                    value: Share::new(value),
                    bits: bits_out.into_iter().map(Share::new).collect(),
                    products: prod_out.into_iter().map(Share::new).collect(),
                })
            },
        )
    }

    /// `ReLU(x) = b·x` with `b = [x ≥ 2^coarse]` (`p.coarse`; 0 for an
    /// exact comparison), at `x.frac()`: exact for `|x| < 2^(ℓ−1)` ulps (ℓ =
    /// `p.bits`; with f = 16 and ℓ = 32, `|x| < 32768`) except that `0 ≤ x
    /// < 2^coarse` ulps may come out as 0 instead of itself (error below
    /// `2^coarse` ulps). The threshold sits above 0 so that the error is on
    /// that side: the result is never negative (a ReLU-softmax row sum of
    /// such outputs is never below 0; a threshold at 0 would let inputs
    /// just below it through, and a row of many slightly negative scores
    /// could sum below 0, where the reciprocal's extrapolation leaves the
    /// ring: wrong by up to 18 in a `vit_7_4_32` block).
    ///
    /// A pending truncation of `x` (by `s`) costs no round: the comparison
    /// reads `x` at all its bits (width `ℓ + s`, `coarse + s` ignored bits,
    /// so the DCF key is as deep as without it) and the selection takes the
    /// truncated value. Domain: `|x̃| < 2^62`, `ℓ + s ≤ 62`.
    ///
    /// Two rounds (`p.one_round` false): open `m = x + r` (64-bit mask;
    /// `m mod 2^ℓ` feeds the XOR-output DCF); open `e = b ⊕ ρ`; then
    /// `b·x = (e + (1 − 2e)ρ)(m − r) = e·m − e·r + (1 − 2e)(m·ρ − ρr)`,
    /// local from shares of `r`, `ρ`, `ρr`. Sends `8n + ⌈n/8⌉` bytes per party.
    /// Dealer: one [`crate::dcf::bit::BitKeys`] key of `ℓ − 1 − coarse`
    /// input bits per element to each party (`16·(ℓ − 8 −
    /// coarse) + 16` bytes for `ℓ − 1 − coarse ≥ 7`), plus `16n` bytes (`ρ`,
    /// `ρr`) to party 1, and with `s > 0` 8 more bytes and `2s` bits per
    /// element (`r >> s`; `msb(r)`, `ρ·msb(r)` modulo `2^s`) and no
    /// truncation triple.
    ///
    /// One round (`p.one_round`): the comparison's DCF key carries the
    /// mask's parts as its payload ([`Ctx::compare_products`] at the
    /// threshold `2^(coarse + s)`), so the opening of `x + r` gives `[x ≥
    /// 2^coarse]·x` directly, with no bits' opening after it. The result is
    /// the same (exact, except that `0 < x < 2^(coarse+1)` ulps may come out
    /// as 0); the price is dealer material: a DCF key of `L = ℓ − 1 −
    /// coarse` levels with a 3-word payload (`40L + ⌈L/4⌉ + 24` bytes; 2
    /// words and `32L + ⌈L/4⌉ + 16` with nothing pending) to each party,
    /// against the bit comparison's `16(L − 7) + 16`, and CPU: 3 AES blocks
    /// per level instead of 1. Sends `8n` bytes per party; dealer to party 1
    /// also 24 bytes and `2s` bits per element (16 bytes with nothing
    /// pending).
    pub fn relu(&mut self, x: &Fx, p: Relu) -> Op<Fx> {
        let s = x.pending();
        let (ignored, threshold) = relu_threshold(p.coarse, s);
        let (shape, frac) = (x.shape(), x.frac());
        let out = move |r: Share| Fx::new(r, shape, frac);
        if p.one_round {
            return self
                .compare_products(x, &[threshold], p.bits + s, &[ignored])
                .map(move |mut c| out(c.products.remove(0)));
        }
        self.bit_compare(x, &[threshold], p.bits + s, ignored, true, Squares::No)
            .then(|_, c| c.open())
            .map(move |o| out(o.select().remove(0)))
    }

    /// Maximum of each row of `x` (rows×cols) by a pairwise tree, one round
    /// per level: `max(a, b) = b + [a − b ≥ 0]·(a − b)`, the product coming
    /// out of the comparison's own opening ([`Ctx::compare_products`] at
    /// threshold 0). `x` may carry a pending truncation: the first level
    /// compares the pending differences and truncates `x` beside them;
    /// returns `x` truncated and the row maxima.
    ///
    /// With `coarse > 0` a level may pick the smaller of two values less
    /// than `2^coarse` ulps apart, so the result may lie up to
    /// `⌈log2 cols⌉·2^coarse` ulps below the true maximum (harmless where
    /// only an upper region is wanted, as softmax's shift). Rounds
    /// `⌈log2 cols⌉`; sends about `8·(cols − 1)·rows` bytes per party (plus
    /// `⌈rows·cols/8⌉` for a pending truncation). Dealer: 2 DCF keys of
    /// `ℓ − 1 − coarse` levels per comparison to each party (3 on the first
    /// level with a pending truncation). Exact (with `coarse = 0`) for
    /// pairwise differences below 2^(ℓ−1) ulps.
    pub fn row_max(&mut self, x: Fx, bits: u32, coarse: u32) -> Op<(Share, Share)> {
        let (rows, cols) = (x.rows(), x.cols());
        let s = x.pending();
        if s == 0 || cols <= 1 {
            return self.settle(x).then(move |c, xt| {
                let xt = xt.into_share();
                row_max_level(c, xt.as_slice().to_vec(), rows, cols, bits, coarse)
                    .map(move |m| (xt, m))
            });
        }
        let (lhs, rhs) = halves(x.share().as_slice(), rows, cols);
        let half = Shape::new(rows, cols / 2);
        let diff = Fx::with_pending(Share::new(lhs).sub(&Share::new(rhs)), half, x.frac(), s);
        let xt = self.trunc(x.share(), s);
        xt.join(self.compare_products(&diff, &[0], bits + s, &[coarse + s]))
            .then(move |c, (xt, cp)| {
                let (_, rhs) = halves(xt.as_slice(), rows, cols);
                let m = Share::new(rhs).add(&cp.products[0]);
                let next = next_level(m.as_slice(), xt.as_slice(), rows, cols);
                row_max_level(c, next, rows, cols - cols / 2, bits, coarse).map(move |m| (xt, m))
            })
    }
}

/// The left and right halves of each row's first `2⌊width/2⌋` values.
fn halves(cur: &[u64], rows: usize, width: usize) -> (Vec<u64>, Vec<u64>) {
    let half = width / 2;
    let mut lhs = Vec::with_capacity(rows * half);
    let mut rhs = Vec::with_capacity(rows * half);
    for r in 0..rows {
        lhs.extend_from_slice(&cur[r * width..r * width + half]);
        rhs.extend_from_slice(&cur[r * width + half..r * width + 2 * half]);
    }
    (lhs, rhs)
}

/// The next level's rows: each row's pairwise maxima `m`, and its last
/// value of `cur` when the width is odd.
fn next_level(m: &[u64], cur: &[u64], rows: usize, width: usize) -> Vec<u64> {
    let half = width / 2;
    let mut next = Vec::with_capacity(rows * (width - half));
    for r in 0..rows {
        next.extend_from_slice(&m[r * half..(r + 1) * half]);
        if width % 2 == 1 {
            next.push(cur[r * width + width - 1]);
        }
    }
    next
}

/// One level of [`Ctx::row_max`]'s tree on rows of `width` values, then the next.
fn row_max_level(
    c: &mut Ctx<'_>,
    cur: Vec<u64>,
    rows: usize,
    width: usize,
    bits: u32,
    coarse: u32,
) -> Op<Share> {
    if width <= 1 {
        return Op::ready(Share::new(cur));
    }
    let (lhs, rhs) = halves(&cur, rows, width);
    let rhs = Share::new(rhs);
    let diff = Share::new(lhs).sub(&rhs);
    let diff = c.fx(diff, Shape::new(rows, width / 2));
    c.compare_products(&diff, &[0], bits, &[coarse])
        .then(move |c, cp| {
            let m = rhs.add(&cp.products[0]);
            let next = next_level(m.as_slice(), &cur, rows, width);
            row_max_level(c, next, rows, width - width / 2, bits, coarse)
        })
}

/// A ReLU's comparison of a value with `shift` pending bits: the low bits
/// it ignores and its threshold `2^ignored` (0 when exact), so that an
/// error can only zero a small positive value ([`Ctx::relu`]).
fn relu_threshold(coarse: u32, shift: u32) -> (u32, u64) {
    let ignored = coarse + shift;
    (ignored, if ignored > 0 { 1u64 << ignored } else { 0 })
}

/// What [`Ctx::compare_products`] gives: this party's shares of the
/// compared value `v` (truncated if it was pending), of `b_j = [x ≥ t_j]`
/// and of `b_j·v`, one share of length `n` per threshold `j`.
#[derive(Clone)]
pub struct ComparedProducts {
    /// `v`.
    pub value: Share,
    /// `b_j`, per threshold.
    pub bits: Vec<Share>,
    /// `b_j·v`, per threshold.
    pub products: Vec<Share>,
}

impl std::fmt::Debug for ComparedProducts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ComparedProducts(<{} x {}>)",
            self.value.len(),
            self.bits.len()
        )
    }
}

/// Settings of a ReLU ([`Ctx::relu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relu {
    /// Comparison width ℓ: `|x| < 2^(ℓ−1)` ulps at `x.frac()`.
    pub bits: u32,
    /// Low bits the comparison ignores: its threshold is `2^coarse` ulps,
    /// so `[0, 2^coarse)` ulps may come out as 0 (never a negative output),
    /// and each DCF key is `coarse` levels shallower.
    pub coarse: u32,
    /// One round (a payload-carrying key, about 4× the dealer material)
    /// instead of two.
    pub one_round: bool,
}

impl Relu {
    /// An exact two-round ReLU on `bits`-bit comparisons.
    pub fn exact(bits: u32) -> Self {
        Relu {
            bits,
            coarse: 0,
            one_round: false,
        }
    }
}

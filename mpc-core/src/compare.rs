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
//! **Bit comparisons** ([`Ctx::bit_compare`]): where the bits are
//! consumed by a product (ReLU, max) or by few thresholds (GeLU), the DCF
//! outputs XOR-shared bits ([`crate::dcf_bit`]: 16 bytes per level and one
//! AES block per point and level, instead of 24 and 2) and the consumer's
//! opening is folded into the comparison's: round 1 opens `m = x + r` with a
//! 64-bit mask (`m mod 2^ℓ` is the comparison's `ĉ`), round 2 opens
//! `e = [x ≥ t] ⊕ ρ` (one bit). With dealer shares of `ρ` (arithmetic) and
//! `ρ·r`, `[x ≥ t]·x = (e + (1 − 2e)ρ)(m − r)` is local, so ReLU stays 2
//! rounds and sends `8n + ⌈n/8⌉` bytes instead of `⌈n·ℓ/8⌉ + 16n`; the
//! bit itself is `e + (1 − 2e)ρ`. `ρ = σ ⊕ msb(r)` with both XOR shares `σ_b`
//! drawn from the parties' own streams, so `msb(r)` costs nothing.

use crate::arith::MaskedWeight;
use crate::arith::{TRUNC_OFFSET, Untruncated, opened_high, opened_wrap};
use crate::channel;
use crate::dcf;
use crate::dcf_bit;
use crate::dealer::kinds::{BitCompare, Compare, CompareProducts};
use crate::dealer::{Material, Request, Squares, ValueProducts, low_mask};
use crate::error::{MpcError, check_len};
use crate::nonlinear::{NormProducts, masked_products};
use crate::op::{Op, attempt};
use crate::session::Ctx;
use crate::share::Share;

impl Ctx<'_> {
    /// Shares (0/1 integers, not fixed point) of `[x ≥ t]` for each public
    /// threshold `t` (raw ring values, for example `encode(0.5)`), one share
    /// of length `n` per threshold. See the module doc for cost and domain.
    pub fn ge_thresholds(&mut self, x: &Share, thresholds: &[u64], bits: u32) -> Op<Vec<Share>> {
        self.compare(x, thresholds, bits, 0)
    }

    /// [`Ctx::ge_thresholds`] that may err where `|x − t| < 2^coarse`
    /// ulps: the DCF then compares only the top `ℓ − 1 − coarse` bits of the
    /// masked value (a shallower tree: less dealer material and local work).
    /// For piecewise approximations whose neighbouring segments agree near
    /// their shared boundary.
    pub fn ge_thresholds_coarse(
        &mut self,
        x: &Share,
        thresholds: &[u64],
        bits: u32,
        coarse: u32,
    ) -> Op<Vec<Share>> {
        self.compare(x, thresholds, bits, coarse)
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
    /// one round ([`Ctx::piecewise_linear_pending`]).
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
        x: &Untruncated,
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
        let (n, s) = (x.raw.len(), x.shift);
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
            .raw
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

    /// Shares of the bit `[x ≥ 0]` (integers 0/1). Rounds 1; see the module doc.
    pub fn ge_zero(&mut self, x: &Share, bits: u32) -> Op<Share> {
        self.ge_thresholds(x, &[0], bits).map(|mut g| g.remove(0))
    }

    /// `ReLU(x) = x·[x ≥ 0]`: [`Ctx::relu_coarse`] with an exact comparison.
    /// Exact for `|x| < 2^(ℓ−1)` ulps (ℓ = `bits`; with f = 16 and ℓ = 32,
    /// `|x| < 32768`).
    pub fn relu(&mut self, x: &Share, bits: u32) -> Op<Share> {
        self.relu_coarse(x, bits, 0)
    }

    /// `ReLU(x) = b·x` with `b = [x ≥ 2^coarse]` from a bit comparison that
    /// may err where `0 ≤ x < 2^coarse` (ulps), so the result is exact
    /// except that such an `x` may come out as 0 instead of itself (error
    /// below `2^coarse` ulps). The threshold sits above 0 so that the error
    /// is on that side: the result is never negative (a ReLU-softmax row sum
    /// of such outputs is never below 0; a threshold at 0 would let inputs
    /// just below it through, and a row of many slightly negative scores
    /// could sum below 0, where the reciprocal's extrapolation leaves the
    /// ring: wrong by up to 18 in a `vit_7_4_32` block).
    ///
    /// Steps: open `m = x + r` (64-bit mask; `m mod 2^ℓ` feeds the XOR-output
    /// DCF); open `e = b ⊕ ρ`; then `b·x = (e + (1 − 2e)ρ)(m − r) =
    /// e·m − e·r + (1 − 2e)(m·ρ − ρr)`, local from shares of `r`, `ρ`, `ρr`.
    /// Rounds 2; sends `8n + ⌈n/8⌉` bytes per party. Dealer: one
    /// [`dcf_bit::BitKeys`] key of `ℓ − 1 − coarse` input bits per element to
    /// each party (`16·(ℓ − 8 − coarse) + 16` bytes for `ℓ − 1 − coarse ≥ 7`),
    /// plus `16n` bytes (`ρ`, `ρr`) to party 1. Domain `|x| < 2^(ℓ−1)` ulps.
    pub fn relu_coarse(&mut self, x: &Share, bits: u32, coarse: u32) -> Op<Share> {
        self.relu_truncating(&x.clone().into(), bits, coarse)
    }

    /// [`Ctx::relu_coarse`] of a value whose truncation is pending: the
    /// comparison reads `x.raw` (at `shift` more bits: width `bits + shift`,
    /// `coarse + shift` ignored bits, so the DCF key is as deep as without
    /// the shift) and the selection takes the truncated value, so the
    /// truncation costs no round. Rounds 2; bytes as [`Ctx::relu_coarse`];
    /// dealer: 8 more bytes and `2·shift` bits per element to party 1 when
    /// `shift > 0` (`r >> shift`; `msb(r)`, `ρ·msb(r)` modulo `2^shift`) and
    /// no truncation triple.
    /// Domain: `|x.raw| < 2^62`, `bits + shift ≤ 62`.
    pub fn relu_truncating(&mut self, x: &Untruncated, bits: u32, coarse: u32) -> Op<Share> {
        let s = x.shift;
        let (ignored, threshold) = relu_threshold(coarse, s);
        self.bit_compare(
            &x.raw,
            &[threshold],
            bits + s,
            ignored,
            true,
            Squares::No,
            s,
        )
        .then(|_, c| c.open())
        .map(|o| o.select().remove(0))
    }

    /// [`Ctx::relu_truncating`] in one round: the comparison's DCF key
    /// carries the mask's parts as its payload ([`Ctx::compare_products`]
    /// at the threshold `2^(coarse + shift)`), so the opening of `x + r`
    /// gives `[x ≥ 2^coarse]·x` directly, with no bits' opening after it.
    /// The result is the same (exact, except that `0 < x < 2^(coarse+1)`
    /// ulps may come out as 0); the price is dealer material: a DCF key of
    /// `L = bits − 1 − coarse` levels with a 3-word payload (`40L + ⌈L/4⌉ +
    /// 24` bytes; 2 words and `32L + ⌈L/4⌉ + 16` with nothing pending) to
    /// each party, against the bit comparison's `16(L − 7) + 16`, and CPU:
    /// 3 AES blocks per level instead of 1. Rounds 1; bytes `8n` per party;
    /// dealer to party 1 also 24 bytes and `2·shift` bits per element (16
    /// bytes with nothing pending). Domain as [`Ctx::relu_truncating`].
    pub fn relu_one_round(&mut self, x: &Untruncated, bits: u32, coarse: u32) -> Op<Share> {
        let (ignored, threshold) = relu_threshold(coarse, x.shift);
        self.compare_products(x, &[threshold], bits + x.shift, &[ignored])
            .map(|mut c| c.products.remove(0))
    }

    /// Bit comparison, first round: opens `m = x + r` (64-bit, `8n` bytes per
    /// party) and evaluates one XOR-output DCF key per element at every
    /// threshold, leaving this party's XOR shares of `e_j = [x ≥ t_j] ⊕ ρ_j`
    /// (ρ_j a fresh dealer bit per element and threshold). The result's
    /// [`BitCompared::open`] is the second round (`⌈n·k/8⌉` bytes), after
    /// which the bits are available as arithmetic shares
    /// ([`BitsOpened::bits`], dealer `8` bytes per bit to party 1) or
    /// multiplied by `x` ([`BitsOpened::select`], `with select`: 8 more).
    /// With `Squares::Each`, [`BitCompared::square_raw`] gives `x²` from the
    /// same opening (dealer: `8n` bytes to party 1); with
    /// `Squares::RowSums(c)`, [`BitCompared::square_row_sums`] gives only
    /// their sums over rows of `c` (8 bytes per row); with
    /// `Squares::EachTruncated(q)` (and `select`), [`BitCompared::open`]
    /// also truncates `x²` by `q` and selects it by each bit (8 bytes more
    /// per element online; dealer to party 1: 8 bytes and `q` bits per
    /// element and per element and threshold). With a truncation by `s`,
    /// party 1 also gets `r_h` (8 bytes) and, modulo `2^s` (`s` bits each:
    /// they only meet the wrap coefficient), `msb(r)`, `ρ·msb(r)` per bit
    /// with `select` and `r_h·msb(r)` with `square`.
    ///
    /// Method as in the module doc, with `r mod 2^ℓ` as the comparison mask:
    /// `[x ≥ t] ⊕ ρ = msb(ŷ) ⊕ [ŷ_low < r_low] ⊕ σ` with `σ = ρ ⊕ msb(r)`
    /// XOR-shared from the parties' own streams. Domain: `|x − t| < 2^(ℓ−1)`
    /// ulps; with `coarse > 0` a bit may be wrong where
    /// `−2^coarse ≤ x − t < 0`.
    pub fn bit_compare(
        &mut self,
        x: &Share,
        thresholds: &[u64],
        bits: u32,
        coarse: u32,
        select: bool,
        square: Squares,
        trunc: u32,
    ) -> Op<BitCompared> {
        let req = Request::BitCompare {
            n: x.len(),
            bits,
            coarse,
            points: thresholds.len(),
            select,
            square,
            trunc,
            products: None,
        };
        self.bit_compare_request(x, thresholds, req)
    }

    /// A LayerNorm's first opening of its centred rows `x` (rows of
    /// `cols`, truncation by `x.shift > 0` pending): a bit comparison with
    /// no threshold that truncates `x` and gives `Σ_j v_j²` per row (as
    /// [`Ctx::bit_compare`] with `Squares::RowSums(cols)`), and prepares
    /// `v ⊙ γ` and `v·W` for [`BitCompared::products`] in the next round.
    /// Rounds 1; sends `8n` bytes per party. Dealer: as the bit comparison,
    /// plus `8` bytes per product word (`n` for `γ`, rows·out for `W`) to
    /// party 1.
    pub fn norm_opening(
        &mut self,
        x: &Untruncated,
        cols: usize,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
    ) -> Op<BitCompared> {
        assert!(x.shift > 0, "norm opening: nothing to truncate");
        let n = x.raw.len();
        if let Some(g) = gamma {
            attempt!(check_len(
                "norm_opening",
                "scale",
                g.rows() * g.cols(),
                cols
            ));
        }
        if let Some(w) = next {
            attempt!(check_len("norm_opening", "weight rows", w.rows(), cols));
        }
        let products = (gamma.is_some() || next.is_some()).then(|| ValueProducts {
            cols,
            scale: gamma.map(|g| g.id()),
            next: next.map(|w| (w.id(), w.cols())),
        });
        let req = Request::BitCompare {
            n,
            bits: 62,
            coarse: 0,
            points: 0,
            select: false,
            square: Squares::RowSums(cols),
            trunc: x.shift,
            products,
        };
        self.bit_compare_request(&x.raw, &[], req)
    }

    /// [`Ctx::bit_compare`] for a request built by it or by [`Ctx::norm_opening`].
    fn bit_compare_request(
        &mut self,
        x: &Share,
        thresholds: &[u64],
        req: Request,
    ) -> Op<BitCompared> {
        let Request::BitCompare {
            n,
            bits,
            coarse,
            select,
            square,
            trunc,
            products,
            ..
        } = req
        else {
            unreachable!("a bit comparison's request");
        };
        assert!((2..=64).contains(&bits), "compare: {bits} bits");
        assert!(
            coarse + 2 <= bits,
            "compare: {coarse} coarse bits of {bits}"
        );
        assert!(
            trunc == 0 || (bits <= 62 && trunc < 62),
            "compare: truncation by {trunc} of {bits} bits"
        );
        if let Squares::RowSums(cols) = square {
            assert!(
                cols > 0 && n.is_multiple_of(cols),
                "compare: {n} elements are not rows of {cols}"
            );
        }
        if let Squares::EachTruncated(q) = square {
            assert!(
                select && (1..62).contains(&q),
                "compare: square truncated by {q} (needs select)"
            );
        }
        assert_eq!(n, x.len(), "compare: request for {n} elements");
        let k = thresholds.len();
        let m = attempt!(self.take("bit-compare", req));
        let Material::BitCompare(BitCompare {
            r,
            sigma,
            rho,
            rho_r,
            r_sq,
            r_high,
            r_msb,
            rho_msb,
            high_msb,
            a_t,
            c_star,
            sq_r,
            sq_high,
            sq_msb,
            rho_sq_high,
            rho_sq_msb,
            roots,
            keys,
        }) = m
        else {
            return Op::fail(MpcError::OutOfStep {
                op: "bit-compare",
                needed: "bit-compare".into(),
                found: format!("{m:?}"),
            });
        };
        let p0 = self.is_p0();
        // with a truncation, party 0 offsets x into [0, 2^63) (see `Ctx::mul_rows_trunc_raw`)
        let offset = if trunc > 0 && p0 { TRUNC_OFFSET } else { 0 };
        let masked: Vec<u64> = x
            .as_slice()
            .iter()
            .zip(&r)
            .map(|(v, r)| v.wrapping_add(offset).wrapping_add(*r))
            .collect();
        let party = self.party().index();
        let recording = self.is_recording();
        let thresholds = thresholds.to_vec();
        let msg = channel::pack(&masked, 64);
        Op::exchange("bit-compare", msg, move |_, peer| {
            let other = channel::unpack(peer, n, 64);
            let m: Vec<u64> = masked
                .iter()
                .zip(&other)
                .map(|(a, b)| a.wrapping_add(*b))
                .collect();
            let mask = low_mask(bits);
            let half = 1u64 << (bits - 1);
            let low = low_mask(bits - 1);
            // y = ĉ − t + 2^(ℓ−1), ĉ = m mod 2^ℓ; points key by key: its low
            // bits (above the ignored ones) go to the DCF, its top bit is public.
            let y = |p: usize| m[p / k].wrapping_sub(thresholds[p % k]).wrapping_add(half) & mask;
            let mut e_mine = vec![0u8; n * k];
            if !recording && k > 0 {
                let lows: Vec<u64> = (0..n * k).map(|p| (y(p) & low) >> coarse).collect();
                dcf_bit::eval_grouped(party, &roots, &keys, k, &lows, &mut e_mine);
            }
            for (p, e) in e_mine.iter_mut().enumerate() {
                let top = if p0 { (y(p) >> (bits - 1)) as u8 } else { 0 };
                *e ^= top ^ sigma[p];
            }
            // The mask's square per element; with row sums the dealer's
            // Σ r² comes per row (`sq_rows`) and is left out here.
            let squared = if square == Squares::No { 0 } else { n };
            let (r_sq, sq_rows) = match square {
                Squares::RowSums(_) => (vec![0; squared], r_sq),
                _ => (r_sq, Vec::new()),
            };
            // The value the products see is `P − R` with `P` public: `m − r`,
            // or with a truncation by s, `(m >> s) − 2^(62−s)` minus
            // `r_h − 2^(64−s)·(1 − msb m)·msb(r)`.
            // with products, this party's share of the wrap part `T` of `R`
            // (modulo 2^s): `R = r_h − 2^(64−s)·T`, `T = (1 − msb m)·msb(r)`
            let wrapped = if products.is_some() {
                (0..n)
                    .map(|i| (1 - (m[i] >> 63)).wrapping_mul(r_msb[i]))
                    .collect()
            } else {
                Vec::new()
            };
            let (public, base, rho_base, sq_base) = if trunc == 0 {
                (m, r, rho_r, r_sq)
            } else {
                let wrap = |i: usize| opened_wrap(m[i], trunc);
                let (public, base, rho_base) =
                    truncated_opening(&m, trunc, k, (&r_high, &r_msb), (&rho_r, &rho_msb));
                // R² = r_h² − 2K(1 − M)·r_h·msb(r) + K²(1 − M)·msb(r), K = 2^(64−s)
                // (K² vanishes for s ≤ 32)
                let sq_base = (0..r_sq.len())
                    .map(|i| {
                        let k = wrap(i);
                        r_sq[i]
                            .wrapping_sub(k.wrapping_mul(2).wrapping_mul(high_msb[i]))
                            .wrapping_add(k.wrapping_mul(k).wrapping_mul(r_msb[i]))
                    })
                    .collect();
                (public, base, rho_base, sq_base)
            };
            Op::ready(BitCompared {
                n,
                k,
                p0,
                public,
                e_mine,
                base,
                rho,
                rho_base,
                sq_base,
                sq_rows,
                square,
                trunc,
                products: products.map(|spec| Prepared {
                    spec,
                    wrapped,
                    a_t,
                    c_star,
                }),
                square_mask: match square {
                    Squares::EachTruncated(q) => Some(SquareMask {
                        q,
                        r: sq_r,
                        high: sq_high,
                        msb: sq_msb,
                        rho_high: rho_sq_high,
                        rho_msb: rho_sq_msb,
                    }),
                    _ => None,
                },
            })
        })
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
    pub fn row_max(
        &mut self,
        x: impl Into<Untruncated>,
        rows: usize,
        cols: usize,
        bits: u32,
        coarse: u32,
    ) -> Op<(Share, Share)> {
        let x: Untruncated = x.into();
        attempt!(crate::error::check_len(
            "row_max",
            "matrix",
            x.raw.len(),
            rows * cols
        ));
        let s = x.shift;
        if s == 0 || cols <= 1 {
            return x.truncate(self).then(move |c, xt| {
                row_max_level(c, xt.as_slice().to_vec(), rows, cols, bits, coarse)
                    .map(move |m| (xt, m))
            });
        }
        let (lhs, rhs) = halves(x.raw.as_slice(), rows, cols);
        let diff = Untruncated {
            raw: Share::new(lhs).sub(&Share::new(rhs)),
            shift: s,
        };
        let xt = self.trunc(&x.raw, s);
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
    c.compare_products(&diff.into(), &[0], bits, &[coarse])
        .then(move |c, cp| {
            let m = rhs.add(&cp.products[0]);
            let next = next_level(m.as_slice(), &cur, rows, width);
            row_max_level(c, next, rows, width - width / 2, bits, coarse)
        })
}

/// A value opened as `m = v + 2^62 + r` and truncated by `s`: the public
/// `P = high(m)` and this party's shares of `R = r_h − wrap(m)·msb(r)` and,
/// per element and threshold (`k` per element), of `ρ·R` from its shares
/// of `(r_h, msb r)` and `(ρ·r_h, ρ·msb r)`, so that `⌊v/2^s⌋ = P − R`.
fn truncated_opening(
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
fn public_minus_mask(p0: bool, public: &[u64], base: &[u64]) -> Share {
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

/// A ReLU's comparison of a value with `shift` pending bits: the low bits
/// it ignores and its threshold `2^ignored` (0 when exact), so that an
/// error can only zero a small positive value ([`Ctx::relu_coarse`]).
fn relu_threshold(coarse: u32, shift: u32) -> (u32, u64) {
    let ignored = coarse + shift;
    (ignored, if ignored > 0 { 1u64 << ignored } else { 0 })
}

/// A bit comparison after its first round (see [`Ctx::bit_compare`]).
/// The value `v` it opened (`x`, or `x` truncated) is `P − R` with `P`
/// public and `R` known to the dealer. `Debug` is opaque.
pub struct BitCompared {
    n: usize,
    k: usize,
    p0: bool,
    /// `P`, per element.
    public: Vec<u64>,
    e_mine: Vec<u8>,
    /// Share of `R`, per element.
    base: Vec<u64>,
    /// Share of `ρ`, per element and threshold.
    rho: Vec<u64>,
    /// Share of `ρ·R`, per element and threshold (with `select`).
    rho_base: Vec<u64>,
    /// Share of `R²`, per element (with `square`; without the dealer's
    /// `Σ r²` words for `Squares::RowSums`).
    sq_base: Vec<u64>,
    /// Share of `Σ r²` per row (with `Squares::RowSums`).
    sq_rows: Vec<u64>,
    square: Squares,
    /// The truncation (0: none).
    trunc: u32,
    /// Material for [`BitCompared::products`] (from [`Ctx::norm_opening`]).
    products: Option<Prepared>,
    /// Material for the square's truncation in [`BitCompared::open`]
    /// (with `Squares::EachTruncated`).
    square_mask: Option<SquareMask>,
}

/// What a [`BitCompared`] keeps to truncate `v²` by `q` in the bits'
/// round: shares of the mask `r₂`, of `r₂ >> q` and `msb(r₂)`, and per
/// threshold of `ρ·(r₂ >> q)` and `ρ·msb(r₂)` (the `msb` parts modulo `2^q`).
struct SquareMask {
    q: u32,
    r: Vec<u64>,
    high: Vec<u64>,
    msb: Vec<u64>,
    rho_high: Vec<u64>,
    rho_msb: Vec<u64>,
}

/// The truncated square `⌊v²/2^q⌋ = P₂ − R₂` after the bits' round: `P₂`
/// public, shares of `R₂` and, per threshold, of `ρ·R₂`.
struct OpenedSquare {
    public: Vec<u64>,
    base: Vec<u64>,
    rho_base: Vec<u64>,
}

/// What a [`BitCompared`] keeps for [`BitCompared::products`].
struct Prepared {
    spec: ValueProducts,
    /// Share of `T = (1 − msb m)·msb(r)` (modulo `2^trunc`).
    wrapped: Vec<u64>,
    /// Share of the mask `A_t` (modulo `2^trunc`).
    a_t: Vec<u64>,
    /// Share of `C* = (r_h − K·A_t)·B`, the scale's words then the weight's.
    c_star: Vec<u64>,
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

    /// The round after a [`Ctx::norm_opening`]: the products of the
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
    /// bytes more), which truncates `v²` by `q` as [`Ctx::bit_compare`]
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

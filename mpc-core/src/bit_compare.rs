//! Bit comparisons: the first round.
//!
//! [`Ctx::bit_compare`]: where the bits are
//! consumed by a product (ReLU, max) or by few thresholds (GeLU), the DCF
//! outputs XOR-shared bits ([`crate::dcf::bit`]: 16 bytes per level and one
//! AES block per point and level, instead of 24 and 2) and the consumer's
//! opening is folded into the comparison's: round 1 opens `m = x + r` with a
//! 64-bit mask (`m mod 2^ℓ` is the comparison's `ĉ`), round 2 opens
//! `e = [x ≥ t] ⊕ ρ` (one bit). With dealer shares of `ρ` (arithmetic) and
//! `ρ·r`, `[x ≥ t]·x = (e + (1 − 2e)ρ)(m − r)` is local, so ReLU stays 2
//! rounds and sends `8n + ⌈n/8⌉` bytes instead of `⌈n·ℓ/8⌉ + 16n`; the
//! bit itself is `e + (1 − 2e)ρ`. `ρ = σ ⊕ msb(r)` with both XOR shares `σ_b`
//! drawn from the parties' own streams, so `msb(r)` costs nothing.
//!
//! The second round and what the opening gives are in [`crate::open`].

use crate::arith::MaskedWeight;
use crate::arith::{TRUNC_OFFSET, opened_wrap};
use crate::channel;
use crate::ctx::Ctx;
use crate::dcf;
use crate::dealer::kinds::BitCompare;
use crate::dealer::{Material, Request, Squares, ValueProducts, low_mask};
use crate::error::{MpcError, check_len};
use crate::fx::Fx;
use crate::op::{Op, attempt};
use crate::open::{BitCompared, Prepared, SquareMask, truncated_opening};
use crate::share::Share;

impl Ctx<'_> {
    /// Bit comparison, first round: opens `m = x + r` (64-bit, `8n` bytes per
    /// party) and evaluates one XOR-output DCF key per element at every
    /// threshold, leaving this party's XOR shares of `e_j = [x ≥ t_j] ⊕ ρ_j`
    /// (ρ_j a fresh dealer bit per element and threshold). The result's
    /// [`BitCompared::open`] is the second round (`⌈n·k/8⌉` bytes), after
    /// which the bits are available as arithmetic shares
    /// ([`BitsOpened::bits`](crate::open::BitsOpened::bits), dealer `8` bytes per bit to party 1) or
    /// multiplied by `x` ([`BitsOpened::select`](crate::open::BitsOpened::select), `with select`: 8 more).
    /// With `Squares::Each`, [`BitCompared::square_raw`] gives `x²` from the
    /// same opening (dealer: `8n` bytes to party 1); with
    /// `Squares::RowSums(c)`, [`BitCompared::square_row_sums`] gives only
    /// their sums over rows of `c` (8 bytes per row); with
    /// `Squares::EachTruncated(q)` (and `select`), [`BitCompared::open`]
    /// also truncates `x²` by `q` and selects it by each bit (8 bytes more
    /// per element online; dealer to party 1: 8 bytes and `q` bits per
    /// element and per element and threshold). With `x`'s pending
    /// truncation by `s`, the opening performs it (the value it gives is
    /// at `x.frac()`; thresholds are at all `x`'s bits) and party 1 also gets `r_h` (8 bytes) and, modulo `2^s` (`s` bits each:
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
        x: &Fx,
        thresholds: &[u64],
        bits: u32,
        coarse: u32,
        select: bool,
        square: Squares,
    ) -> Op<BitCompared> {
        let trunc = x.pending();
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
        self.bit_compare_request(x.share(), thresholds, req)
    }

    /// A LayerNorm's first opening of its centred rows `x` (rows of
    /// `x.cols()`, truncation by `x.pending() > 0` pending): a bit comparison with
    /// no threshold that truncates `x` and gives `Σ_j v_j²` per row (as
    /// [`Ctx::bit_compare`] with `Squares::RowSums(cols)`), and prepares
    /// `v ⊙ γ` and `v·W` for [`BitCompared::products`] in the next round.
    /// Rounds 1; sends `8n` bytes per party. Dealer: as the bit comparison,
    /// plus `8` bytes per product word (`n` for `γ`, rows·out for `W`) to
    /// party 1.
    pub fn norm_opening(
        &mut self,
        x: &Fx,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
    ) -> Op<BitCompared> {
        assert!(x.pending() > 0, "norm opening: nothing to truncate");
        let (n, cols) = (x.len(), x.cols());
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
            trunc: x.pending(),
            products,
        };
        self.bit_compare_request(x.share(), &[], req)
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
        // with a truncation, party 0 offsets x into [0, 2^63) (see `Ctx::mul_rows`)
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
                dcf::bit::eval_grouped(party, &roots, &keys, k, &lows, &mut e_mine);
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
}

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

use crate::channel;
use crate::dcf;
use crate::dealer::{Material, Request, low_mask};
use crate::error::{MpcError, Result};
use crate::session::{Round, Session};
use crate::share::Share;

impl Session<'_> {
    /// Shares (0/1 integers, not fixed point) of `[x ≥ t]` for each public
    /// threshold `t` (raw ring values, for example `encode(0.5)`), one share
    /// of length `n` per threshold. See the module doc for cost and domain.
    pub fn ge_thresholds(
        &mut self,
        x: &Share,
        thresholds: &[u64],
        bits: u32,
    ) -> Result<Vec<Share>> {
        let r = self.ge_thresholds_begin(x, thresholds, bits)?;
        self.finish(r)
    }

    /// [`Session::ge_thresholds`] as a [`Round`].
    pub fn ge_thresholds_begin(
        &mut self,
        x: &Share,
        thresholds: &[u64],
        bits: u32,
    ) -> Result<Round<Vec<Share>>> {
        self.compare_begin(x, thresholds, bits, 0)
    }

    /// [`Session::ge_thresholds_begin`] that may err where `|x − t| < 2^coarse`
    /// ulps: the DCF then compares only the top `ℓ − 1 − coarse` bits of the
    /// masked value (a shallower tree: less dealer material and local work).
    /// For piecewise approximations whose neighbouring segments agree near
    /// their shared boundary.
    pub fn ge_thresholds_coarse_begin(
        &mut self,
        x: &Share,
        thresholds: &[u64],
        bits: u32,
        coarse: u32,
    ) -> Result<Round<Vec<Share>>> {
        self.compare_begin(x, thresholds, bits, coarse)
    }

    fn compare_begin(
        &mut self,
        x: &Share,
        thresholds: &[u64],
        bits: u32,
        coarse: u32,
    ) -> Result<Round<Vec<Share>>> {
        assert!((2..=64).contains(&bits), "compare: {bits} bits");
        assert!(
            coarse + 2 <= bits,
            "compare: {coarse} coarse bits of {bits}"
        );
        let n = x.len();
        let req = Request::Compare { n, bits, coarse };
        let (r, r_msb, roots, cws) = match self.take("compare", req)? {
            Material::Compare {
                r,
                r_msb,
                roots,
                cws,
            } => (r, r_msb, roots, cws),
            other => {
                return Err(MpcError::OutOfStep {
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
        let thresholds = thresholds.to_vec();
        let msg = channel::pack(&masked, bits);
        Ok(Round::new("compare", msg, move |peer| {
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
            dcf::eval_batch(party, &roots, &cws, &key_of, &lows, &mut borrow);
            Ok((0..thresholds.len())
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
                .collect())
        }))
    }

    /// Shares of the bit `[x ≥ 0]` (integers 0/1). Rounds 1; see the module doc.
    pub fn ge_zero(&mut self, x: &Share, bits: u32) -> Result<Share> {
        Ok(self.ge_thresholds(x, &[0], bits)?.remove(0))
    }

    /// `ReLU(x) = x·[x ≥ 0]`.
    ///
    /// Rounds 2 (comparison, then bit × value product, which needs no
    /// truncation); sends `⌈n·ℓ/8⌉ + 16n` bytes per party. Exact for
    /// `|x| < 2^(ℓ−1)` ulps (ℓ = `bits`; with f = 16 and ℓ = 32, `|x| < 32768`).
    pub fn relu(&mut self, x: &Share, bits: u32) -> Result<Share> {
        let b = self.ge_zero(x, bits)?;
        self.mul_raw(&b, x)
    }

    /// Elementwise `max(x, y) = y + ReLU(x − y)`. Rounds 2; exact for `|x − y| < 2^(ℓ−1)` ulps.
    pub fn max_pair(&mut self, x: &Share, y: &Share, bits: u32) -> Result<Share> {
        let d = x.sub(y);
        Ok(y.add(&self.relu(&d, bits)?))
    }

    /// Maximum of each row of `x` (rows×cols) by a pairwise tree.
    ///
    /// Rounds `2·⌈log2 cols⌉`; sends about `(cols − 1)·rows·(ℓ/8 + 16)` bytes
    /// per party in total. Exact for pairwise differences below 2^(ℓ−1) ulps.
    pub fn row_max(&mut self, x: &Share, rows: usize, cols: usize, bits: u32) -> Result<Share> {
        crate::error::check_len("row_max", "matrix", x.len(), rows * cols)?;
        let mut cur = x.as_slice().to_vec();
        let mut width = cols;
        while width > 1 {
            let half = width / 2;
            let mut lhs = Vec::with_capacity(rows * half);
            let mut rhs = Vec::with_capacity(rows * half);
            for r in 0..rows {
                lhs.extend_from_slice(&cur[r * width..r * width + half]);
                rhs.extend_from_slice(&cur[r * width + half..r * width + 2 * half]);
            }
            let m = self
                .max_pair(&Share::new(lhs), &Share::new(rhs), bits)?
                .into_vec();
            let next_width = width - half;
            let mut next = Vec::with_capacity(rows * next_width);
            for r in 0..rows {
                next.extend_from_slice(&m[r * half..(r + 1) * half]);
                if width % 2 == 1 {
                    next.push(cur[r * width + width - 1]);
                }
            }
            cur = next;
            width = next_width;
        }
        Ok(Share::new(cur))
    }
}

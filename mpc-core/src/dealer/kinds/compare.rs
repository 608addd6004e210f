//! The kinds of comparisons: with arithmetic results, with XOR-shared bits
//! (and the products, squares and truncations their opening serves), and
//! with the compared value's products in the same round.

use crate::dcf::bit::{self, BitKeys};
use crate::dcf::{self, Block, DcfKeys};
use crate::dealer::masks::Masks;
use crate::dealer::parts::{
    KeyShape, Kind, corrected, drawn, drawn_bits, drawn_low, high_and_msb, low_mask, need, on,
    roots,
};
use crate::dealer::request::{Request, Squares, product_keys, square_shift};
use crate::error::Result;
use crate::ring;

kind! {
    /// See [`Request::Compare`].
    Compare(req) { let Request::Compare { n, bits, coarse } = *req else { unreachable!() }; }
    {
        /// Share of the mask `r` (mod 2^bits).
        r: Vec<u64> = drawn_low(n, bits),
        /// Share of `msb(r)` in Z_2^64.
        r_msb: Vec<u64> = corrected(n, 64),
        /// This party's DCF root seeds, one key per element.
        roots: Vec<Block> = roots(n),
    }
    keys DcfKeys = KeyShape::Dcf { depth: bits - 1 - coarse, width: 1, stops: Vec::new(), count: n };
}

impl Compare {
    fn derive_full(_: &mut Masks, req: &Request, m0: &Self, m1: &Self) -> Result<(Self, Vec<u8>)> {
        let Request::Compare { bits, coarse, .. } = *req else {
            unreachable!()
        };
        let mask = low_mask(bits);
        let n = m0.r.len();
        let mut alphas = Vec::with_capacity(n);
        let mut betas = Vec::with_capacity(n);
        let mut msb = Vec::with_capacity(n);
        for i in 0..n {
            let r = m0.r[i].wrapping_add(m1.r[i]) & mask;
            let top = (r >> (bits - 1)) & 1;
            alphas.push((r & low_mask(bits - 1)) >> coarse);
            betas.push(1u64.wrapping_sub(2 * top));
            msb.push(top);
        }
        let keys = dcf::generate_batch(bits - 1 - coarse, &alphas, &betas, &m0.roots, &m1.roots);
        let full = Compare {
            r_msb: msb,
            ..Compare::empty()
        };
        Ok((full, keys.into_bytes()))
    }
}

/// DCF keys of a bit comparison of `n` elements at `points` thresholds.
fn bit_keys(n: usize, points: usize) -> usize {
    if points == 0 { 0 } else { n }
}

kind! {
    /// See [`Request::BitCompare`]. Per-threshold vectors are element-major
    /// (entry `i·points + j`). `ρ`, `ρ·r`, `r²`, `r_h` travel in 64 bits;
    /// `msb(r)`, `ρ·msb(r)` and `r_h·msb(r)` only with a truncation and
    /// modulo `2^trunc` (they are used times its wrap coefficient only);
    /// `C*` in 64 bits; for a square truncated by `q`, `r₂ >> q` and
    /// `ρ·(r₂ >> q)` in 64 bits, `msb(r₂)` and `ρ·msb(r₂)` modulo `2^q`.
    BitCompare(req) {
        let Request::BitCompare { n, bits, coarse, points, select, square, trunc, products } = *req
        else { unreachable!() };
        let np = n * points;
        let t = trunc > 0;
        let q = square_shift(square);
        let tq = q > 0;
    }
    {
        /// Share of the 64-bit mask `r`.
        r: Vec<u64> = drawn(n),
        /// This party's XOR share `σ_b` of `ρ ⊕ msb(r)` (0/1), `n·points`.
        sigma: Vec<u8> = drawn_bits(np),
        /// Share of `ρ` in Z_2^64, `n·points`.
        rho: Vec<u64> = corrected(np, 64),
        /// Share of `ρ·r` (with `trunc`: `ρ·r_h`), `n·points` (with `select`).
        rho_r: Vec<u64> = corrected(on(select, np), 64),
        /// Share of `r²` (with `trunc`: `r_h²`), per element or summed over rows
        /// (one word per row with `Squares::RowSums`).
        r_sq: Vec<u64> = corrected(square.mask_words(n), 64),
        /// Share of `r_h = r >> trunc`, `n` (with `trunc`).
        r_high: Vec<u64> = corrected(on(t, n), 64),
        /// Share of `msb(r)`, `n` (with `trunc`).
        r_msb: Vec<u64> = corrected(on(t, n), trunc),
        /// Share of `ρ·msb(r)`, `n·points` (with `trunc` and `select`).
        rho_msb: Vec<u64> = corrected(on(t && select, np), trunc),
        /// Share of `r_h·msb(r)`, `n` (with `trunc` and a square).
        high_msb: Vec<u64> = corrected(on(t && square != Squares::No, n), trunc),
        /// Share of the products' mask `A_t` (modulo `2^trunc`), `n` (with `products`).
        a_t: Vec<u64> = drawn(on(products.is_some(), n)),
        /// Share of `C* = (r_h − 2^(64−trunc)·A_t)·B`: the scale's `n`
        /// words, then the weight's rows×out (with `products`).
        c_star: Vec<u64> = corrected(products.map_or(0, |p| p.words(n)), 64),
        /// Share of the square's mask `r₂`, `n` (with `Squares::EachTruncated`).
        sq_r: Vec<u64> = drawn(on(tq, n)),
        /// Share of `r₂ >> q`, `n` (with `Squares::EachTruncated(q)`).
        sq_high: Vec<u64> = corrected(on(tq, n), 64),
        /// Share of `msb(r₂)` (modulo `2^q`), `n` (with `Squares::EachTruncated(q)`).
        sq_msb: Vec<u64> = corrected(on(tq, n), q),
        /// Share of `ρ·(r₂ >> q)`, `n·points` (with `Squares::EachTruncated(q)`).
        rho_sq_high: Vec<u64> = corrected(on(tq, np), 64),
        /// Share of `ρ·msb(r₂)` (modulo `2^q`), `n·points` (with
        /// `Squares::EachTruncated(q)`).
        rho_sq_msb: Vec<u64> = corrected(on(tq, np), q),
        /// This party's DCF root seeds (none without thresholds).
        roots: Vec<Block> = roots(bit_keys(n, points)),
    }
    keys BitKeys = KeyShape::Bit { depth: bits - 1 - coarse, count: bit_keys(n, points) };
}

impl BitCompare {
    fn derive_full(
        masks: &mut Masks,
        req: &Request,
        m0: &Self,
        m1: &Self,
    ) -> Result<(Self, Vec<u8>)> {
        let Request::BitCompare {
            bits,
            coarse,
            points: k,
            trunc,
            square,
            products,
            ..
        } = *req
        else {
            unreachable!()
        };
        // C* = (r_h − 2^(64−s)·A_t)·B for each weight, before anything else
        // (an unknown weight fails the request)
        let c_star = match products {
            Some(p) => {
                let v: Vec<u64> = (0..m0.r.len())
                    .map(|i| {
                        let r_h = m0.r[i].wrapping_add(m1.r[i]) >> trunc;
                        let a_t = m0.a_t[i].wrapping_add(m1.a_t[i]);
                        r_h.wrapping_sub(a_t << (64 - trunc))
                    })
                    .collect();
                masks.value_products(&p, &v)?
            }
            None => Vec::new(),
        };
        let r = ring::add(&m0.r, &m1.r);
        let alphas: Vec<u64> = r
            .iter()
            .take(bit_keys(r.len(), k))
            .map(|r| (r & low_mask(bits - 1)) >> coarse)
            .collect();
        let keys = bit::generate_batch(bits - 1 - coarse, &alphas, &m0.roots, &m1.roots);
        let rho: Vec<u64> = (0..r.len() * k)
            .map(|p| u64::from(m0.sigma[p] ^ m1.sigma[p]) ^ ((r[p / k] >> (bits - 1)) & 1))
            .collect();
        // the mask of the value the products see: r, or r_h when truncated
        let (base, msb) = high_and_msb(&r, trunc);
        let per_point = |v: &[u64]| -> Vec<u64> {
            (0..rho.len())
                .map(|p| rho[p].wrapping_mul(v[p / k]))
                .collect()
        };
        // the square's mask r₂, truncated by q in the bits' round
        let q = square_shift(square);
        let r2 = ring::add(&m0.sq_r, &m1.sq_r);
        let (sq_high, sq_msb) = high_and_msb(&r2, q);
        let full = BitCompare {
            rho_r: need(&m0.rho_r, || per_point(&base)),
            r_sq: need(&m0.r_sq, || {
                let squares = ring::mul(&base, &base);
                match square {
                    Squares::RowSums(cols) => ring::row_sums(&squares, squares.len() / cols, cols),
                    _ => squares,
                }
            }),
            r_high: need(&m0.r_high, || base.clone()),
            r_msb: need(&m0.r_msb, || msb.clone()),
            rho_msb: need(&m0.rho_msb, || per_point(&msb)),
            high_msb: need(&m0.high_msb, || ring::mul(&base, &msb)),
            c_star,
            rho_sq_high: need(&m0.rho_sq_high, || per_point(&sq_high)),
            rho_sq_msb: need(&m0.rho_sq_msb, || per_point(&sq_msb)),
            sq_high,
            sq_msb,
            rho,
            ..BitCompare::empty()
        };
        Ok((full, keys.as_bytes().to_vec()))
    }
}

kind! {
    /// See [`Request::CompareProducts`]. `msb_bits(r)`, `Y₁` and
    /// `msb_bits(r)·Y₁` travel in 64 bits; `Y₂ = msb(R)` and
    /// `msb_bits(r)·Y₂` only with a truncation, modulo `2^trunc`.
    CompareProducts(req) {
        let Request::CompareProducts { n, bits, coarse, trunc, ref stops } = *req
        else { unreachable!() };
        let t = on(trunc > 0, n);
    }
    {
        /// Share of the 64-bit mask `R`.
        r: Vec<u64> = drawn(n),
        /// Share of `msb_bits(R mod 2^bits)`.
        r_msb: Vec<u64> = corrected(n, 64),
        /// Share of `R >> trunc` (empty without `trunc`).
        high: Vec<u64> = corrected(t, 64),
        /// Share of `msb(R)` (empty without `trunc`).
        top: Vec<u64> = corrected(t, trunc),
        /// Share of `msb_bits(r)·Y₁`.
        msb_high: Vec<u64> = corrected(n, 64),
        /// Share of `msb_bits(r)·msb(R)` (empty without `trunc`).
        msb_top: Vec<u64> = corrected(t, trunc),
        /// This party's DCF root seeds (`w` words of payload per element).
        roots: Vec<Block> = roots(n),
    }
    keys DcfKeys = KeyShape::Dcf {
        depth: bits - 1 - coarse,
        width: product_keys(trunc),
        stops: stops.clone(),
        count: n,
    };
}

impl CompareProducts {
    fn derive_full(_: &mut Masks, req: &Request, m0: &Self, m1: &Self) -> Result<(Self, Vec<u8>)> {
        let Request::CompareProducts {
            bits,
            coarse,
            trunc,
            ref stops,
            ..
        } = *req
        else {
            unreachable!()
        };
        let w = product_keys(trunc);
        let r = ring::add(&m0.r, &m1.r);
        let mut alphas = Vec::with_capacity(r.len());
        let mut betas = Vec::with_capacity(w * r.len());
        let (mut msb, mut high, mut top) = (Vec::new(), Vec::new(), Vec::new());
        for &full in &r {
            let low = full & low_mask(bits);
            let m = (low >> (bits - 1)) & 1;
            let beta = 1u64.wrapping_sub(2 * m);
            let y1 = if trunc > 0 { full >> trunc } else { full };
            let y2 = full >> 63;
            let alpha = (low & low_mask(bits - 1)) >> coarse;
            alphas.push(alpha);
            for y in [1, y1, y2].into_iter().take(w) {
                betas.push(beta.wrapping_mul(y));
            }
            msb.push(m);
            high.push(y1);
            top.push(y2);
        }
        let keys = dcf::generate_batch_stopping(
            bits - 1 - coarse,
            w,
            stops,
            &alphas,
            &betas,
            &m0.roots,
            &m1.roots,
        );
        let full = CompareProducts {
            msb_high: ring::mul(&msb, &high),
            msb_top: ring::mul(&msb, &top),
            r_msb: msb,
            high,
            top,
            ..CompareProducts::empty()
        };
        Ok((full, keys.into_bytes()))
    }
}

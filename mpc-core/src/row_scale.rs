//! Row scalings: each row of a matrix times one entry of a vector, with
//! either input's truncation fused into the product's opening.

use crate::arith::{TRUNC_OFFSET, beaver_term, opened_high, opened_wrap};
use crate::channel;
use crate::ctx::{Ctx, expect_triple};
use crate::dealer::kinds::{PendingRowScale, TruncRowScale};
use crate::dealer::{Material, Request};
use crate::error::{MpcError, check_len};
use crate::fx::{Fx, Shape};
use crate::op::{Op, attempt};
use crate::ring;
use crate::share::Share;

impl Ctx<'_> {
    /// `x_ij·v_i`: each row `i` of the matrix `x` times the row factor `v_i`
    /// (`v` one value per row of `x`), each operand's pending truncation
    /// performed by the product's own opening. The product is returned at
    /// `frac min(x.frac, v.frac)` with the rest pending (the products'
    /// convention, [`crate::fx`]).
    ///
    /// Which opening runs is read from the operands' pending bits. Rounds 1
    /// (2 when only the matrix's is pending: [`Ctx::settle`] first); bytes
    /// `8(rows·cols + rows)` per party; dealer to party 1, by case:
    ///
    /// - nothing pending: a row-broadcast Beaver triple, `8·rows·cols` bytes.
    /// - the factor's truncation by `s` pending: folded into the opening of
    ///   `v + 2^62 + r`; `8` bytes and `s` bits per element and per row
    ///   (`r_h` and `A⊙r_h` in full, `msb(r)` and `A⊙msb(r)` modulo `2^s`).
    ///   The factor is `⌊v/2^s⌋` or one more.
    /// - both pending (`s_x`, `s_v`): both folded into one opening; 16 bytes
    ///   and `2·s_x + s_v` bits per element, 8 bytes and `s_v` bits per row
    ///   for `s_x + s_v ≤ 64` (23.25 and 11.25 bytes for the model's `s_x =
    ///   16`, `s_v = 26`).
    ///
    /// Exact to one ulp of each truncation while `|x̃|, |ṽ| < 2^62` and the
    /// product fits the ring.
    pub fn mul_rows(&mut self, x: &Fx, v: &Fx) -> Op<Fx> {
        let (rows, cols) = (x.rows(), x.cols());
        attempt!(check_len("mul_rows", "row scales", v.len(), rows));
        let (a, b) = (x.frac(), v.frac());
        let out = move |z: Share| Fx::product(z, Shape::new(rows, cols), a, b);
        let (xs, vs) = (x.share(), v.share());
        match (x.pending(), v.pending()) {
            (0, 0) => self.mul_rows_raw(xs, vs, rows, cols).map(out),
            (0, sv) => self.mul_rows_trunc_raw(xs, vs, rows, cols, sv).map(out),
            (_, 0) => {
                let v = v.clone();
                self.settle(x.clone()).then(move |c, x| c.mul_rows(&x, &v))
            }
            (_, _) => self
                .mul_rows_pending(xs, vs, rows, cols, x.pending(), v.pending())
                .map(out),
        }
    }

    /// Scale each row `i` of `x` (rows×cols) by the secret `v_i`, without truncation.
    ///
    /// Rounds 1; sends `8(rows·cols + rows)` bytes per party; dealer: a row-broadcast
    /// triple (`8·rows·cols` bytes to party 1).
    fn mul_rows_raw(&mut self, x: &Share, v: &Share, rows: usize, cols: usize) -> Op<Share> {
        let taken = check_len("mul_rows", "matrix", x.len(), rows * cols)
            .and_then(|()| check_len("mul_rows", "row scales", v.len(), rows))
            .and_then(|()| {
                expect_triple(
                    "mul_rows",
                    self.take("mul_rows", Request::RowScale { rows, cols })?,
                )
            });
        let (a, b, c) = attempt!(taken);
        let mut msg = ring::sub(x.as_slice(), &a);
        msg.extend(ring::sub(v.as_slice(), &b));
        let p0 = self.is_p0();
        let bytes = channel::pack(&msg, 64);
        Op::exchange("mul_rows", bytes, move |_, peer| {
            let other = channel::unpack(peer, msg.len(), 64);
            let ef = ring::add(&msg, &other);
            let (e, f) = ef.split_at(rows * cols);
            let mut z = c;
            for i in 0..rows {
                for j in 0..cols {
                    let idx = i * cols + j;
                    z[idx] = z[idx].wrapping_add(beaver_term(p0, e[idx], f[i], a[idx], b[i]));
                }
            }
            Op::ready(Share::new(z))
        })
    }

    /// Scale each row `i` of `x` (rows×cols) by `⌊v_i / 2^shift⌋` (possibly
    /// plus one), without truncating the product: the vector's truncation
    /// rides on the product's opening instead of taking a round of its own.
    ///
    /// Method: party 0 adds 2^62 to `v` (so `v' ∈ [0, 2^63)` for `|v| <
    /// 2^62`); the parties open `E = x − A` and `m = v' + r` (r a uniform
    /// 64-bit mask). With `r_h = r >> shift`, the wrap of `v' + r` is
    /// `msb(r)·(1 − msb(m))` (v' has a zero top bit), so
    /// `t = (m >> shift) − 2^(62−shift) − r_h + 2^(64−shift)·(1 − msb(m))·msb(r)`
    /// is linear in dealer-shared values, and `x·t = (E + A)·t` is local from
    /// shares of `r_h`, `msb(r)`, `A⊙r_h` and `A⊙msb(r)` (row-broadcast).
    ///
    /// Rounds 1; sends `8(rows·cols + rows)` bytes per party (as
    /// [`Ctx::mul_rows_raw`]); dealer to party 1: `8` bytes and `s` bits
    /// per element and per row (`r_h` and `A⊙r_h` in full; `msb(r)` and
    /// `A⊙msb(r)` only modulo `2^s`, since they meet nothing but the wrap
    /// coefficient `2^(64−s)`: [`crate::Request`]'s narrowed corrections).
    /// A row-broadcast triple and a truncation would cost as much and a
    /// round more. Accuracy: `t` is the true
    /// `⌊v/2^shift⌋` or one more (the dropped borrow of the low bits);
    /// domain `|v| < 2^62`.
    fn mul_rows_trunc_raw(
        &mut self,
        x: &Share,
        v: &Share,
        rows: usize,
        cols: usize,
        shift: u32,
    ) -> Op<Share> {
        assert!((1..63).contains(&shift), "mul_rows_trunc: shift {shift}");
        attempt!(check_len("mul_rows", "matrix", x.len(), rows * cols));
        attempt!(check_len("mul_rows", "row scales", v.len(), rows));
        let req = Request::TruncRowScale { rows, cols, shift };
        let (a, r, r_high, r_msb, a_high, a_msb) = match attempt!(self.take("mul_rows", req)) {
            Material::TruncRowScale(TruncRowScale {
                a,
                r,
                r_high,
                r_msb,
                a_high,
                a_msb,
            }) => (a, r, r_high, r_msb, a_high, a_msb),
            other => {
                return Op::fail(MpcError::OutOfStep {
                    op: "mul_rows",
                    needed: "trunc-rowscale".into(),
                    found: format!("{other:?}"),
                });
            }
        };
        let p0 = self.is_p0();
        let mut msg = ring::sub(x.as_slice(), &a);
        msg.extend(v.as_slice().iter().zip(&r).map(|(v, r)| {
            let v = if p0 { v.wrapping_add(TRUNC_OFFSET) } else { *v };
            v.wrapping_add(*r)
        }));
        let bytes = channel::pack(&msg, 64);
        Op::exchange("mul_rows", bytes, move |_, peer| {
            let other = channel::unpack(peer, msg.len(), 64);
            let em = ring::add(&msg, &other);
            let (e, m) = em.split_at(rows * cols);
            let mut z = Vec::with_capacity(rows * cols);
            for i in 0..rows {
                let public = opened_high(m[i], shift);
                let wrap = opened_wrap(m[i], shift);
                // this party's share of t_i
                let mut t = wrap.wrapping_mul(r_msb[i]).wrapping_sub(r_high[i]);
                if p0 {
                    t = t.wrapping_add(public);
                }
                for j in 0..cols {
                    let idx = i * cols + j;
                    // E·t + A·t with A·t = A·public − A⊙r_h + 2^(64−s)(1 − msb m)·A⊙msb(r)
                    let at = a[idx]
                        .wrapping_mul(public)
                        .wrapping_sub(a_high[idx])
                        .wrapping_add(wrap.wrapping_mul(a_msb[idx]));
                    z.push(e[idx].wrapping_mul(t).wrapping_add(at));
                }
            }
            Op::ready(Share::new(z))
        })
    }

    /// [`Ctx::mul_rows`] for a matrix `x` (rows×cols) and row factors `v` (rows)
    /// that both carry a pending truncation (by `sx`, `sv`), performed by the product's own
    /// opening; returned untruncated (at the sum of the two truncated
    /// scales).
    ///
    /// Method: open `x + 2^62 + A` and `v + 2^62 + r` (64-bit masks), so
    /// `x' = P_x − a_h + w_x·a_m` and `v' = P_v − r_h + w_v·r_m` with `P`,
    /// `w` public (`opened_high`, `opened_wrap`) and `a_h = A >> s_x`,
    /// `a_m = msb(A)`, `r_h`, `r_m` likewise; the product's mask terms
    /// `a_h·r_h`, `a_h·r_m`, `a_m·r_h`, `a_m·r_m` come from the dealer, so
    /// `x'·v'` is local after the opening.
    ///
    /// Rounds 1; bytes `8(rows·cols + rows)` per party; dealer to party 1
    /// (`Request::PendingRowScale`): per element `a_h`, `a_h·r_h` in full,
    /// `a_m`, `a_m·r_h` modulo `2^s_x`, `a_h·r_m` modulo `2^s_v` and `a_m·r_m`
    /// modulo `2^(s_x+s_v−64)` (nothing for `s_x + s_v ≤ 64`), per row
    /// `r_h` in full and `r_m` modulo `2^s_v`, each packed to its bits: 16
    /// bytes and `2·s_x + s_v` bits per element, 8 bytes and `s_v` bits per
    /// row for `s_x + s_v ≤ 64` (23.25 and 11.25 bytes for the model's `s_x
    /// = 16`, `s_v = 26`; 48 and 16 in full). Exact to one ulp of each
    /// truncation while `|x|, |v| < 2^62` and the product fits.
    fn mul_rows_pending(
        &mut self,
        x: &Share,
        v: &Share,
        rows: usize,
        cols: usize,
        sx: u32,
        sv: u32,
    ) -> Op<Share> {
        assert!((1..63).contains(&sv), "mul_rows_pending: vector shift {sv}");
        assert!((1..63).contains(&sx), "mul_rows_pending: matrix shift {sx}");
        attempt!(check_len("mul_rows", "matrix", x.len(), rows * cols));
        attempt!(check_len("mul_rows", "row scales", v.len(), rows));
        let req = Request::PendingRowScale {
            rows,
            cols,
            x_shift: sx,
            v_shift: sv,
        };
        let Material::PendingRowScale(PendingRowScale {
            a,
            r,
            a_high,
            a_msb,
            r_high,
            r_msb,
            high_high: hh,
            high_msb: hm,
            msb_high: mh,
            msb_msb: mm,
        }) = attempt!(self.take("mul_rows", req))
        else {
            return Op::fail(MpcError::OutOfStep {
                op: "mul_rows",
                needed: "pending-rowscale".into(),
                found: "another kind".into(),
            });
        };
        let p0 = self.is_p0();
        let off = if p0 { TRUNC_OFFSET } else { 0 };
        let masked = |x: &[u64], m: &[u64]| -> Vec<u64> {
            x.iter()
                .zip(m)
                .map(|(x, m)| x.wrapping_add(off).wrapping_add(*m))
                .collect()
        };
        let mut msg = masked(x.as_slice(), &a);
        msg.extend(masked(v.as_slice(), &r));
        Op::exchange("mul_rows", channel::pack(&msg, 64), move |_, peer| {
            let other = channel::unpack(peer, msg.len(), 64);
            let opened = ring::add(&msg, &other);
            let (mx, mv) = opened.split_at(rows * cols);
            let mut z = Vec::with_capacity(rows * cols);
            for i in 0..rows {
                let (pv, wv) = (opened_high(mv[i], sv), opened_wrap(mv[i], sv));
                // this party's share of v' = P_v − r_h + w_v·r_m
                let mut vt = wv.wrapping_mul(r_msb[i]).wrapping_sub(r_high[i]);
                if p0 {
                    vt = vt.wrapping_add(pv);
                }
                for j in 0..cols {
                    let idx = i * cols + j;
                    let (px, wx) = (opened_high(mx[idx], sx), opened_wrap(mx[idx], sx));
                    // x'·v' = P_x·v' + (w_x·a_m − a_h)·(P_v − r_h + w_v·r_m)
                    let t = px
                        .wrapping_mul(vt)
                        .wrapping_sub(pv.wrapping_mul(a_high[idx]))
                        .wrapping_add(wx.wrapping_mul(pv).wrapping_mul(a_msb[idx]))
                        .wrapping_add(hh[idx])
                        .wrapping_sub(wv.wrapping_mul(hm[idx]))
                        .wrapping_sub(wx.wrapping_mul(mh[idx]))
                        .wrapping_add(wx.wrapping_mul(wv).wrapping_mul(mm[idx]));
                    z.push(t);
                }
            }
            Op::ready(Share::new(z))
        })
    }
}

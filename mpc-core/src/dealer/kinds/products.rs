//! The kinds of products of masks: triples of every shape, weight masks,
//! row scalings with truncated inputs, and the wrap bits of a truncation.

use crate::dealer::masks::Masks;
use crate::dealer::parts::{Kind, corrected, drawn, drawn_bits, high_and_msb};
use crate::dealer::request::{Request, ValueProducts};
use crate::error::Result;
use crate::ring;

/// The lengths of a [`Triple`]'s `a`, `b` and `c` for `req`.
fn triple_lens(req: &Request) -> (usize, usize, usize) {
    match *req {
        Request::Triple { n } => (n, n, n),
        Request::Square { n } => (n, 0, n),
        Request::Dot { n, terms } => (n * terms, n * terms, n),
        Request::MatMul { m, k, n } => (m * k, k * n, m * n),
        Request::RowScale { rows, cols } => (rows * cols, rows, rows * cols),
        Request::WeightMatMul { m, k, n, .. } => (m * k, 0, m * n),
        Request::NormProducts {
            id,
            next,
            rows,
            cols,
            square,
        } => (
            rows * cols,
            0,
            rows * cols * (id.is_some() as usize + square as usize)
                + next.map_or(0, |(_, out)| rows * out),
        ),
        _ => unreachable!("{} is not a product of masks", req.kind()),
    }
}

kind! {
    /// Masks and their product: [`Request::Triple`], [`Request::Dot`],
    /// [`Request::Square`] (`b` empty), [`Request::MatMul`],
    /// [`Request::RowScale`], [`Request::WeightMatMul`] and
    /// [`Request::NormProducts`] (`b` empty: the weights' masks are the
    /// dealer's).
    Triple(req) { let (la, lb, lc) = triple_lens(req); }
    {
        /// Share of `a`.
        a: Vec<u64> = drawn(la),
        /// Share of `b`.
        b: Vec<u64> = drawn(lb),
        /// Share of `c`.
        c: Vec<u64> = corrected(lc, 64),
    }
}

impl Triple {
    fn derive_full(
        masks: &mut Masks,
        req: &Request,
        m0: &Self,
        m1: &Self,
    ) -> Result<(Self, Vec<u8>)> {
        let a = ring::add(&m0.a, &m1.a);
        let c = match *req {
            Request::Triple { n } | Request::Dot { n, .. } => {
                // the terms' products summed per element (a triple is one term)
                let prods = ring::mul(&a, &ring::add(&m0.b, &m1.b));
                let mut terms = prods.chunks(n.max(1));
                let mut sum = terms.next().map(<[u64]>::to_vec).unwrap_or_default();
                for term in terms {
                    sum = ring::add(&sum, term);
                }
                sum
            }
            Request::Square { .. } => ring::mul(&a, &a),
            Request::MatMul { m, k, n } => ring::matmul(&a, &ring::add(&m0.b, &m1.b), m, k, n),
            Request::RowScale { cols, .. } => {
                ring::mul(&a, &ring::repeat_rows(&ring::add(&m0.b, &m1.b), cols))
            }
            Request::WeightMatMul { id, m, k, n } => {
                ring::matmul(&a, masks.mask(id, k, n)?, m, k, n)
            }
            Request::NormProducts {
                id,
                next,
                rows,
                cols,
                square,
            } => {
                let mut full = if square {
                    ring::mul(&a, &a)
                } else {
                    Vec::new()
                };
                let products = ValueProducts {
                    cols,
                    scale: id,
                    next,
                };
                debug_assert_eq!(a.len(), rows * cols);
                full.extend(masks.value_products(&products, &a)?);
                full
            }
            _ => unreachable!("{} is not a product of masks", req.kind()),
        };
        Ok((
            Triple {
                c,
                ..Triple::empty()
            },
            Vec::new(),
        ))
    }
}

kind! {
    /// See [`Request::WeightMask`].
    WeightMask(req) { let Request::WeightMask { k, n, .. } = *req else { unreachable!() }; }
    {
        /// Share of the mask `B`.
        b: Vec<u64> = drawn(k * n),
    }
}

impl WeightMask {
    fn derive_full(
        masks: &mut Masks,
        req: &Request,
        m0: &Self,
        m1: &Self,
    ) -> Result<(Self, Vec<u8>)> {
        let Request::WeightMask { id, k, n } = *req else {
            unreachable!()
        };
        masks.insert(id, k, n, ring::add(&m0.b, &m1.b));
        Ok((WeightMask::empty(), Vec::new()))
    }
}

/// The full masks of a row-scaled product: the matrix mask `A` and the vector mask `r`
/// summed from both parties' shares, `r`'s high part `r >> shift` and its `msb`, and those
/// two repeated over each row's `cols` columns (`rh`, `rm`).
struct RowMasks {
    a: Vec<u64>,
    r_high: Vec<u64>,
    r_msb: Vec<u64>,
    rh: Vec<u64>,
    rm: Vec<u64>,
}

impl RowMasks {
    fn sum(a: [&[u64]; 2], r: [&[u64]; 2], shift: u32, cols: usize) -> Self {
        let (r_high, r_msb) = high_and_msb(&ring::add(r[0], r[1]), shift);
        RowMasks {
            a: ring::add(a[0], a[1]),
            rh: ring::repeat_rows(&r_high, cols),
            rm: ring::repeat_rows(&r_msb, cols),
            r_high,
            r_msb,
        }
    }
}

kind! {
    /// See [`Request::TruncRowScale`].
    TruncRowScale(req) {
        let Request::TruncRowScale { rows, cols, shift } = *req else { unreachable!() };
    }
    {
        /// Share of the matrix mask `A`.
        a: Vec<u64> = drawn(rows * cols),
        /// Share of the vector mask `r`.
        r: Vec<u64> = drawn(rows),
        /// Share of `r >> shift`.
        r_high: Vec<u64> = corrected(rows, 64),
        /// Share of `msb(r)` (modulo `2^shift`).
        r_msb: Vec<u64> = corrected(rows, shift),
        /// Share of `A_ij·(r >> shift)_i`.
        a_high: Vec<u64> = corrected(rows * cols, 64),
        /// Share of `A_ij·msb(r)_i` (modulo `2^shift`).
        a_msb: Vec<u64> = corrected(rows * cols, shift),
    }
}

impl TruncRowScale {
    fn derive_full(_: &mut Masks, req: &Request, m0: &Self, m1: &Self) -> Result<(Self, Vec<u8>)> {
        let Request::TruncRowScale { cols, shift, .. } = *req else {
            unreachable!()
        };
        let m = RowMasks::sum([&m0.a, &m1.a], [&m0.r, &m1.r], shift, cols);
        let full = TruncRowScale {
            a_high: ring::mul(&m.a, &m.rh),
            a_msb: ring::mul(&m.a, &m.rm),
            r_high: m.r_high,
            r_msb: m.r_msb,
            ..TruncRowScale::empty()
        };
        Ok((full, Vec::new()))
    }
}

kind! {
    /// See [`Request::PendingRowScale`]; products are rows×cols.
    PendingRowScale(req) {
        let Request::PendingRowScale { rows, cols, x_shift, v_shift } = *req else { unreachable!() };
        let e = rows * cols;
    }
    {
        /// Share of the matrix mask `A`.
        a: Vec<u64> = drawn(e),
        /// Share of the vector mask `r`.
        r: Vec<u64> = drawn(rows),
        /// Share of `a_h = A >> x_shift`.
        a_high: Vec<u64> = corrected(e, 64),
        /// Share of `a_m = msb(A)` (modulo `2^x_shift`).
        a_msb: Vec<u64> = corrected(e, x_shift),
        /// Share of `r_h = r >> v_shift`.
        r_high: Vec<u64> = corrected(rows, 64),
        /// Share of `r_m = msb(r)` (modulo `2^v_shift`).
        r_msb: Vec<u64> = corrected(rows, v_shift),
        /// Share of `a_h·r_h`.
        high_high: Vec<u64> = corrected(e, 64),
        /// Share of `a_h·r_m` (modulo `2^v_shift`).
        high_msb: Vec<u64> = corrected(e, v_shift),
        /// Share of `a_m·r_h` (modulo `2^x_shift`).
        msb_high: Vec<u64> = corrected(e, x_shift),
        /// Share of `a_m·r_m`, used times `2^(128 − x_shift − v_shift)`:
        /// nothing travels for `x_shift + v_shift ≤ 64`.
        msb_msb: Vec<u64> = corrected(e, (x_shift + v_shift).saturating_sub(64)),
    }
}

impl PendingRowScale {
    fn derive_full(_: &mut Masks, req: &Request, m0: &Self, m1: &Self) -> Result<(Self, Vec<u8>)> {
        let Request::PendingRowScale {
            cols,
            x_shift,
            v_shift,
            ..
        } = *req
        else {
            unreachable!()
        };
        let RowMasks {
            a,
            r_high,
            r_msb,
            rh,
            rm,
        } = RowMasks::sum([&m0.a, &m1.a], [&m0.r, &m1.r], v_shift, cols);
        let (a_high, a_msb) = high_and_msb(&a, x_shift);
        let full = PendingRowScale {
            high_high: ring::mul(&a_high, &rh),
            high_msb: ring::mul(&a_high, &rm),
            msb_high: ring::mul(&a_msb, &rh),
            msb_msb: ring::mul(&a_msb, &rm),
            a_high,
            a_msb,
            r_high,
            r_msb,
            ..PendingRowScale::empty()
        };
        Ok((full, Vec::new()))
    }
}

kind! {
    /// See [`Request::Wrap`].
    Wrap(req) { let Request::Wrap { n, shift } = *req else { unreachable!() }; }
    {
        /// This party's own random bits (`a` for party 0, `b` for party 1).
        bits: Vec<u8> = drawn_bits(n),
        /// Share of `a·b` (modulo `2^shift`).
        c: Vec<u64> = corrected(n, shift),
    }
}

impl Wrap {
    fn derive_full(_: &mut Masks, _: &Request, m0: &Self, m1: &Self) -> Result<(Self, Vec<u8>)> {
        let c = m0
            .bits
            .iter()
            .zip(&m1.bits)
            .map(|(x, y)| (x & y) as u64)
            .collect();
        Ok((Wrap { c, ..Wrap::empty() }, Vec::new()))
    }
}

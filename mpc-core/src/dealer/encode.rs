//! The canonical encoding of a [`Request`]: what the parties and the dealer
//! hash to agree on a plan.

use crate::dealer::request::{Request, Squares};

impl Request {
    /// Append this request's canonical encoding to `out`: what two parties
    /// compare (through a digest) to agree on a plan, independent of any
    /// formatting. One tag byte per variant (`Triple` 0, `Dot` 1, `Square`
    /// 2, `MatMul` 3, `RowScale` 4, `TruncRowScale` 5, `PendingRowScale` 6,
    /// `WeightMask` 7, `WeightMatMul` 8, `NormProducts` 9, `Wrap` 10,
    /// `Compare` 11, `BitCompare` 12, `CompareProducts` 13), then each field
    /// in declaration order: a `usize` as 8 bytes and a `u32` as 4 bytes,
    /// little-endian; a `bool` as one byte 0/1; an `Option` as one byte 0
    /// (none) or 1 followed by its value; a pair as its two values; a list
    /// as its length (8 bytes) followed by its items; [`Squares`] as a tag
    /// byte (`No` 0, `Each` 1, `RowSums` 2, `EachTruncated` 3) followed by
    /// its value; [`ValueProducts`](crate::dealer::ValueProducts) as its fields in declaration order. Every
    /// field has a fixed width or a length prefix, so the encoding of a plan
    /// (the requests one after another) is unambiguous.
    pub fn encode_canonical(&self, out: &mut Vec<u8>) {
        let size = |out: &mut Vec<u8>, v: usize| out.extend((v as u64).to_le_bytes());
        let word = |out: &mut Vec<u8>, v: u32| out.extend(v.to_le_bytes());
        let flag = |out: &mut Vec<u8>, v: bool| out.push(u8::from(v));
        let weight = |out: &mut Vec<u8>, v: Option<u32>| {
            flag(out, v.is_some());
            if let Some(id) = v {
                word(out, id);
            }
        };
        let next = |out: &mut Vec<u8>, v: Option<(u32, usize)>| {
            flag(out, v.is_some());
            if let Some((id, width)) = v {
                word(out, id);
                size(out, width);
            }
        };
        match *self {
            Request::Triple { n } => {
                out.push(0);
                size(out, n);
            }
            Request::Dot { n, terms } => {
                out.push(1);
                size(out, n);
                size(out, terms);
            }
            Request::Square { n } => {
                out.push(2);
                size(out, n);
            }
            Request::MatMul { m, k, n } => {
                out.push(3);
                size(out, m);
                size(out, k);
                size(out, n);
            }
            Request::RowScale { rows, cols } => {
                out.push(4);
                size(out, rows);
                size(out, cols);
            }
            Request::TruncRowScale { rows, cols, shift } => {
                out.push(5);
                size(out, rows);
                size(out, cols);
                word(out, shift);
            }
            Request::PendingRowScale {
                rows,
                cols,
                x_shift,
                v_shift,
            } => {
                out.push(6);
                size(out, rows);
                size(out, cols);
                word(out, x_shift);
                word(out, v_shift);
            }
            Request::WeightMask { id, k, n } => {
                out.push(7);
                word(out, id);
                size(out, k);
                size(out, n);
            }
            Request::WeightMatMul { id, m, k, n } => {
                out.push(8);
                word(out, id);
                size(out, m);
                size(out, k);
                size(out, n);
            }
            Request::NormProducts {
                id,
                next: products,
                square,
                rows,
                cols,
            } => {
                out.push(9);
                weight(out, id);
                next(out, products);
                flag(out, square);
                size(out, rows);
                size(out, cols);
            }
            Request::Wrap { n, shift } => {
                out.push(10);
                size(out, n);
                word(out, shift);
            }
            Request::Compare { n, bits, coarse } => {
                out.push(11);
                size(out, n);
                word(out, bits);
                word(out, coarse);
            }
            Request::BitCompare {
                n,
                bits,
                coarse,
                points,
                select,
                square,
                trunc,
                products,
            } => {
                out.push(12);
                size(out, n);
                word(out, bits);
                word(out, coarse);
                size(out, points);
                flag(out, select);
                match square {
                    Squares::No => out.push(0),
                    Squares::Each => out.push(1),
                    Squares::RowSums(cols) => {
                        out.push(2);
                        size(out, cols);
                    }
                    Squares::EachTruncated(q) => {
                        out.push(3);
                        word(out, q);
                    }
                }
                word(out, trunc);
                flag(out, products.is_some());
                if let Some(p) = products {
                    size(out, p.cols);
                    weight(out, p.scale);
                    next(out, p.next);
                }
            }
            Request::CompareProducts {
                n,
                bits,
                coarse,
                trunc,
                ref stops,
            } => {
                out.push(13);
                size(out, n);
                word(out, bits);
                word(out, coarse);
                word(out, trunc);
                size(out, stops.len());
                for &s in stops {
                    word(out, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dealer::request::ValueProducts;

    fn encoded(r: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode_canonical(&mut out);
        out
    }

    /// Each request of every kind, and the same request with one field
    /// changed (every field in turn).
    fn variations() -> Vec<(Request, Vec<Request>)> {
        let products = ValueProducts {
            cols: 4,
            scale: Some(2),
            next: Some((3, 5)),
        };
        let bit = |square, products| Request::BitCompare {
            n: 8,
            bits: 40,
            coarse: 2,
            points: 2,
            select: true,
            square,
            trunc: 12,
            products,
        };
        let norm = |id, next, square, rows, cols| Request::NormProducts {
            id,
            next,
            square,
            rows,
            cols,
        };
        let cp = |n, bits, coarse, trunc, stops| Request::CompareProducts {
            n,
            bits,
            coarse,
            trunc,
            stops,
        };
        let pending = |rows, cols, x_shift, v_shift| Request::PendingRowScale {
            rows,
            cols,
            x_shift,
            v_shift,
        };
        vec![
            (Request::Triple { n: 3 }, vec![Request::Triple { n: 4 }]),
            (
                Request::Dot { n: 3, terms: 2 },
                vec![
                    Request::Dot { n: 4, terms: 2 },
                    Request::Dot { n: 3, terms: 3 },
                ],
            ),
            (Request::Square { n: 3 }, vec![Request::Square { n: 4 }]),
            (
                Request::MatMul { m: 1, k: 2, n: 3 },
                vec![
                    Request::MatMul { m: 2, k: 2, n: 3 },
                    Request::MatMul { m: 1, k: 3, n: 3 },
                    Request::MatMul { m: 1, k: 2, n: 4 },
                ],
            ),
            (
                Request::RowScale { rows: 2, cols: 3 },
                vec![
                    Request::RowScale { rows: 3, cols: 3 },
                    Request::RowScale { rows: 2, cols: 4 },
                ],
            ),
            (
                Request::TruncRowScale {
                    rows: 2,
                    cols: 3,
                    shift: 12,
                },
                vec![
                    Request::TruncRowScale {
                        rows: 3,
                        cols: 3,
                        shift: 12,
                    },
                    Request::TruncRowScale {
                        rows: 2,
                        cols: 4,
                        shift: 12,
                    },
                    Request::TruncRowScale {
                        rows: 2,
                        cols: 3,
                        shift: 13,
                    },
                ],
            ),
            (
                pending(2, 3, 12, 14),
                vec![
                    pending(3, 3, 12, 14),
                    pending(2, 4, 12, 14),
                    pending(2, 3, 13, 14),
                    pending(2, 3, 12, 15),
                ],
            ),
            (
                Request::WeightMask { id: 1, k: 2, n: 3 },
                vec![
                    Request::WeightMask { id: 2, k: 2, n: 3 },
                    Request::WeightMask { id: 1, k: 3, n: 3 },
                    Request::WeightMask { id: 1, k: 2, n: 4 },
                ],
            ),
            (
                Request::WeightMatMul {
                    id: 1,
                    m: 1,
                    k: 2,
                    n: 3,
                },
                vec![
                    Request::WeightMatMul {
                        id: 2,
                        m: 1,
                        k: 2,
                        n: 3,
                    },
                    Request::WeightMatMul {
                        id: 1,
                        m: 2,
                        k: 2,
                        n: 3,
                    },
                    Request::WeightMatMul {
                        id: 1,
                        m: 1,
                        k: 3,
                        n: 3,
                    },
                    Request::WeightMatMul {
                        id: 1,
                        m: 1,
                        k: 2,
                        n: 4,
                    },
                ],
            ),
            (
                norm(Some(1), Some((2, 3)), true, 4, 5),
                vec![
                    norm(None, Some((2, 3)), true, 4, 5),
                    norm(Some(0), Some((2, 3)), true, 4, 5),
                    norm(Some(1), None, true, 4, 5),
                    norm(Some(1), Some((1, 3)), true, 4, 5),
                    norm(Some(1), Some((2, 4)), true, 4, 5),
                    norm(Some(1), Some((2, 3)), false, 4, 5),
                    norm(Some(1), Some((2, 3)), true, 5, 5),
                    norm(Some(1), Some((2, 3)), true, 4, 6),
                ],
            ),
            (
                Request::Wrap { n: 3, shift: 12 },
                vec![
                    Request::Wrap { n: 4, shift: 12 },
                    Request::Wrap { n: 3, shift: 13 },
                ],
            ),
            (
                Request::Compare {
                    n: 3,
                    bits: 40,
                    coarse: 2,
                },
                vec![
                    Request::Compare {
                        n: 4,
                        bits: 40,
                        coarse: 2,
                    },
                    Request::Compare {
                        n: 3,
                        bits: 41,
                        coarse: 2,
                    },
                    Request::Compare {
                        n: 3,
                        bits: 40,
                        coarse: 3,
                    },
                ],
            ),
            (bit(Squares::RowSums(4), Some(products)), {
                let mut v = Vec::new();
                let base = bit(Squares::RowSums(4), Some(products));
                let Request::BitCompare {
                    n,
                    bits,
                    coarse,
                    points,
                    select,
                    square,
                    trunc,
                    products: p,
                } = base
                else {
                    unreachable!()
                };
                let make = |n, bits, coarse, points, select, square, trunc, products| {
                    Request::BitCompare {
                        n,
                        bits,
                        coarse,
                        points,
                        select,
                        square,
                        trunc,
                        products,
                    }
                };
                v.push(make(n + 1, bits, coarse, points, select, square, trunc, p));
                v.push(make(n, bits + 1, coarse, points, select, square, trunc, p));
                v.push(make(n, bits, coarse + 1, points, select, square, trunc, p));
                v.push(make(n, bits, coarse, points + 1, select, square, trunc, p));
                v.push(make(n, bits, coarse, points, !select, square, trunc, p));
                for sq in [
                    Squares::No,
                    Squares::Each,
                    Squares::RowSums(5),
                    Squares::EachTruncated(4),
                ] {
                    v.push(make(n, bits, coarse, points, select, sq, trunc, p));
                }
                v.push(make(n, bits, coarse, points, select, square, trunc + 1, p));
                v.push(make(n, bits, coarse, points, select, square, trunc, None));
                for q in [
                    ValueProducts {
                        cols: 5,
                        ..products
                    },
                    ValueProducts {
                        scale: None,
                        ..products
                    },
                    ValueProducts {
                        scale: Some(7),
                        ..products
                    },
                    ValueProducts {
                        next: None,
                        ..products
                    },
                    ValueProducts {
                        next: Some((7, 5)),
                        ..products
                    },
                    ValueProducts {
                        next: Some((3, 6)),
                        ..products
                    },
                ] {
                    v.push(make(
                        n,
                        bits,
                        coarse,
                        points,
                        select,
                        square,
                        trunc,
                        Some(q),
                    ));
                }
                v
            }),
            (
                bit(Squares::EachTruncated(4), None),
                vec![bit(Squares::EachTruncated(5), None)],
            ),
            (
                cp(3, 40, 2, 12, vec![4, 9]),
                vec![
                    cp(4, 40, 2, 12, vec![4, 9]),
                    cp(3, 41, 2, 12, vec![4, 9]),
                    cp(3, 40, 3, 12, vec![4, 9]),
                    cp(3, 40, 2, 13, vec![4, 9]),
                    cp(3, 40, 2, 12, vec![4]),
                    cp(3, 40, 2, 12, vec![4, 10]),
                    cp(3, 40, 2, 12, vec![]),
                ],
            ),
        ]
    }

    #[test]
    fn requests_differing_in_one_field_encode_differently() {
        let all = variations();
        let mut seen = std::collections::HashSet::new();
        for (base, changed) in &all {
            for other in changed {
                assert_ne!(base, other);
                assert_ne!(encoded(base), encoded(other), "{base:?} and {other:?}");
            }
            for r in std::iter::once(base).chain(changed) {
                assert_eq!(encoded(r), encoded(&r.clone()), "deterministic");
                seen.insert(encoded(r));
            }
        }
        // distinct requests of all kinds: all distinct encodings
        let count: usize = all.iter().map(|(_, c)| 1 + c.len()).sum();
        assert_eq!(seen.len(), count);
    }

    #[test]
    fn the_encoding_is_fixed_width_little_endian_not_debug_text() {
        let r = Request::Wrap { n: 3, shift: 12 };
        let mut want = vec![10u8];
        want.extend(3u64.to_le_bytes());
        want.extend(12u32.to_le_bytes());
        assert_eq!(encoded(&r), want);
        assert_ne!(encoded(&r), format!("{r:?}").into_bytes());
        let s = Request::CompareProducts {
            n: 1,
            bits: 2,
            coarse: 0,
            trunc: 0,
            stops: vec![7],
        };
        let mut want = vec![13u8];
        want.extend(1u64.to_le_bytes());
        want.extend(2u32.to_le_bytes());
        want.extend(0u32.to_le_bytes());
        want.extend(0u32.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(7u32.to_le_bytes());
        assert_eq!(encoded(&s), want);
    }
}

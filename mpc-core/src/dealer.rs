//! Correlated randomness: what operators ask for, how the dealer makes it, and
//! how a party receives it.
//!
//! **Vocabulary.** Each operator asks for a [`Request`] (a kind and a shape);
//! the answer is a [`Material`] holding this party's half of the correlation.
//!
//! **Seed trick (CrypTen's TTP provider).** The dealer shares one ChaCha seed
//! with each party. Every random component is drawn from the owner's stream
//! by [`draw`], in the same order on the dealer and on the party, so it never
//! travels. Only what cannot be random is sent: party 1's half of each
//! product (`c₁ = a·b − c₀`, a *correction*) and the DCF correction words
//! (to both parties). Party 0 therefore receives nothing but its seed for
//! every arithmetic correlation, which halves dealer traffic.
//!
//! **Offline/online.** A program's requests depend only on public shapes, so
//! they are recorded once ([`Recorder`]) as a plan; the dealer answers the
//! plan ahead of time ([`Dealer::deal`]), each party expands the answers into
//! a [`Pool`] ([`MaterialGen::expand`]), and the online run takes from the
//! pool. An empty pool or an item of the wrong kind is a typed error
//! ([`MpcError::PoolExhausted`], [`MpcError::OutOfStep`]), never a fallback.

use crate::dcf::{self, Block, DcfKeys};
use crate::dcf_bit::{self, BitKeys};
use crate::error::{MpcError, Result};
use crate::prg::{Prg, Seed};
use crate::ring;
use crate::share::Party;
use std::collections::{HashMap, VecDeque};

/// One request for correlated randomness: a kind and a public shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// Elementwise Beaver triples: `a`, `b`, `c = a·b`, each `n` long.
    Triple {
        /// Elements.
        n: usize,
    },
    /// Dot-product triples: `a_t`, `b_t` (`terms` of them, `n` long each,
    /// term after term) and `c = Σ_t a_t·b_t` (`n` long): the masks of
    /// [`crate::Ctx::dot_raw`], one product share per element whatever
    /// the number of terms.
    Dot {
        /// Elements.
        n: usize,
        /// Products summed per element.
        terms: usize,
    },
    /// Square pairs: `a`, `c = a²`.
    Square {
        /// Elements.
        n: usize,
    },
    /// Matrix triple: `A` (m×k), `B` (k×n), `C = A·B`.
    MatMul {
        /// Rows of A.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of B.
        n: usize,
    },
    /// Row-broadcast triple: `A` (rows×cols), `b` (rows), `C_ij = A_ij·b_i`.
    RowScale {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// For a row scaling whose vector is truncated on the way in (see
    /// `Ctx::scale_rows`): `A` (rows×cols) masks the matrix, a 64-bit `r`
    /// (rows) masks the vector, and with `r_h = r >> shift`, `m_r = msb(r)`:
    /// shares of `r_h`, `m_r`, `A_ij·r_h,i` and `A_ij·m_r,i`.
    TruncRowScale {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// The vector's truncation (1..64).
        shift: u32,
    },
    /// For a row scaling whose matrix and vector are both truncated on the
    /// way in (see `Ctx::mul_rows_pending`): 64-bit masks `A` (rows×cols)
    /// and `r` (rows); with `a_h = A >> x_shift`, `a_m = msb(A)`, `r_h = r >>
    /// v_shift`, `r_m = msb(r)`: shares of `a_h`, `a_m`, `r_h`, `r_m` and of
    /// the four products `a_h·r_h`, `a_h·r_m`, `a_m·r_h`, `a_m·r_m`
    /// (row-broadcast).
    PendingRowScale {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// The matrix's truncation (1..64).
        x_shift: u32,
        /// The vector's truncation (1..64).
        v_shift: u32,
    },
    /// The mask `B` (k×n) of a fixed weight, drawn once per model load.
    WeightMask {
        /// The weight's identifier, unique within a model.
        id: u32,
        /// Rows of the weight.
        k: usize,
        /// Columns of the weight.
        n: usize,
    },
    /// A fresh `A` (m×k) and `C = A·B` for a weight masked earlier by [`Request::WeightMask`].
    WeightMatMul {
        /// The weight's identifier.
        id: u32,
        /// Rows of the activation.
        m: usize,
        /// Rows of the weight.
        k: usize,
        /// Columns of the weight.
        n: usize,
    },
    /// For LayerNorm: one mask `A` (rows×cols) serving several products of
    /// the same opened `X − A`: with `square`, `C_sq = A ⊙ A`; when `id` names a masked
    /// 1×cols weight `B` (the LayerNorm scale), `C_w = A ⊙ B` broadcast over
    /// rows; when `next` names a masked cols×out weight `W`, `C_next = A·W`.
    NormProducts {
        /// The masked scale vector, if any.
        id: Option<u32>,
        /// A masked cols×out weight `W` and its width: adds `C_next = A·W`.
        next: Option<(u32, usize)>,
        /// Add `C_sq = A ⊙ A` (the square of `X`).
        square: bool,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// For truncation by `shift`: party 0 holds random bits `a`, party 1
    /// bits `b`, both hold shares of `a·b` modulo `2^shift` (the product is
    /// only used times `2^(64−shift)`).
    Wrap {
        /// Elements.
        n: usize,
        /// The truncation (1..64).
        shift: u32,
    },
    /// For comparison on `bits`-bit inputs: a mask `r` (shared mod 2^bits), shares of
    /// `msb(r)`, and a DCF key for `(1 − 2·msb(r))·[x < r mod 2^(bits−1)]`
    /// on the top `bits − 1 − coarse` of those bits.
    Compare {
        /// Elements.
        n: usize,
        /// Input width in bits (2..=64).
        bits: u32,
        /// Low bits the comparison ignores (0 for an exact comparison).
        coarse: u32,
    },
    /// For comparisons with XOR-shared results consumed in the next round
    /// (see [`crate::compare`]'s "bit comparisons"): a 64-bit mask `r`, an
    /// XOR-output DCF key for `[x < r mod 2^(bits−1)]` on the top
    /// `bits − 1 − coarse` of those bits, and per element and threshold a
    /// random bit `ρ = σ ⊕ msb_bits(r)` with both XOR shares `σ_b` drawn by
    /// the parties and arithmetic shares of `ρ`; with `select`, shares of
    /// `ρ·r`; with `square`, shares of `r²`. With `trunc = s > 0` the opened
    /// value is also truncated by `s` (see [`crate::compare`]): shares of
    /// `r_h = r >> s` and `msb(r)`, and `r_h` takes `r`'s place in `ρ·r` and
    /// `r²`, with shares of `ρ·msb(r)` (select) and `r_h·msb(r)` (square)
    /// beside them. With `Squares::EachTruncated(q)` (and `select`) the
    /// bits' opening round also truncates `x²` by `q`
    /// ([`crate::compare::BitCompared::open`]): a 64-bit mask `r₂` drawn by
    /// the parties, shares of `r₂ >> q` and `msb(r₂)`, and per threshold
    /// of `ρ·(r₂ >> q)` and `ρ·msb(r₂)` (the `msb` parts modulo `2^q`).
    /// With no thresholds (`points = 0`) there is no DCF key.
    /// With `products` (and a truncation by `s`), the material for products
    /// of the truncated value `v` with masked weights in the next round
    /// ([`crate::compare::BitCompared::products`]): a mask `A_t` drawn by
    /// the parties (shared modulo `2^s`) and shares of `C* = (r_h −
    /// 2^(64−s)·A_t)·B` for each weight `B`, as the products' opening of
    /// `T − A_t` (with `T` the wrap part of `v`, modulo `2^s`) needs.
    BitCompare {
        /// Elements.
        n: usize,
        /// Input width in bits (2..=64).
        bits: u32,
        /// Low bits the comparison ignores (0 for an exact comparison).
        coarse: u32,
        /// Thresholds per element (bits opened per element).
        points: usize,
        /// Add shares of `ρ·r` (to select `x` by each bit).
        select: bool,
        /// Shares of `r²` (to square `x` from the same opening), per element
        /// or summed over rows.
        square: Squares,
        /// Truncate the opened value by this many bits (0: none).
        trunc: u32,
        /// Products of the truncated value with masked weights in the next
        /// round (needs `trunc > 0`).
        products: Option<ValueProducts>,
    },
    /// For a comparison whose bits multiply the compared value in the same
    /// round (see `Ctx::compare_products`): a 64-bit mask `R` whose low
    /// `bits` bits `r` mask the comparison, shares of `msb_bits(r)`, and a
    /// DCF key with a `w`-word payload per element for `[x < r mod 2^(bits−1)]`
    /// on the top `bits − 1 − coarse` of those bits, with payloads `β`,
    /// `β·Y₁` (and `β·Y₂`), `β = 1 − 2·msb_bits(r)`; with `trunc = s > 0`,
    /// `Y₁ = R >> s`, `Y₂ = msb(R)` (w = 3) and shares of both, else
    /// `Y₁ = R` (w = 2); and shares of `msb_bits(r)·Y_j`.
    CompareProducts {
        /// Elements.
        n: usize,
        /// Input width in bits (2..=62).
        bits: u32,
        /// Low bits the comparison ignores (0 for an exact comparison).
        coarse: u32,
        /// Truncate the opened value by this many bits (0: none).
        trunc: u32,
        /// Depths (increasing, below the key's `bits − 1 − coarse` levels)
        /// at which some thresholds' points stop ([`crate::dcf::DcfKeys`]).
        stops: Vec<u32>,
    },
}

/// The products a truncating [`Request::BitCompare`] prepares for its
/// value `v` (rows of `cols`), as a LayerNorm's centred rows need: `v ⊙ γ`
/// with a masked 1×cols scale and `v·W` with a masked cols×out weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueProducts {
    /// Columns of each row of `v`.
    pub cols: usize,
    /// The masked scale `γ` (1×cols), if any.
    pub scale: Option<u32>,
    /// A masked cols×out weight `W` and its width, if any.
    pub next: Option<(u32, usize)>,
}

impl ValueProducts {
    /// Words of the products for `n` elements of `v`.
    pub(crate) fn words(&self, n: usize) -> usize {
        let rows = n / self.cols.max(1);
        let scaled = if self.scale.is_some() { n } else { 0 };
        scaled + self.next.map_or(0, |(_, out)| rows * out)
    }
}

/// Which squares a [`Request::BitCompare`] gives from its opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Squares {
    /// None.
    No,
    /// One per element (`r²` per element from the dealer).
    Each,
    /// Only their sums over each row of this many elements, as a
    /// LayerNorm's `Σ(x − μ)²` needs: one word of `Σ r²` per row instead
    /// of one per element.
    RowSums(usize),
    /// One per element, also truncated by this many bits (1..62) in the
    /// round that opens the bits, and selected by each bit there (needs
    /// `select`): `[x ≥ t_j]·⌊x²/2^q⌋` for a piecewise quadratic.
    EachTruncated(u32),
}

impl Squares {
    /// Words of the mask's squares for `n` elements.
    pub(crate) fn mask_words(self, n: usize) -> usize {
        match self {
            Squares::No => 0,
            Squares::Each | Squares::EachTruncated(_) => n,
            Squares::RowSums(cols) => n / cols.max(1),
        }
    }
}

/// Payload words of a [`Request::CompareProducts`]'s DCF key.
pub(crate) fn product_keys(trunc: u32) -> usize {
    if trunc > 0 { 3 } else { 2 }
}

/// The shift by which a bit comparison's bits' round truncates its squares
/// (0: it does not).
pub(crate) fn square_shift(square: Squares) -> u32 {
    match square {
        Squares::EachTruncated(q) => q,
        _ => 0,
    }
}

/// DCF keys of a bit comparison of `n` elements at `points` thresholds.
fn bit_keys(n: usize, points: usize) -> usize {
    if points == 0 { 0 } else { n }
}

impl Request {
    /// Short name for errors and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Triple { .. } => "triple",
            Request::Square { .. } => "square",
            Request::Dot { .. } => "dot",
            Request::MatMul { .. } => "matmul",
            Request::RowScale { .. } => "rowscale",
            Request::TruncRowScale { .. } => "trunc-rowscale",
            Request::PendingRowScale { .. } => "pending-rowscale",
            Request::WeightMask { .. } => "weight-mask",
            Request::WeightMatMul { .. } => "weight-matmul",
            Request::Wrap { .. } => "wrap",
            Request::NormProducts { .. } => "norm-products",
            Request::Compare { .. } => "compare",
            Request::BitCompare { .. } => "bit-compare",
            Request::CompareProducts { .. } => "compare-products",
        }
    }

    /// Bytes the dealer sends to `party` for this request.
    pub fn dealer_bytes(&self, party: Party) -> usize {
        let p1 = party == Party::P1;
        match *self {
            Request::Triple { n } | Request::Square { n } | Request::Dot { n, .. } => {
                if p1 {
                    8 * n
                } else {
                    0
                }
            }
            Request::MatMul { m, n, .. } | Request::WeightMatMul { m, n, .. } => {
                if p1 {
                    8 * m * n
                } else {
                    0
                }
            }
            Request::RowScale { rows, cols } => {
                if p1 {
                    8 * rows * cols
                } else {
                    0
                }
            }
            Request::Wrap { .. }
            | Request::TruncRowScale { .. }
            | Request::PendingRowScale { .. } => {
                if p1 {
                    corrections_len(&self.corrections())
                } else {
                    0
                }
            }
            Request::WeightMask { .. } => 0,
            Request::NormProducts {
                id,
                next,
                rows,
                cols,
                square,
            } => {
                let per = 8 * (id.is_some() as usize + square as usize);
                let product = next.map_or(0, |(_, out)| 8 * rows * out);
                if p1 { per * rows * cols + product } else { 0 }
            }
            Request::Compare { n, bits, coarse } => {
                n * DcfKeys::wire_len(bits - 1 - coarse) + if p1 { 8 * n } else { 0 }
            }
            Request::BitCompare {
                n,
                bits,
                coarse,
                points,
                ..
            } => {
                let keys = bit_keys(n, points) * BitKeys::wire_len(bits - 1 - coarse);
                if p1 {
                    keys + corrections_len(&self.corrections())
                } else {
                    keys
                }
            }
            Request::CompareProducts {
                n,
                bits,
                coarse,
                trunc,
                ref stops,
            } => {
                let keys = n * DcfKeys::wire_len_stopping(
                    bits - 1 - coarse,
                    product_keys(trunc),
                    stops.len(),
                );
                keys + if p1 {
                    corrections_len(&self.corrections())
                } else {
                    0
                }
            }
        }
    }
}

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
    /// its value; [`ValueProducts`] as its fields in declaration order. Every
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

impl Request {
    /// Party 1's corrected parts of this request's material that travel
    /// narrowed, in the order the dealer sends them: each part's length and
    /// the low bits of it that its consumer uses. A part used only times a
    /// multiple of `2^(64−w)` (a truncation's wrap coefficient
    /// `2^(64−s)·(1 − msb m)`) is needed modulo `2^w` only, so it travels in
    /// `w` bits instead of 64 (each part packed densely,
    /// [`crate::channel::pack`], and padded to a byte); its high bits on
    /// arrival are zero and the sum of the two shares is right modulo `2^w`
    /// only.
    /// Kinds whose corrections are all full words are not listed here.
    pub(crate) fn corrections(&self) -> Vec<(usize, u32)> {
        match *self {
            Request::Wrap { n, shift } => vec![(n, shift)],
            // r_high, r_msb, a_high, a_msb
            Request::TruncRowScale { rows, cols, shift } => vec![
                (rows, 64),
                (rows, shift),
                (rows * cols, 64),
                (rows * cols, shift),
            ],
            // a_high, a_msb, r_high, r_msb, a_h·r_h, a_h·r_m, a_m·r_h, a_m·r_m
            // (the last one times 2^(128 − s_x − s_v): nothing for s_x + s_v ≤ 64)
            Request::PendingRowScale {
                rows,
                cols,
                x_shift,
                v_shift,
            } => {
                let e = rows * cols;
                vec![
                    (e, 64),
                    (e, x_shift),
                    (rows, 64),
                    (rows, v_shift),
                    (e, 64),
                    (e, v_shift),
                    (e, x_shift),
                    (e, (x_shift + v_shift).saturating_sub(64)),
                ]
            }
            // ρ, ρ·r, r², r_h, msb(r), ρ·msb(r), r_h·msb(r): the last three
            // only with a truncation, and only times its wrap coefficient;
            // then C* for the products; then for a square truncated by q,
            // r₂ >> q, msb(r₂), ρ·(r₂ >> q), ρ·msb(r₂) (the msb parts
            // times the square's wrap coefficient only)
            Request::BitCompare {
                n,
                points,
                select,
                square,
                trunc,
                products,
                ..
            } => {
                let t = trunc > 0;
                let on = |on: bool, len: usize| if on { len } else { 0 };
                let squared = square != Squares::No;
                let q = square_shift(square);
                let tq = q > 0;
                vec![
                    (n * points, 64),
                    (on(select, n * points), 64),
                    (square.mask_words(n), 64),
                    (on(t, n), 64),
                    (on(t, n), trunc),
                    (on(t && select, n * points), trunc),
                    (on(t && squared, n), trunc),
                    (products.map_or(0, |p| p.words(n)), 64),
                    (on(tq, n), 64),
                    (on(tq, n), q),
                    (on(tq, n * points), 64),
                    (on(tq, n * points), q),
                ]
            }
            // msb_ℓ(r), Y₁, Y₂ = msb(R), msb_ℓ(r)·Y₁, msb_ℓ(r)·Y₂ (Y₂'s
            // parts only with a truncation, and only times its wrap)
            Request::CompareProducts { n, trunc, .. } => {
                let t = if trunc > 0 { n } else { 0 };
                vec![(n, 64), (t, 64), (t, trunc), (n, 64), (t, trunc)]
            }
            _ => Vec::new(),
        }
    }
}

/// Bytes of a list of narrowed corrections ([`Request::corrections`]).
fn corrections_len(parts: &[(usize, u32)]) -> usize {
    parts
        .iter()
        .map(|&(len, bits)| crate::channel::packed_len(len, bits.min(64)))
        .sum()
}

/// One party's half of a correlation. `Debug` shows only the kind.
#[derive(Clone)]
pub enum Material {
    /// See [`Request::Triple`] (also used for [`Request::Square`] with `b` empty).
    Triple {
        /// Share of `a`.
        a: Vec<u64>,
        /// Share of `b`.
        b: Vec<u64>,
        /// Share of `c`.
        c: Vec<u64>,
    },
    /// See [`Request::WeightMask`].
    WeightMask {
        /// Share of the mask `B`.
        b: Vec<u64>,
    },
    /// See [`Request::TruncRowScale`].
    TruncRowScale {
        /// Share of the matrix mask `A`.
        a: Vec<u64>,
        /// Share of the vector mask `r`.
        r: Vec<u64>,
        /// Share of `r >> shift`.
        r_high: Vec<u64>,
        /// Share of `msb(r)`.
        r_msb: Vec<u64>,
        /// Share of `A_ij·(r >> shift)_i`.
        a_high: Vec<u64>,
        /// Share of `A_ij·msb(r)_i`.
        a_msb: Vec<u64>,
    },
    /// See [`Request::PendingRowScale`]; products are rows×cols.
    PendingRowScale {
        /// Share of the matrix mask `A`.
        a: Vec<u64>,
        /// Share of the vector mask `r`.
        r: Vec<u64>,
        /// Share of `a_h = A >> x_shift`.
        a_high: Vec<u64>,
        /// Share of `a_m = msb(A)`.
        a_msb: Vec<u64>,
        /// Share of `r_h = r >> v_shift`.
        r_high: Vec<u64>,
        /// Share of `r_m = msb(r)`.
        r_msb: Vec<u64>,
        /// Shares of `a_h·r_h`, `a_h·r_m`, `a_m·r_h`, `a_m·r_m`.
        cross: [Vec<u64>; 4],
    },
    /// See [`Request::Wrap`].
    Wrap {
        /// This party's own random bits (`a` for party 0, `b` for party 1).
        bits: Vec<u8>,
        /// Share of `a·b`.
        c: Vec<u64>,
    },
    /// See [`Request::Compare`].
    Compare {
        /// Share of the mask `r` (mod 2^bits).
        r: Vec<u64>,
        /// Share of `msb(r)` in Z_2^64.
        r_msb: Vec<u64>,
        /// This party's DCF root seeds.
        roots: Vec<Block>,
        /// DCF correction words (identical for both parties), one key per element.
        cws: DcfKeys,
    },
    /// See [`Request::BitCompare`]. Per-threshold vectors are element-major
    /// (entry `i·points + j`).
    BitCompare {
        /// Share of the 64-bit mask `r`.
        r: Vec<u64>,
        /// This party's XOR share `σ_b` of `ρ ⊕ msb(r)` (0/1), `n·points`.
        sigma: Vec<u8>,
        /// Share of `ρ` in Z_2^64, `n·points`.
        rho: Vec<u64>,
        /// Share of `ρ·r` (with `trunc`: `ρ·r_h`), `n·points` (empty without `select`).
        rho_r: Vec<u64>,
        /// Share of `r²` (with `trunc`: `r_h²`), `n` (empty without `square`).
        r_sq: Vec<u64>,
        /// Share of `r_h = r >> trunc`, `n` (empty without `trunc`).
        r_high: Vec<u64>,
        /// Share of `msb(r)`, `n` (empty without `trunc`).
        r_msb: Vec<u64>,
        /// Share of `ρ·msb(r)`, `n·points` (with `trunc` and `select`).
        rho_msb: Vec<u64>,
        /// Share of `r_h·msb(r)`, `n` (with `trunc` and `square`).
        high_msb: Vec<u64>,
        /// Share of the products' mask `A_t` (modulo `2^trunc`), `n` (with `products`).
        a_t: Vec<u64>,
        /// Share of `C* = (r_h − 2^(64−trunc)·A_t)·B`: the scale's `n`
        /// words, then the weight's rows×out (with `products`).
        c_star: Vec<u64>,
        /// Share of the square's mask `r₂`, `n` (with `Squares::EachTruncated`).
        sq_r: Vec<u64>,
        /// Share of `r₂ >> q`, `n` (with `Squares::EachTruncated(q)`).
        sq_high: Vec<u64>,
        /// Share of `msb(r₂)` (modulo `2^q`), `n` (with `Squares::EachTruncated(q)`).
        sq_msb: Vec<u64>,
        /// Share of `ρ·(r₂ >> q)`, `n·points` (with `Squares::EachTruncated(q)`).
        rho_sq_high: Vec<u64>,
        /// Share of `ρ·msb(r₂)` (modulo `2^q`), `n·points` (with
        /// `Squares::EachTruncated(q)`).
        rho_sq_msb: Vec<u64>,
        /// This party's DCF root seeds.
        roots: Vec<Block>,
        /// XOR-output DCF correction words (identical for both parties).
        keys: BitKeys,
    },
    /// See [`Request::CompareProducts`].
    CompareProducts {
        /// Share of the 64-bit mask `R`.
        r: Vec<u64>,
        /// Share of `msb_bits(R mod 2^bits)`.
        r_msb: Vec<u64>,
        /// Share of `R >> trunc` (empty without `trunc`).
        high: Vec<u64>,
        /// Share of `msb(R)` (empty without `trunc`).
        top: Vec<u64>,
        /// Share of `msb_bits(r)·Y₁`.
        msb_high: Vec<u64>,
        /// Share of `msb_bits(r)·msb(R)` (empty without `trunc`).
        msb_top: Vec<u64>,
        /// This party's DCF root seeds (`w` per element).
        roots: Vec<Block>,
        /// DCF correction words (identical for both parties), `w` keys per element.
        cws: DcfKeys,
    },
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Material::Triple { .. } => "triple",
            Material::WeightMask { .. } => "weight-mask",
            Material::TruncRowScale { .. } => "trunc-rowscale",
            Material::PendingRowScale { .. } => "pending-rowscale",
            Material::Wrap { .. } => "wrap",
            Material::Compare { .. } => "compare",
            Material::BitCompare { .. } => "bit-compare",
            Material::CompareProducts { .. } => "compare-products",
        };
        write!(f, "Material::{kind}(<secret>)")
    }
}

/// Draw from `prg` every component of `req` that `party` generates itself,
/// leaving the corrected parts zero. The dealer calls this for both parties
/// with its copies of their streams; a party calls it with its own stream.
/// Both therefore consume each stream in exactly the same order.
pub fn draw(req: &Request, party: Party, prg: &mut Prg) -> Material {
    let own_c = |prg: &mut Prg, n: usize| {
        if party == Party::P0 {
            prg.u64s(n)
        } else {
            vec![0; n]
        }
    };
    match *req {
        Request::Triple { n } => Material::Triple {
            a: prg.u64s(n),
            b: prg.u64s(n),
            c: own_c(prg, n),
        },
        Request::Square { n } => Material::Triple {
            a: prg.u64s(n),
            b: Vec::new(),
            c: own_c(prg, n),
        },
        Request::Dot { n, terms } => Material::Triple {
            a: prg.u64s(n * terms),
            b: prg.u64s(n * terms),
            c: own_c(prg, n),
        },
        Request::MatMul { m, k, n } => Material::Triple {
            a: prg.u64s(m * k),
            b: prg.u64s(k * n),
            c: own_c(prg, m * n),
        },
        Request::RowScale { rows, cols } => Material::Triple {
            a: prg.u64s(rows * cols),
            b: prg.u64s(rows),
            c: own_c(prg, rows * cols),
        },
        Request::TruncRowScale { rows, cols, .. } => Material::TruncRowScale {
            a: prg.u64s(rows * cols),
            r: prg.u64s(rows),
            r_high: own_c(prg, rows),
            r_msb: own_c(prg, rows),
            a_high: own_c(prg, rows * cols),
            a_msb: own_c(prg, rows * cols),
        },
        Request::PendingRowScale { rows, cols, .. } => Material::PendingRowScale {
            a: prg.u64s(rows * cols),
            r: prg.u64s(rows),
            a_high: own_c(prg, rows * cols),
            a_msb: own_c(prg, rows * cols),
            r_high: own_c(prg, rows),
            r_msb: own_c(prg, rows),
            cross: [
                own_c(prg, rows * cols),
                own_c(prg, rows * cols),
                own_c(prg, rows * cols),
                own_c(prg, rows * cols),
            ],
        },
        Request::WeightMask { k, n, .. } => Material::WeightMask { b: prg.u64s(k * n) },
        Request::WeightMatMul { m, k, n, .. } => Material::Triple {
            a: prg.u64s(m * k),
            b: Vec::new(),
            c: own_c(prg, m * n),
        },
        Request::NormProducts {
            id,
            next,
            rows,
            cols,
            square,
        } => Material::Triple {
            a: prg.u64s(rows * cols),
            b: Vec::new(),
            c: own_c(
                prg,
                rows * cols * (id.is_some() as usize + square as usize)
                    + next.map_or(0, |(_, out)| rows * out),
            ),
        },
        Request::Wrap { n, .. } => Material::Wrap {
            bits: prg.bits(n),
            c: own_c(prg, n),
        },
        Request::Compare { n, bits, .. } => {
            let mask = low_mask(bits);
            Material::Compare {
                r: prg.u64s(n).into_iter().map(|x| x & mask).collect(),
                r_msb: own_c(prg, n),
                roots: (0..n).map(|_| prg.block()).collect(),
                cws: DcfKeys::placeholder(bits - 1, 0),
            }
        }
        Request::BitCompare {
            n,
            bits,
            points,
            select,
            square,
            trunc,
            products,
            ..
        } => {
            let some = |prg: &mut Prg, on: bool, len: usize| {
                if on { own_c(prg, len) } else { Vec::new() }
            };
            let t = trunc > 0;
            let r = prg.u64s(n);
            let sigma = prg.bits(n * points);
            let rho = own_c(prg, n * points);
            let rho_r = some(prg, select, n * points);
            let r_sq = own_c(prg, square.mask_words(n));
            let r_high = some(prg, t, n);
            let r_msb = some(prg, t, n);
            let rho_msb = some(prg, t && select, n * points);
            let high_msb = some(prg, t && square != Squares::No, n);
            let a_t = if products.is_some() {
                prg.u64s(n)
            } else {
                Vec::new()
            };
            let c_star = own_c(prg, products.map_or(0, |p| p.words(n)));
            let tq = square_shift(square) > 0;
            let sq_r = if tq { prg.u64s(n) } else { Vec::new() };
            let sq_high = some(prg, tq, n);
            let sq_msb = some(prg, tq, n);
            let rho_sq_high = some(prg, tq, n * points);
            let rho_sq_msb = some(prg, tq, n * points);
            Material::BitCompare {
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
                roots: (0..bit_keys(n, points)).map(|_| prg.block()).collect(),
                keys: BitKeys::placeholder(bits - 1, 0),
            }
        }
        Request::CompareProducts { n, bits, trunc, .. } => {
            let t = trunc > 0;
            let some = |prg: &mut Prg, on: bool| {
                if on { own_c(prg, n) } else { Vec::new() }
            };
            Material::CompareProducts {
                r: prg.u64s(n),
                r_msb: own_c(prg, n),
                high: some(prg, t),
                top: some(prg, t),
                msb_high: own_c(prg, n),
                msb_top: some(prg, t),
                roots: (0..n).map(|_| prg.block()).collect(),
                cws: DcfKeys::placeholder_of(bits - 1, product_keys(trunc), 0),
            }
        }
    }
}

/// `2^bits − 1` (all ones for 64).
pub fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn bytes_of(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Append party 1's correction `full − mine` for one part of its material,
/// the low `bits` of each word packed densely, when party 1 has that part
/// (`mine` drawn non-empty); `full` is computed only then.
fn put_correction(to_p1: &mut Vec<u8>, mine: &[u64], bits: u32, full: impl FnOnce() -> Vec<u64>) {
    if mine.is_empty() || bits == 0 {
        return;
    }
    let diff = ring::sub(&full(), mine);
    to_p1.extend(crate::channel::pack(&diff, bits.min(64)));
}

/// Fill party 1's corrected parts, in order and each at its drawn length
/// and width, from the dealer's message (the inverse of [`put_correction`]).
fn fill_corrections<'a>(msg: &[u8], parts: impl IntoIterator<Item = (&'a mut Vec<u64>, u32)>) {
    let mut rest = msg;
    for (v, bits) in parts {
        let bits = bits.min(64);
        let len = crate::channel::packed_len(v.len(), bits);
        *v = crate::channel::unpack(&rest[..len], v.len(), bits);
        rest = &rest[len..];
    }
}

/// The bits of each narrowed part of `req` ([`Request::corrections`]).
fn widths(req: &Request) -> Vec<u32> {
    req.corrections().into_iter().map(|(_, b)| b).collect()
}

/// What the dealer sends for one request: a message for each party (often empty for party 0).
#[derive(Clone, Default)]
pub struct Dealt {
    /// Message for party 0.
    pub to_p0: Vec<u8>,
    /// Message for party 1.
    pub to_p1: Vec<u8>,
}

impl std::fmt::Debug for Dealt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dealt(<{} + {} secret bytes>)",
            self.to_p0.len(),
            self.to_p1.len()
        )
    }
}

/// The trusted dealer: holds both parties' seeds, never sees inputs or weights.
///
/// Each batch (the model load, then one batch per inference) is drawn from
/// its own ChaCha stream of the two seeds ([`Dealer::start_batch`],
/// [`MaterialGen::for_batch`]), so batches can be expanded independently and
/// in any order; the weight masks of the model load stay with the dealer.
#[derive(Debug)]
pub struct Dealer {
    seeds: [Seed; 2],
    prg: [Prg; 2],
    /// Full weight masks `B = B₀ + B₁`, by weight id.
    masks: HashMap<u32, (usize, usize, Vec<u64>)>,
}

impl Dealer {
    /// A dealer sharing `seed0` with party 0 and `seed1` with party 1.
    pub fn new(seed0: &Seed, seed1: &Seed) -> Self {
        Dealer {
            seeds: [seed0.clone(), seed1.clone()],
            prg: [Prg::new(seed0), Prg::new(seed1)],
            masks: HashMap::new(),
        }
    }

    /// Deal the following requests from batch `batch`'s streams (a new
    /// dealer starts in batch 0).
    pub fn start_batch(&mut self, batch: u64) {
        self.prg = [
            Prg::with_stream(&self.seeds[0], batch),
            Prg::with_stream(&self.seeds[1], batch),
        ];
    }

    /// The full mask `B` of weight `id`, which must be `k`×`n`.
    fn mask(&self, id: u32, k: usize, n: usize) -> Result<&[u64]> {
        let (mk, mn, b) = self
            .masks
            .get(&id)
            .ok_or_else(|| MpcError::Dealer(format!("weight {id} was never masked")))?;
        if (*mk, *mn) != (k, n) {
            return Err(MpcError::Dealer(format!(
                "weight {id} is {mk}x{mn}, request says {k}x{n}"
            )));
        }
        Ok(b)
    }

    /// `v ⊙ γ` (broadcast over rows) then `v·W` for the masks of `p`'s
    /// weights, `v` being rows of `p.cols`.
    fn value_products(&self, p: &ValueProducts, v: &[u64]) -> Result<Vec<u64>> {
        let (cols, rows) = (p.cols, v.len() / p.cols.max(1));
        let mut full = Vec::with_capacity(p.words(v.len()));
        if let Some(id) = p.scale {
            let b = self.mask(id, 1, cols)?;
            full.extend(
                v.iter()
                    .enumerate()
                    .map(|(i, x)| x.wrapping_mul(b[i % cols])),
            );
        }
        if let Some((id, out)) = p.next {
            full.extend(ring::matmul(v, self.mask(id, cols, out)?, rows, cols, out));
        }
        Ok(full)
    }

    /// Answer one request: party 1's correction and any words both parties need.
    pub fn deal(&mut self, req: &Request) -> Result<Dealt> {
        let m0 = draw(req, Party::P0, &mut self.prg[0]);
        let m1 = draw(req, Party::P1, &mut self.prg[1]);
        let correction = |full_c: Vec<u64>, c0: &[u64]| Dealt {
            to_p0: Vec::new(),
            to_p1: bytes_of(&ring::sub(&full_c, c0)),
        };
        Ok(match (req, m0, m1) {
            (
                Request::Triple { n } | Request::Dot { n, .. },
                Material::Triple {
                    a: a0,
                    b: b0,
                    c: c0,
                },
                Material::Triple { a: a1, b: b1, .. },
            ) => {
                // the terms' products summed per element (a triple is one term)
                let prods = ring::mul(&ring::add(&a0, &a1), &ring::add(&b0, &b1));
                let mut terms = prods.chunks((*n).max(1));
                let mut sum = terms.next().map(<[u64]>::to_vec).unwrap_or_default();
                for term in terms {
                    sum = ring::add(&sum, term);
                }
                correction(sum, &c0)
            }
            (
                Request::Square { .. },
                Material::Triple { a: a0, c: c0, .. },
                Material::Triple { a: a1, .. },
            ) => {
                let a = ring::add(&a0, &a1);
                correction(ring::mul(&a, &a), &c0)
            }
            (
                Request::MatMul { m, k, n },
                Material::Triple {
                    a: a0,
                    b: b0,
                    c: c0,
                },
                Material::Triple { a: a1, b: b1, .. },
            ) => correction(
                ring::matmul(&ring::add(&a0, &a1), &ring::add(&b0, &b1), *m, *k, *n),
                &c0,
            ),
            (
                Request::RowScale { cols, .. },
                Material::Triple {
                    a: a0,
                    b: b0,
                    c: c0,
                },
                Material::Triple { a: a1, b: b1, .. },
            ) => {
                let a = ring::add(&a0, &a1);
                let b = ring::repeat_rows(&ring::add(&b0, &b1), *cols);
                correction(ring::mul(&a, &b), &c0)
            }
            (
                Request::TruncRowScale { cols, shift, .. },
                Material::TruncRowScale {
                    a: a0,
                    r: r0,
                    r_high: h0,
                    r_msb: m0,
                    a_high: ah0,
                    a_msb: am0,
                },
                Material::TruncRowScale { a: a1, r: r1, .. },
            ) => {
                let a = ring::add(&a0, &a1);
                let r = ring::add(&r0, &r1);
                let high: Vec<u64> = r.iter().map(|v| v >> shift).collect();
                let msb: Vec<u64> = r.iter().map(|v| v >> 63).collect();
                let a_high = ring::mul(&a, &ring::repeat_rows(&high, *cols));
                let a_msb = ring::mul(&a, &ring::repeat_rows(&msb, *cols));
                let mut to_p1 = Vec::new();
                let parts = [(high, h0), (msb, m0), (a_high, ah0), (a_msb, am0)];
                for ((full, mine), bits) in parts.into_iter().zip(widths(req)) {
                    put_correction(&mut to_p1, &mine, bits, || full);
                }
                Dealt {
                    to_p0: Vec::new(),
                    to_p1,
                }
            }
            (
                Request::PendingRowScale {
                    cols,
                    x_shift,
                    v_shift,
                    ..
                },
                Material::PendingRowScale {
                    a: a0,
                    r: r0,
                    a_high: ah0,
                    a_msb: am0,
                    r_high: rh0,
                    r_msb: rm0,
                    cross: c0,
                },
                Material::PendingRowScale { a: a1, r: r1, .. },
            ) => {
                let a = ring::add(&a0, &a1);
                let r = ring::add(&r0, &r1);
                let a_high: Vec<u64> = a.iter().map(|v| v >> x_shift).collect();
                let a_msb: Vec<u64> = a.iter().map(|v| v >> 63).collect();
                let r_high: Vec<u64> = r.iter().map(|v| v >> v_shift).collect();
                let r_msb: Vec<u64> = r.iter().map(|v| v >> 63).collect();
                let (rh, rm) = (
                    ring::repeat_rows(&r_high, *cols),
                    ring::repeat_rows(&r_msb, *cols),
                );
                let cross = [
                    ring::mul(&a_high, &rh),
                    ring::mul(&a_high, &rm),
                    ring::mul(&a_msb, &rh),
                    ring::mul(&a_msb, &rm),
                ];
                let mut to_p1 = Vec::new();
                let singles = [(a_high, ah0), (a_msb, am0), (r_high, rh0), (r_msb, rm0)];
                let parts = singles.into_iter().chain(cross.into_iter().zip(c0));
                for ((full, mine), bits) in parts.zip(widths(req)) {
                    put_correction(&mut to_p1, &mine, bits, || full);
                }
                Dealt {
                    to_p0: Vec::new(),
                    to_p1,
                }
            }
            (
                Request::WeightMask { id, k, n },
                Material::WeightMask { b: b0 },
                Material::WeightMask { b: b1 },
            ) => {
                self.masks.insert(*id, (*k, *n, ring::add(&b0, &b1)));
                Dealt::default()
            }
            (
                Request::WeightMatMul { id, m, k, n },
                Material::Triple { a: a0, c: c0, .. },
                Material::Triple { a: a1, .. },
            ) => {
                let b = self.mask(*id, *k, *n)?;
                correction(ring::matmul(&ring::add(&a0, &a1), b, *m, *k, *n), &c0)
            }
            (
                Request::NormProducts {
                    id,
                    next,
                    rows,
                    cols,
                    square,
                },
                Material::Triple { a: a0, c: c0, .. },
                Material::Triple { a: a1, .. },
            ) => {
                let a = ring::add(&a0, &a1);
                let mut full = if *square {
                    ring::mul(&a, &a)
                } else {
                    Vec::new()
                };
                let products = ValueProducts {
                    cols: *cols,
                    scale: *id,
                    next: *next,
                };
                debug_assert_eq!(a.len(), rows * cols);
                full.extend(self.value_products(&products, &a)?);
                correction(full, &c0)
            }
            (
                Request::Wrap { .. },
                Material::Wrap { bits: a, c: c0 },
                Material::Wrap { bits: b, .. },
            ) => {
                let ab: Vec<u64> = a.iter().zip(&b).map(|(x, y)| (x & y) as u64).collect();
                let mut to_p1 = Vec::new();
                put_correction(&mut to_p1, &c0, widths(req)[0], || ab);
                Dealt {
                    to_p0: Vec::new(),
                    to_p1,
                }
            }
            (
                Request::Compare { bits, coarse, .. },
                Material::Compare {
                    r: r0,
                    r_msb: m0,
                    roots: s0,
                    ..
                },
                Material::Compare {
                    r: r1, roots: s1, ..
                },
            ) => {
                let (bits, coarse) = (*bits, *coarse);
                let mask = low_mask(bits);
                let n = r0.len();
                let mut alphas = Vec::with_capacity(n);
                let mut betas = Vec::with_capacity(n);
                let mut msb = Vec::with_capacity(n);
                for i in 0..n {
                    let r = r0[i].wrapping_add(r1[i]) & mask;
                    let top = (r >> (bits - 1)) & 1;
                    alphas.push((r & low_mask(bits - 1)) >> coarse);
                    betas.push(1u64.wrapping_sub(2 * top));
                    msb.push(top);
                }
                let keys = dcf::generate_batch(bits - 1 - coarse, &alphas, &betas, &s0, &s1);
                let to_both = keys.into_bytes();
                let mut to_p1 = to_both.clone();
                put_correction(&mut to_p1, &m0, 64, || msb);
                Dealt {
                    to_p0: to_both,
                    to_p1,
                }
            }
            (
                Request::BitCompare {
                    bits,
                    coarse,
                    points,
                    trunc,
                    square,
                    products,
                    ..
                },
                Material::BitCompare {
                    r: r0,
                    sigma: sg0,
                    rho: rho0,
                    rho_r: rr0,
                    r_sq: sq0,
                    r_high: h0,
                    r_msb: m0,
                    rho_msb: rm0,
                    high_msb: hm0,
                    a_t: at0,
                    c_star: cs0,
                    sq_r: q0,
                    sq_high: qh0,
                    sq_msb: qm0,
                    rho_sq_high: rqh0,
                    rho_sq_msb: rqm0,
                    roots: s0,
                    ..
                },
                Material::BitCompare {
                    r: r1,
                    sigma: sg1,
                    a_t: at1,
                    sq_r: q1,
                    roots: s1,
                    ..
                },
            ) => {
                // C* = (r_h − 2^(64−s)·A_t)·B for each weight, before any
                // correction is written (an unknown weight fails the request)
                let c_star = match products {
                    Some(p) => {
                        let v: Vec<u64> = (0..r0.len())
                            .map(|i| {
                                let r_h = r0[i].wrapping_add(r1[i]) >> *trunc;
                                let a_t = at0[i].wrapping_add(at1[i]);
                                r_h.wrapping_sub(a_t << (64 - *trunc))
                            })
                            .collect();
                        self.value_products(p, &v)?
                    }
                    None => Vec::new(),
                };
                let (bits, coarse, k, trunc) = (*bits, *coarse, *points, *trunc);
                let r = ring::add(&r0, &r1);
                let alphas: Vec<u64> = r
                    .iter()
                    .take(bit_keys(r.len(), k))
                    .map(|r| (r & low_mask(bits - 1)) >> coarse)
                    .collect();
                let keys = dcf_bit::generate_batch(bits - 1 - coarse, &alphas, &s0, &s1);
                let rho: Vec<u64> = (0..r.len() * k)
                    .map(|p| u64::from(sg0[p] ^ sg1[p]) ^ ((r[p / k] >> (bits - 1)) & 1))
                    .collect();
                // the mask of the value the products see: r, or r_h when truncated
                let base: Vec<u64> = if trunc > 0 {
                    r.iter().map(|v| v >> trunc).collect()
                } else {
                    r.clone()
                };
                let msb: Vec<u64> = r.iter().map(|v| v >> 63).collect();
                let mut to_p1 = keys.as_bytes().to_vec();
                let per_point = |v: &[u64]| -> Vec<u64> {
                    (0..rho.len())
                        .map(|p| rho[p].wrapping_mul(v[p / k]))
                        .collect()
                };
                let out = &mut to_p1;
                let w = widths(req);
                put_correction(out, &rho0, w[0], || rho.clone());
                put_correction(out, &rr0, w[1], || per_point(&base));
                put_correction(out, &sq0, w[2], || {
                    let squares = ring::mul(&base, &base);
                    match square {
                        Squares::RowSums(cols) => {
                            ring::row_sums(&squares, squares.len() / cols, *cols)
                        }
                        _ => squares,
                    }
                });
                put_correction(out, &h0, w[3], || base.clone());
                put_correction(out, &m0, w[4], || msb.clone());
                put_correction(out, &rm0, w[5], || per_point(&msb));
                put_correction(out, &hm0, w[6], || ring::mul(&base, &msb));
                put_correction(out, &cs0, w[7], || c_star);
                // the square's mask r₂, truncated by q in the bits' round
                let q = square_shift(*square);
                let r2 = ring::add(&q0, &q1);
                let sq_high: Vec<u64> = r2.iter().map(|v| v >> q).collect();
                let sq_msb: Vec<u64> = r2.iter().map(|v| v >> 63).collect();
                put_correction(out, &qh0, w[8], || sq_high.clone());
                put_correction(out, &qm0, w[9], || sq_msb.clone());
                put_correction(out, &rqh0, w[10], || per_point(&sq_high));
                put_correction(out, &rqm0, w[11], || per_point(&sq_msb));
                Dealt {
                    to_p0: keys.as_bytes().to_vec(),
                    to_p1,
                }
            }
            (
                Request::CompareProducts {
                    bits,
                    coarse,
                    trunc,
                    stops,
                    ..
                },
                Material::CompareProducts {
                    r: r0,
                    r_msb: m0,
                    high: h0,
                    top: t0,
                    msb_high: mh0,
                    msb_top: mt0,
                    roots: s0,
                    ..
                },
                Material::CompareProducts {
                    r: r1, roots: s1, ..
                },
            ) => {
                let (bits, coarse, trunc) = (*bits, *coarse, *trunc);
                let w = product_keys(trunc);
                let r = ring::add(&r0, &r1);
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
                    &s0,
                    &s1,
                );
                let to_both = keys.into_bytes();
                let mut to_p1 = to_both.clone();
                let out = &mut to_p1;
                let w = widths(req);
                put_correction(out, &m0, w[0], || msb.clone());
                put_correction(out, &h0, w[1], || high.clone());
                put_correction(out, &t0, w[2], || top.clone());
                put_correction(out, &mh0, w[3], || ring::mul(&msb, &high));
                put_correction(out, &mt0, w[4], || ring::mul(&msb, &top));
                Dealt {
                    to_p0: to_both,
                    to_p1,
                }
            }
            _ => unreachable!("draw returns the material kind of its request"),
        })
    }
}

/// A party's side of the dealer: expands its seed and the dealer's messages into [`Material`].
#[derive(Debug)]
pub struct MaterialGen {
    party: Party,
    prg: Prg,
}

impl MaterialGen {
    /// The generator of `party`, sharing `seed` with the dealer (batch 0).
    pub fn new(party: Party, seed: &Seed) -> Self {
        Self::for_batch(party, seed, 0)
    }

    /// The generator of `party` for batch `batch` (see [`Dealer::start_batch`]).
    pub fn for_batch(party: Party, seed: &Seed, batch: u64) -> Self {
        MaterialGen {
            party,
            prg: Prg::with_stream(seed, batch),
        }
    }

    /// The party this generator expands for.
    pub fn party(&self) -> Party {
        self.party
    }

    /// This party's material for `req`, given the dealer's message to this party.
    pub fn expand(&mut self, req: &Request, msg: &[u8]) -> Result<Material> {
        let expected = req.dealer_bytes(self.party);
        if msg.len() != expected {
            return Err(MpcError::Dealer(format!(
                "{}: message of {} bytes, expected {expected}",
                req.kind(),
                msg.len()
            )));
        }
        let mut m = draw(req, self.party, &mut self.prg);
        let p1 = self.party == Party::P1;
        match (&mut m, req) {
            (Material::Compare { r_msb, cws, .. }, Request::Compare { n, bits, coarse }) => {
                let depth = bits - 1 - coarse;
                let per = DcfKeys::wire_len(depth);
                *cws = DcfKeys::from_bytes(depth, msg[..n * per].to_vec())
                    .expect("length checked above");
                if p1 {
                    *r_msb = words(&msg[n * per..]);
                }
            }
            (
                Material::BitCompare {
                    rho,
                    rho_r,
                    r_sq,
                    r_high,
                    r_msb,
                    rho_msb,
                    high_msb,
                    c_star,
                    sq_high,
                    sq_msb,
                    rho_sq_high,
                    rho_sq_msb,
                    keys,
                    ..
                },
                Request::BitCompare {
                    n,
                    bits,
                    coarse,
                    points,
                    ..
                },
            ) => {
                let depth = bits - 1 - coarse;
                let at = bit_keys(*n, *points) * BitKeys::wire_len(depth);
                *keys =
                    BitKeys::from_bytes(depth, msg[..at].to_vec()).expect("length checked above");
                if p1 {
                    let parts = [
                        rho,
                        rho_r,
                        r_sq,
                        r_high,
                        r_msb,
                        rho_msb,
                        high_msb,
                        c_star,
                        sq_high,
                        sq_msb,
                        rho_sq_high,
                        rho_sq_msb,
                    ];
                    fill_corrections(&msg[at..], parts.into_iter().zip(widths(req)));
                }
            }
            (
                Material::CompareProducts {
                    r_msb,
                    high,
                    top,
                    msb_high,
                    msb_top,
                    cws,
                    ..
                },
                Request::CompareProducts {
                    n,
                    bits,
                    coarse,
                    trunc,
                    stops,
                },
            ) => {
                let depth = bits - 1 - coarse;
                let w = product_keys(*trunc);
                let at = n * DcfKeys::wire_len_stopping(depth, w, stops.len());
                *cws = DcfKeys::from_bytes_stopping(depth, w, stops.clone(), msg[..at].to_vec())
                    .expect("length and stops checked above");
                if p1 {
                    let parts = [r_msb, high, top, msb_high, msb_top];
                    fill_corrections(&msg[at..], parts.into_iter().zip(widths(req)));
                }
            }
            (
                Material::PendingRowScale {
                    a_high,
                    a_msb,
                    r_high,
                    r_msb,
                    cross,
                    ..
                },
                _,
            ) if p1 => {
                let [c0, c1, c2, c3] = cross;
                let parts = [a_high, a_msb, r_high, r_msb, c0, c1, c2, c3];
                fill_corrections(msg, parts.into_iter().zip(widths(req)));
            }
            (
                Material::TruncRowScale {
                    r_high,
                    r_msb,
                    a_high,
                    a_msb,
                    ..
                },
                _,
            ) if p1 => {
                let parts = [r_high, r_msb, a_high, a_msb];
                fill_corrections(msg, parts.into_iter().zip(widths(req)));
            }
            (Material::Wrap { c, .. }, _) if p1 => {
                fill_corrections(msg, [(c, widths(req)[0])]);
            }
            (Material::Triple { c, .. }, _) if p1 => {
                *c = words(msg);
            }
            _ => {}
        }
        Ok(m)
    }
}

/// Where operators take their correlated randomness from.
pub trait CorrelationSource: Send {
    /// The next material, which must answer `req`.
    fn take(&mut self, op: &'static str, req: Request) -> Result<Material>;

    /// True when the material is placeholder (a [`Recorder`] learning a
    /// plan): operators may then skip local work whose result cannot matter,
    /// such as DCF evaluation (control flow never depends on values).
    fn is_recording(&self) -> bool {
        false
    }
}

/// Preprocessed material, consumed in order.
#[derive(Debug, Default)]
pub struct Pool {
    items: VecDeque<(Request, Material)>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Pool::default()
    }

    /// Append preprocessed material for `req`.
    pub fn push(&mut self, req: Request, m: Material) {
        self.items.push_back((req, m));
    }

    /// Items left.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Expand a whole plan with the dealer's messages for this party.
    pub fn preprocess(
        generator: &mut MaterialGen,
        plan: &[Request],
        msgs: &[Vec<u8>],
    ) -> Result<Pool> {
        if plan.len() != msgs.len() {
            return Err(MpcError::Dealer(format!(
                "{} dealer messages for a plan of {} requests",
                msgs.len(),
                plan.len()
            )));
        }
        let mut pool = Pool::new();
        for (req, msg) in plan.iter().zip(msgs) {
            let m = generator.expand(req, msg)?;
            pool.push(req.clone(), m);
        }
        Ok(pool)
    }
}

impl CorrelationSource for Pool {
    fn take(&mut self, op: &'static str, req: Request) -> Result<Material> {
        match self.items.front() {
            None => Err(MpcError::PoolExhausted {
                op,
                needed: format!("{req:?}"),
            }),
            Some((r, _)) if *r != req => Err(MpcError::OutOfStep {
                op,
                needed: format!("{req:?}"),
                found: format!("{r:?}"),
            }),
            Some(_) => Ok(self.items.pop_front().expect("front exists").1),
        }
    }
}

/// Records a program's requests and hands out placeholder material of the
/// right shape, so the program can run once without a dealer to learn its plan.
#[derive(Debug)]
pub struct Recorder {
    party: Party,
    plan: Vec<Request>,
    prg: Prg,
}

impl Recorder {
    /// A recorder for `party`.
    pub fn new(party: Party) -> Self {
        Recorder {
            party,
            plan: Vec::new(),
            prg: Prg::new(&Seed::from_bytes([0; 32])),
        }
    }

    /// The requests seen so far, in order.
    pub fn into_plan(self) -> Vec<Request> {
        self.plan
    }
}

impl CorrelationSource for Recorder {
    fn take(&mut self, _op: &'static str, req: Request) -> Result<Material> {
        let mut m = draw(&req, self.party, &mut self.prg);
        if let (Material::Compare { cws, r, .. }, Request::Compare { bits, coarse, .. }) =
            (&mut m, &req)
        {
            *cws = DcfKeys::placeholder(bits - 1 - coarse, r.len());
        }
        if let (
            Material::BitCompare { keys, r, .. },
            Request::BitCompare {
                bits,
                coarse,
                points,
                ..
            },
        ) = (&mut m, &req)
        {
            *keys = BitKeys::placeholder(bits - 1 - coarse, bit_keys(r.len(), *points));
        }
        if let (
            Material::CompareProducts { cws, r, .. },
            Request::CompareProducts {
                bits,
                coarse,
                trunc,
                stops,
                ..
            },
        ) = (&mut m, &req)
        {
            *cws = DcfKeys::placeholder_stopping(
                bits - 1 - coarse,
                product_keys(*trunc),
                stops.clone(),
                r.len(),
            );
        }
        self.plan.push(req);
        Ok(m)
    }

    fn is_recording(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

#[cfg(test)]
mod stream {
    use super::*;

    /// One request of every kind and variety (weights masked first).
    pub(crate) fn every_kind() -> Vec<Request> {
        let products = ValueProducts {
            cols: 4,
            scale: Some(2),
            next: Some((3, 5)),
        };
        vec![
            Request::WeightMask { id: 1, k: 4, n: 3 },
            Request::WeightMask { id: 2, k: 1, n: 4 },
            Request::WeightMask { id: 3, k: 4, n: 5 },
            Request::Triple { n: 5 },
            Request::Dot { n: 3, terms: 2 },
            Request::Square { n: 4 },
            Request::MatMul { m: 2, k: 3, n: 2 },
            Request::RowScale { rows: 2, cols: 3 },
            Request::TruncRowScale {
                rows: 2,
                cols: 3,
                shift: 12,
            },
            Request::PendingRowScale {
                rows: 2,
                cols: 3,
                x_shift: 12,
                v_shift: 14,
            },
            Request::PendingRowScale {
                rows: 2,
                cols: 3,
                x_shift: 40,
                v_shift: 30,
            },
            Request::WeightMatMul {
                id: 1,
                m: 2,
                k: 4,
                n: 3,
            },
            Request::NormProducts {
                id: Some(2),
                next: Some((3, 5)),
                square: true,
                rows: 2,
                cols: 4,
            },
            Request::NormProducts {
                id: None,
                next: None,
                square: true,
                rows: 2,
                cols: 4,
            },
            Request::Wrap { n: 7, shift: 12 },
            Request::Compare {
                n: 3,
                bits: 40,
                coarse: 2,
            },
            Request::BitCompare {
                n: 8,
                bits: 40,
                coarse: 2,
                points: 2,
                select: true,
                square: Squares::RowSums(4),
                trunc: 12,
                products: Some(products),
            },
            Request::BitCompare {
                n: 4,
                bits: 30,
                coarse: 0,
                points: 3,
                select: true,
                square: Squares::EachTruncated(6),
                trunc: 0,
                products: None,
            },
            Request::BitCompare {
                n: 4,
                bits: 30,
                coarse: 1,
                points: 0,
                select: false,
                square: Squares::Each,
                trunc: 10,
                products: None,
            },
            Request::BitCompare {
                n: 4,
                bits: 64,
                coarse: 0,
                points: 1,
                select: true,
                square: Squares::No,
                trunc: 10,
                products: None,
            },
            Request::CompareProducts {
                n: 3,
                bits: 40,
                coarse: 2,
                trunc: 12,
                stops: vec![4, 9],
            },
            Request::CompareProducts {
                n: 3,
                bits: 20,
                coarse: 0,
                trunc: 0,
                stops: vec![],
            },
        ]
    }

    fn fnv(h: u64, bytes: &[u8]) -> u64 {
        bytes.iter().fold(h, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The dealer's messages for every kind, from fixed seeds, are the
    /// stored bytes (a 64-bit FNV-1a of each party's, and their lengths),
    /// so the order in which material is drawn from the streams and the
    /// corrections' encoding stay what they are; each party expands them.
    #[test]
    fn every_kind_deals_the_same_bytes_from_the_same_seeds() {
        let (s0, s1) = (Seed::for_tests(100), Seed::for_tests(101));
        let mut dealer = Dealer::new(&s0, &s1);
        let mut gens = [
            MaterialGen::new(Party::P0, &s0),
            MaterialGen::new(Party::P1, &s1),
        ];
        let (mut h, mut len) = ([0xcbf2_9ce4_8422_2325u64; 2], [0usize; 2]);
        for req in every_kind() {
            let d = dealer.deal(&req).unwrap();
            for (p, msg) in [&d.to_p0, &d.to_p1].into_iter().enumerate() {
                let party = Party::from_index(p).unwrap();
                assert_eq!(msg.len(), req.dealer_bytes(party), "{req:?}");
                h[p] = fnv(h[p], msg);
                len[p] += msg.len();
                gens[p].expand(&req, msg).unwrap();
            }
        }
        assert_eq!(len, [18379, 20541]);
        assert_eq!(
            h,
            [0x591117eabb2f1d40, 0xf258215e07503031],
            "fingerprints {h:#018x?}"
        );
    }
}

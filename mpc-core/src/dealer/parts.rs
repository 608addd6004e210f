//! What every correlation kind is made of, and the generic code over it.
//!
//! A kind declares its material once ([`kind!`](crate::dealer::kinds)): each
//! part's name, length, type and [`Source`] (drawn by both parties, or
//! derived by the dealer and corrected for party 1, with the width it
//! travels in), and the shape of its DCF keys. Drawing ([`draw_parts`]),
//! the dealer's corrections ([`put_corrections`]), a party's expansion
//! ([`fill_corrections`]), dealer bytes ([`dealer_bytes`]) and the
//! recorder's placeholder keys ([`Keys::zeros`]) read that declaration.

use crate::dcf::bit::BitKeys;
use crate::dcf::{Block, DcfKeys};
use crate::dealer::request::Request;
use crate::error::Result;
use crate::prg::Prg;
use crate::ring;
use crate::share::Party;

/// Where a part of a party's material comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Uniform words that each party draws from its own stream (its share
    /// of a mask), never sent.
    Drawn,
    /// Uniform words masked to their low `bits` bits (a share modulo
    /// `2^bits`), never sent.
    DrawnLow(u32),
    /// Uniform bits, one per byte, that each party draws (its XOR share).
    Bits,
    /// DCF root seeds, one 16-byte block each, drawn by each party.
    Roots,
    /// A value the dealer derives from the masks: party 0 draws its share,
    /// party 1's share is the dealer's correction `full − share₀`. A part
    /// used only times a multiple of `2^(64−w)` (a truncation's wrap
    /// coefficient `2^(64−s)·(1 − msb m)`) is needed modulo `2^w` only, so
    /// it travels in `w` bits instead of 64 (packed densely,
    /// [`crate::channel::pack`], and padded to a byte); its high bits on
    /// arrival are zero and the sum of the two shares is right modulo `2^w`
    /// only. A width of 0 sends nothing (party 1's share stays zero).
    Corrected(u32),
}

/// One part of a correlation's material: its name, its length (elements)
/// and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub name: &'static str,
    pub len: usize,
    pub source: Source,
}

impl Part {
    /// This part under the name of its field.
    pub(crate) fn named(self, name: &'static str) -> Part {
        Part { name, ..self }
    }

    /// Bytes of party 1's correction of this part (0 unless corrected).
    fn correction_len(&self) -> usize {
        match self.source {
            Source::Corrected(w) => crate::channel::packed_len(self.len, w.min(64)),
            _ => 0,
        }
    }
}

/// Words both parties draw.
pub(crate) fn drawn(len: usize) -> Part {
    part(len, Source::Drawn)
}

/// Words both parties draw, masked to their low `bits`.
pub(crate) fn drawn_low(len: usize, bits: u32) -> Part {
    part(len, Source::DrawnLow(bits))
}

/// Bits both parties draw.
pub(crate) fn drawn_bits(len: usize) -> Part {
    part(len, Source::Bits)
}

/// DCF root seeds both parties draw.
pub(crate) fn roots(len: usize) -> Part {
    part(len, Source::Roots)
}

/// A derived part, corrected for party 1 in `width` bits.
pub(crate) fn corrected(len: usize, width: u32) -> Part {
    part(len, Source::Corrected(width))
}

/// `len` elements when `on`, else none (nothing drawn, nothing sent).
pub(crate) fn on(on: bool, len: usize) -> usize {
    if on { len } else { 0 }
}

fn part(len: usize, source: Source) -> Part {
    Part {
        name: "",
        len,
        source,
    }
}

/// A drawn part's values.
#[derive(Clone)]
pub(crate) enum Value {
    Words(Vec<u64>),
    Bits(Vec<u8>),
    Blocks(Vec<Block>),
}

/// The field types a part can have.
pub(crate) trait PartValue: Sized {
    /// The field from its drawn value.
    fn from_value(v: Value) -> Self;
    /// The words, for a word part.
    fn words(&self) -> Option<&Vec<u64>>;
    /// The words, for a word part.
    fn words_mut(&mut self) -> Option<&mut Vec<u64>>;
}

impl PartValue for Vec<u64> {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Words(w) => w,
            _ => unreachable!("a word part is drawn as words"),
        }
    }
    fn words(&self) -> Option<&Vec<u64>> {
        Some(self)
    }
    fn words_mut(&mut self) -> Option<&mut Vec<u64>> {
        Some(self)
    }
}

impl PartValue for Vec<u8> {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Bits(b) => b,
            _ => unreachable!("a bit part is drawn as bits"),
        }
    }
    fn words(&self) -> Option<&Vec<u64>> {
        None
    }
    fn words_mut(&mut self) -> Option<&mut Vec<u64>> {
        None
    }
}

impl PartValue for Vec<Block> {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Blocks(b) => b,
            _ => unreachable!("a root part is drawn as blocks"),
        }
    }
    fn words(&self) -> Option<&Vec<u64>> {
        None
    }
    fn words_mut(&mut self) -> Option<&mut Vec<u64>> {
        None
    }
}

/// The DCF keys of a kind: the same correction words to both parties, sent
/// ahead of party 1's corrections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyShape {
    /// No keys.
    None,
    /// `count` arithmetic DCF keys ([`DcfKeys`]) of `depth` levels, a
    /// `width`-word payload and early exits at `stops`.
    Dcf {
        depth: u32,
        width: usize,
        stops: Vec<u32>,
        count: usize,
    },
    /// `count` XOR-output DCF keys ([`BitKeys`]) of `depth` levels.
    Bit { depth: u32, count: usize },
}

impl KeyShape {
    /// Bytes of the keys.
    pub(crate) fn wire_len(&self) -> usize {
        match self {
            KeyShape::None => 0,
            KeyShape::Dcf {
                depth,
                width,
                stops,
                count,
            } => count * DcfKeys::wire_len_stopping(*depth, *width, stops.len()),
            KeyShape::Bit { depth, count } => count * BitKeys::wire_len(*depth),
        }
    }
}

/// A kind's keys field.
pub(crate) trait Keys: Sized {
    /// No keys (what drawing leaves until the dealer's message arrives).
    fn none() -> Self;
    /// Keys of zero corrections (recording a plan, or before expansion).
    fn zeros(shape: &KeyShape) -> Self;
    /// Keys from their wire bytes, whose length is `shape.wire_len()`.
    fn read(shape: &KeyShape, bytes: &[u8]) -> Self;
}

impl Keys for () {
    fn none() -> Self {}
    fn zeros(_: &KeyShape) -> Self {}
    fn read(_: &KeyShape, _: &[u8]) -> Self {}
}

impl Keys for DcfKeys {
    fn none() -> Self {
        DcfKeys::placeholder(1, 0)
    }
    fn zeros(shape: &KeyShape) -> Self {
        let KeyShape::Dcf {
            depth,
            width,
            stops,
            count,
        } = shape
        else {
            unreachable!("DCF keys have a DCF shape")
        };
        DcfKeys::placeholder_stopping(*depth, *width, stops.clone(), *count)
    }
    fn read(shape: &KeyShape, bytes: &[u8]) -> Self {
        let KeyShape::Dcf {
            depth,
            width,
            stops,
            ..
        } = shape
        else {
            unreachable!("DCF keys have a DCF shape")
        };
        DcfKeys::from_bytes_stopping(*depth, *width, stops.clone(), bytes.to_vec())
            .expect("length and stops checked")
    }
}

impl Keys for BitKeys {
    fn none() -> Self {
        BitKeys::placeholder(1, 0)
    }
    fn zeros(shape: &KeyShape) -> Self {
        let KeyShape::Bit { depth, count } = shape else {
            unreachable!("bit keys have a bit shape")
        };
        BitKeys::placeholder(*depth, *count)
    }
    fn read(shape: &KeyShape, bytes: &[u8]) -> Self {
        let KeyShape::Bit { depth, .. } = shape else {
            unreachable!("bit keys have a bit shape")
        };
        BitKeys::from_bytes(*depth, bytes.to_vec()).expect("length checked")
    }
}

/// A correlation kind: its material's declaration (parts and keys) and how
/// the dealer derives the corrected parts.
pub(crate) trait Kind: Sized {
    /// The type of its keys (`()` for none).
    type Keys: Keys;
    /// The parts of the material for `req`, in the order they are drawn
    /// (and, for the corrected ones, sent).
    fn parts(req: &Request) -> Vec<Part>;
    /// The shape of its keys for `req`.
    fn key_shape(req: &Request) -> KeyShape;
    /// The material from its drawn parts (in [`Kind::parts`] order) and keys.
    fn assemble(values: Vec<Value>, keys: Self::Keys) -> Self;
    /// Each part's words (`None` for bits and roots), in [`Kind::parts`] order.
    fn words(&self) -> Vec<Option<&Vec<u64>>>;
    /// [`Kind::words`], mutable.
    fn words_mut(&mut self) -> Vec<Option<&mut Vec<u64>>>;
    /// The material of no elements (the start of [`Kind::derive`]'s result).
    fn empty() -> Self;
    /// The dealer's side: from both parties' drawn material, the full value
    /// of each corrected part (in its field; parts that party 0 did not draw
    /// may stay empty) and the keys' wire bytes.
    fn derive(
        masks: &mut crate::dealer::masks::Masks,
        req: &Request,
        m0: &Self,
        m1: &Self,
    ) -> Result<(Self, Vec<u8>)>;
}

/// Draw every part of `parts` that `party` draws from `prg`, in order;
/// corrected parts are party 0's share (drawn) or zero (party 1).
pub(crate) fn draw_parts(parts: &[Part], party: Party, prg: &mut Prg) -> Vec<Value> {
    parts
        .iter()
        .map(|p| match p.source {
            Source::Drawn => Value::Words(prg.u64s(p.len)),
            Source::DrawnLow(bits) => {
                let mask = low_mask(bits);
                Value::Words(prg.u64s(p.len).into_iter().map(|x| x & mask).collect())
            }
            Source::Bits => Value::Bits(prg.bits(p.len)),
            Source::Roots => Value::Blocks((0..p.len).map(|_| prg.block()).collect()),
            Source::Corrected(_) => Value::Words(if party == Party::P0 {
                prg.u64s(p.len)
            } else {
                vec![0; p.len]
            }),
        })
        .collect()
}

/// Draw `K`'s material for `req` (keys: none yet).
pub(crate) fn draw_kind<K: Kind>(req: &Request, party: Party, prg: &mut Prg) -> K {
    let parts = K::parts(req);
    K::assemble(draw_parts(&parts, party, prg), K::Keys::none())
}

/// Bytes the dealer sends to `party` for `K`'s `req`: the keys, and party
/// 1's corrections.
pub(crate) fn dealer_bytes<K: Kind>(req: &Request, party: Party) -> usize {
    let corrections = if party == Party::P1 {
        K::parts(req).iter().map(Part::correction_len).sum()
    } else {
        0
    };
    K::key_shape(req).wire_len() + corrections
}

/// Append party 1's correction `full − mine` of each corrected part, the
/// low bits of its width packed densely, where party 0 drew that part
/// (`mine` non-empty).
pub(crate) fn put_corrections<K: Kind>(parts: &[Part], mine: &K, full: &K, out: &mut Vec<u8>) {
    for ((p, mine), full) in parts.iter().zip(mine.words()).zip(full.words()) {
        let (Source::Corrected(bits), Some(mine), Some(full)) = (p.source, mine, full) else {
            continue;
        };
        if mine.is_empty() || bits == 0 {
            continue;
        }
        debug_assert_eq!(full.len(), p.len, "{}: derived length", p.name);
        out.extend(crate::channel::pack(&ring::sub(full, mine), bits.min(64)));
    }
}

/// Fill party 1's corrected parts, in order and each at its drawn length
/// and width, from the dealer's message (the inverse of [`put_corrections`]).
pub(crate) fn fill_corrections<K: Kind>(parts: &[Part], m: &mut K, msg: &[u8]) {
    let mut rest = msg;
    for (p, v) in parts.iter().zip(m.words_mut()) {
        let (Source::Corrected(bits), Some(v)) = (p.source, v) else {
            continue;
        };
        let bits = bits.min(64);
        let len = crate::channel::packed_len(v.len(), bits);
        *v = crate::channel::unpack(&rest[..len], v.len(), bits);
        rest = &rest[len..];
    }
}

/// `full()` where party 0 drew the part (`mine` non-empty), else nothing:
/// a derived value is computed only when it is sent.
pub(crate) fn need(mine: &[u64], full: impl FnOnce() -> Vec<u64>) -> Vec<u64> {
    if mine.is_empty() { Vec::new() } else { full() }
}

/// `(v >> shift, msb(v))` elementwise: a mask's truncated part and its top
/// bit, as the truncations' corrections need them.
pub(crate) fn high_and_msb(v: &[u64], shift: u32) -> (Vec<u64>, Vec<u64>) {
    (
        v.iter().map(|x| x >> shift).collect(),
        v.iter().map(|x| x >> 63).collect(),
    )
}

/// `2^bits − 1` (all ones for 64).
pub fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

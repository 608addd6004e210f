//! The key format of the ring-output DCF: its node's value blocks (the PRG
//! itself is [`super::tree`]'s), the leaf's and a stop's conversion, and the
//! correction words each key carries.

use super::tree::{Aes, cipher, mmo, mmo_output};
use aes::cipher::BlockEncrypt;

/// A 128-bit DCF seed.
pub type Block = [u8; 16];

/// Value blocks per node for payloads of `width` words: one block holding
/// both children's word for width 1, else `⌈width/2⌉` blocks per child.
pub(super) fn value_blocks(width: usize) -> usize {
    if width == 1 { 1 } else { 2 * width.div_ceil(2) }
}

/// Value blocks a point evaluates per level (its side's).
pub(super) fn side_blocks(width: usize) -> usize {
    if width == 1 { 1 } else { width.div_ceil(2) }
}

/// The tweak of child `side`'s `i`-th value block.
pub(super) fn value_tweak(width: usize, side: usize, i: usize) -> u8 {
    if width == 1 {
        2
    } else {
        (2 + side * width.div_ceil(2) + i) as u8
    }
}

/// Word `q` of child `side` from that child's value blocks `vals` (MMO
/// outputs, in [`value_tweak`] order; for width 1, the one shared block).
pub(super) fn value_word(width: usize, vals: &[[u8; 16]], side: usize, q: usize) -> u64 {
    let (b, half) = if width == 1 {
        (0, side)
    } else {
        (q / 2, q % 2)
    };
    u64::from_le_bytes(vals[b][8 * half..8 * half + 8].try_into().expect("8 bytes"))
}

/// A node's full expansion for `width`-word payloads: both children's raw
/// outputs (seed and control bit, [`super::tree::follow`] corrects them) and
/// the value blocks of both children.
pub(super) fn expand(seed: u128, width: usize) -> ([u128; 2], Vec<[u8; 16]>) {
    let vb = value_blocks(width);
    let mut blocks: Vec<Aes> = (0..2 + vb)
        .map(|i| super::tree::mmo_input(seed, i as u128))
        .collect();
    cipher().encrypt_blocks(&mut blocks);
    let children = [0, 1].map(|side| mmo_output(&blocks[side], seed, side as u128));
    let vals = (0..vb)
        .map(|i| mmo_output(&blocks[2 + i], seed, (2 + i) as u128).to_le_bytes())
        .collect();
    (children, vals)
}

/// Child `side`'s value blocks out of a node's full list.
pub(super) fn side_values(width: usize, vals: &[[u8; 16]], side: usize) -> &[[u8; 16]] {
    if width == 1 {
        vals
    } else {
        let k = width.div_ceil(2);
        &vals[side * k..(side + 1) * k]
    }
}

/// Word `q` of a leaf's output from its final seed: the seed's low and high
/// halves, then the MMO blocks of tweak 2, 3, … (words 2 and on).
pub(super) fn leaf_word(seed: u128, q: usize) -> u64 {
    let block = if q < 2 {
        seed
    } else {
        mmo(seed, (2 + (q - 2) / 2) as u128)
    };
    (block >> (64 * (q % 2))) as u64
}

/// Word `q` of a node's conversion at a stop, `G'(s)`: AES-MMO blocks of
/// the seed under tweaks `0x40 + ⌊q/2⌋`, which no expansion uses.
pub(super) fn stop_word(seed: u128, q: usize) -> u64 {
    stop_word_pair(seed, q / 2)[q % 2]
}

/// Words `2i` and `2i + 1` of [`stop_word`] (one AES block).
pub(super) fn stop_word_pair(seed: u128, i: usize) -> [u64; 2] {
    let out = mmo(seed, 0x40 + i as u128);
    [out as u64, (out >> 64) as u64]
}

pub(super) fn sign(t: u8) -> u64 {
    if t == 0 { 1 } else { u64::MAX }
}

/// The correction words of a batch of keys of one depth and payload width,
/// kept as their wire bytes (no allocation per key; evaluation reads them in
/// place). Both parties hold the same words. `Debug` is opaque.
///
/// Layout of key `i` (each [`DcfKeys::wire_len_stopping`] bytes, at
/// `i·wire_len`): `bits` seed corrections (16 bytes each), `bits` value
/// corrections (`8·width` bytes each, word by word), the `2·bits`
/// control-bit corrections packed (bit `2l` = t_L, `2l + 1` = t_R of level
/// `l`), the final value correction (`8·width` bytes), then one value
/// correction (`8·width` bytes) per *stop*.
///
/// Stops (early exits): a key may let points end their walk at a depth `d
/// < bits` given when the keys are made; such a point is evaluated as if
/// its input's low `bits − d` bits were 0 (`β·[x' < α]` with `x' = x` with
/// those bits cleared), at the cost of `d` levels instead of `bits`. Off
/// α's path the two parties' seeds agree below the level where the path
/// left it, so their outputs already sum to the result there; on α's path
/// the stop's correction turns the node's pseudo-random conversion
/// (`G'(s)`, the seed's AES-MMO blocks under their own tweaks, never used
/// to expand a child) into `β·[α mod 2^(bits−d) ≠ 0]`.
#[derive(Clone, PartialEq, Eq)]
pub struct DcfKeys {
    pub(super) bits: u32,
    pub(super) width: usize,
    pub(super) stops: Vec<u32>,
    pub(super) bytes: Vec<u8>,
}

impl std::fmt::Debug for DcfKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DcfKeys(<{} keys of {} levels, {} words>)",
            self.len(),
            self.bits,
            self.width
        )
    }
}

impl DcfKeys {
    /// Bytes of one key's correction words for `bits`-bit inputs and a
    /// one-word payload.
    pub fn wire_len(bits: u32) -> usize {
        Self::wire_len_of(bits, 1)
    }

    /// Bytes of one key's correction words for `bits`-bit inputs and a
    /// `width`-word payload: `bits·(16 + 8·width) + ⌈2·bits/8⌉ + 8·width`.
    pub fn wire_len_of(bits: u32, width: usize) -> usize {
        Self::wire_len_stopping(bits, width, 0)
    }

    /// Bytes of one key with `stops` early exits: [`DcfKeys::wire_len_of`]
    /// plus `8·width` per stop.
    pub fn wire_len_stopping(bits: u32, width: usize, stops: usize) -> usize {
        bits as usize * (16 + 8 * width) + (2 * bits as usize).div_ceil(8) + 8 * width * (1 + stops)
    }

    /// Keys of a one-word payload read from their wire bytes (a whole number
    /// of keys), or `None`.
    pub fn from_bytes(bits: u32, bytes: Vec<u8>) -> Option<DcfKeys> {
        Self::from_bytes_of(bits, 1, bytes)
    }

    /// Keys of a `width`-word payload read from their wire bytes, or `None`.
    pub fn from_bytes_of(bits: u32, width: usize, bytes: Vec<u8>) -> Option<DcfKeys> {
        Self::from_bytes_stopping(bits, width, Vec::new(), bytes)
    }

    /// Keys with early exits at the depths `stops` (increasing, below
    /// `bits`) read from their wire bytes, or `None`.
    pub fn from_bytes_stopping(
        bits: u32,
        width: usize,
        stops: Vec<u32>,
        bytes: Vec<u8>,
    ) -> Option<DcfKeys> {
        (stops_valid(&stops, bits)
            && bytes
                .len()
                .is_multiple_of(Self::wire_len_stopping(bits, width, stops.len())))
        .then_some(DcfKeys {
            bits,
            width,
            stops,
            bytes,
        })
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The wire bytes, without a copy.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Input bits (tree depth).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Payload words.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.key_len()
    }

    pub(super) fn key_len(&self) -> usize {
        Self::wire_len_stopping(self.bits, self.width, self.stops.len())
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `n` keys of zero corrections (used when recording a plan).
    pub fn placeholder(bits: u32, n: usize) -> DcfKeys {
        Self::placeholder_of(bits, 1, n)
    }

    /// `n` keys of zero corrections with a `width`-word payload.
    pub fn placeholder_of(bits: u32, width: usize, n: usize) -> DcfKeys {
        Self::placeholder_stopping(bits, width, Vec::new(), n)
    }

    /// `n` keys of zero corrections with early exits at `stops`.
    pub fn placeholder_stopping(bits: u32, width: usize, stops: Vec<u32>, n: usize) -> DcfKeys {
        let bytes = vec![0; n * Self::wire_len_stopping(bits, width, stops.len())];
        DcfKeys {
            bits,
            width,
            stops,
            bytes,
        }
    }

    pub(super) fn key(&self, i: usize) -> KeyRef<'_> {
        self.key_at(i, self.key_len())
    }

    /// Key `i` given [`DcfKeys::key_len`] (hoisted out of hot loops).
    pub(super) fn key_at(&self, i: usize, key_len: usize) -> KeyRef<'_> {
        KeyRef {
            n: self.bits as usize,
            width: self.width,
            b: &self.bytes[i * key_len..(i + 1) * key_len],
        }
    }

    /// The stop slot of each depth `0..=bits` (`None`: no stop there; the
    /// full depth uses the final correction).
    pub(super) fn stop_slots(&self) -> Vec<Option<usize>> {
        slots_of(&self.stops, self.bits)
    }
}

/// Whether `stops` are valid early exits of a `bits`-level key: increasing,
/// each in `1..bits`.
pub(super) fn stops_valid(stops: &[u32], bits: u32) -> bool {
    stops.windows(2).all(|w| w[0] < w[1]) && stops.iter().all(|&d| d >= 1 && d < bits)
}

/// The stop slot of each depth `0..=bits` for the early exits `stops`.
pub(super) fn slots_of(stops: &[u32], bits: u32) -> Vec<Option<usize>> {
    let mut slots = vec![None; bits as usize + 1];
    for (i, &d) in stops.iter().enumerate() {
        slots[d as usize] = Some(i);
    }
    slots
}

/// One key's correction words, read in place.
#[derive(Clone, Copy)]
pub(super) struct KeyRef<'a> {
    pub(super) n: usize,
    pub(super) width: usize,
    pub(super) b: &'a [u8],
}

impl KeyRef<'_> {
    pub(super) fn seed(&self, l: usize) -> u128 {
        u128::from_le_bytes(self.b[16 * l..16 * l + 16].try_into().expect("16 bytes"))
    }
    pub(super) fn value(&self, l: usize, q: usize) -> u64 {
        let at = 16 * self.n + 8 * (self.width * l + q);
        u64::from_le_bytes(self.b[at..at + 8].try_into().expect("8 bytes"))
    }
    /// Bit 0 = t_L correction, bit 1 = t_R correction.
    pub(super) fn tbits(&self, l: usize) -> u8 {
        (self.b[(16 + 8 * self.width) * self.n + (2 * l) / 8] >> ((2 * l) % 8)) & 3
    }
    pub(super) fn last(&self, q: usize) -> u64 {
        let at = (16 + 8 * self.width) * self.n + (2 * self.n).div_ceil(8) + 8 * q;
        u64::from_le_bytes(self.b[at..at + 8].try_into().expect("8 bytes"))
    }
    /// Word `q` of stop slot `i`'s correction.
    pub(super) fn stop(&self, i: usize, q: usize) -> u64 {
        self.last(self.width * (1 + i) + q)
    }
}

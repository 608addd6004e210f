//! Distributed comparison functions (Boyle et al., EUROCRYPT 2021, Fig. 3).
//!
//! A DCF key pair for `(α, β)` over `n`-bit inputs lets each party evaluate
//! locally, at any public `x`, a share of `f(x) = β · [x < α]` in Z_2^64.
//! Neither key alone reveals anything about `α` or `β`.
//!
//! Construction: a GGM-style tree of depth `n` over 128-bit seeds; the PRG
//! `G(s)` is fixed-key AES-128 in Matyas–Meyer–Oseas mode (three blocks per
//! node: left seed, right seed, and the two 64-bit value words). Each level
//! carries one correction word of 16 + 8 bytes and two control bits; the key
//! of party `b` is its root seed plus the `n + 1` correction words, which are
//! the same for both parties.
//!
//! Cost: `Gen` is 6·n AES blocks per key ([`generate_batch`] pipelines them
//! over many keys), `Eval` is 2·n AES blocks per point in [`eval_batch`].
//! Key material: 16 bytes of root seed (drawn from the party's own PRG stream,
//! so it is never sent) plus `n·24 + ⌈2n/8⌉ + 8` bytes of correction words,
//! sent to both parties, and held as those bytes ([`DcfKeys`]).

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use std::sync::OnceLock;

/// A 128-bit DCF seed.
pub type Block = [u8; 16];

pub(crate) fn cipher() -> &'static Aes128 {
    static C: OnceLock<Aes128> = OnceLock::new();
    C.get_or_init(|| {
        // A fixed, public key: the construction only needs a fixed random permutation.
        Aes128::new(&GenericArray::from(*b"mpcvit dcf prg k"))
    })
}

/// Value blocks per node for payloads of `width` words: one block holding
/// both children's word for width 1, else `⌈width/2⌉` blocks per child.
fn value_blocks(width: usize) -> usize {
    if width == 1 { 1 } else { 2 * width.div_ceil(2) }
}

/// Value blocks a point evaluates per level (its side's).
fn side_blocks(width: usize) -> usize {
    if width == 1 { 1 } else { width.div_ceil(2) }
}

/// The tweak of child `side`'s `i`-th value block.
fn value_tweak(width: usize, side: usize, i: usize) -> u8 {
    if width == 1 {
        2
    } else {
        (2 + side * width.div_ceil(2) + i) as u8
    }
}

/// Word `q` of child `side` from that child's value blocks `vals` (MMO
/// outputs, in [`value_tweak`] order; for width 1, the one shared block).
fn value_word(width: usize, vals: &[[u8; 16]], side: usize, q: usize) -> u64 {
    let (b, half) = if width == 1 {
        (0, side)
    } else {
        (q / 2, q % 2)
    };
    u64::from_le_bytes(vals[b][8 * half..8 * half + 8].try_into().expect("8 bytes"))
}

/// Matyas–Meyer–Oseas: `E(seed ⊕ tweak) ⊕ (seed ⊕ tweak)`.
fn mmo(enc: &GenericArray<u8, aes::cipher::consts::U16>, seed: &Block, tweak: u8) -> [u8; 16] {
    let mut input = *seed;
    input[0] ^= tweak;
    let mut out = [0u8; 16];
    for j in 0..16 {
        out[j] = enc[j] ^ input[j];
    }
    out
}

/// One tree node's expansion: seeds and control bits of both children.
struct Expanded {
    s: [Block; 2],
    t: [u8; 2],
}

fn seeds_of(left: [u8; 16], right: [u8; 16]) -> Expanded {
    let mut out = [left, right];
    let t = [out[0][0] & 1, out[1][0] & 1];
    out[0][0] &= 0xfe;
    out[1][0] &= 0xfe;
    Expanded { s: out, t }
}

/// A node's full expansion for `width`-word payloads: children's seeds and
/// control bits, and the value blocks of both children.
fn expand(seed: &Block, width: usize) -> (Expanded, Vec<[u8; 16]>) {
    let vb = value_blocks(width);
    let mut blocks = vec![GenericArray::from(*seed); 2 + vb];
    for (i, b) in blocks.iter_mut().enumerate() {
        b[0] ^= i as u8;
    }
    cipher().encrypt_blocks(&mut blocks);
    let e = seeds_of(mmo(&blocks[0], seed, 0), mmo(&blocks[1], seed, 1));
    let vals = (0..vb)
        .map(|i| mmo(&blocks[2 + i], seed, (2 + i) as u8))
        .collect();
    (e, vals)
}

/// Child `side`'s value blocks out of a node's full list.
fn side_values(width: usize, vals: &[[u8; 16]], side: usize) -> &[[u8; 16]] {
    if width == 1 {
        vals
    } else {
        let k = width.div_ceil(2);
        &vals[side * k..(side + 1) * k]
    }
}

/// Word `q` of a leaf's output from its final seed: the seed's low and high
/// halves, then the MMO blocks of tweak 2, 3, … (words 2 and on).
fn leaf_word(seed: &Block, q: usize) -> u64 {
    if q < 2 {
        return u64::from_le_bytes(seed[8 * q..8 * q + 8].try_into().expect("8 bytes"));
    }
    let tweak = 2 + (q - 2) / 2;
    let mut b = GenericArray::from(*seed);
    b[0] ^= tweak as u8;
    cipher().encrypt_block(&mut b);
    let out = mmo(&b, seed, tweak as u8);
    let half = (q - 2) % 2;
    u64::from_le_bytes(out[8 * half..8 * half + 8].try_into().expect("8 bytes"))
}

/// Word `q` of a node's conversion at a stop, `G'(s)`: AES-MMO blocks of
/// the seed under tweaks `0x40 + ⌊q/2⌋`, which no expansion uses.
fn stop_word(seed: &Block, q: usize) -> u64 {
    stop_word_pair(seed, q / 2)[q % 2]
}

/// Words `2i` and `2i + 1` of [`stop_word`] (one AES block).
fn stop_word_pair(seed: &Block, i: usize) -> [u64; 2] {
    let tweak = 0x40 + i as u8;
    let mut b = GenericArray::from(*seed);
    b[0] ^= tweak;
    cipher().encrypt_block(&mut b);
    let out = mmo(&b, seed, tweak);
    [
        u64::from_le_bytes(out[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(out[8..].try_into().expect("8 bytes")),
    ]
}

fn xor(a: &Block, b: &Block) -> Block {
    let mut o = [0u8; 16];
    for i in 0..16 {
        o[i] = a[i] ^ b[i];
    }
    o
}

fn sign(t: u8) -> u64 {
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
    bits: u32,
    width: usize,
    stops: Vec<u32>,
    bytes: Vec<u8>,
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

    fn key_len(&self) -> usize {
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

    fn key(&self, i: usize) -> KeyRef<'_> {
        self.key_at(i, self.key_len())
    }

    /// Key `i` given [`DcfKeys::key_len`] (hoisted out of hot loops).
    fn key_at(&self, i: usize, key_len: usize) -> KeyRef<'_> {
        KeyRef {
            n: self.bits as usize,
            width: self.width,
            b: &self.bytes[i * key_len..(i + 1) * key_len],
        }
    }

    /// The stop slot of each depth `0..=bits` (`None`: no stop there; the
    /// full depth uses the final correction).
    fn stop_slots(&self) -> Vec<Option<usize>> {
        slots_of(&self.stops, self.bits)
    }
}

/// Whether `stops` are valid early exits of a `bits`-level key: increasing,
/// each in `1..bits`.
fn stops_valid(stops: &[u32], bits: u32) -> bool {
    stops.windows(2).all(|w| w[0] < w[1]) && stops.iter().all(|&d| d >= 1 && d < bits)
}

/// The stop slot of each depth `0..=bits` for the early exits `stops`.
fn slots_of(stops: &[u32], bits: u32) -> Vec<Option<usize>> {
    let mut slots = vec![None; bits as usize + 1];
    for (i, &d) in stops.iter().enumerate() {
        slots[d as usize] = Some(i);
    }
    slots
}

/// One key's correction words, read in place.
#[derive(Clone, Copy)]
struct KeyRef<'a> {
    n: usize,
    width: usize,
    b: &'a [u8],
}

impl KeyRef<'_> {
    fn seed(&self, l: usize) -> u128 {
        u128::from_le_bytes(self.b[16 * l..16 * l + 16].try_into().expect("16 bytes"))
    }
    fn value(&self, l: usize, q: usize) -> u64 {
        let at = 16 * self.n + 8 * (self.width * l + q);
        u64::from_le_bytes(self.b[at..at + 8].try_into().expect("8 bytes"))
    }
    /// Bit 0 = t_L correction, bit 1 = t_R correction.
    fn tbits(&self, l: usize) -> u8 {
        (self.b[(16 + 8 * self.width) * self.n + (2 * l) / 8] >> ((2 * l) % 8)) & 3
    }
    fn last(&self, q: usize) -> u64 {
        let at = (16 + 8 * self.width) * self.n + (2 * self.n).div_ceil(8) + 8 * q;
        u64::from_le_bytes(self.b[at..at + 8].try_into().expect("8 bytes"))
    }
    /// Word `q` of stop slot `i`'s correction.
    fn stop(&self, i: usize, q: usize) -> u64 {
        self.last(self.width * (1 + i) + q)
    }
}

/// Generate the correction words of one key pair for `f(x) = β·[x < α]` on
/// `bits`-bit inputs, given the two parties' root seeds.
pub fn generate(bits: u32, alpha: u64, beta: u64, root0: &Block, root1: &Block) -> DcfKeys {
    generate_batch(bits, &[alpha], &[beta], &[*root0], &[*root1])
}

/// Generate many key pairs (key `i` for `β_i·[x < α_i]` from roots
/// `roots0[i]`, `roots1[i]`). See [`generate_batch_of`].
pub fn generate_batch(
    bits: u32,
    alphas: &[u64],
    betas: &[u64],
    roots0: &[Block],
    roots1: &[Block],
) -> DcfKeys {
    generate_batch_of(bits, 1, alphas, betas, roots0, roots1)
}

/// Generate many key pairs with `width`-word payloads: key `i` for
/// `β_i·[x < α_i]` with `β_i = betas[i·width..(i + 1)·width]`. The trees are
/// walked level by level for a chunk of keys at a time so that AES runs
/// over long buffers (pipelined AES-NI): `2·(2 + value blocks)` blocks per
/// key and level (6 for one or two words, 10 for three or four). Same
/// output as one key at a time.
pub fn generate_batch_of(
    bits: u32,
    width: usize,
    alphas: &[u64],
    betas: &[u64],
    roots0: &[Block],
    roots1: &[Block],
) -> DcfKeys {
    generate_batch_stopping(bits, width, &[], alphas, betas, roots0, roots1)
}

/// [`generate_batch_of`] with early exits at the depths `stops`
/// (increasing, each in `1..bits`; see [`DcfKeys`]): `8·width` bytes more
/// per key and stop, and `2·⌈width/2⌉` AES blocks per key and stop.
pub fn generate_batch_stopping(
    bits: u32,
    width: usize,
    stops: &[u32],
    alphas: &[u64],
    betas: &[u64],
    roots0: &[Block],
    roots1: &[Block],
) -> DcfKeys {
    assert!((1..=64).contains(&bits), "dcf: {bits} input bits");
    assert!(
        stops_valid(stops, bits),
        "dcf: stops {stops:?} of {bits} levels"
    );
    assert!((1..=8).contains(&width), "dcf: payload of {width} words");
    let k = alphas.len();
    assert!(
        betas.len() == k * width && roots0.len() == k && roots1.len() == k,
        "dcf generate: inputs differ in length"
    );
    let n = bits as usize;
    let wl = DcfKeys::wire_len_stopping(bits, width, stops.len());
    let last_at = (16 + 8 * width) * n + (2 * n).div_ceil(8);
    let slots = slots_of(stops, bits);
    let vb = value_blocks(width);
    let per = 2 + vb;
    let mut bytes = vec![0u8; k * wl];
    const CHUNK: usize = 512;
    let mut buf = vec![GenericArray::from([0u8; 16]); 2 * per * CHUNK];
    for start in (0..k).step_by(CHUNK) {
        let end = (start + CHUNK).min(k);
        let m = end - start;
        let mut s: Vec<[Block; 2]> = (start..end).map(|i| [roots0[i], roots1[i]]).collect();
        let mut t = vec![[0u8, 1u8]; m];
        let mut v_alpha = vec![0u64; m * width];
        for lvl in 0..n {
            for (blocks, sk) in buf.chunks_exact_mut(2 * per).zip(&s) {
                for b in 0..2 {
                    for i in 0..per {
                        let mut blk = sk[b];
                        blk[0] ^= i as u8;
                        blocks[per * b + i] = GenericArray::from(blk);
                    }
                }
            }
            cipher().encrypt_blocks(&mut buf[..2 * per * m]);
            for j in 0..m {
                let key = start + j;
                let enc = &buf[2 * per * j..2 * per * (j + 1)];
                let mut e = Vec::with_capacity(2);
                let mut vals = Vec::with_capacity(2);
                for b in 0..2 {
                    let sb = &s[j][b];
                    let x = &enc[per * b..per * (b + 1)];
                    e.push(seeds_of(mmo(&x[0], sb, 0), mmo(&x[1], sb, 1)));
                    vals.push(
                        (0..vb)
                            .map(|i| mmo(&x[2 + i], sb, (2 + i) as u8))
                            .collect::<Vec<_>>(),
                    );
                }
                let a = ((alphas[key] >> (n - 1 - lvl)) & 1) as usize;
                let (keep, lose) = (a, 1 - a);
                let s_cw = xor(&e[0].s[lose], &e[1].s[lose]);
                let sg = sign(t[j][1]);
                let out = &mut bytes[key * wl..(key + 1) * wl];
                for q in 0..width {
                    let word = |b: usize, side: usize| {
                        value_word(width, side_values(width, &vals[b], side), side, q)
                    };
                    let va = &mut v_alpha[j * width + q];
                    let mut v_cw = sg
                        .wrapping_mul(word(1, lose).wrapping_sub(word(0, lose)).wrapping_sub(*va));
                    if lose == 0 {
                        v_cw = v_cw.wrapping_add(sg.wrapping_mul(betas[key * width + q]));
                    }
                    *va = va
                        .wrapping_sub(word(1, keep))
                        .wrapping_add(word(0, keep))
                        .wrapping_add(sg.wrapping_mul(v_cw));
                    let at = 16 * n + 8 * (width * lvl + q);
                    out[at..at + 8].copy_from_slice(&v_cw.to_le_bytes());
                }
                let t_cw = [
                    e[0].t[0] ^ e[1].t[0] ^ a as u8 ^ 1,
                    e[0].t[1] ^ e[1].t[1] ^ a as u8,
                ];
                for b in 0..2 {
                    s[j][b] = if t[j][b] == 1 {
                        xor(&e[b].s[keep], &s_cw)
                    } else {
                        e[b].s[keep]
                    };
                    t[j][b] = e[b].t[keep] ^ (t[j][b] & t_cw[keep]);
                }
                out[16 * lvl..16 * lvl + 16].copy_from_slice(&s_cw);
                out[(16 + 8 * width) * n + (2 * lvl) / 8] |=
                    (t_cw[0] | (t_cw[1] << 1)) << ((2 * lvl) % 8);
                if let Some(slot) = slots[lvl + 1] {
                    // on α's path at depth lvl + 1: the value of x' = prefix‖0…0
                    let low_bits = n - 1 - lvl;
                    let below = alphas[key] & ((1u64 << low_bits) - 1) != 0;
                    for q in 0..width {
                        let want = if below { betas[key * width + q] } else { 0 };
                        let cw = sign(t[j][1]).wrapping_mul(
                            stop_word(&s[j][1], q)
                                .wrapping_sub(stop_word(&s[j][0], q))
                                .wrapping_sub(v_alpha[j * width + q])
                                .wrapping_add(want),
                        );
                        let at = last_at + 8 * (width * (1 + slot) + q);
                        out[at..at + 8].copy_from_slice(&cw.to_le_bytes());
                    }
                }
            }
        }
        for j in 0..m {
            let key = start + j;
            for q in 0..width {
                let last = sign(t[j][1]).wrapping_mul(
                    leaf_word(&s[j][1], q)
                        .wrapping_sub(leaf_word(&s[j][0], q))
                        .wrapping_sub(v_alpha[j * width + q]),
                );
                let at = key * wl + last_at + 8 * q;
                bytes[at..at + 8].copy_from_slice(&last.to_le_bytes());
            }
        }
    }
    DcfKeys {
        bits,
        width,
        stops: stops.to_vec(),
        bytes,
    }
}

/// Party `party`'s share of `β_k·[x < α_k]` at the public point `x` (low
/// `bits` bits used) for key `k` of `keys`, one word per payload word. The
/// readable reference of [`eval_batch`].
pub fn eval_words(party: usize, root: &Block, keys: &DcfKeys, k: usize, x: u64) -> Vec<u64> {
    eval_words_at(party, root, keys, k, x, keys.bits)
}

/// [`eval_words`] for a point that stops at `depth` (the full depth, or one
/// of the keys' stops): party `party`'s share of `β_k·[x' < α_k]`, `x'` =
/// `x` with its low `bits − depth` bits cleared.
pub fn eval_words_at(
    party: usize,
    root: &Block,
    keys: &DcfKeys,
    k: usize,
    x: u64,
    depth: u32,
) -> Vec<u64> {
    let key = keys.key(k);
    let (n, width) = (key.n, key.width);
    let slot = keys.stop_slots()[depth as usize];
    assert!(
        depth == keys.bits || slot.is_some(),
        "dcf: no stop at depth {depth}"
    );
    let mut s = *root;
    let mut t = party as u8;
    let mut v = vec![0u64; width];
    let sg = if party == 0 { 1u64 } else { u64::MAX };
    for i in 0..depth as usize {
        let (mut e, vals) = expand(&s, width);
        if t == 1 {
            let cs = key.seed(i).to_le_bytes();
            e.s[0] = xor(&e.s[0], &cs);
            e.s[1] = xor(&e.s[1], &cs);
            e.t[0] ^= key.tbits(i) & 1;
            e.t[1] ^= key.tbits(i) >> 1;
        }
        let side = ((x >> (n - 1 - i)) & 1) as usize;
        for (q, vq) in v.iter_mut().enumerate() {
            let word = value_word(width, side_values(width, &vals, side), side, q);
            let add = word.wrapping_add(if t == 1 { key.value(i, q) } else { 0 });
            *vq = vq.wrapping_add(sg.wrapping_mul(add));
        }
        s = e.s[side];
        t = e.t[side];
    }
    for (q, vq) in v.iter_mut().enumerate() {
        let add = match slot {
            Some(i) => stop_word(&s, q).wrapping_add(if t == 1 { key.stop(i, q) } else { 0 }),
            None => leaf_word(&s, q).wrapping_add(if t == 1 { key.last(q) } else { 0 }),
        };
        *vq = vq.wrapping_add(sg.wrapping_mul(add));
    }
    v
}

/// [`eval_words`] of a one-word key.
pub fn eval(party: usize, root: &Block, keys: &DcfKeys, k: usize, x: u64) -> u64 {
    eval_words(party, root, keys, k, x)[0]
}

/// Evaluate many points at once: point `p` uses key `key_of[p]` (its root
/// seed in `roots` and its correction words in `keys`) at input `xs[p]`;
/// writes party `party`'s output shares to `out` (`width` words per point,
/// point-major). Same result as calling [`eval_words`] per point, but:
///
/// - points of one key that share the top bits of their input share the
///   tree walk down to where they part (the walk visits each distinct
///   prefix once). Points of a key should be adjacent in `key_of`; within
///   such a run they are visited in sorted order, so a key evaluated at
///   many nearby points (the ~200 thresholds of a piecewise reciprocal, all
///   at `ĉ − t_j`) costs the nodes of their common subtree, not 200 paths;
/// - the walk goes level by level over a batch of nodes so that AES runs
///   over long buffers (pipelined AES-NI), and a node encrypts only the
///   blocks of the side it takes (its seed and value blocks: 2 for one or
///   two words, 3 for three or four), with branch-free corrections.
pub fn eval_batch(
    party: usize,
    roots: &[Block],
    keys: &DcfKeys,
    key_of: &[usize],
    xs: &[u64],
    out: &mut [u64],
) {
    eval_batch_stopping(party, roots, keys, key_of, xs, &[], out)
}

/// [`eval_batch`] where point `p` stops at depth `depths[p]` (the full
/// depth or one of the keys' stops; an empty `depths`: every point at the
/// full depth), as [`eval_words_at`]: a point costs the distinct nodes of
/// its shortened path, plus `⌈width/2⌉` AES blocks for a stop's conversion.
pub fn eval_batch_stopping(
    party: usize,
    roots: &[Block],
    keys: &DcfKeys,
    key_of: &[usize],
    xs: &[u64],
    depths: &[u32],
    out: &mut [u64],
) {
    let width = keys.width;
    assert_eq!(
        key_of.len(),
        xs.len(),
        "dcf batch: keys and points differ in length"
    );
    assert!(
        depths.is_empty() || depths.len() == xs.len(),
        "dcf batch: depths and points differ in length"
    );
    assert_eq!(out.len(), xs.len() * width, "dcf batch: output length");
    let slots = keys.stop_slots();
    assert!(
        depths
            .iter()
            .all(|&d| d == keys.bits || slots.get(d as usize).is_some_and(|s| s.is_some())),
        "dcf batch: a depth without a stop"
    );
    let bits = keys.bits as usize;
    // Visit order: runs of equal key, each sorted by its low `bits` input bits.
    let low = |x: u64| {
        if bits >= 64 {
            x
        } else {
            x & ((1u64 << bits) - 1)
        }
    };
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut at = 0;
    while at < order.len() {
        let k = key_of[at];
        let end = (at..key_of.len())
            .find(|&p| key_of[p] != k)
            .unwrap_or(key_of.len());
        order[at..end].sort_unstable_by_key(|&p| low(xs[p]));
        at = end;
    }
    let full = vec![keys.bits; if depths.is_empty() { xs.len() } else { 0 }];
    let depths = if depths.is_empty() { &full[..] } else { depths };
    // chunks of points, each walked into its own outputs (in visiting
    // order), on several threads when there are enough points
    let parts = crate::parallel::parts(xs.len() * bits, xs.len().div_ceil(64));
    let size = Walk::POINTS.min(xs.len().div_ceil(parts)).max(1);
    let scatter = |out: &mut [u64], chunk: &[usize], words: &[u64]| {
        for (&p, w) in chunk.iter().zip(words.chunks_exact(width)) {
            out[p * width..(p + 1) * width].copy_from_slice(w);
        }
    };
    if parts == 1 {
        let mut walk = Walk::new(party, keys, slots);
        let mut words = vec![0u64; size * width];
        for chunk in order.chunks(size) {
            let words = &mut words[..chunk.len() * width];
            walk.run(roots, key_of, xs, depths, chunk, words);
            scatter(out, chunk, words);
        }
        return;
    }
    use rayon::prelude::*;
    let walked: Vec<Vec<u64>> = order
        .par_chunks(size)
        .map_init(
            || Walk::new(party, keys, slots.clone()),
            |walk, chunk| {
                let mut words = vec![0u64; chunk.len() * width];
                walk.run(roots, key_of, xs, depths, chunk, &mut words);
                words
            },
        )
        .collect();
    for (chunk, words) in order.chunks(size).zip(&walked) {
        scatter(out, chunk, words);
    }
}

/// The buffers of [`eval_batch`]'s tree walk over one chunk of points.
struct Walk<'a> {
    keys: &'a DcfKeys,
    slots: Vec<Option<usize>>,
    party: usize,
    sg: u64,
    /// Per node of the current level: seed, control bit, output words so
    /// far, key. Per point of the chunk: its node.
    seed: Vec<u128>,
    t: Vec<u8>,
    v: Vec<u64>,
    key: Vec<usize>,
    node_of: Vec<usize>,
    /// The next level's nodes: parent and side.
    parent: Vec<usize>,
    side: Vec<usize>,
    buf: Vec<GenericArray<u8, aes::cipher::consts::U16>>,
}

impl<'a> Walk<'a> {
    /// Points per chunk.
    const POINTS: usize = 1024;

    fn new(party: usize, keys: &'a DcfKeys, slots: Vec<Option<usize>>) -> Self {
        let per = 1 + side_blocks(keys.width);
        Walk {
            keys,
            slots,
            party,
            sg: if party == 0 { 1 } else { u64::MAX },
            seed: Vec::with_capacity(Self::POINTS),
            t: Vec::with_capacity(Self::POINTS),
            v: Vec::with_capacity(Self::POINTS * keys.width),
            key: Vec::with_capacity(Self::POINTS),
            node_of: Vec::with_capacity(Self::POINTS),
            parent: Vec::with_capacity(Self::POINTS),
            side: Vec::with_capacity(Self::POINTS),
            buf: vec![GenericArray::from([0u8; 16]); per * Self::POINTS],
        }
    }

    /// Evaluate the points `chunk` (indices into `key_of`, `xs`, `depths`;
    /// a key's points adjacent and sorted by input) into `out`, `width`
    /// words per point in the chunk's order.
    fn run(
        &mut self,
        roots: &[Block],
        key_of: &[usize],
        xs: &[u64],
        depths: &[u32],
        chunk: &[usize],
        out: &mut [u64],
    ) {
        let (width, bits, sg) = (self.keys.width, self.keys.bits as usize, self.sg);
        let key_len = self.keys.key_len();
        let sb = side_blocks(width);
        let per = 1 + sb;
        // level 0: one root node per run of equal key
        self.seed.clear();
        self.t.clear();
        self.v.clear();
        self.key.clear();
        self.node_of.clear();
        for (i, &p) in chunk.iter().enumerate() {
            if i == 0 || key_of[p] != key_of[chunk[i - 1]] {
                self.seed.push(u128::from_le_bytes(roots[key_of[p]]));
                self.t.push(self.party as u8);
                self.v.extend(std::iter::repeat_n(0, width));
                self.key.push(key_of[p]);
            }
            self.node_of.push(self.seed.len() - 1);
        }
        // each point's input and depth, in visiting order
        let px: Vec<u64> = chunk.iter().map(|&p| xs[p]).collect();
        let pd: Vec<u32> = chunk.iter().map(|&p| depths[p]).collect();
        // the points still walking (positions in `chunk`), in order
        let mut active: Vec<usize> = (0..chunk.len()).collect();
        let mut walking: Vec<usize> = Vec::with_capacity(chunk.len());
        let mut finished: Vec<usize> = Vec::new();
        let mut seed = Vec::with_capacity(chunk.len());
        let mut t = Vec::with_capacity(chunk.len());
        let mut v = Vec::with_capacity(chunk.len() * width);
        let mut key = Vec::with_capacity(chunk.len());
        for lvl in 0..bits {
            if active.is_empty() {
                break;
            }
            let shift = bits - 1 - lvl;
            // points that stop at this depth leave through their stop's
            // correction (from their node at this depth); the others make
            // the next level's nodes: a new one where the parent or the side changes
            self.parent.clear();
            self.side.clear();
            finished.clear();
            walking.clear();
            let mut last = (usize::MAX, usize::MAX);
            for &i in &active {
                if pd[i] as usize == lvl {
                    finished.push(i);
                    continue;
                }
                walking.push(i);
                let node = self.node_of[i];
                let side = ((px[i] >> shift) & 1) as usize;
                if (node, side) != last {
                    self.parent.push(node);
                    self.side.push(side);
                    last = (node, side);
                }
                self.node_of[i] = self.parent.len() - 1;
            }
            if !finished.is_empty() {
                let slot = self.slots[lvl].expect("depths are checked against the stops");
                self.finish(&finished, out, Conversion::Stop(slot));
            }
            std::mem::swap(&mut active, &mut walking);
            if active.is_empty() {
                break;
            }
            let m = self.parent.len();
            for ((blocks, &pn), &side) in self
                .buf
                .chunks_exact_mut(per)
                .zip(&self.parent)
                .zip(&self.side)
            {
                let sq = self.seed[pn];
                blocks[0] = GenericArray::from((sq ^ side as u128).to_le_bytes());
                for i in 0..sb {
                    let tw = value_tweak(width, side, i) as u128;
                    blocks[1 + i] = GenericArray::from((sq ^ tw).to_le_bytes());
                }
            }
            cipher().encrypt_blocks(&mut self.buf[..per * m]);
            seed.clear();
            t.clear();
            v.clear();
            key.clear();
            for (c, blocks) in self.buf.chunks_exact(per).take(m).enumerate() {
                let (pn, side) = (self.parent[c], self.side[c]);
                let (sq, tq, k) = (self.seed[pn], self.t[pn], self.key[pn]);
                let kr = self.keys.key_at(k, key_len);
                let mut s = u128::from_le_bytes(blocks[0].into()) ^ sq ^ side as u128;
                let mut tb = (s & 1) as u8;
                s &= !1;
                // Apply the level's correction when t = 1, without a branch.
                let mask = 0u64.wrapping_sub(tq as u64);
                for q in 0..width {
                    let (b, half) = if width == 1 {
                        (0, side)
                    } else {
                        (q / 2, q % 2)
                    };
                    let tw = value_tweak(width, side, b) as u128;
                    let val = ((u128::from_le_bytes(blocks[1 + b].into()) ^ sq ^ tw) >> (64 * half))
                        as u64;
                    let val = val.wrapping_add(kr.value(lvl, q) & mask);
                    v.push(self.v[pn * width + q].wrapping_add(sg.wrapping_mul(val)));
                }
                s ^= kr.seed(lvl) & (mask as u128 | (mask as u128) << 64);
                tb ^= (kr.tbits(lvl) >> side) & tq;
                seed.push(s);
                t.push(tb);
                key.push(k);
            }
            std::mem::swap(&mut self.seed, &mut seed);
            std::mem::swap(&mut self.t, &mut t);
            std::mem::swap(&mut self.v, &mut v);
            std::mem::swap(&mut self.key, &mut key);
        }
        self.finish(&active, out, Conversion::Leaf);
    }

    /// Write the outputs of the points at positions `done` of `chunk` from
    /// their nodes: `V + sg·(convert(s) + t·correction)`, once per node.
    fn finish(&self, done: &[usize], out: &mut [u64], how: Conversion) {
        let width = self.keys.width;
        let key_len = self.keys.key_len();
        let mut word = vec![0u64; width];
        let mut conv = vec![0u64; width.next_multiple_of(2)];
        let mut node_done = usize::MAX;
        for &i in done {
            let node = self.node_of[i];
            if node != node_done {
                let s = self.seed[node].to_le_bytes();
                let kr = self.keys.key_at(self.key[node], key_len);
                match how {
                    Conversion::Leaf => {
                        for (q, c) in conv.iter_mut().take(width).enumerate() {
                            *c = leaf_word(&s, q);
                        }
                    }
                    Conversion::Stop(_) => {
                        for (pair, c) in conv.chunks_exact_mut(2).enumerate() {
                            c.copy_from_slice(&stop_word_pair(&s, pair));
                        }
                    }
                }
                for (q, wq) in word.iter_mut().enumerate() {
                    let c = match how {
                        Conversion::Leaf => kr.last(q),
                        Conversion::Stop(slot) => kr.stop(slot, q),
                    };
                    let add = conv[q].wrapping_add(if self.t[node] == 1 { c } else { 0 });
                    *wq = self.v[node * width + q].wrapping_add(self.sg.wrapping_mul(add));
                }
                node_done = node;
            }
            out[i * width..(i + 1) * width].copy_from_slice(&word);
        }
    }
}

/// How a point's node turns into its output: the leaf at the full depth,
/// or a stop's conversion.
#[derive(Clone, Copy)]
enum Conversion {
    Leaf,
    Stop(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_step_function() {
        let r0 = [3u8; 16];
        let mut r1 = [9u8; 16];
        for (bits, alpha) in [
            (1u32, 1u64),
            (5, 0),
            (5, 17),
            (5, 31),
            (12, 1000),
            (63, 1 << 40),
        ] {
            r1[1] = bits as u8;
            let beta = 0xdead_beef_u64;
            let cw = generate(bits, alpha, beta, &r0, &r1);
            assert_eq!(cw.as_bytes().len(), DcfKeys::wire_len(bits));
            let cw = DcfKeys::from_bytes(bits, cw.as_bytes().to_vec()).unwrap();
            let max = if bits >= 12 { 4096 } else { 1u64 << bits };
            let mut xs: Vec<u64> = (0..max.min(64)).collect();
            xs.extend([
                alpha.wrapping_sub(1),
                alpha,
                alpha + 1,
                (1u64 << (bits - 1)) * 2 - 1,
            ]);
            for x in xs {
                let x = if bits == 64 {
                    x
                } else {
                    x & ((1u64 << bits) - 1)
                };
                let y = eval(0, &r0, &cw, 0, x).wrapping_add(eval(1, &r1, &cw, 0, x));
                let want = if x < alpha { beta } else { 0 };
                assert_eq!(y, want, "bits {bits} alpha {alpha} x {x}");
                let mut b = [0u64; 1];
                eval_batch(1, &[r1], &cw, &[0], &[x], &mut b);
                assert_eq!(b[0], eval(1, &r1, &cw, 0, x));
            }
        }
    }

    #[test]
    fn batches_over_many_keys_and_chunks_match_single_evaluations() {
        let bits = 20;
        let keys = 700;
        let roots: Vec<[Block; 2]> = (0..keys)
            .map(|k| {
                let mut r0 = [k as u8; 16];
                r0[1] = (k >> 8) as u8;
                let mut r1 = r0;
                r1[2] = 0x5a;
                [r0, r1]
            })
            .collect();
        let alphas: Vec<u64> = (0..keys as u64).map(|k| (k * 7919) % (1 << bits)).collect();
        let betas: Vec<u64> = (1..=keys as u64).collect();
        let r0: Vec<Block> = roots.iter().map(|r| r[0]).collect();
        let r1: Vec<Block> = roots.iter().map(|r| r[1]).collect();
        let cws = generate_batch(bits, &alphas, &betas, &r0, &r1);
        // The batch generator gives the bytes of one key at a time.
        for k in [0, 1, 511, 512, keys - 1] {
            let one = generate(bits, alphas[k], betas[k], &r0[k], &r1[k]);
            let w = DcfKeys::wire_len(bits);
            assert_eq!(
                one.as_bytes(),
                &cws.as_bytes()[k * w..(k + 1) * w],
                "key {k}"
            );
        }
        // Three points per key, adjacent (as the comparisons lay them out):
        // more than two chunks of 1024.
        let key_of: Vec<usize> = (0..3 * keys).map(|p| p / 3).collect();
        let xs: Vec<u64> = (0..3 * keys as u64)
            .map(|p| (p * 104_729 + 13) % (1 << bits))
            .collect();
        // on one thread and in parallel chunks (pools of 2 and 3 threads)
        for threads in 1..=3 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for party in 0..2 {
                let party_roots: Vec<Block> = roots.iter().map(|r| r[party]).collect();
                let mut out = vec![0u64; xs.len()];
                pool.install(|| eval_batch(party, &party_roots, &cws, &key_of, &xs, &mut out));
                for (p, &o) in out.iter().enumerate() {
                    let k = key_of[p];
                    let want = eval(party, &party_roots[k], &cws, k, xs[p]);
                    assert_eq!(o, want, "point {p}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn points_sharing_prefixes_duplicates_and_split_runs_match_single_evaluations() {
        // Many points per key at `c − t_j` for geometric t_j (as the
        // piecewise reciprocal lays them out), repeated inputs, a key whose
        // points come in two separate runs, runs longer than a chunk.
        for width in [1usize, 3] {
            let bits = 22;
            let keys = 9;
            let r0: Vec<Block> = (0..keys).map(|k| [k as u8 ^ 0x21; 16]).collect();
            let r1: Vec<Block> = (0..keys).map(|k| [k as u8 ^ 0x43; 16]).collect();
            let alphas: Vec<u64> = (0..keys as u64)
                .map(|k| (k * 456_789 + 3) % (1 << bits))
                .collect();
            let betas: Vec<u64> = (0..(keys * width) as u64).map(|i| i * 77 + 1).collect();
            let cws = generate_batch_of(bits, width, &alphas, &betas, &r0, &r1);
            let mut key_of = Vec::new();
            let mut xs = Vec::new();
            for k in (0..keys).chain([2]) {
                let per = if k == 4 { 1500 } else { 220 };
                let c = alphas[k] ^ 0x2a5a5;
                for j in 0..per {
                    let t = (2f64.powf(j as f64 / 10.0) as u64) & ((1 << bits) - 1);
                    key_of.push(k);
                    xs.push(c.wrapping_sub(t) & ((1 << bits) - 1));
                }
                key_of.push(k);
                xs.push(alphas[k]);
                key_of.push(k);
                xs.push(alphas[k]);
            }
            for (party, roots) in [(0, &r0), (1, &r1)] {
                let mut out = vec![0u64; xs.len() * width];
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(1 + party)
                    .build()
                    .unwrap();
                pool.install(|| eval_batch(party, roots, &cws, &key_of, &xs, &mut out));
                for (p, &x) in xs.iter().enumerate() {
                    let one = eval_words(party, &roots[key_of[p]], &cws, key_of[p], x);
                    assert_eq!(
                        &out[p * width..(p + 1) * width],
                        &one[..],
                        "width {width} point {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn stopped_points_give_the_step_function_of_their_cleared_input() {
        // Points at every stop depth, on α's path (same prefix as α: the
        // stop's correction decides) and off it, α with and without low
        // bits below each stop; batch against the reference and the sum
        // against β·[x' < α], x' = x with the low bits cleared.
        let bits = 16u32;
        let stops = [3u32, 7, 8, 12, 15];
        for width in [1usize, 3] {
            let alphas: Vec<u64> = vec![0, 1 << 9, (1 << 9) + 5, 0xabcd, 0xffff, 0x8000];
            let keys = alphas.len();
            let r0: Vec<Block> = (0..keys).map(|k| [k as u8 ^ 0x35; 16]).collect();
            let r1: Vec<Block> = (0..keys).map(|k| [k as u8 ^ 0x9c; 16]).collect();
            let betas: Vec<u64> = (0..(keys * width) as u64)
                .map(|i| 0x1234_5678 * (i + 1))
                .collect();
            let cws = generate_batch_stopping(bits, width, &stops, &alphas, &betas, &r0, &r1);
            assert_eq!(
                cws.as_bytes().len(),
                keys * DcfKeys::wire_len_stopping(bits, width, stops.len())
            );
            let (mut key_of, mut xs, mut depths) = (Vec::new(), Vec::new(), Vec::new());
            for (k, &a) in alphas.iter().enumerate() {
                for &d in stops.iter().chain([&bits]) {
                    let low = bits - d;
                    for x in [
                        a,
                        a ^ 1,
                        a.wrapping_sub(1),
                        a + (1 << low),
                        a ^ (1 << (bits - 1)),
                        0,
                        0xffff,
                    ] {
                        key_of.push(k);
                        xs.push(x & 0xffff);
                        depths.push(d);
                    }
                }
            }
            let mut out = [vec![0u64; xs.len() * width], vec![0u64; xs.len() * width]];
            for (party, roots) in [(0, &r0), (1, &r1)] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(2 + party)
                    .build()
                    .unwrap();
                let o = &mut out[party];
                pool.install(|| eval_batch_stopping(party, roots, &cws, &key_of, &xs, &depths, o));
                for p in 0..xs.len() {
                    let one =
                        eval_words_at(party, &roots[key_of[p]], &cws, key_of[p], xs[p], depths[p]);
                    assert_eq!(
                        &out[party][p * width..(p + 1) * width],
                        &one[..],
                        "point {p}"
                    );
                }
            }
            for p in 0..xs.len() {
                let k = key_of[p];
                let cleared = xs[p] >> (bits - depths[p]) << (bits - depths[p]);
                for q in 0..width {
                    let y = out[0][p * width + q].wrapping_add(out[1][p * width + q]);
                    let want = if cleared < alphas[k] {
                        betas[k * width + q]
                    } else {
                        0
                    };
                    assert_eq!(
                        y, want,
                        "width {width} key {k} x {} depth {}",
                        xs[p], depths[p]
                    );
                }
            }
        }
    }

    #[test]
    fn vector_payloads_match_per_word_keys_and_batches() {
        for width in [2usize, 3, 4] {
            let bits = 13;
            let keys = 40;
            let r0: Vec<Block> = (0..keys).map(|k| [k as u8 ^ 0x11; 16]).collect();
            let r1: Vec<Block> = (0..keys).map(|k| [k as u8 ^ 0x77; 16]).collect();
            let alphas: Vec<u64> = (0..keys as u64)
                .map(|k| (k * 613 + 5) % (1 << bits))
                .collect();
            let betas: Vec<u64> = (0..(keys * width) as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            let cws = generate_batch_of(bits, width, &alphas, &betas, &r0, &r1);
            assert_eq!(
                cws.as_bytes().len(),
                keys * DcfKeys::wire_len_of(bits, width)
            );
            let xs: Vec<u64> = (0..keys as u64 * 5)
                .map(|p| {
                    let k = p / 5;
                    // around α and elsewhere
                    (alphas[k as usize] + (p % 5)).wrapping_sub(2) % (1 << bits)
                })
                .collect();
            let key_of: Vec<usize> = (0..xs.len()).map(|p| p / 5).collect();
            let mut out = [vec![0u64; xs.len() * width], vec![0u64; xs.len() * width]];
            for (party, roots) in [(0, &r0), (1, &r1)] {
                eval_batch(party, roots, &cws, &key_of, &xs, &mut out[party]);
            }
            for (p, &x) in xs.iter().enumerate() {
                let k = key_of[p];
                let one = eval_words(0, &r0[k], &cws, k, x);
                for q in 0..width {
                    assert_eq!(
                        out[0][p * width + q],
                        one[q],
                        "width {width} point {p} word {q}"
                    );
                    let y = out[0][p * width + q].wrapping_add(out[1][p * width + q]);
                    let want = if x < alphas[k] {
                        betas[k * width + q]
                    } else {
                        0
                    };
                    assert_eq!(y, want, "width {width} key {k} x {x} word {q}");
                }
            }
        }
    }
}

//! Distributed comparison functions with output group Z_2 (XOR-shared bits),
//! with early termination.
//!
//! A key pair for `α` over `n`-bit inputs lets each party evaluate locally,
//! at any public `x`, an XOR share of `[x < α]`. Same tree as the ring-output
//! DCF ([`crate::dcf`], `tree.rs`: Boyle et al., EUROCRYPT 2021, Fig. 3), but because the output group is
//! Z_2 a level's value correction is one bit, and the PRG output of a child
//! fits in ONE AES block: of `G_side(s) = AES(s ⊕ side) ⊕ s ⊕ side` (fixed-key
//! Matyas–Meyer–Oseas), bit 0 is the control bit `t`, bit 1 the value bit
//! `v`, and bits 3..127 the child seed (seeds are 125-bit: their low three
//! bits are zero). A level's correction word is one 16-byte block: the seed
//! correction in bits 3..127 and the three bit corrections (`t_L`, `t_R`,
//! `v`) in bits 0..2.
//!
//! Early termination: the tree stops `ν = min(7, n)` levels early; the node
//! reached after `L = n − ν` levels expands (one more AES block, tweak 4)
//! into 128 bits, of which bit `u` is the output at the suffix `u` (the low
//! `ν` input bits), corrected by a final `2^ν`-bit word.
//!
//! Cost per key: `16·L + ⌈2^ν/8⌉` bytes of correction words (sent to both
//! parties; root seeds come from each party's own PRG stream), e.g. 272 bytes
//! for 23-bit inputs (576 with [`crate::dcf`]). Generation: 4 AES blocks per
//! key and level plus 2; evaluation: 1 AES block per point and level plus 1.

use super::keys::Block;
use super::tree::{LevelCorrection, cipher, follow, mmo, mmo_input, mmo_output};
use aes::cipher::{BlockEncrypt, generic_array::GenericArray};

/// Levels cut from the tree (at most): the leaf block holds `2^ν ≤ 128` outputs.
pub const MAX_NU: u32 = 7;

/// Low bits of a seed that carry the control and value bits (cleared in seeds).
const LOW: u128 = 7;

/// `(levels, ν)` of a key for `bits`-bit inputs.
pub fn shape(bits: u32) -> (usize, u32) {
    let nu = bits.min(MAX_NU);
    ((bits - nu) as usize, nu)
}

/// XOR-output DCF correction words of a batch of keys of one depth, kept as
/// their wire bytes; both parties hold the same words. `Debug` is opaque.
///
/// Layout of key `i` (each [`BitKeys::wire_len`] bytes, at `i·wire_len`):
/// `L` level words of 16 bytes (little-endian u128: seed correction in bits
/// 3..127, `t_L`, `t_R`, `v` corrections in bits 0, 1, 2), then the leaf
/// correction (`2^ν` bits, little-endian, at least one byte).
#[derive(Clone, PartialEq, Eq)]
pub struct BitKeys {
    bits: u32,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for BitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BitKeys(<{} keys of {} bits>)", self.len(), self.bits)
    }
}

impl BitKeys {
    /// Bytes of one key's correction words for `bits`-bit inputs.
    pub fn wire_len(bits: u32) -> usize {
        let (levels, nu) = shape(bits);
        16 * levels + (1usize << nu).div_ceil(8)
    }

    /// Keys read from their wire bytes (a whole number of keys), or `None`.
    pub fn from_bytes(bits: u32, bytes: Vec<u8>) -> Option<BitKeys> {
        bytes
            .len()
            .is_multiple_of(Self::wire_len(bits))
            .then_some(BitKeys { bits, bytes })
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Input bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.bytes.len() / Self::wire_len(self.bits)
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `n` keys of zero corrections (used when recording a plan).
    pub fn placeholder(bits: u32, n: usize) -> BitKeys {
        BitKeys {
            bits,
            bytes: vec![0; n * Self::wire_len(bits)],
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        let w = Self::wire_len(self.bits);
        &self.bytes[i * w..(i + 1) * w]
    }
}

fn level_word(key: &[u8], l: usize) -> u128 {
    u128::from_le_bytes(key[16 * l..16 * l + 16].try_into().expect("16 bytes"))
}

/// The leaf correction of a key with `levels` levels, as a u128 (bit u = suffix u).
fn leaf_word(key: &[u8], levels: usize) -> u128 {
    let mut b = [0u8; 16];
    let tail = &key[16 * levels..];
    b[..tail.len()].copy_from_slice(tail);
    u128::from_le_bytes(b)
}

fn root(b: &Block) -> u128 {
    u128::from_le_bytes(*b) & !LOW
}

/// Generate the correction words of one key pair for `[x < α]` on
/// `bits`-bit inputs, given the two parties' root seeds.
pub fn generate(bits: u32, alpha: u64, root0: &Block, root1: &Block) -> BitKeys {
    generate_batch(bits, &[alpha], &[*root0], &[*root1])
}

/// Generate many key pairs (key `i` for `[x < α_i]` from roots `roots0[i]`,
/// `roots1[i]`), level by level over chunks of keys so that AES runs over
/// long buffers: 4 blocks per key and level, 2 for the leaf.
pub fn generate_batch(bits: u32, alphas: &[u64], roots0: &[Block], roots1: &[Block]) -> BitKeys {
    assert!((1..=64).contains(&bits), "dcf bit: {bits} input bits");
    let k = alphas.len();
    assert!(
        roots0.len() == k && roots1.len() == k,
        "dcf bit generate: inputs differ in length"
    );
    let (levels, nu) = shape(bits);
    let w = BitKeys::wire_len(bits);
    let mut bytes = vec![0u8; k * w];
    const CHUNK: usize = 512;
    let mut buf = vec![GenericArray::from([0u8; 16]); 4 * CHUNK];
    for start in (0..k).step_by(CHUNK) {
        let end = (start + CHUNK).min(k);
        let m = end - start;
        let mut s: Vec<[u128; 2]> = (start..end)
            .map(|i| [root(&roots0[i]), root(&roots1[i])])
            .collect();
        let mut t = vec![[0u8, 1u8]; m];
        let mut v_alpha = vec![0u8; m];
        for lvl in 0..levels {
            for (four, sk) in buf.chunks_exact_mut(4).zip(&s) {
                for b in 0..2 {
                    for side in 0..2 {
                        four[2 * b + side] = mmo_input(sk[b], side as u128);
                    }
                }
            }
            cipher().encrypt_blocks(&mut buf[..4 * m]);
            for j in 0..m {
                let key = start + j;
                // child[b][side]
                let child = [0, 1].map(|b| {
                    [0, 1].map(|side| mmo_output(&buf[4 * j + 2 * b + side], s[j][b], side as u128))
                });
                let a = ((alphas[key] >> (bits - 1 - lvl as u32)) & 1) as usize;
                let (keep, lose) = (a, 1 - a);
                let cw = LevelCorrection::new(child, a, LOW);
                let v_of = |c: u128| ((c >> 1) & 1) as u8;
                let v_cw =
                    v_alpha[j] ^ v_of(child[0][lose]) ^ v_of(child[1][lose]) ^ (lose == 0) as u8;
                v_alpha[j] ^= v_of(child[0][keep]) ^ v_of(child[1][keep]) ^ v_cw;
                for b in 0..2 {
                    (s[j][b], t[j][b]) = follow(child[b][keep], t[j][b], cw.seed, cw.t[keep], LOW);
                }
                let word = cw.seed | cw.t[0] as u128 | (cw.t[1] as u128) << 1 | (v_cw as u128) << 2;
                bytes[key * w + 16 * lvl..key * w + 16 * lvl + 16]
                    .copy_from_slice(&word.to_le_bytes());
            }
        }
        // Leaf: CW = H(s0) ⊕ H(s1) ⊕ V_α·1 ⊕ step, step bit u = [u < α_low].
        for (two, sk) in buf.chunks_exact_mut(2).zip(&s) {
            two[0] = mmo_input(sk[0], 4);
            two[1] = mmo_input(sk[1], 4);
        }
        cipher().encrypt_blocks(&mut buf[..2 * m]);
        let leaves = 1u32 << nu;
        let leaf_mask = if leaves == 128 {
            u128::MAX
        } else {
            (1u128 << leaves) - 1
        };
        for j in 0..m {
            let key = start + j;
            let h0 = mmo_output(&buf[2 * j], s[j][0], 4);
            let h1 = mmo_output(&buf[2 * j + 1], s[j][1], 4);
            let low = alphas[key] & ((1u64 << nu) - 1);
            let step = if low == 0 { 0 } else { (1u128 << low) - 1 };
            let all = 0u128.wrapping_sub(v_alpha[j] as u128);
            let cw = (h0 ^ h1 ^ all ^ step) & leaf_mask;
            let tail = (leaves as usize).div_ceil(8);
            bytes[key * w + 16 * levels..(key + 1) * w].copy_from_slice(&cw.to_le_bytes()[..tail]);
        }
    }
    BitKeys { bits, bytes }
}

/// Party `party`'s XOR share (0 or 1) of `[x < α_k]` at the public point
/// `x` (low `bits` bits used) for key `k`. The readable reference of
/// [`eval_batch`] and [`eval_grouped`].
pub fn eval(party: usize, root_seed: &Block, keys: &BitKeys, k: usize, x: u64) -> u8 {
    let key = keys.key(k);
    let (levels, nu) = shape(keys.bits);
    let mut s = root(root_seed);
    let mut t = party as u8;
    let mut v = 0u8;
    for lvl in 0..levels {
        let side = ((x >> (keys.bits - 1 - lvl as u32)) & 1) as u128;
        let c = mmo(s, side);
        let cw = level_word(key, lvl);
        v ^= ((c >> 1) & 1) as u8 ^ (t & ((cw >> 2) & 1) as u8);
        (s, t) = follow(c, t, cw & !LOW, ((cw >> side) & 1) as u8, LOW);
    }
    let u = (x & ((1u64 << nu) - 1)) as u32;
    let mut leaf = mmo(s, 4);
    if t == 1 {
        leaf ^= leaf_word(key, levels);
    }
    v ^ ((leaf >> u) & 1) as u8
}

/// Evaluate many points at once: point `p` uses key `key_of[p]` (its root
/// seed in `roots`) at input `xs[p]`; writes party `party`'s XOR shares
/// (0 or 1) to `out`. Same result as [`eval`] per point; the tree is walked
/// level by level for a chunk of points (pipelined AES), one block per point
/// and level, corrections applied without branches.
pub fn eval_batch(
    party: usize,
    roots: &[Block],
    keys: &BitKeys,
    key_of: &[usize],
    xs: &[u64],
    out: &mut [u8],
) {
    assert_eq!(
        key_of.len(),
        xs.len(),
        "dcf bit batch: keys and points differ in length"
    );
    eval_points(party, roots, keys, |p| key_of[p], xs, out);
}

/// [`eval_batch`] for points laid out key by key, `per_key` consecutive
/// points per key (point `p` uses key `p / per_key`), without a key index
/// per point.
pub fn eval_grouped(
    party: usize,
    roots: &[Block],
    keys: &BitKeys,
    per_key: usize,
    xs: &[u64],
    out: &mut [u8],
) {
    assert!(per_key > 0, "dcf bit grouped: no points per key");
    eval_points(party, roots, keys, |p| p / per_key, xs, out);
}

fn eval_points(
    party: usize,
    roots: &[Block],
    keys: &BitKeys,
    key_of: impl Fn(usize) -> usize,
    xs: &[u64],
    out: &mut [u8],
) {
    assert_eq!(out.len(), xs.len(), "dcf bit batch: output length");
    const CHUNK: usize = 2048;
    let bits = keys.bits;
    let (levels, nu) = shape(bits);
    let mut buf = vec![GenericArray::from([0u8; 16]); CHUNK];
    let mut s = vec![0u128; CHUNK];
    let mut t = vec![0u8; CHUNK];
    let mut v = vec![0u8; CHUNK];
    let mut ks: Vec<&[u8]> = Vec::with_capacity(CHUNK);
    for start in (0..xs.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(xs.len());
        let m = end - start;
        ks.clear();
        ks.extend((start..end).map(|p| keys.key(key_of(p))));
        let xs = &xs[start..end];
        for (j, p) in (start..end).enumerate() {
            s[j] = root(&roots[key_of(p)]);
        }
        t[..m].fill(party as u8);
        v[..m].fill(0);
        for lvl in 0..levels {
            let shift = bits - 1 - lvl as u32;
            for ((b, sq), x) in buf.iter_mut().zip(&s).zip(xs) {
                *b = mmo_input(*sq, ((x >> shift) & 1) as u128);
            }
            cipher().encrypt_blocks(&mut buf[..m]);
            let points = buf
                .iter()
                .zip(s.iter_mut())
                .zip(t.iter_mut())
                .zip(v.iter_mut())
                .zip(ks.iter().zip(xs));
            for ((((b, sq), tq), vq), (key, x)) in points {
                let side = ((x >> shift) & 1) as u128;
                let c = mmo_output(b, *sq, side);
                let cw = level_word(key, lvl);
                *vq ^= ((c >> 1) as u8 ^ (*tq & (cw >> 2) as u8)) & 1;
                (*sq, *tq) = follow(c, *tq, cw & !LOW, ((cw >> side) & 1) as u8, LOW);
            }
        }
        for (b, sq) in buf.iter_mut().zip(&s).take(m) {
            *b = mmo_input(*sq, 4);
        }
        cipher().encrypt_blocks(&mut buf[..m]);
        let low = (1u64 << nu) - 1;
        for (j, o) in out[start..end].iter_mut().enumerate() {
            let mut leaf = mmo_output(&buf[j], s[j], 4);
            let mask = 0u128.wrapping_sub(t[j] as u128);
            leaf ^= leaf_word(ks[j], levels) & mask;
            *o = v[j] ^ ((leaf >> (xs[j] & low)) & 1) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_xor_to_step_function() {
        let r0 = [3u8; 16];
        let mut r1 = [9u8; 16];
        for (bits, alpha) in [
            (1u32, 0u64),
            (1, 1),
            (3, 5),
            (7, 0),
            (7, 127),
            (7, 64),
            (8, 200),
            (12, 1000),
            (15, 0),
            (15, 32767),
            (23, 1 << 22),
            (23, 12345),
            (63, 1 << 40),
            (64, u64::MAX),
            (64, 1 << 63),
        ] {
            r1[1] = bits as u8;
            r1[2] = alpha as u8;
            let keys = generate(bits, alpha, &r0, &r1);
            assert_eq!(keys.as_bytes().len(), BitKeys::wire_len(bits));
            let keys = BitKeys::from_bytes(bits, keys.as_bytes().to_vec()).unwrap();
            let top = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let mut xs: Vec<u64> = (0..top.min(300)).collect();
            xs.extend([
                alpha.wrapping_sub(1),
                alpha,
                alpha.wrapping_add(1),
                alpha ^ 64,
                alpha ^ 127,
                top,
                top - 1,
            ]);
            for x in xs {
                let x = x & top;
                let y = eval(0, &r0, &keys, 0, x) ^ eval(1, &r1, &keys, 0, x);
                assert_eq!(y, (x < alpha) as u8, "bits {bits} alpha {alpha} x {x}");
                for (party, r) in [(0, r0), (1, r1)] {
                    let mut b = [0u8; 1];
                    eval_batch(party, &[r], &keys, &[0], &[x], &mut b);
                    assert_eq!(b[0], eval(party, &r, &keys, 0, x));
                }
            }
        }
    }

    #[test]
    fn key_sizes() {
        assert_eq!(BitKeys::wire_len(23), 16 * 16 + 16);
        assert_eq!(BitKeys::wire_len(15), 16 * 8 + 16);
        assert_eq!(BitKeys::wire_len(7), 16);
        assert_eq!(BitKeys::wire_len(3), 1);
    }

    #[test]
    fn batches_over_many_keys_and_chunks_match_single_evaluations() {
        let bits = 20;
        let keys = 900;
        let roots = crate::dcf::tests::root_pairs(keys);
        let alphas: Vec<u64> = (0..keys as u64).map(|k| (k * 7919) % (1 << bits)).collect();
        let r0: Vec<Block> = roots.iter().map(|r| r[0]).collect();
        let r1: Vec<Block> = roots.iter().map(|r| r[1]).collect();
        let ks = generate_batch(bits, &alphas, &r0, &r1);
        for k in [0, 1, 511, 512, keys - 1] {
            let one = generate(bits, alphas[k], &r0[k], &r1[k]);
            let w = BitKeys::wire_len(bits);
            assert_eq!(
                one.as_bytes(),
                &ks.as_bytes()[k * w..(k + 1) * w],
                "key {k}"
            );
        }
        // Three points per key (more than one chunk of 2048), one next to α.
        let key_of: Vec<usize> = (0..3 * keys).map(|p| p / 3).collect();
        let xs: Vec<u64> = (0..3 * keys as u64)
            .map(|p| {
                if p % 3 == 0 {
                    alphas[(p / 3) as usize].saturating_sub(1)
                } else {
                    (p * 104_729 + 13) % (1 << bits)
                }
            })
            .collect();
        let mut outs = [vec![0u8; xs.len()], vec![0u8; xs.len()]];
        for (party, out) in outs.iter_mut().enumerate() {
            let party_roots: Vec<Block> = roots.iter().map(|r| r[party]).collect();
            eval_batch(party, &party_roots, &ks, &key_of, &xs, out);
            for (p, &o) in out.iter().enumerate() {
                let k = key_of[p];
                assert_eq!(o, eval(party, &party_roots[k], &ks, k, xs[p]), "point {p}");
            }
        }
        for p in 0..xs.len() {
            assert_eq!(outs[0][p] ^ outs[1][p], (xs[p] < alphas[key_of[p]]) as u8);
        }
        // the same points, grouped three per key
        for (party, out) in outs.iter().enumerate() {
            let party_roots: Vec<Block> = roots.iter().map(|r| r[party]).collect();
            let mut grouped = vec![0u8; xs.len()];
            eval_grouped(party, &party_roots, &ks, 3, &xs, &mut grouped);
            assert_eq!(&grouped, out);
        }
    }
}

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

/// One tree node's expansion: seeds, values and control bits for both children.
struct Expanded {
    s: [Block; 2],
    v: [u64; 2],
    t: [u8; 2],
}

fn expand(seed: &Block) -> Expanded {
    let mut blocks = [GenericArray::from(*seed); 3];
    for (i, b) in blocks.iter_mut().enumerate() {
        b[0] ^= i as u8;
    }
    cipher().encrypt_blocks(&mut blocks);
    expanded(&blocks, seed)
}

/// The node expansion from the encryptions of `seed ⊕ 0`, `seed ⊕ 1`,
/// `seed ⊕ 2` (Matyas–Meyer–Oseas: each output is XORed with its input).
fn expanded(enc: &[GenericArray<u8, aes::cipher::consts::U16>], seed: &Block) -> Expanded {
    let mut out = [[0u8; 16]; 3];
    for i in 0..3 {
        let mut input = *seed;
        input[0] ^= i as u8;
        for j in 0..16 {
            out[i][j] = enc[i][j] ^ input[j];
        }
    }
    let t = [out[0][0] & 1, out[1][0] & 1];
    out[0][0] &= 0xfe;
    out[1][0] &= 0xfe;
    Expanded {
        s: [out[0], out[1]],
        v: [
            u64::from_le_bytes(out[2][..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(out[2][8..].try_into().expect("8 bytes")),
        ],
        t,
    }
}

fn convert(s: &Block) -> u64 {
    u64::from_le_bytes(s[..8].try_into().expect("8 bytes"))
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

/// The correction words of a batch of keys of one depth, kept as their wire
/// bytes (no allocation per key; evaluation reads them in place). Both
/// parties hold the same words. `Debug` is opaque.
///
/// Layout of key `i` (each [`DcfKeys::wire_len`] bytes, at `i·wire_len`):
/// `bits` seed corrections (16 bytes each), `bits` value corrections (8
/// bytes each), the `2·bits` control-bit corrections packed (bit `2l` = t_L,
/// `2l + 1` = t_R of level `l`), and the final value correction (8 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct DcfKeys {
    bits: u32,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for DcfKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DcfKeys(<{} keys of {} levels>)", self.len(), self.bits)
    }
}

impl DcfKeys {
    /// Bytes of one key's correction words for `bits`-bit inputs.
    pub fn wire_len(bits: u32) -> usize {
        bits as usize * 24 + (2 * bits as usize).div_ceil(8) + 8
    }

    /// Keys read from their wire bytes (a whole number of keys), or `None`.
    pub fn from_bytes(bits: u32, bytes: Vec<u8>) -> Option<DcfKeys> {
        bytes
            .len()
            .is_multiple_of(Self::wire_len(bits))
            .then_some(DcfKeys { bits, bytes })
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

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.bytes.len() / Self::wire_len(self.bits)
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `n` keys of zero corrections (used when recording a plan).
    pub fn placeholder(bits: u32, n: usize) -> DcfKeys {
        DcfKeys {
            bits,
            bytes: vec![0; n * Self::wire_len(bits)],
        }
    }

    fn key(&self, i: usize) -> KeyRef<'_> {
        let w = Self::wire_len(self.bits);
        KeyRef {
            n: self.bits as usize,
            b: &self.bytes[i * w..(i + 1) * w],
        }
    }
}

/// One key's correction words, read in place.
#[derive(Clone, Copy)]
struct KeyRef<'a> {
    n: usize,
    b: &'a [u8],
}

impl KeyRef<'_> {
    fn seed(&self, l: usize) -> u128 {
        u128::from_le_bytes(self.b[16 * l..16 * l + 16].try_into().expect("16 bytes"))
    }
    fn value(&self, l: usize) -> u64 {
        let at = 16 * self.n + 8 * l;
        u64::from_le_bytes(self.b[at..at + 8].try_into().expect("8 bytes"))
    }
    /// Bit 0 = t_L correction, bit 1 = t_R correction.
    fn tbits(&self, l: usize) -> u8 {
        (self.b[24 * self.n + (2 * l) / 8] >> ((2 * l) % 8)) & 3
    }
    fn last(&self) -> u64 {
        let at = self.b.len() - 8;
        u64::from_le_bytes(self.b[at..].try_into().expect("8 bytes"))
    }
}

/// Generate the correction words of one key pair for `f(x) = β·[x < α]` on
/// `bits`-bit inputs, given the two parties' root seeds.
pub fn generate(bits: u32, alpha: u64, beta: u64, root0: &Block, root1: &Block) -> DcfKeys {
    generate_batch(bits, &[alpha], &[beta], &[*root0], &[*root1])
}

/// Generate many key pairs (key `i` for `β_i·[x < α_i]` from roots
/// `roots0[i]`, `roots1[i]`). The trees are walked level by level for a
/// chunk of keys at a time so that AES runs over long buffers (pipelined
/// AES-NI): 6 blocks per key and level. Same output as one key at a time.
pub fn generate_batch(
    bits: u32,
    alphas: &[u64],
    betas: &[u64],
    roots0: &[Block],
    roots1: &[Block],
) -> DcfKeys {
    assert!((1..=64).contains(&bits), "dcf: {bits} input bits");
    let k = alphas.len();
    assert!(
        betas.len() == k && roots0.len() == k && roots1.len() == k,
        "dcf generate: inputs differ in length"
    );
    let n = bits as usize;
    let w = DcfKeys::wire_len(bits);
    let mut bytes = vec![0u8; k * w];
    const CHUNK: usize = 512;
    let mut buf = vec![GenericArray::from([0u8; 16]); 6 * CHUNK];
    for start in (0..k).step_by(CHUNK) {
        let end = (start + CHUNK).min(k);
        let m = end - start;
        let mut s: Vec<[Block; 2]> = (start..end).map(|i| [roots0[i], roots1[i]]).collect();
        let mut t = vec![[0u8, 1u8]; m];
        let mut v_alpha = vec![0u64; m];
        for lvl in 0..n {
            for (six, sk) in buf.chunks_exact_mut(6).zip(&s) {
                for b in 0..2 {
                    for i in 0..3 {
                        let mut blk = sk[b];
                        blk[0] ^= i as u8;
                        six[3 * b + i] = GenericArray::from(blk);
                    }
                }
            }
            cipher().encrypt_blocks(&mut buf[..6 * m]);
            for j in 0..m {
                let key = start + j;
                let e = [
                    expanded(&buf[6 * j..6 * j + 3], &s[j][0]),
                    expanded(&buf[6 * j + 3..6 * j + 6], &s[j][1]),
                ];
                let a = ((alphas[key] >> (n - 1 - lvl)) & 1) as usize;
                let (keep, lose) = (a, 1 - a);
                let s_cw = xor(&e[0].s[lose], &e[1].s[lose]);
                let sg = sign(t[j][1]);
                let mut v_cw = sg.wrapping_mul(
                    e[1].v[lose]
                        .wrapping_sub(e[0].v[lose])
                        .wrapping_sub(v_alpha[j]),
                );
                if lose == 0 {
                    v_cw = v_cw.wrapping_add(sg.wrapping_mul(betas[key]));
                }
                v_alpha[j] = v_alpha[j]
                    .wrapping_sub(e[1].v[keep])
                    .wrapping_add(e[0].v[keep])
                    .wrapping_add(sg.wrapping_mul(v_cw));
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
                let out = &mut bytes[key * w..(key + 1) * w];
                out[16 * lvl..16 * lvl + 16].copy_from_slice(&s_cw);
                out[16 * n + 8 * lvl..16 * n + 8 * lvl + 8].copy_from_slice(&v_cw.to_le_bytes());
                out[24 * n + (2 * lvl) / 8] |= (t_cw[0] | (t_cw[1] << 1)) << ((2 * lvl) % 8);
            }
        }
        for j in 0..m {
            let key = start + j;
            let last = sign(t[j][1]).wrapping_mul(
                convert(&s[j][1])
                    .wrapping_sub(convert(&s[j][0]))
                    .wrapping_sub(v_alpha[j]),
            );
            bytes[(key + 1) * w - 8..(key + 1) * w].copy_from_slice(&last.to_le_bytes());
        }
    }
    DcfKeys { bits, bytes }
}

/// Party `party`'s share of `β_k·[x < α_k]` at the public point `x` (low
/// `bits` bits used) for key `k` of `keys`. The readable reference of
/// [`eval_batch`].
pub fn eval(party: usize, root: &Block, keys: &DcfKeys, k: usize, x: u64) -> u64 {
    let key = keys.key(k);
    let n = key.n;
    let mut s = *root;
    let mut t = party as u8;
    let mut v = 0u64;
    let sg = if party == 0 { 1u64 } else { u64::MAX };
    for i in 0..n {
        let mut e = expand(&s);
        if t == 1 {
            let cs = key.seed(i).to_le_bytes();
            e.s[0] = xor(&e.s[0], &cs);
            e.s[1] = xor(&e.s[1], &cs);
            e.t[0] ^= key.tbits(i) & 1;
            e.t[1] ^= key.tbits(i) >> 1;
        }
        let side = ((x >> (n - 1 - i)) & 1) as usize;
        let add = e.v[side].wrapping_add(if t == 1 { key.value(i) } else { 0 });
        v = v.wrapping_add(sg.wrapping_mul(add));
        s = e.s[side];
        t = e.t[side];
    }
    let add = convert(&s).wrapping_add(if t == 1 { key.last() } else { 0 });
    v.wrapping_add(sg.wrapping_mul(add))
}

/// Evaluate many points at once: point `p` uses key `key_of[p]` (its root
/// seed in `roots` and its correction words in `keys`) at input `xs[p]`;
/// writes party `party`'s output shares to `out`. Same result as calling
/// [`eval`] per point, but the tree is walked level by level for a batch of
/// points so that AES runs over long buffers (pipelined AES-NI), and only
/// the two blocks a point needs per level are encrypted (its side's seed
/// and the value block), with branch-free corrections.
pub fn eval_batch(
    party: usize,
    roots: &[Block],
    keys: &DcfKeys,
    key_of: &[usize],
    xs: &[u64],
    out: &mut [u64],
) {
    assert_eq!(
        key_of.len(),
        xs.len(),
        "dcf batch: keys and points differ in length"
    );
    assert_eq!(out.len(), xs.len(), "dcf batch: output length");
    const CHUNK: usize = 1024;
    let sg = if party == 0 { 1u64 } else { u64::MAX };
    let bits = keys.bits as usize;
    let mut buf = vec![GenericArray::from([0u8; 16]); 2 * CHUNK];
    for start in (0..xs.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(xs.len());
        let m = end - start;
        let ks: Vec<KeyRef<'_>> = key_of[start..end].iter().map(|&k| keys.key(k)).collect();
        let xs = &xs[start..end];
        let mut s: Vec<u128> = key_of[start..end]
            .iter()
            .map(|&k| u128::from_le_bytes(roots[k]))
            .collect();
        let mut t = vec![party as u8; m];
        let mut v = vec![0u64; m];
        for lvl in 0..bits {
            let shift = bits - 1 - lvl;
            for ((pair, sq), x) in buf.chunks_exact_mut(2).zip(&s).zip(xs) {
                let side = ((x >> shift) & 1) as u128;
                pair[0] = GenericArray::from((sq ^ side).to_le_bytes());
                pair[1] = GenericArray::from((sq ^ 2).to_le_bytes());
            }
            cipher().encrypt_blocks(&mut buf[..2 * m]);
            let points = buf
                .chunks_exact(2)
                .zip(s.iter_mut())
                .zip(t.iter_mut())
                .zip(v.iter_mut())
                .zip(ks.iter().zip(xs));
            for ((((pair, sq), tq), vq), (key, x)) in points {
                let side = ((x >> shift) & 1) as usize;
                let mut seed = u128::from_le_bytes(pair[0].into()) ^ *sq ^ side as u128;
                let mut tb = (seed & 1) as u8;
                seed &= !1;
                let mut val =
                    ((u128::from_le_bytes(pair[1].into()) ^ *sq ^ 2) >> (64 * side)) as u64;
                // Apply the level's correction when t = 1, without a branch.
                let mask = 0u64.wrapping_sub(*tq as u64);
                seed ^= key.seed(lvl) & (mask as u128 | (mask as u128) << 64);
                tb ^= (key.tbits(lvl) >> side) & *tq;
                val = val.wrapping_add(key.value(lvl) & mask);
                *vq = vq.wrapping_add(sg.wrapping_mul(val));
                *sq = seed;
                *tq = tb;
            }
        }
        for ((((o, sq), tq), vq), key) in
            out[start..end].iter_mut().zip(&s).zip(&t).zip(&v).zip(&ks)
        {
            let add = (*sq as u64).wrapping_add(if *tq == 1 { key.last() } else { 0 });
            *o = vq.wrapping_add(sg.wrapping_mul(add));
        }
    }
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
        for party in 0..2 {
            let party_roots: Vec<Block> = roots.iter().map(|r| r[party]).collect();
            let mut out = vec![0u64; xs.len()];
            eval_batch(party, &party_roots, &cws, &key_of, &xs, &mut out);
            for (p, &o) in out.iter().enumerate() {
                let k = key_of[p];
                assert_eq!(o, eval(party, &party_roots[k], &cws, k, xs[p]), "point {p}");
            }
        }
    }
}

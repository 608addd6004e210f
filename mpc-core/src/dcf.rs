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
//! Cost: `Gen` is 6·n AES blocks per key, `Eval` is 3·n AES blocks per point.
//! Key material: 16 bytes of root seed (drawn from the party's own PRG stream,
//! so it is never sent) plus `n·24 + ⌈2n/8⌉ + 8` bytes of correction words,
//! sent to both parties.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use std::sync::OnceLock;

/// A 128-bit DCF seed.
pub type Block = [u8; 16];

fn cipher() -> &'static Aes128 {
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
    let inputs = blocks;
    cipher().encrypt_blocks(&mut blocks);
    let mut out = [[0u8; 16]; 3];
    for i in 0..3 {
        for j in 0..16 {
            out[i][j] = blocks[i][j] ^ inputs[i][j];
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

/// One level's correction word.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Level {
    seed: u128,
    value: u64,
    /// Bit 0 = t_L correction, bit 1 = t_R correction.
    tbits: u8,
}

/// The correction words of one key, shared by both parties. `Debug` is opaque.
#[derive(Clone, PartialEq, Eq)]
pub struct DcfCorrections {
    bits: u32,
    /// One entry per level, kept together so evaluation reads one cache line per node.
    levels: Vec<Level>,
    last: u64,
}

impl std::fmt::Debug for DcfCorrections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DcfCorrections(<{} levels>)", self.bits)
    }
}

impl DcfCorrections {
    /// Bytes of one serialised key's correction words for `bits`-bit inputs.
    pub fn wire_len(bits: u32) -> usize {
        bits as usize * 24 + (2 * bits as usize).div_ceil(8) + 8
    }

    /// Serialise (appending to `out`).
    pub fn write(&self, out: &mut Vec<u8>) {
        for l in &self.levels {
            out.extend_from_slice(&l.seed.to_le_bytes());
        }
        for l in &self.levels {
            out.extend_from_slice(&l.value.to_le_bytes());
        }
        let mut packed = vec![0u8; (2 * self.bits as usize).div_ceil(8)];
        for (i, l) in self.levels.iter().enumerate() {
            packed[(2 * i) / 8] |= l.tbits << ((2 * i) % 8);
        }
        out.extend_from_slice(&packed);
        out.extend_from_slice(&self.last.to_le_bytes());
    }

    /// Parse one key's correction words from the front of `bytes` (exactly [`Self::wire_len`] bytes).
    pub fn read(bits: u32, bytes: &[u8]) -> Option<DcfCorrections> {
        if bytes.len() != Self::wire_len(bits) {
            return None;
        }
        let n = bits as usize;
        let tbase = 24 * n;
        let levels = (0..n)
            .map(|i| Level {
                seed: u128::from_le_bytes(bytes[16 * i..16 * i + 16].try_into().expect("16 bytes")),
                value: u64::from_le_bytes(
                    bytes[16 * n + 8 * i..16 * n + 8 * i + 8]
                        .try_into()
                        .expect("8 bytes"),
                ),
                tbits: (bytes[tbase + (2 * i) / 8] >> ((2 * i) % 8)) & 3,
            })
            .collect();
        let base = tbase + (2 * n).div_ceil(8);
        let last = u64::from_le_bytes(bytes[base..base + 8].try_into().expect("8 bytes"));
        Some(DcfCorrections { bits, levels, last })
    }

    /// Correction words of the right size, all zero (used when recording a plan).
    pub fn placeholder(bits: u32) -> DcfCorrections {
        DcfCorrections {
            bits,
            levels: vec![
                Level {
                    seed: 0,
                    value: 0,
                    tbits: 0
                };
                bits as usize
            ],
            last: 0,
        }
    }
}

/// Generate the correction words for `f(x) = β·[x < α]` on `bits`-bit inputs,
/// given the two parties' root seeds.
pub fn generate(bits: u32, alpha: u64, beta: u64, root0: &Block, root1: &Block) -> DcfCorrections {
    assert!((1..=64).contains(&bits), "dcf: {bits} input bits");
    let mut s = [*root0, *root1];
    let mut t = [0u8, 1u8];
    let mut v_alpha = 0u64;
    let n = bits as usize;
    let mut cw = DcfCorrections {
        bits,
        levels: Vec::with_capacity(n),
        last: 0,
    };
    for i in 0..n {
        let a = ((alpha >> (n - 1 - i)) & 1) as usize;
        let e = [expand(&s[0]), expand(&s[1])];
        let (keep, lose) = (a, 1 - a);
        let s_cw = xor(&e[0].s[lose], &e[1].s[lose]);
        let sg = sign(t[1]);
        let mut v_cw = sg.wrapping_mul(
            e[1].v[lose]
                .wrapping_sub(e[0].v[lose])
                .wrapping_sub(v_alpha),
        );
        if lose == 0 {
            v_cw = v_cw.wrapping_add(sg.wrapping_mul(beta));
        }
        v_alpha = v_alpha
            .wrapping_sub(e[1].v[keep])
            .wrapping_add(e[0].v[keep])
            .wrapping_add(sg.wrapping_mul(v_cw));
        let t_cw = [
            e[0].t[0] ^ e[1].t[0] ^ a as u8 ^ 1,
            e[0].t[1] ^ e[1].t[1] ^ a as u8,
        ];
        for b in 0..2 {
            s[b] = if t[b] == 1 {
                xor(&e[b].s[keep], &s_cw)
            } else {
                e[b].s[keep]
            };
            t[b] = e[b].t[keep] ^ (t[b] & t_cw[keep]);
        }
        cw.levels.push(Level {
            seed: u128::from_le_bytes(s_cw),
            value: v_cw,
            tbits: t_cw[0] | (t_cw[1] << 1),
        });
    }
    cw.last = sign(t[1]).wrapping_mul(
        convert(&s[1])
            .wrapping_sub(convert(&s[0]))
            .wrapping_sub(v_alpha),
    );
    cw
}

/// Party `party`'s share of `β·[x < α]` at the public point `x` (low `bits` bits used).
pub fn eval(party: usize, root: &Block, cw: &DcfCorrections, x: u64) -> u64 {
    let n = cw.bits as usize;
    let mut s = *root;
    let mut t = party as u8;
    let mut v = 0u64;
    let sg = if party == 0 { 1u64 } else { u64::MAX };
    for i in 0..n {
        let mut e = expand(&s);
        if t == 1 {
            let l = &cw.levels[i];
            let cs = l.seed.to_le_bytes();
            e.s[0] = xor(&e.s[0], &cs);
            e.s[1] = xor(&e.s[1], &cs);
            e.t[0] ^= l.tbits & 1;
            e.t[1] ^= l.tbits >> 1;
        }
        let side = ((x >> (n - 1 - i)) & 1) as usize;
        let add = e.v[side].wrapping_add(if t == 1 { cw.levels[i].value } else { 0 });
        v = v.wrapping_add(sg.wrapping_mul(add));
        s = e.s[side];
        t = e.t[side];
    }
    let add = convert(&s).wrapping_add(if t == 1 { cw.last } else { 0 });
    v.wrapping_add(sg.wrapping_mul(add))
}

/// Evaluate many points at once: point `p` uses key `key_of[p]` (its root
/// seed in `roots` and its correction words in `cws`) at input `xs[p]`;
/// writes party `party`'s output shares to `out`. Same result as calling
/// [`eval`] per point, but the tree is walked level by level for a batch of
/// points so that AES runs over long buffers (pipelined AES-NI), and only
/// the two blocks a point needs per level are encrypted (its side's seed
/// and the value block), with branch-free corrections.
pub fn eval_batch(
    party: usize,
    roots: &[Block],
    cws: &[DcfCorrections],
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
    let mut buf = vec![GenericArray::from([0u8; 16]); 2 * CHUNK];
    for start in (0..xs.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(xs.len());
        let m = end - start;
        let keys: Vec<&DcfCorrections> = key_of[start..end].iter().map(|&k| &cws[k]).collect();
        let xs = &xs[start..end];
        let bits = keys[0].bits as usize;
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
                .zip(keys.iter().zip(xs));
            for ((((pair, sq), tq), vq), (key, x)) in points {
                debug_assert_eq!(key.bits as usize, bits, "dcf batch: mixed key widths");
                let side = ((x >> shift) & 1) as usize;
                let mut seed = u128::from_le_bytes(pair[0].into()) ^ *sq ^ side as u128;
                let mut tb = (seed & 1) as u8;
                seed &= !1;
                let mut val =
                    ((u128::from_le_bytes(pair[1].into()) ^ *sq ^ 2) >> (64 * side)) as u64;
                // Apply the level's correction when t = 1, without a branch.
                let l = &key.levels[lvl];
                let mask = 0u64.wrapping_sub(*tq as u64);
                seed ^= l.seed & (mask as u128 | (mask as u128) << 64);
                tb ^= (l.tbits >> side) & *tq;
                val = val.wrapping_add(l.value & mask);
                *vq = vq.wrapping_add(sg.wrapping_mul(val));
                *sq = seed;
                *tq = tb;
            }
        }
        for ((((o, sq), tq), vq), key) in out[start..end]
            .iter_mut()
            .zip(&s)
            .zip(&t)
            .zip(&v)
            .zip(&keys)
        {
            let add = (*sq as u64).wrapping_add(if *tq == 1 { key.last } else { 0 });
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
            let mut bytes = Vec::new();
            cw.write(&mut bytes);
            assert_eq!(bytes.len(), DcfCorrections::wire_len(bits));
            let cw = DcfCorrections::read(bits, &bytes).unwrap();
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
                let y = eval(0, &r0, &cw, x).wrapping_add(eval(1, &r1, &cw, x));
                let want = if x < alpha { beta } else { 0 };
                assert_eq!(y, want, "bits {bits} alpha {alpha} x {x}");
                let mut b = [0u64; 1];
                eval_batch(1, &[r1], std::slice::from_ref(&cw), &[0], &[x], &mut b);
                assert_eq!(b[0], eval(1, &r1, &cw, x));
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
        let cws: Vec<DcfCorrections> = (0..keys)
            .map(|k| {
                let alpha = (k as u64 * 7919) % (1 << bits);
                generate(bits, alpha, k as u64 + 1, &roots[k][0], &roots[k][1])
            })
            .collect();
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
                assert_eq!(o, eval(party, &party_roots[k], &cws[k], xs[p]), "point {p}");
            }
        }
    }
}

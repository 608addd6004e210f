//! Key generation: the dealer's side of a DCF, pipelined over many keys.

use super::keys::*;
use super::tree::{LevelCorrection, cipher, follow, mmo_input, mmo_output};
use aes::cipher::{BlockEncrypt, generic_array::GenericArray};

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
        let mut s: Vec<[u128; 2]> = (start..end)
            .map(|i| [roots0[i], roots1[i]].map(u128::from_le_bytes))
            .collect();
        let mut t = vec![[0u8, 1u8]; m];
        let mut v_alpha = vec![0u64; m * width];
        for lvl in 0..n {
            for (blocks, sk) in buf.chunks_exact_mut(2 * per).zip(&s) {
                for b in 0..2 {
                    for i in 0..per {
                        blocks[per * b + i] = mmo_input(sk[b], i as u128);
                    }
                }
            }
            cipher().encrypt_blocks(&mut buf[..2 * per * m]);
            for j in 0..m {
                let key = start + j;
                let enc = &buf[2 * per * j..2 * per * (j + 1)];
                let child = [0, 1].map(|b| {
                    [0, 1].map(|side| mmo_output(&enc[per * b + side], s[j][b], side as u128))
                });
                let vals = [0, 1].map(|b| {
                    (0..vb)
                        .map(|i| {
                            mmo_output(&enc[per * b + 2 + i], s[j][b], (2 + i) as u128)
                                .to_le_bytes()
                        })
                        .collect::<Vec<_>>()
                });
                let a = ((alphas[key] >> (n - 1 - lvl)) & 1) as usize;
                let (keep, lose) = (a, 1 - a);
                let cw = LevelCorrection::new(child, a, 1);
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
                for b in 0..2 {
                    (s[j][b], t[j][b]) = follow(child[b][keep], t[j][b], cw.seed, cw.t[keep], 1);
                }
                out[16 * lvl..16 * lvl + 16].copy_from_slice(&cw.seed.to_le_bytes());
                out[(16 + 8 * width) * n + (2 * lvl) / 8] |=
                    (cw.t[0] | (cw.t[1] << 1)) << ((2 * lvl) % 8);
                if let Some(slot) = slots[lvl + 1] {
                    // on α's path at depth lvl + 1: the value of x' = prefix‖0…0
                    let low_bits = n - 1 - lvl;
                    let below = alphas[key] & ((1u64 << low_bits) - 1) != 0;
                    for q in 0..width {
                        let want = if below { betas[key * width + q] } else { 0 };
                        let cw = sign(t[j][1]).wrapping_mul(
                            stop_word(s[j][1], q)
                                .wrapping_sub(stop_word(s[j][0], q))
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
                    leaf_word(s[j][1], q)
                        .wrapping_sub(leaf_word(s[j][0], q))
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

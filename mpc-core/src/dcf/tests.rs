use super::eval::*;
use super::keygen::*;
use super::keys::*;

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

/// Distinct root-seed pairs of both parties for `keys` keys (shared by the
/// bit-output variant's tests).
pub(super) fn root_pairs(keys: usize) -> Vec<[Block; 2]> {
    (0..keys)
        .map(|k| {
            let mut r0 = [k as u8; 16];
            r0[1] = (k >> 8) as u8;
            let mut r1 = r0;
            r1[2] = 0x5a;
            [r0, r1]
        })
        .collect()
}

#[test]
fn batches_over_many_keys_and_chunks_match_single_evaluations() {
    let bits = 20;
    let keys = 700;
    let roots = root_pairs(keys);
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

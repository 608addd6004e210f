mod common;

use common::*;
use mpc_core::plain;
use mpc_core::{FixedPoint, Fx, Shape, Share};
use proptest::prelude::*;

const FP: FixedPoint = FixedPoint { frac_bits: 16 };
const ULP: f64 = 1.0 / 65536.0;

#[test]
fn mul_matches_plaintext_and_costs_two_rounds() {
    let x = uniform(1000, -100.0, 100.0, 1);
    let y = uniform(1000, -100.0, 100.0, 2);
    let (got, r) = run(FP, &[&x, &y], |s, v| {
        s.run(|cx| settled(cx.mul(&flat(cx, &v[0]), &flat(cx, &v[1]))))
    });
    let want: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a * b).collect();
    // encoding error of each operand (≤ ½ ulp) times the other operand, plus one ulp of truncation
    assert!(max_abs_diff(&got, &want) < 100.0 * ULP + 2.0 * ULP);
    for p in r.online {
        assert_eq!(p.rounds, 2);
        assert_eq!(p.bytes_sent, 16 * 1000 + 1000 / 8);
    }
    // the triple's product, and the truncation's wrap product modulo 2^16 (2 bytes)
    assert_eq!(r.dealer_bytes, [0, 8 * 1000 + 2 * 1000]);
}

#[test]
fn dot_product_of_three_terms_costs_one_triple_word_per_element() {
    let n = 300;
    let xs: Vec<Vec<f64>> = (0..3).map(|t| uniform(n, -20.0, 20.0, 80 + t)).collect();
    let ys: Vec<Vec<f64>> = (0..3).map(|t| uniform(n, -20.0, 20.0, 90 + t)).collect();
    let inputs: Vec<&[f64]> = xs.iter().chain(&ys).map(Vec::as_slice).collect();
    let (got, r) = run(FP, &inputs, |s, v| {
        let z = s.run(|cx| {
            let t: Vec<Fx> = v.iter().map(|s| flat(cx, s)).collect();
            cx.dot(&[&t[0], &t[1], &t[2]], &[&t[3], &t[4], &t[5]])
        })?;
        assert_eq!((z.frac(), z.pending()), (16, 16));
        s.run(|cx| cx.trunc(z.share(), 16))
    });
    let want: Vec<f64> = (0..n)
        .map(|i| (0..3).map(|t| xs[t][i] * ys[t][i]).sum())
        .collect();
    // each operand's encoding error (½ ulp) times the other (≤ 20), three terms, one truncation
    assert!(max_abs_diff(&got, &want) < 3.0 * 20.0 * ULP + 2.0 * ULP);
    for p in r.online {
        assert_eq!(p.rounds, 2);
        assert_eq!(p.bytes_sent as usize, 3 * 16 * n + n.div_ceil(8));
    }
    // one summed product share per element (8 bytes) whatever the terms, and the truncation's 2
    assert_eq!(r.dealer_bytes, [0, (8 * n + 2 * n) as u64]);
}

#[test]
fn square_and_matmul_match_plaintext_with_counts() {
    let x = uniform(64, -8.0, 8.0, 3);
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| settled(cx.square(&flat(cx, &v[0]))))
    });
    let want: Vec<f64> = x.iter().map(|a| a * a).collect();
    assert!(max_abs_diff(&got, &want) < 20.0 * ULP);
    assert_eq!(r.online[0].rounds, 2);
    assert_eq!(r.online[0].bytes_sent, 8 * 64 + 8);

    let (m, k, n) = (5, 16, 7);
    let a = uniform(m * k, -4.0, 4.0, 4);
    let b = uniform(k * n, -4.0, 4.0, 5);
    let (got, r) = run(FP, &[&a, &b], |s, v| {
        s.run(|cx| {
            let (a, b) = (fx(cx, &v[0], m, k), fx(cx, &v[1], k, n));
            settled(cx.matmul(&a, &b))
        })
    });
    let want = plain::matmul(&a, &b, m, k, n);
    assert!(max_abs_diff(&got, &want) < k as f64 * 8.0 * ULP);
    assert_eq!(r.online[1].rounds, 2);
    assert_eq!(
        r.online[1].bytes_sent as usize,
        8 * (m * k + k * n) + (m * n).div_ceil(8)
    );
    // the product matrix, and the truncation's wrap products modulo 2^16
    assert_eq!(r.dealer_bytes[1] as usize, 8 * m * n + 2 * m * n);
}

#[test]
fn weight_matmul_opens_only_the_activation() {
    let (m, k, n) = (65, 32, 48);
    let x = uniform(m * k, -3.0, 3.0, 6);
    let w = uniform(k * n, -0.5, 0.5, 7);
    let (got, r) = run(FP, &[&x, &w], |s, v| {
        let mw = s.run(|cx| cx.mask_weight(1, &v[1], k, n))?;
        let y1 = s.run(|cx| settled(cx.weight_matmul(&fx(cx, &v[0], m, k), &mw)))?;
        let y2 = s.run(|cx| settled(cx.weight_matmul(&fx(cx, &v[0], m, k), &mw)))?;
        Ok(Share::concat(&[&y1, &y2]))
    });
    let want = plain::matmul(&x, &w, m, k, n);
    let both: Vec<f64> = want.iter().chain(want.iter()).copied().collect();
    assert!(max_abs_diff(&got, &both) < k as f64 * 2.0 * ULP);
    // load: one round of 8kn bytes; each use: 8mk bytes + truncation bits, 2 rounds
    let per_use = 8 * m * k + (m * n).div_ceil(8);
    assert_eq!(r.online[0].bytes_sent as usize, 8 * k * n + 2 * per_use);
    assert_eq!(r.online[0].rounds, 1 + 2 * 2);
    assert_eq!(r.dealer_bytes[0], 0, "party 0 gets only its seed");
}

#[test]
fn truncation_is_within_one_ulp_at_the_domain_edges() {
    // raw values with 2f fractional bits near ±2^61 (the documented domain is |x| < 2^62)
    let big = (1u64 << 61) as f64 / (1u64 << 32) as f64;
    let x = vec![
        0.0,
        -0.0,
        big * 0.999,
        -big * 0.999,
        1.0 / 65536.0,
        -1.0 / 65536.0,
        3.5,
        -3.5,
    ];
    let shared = Shared::new(FixedPoint { frac_bits: 32 }, &[&x]);
    let r = mpc_core::local::run_local(FP, |s| {
        let x = shared.of(s)[0].clone();
        s.run(|cx| cx.trunc(&x, 16))
    })
    .unwrap();
    // one round, one bit per element each way; from the dealer to party 1 the
    // share of the wrap's AND, needed modulo 2^16 only (it is used times 2^48): 2 bytes
    for p in r.online {
        assert_eq!(p.rounds, 1);
        assert_eq!(p.bytes_sent as usize, x.len().div_ceil(8));
    }
    assert_eq!(r.dealer_bytes, [0, 2 * x.len() as u64]);
    let v = mpc_core::reconstruct(&r.outputs[0], &r.outputs[1]);
    for (xi, vi) in x.iter().zip(&v) {
        let exact = (xi * 65536.0 * 65536.0).round() as i64 >> 16;
        let got = *vi as i64;
        assert!(
            got == exact || got == exact - 1,
            "x {xi}: got {got}, exact {exact}"
        );
    }
}

/// LayerNorm's centring divides `C·x − Σx` (at `2f` bits) by a `C` that
/// is not a power of two (192 in `vit_9_12_64`) inside a truncation. With
/// a 20-bit encoded factor the product passed 2^62 once |C·x| reached
/// about 900 and whole rows came out wrong; the factor now has 14 bits.
#[test]
fn scaled_truncation_by_one_over_192_holds_for_large_inputs() {
    let xs: Vec<f64> = uniform(4000, -3000.0, 3000.0, 11);
    let shared = Shared::new(FixedPoint { frac_bits: 32 }, &[&xs]);
    let r = mpc_core::local::run_local(FP, |s| {
        let x = shared.of(s)[0].clone();
        let x = Fx::with_pending(x, Shape::flat(xs.len()), 16, 16);
        s.run(|cx| cx.settle(x.scaled(1.0 / 192.0)).map(Fx::into_share))
    })
    .unwrap();
    let got = FP.decode_all(&mpc_core::reconstruct(&r.outputs[0], &r.outputs[1]));
    let want: Vec<f64> = xs.iter().map(|x| x / 192.0).collect();
    // 1 ulp of truncation plus 2^-14 relative error of the encoded 1/192.
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() - w.abs() * 2f64.powi(-14))
        .fold(f64::MIN, f64::max);
    assert!(worst <= 2.0 * ULP, "error beyond the bound by {worst}");
}

#[test]
fn pool_exhaustion_and_out_of_step_are_typed_errors() {
    use mpc_core::dealer::{Pool, Request};
    use mpc_core::{Dealer, MaterialGen, MemChannel, MpcError, Party, Seed, Session};
    let (s0, s1) = (Seed::for_tests(1), Seed::for_tests(2));
    let mut dealer = Dealer::new(&s0, &s1);
    let plan = vec![Request::Triple { n: 4 }];
    let (m0, _m1) = mpc_core::local::deal_plan(&mut dealer, &plan).unwrap();
    let mut pool = Pool::preprocess(&mut MaterialGen::new(Party::P0, &s0), &plan, &m0).unwrap();
    let (mut c0, _c1) = MemChannel::pair();
    let mut s = Session::new(Party::P0, FP, &mut c0, &mut pool);
    let x = Share::zeros(3);
    let x3 = Fx::new(x.clone(), Shape::flat(3), 16);
    let err = s.run(|cx| cx.mul(&x3, &x3)).unwrap_err();
    assert!(matches!(err, MpcError::OutOfStep { .. }), "{err}");
    let mut empty = Pool::new();
    let mut s = Session::new(Party::P0, FP, &mut c0, &mut empty);
    let err = s.run(|cx| cx.trunc(&x, 16)).unwrap_err();
    assert!(matches!(err, MpcError::PoolExhausted { .. }), "{err}");
}

#[test]
fn dealer_message_of_wrong_length_is_rejected() {
    use mpc_core::dealer::Request;
    use mpc_core::{MaterialGen, MpcError, Party, Seed};
    let mut g = MaterialGen::new(Party::P1, &Seed::for_tests(3));
    let err = g.expand(&Request::Triple { n: 4 }, &[0u8; 31]).unwrap_err();
    assert!(matches!(err, MpcError::Dealer(_)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn mul_property(xs in proptest::collection::vec(-1000.0f64..1000.0, 1..40), k in -50.0f64..50.0) {
        let ys: Vec<f64> = xs.iter().map(|x| x * 0.37 - k).collect();
        let (got, _) = run(FP, &[&xs, &ys], |s, v| s.run(|cx| settled(cx.mul(&flat(cx, &v[0]), &flat(cx, &v[1])))));
        let want: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| a * b).collect();
        let tol = 1100.0 * ULP + 2.0 * ULP;
        prop_assert!(max_abs_diff(&got, &want) < tol);
    }
}

#[test]
fn row_scaling_truncates_its_vector_in_the_same_round() {
    // v at f + 20 bits, as wide as the domain allows (|v| < 2^62), both signs.
    let (rows, cols, shift) = (40, 7, 20);
    let x = uniform(rows * cols, -3.0, 3.0, 61);
    let vs: Vec<f64> = uniform(rows, -1.0, 1.0, 62)
        .iter()
        .map(|u| u * 2f64.powi(61 - 16 - 20))
        .collect();
    let at = FixedPoint { frac_bits: 16 + 20 };
    let shared = Shared::new(FP, &[&x]);
    let v_enc: Vec<u64> = vs.iter().map(|v| at.encode(*v)).collect();
    let (v0, v1) = mpc_core::share_secret(
        &v_enc,
        &mut mpc_core::Prg::new(&mpc_core::Seed::for_tests(63)),
    );
    let vshares = [v0, v1];
    let r = mpc_core::local::run_local(FP, |s| {
        let x = Fx::new(shared.of(s)[0].clone(), Shape::new(rows, cols), 16);
        let v = Fx::with_pending(
            vshares[s.party().index()].clone(),
            Shape::new(rows, 1),
            16,
            shift,
        );
        s.run(|c| c.mul_rows(&x, &v).map(Fx::into_share))
    })
    .unwrap();
    let got = mpc_core::reconstruct(&r.outputs[0], &r.outputs[1]);
    let xq: Vec<i64> = x.iter().map(|v| FP.encode(*v) as i64).collect();
    for i in 0..rows {
        let t = (v_enc[i] as i64) >> shift;
        for j in 0..cols {
            let want = xq[i * cols + j].wrapping_mul(t);
            let g = got[i * cols + j] as i64;
            // the truncated vector is exact or one above
            let d = g.wrapping_sub(want);
            assert!(
                d == 0 || d == xq[i * cols + j],
                "row {i} col {j}: {g} vs {want}"
            );
        }
    }
    let n = rows * cols;
    assert_eq!(r.online[0].rounds, 1);
    assert_eq!(r.online[0].bytes_sent as usize, 8 * (n + rows));
    // r_h and A⊙r_h in full, msb(r) and A⊙msb(r) modulo 2^shift (20 bits each)
    let packed = |len: usize, w: u32| mpc_core::channel::packed_len(len, w);
    assert_eq!(
        r.dealer_bytes[1] as usize,
        8 * n + packed(n, shift) + 8 * rows + packed(rows, shift)
    );
}

#[test]
fn row_scaling_truncates_matrix_and_vector_in_the_same_round() {
    // x at f + 16 bits and v at f + 20 bits, both pending, both signs.
    let (rows, cols, sx, sv) = (30, 5, 16, 20);
    let xs = uniform(rows * cols, -6.0, 6.0, 71);
    let vs = uniform(rows, -4.0, 4.0, 72);
    let (ax, av) = (FixedPoint { frac_bits: 32 }, FixedPoint { frac_bits: 36 });
    let x_enc: Vec<u64> = xs.iter().map(|v| ax.encode(*v)).collect();
    let v_enc: Vec<u64> = vs.iter().map(|v| av.encode(*v)).collect();
    let mut prg = mpc_core::Prg::new(&mpc_core::Seed::for_tests(73));
    let (x0, x1) = mpc_core::share_secret(&x_enc, &mut prg);
    let (v0, v1) = mpc_core::share_secret(&v_enc, &mut prg);
    let (xsh, vsh) = ([x0, x1], [v0, v1]);
    let r = mpc_core::local::run_local(FP, |s| {
        let p = s.party().index();
        let x = Fx::with_pending(xsh[p].clone(), Shape::new(rows, cols), 16, sx);
        let v = Fx::with_pending(vsh[p].clone(), Shape::new(rows, 1), 16, sv);
        s.run(|c| c.mul_rows(&x, &v).map(Fx::into_share))
    })
    .unwrap();
    let got = mpc_core::reconstruct(&r.outputs[0], &r.outputs[1]);
    for i in 0..rows {
        let vt = (v_enc[i] as i64) >> sv;
        for j in 0..cols {
            let xt = (x_enc[i * cols + j] as i64) >> sx;
            let g = got[i * cols + j] as i64;
            // each truncation is exact or one above
            let ok = [0, 1]
                .iter()
                .flat_map(|a| [0, 1].iter().map(move |b| (xt + a) * (vt + b)))
                .any(|w| w == g);
            assert!(ok, "row {i} col {j}: {g} vs {}", xt * vt);
        }
    }
    let n = rows * cols;
    assert_eq!(r.online[0].rounds, 1);
    assert_eq!(r.online[0].bytes_sent as usize, 8 * (n + rows));
    assert_eq!(r.dealer_bytes[0], 0);
    // a_h, a_h·r_h, r_h in full; a_m, a_m·r_h modulo 2^16; r_m, a_h·r_m
    // modulo 2^20; a_m·r_m not at all (it is used times 2^(128−36))
    let bits = |len: usize, w: u32| mpc_core::channel::packed_len(len, w);
    assert_eq!(
        r.dealer_bytes[1] as usize,
        16 * n + 2 * bits(n, sx) + bits(n, sv) + 8 * rows + bits(rows, sv)
    );
}

#[test]
fn settle_truncates_in_one_round_and_nothing_pending_costs_nothing() {
    let x = uniform(50, -100.0, 100.0, 101);
    let wide = FixedPoint { frac_bits: 24 };
    let shared = Shared::new(wide, &[&x]);
    let r = mpc_core::local::run_local(FP, |s| {
        let x = Fx::with_pending(shared.of(s)[0].clone(), Shape::flat(50), 16, 8);
        let t = s.run(|c| c.settle(x))?;
        assert_eq!((t.frac(), t.pending()), (16, 0));
        let again = s.run(|c| c.settle(t.clone()))?;
        assert_eq!(again, t);
        Ok::<_, mpc_core::MpcError>(t.into_share())
    })
    .unwrap();
    let got = FP.decode_all(&mpc_core::reconstruct(&r.outputs[0], &r.outputs[1]));
    assert!(max_abs_diff(&got, &x) <= 2.0 * ULP);
    assert_eq!(r.online[0].rounds, 1);
    assert_eq!(r.online[0].bytes_sent as usize, 50usize.div_ceil(8));
}

#[test]
fn row_scaling_of_a_pending_matrix_by_a_settled_factor_settles_it_first() {
    let (rows, cols) = (6, 5);
    let xs = uniform(rows * cols, -3.0, 3.0, 102);
    let vs = uniform(rows, -2.0, 2.0, 103);
    let wide = FixedPoint { frac_bits: 32 };
    let (xw, vf) = (Shared::new(wide, &[&xs]), Shared::new(FP, &[&vs]));
    let r = mpc_core::local::run_local(FP, |s| {
        let x = Fx::with_pending(xw.of(s)[0].clone(), Shape::new(rows, cols), 16, 16);
        let v = Fx::new(vf.of(s)[0].clone(), Shape::new(rows, 1), 16);
        s.run(|c| settled(c.mul_rows(&x, &v)))
    })
    .unwrap();
    let got = FP.decode_all(&mpc_core::reconstruct(&r.outputs[0], &r.outputs[1]));
    let want: Vec<f64> = (0..rows * cols).map(|i| xs[i] * vs[i / cols]).collect();
    assert!(max_abs_diff(&got, &want) < 8.0 * ULP);
    // the matrix's truncation, the row-broadcast product, its truncation
    assert_eq!(r.online[0].rounds, 3);
}

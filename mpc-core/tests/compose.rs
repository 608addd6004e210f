//! Operators as values: joined operators share rounds, chained ones add
//! theirs, results keep their order, empty exchanges cost nothing, and a
//! failure anywhere fails the whole operator before anything is sent.

mod common;

use common::*;
use mpc_core::compare::Relu;
use mpc_core::{FixedPoint, Fx, MpcError, Op, Share, plain};

const FP: FixedPoint = FixedPoint { frac_bits: 16 };
const ULP: f64 = 1.0 / 65536.0;

/// The inputs as the protocol sees them (rounded to f bits).
fn q(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| FP.decode(FP.encode(*v))).collect()
}

#[test]
fn joined_operators_share_their_rounds_and_add_their_bytes() {
    let x = uniform(40, -4.0, 4.0, 1);
    let y = uniform(40, -4.0, 4.0, 2);
    let n = x.len();
    // Alone: a product is 2 rounds (product, truncation) and 16n + n/8 bytes.
    let (_, alone) = run(FP, &[&x, &y], |s, v| {
        s.run(|c| settled(c.mul(&flat(c, &v[0]), &flat(c, &v[1]))))
    });
    assert_eq!(alone.online[0].rounds, 2);
    let (got, joined) = run(FP, &[&x, &y], |s, v| {
        s.run(|c| {
            let a = settled(c.mul(&flat(c, &v[0]), &flat(c, &v[1])));
            let b = settled(c.mul(&flat(c, &v[1]), &flat(c, &v[1])));
            a.join(b).map(|(a, b)| Share::concat(&[&a, &b]))
        })
    });
    assert_eq!(joined.online[0].rounds, 2, "two products side by side");
    assert_eq!(
        joined.online[0].bytes_sent,
        2 * alone.online[0].bytes_sent,
        "bytes add up"
    );
    let want: Vec<f64> = q(&x)
        .iter()
        .zip(&q(&y))
        .map(|(a, b)| a * b)
        .chain(q(&y).iter().map(|b| b * b))
        .collect();
    assert!(max_abs_diff(&got, &want) < 4.0 * ULP);
    assert_eq!(got.len(), 2 * n);
}

#[test]
fn all_keeps_order_and_costs_the_longest_member() {
    let x = uniform(30, -3.0, 3.0, 3);
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|c| {
            let (x, xf) = (&v[0], flat(c, &v[0]));
            // 2 rounds (ReLU), 1 round (a truncation), 0 rounds, 2 rounds (square).
            let ops = vec![
                c.relu(&xf, Relu::exact(24)).map(Fx::into_share),
                c.trunc(&x.scale_int(1 << 16), 16),
                Op::ready(x.clone()),
                settled(c.square(&xf)),
            ];
            Op::all(ops).map(|parts| Share::concat(&parts.iter().collect::<Vec<_>>()))
        })
    });
    assert_eq!(r.online[0].rounds, 2);
    let xq = q(&x);
    let relu: Vec<f64> = xq.iter().map(|v| v.max(0.0)).collect();
    let sq: Vec<f64> = xq.iter().map(|v| v * v).collect();
    let n = x.len();
    assert!(max_abs_diff(&got[..n], &relu) <= ULP);
    assert!(max_abs_diff(&got[n..2 * n], &xq) <= ULP);
    assert!(max_abs_diff(&got[2 * n..3 * n], &xq) == 0.0);
    assert!(max_abs_diff(&got[3 * n..], &sq) < 4.0 * ULP);
}

#[test]
fn chained_operators_add_their_rounds() {
    let x = uniform(20, 0.5, 1.5, 4);
    // x⁴ = (x²)²: two squares of two rounds each, one after the other.
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|c| {
            c.square(&flat(c, &v[0]))
                .settled()
                .then(|c, x2| settled(c.square(&x2)))
        })
    });
    assert_eq!(r.online[0].rounds, 4);
    let want: Vec<f64> = q(&x).iter().map(|v| v.powi(4)).collect();
    assert!(max_abs_diff(&got, &want) < 1e-3);
}

#[test]
fn nothing_to_send_costs_no_round() {
    let (got, r) = run(FP, &[&[]], |s, v| {
        s.run(|c| {
            let t = c.trunc(&v[0], 16);
            let m = c.mul(&flat(c, &v[0]), &flat(c, &v[0])).map(Fx::into_share);
            t.join(m).map(|(t, m)| Share::concat(&[&t, &m]))
        })
    });
    assert!(got.is_empty());
    assert_eq!(r.online[0].rounds, 0);
    assert_eq!(r.online[0].bytes_sent, 0);
}

#[test]
fn a_failure_in_a_joined_operator_fails_the_whole_before_sending() {
    let shared = Shared::new(FP, &[&[1.0, 2.0, 3.0], &[1.0, 2.0]]);
    let r = mpc_core::local::run_local(FP, |s| {
        let v = shared.of(s).to_vec();
        s.run(|c| {
            let good = settled(c.mul(&flat(c, &v[0]), &flat(c, &v[0])));
            let bad = settled(c.mul(&flat(c, &v[0]), &flat(c, &v[1])));
            good.join(bad).map(|(a, _)| a)
        })
    });
    match r {
        Err(MpcError::Shape { op, .. }) => assert_eq!(op, "mul"),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn library_attention_matches_the_reference_with_heads_side_by_side() {
    // Two ReLU-softmax heads joined cost what one costs.
    let (n, d) = (9, 4);
    let s1 = uniform(n * n, -3.0, 3.0, 5);
    let s2 = uniform(n * n, -3.0, 3.0, 6);
    let v = uniform(n * d, -1.0, 1.0, 7);
    let p = mpc_core::blocks::attention::ReluAttention {
        relu: Relu::exact(24),
        eps: 1e-3,
        row_sum: mpc_core::nonlinear::ROW_SUMS,
    };
    let (_, one) = run(FP, &[&s1, &v], |s, x| {
        s.run(|c| {
            let (s, v) = (fx(c, &x[0], n, n), fx(c, &x[1], n, d));
            settled(c.relu_attention(&s, Op::ready(v), p))
        })
    });
    let (got, two) = run(FP, &[&s1, &s2, &v], |s, x| {
        s.run(|c| {
            let (s1, s2, v) = (fx(c, &x[0], n, n), fx(c, &x[1], n, n), fx(c, &x[2], n, d));
            let a = settled(c.relu_attention(&s1, Op::ready(v.clone()), p));
            let b = settled(c.relu_attention(&s2, Op::ready(v), p));
            a.join(b).map(|(a, b)| Share::concat(&[&a, &b]))
        })
    });
    assert_eq!(two.online[0].rounds, one.online[0].rounds);
    for (h, s) in [&s1, &s2].into_iter().enumerate() {
        let pr = plain::relu_softmax(&q(s), n, n, 1e-3);
        let want = plain::matmul(&pr, &q(&v), n, n, d);
        let err = max_abs_diff(&got[h * n * d..(h + 1) * n * d], &want);
        assert!(err < 2e-3 + 16.0 * ULP, "head {h}: error {err}");
    }
}

#[test]
fn the_session_profile_counts_each_kind_once_per_round_it_is_in() {
    let x = uniform(40, -4.0, 4.0, 5);
    let n = x.len();
    let profiles = mpc_core::local::run_local(FP, |s| {
        let v = Share::new(vec![FP.encode(0.5); n]);
        // a product (mul, then trunc) beside a truncation alone, then a truncation
        s.run(|c| {
            let a = settled(c.mul(&flat(c, &v), &flat(c, &v)));
            let b = c.trunc(&v, 3);
            a.join(b).then(|c, (a, _)| c.trunc(&a, 2))
        })?;
        Ok::<_, MpcError>(s.profile().clone())
    })
    .unwrap();
    let p = &profiles.outputs[0];
    let (mul, trunc) = (p["mul"], p["trunc"]);
    assert_eq!(mul.rounds, 1);
    assert_eq!(mul.bytes, 16 * n as u64);
    // round 1 holds the product's opening and the lone truncation, round 2
    // the product's truncation, round 3 the last: three rounds of "trunc"
    assert_eq!(profiles.online[0].rounds, 3);
    assert_eq!(trunc.rounds, 3);
    assert_eq!(trunc.bytes, 3 * n.div_ceil(8) as u64);
    assert_eq!(
        p.values().map(|c| c.bytes).sum::<u64>(),
        profiles.online[0].bytes_sent
    );
}

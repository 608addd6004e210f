mod common;

use common::*;
use mpc_core::blocks::attention::ReluAttention;
use mpc_core::blocks::layer_norm::LayerNormParams;
use mpc_core::compare::Relu;
use mpc_core::nonlinear::{Domain, EXTRA_FRAC, KNOT_BITS, PiecewiseEval, ROW_SUMS};
use mpc_core::{FixedPoint, Fx, Op, Shape, Share, Squares, plain};
use proptest::prelude::*;

const FP: FixedPoint = FixedPoint { frac_bits: 16 };
const F: u32 = 16;
const ULP: f64 = 1.0 / 65536.0;

/// A share at `2f` bits read at `f`, its truncation by `f` pending.
fn wide(s: &Share) -> Fx {
    Fx::with_pending(s.clone(), Shape::flat(s.len()), F, F)
}

fn q(x: &[f64]) -> Vec<f64> {
    // the inputs as the protocol sees them (rounded to f bits)
    x.iter().map(|v| FP.decode(FP.encode(*v))).collect()
}

#[test]
fn relu_is_exact_with_counts() {
    let mut x = uniform(997, -1000.0, 1000.0, 11);
    x.extend([0.0, ULP, -ULP, 2.0 * ULP, -32767.0, 32767.0]);
    let n = x.len();
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| {
            cx.relu(&flat(cx, &v[0]), Relu::exact(32))
                .map(Fx::into_share)
        })
    });
    let want: Vec<f64> = q(&x).iter().map(|v| plain::relu(*v)).collect();
    assert_eq!(got, want, "ReLU must be exact");
    for p in r.online {
        assert_eq!(p.rounds, 2);
        assert_eq!(p.bytes_sent as usize, 8 * n + n.div_ceil(8));
    }
    // dealer: XOR-output DCF keys (31 input bits: 24 levels and a 128-bit
    // leaf) to both, ρ and ρ·r to party 1
    let cw = n * (24 * 16 + 16);
    assert_eq!(r.dealer_bytes, [cw as u64, (cw + 16 * n) as u64]);
}

#[test]
fn coarse_relu_errs_only_just_above_zero_and_is_never_negative() {
    let coarse = 8;
    let band = (1u64 << coarse) as f64 * ULP;
    let mut x = uniform(3000, -2.0, 2.0, 41);
    x.extend(uniform(3000, -band, band, 42));
    for k in 0..=300i64 {
        x.push((k - 150) as f64 * ULP);
    }
    x.extend([-band, -band - ULP, band, -100.0, 100.0, 127.99]);
    let n = x.len();
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| {
            let p = Relu {
                bits: 24,
                coarse,
                one_round: false,
            };
            cx.relu(&flat(cx, &v[0]), p).map(Fx::into_share)
        })
    });
    let mut wrong = 0;
    for (g, v) in got.iter().zip(q(&x)) {
        assert!(*g >= 0.0, "x {v}: got {g}");
        if *g != v.max(0.0) {
            // the only possible error: a small positive input zeroed
            assert!((0.0..band).contains(&v) && *g == 0.0, "x {v}: got {g}");
            wrong += 1;
        }
    }
    assert!(wrong > 0 && wrong < n / 4, "{wrong} of {n} wrong");
    assert_eq!(r.online[0].rounds, 2);
    assert_eq!(r.online[0].bytes_sent as usize, 8 * n + n.div_ceil(8));
    // 24 − 1 − 8 = 15 input bits: 8 levels and a 128-bit leaf
    let cw = n * (8 * 16 + 16);
    assert_eq!(r.dealer_bytes, [cw as u64, (cw + 16 * n) as u64]);
}

#[test]
fn bit_comparison_gives_bits_and_selections() {
    let x = uniform(300, -10.0, 10.0, 43);
    let ts = [-3.0, 0.0, 0.5, 7.25];
    let enc: Vec<u64> = ts.iter().map(|t| FP.encode(*t)).collect();
    let n = x.len();
    let (got, r) = run_at(FP, 0, &[&x], |s, v| {
        let c = s.run(|cx| cx.bit_compare(&flat(cx, &v[0]), &enc, 24, 0, true, Squares::Each))?;
        let sq = c.square_raw();
        let o = s.run(|_| c.open())?;
        let mut all: Vec<Share> = o.bits();
        all.extend(o.select());
        all.push(sq);
        Ok(Share::concat(&all.iter().collect::<Vec<_>>()))
    });
    assert_eq!(r.online[0].rounds, 2);
    assert_eq!(
        r.online[0].bytes_sent as usize,
        8 * n + (ts.len() * n).div_ceil(8)
    );
    let xq = q(&x);
    let raw = |v: f64| FP.encode(v) as i64 as f64;
    for (j, t) in ts.iter().enumerate() {
        for i in 0..n {
            let b = if xq[i] >= *t { 1.0 } else { 0.0 };
            assert_eq!(got[j * n + i], b, "bit {j} of {}", xq[i]);
            assert_eq!(got[(ts.len() + j) * n + i], b * raw(xq[i]), "select");
        }
    }
    for i in 0..n {
        let sq = got[2 * ts.len() * n + i];
        assert_eq!(sq, raw(xq[i]) * raw(xq[i]), "square of {}", xq[i]);
    }
    let keys = n * (16 * 16 + 16);
    let p1 = keys + 8 * n * ts.len() * 2 + 8 * n;
    assert_eq!(r.dealer_bytes, [keys as u64, p1 as u64]);
}

#[test]
fn a_bit_comparison_truncates_its_square_beside_the_bits_and_selects_it() {
    // x at 2f bits truncated to f in the opening, as a GeLU's input; its
    // square (at 2f bits) truncated by 10 in the round that opens the bits
    let x = uniform(400, -100.0, 100.0, 45);
    let x2f: Vec<f64> = x.iter().map(|v| v * 65536.0).collect();
    let ts = [-3.0, 0.0, 41.5];
    let at2f = FixedPoint { frac_bits: 2 * F };
    let enc: Vec<u64> = ts.iter().map(|t| at2f.encode(*t)).collect();
    let (n, k) = (x.len(), ts.len());
    let square = Squares::EachTruncated(10);
    let (got, r) = run_at(FP, 0, &[&x2f], |s, v| {
        let c = s.run(|cx| cx.bit_compare(&wide(&v[0]), &enc, 41, 0, true, square))?;
        let value = c.value();
        let o = s.run(|_| c.open())?;
        let mut all: Vec<Share> = o.select_square();
        all.push(value);
        all.push(o.square());
        Ok(Share::concat(&all.iter().collect::<Vec<_>>()))
    });
    assert_eq!(r.online[0].rounds, 2);
    assert_eq!(
        r.online[0].bytes_sent as usize,
        8 * n + (k * n).div_ceil(8) + 8 * n
    );
    for i in 0..n {
        let exact = at2f.encode(x[i]) as i64;
        let v = got[k * n + i] as i64;
        let t = (v * v) >> 10;
        let sq = got[(k + 1) * n + i] as i64;
        assert!(sq == t || sq == t + 1, "square {sq} of {v}: {t}");
        for (j, th) in ts.iter().enumerate() {
            let b = (exact >= at2f.encode(*th) as i64) as i64;
            assert_eq!(
                got[j * n + i] as i64,
                b * sq,
                "selected square {j} of {}",
                x[i]
            );
        }
    }
}

#[test]
fn a_truncating_bit_comparison_truncates_squares_and_selects_from_one_opening() {
    // x carries 2f bits (a product), up to ±100 (2^(6+32) ulps); the
    // comparison reads it at 2f bits and the products see it truncated to f.
    let x = uniform(400, -100.0, 100.0, 44);
    let x2f: Vec<f64> = x.iter().map(|v| v * 65536.0).collect();
    let ts = [-3.0, 0.0, 41.5];
    let at2f = FixedPoint { frac_bits: 2 * F };
    let enc: Vec<u64> = ts.iter().map(|t| at2f.encode(*t)).collect();
    let n = x.len();
    let (got, r) = run_at(FP, 0, &[&x2f], |s, v| {
        // 41 bits compare |x − t| < 2^8 at 2f bits; no coarse bits; truncate by f
        let c = s.run(|cx| cx.bit_compare(&wide(&v[0]), &enc, 41, 0, true, Squares::Each))?;
        let (value, sq) = (c.value(), c.square_raw());
        let o = s.run(|_| c.open())?;
        let mut all: Vec<Share> = o.bits();
        all.extend(o.select());
        all.push(value);
        all.push(sq);
        Ok(Share::concat(&all.iter().collect::<Vec<_>>()))
    });
    assert_eq!(r.online[0].rounds, 2);
    assert_eq!(
        r.online[0].bytes_sent as usize,
        8 * n + (ts.len() * n).div_ceil(8)
    );
    let k = ts.len();
    for i in 0..n {
        // the exact value at 2f bits and its truncation to f bits
        let exact = at2f.encode(x[i]) as i64;
        let t = exact >> F;
        let v = got[(2 * k) * n + i] as i64;
        assert!(v == t || v == t + 1, "value {v} for {t}");
        assert_eq!(got[(2 * k + 1) * n + i] as i64, v.wrapping_mul(v), "square");
        for (j, th) in ts.iter().enumerate() {
            let b = (exact >= at2f.encode(*th) as i64) as i64;
            assert_eq!(got[j * n + i] as i64, b, "bit {j} of {}", x[i]);
            assert_eq!(got[(k + j) * n + i] as i64, b * v, "select {j}");
        }
    }
    // party 1: ρ, ρ·r_h per point and r_h², r_h per element in full;
    // ρ·msb(r) per point and r_h·msb(r), msb(r) per element modulo 2^f
    // (they only meet the truncation's wrap coefficient 2^(64−f)): 2 bytes
    let keys = n * (16 * (41 - 8) + 16);
    let p1 = keys + 8 * n * k * 2 + 2 * n * k + 8 * n * 2 + 2 * n * 2;
    assert_eq!(r.dealer_bytes, [keys as u64, p1 as u64]);
}

#[test]
fn a_norm_opening_gives_exact_products_of_the_truncated_value() {
    // centred rows at 2f bits (up to ±100), truncated to f by the opening;
    // then v ⊙ γ and v·W opened modulo 2^f only (the wrap part of v)
    let (rows, c, out) = (6, 16, 5);
    let n = rows * c;
    let x = uniform(n, -100.0, 100.0, 45);
    let x2f: Vec<f64> = x.iter().map(|v| v * 65536.0).collect();
    let g = uniform(c, -2.0, 2.0, 46);
    let w = uniform(c * out, -1.0, 1.0, 47);
    let (got, r) = run_at(FP, 0, &[&x2f, &g, &w], |s, v| {
        let mg = s.run(|cx| cx.mask_weight(0, &v[1], 1, c))?;
        let mw = s.run(|cx| cx.mask_weight(1, &v[2], c, out))?;
        let xc = Fx::with_pending(v[0].clone(), Shape::new(rows, c), F, F);
        let o = s.run(|cx| cx.norm_opening(&xc, Some(&mg), Some(&mw)))?;
        let value = o.value();
        let p = s.run(|_| o.products(Some(&mg), Some(&mw)))?;
        let (scaled, product) = (p.scaled.expect("scaled"), p.product.expect("product"));
        Ok(Share::concat(&[&value, &scaled, &product]))
    });
    let raw = |v: f64| FP.encode(v) as i64;
    let v: Vec<i64> = got[..n].iter().map(|v| *v as i64).collect();
    for i in 0..n {
        let t = FixedPoint { frac_bits: 2 * F }.encode(x[i]) as i64 >> F;
        assert!(v[i] == t || v[i] == t + 1, "value {} for {t}", v[i]);
        assert_eq!(got[n + i] as i64, v[i] * raw(g[i % c]), "v ⊙ γ at {i}");
    }
    for row in 0..rows {
        for j in 0..out {
            let want: i64 = (0..c).map(|k| v[row * c + k] * raw(w[k * out + j])).sum();
            assert_eq!(got[2 * n + row * out + j] as i64, want, "v·W at {row},{j}");
        }
    }
    // two weight maskings, the truncating opening (8n), the products'
    // opening at f bits per element
    assert_eq!(r.online[0].rounds, 2 + 2);
    assert_eq!(
        r.online[0].bytes_sent as usize,
        8 * (c + c * out) + 8 * n + 2 * n
    );
    // party 1: Σ r_h² per row, r_h; msb(r) and r_h·msb(r) modulo 2^f; C*
    // for γ (n words) and for W (rows·out)
    let p1 = 8 * rows + 8 * n + 2 * n + 2 * n + 8 * (n + rows * out);
    assert_eq!(r.dealer_bytes, [0, p1 as u64]);
}

#[test]
fn multi_threshold_comparison_and_row_max() {
    let x = uniform(200, -10.0, 10.0, 12);
    let ts = [-3.0, 0.0, 0.5, 7.25];
    let enc: Vec<u64> = ts.iter().map(|t| FP.encode(*t)).collect();
    let (got, r) = run_at(FP, 0, &[&x], |s, v| {
        let bits = s.run(|cx| cx.ge_thresholds(&flat(cx, &v[0]), &enc, 24, 0))?;
        Ok(Share::concat(&bits.iter().collect::<Vec<_>>()))
    });
    assert_eq!(r.online[0].rounds, 1);
    let xq = q(&x);
    for (j, t) in ts.iter().enumerate() {
        for i in 0..x.len() {
            assert_eq!(got[j * x.len() + i], if xq[i] >= *t { 1.0 } else { 0.0 });
        }
    }
    let (rows, cols) = (5, 65);
    let s = uniform(rows * cols, -20.0, 20.0, 13);
    let (got, r) = run(FP, &[&s], |ss, v| {
        ss.run(|cx| {
            let x = fx(cx, &v[0], rows, cols);
            cx.row_max(x, 24, 0).map(|(_, m)| m)
        })
    });
    let want: Vec<f64> = q(&s)
        .chunks(cols)
        .map(|c| c.iter().copied().fold(f64::MIN, f64::max))
        .collect();
    assert_eq!(got, want);
    // one round per level: each comparison's opening also gives its product
    assert_eq!(r.online[0].rounds, 7);
    assert_eq!(r.online[0].bytes_sent as usize, 8 * rows * (cols - 1));
    // one key per comparison with a two-word payload: 32 bytes per level
    let dcf = 23 * 32 + (2 * 23usize).div_ceil(8) + 16;
    assert_eq!(r.dealer_bytes[0] as usize, rows * (cols - 1) * dcf);

    // coarse, on scores whose truncation is pending (16 more bits): at most
    // 7 levels × 2^8 ulps below the maximum (plus 2 ulps either way: the
    // first level compares the differences before their truncation)
    let wide = FixedPoint { frac_bits: 2 * F };
    let enc: Vec<u64> = s.iter().map(|v| wide.encode(*v)).collect();
    let (s0, s1) = mpc_core::share_secret(
        &enc,
        &mut mpc_core::Prg::new(&mpc_core::Seed::for_tests(14)),
    );
    let shares = [s0, s1];
    let pr = mpc_core::local::run_local(FP, |ss| {
        let x = Fx::with_pending(
            shares[ss.party().index()].clone(),
            Shape::new(rows, cols),
            F,
            F,
        );
        ss.run(|cx| cx.row_max(x, 24, 8))
    })
    .unwrap();
    let (x0, m0) = &pr.outputs[0];
    let (x1, m1) = &pr.outputs[1];
    let xt: Vec<f64> = mpc_core::reconstruct(x0, x1)
        .iter()
        .map(|v| FP.decode(*v))
        .collect();
    let m: Vec<f64> = mpc_core::reconstruct(m0, m1)
        .iter()
        .map(|v| FP.decode(*v))
        .collect();
    for (i, row) in xt.chunks(cols).enumerate() {
        let top = row.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            m[i] <= top + 2.0 * ULP && m[i] >= top - (7.0 * 256.0 + 2.0) * ULP,
            "row {i}: {} vs {top}",
            m[i]
        );
    }
    assert!(
        max_abs_diff(&xt, &q(&s)) <= 2.0 * ULP,
        "the truncated scores"
    );
    assert_eq!(pr.online[0].rounds, 7);
}

#[test]
fn exp_matches_its_limit_and_the_true_exponential() {
    let x = uniform(500, -30.0, 0.0, 14);
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| cx.exp_neg(&flat(cx, &v[0])).map(Fx::into_share))
    });
    let lim: Vec<f64> = q(&x).iter().map(|v| plain::exp_limit(*v)).collect();
    let exact: Vec<f64> = q(&x).iter().map(|v| v.exp()).collect();
    assert!(
        max_abs_diff(&got, &lim) < 20.0 * ULP,
        "vs limit {}",
        max_abs_diff(&got, &lim)
    );
    assert!(
        max_abs_diff(&got, &exact) < 1.1e-3,
        "vs exp {}",
        max_abs_diff(&got, &exact)
    );
    // 8 squarings, each truncating the previous square in its own opening, and a last truncation
    assert_eq!(r.online[0].rounds, 9);
    let n = x.len();
    assert_eq!(r.online[0].bytes_sent as usize, 8 * 8 * n + n.div_ceil(8));
    // the first square's r²; each truncating square's r_h², r_h in full and
    // msb(r), r_h·msb(r) modulo 2^(f+8) (3 bytes); the last truncation, by
    // f + 16, its wrap share in 4 bytes
    assert_eq!(
        r.dealer_bytes[1] as usize,
        8 * n + 7 * (16 + 2 * 3) * n + 4 * n
    );
}

fn relative_error(got: &[f64], x: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    got.iter()
        .zip(x)
        .map(|(g, x)| (g / f(*x) - 1.0).abs())
        .fold(0.0, f64::max)
}

/// Early stops of a piecewise-linear function's DCF key: each threshold's
/// comparison keeps its input's bits down to 2^−KNOT_BITS of itself (at
/// `scale` fractional bits, of `bits`), one stop per distinct width above
/// the finest.
fn knot_stops(thresholds: &[f64], scale: u32, bits: u32) -> usize {
    let mut widths: Vec<i64> = thresholds
        .iter()
        .map(|t| {
            (i64::from(scale) + t.log2().floor() as i64 - i64::from(KNOT_BITS))
                .clamp(0, i64::from(bits) - 2)
        })
        .collect();
    widths.sort_unstable();
    widths.dedup();
    widths.len() - 1
}

#[test]
fn reciprocal_and_rsqrt_meet_1e3_relative_in_two_rounds() {
    let dom = Domain {
        lo: 1.0 / 256.0,
        hi: 4096.0,
    };
    // log-uniform over the domain, plus both ends
    let mut x: Vec<f64> = uniform(400, -8.0, 12.0, 15)
        .iter()
        .map(|e| (2f64).powf(*e))
        .collect();
    x.extend([dom.lo, dom.hi, 1.0]);
    // just around every knot, where a comparison may take the neighbouring segment
    let thresholds = PiecewiseEval::reciprocal(dom, F).pw.thresholds;
    for t in thresholds.iter().step_by(3) {
        x.extend([-3e-3, -1e-3, 1e-3, 3e-3].map(|d| t * (1.0 + d)));
    }
    let n = x.len();
    let xq = q(&x);
    let l = (12 + F + 2 - 1) as usize;
    // one key per element with a two-word payload (bits, bits·x), and its stops
    let stops = knot_stops(&thresholds, F, 12 + F + 2);
    assert_eq!(stops, 20, "one stop per octave above the first");
    let dcf = l * 32 + (2 * l).div_ceil(8) + 16 * (1 + stops);
    let (got, r) = run_at(FP, F + EXTRA_FRAC, &[&x], |s, v| {
        s.run(|cx| settled(cx.reciprocal(&flat(cx, &v[0]), dom)))
    });
    let e = relative_error(&got, &xq, |v| 1.0 / v);
    assert!(e < 1e-3, "reciprocal relative error {e}");
    // one opening for the comparison and its products, one truncation
    for p in &r.online {
        assert_eq!(p.rounds, 2);
        assert_eq!(p.bytes_sent as usize, 8 * n + n.div_ceil(8));
    }
    // and the truncation's wrap share (modulo 2^22, its shift)
    assert_eq!(r.dealer_bytes[0] as usize, n * dcf);
    assert_eq!(
        r.dealer_bytes[1] as usize,
        n * (dcf + 16) + mpc_core::channel::packed_len(n, 22)
    );
    // with the input's truncation pending, the same opening performs it
    let wide = FixedPoint { frac_bits: 2 * F };
    let x_enc: Vec<u64> = x.iter().map(|v| wide.encode(*v)).collect();
    let (s0, s1) = mpc_core::share_secret(
        &x_enc,
        &mut mpc_core::Prg::new(&mpc_core::Seed::for_tests(16)),
    );
    let shares = [s0, s1];
    let pr = mpc_core::local::run_local(FP, |s| {
        let x = Fx::with_pending(
            shares[s.party().index()].clone(),
            Shape::flat(shares[0].len()),
            F,
            F,
        );
        s.run(|cx| settled(cx.reciprocal(&x, dom)))
    })
    .unwrap();
    let got: Vec<f64> = mpc_core::reconstruct(&pr.outputs[0], &pr.outputs[1])
        .iter()
        .map(|v| {
            FixedPoint {
                frac_bits: F + EXTRA_FRAC,
            }
            .decode(*v)
        })
        .collect();
    // against the input truncated to f bits; the truncation may end one ulp
    // above, which is a relative 2^−f/x more: checked where x ≥ 1/16
    let (got, xt): (Vec<f64>, Vec<f64>) = x_enc
        .iter()
        .map(|v| ((*v as i64) >> F) as f64 / f64::from(1u32 << F))
        .zip(got)
        .filter(|(x, _)| *x >= 1.0 / 16.0)
        .map(|(x, g)| (g, x))
        .unzip();
    let e = relative_error(&got, &xt, |v| 1.0 / v);
    assert!(
        e < 1e-3,
        "reciprocal of a pending input: relative error {e}"
    );
    assert_eq!(pr.online[0].rounds, 2);
    // 16 bits wider, but the comparison ignores the bits below 2^−8 of the
    // smallest threshold (1/256): 16 of them
    let lw = l + F as usize - 16;
    let stops = knot_stops(&thresholds, 2 * F, 12 + 2 * F + 2);
    let dcf = lw * 40 + (2 * lw).div_ceil(8) + 24 * (1 + stops);
    // msb_ℓ(r), R >> f and msb_ℓ(r)·(R >> f) in full, msb(R) and
    // msb_ℓ(r)·msb(R) modulo 2^f (2 bytes each), the truncation's 22 bits
    assert_eq!(
        pr.dealer_bytes[1] as usize,
        n * (dcf + 24 + 4) + mpc_core::channel::packed_len(n, 22)
    );
    let (got, r) = run_at(FP, F + EXTRA_FRAC, &[&x], |s, v| {
        s.run(|cx| settled(cx.rsqrt(&flat(cx, &v[0]), dom, 1.0)))
    });
    let e = relative_error(&got, &xq, |v| 1.0 / v.sqrt());
    assert!(e < 1e-3, "rsqrt relative error {e}");
    assert_eq!(r.online[1].rounds, 2);
    assert_eq!(r.online[1].bytes_sent as usize, 8 * n + n.div_ceil(8));
}

#[test]
fn softmax_matches_plaintext_with_counts() {
    let (rows, cols) = (4, 65);
    let n = rows * cols;
    let x = uniform(n, -6.0, 6.0, 16);
    let bits = 24;
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| settled(cx.softmax(&fx(cx, &v[0], rows, cols), bits)))
    });
    let want = plain::softmax(&q(&x), rows, cols);
    let err = max_abs_diff(&got, &want);
    assert!(err < 2e-3, "softmax error {err}");
    // expected traffic: the max tree, 8 squarings, the reciprocal on [1, cols], the row product
    let mut bytes = 0;
    let mut rounds = 0;
    let mut w = cols;
    while w > 1 {
        let m = rows * (w / 2);
        bytes += 8 * m;
        rounds += 1;
        w -= w / 2;
    }
    bytes += 8 * 8 * n + n.div_ceil(8);
    rounds += 9;
    // the reciprocal in one round, its truncation riding on the row product's opening
    bytes += 8 * rows;
    rounds += 1;
    bytes += 8 * (n + rows) + n.div_ceil(8);
    rounds += 2;
    assert_eq!(r.online[0].rounds, rounds);
    assert_eq!(r.online[0].bytes_sent as usize, bytes);
}

#[test]
fn relu_softmax_and_relu_attention_match_plaintext() {
    let (n, d) = (65, 16);
    let s = uniform(n * n, -4.0, 4.0, 17);
    let v = uniform(n * d, -2.0, 2.0, 18);
    let eps = 1e-3;
    let (got, r) = run(FP, &[&s], |ss, x| {
        ss.run(|cx| {
            let p = ReluAttention {
                relu: Relu::exact(24),
                eps,
                row_sum: ROW_SUMS,
            };
            settled(cx.relu_softmax(&fx(cx, &x[0], n, n), p))
        })
    });
    let want = plain::relu_softmax(&q(&s), n, n, eps);
    let err = max_abs_diff(&got, &want);
    assert!(err < 1e-3 * 1.0 + 4.0 * ULP, "relu-softmax error {err}");
    // ReLU 2, the reciprocal 1 (its truncation left to the row product), the row product 2
    assert_eq!(r.online[0].rounds, 5);

    for one_round in [false, true] {
        let (got, r) = run(FP, &[&s, &v], |ss, x| {
            let p = ReluAttention {
                relu: Relu {
                    bits: 24,
                    coarse: 0,
                    one_round,
                },
                eps,
                row_sum: ROW_SUMS,
            };
            ss.run(|cx| {
                let (s, v) = (fx(cx, &x[0], n, n), fx(cx, &x[1], n, d));
                settled(cx.relu_attention(&s, Op::ready(v), p))
            })
        });
        let p = plain::relu_softmax(&q(&s), n, n, eps);
        let want = plain::matmul(&p, &q(&v), n, n, d);
        let err = max_abs_diff(&got, &want);
        assert!(err < 2e-3 + 16.0 * ULP, "relu attention error {err}");
        // ReLU 2 (or 1), then the reciprocal (1) beside R·V (1), then the
        // scaling (which truncates both) and its truncation (2).
        assert_eq!(r.online[0].rounds, if one_round { 4 } else { 5 });
    }
}

#[test]
fn one_round_relu_of_a_pending_input_matches_the_two_round_relu() {
    // scores at 2f bits, truncation by f pending, as the attention gives them
    let mut x = uniform(2000, -100.0, 100.0, 61);
    x.extend([0.0, ULP, -ULP, 2.0 * ULP, 300.0 * ULP, -300.0 * ULP]);
    let n = x.len();
    let wide: Vec<f64> = x.iter().map(|v| v * 65536.0).collect();
    let coarse = 8;
    let band = f64::from(1u32 << (coarse + 1)) * ULP;
    for one_round in [false, true] {
        let (got, r) = run(FP, &[&wide], |s, v| {
            let x = Fx::with_pending(v[0].clone(), Shape::flat(n), F, F);
            let p = Relu {
                bits: 24,
                coarse,
                one_round,
            };
            s.run(|cx| cx.relu(&x, p).map(Fx::into_share))
        });
        for (g, v) in got.iter().zip(&x) {
            // the truncated value (one ulp above at most) or, just above
            // the threshold, 0; never negative
            let want = FP.decode(FP.encode(*v)).max(0.0);
            let ok = (g - want).abs() <= 1.5 * ULP || (*g == 0.0 && *v < band);
            assert!(ok, "one round {one_round}: ReLU({v}) = {g}");
        }
        assert_eq!(r.online[0].rounds, if one_round { 1 } else { 2 });
        let bits = |w: u32| mpc_core::channel::packed_len(n, w);
        if one_round {
            // L = 24 + 16 − 1 − 24 = 15 levels of a 3-word payload
            let key = 15 * 40 + 15usize.div_ceil(4) + 24;
            assert_eq!(r.online[0].bytes_sent as usize, 8 * n);
            assert_eq!(
                r.dealer_bytes,
                [(n * key) as u64, (n * (key + 24) + 2 * bits(F)) as u64]
            );
        } else {
            assert_eq!(r.online[0].bytes_sent as usize, 8 * n + n.div_ceil(8));
        }
    }
}

#[test]
fn coarse_relu_attention_survives_rows_of_scores_just_below_zero() {
    // Rows whose scores all lie just below 0 (inside the coarse ReLU's
    // 2^−8 band), some with one small positive score. With the ReLU's
    // threshold at 0 such scores could pass through, the row sum went
    // negative and the reciprocal's extrapolation overflowed the ring (an
    // error of 18 in vit_7_4_32, one run in eight); the threshold at 2^−8
    // keeps every output and row sum non-negative.
    let (n, d) = (65, 16);
    let coarse = 8;
    let band = (1u64 << coarse) as f64 * ULP;
    let mut s = uniform(n * n, -4.0, 4.0, 51);
    for row in 0..40 {
        for j in 0..n {
            s[row * n + j] = -band * (0.05 + 0.9 * ((row * 31 + j * 17) % 97) as f64 / 97.0);
        }
        if row % 2 == 1 {
            s[row * n + row] = 0.5;
        }
    }
    let v = uniform(n * d, -2.0, 2.0, 52);
    let eps = 1e-3;
    let want = plain::matmul(&plain::relu_softmax(&q(&s), n, n, eps), &q(&v), n, n, d);
    // fresh masks each run, both ReLUs
    for run_no in 0..6 {
        let p = ReluAttention {
            relu: Relu {
                bits: 24,
                coarse,
                one_round: run_no % 2 == 1,
            },
            eps,
            row_sum: ROW_SUMS,
        };
        let (got, _) = run(FP, &[&s, &v], |ss, x| {
            ss.run(|cx| {
                let (s, v) = (fx(cx, &x[0], n, n), fx(cx, &x[1], n, d));
                settled(cx.relu_attention(&s, Op::ready(v), p))
            })
        });
        // each weight may lose a score below 2^−8 (of a row sum ≥ 0.5 where it matters)
        let err = max_abs_diff(&got, &want);
        assert!(err < 0.05, "run {run_no}: relu attention error {err}");
    }
}

#[test]
fn scale_attn_both_orders_match_plaintext() {
    for (n, d) in [(65, 16), (9, 32)] {
        let qm = uniform(n * d, -2.0, 2.0, 19);
        let km = uniform(n * d, -2.0, 2.0, 20);
        let vm = uniform(n * d, -2.0, 2.0, 21);
        let (got, r) = run(FP, &[&qm, &km, &vm], |s, x| {
            s.run(|cx| {
                let (qx, kx, vx) = (
                    fx(cx, &x[0], n, d),
                    fx(cx, &x[1], n, d),
                    fx(cx, &x[2], n, d),
                );
                cx.scale_attn(&qx, &kx, &vx, n).map(Fx::into_share)
            })
        });
        let want = plain::scale_attn(&q(&qm), &q(&km), &q(&vm), n, d, n);
        let err = max_abs_diff(&got, &want);
        assert!(err < 64.0 * ULP, "scale attn ({n},{d}) error {err}");
        assert_eq!(r.online[0].rounds, 4);
    }
}

#[test]
fn scale_attn_weights_match_plaintext_in_two_rounds() {
    let (n, d) = (50, 24);
    let qm = uniform(n * d, -2.0, 2.0, 22);
    let km = uniform(n * d, -2.0, 2.0, 23);
    let (got, r) = run(FP, &[&qm, &km], |s, x| {
        s.run(|cx| {
            let (qx, kx) = (fx(cx, &x[0], n, d), fx(cx, &x[1], n, d));
            cx.scale_attn_weights(&qx, &kx, n).map(Fx::into_share)
        })
    });
    let scale = 1.0 / ((d as f64).sqrt() * n as f64);
    let want: Vec<f64> = plain::matmul(&q(&qm), &plain::transpose(&q(&km), n, d), n, d, n)
        .iter()
        .map(|v| v * scale)
        .collect();
    // one ulp, plus the encoded scale's relative error (2^−14) of weights below 0.5
    let err = max_abs_diff(&got, &want);
    assert!(err < 4.0 * ULP, "scale attn weights error {err}");
    assert_eq!(r.online[0].rounds, 2);
    // the scores' openings (Q, K) and one bit per weight for the truncation
    assert_eq!(
        r.online[0].bytes_sent,
        (16 * n * d + (n * n).div_ceil(8)) as u64
    );
}

#[test]
fn gelu_variants_truncate_a_pending_input_in_their_own_opening() {
    // x at f + 30 bits (as a LayerNorm's last product leaves it) and at
    // f + 36 (past 32 the square's wrap term K² no longer vanishes)
    let x = uniform(500, -6.0, 6.0, 23);
    let n = x.len();
    for shift in [30, 36] {
        let wide: Vec<f64> = x.iter().map(|v| v * 2f64.powi(shift)).collect();
        let pending = |v: &Share| Fx::with_pending(v.clone(), Shape::flat(n), F, shift as u32);
        let (got, r) = run(FP, &[&wide], |s, v| {
            s.run(|cx| settled(cx.gelu_quad(&pending(&v[0]))))
        });
        let want: Vec<f64> = q(&x).iter().map(|v| plain::gelu_quad(*v)).collect();
        let err = max_abs_diff(&got, &want);
        assert!(err < 4.0 * ULP, "quad at shift {shift}: {err}");
        assert_eq!(r.online[0].rounds, 2);
        assert_eq!(r.online[0].bytes_sent as usize, 8 * n + n.div_ceil(8));
        let (got, r) = run(FP, &[&wide], |s, v| {
            s.run(|cx| settled(cx.gelu(&pending(&v[0]))))
        });
        let exact: Vec<f64> = q(&x).iter().map(|v| plain::gelu(*v)).collect();
        let err = max_abs_diff(&got, &exact);
        assert!(err < 1e-3, "erf at shift {shift}: {err}");
        assert_eq!(r.online[0].rounds, 3);
        assert_eq!(r.online[0].bytes_sent as usize, gelu_bytes(n));
        assert_eq!(
            r.dealer_bytes,
            [
                (n * GELU_DCF) as u64,
                erf_dealer_p1(n, shift as u32, 12, Some(38)) as u64
            ]
        );
    }
}

/// Which pending GeLU [`run_gelu_pending`] runs.
enum GeluKind {
    Quad,
    Erf,
}

/// The model's use of a GeLU left pending: `x` given with a pending
/// truncation by `shift` (as linear1's row scaling leaves it), read at
/// `f − 4` bits, the output decoded untruncated at `2(f − 4) + 3` bits;
/// returns the input's fractional bits, the output and the run.
fn run_gelu_pending(
    x: &[f64],
    shift: u32,
    kind: GeluKind,
) -> (u32, Vec<f64>, mpc_core::local::LocalRun<Share>) {
    let f = FP.frac_bits;
    let wide: Vec<f64> = x.iter().map(|v| v * 2f64.powi(shift as i32)).collect();
    let in_frac = f - 4;
    let out_bits = 2 * in_frac + 3;
    let (got, r) = run_at(FP, out_bits, &[&wide], |s, v| {
        let x = Fx::with_pending(v[0].clone(), Shape::flat(v[0].len()), f, shift).at_frac(in_frac);
        let y = match kind {
            GeluKind::Quad => s.run(|cx| cx.gelu_quad(&x))?,
            GeluKind::Erf => s.run(|cx| cx.gelu(&x))?,
        };
        assert_eq!((y.frac(), y.pending()), (f, out_bits - f));
        Ok(y.into_share())
    });
    (in_frac, got, r)
}

#[test]
fn quad_gelu_left_pending_costs_one_round_at_its_input_resolution() {
    // a pending input (as linear1's row scaling leaves it), read at f − 4
    // bits; the output stays untruncated at 2(f − 4) + 3 bits
    let x = uniform(600, -10.0, 10.0, 31);
    let n = x.len();
    let (in_frac, got, r) = run_gelu_pending(&x, 20, GeluKind::Quad);
    let err = got
        .iter()
        .zip(&x)
        .map(|(g, v)| {
            // the input's resolution 2^−in_frac, through the slope 0.25|x| + 0.25
            let bound = (0.25 * v.abs() + 0.25) * 2f64.powi(-(in_frac as i32)) + 4.0 * ULP;
            (g - plain::gelu_quad(*v)).abs() / bound
        })
        .fold(0.0, f64::max);
    assert!(err <= 1.0, "error {err} of its bound");
    assert_eq!(r.online[0].rounds, 1);
    assert_eq!(r.online[0].bytes_sent as usize, 8 * n);
}

/// Online bytes per party of the erf GeLU on `n` elements: the opening of
/// `x + r`, the 11 masked bits with the opening of `x² + r₂`, the truncation.
fn gelu_bytes(n: usize) -> usize {
    8 * n + (11 * n).div_ceil(8) + 8 * n + n.div_ceil(8)
}

/// Dealer bytes per element of the erf GeLU's XOR-output DCF keys (to
/// each party): 10 input bits (24 less the sign and 13 ignored bits), 3
/// levels and a 128-bit leaf.
const GELU_DCF: usize = 3 * 16 + 16;

/// Dealer bytes to party 1 of the erf GeLU on `n` elements with its input
/// truncated by `trunc` (0: none) in its opening, `x²` by `sq` in the bits'
/// round and its output by `last` (if any): the keys; ρ and ρ·r per
/// boundary and r² (with a truncation: ρ·r_h, r_h², r_h and modulo
/// 2^trunc msb(r), ρ·msb(r), r_h·msb(r)); for the square's truncation r₂_h
/// and ρ·r₂_h per boundary, and modulo 2^sq msb(r₂) and ρ·msb(r₂).
fn erf_dealer_p1(n: usize, trunc: u32, sq: u32, last: Option<u32>) -> usize {
    let bits = |len: usize, w: u32| mpc_core::channel::packed_len(len, w);
    let pending = if trunc > 0 {
        8 * n + 2 * bits(n, trunc) + bits(11 * n, trunc)
    } else {
        0
    };
    let square = 8 * n + 8 * 11 * n + bits(n, sq) + bits(11 * n, sq);
    n * (GELU_DCF + 2 * 8 * 11 + 8) + pending + square + last.map_or(0, |w| bits(n, w))
}

#[test]
fn gelu_variants_match_their_references_with_counts() {
    let mut x = uniform(1000, -8.0, 8.0, 22);
    x.extend([-4.0, 4.0, 0.0, -100.0, 100.0, -122.9, 122.9]);
    // around every segment boundary, where the coarse comparison may pick the neighbour
    for t in mpc_core::gelu::GELU_THRESHOLDS {
        for d in [
            -0.13, -0.125, -0.1, -0.06, -0.004, -ULP, 0.0, ULP, 0.002, 0.004,
        ] {
            x.push(t + d);
        }
    }
    let n = x.len();
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| settled(cx.gelu_quad(&fx(cx, &v[0], 1, v[0].len()))))
    });
    let want: Vec<f64> = q(&x).iter().map(|v| plain::gelu_quad(*v)).collect();
    assert!(max_abs_diff(&got, &want) < 2.0 * ULP);
    assert_eq!(r.online[0].rounds, 2);
    assert_eq!(r.online[0].bytes_sent as usize, 8 * n + n.div_ceil(8));

    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| settled(cx.gelu(&fx(cx, &v[0], 1, v[0].len()))))
    });
    let exact: Vec<f64> = q(&x).iter().map(|v| plain::gelu(*v)).collect();
    let approx: Vec<f64> = q(&x).iter().map(|v| plain::gelu_piecewise(*v)).collect();
    // the neighbour segment agrees within twice the fit's error
    assert!(
        max_abs_diff(&got, &approx) < 1.7e-3,
        "vs piecewise {}",
        max_abs_diff(&got, &approx)
    );
    let err = max_abs_diff(&got, &exact);
    eprintln!("piecewise GeLU vs erf: {err:.2e}");
    assert!(err < 1e-3, "vs erf {err}");
    assert_eq!(r.online[0].rounds, 3);
    assert_eq!(r.online[0].bytes_sent as usize, gelu_bytes(n));
    // dealer: the keys to both parties; to party 1 the selections' and
    // the square truncation's material and the last truncation (by 54 − f
    // = 38, in 38 bits)
    assert_eq!(r.dealer_bytes[0] as usize, n * GELU_DCF);
    assert_eq!(
        r.dealer_bytes[1] as usize,
        erf_dealer_p1(n, 0, 12, Some(38))
    );
}

/// GeLU outside its segments: `got` is 0 for a negative input of `xs`
/// and the input itself for a positive one, within `tol`.
fn assert_gelu_outside(got: &[f64], xs: &[f64], tol: f64) {
    for (g, v) in got.iter().zip(xs) {
        let want = if *v < 0.0 { 0.0 } else { *v };
        assert!((g - want).abs() <= tol, "GeLU({v}) = {g}");
    }
}

#[test]
fn erf_gelu_is_within_1e_3_on_a_dense_grid_and_exact_outside() {
    // every 2^-10 over [−8, 8] (every 64th ulp), then values far out
    let mut x: Vec<f64> = (0..=16 * 1024).map(|i| -8.0 + i as f64 / 1024.0).collect();
    let dense = x.len();
    x.extend([-122.9, -100.0, -50.0, -9.0, 9.0, 20.0, 50.0, 100.0, 122.9]);
    let (got, r) = run(FP, &[&x], |s, v| {
        s.run(|cx| settled(cx.gelu(&fx(cx, &v[0], 1, v[0].len()))))
    });
    let exact: Vec<f64> = q(&x).iter().map(|v| plain::gelu(*v)).collect();
    let err = max_abs_diff(&got[..dense], &exact[..dense]);
    eprintln!("erf GeLU on [−8, 8]: max error {err:.3e}");
    assert!(err < 1e-3, "max error {err} on [−8, 8]");
    // 0 below the segments, x above (1 ulp: the truncation)
    assert_gelu_outside(&got[dense..], &q(&x)[dense..], ULP);
    assert_eq!(r.online[0].rounds, 3);
    assert_eq!(r.online[0].bytes_sent as usize, gelu_bytes(x.len()));
}

#[test]
fn erf_gelu_left_pending_costs_two_rounds_within_1_6e_3() {
    // the model's use: a pending input (as linear1's row scaling leaves
    // it) read at f − 4 bits, the output untruncated at 2(f − 4) + 3 bits;
    // a dense grid over [−8, 8], every boundary's neighbourhood, values far out
    let mut x: Vec<f64> = (0..=16 * 256).map(|i| -8.0 + i as f64 / 256.0).collect();
    for t in mpc_core::gelu::GELU_THRESHOLDS {
        for d in [-0.13, -0.125, -0.06, -ULP, 0.0, ULP, 0.004] {
            x.push(t + d);
        }
    }
    let dense = x.len();
    x.extend([-122.9, -100.0, -9.0, 9.0, 50.0, 122.9]);
    let n = x.len();
    let shift = 16u32;
    let (in_frac, got, r) = run_gelu_pending(&x, shift, GeluKind::Erf);
    let exact: Vec<f64> = q(&x).iter().map(|v| plain::gelu(*v)).collect();
    let err = max_abs_diff(&got[..dense], &exact[..dense]);
    eprintln!("erf GeLU left pending, input at {in_frac} bits: max error {err:.3e}");
    assert!(err < 1.6e-3, "max error {err}");
    // 0 below the segments, x above (to the input's resolution)
    assert_gelu_outside(
        &got[dense..],
        &q(&x)[dense..],
        2f64.powi(1 - in_frac as i32),
    );
    assert_eq!(r.online[0].rounds, 2);
    // the opening of x + r, the 11 masked bits with the opening of x² + r₂
    assert_eq!(
        r.online[0].bytes_sent as usize,
        8 * n + (11 * n).div_ceil(8) + 8 * n
    );
    // as the erf GeLU with a pending input, the first truncation by
    // shift + 4, and no last truncation
    let sq = mpc_core::gelu::GELU_SQUARE_SHIFT;
    assert_eq!(
        r.dealer_bytes,
        [
            (n * GELU_DCF) as u64,
            erf_dealer_p1(n, shift + 4, sq, None) as u64
        ]
    );
}

#[test]
fn layer_norm_matches_plaintext_with_counts() {
    let (rows, c) = (65, 64);
    let mut x = uniform(rows * c, -3.0, 3.0, 23);
    // rows with very different scales
    for j in 0..c {
        x[j] *= 30.0;
        x[c + j] = x[c + j] * 0.05 + 7.0;
    }
    let g = uniform(c, 0.5, 1.5, 24);
    let b = uniform(c, -0.5, 0.5, 25);
    let p = LayerNormParams::default();
    let (got, r) = run(FP, &[&x, &g, &b], |s, v| {
        let g = s.run(|cx| cx.mask_weight(0, &v[1], 1, c))?;
        s.run(|cx| settled(cx.layer_norm(&fx(cx, &v[0], rows, c), Some(&g), Some(&v[2]), p)))
    });
    let want = plain::layer_norm(&q(&x), &q(&g), &q(&b), rows, c, p.eps);
    let err = max_abs_diff(&got, &want);
    assert!(err < 5e-3, "layer norm error {err}");
    let n = rows * c;
    // the rsqrt compares u = c·(σ² + eps) at 2f bits
    let bits = ((c as f64 * (p.var.hi + p.eps)).log2().ceil() as u32 + 2 * F + 2) as usize;
    // masking γ (once); the truncating opening of x − μ (for u); the
    // opening for x·γ (only the wrap part, modulo 2^6: the truncation by
    // 1/c = 2^−6) beside the rsqrt's one-round comparison of u (which
    // truncates u); the row product (which truncates x·γ and the rsqrt) and
    // its truncation
    let bytes = 8 * c + 8 * n + (6 * n).div_ceil(8) + 8 * rows + 8 * (n + rows) + n.div_ceil(8);
    assert_eq!(r.online[0].rounds, 1 + 4);
    assert_eq!(r.online[0].bytes_sent as usize, bytes);
    // the comparison ignores u's bits below 2^−8 of its smallest threshold
    // (and each threshold's below 2^−8 of itself: stops)
    let lo = c as f64 * (p.var.lo + p.eps);
    let coarse = (2 * F as i64 + lo.log2().floor() as i64 - 8) as usize;
    let l = bits - 1 - coarse;
    let dom = Domain {
        lo,
        hi: c as f64 * (p.var.hi + p.eps),
    };
    let thresholds = PiecewiseEval::rsqrt(dom, (c as f64).sqrt(), F)
        .pw
        .thresholds;
    let stops = knot_stops(&thresholds, 2 * F, bits as u32);
    let dcf = l * 40 + (2 * l).div_ceil(8) + 24 * (1 + stops);
    // the opening's squares, summed per row (truncating by 6: r_h in full
    // and msb(r), r_h·msb(r) in 6 bits each per element, Σ r_h² per row),
    // x·γ 8n, the row product (truncating the rsqrt by 35: its msb parts in
    // 35 bits), the truncation by 36 (36 bits); per row a DCF key with a
    // three-word payload and 28 bytes (the msb(R) parts modulo 2^16)
    let packed = |len: usize, w: u32| mpc_core::channel::packed_len(len, w);
    let square = 8 * n + 2 * packed(n, 6) + 8 * rows;
    let row_product = 8 * n + packed(n, 35) + 8 * rows + packed(rows, 35);
    assert_eq!(
        r.dealer_bytes[1] as usize,
        square + 8 * n + row_product + packed(n, 36) + rows * (dcf + 28)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn relu_property(xs in proptest::collection::vec(-30000.0f64..30000.0, 1..50)) {
        let (got, _) = run(FP, &[&xs], |s, v| s.run(|cx| cx.relu(&flat(cx, &v[0]), Relu::exact(32)).map(Fx::into_share)));
        let want: Vec<f64> = q(&xs).iter().map(|v| v.max(0.0)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn gelu_property(xs in proptest::collection::vec(-122.0f64..122.0, 1..40)) {
        let (got, _) = run(FP, &[&xs], |s, v| s.run(|cx| settled(cx.gelu(&fx(cx, &v[0], 1, v[0].len())))));
        let want: Vec<f64> = q(&xs).iter().map(|v| plain::gelu(*v)).collect();
        prop_assert!(max_abs_diff(&got, &want) < 1e-3);
    }

    #[test]
    fn reciprocal_property(xs in proptest::collection::vec(0.01f64..1000.0, 1..20)) {
        let dom = Domain { lo: 0.01, hi: 1000.0 };
        let (got, _) = run_at(FP, F + EXTRA_FRAC, &[&xs], |s, v| s.run(|cx| settled(cx.reciprocal(&flat(cx, &v[0]), dom))));
        prop_assert!(relative_error(&got, &q(&xs), |v| 1.0 / v) < 1e-3);
    }

    // The rows' variance (about scale²/3) must lie in the default domain
    // [2^-10, 2^14]: below scale ≈ 0.055 it does not (at 0.05 the rsqrt is
    // extrapolated and the error reaches 0.046, with or without this
    // session's changes), so the property starts at 0.07.
    #[test]
    fn layer_norm_property(scale in 0.07f64..40.0, shift in -20.0f64..20.0) {
        let (rows, c) = (3, 32);
        let x: Vec<f64> = uniform(rows * c, -1.0, 1.0, 26).iter().map(|v| v * scale + shift).collect();
        let g = vec![1.0; c];
        let b = vec![0.0; c];
        let p = LayerNormParams::default();
        let (got, _) = run(FP, &[&x, &g, &b], |s, v| s.run(|cx| settled(cx.layer_norm(&fx(cx, &v[0], rows, c), None, None, p))));
        let want = plain::layer_norm(&q(&x), &g, &b, rows, c, p.eps);
        prop_assert!(max_abs_diff(&got, &want) < 5e-3);
    }
}

#[test]
fn layer_norm_then_linear_shares_the_opening() {
    let (rows, c, out) = (65, 64, 96);
    let x = uniform(rows * c, -3.0, 3.0, 31);
    let w = uniform(c * out, -0.2, 0.2, 32);
    let b = uniform(out, -0.5, 0.5, 33);
    let p = LayerNormParams::default();
    let (got, r) = run(FP, &[&x, &w, &b], |s, v| {
        let mw = s.run(|cx| cx.mask_weight(0, &v[1], c, out))?;
        let xc = s.run(|cx| {
            let centred = mpc_core::blocks::layer_norm::center_rows(&v[0], rows, c);
            settled(cx.settle(fx(cx, &centred, rows, c).scaled(1.0 / c as f64)))
        })?;
        s.run(|cx| {
            let xc = fx(cx, &xc, rows, c);
            cx.layer_norm_linear(&xc, &mw, Some(&v[2]), p)
                .map(Fx::into_share)
        })
    });
    let ones = vec![1.0; c];
    let zeros = vec![0.0; c];
    let n = plain::layer_norm(&q(&x), &ones, &zeros, rows, c, p.eps);
    let mut want = plain::matmul(&n, &q(&w), rows, c, out);
    for (i, v) in want.iter_mut().enumerate() {
        *v += q(&b)[i % out];
    }
    let err = max_abs_diff(&got, &want);
    assert!(err < 5e-3, "layer norm + linear error {err}");
    // mask (1) + centring (1) + 4: the products and the square, the rsqrt,
    // the row scaling (which truncates both), its truncation
    assert_eq!(r.online[0].rounds, 1 + 1 + 4);
}

#[test]
fn attention_values_given_as_an_operator_run_beside_the_relu() {
    let (n, d) = (65, 16);
    let s = uniform(n * n, -4.0, 4.0, 41);
    let v = uniform(n * d, -2.0, 2.0, 42);
    let eps = 1e-3;
    let p = ReluAttention {
        relu: Relu {
            bits: 24,
            coarse: 0,
            one_round: false,
        },
        eps,
        row_sum: ROW_SUMS,
    };
    // the values arrive as v ⊙ 1 (a product and its truncation: 2 rounds),
    // beside the ReLU's 2; then R·V ∥ the reciprocal (1) and the row
    // scaling (1), whose truncation is left pending
    let (got, r) = run(FP, &[&s, &v], |ss, x| {
        let ones = ss.ctx().public(&vec![FP.encode(1.0); n * d]);
        ss.run(|cx| {
            let values = cx.mul(&fx(cx, &x[1], n, d), &fx(cx, &ones, n, d)).settled();
            let s = fx(cx, &x[0], n, n);
            settled(cx.relu_attention(&s, values, p))
        })
    });
    assert_eq!(r.online[0].rounds, 4 + 1);
    let want = plain::matmul(&plain::relu_softmax(&q(&s), n, n, eps), &q(&v), n, n, d);
    let err = max_abs_diff(&got, &want);
    assert!(err < 2e-3 + 16.0 * ULP, "relu attention error {err}");
}

//! Runs every secure operator once at the shapes of vit_7_4_32 (both parties
//! and the dealer in this process, in-memory channel) and prints, per
//! operator: online rounds, bytes sent per party, dealer bytes, wall time
//! and the largest error against the plaintext reference.
//!
//! `cargo run --release -p mpc-core --example operators`

use mpc_core::blocks::attention::ReluAttention;
use mpc_core::blocks::layer_norm::LayerNormParams;
use mpc_core::compare::Relu;
use mpc_core::local::run_local;
use mpc_core::nonlinear::{EXTRA_FRAC, ROW_SUMS};
use mpc_core::{
    FixedPoint, Fx, Prg, Result, Seed, Session, Shape, Share, plain, reconstruct, share_secret,
};

const FP: FixedPoint = FixedPoint { frac_bits: 16 };

fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut p = Prg::new(&Seed::for_tests(seed));
    (0..n)
        .map(|_| lo + (hi - lo) * ((p.next_u64() >> 11) as f64 / (1u64 << 53) as f64))
        .collect()
}

struct Case {
    name: &'static str,
    shape: String,
    inputs: Vec<Vec<f64>>,
    out_frac: u32,
    want: Vec<f64>,
    /// Relative instead of absolute error.
    relative: bool,
}

fn report<F>(case: Case, f: F)
where
    F: Fn(&mut Session, &[Share]) -> Result<Share> + Sync,
{
    let mut prg = Prg::new(&Seed::for_tests(1));
    let mut shares = [Vec::new(), Vec::new()];
    for x in &case.inputs {
        let (a, b) = share_secret(&FP.encode_all(x), &mut prg);
        shares[0].push(a);
        shares[1].push(b);
    }
    let run = run_local(FP, |s| {
        let mine = shares[s.party().index()].clone();
        f(s, &mine)
    })
    .expect("secure run");
    let got: Vec<f64> = reconstruct(&run.outputs[0], &run.outputs[1])
        .iter()
        .map(|v| mpc_core::fixed::decode_at(*v, case.out_frac))
        .collect();
    let err = got
        .iter()
        .zip(&case.want)
        .map(|(g, w)| {
            if case.relative {
                (g / w - 1.0).abs()
            } else {
                (g - w).abs()
            }
        })
        .fold(0.0, f64::max);
    let o = run.online[0];
    println!(
        "| {:<22} | {:<18} | {:>6} | {:>12} | {:>11} | {:>11} | {:>9.2} | {:>9.1e}{} |",
        case.name,
        case.shape,
        o.rounds,
        o.bytes_sent,
        run.dealer_bytes[0],
        run.dealer_bytes[1],
        run.online_time.as_secs_f64() * 1e3,
        err,
        if case.relative { " rel" } else { "    " },
    );
}

fn q(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| FP.decode(FP.encode(*v))).collect()
}

fn main() {
    let f = FP.frac_bits;
    println!("f = {f} fractional bits, Z_2^64, both parties on this machine (in-memory channel)\n");
    println!(
        "| {:<22} | {:<18} | {:>6} | {:>12} | {:>11} | {:>11} | {:>9} | {:>13} |",
        "operator",
        "shape",
        "rounds",
        "sent/party B",
        "dealer→P0 B",
        "dealer→P1 B",
        "online ms",
        "max error"
    );
    println!(
        "|{:-<24}|{:-<20}|{:-<8}|{:-<14}|{:-<13}|{:-<13}|{:-<11}|{:-<15}|",
        "", "", "", "", "", "", "", ""
    );

    let (n, c, h, mlp) = (65usize, 256usize, 768usize, 512usize);
    let x = uniform(n * c, -4.0, 4.0, 2);
    let y = uniform(n * c, -4.0, 4.0, 3);
    report(
        Case {
            name: "mul",
            shape: format!("{n}x{c}"),
            want: q(&x).iter().zip(q(&y)).map(|(a, b)| a * b).collect(),
            inputs: vec![x.clone(), y.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let (x, y) = (
                    cx.fx(v[0].clone(), Shape::flat(v[0].len())),
                    cx.fx(v[1].clone(), Shape::flat(v[1].len())),
                );
                cx.mul(&x, &y).settled().map(Fx::into_share)
            })
        },
    );
    let w = uniform(c * h, -0.1, 0.1, 4);
    report(
        Case {
            name: "matmul (secret x secret)",
            shape: format!("{n}x{c}·{c}x{h}"),
            want: plain::matmul(&q(&x), &q(&w), n, c, h),
            inputs: vec![x.clone(), w.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let (a, b) = (
                    cx.fx(v[0].clone(), Shape::new(n, c)),
                    cx.fx(v[1].clone(), Shape::new(c, h)),
                );
                cx.matmul(&a, &b).settled().map(Fx::into_share)
            })
        },
    );
    report(
        Case {
            name: "weight mask + 1 use",
            shape: format!("{n}x{c}·{c}x{h}"),
            want: plain::matmul(&q(&x), &q(&w), n, c, h),
            inputs: vec![x.clone(), w.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            let mw = s.run(|cx| cx.mask_weight(0, &v[1], c, h))?;
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(n, c));
                cx.weight_matmul(&x, &mw).settled().map(Fx::into_share)
            })
        },
    );
    let scores = uniform(4 * n * n, -6.0, 6.0, 5);
    report(
        Case {
            name: "trunc",
            shape: format!("{n}x{c}"),
            want: q(&x).iter().map(|v| v / 4.0).collect(),
            inputs: vec![x.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| s.run(|cx| cx.trunc(&v[0], 2)),
    );
    report(
        Case {
            name: "relu (24-bit)",
            shape: format!("4x{n}x{n}"),
            want: q(&scores).iter().map(|v| v.max(0.0)).collect(),
            inputs: vec![scores.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
                cx.relu(&x, Relu::exact(24)).map(Fx::into_share)
            })
        },
    );
    let sums: Vec<f64> = uniform(4 * n, -6.0, 11.0, 6)
        .iter()
        .map(|e| (2f64).powf(*e))
        .collect();
    report(
        Case {
            name: "reciprocal",
            shape: format!("{}", 4 * n),
            want: q(&sums).iter().map(|v| 1.0 / v).collect(),
            inputs: vec![sums.clone()],
            out_frac: f + EXTRA_FRAC,
            relative: true,
        },
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
                cx.reciprocal(&x, ROW_SUMS).settled().map(Fx::into_share)
            })
        },
    );
    report(
        Case {
            name: "rsqrt",
            shape: format!("{}", 4 * n),
            want: q(&sums).iter().map(|v| 1.0 / v.sqrt()).collect(),
            inputs: vec![sums.clone()],
            out_frac: f + EXTRA_FRAC,
            relative: true,
        },
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
                cx.rsqrt(&x, ROW_SUMS, 1.0).settled().map(Fx::into_share)
            })
        },
    );
    report(
        Case {
            name: "softmax",
            shape: format!("4x{n}x{n}"),
            want: plain::softmax(&q(&scores), 4 * n, n),
            inputs: vec![scores.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(4 * n, n));
                cx.softmax(&x, 24).settled().map(Fx::into_share)
            })
        },
    );
    report(
        Case {
            name: "relu-softmax",
            shape: format!("4x{n}x{n}"),
            want: plain::relu_softmax(&q(&scores), 4 * n, n, 1e-3),
            inputs: vec![scores.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(4 * n, n));
                let p = ReluAttention {
                    relu: Relu::exact(24),
                    eps: 1e-3,
                    row_sum: ROW_SUMS,
                };
                cx.relu_softmax(&x, p).settled().map(Fx::into_share)
            })
        },
    );
    let d = 64;
    let qm = uniform(n * d, -1.5, 1.5, 7);
    let km = uniform(n * d, -1.5, 1.5, 8);
    let vm = uniform(n * d, -1.5, 1.5, 9);
    report(
        Case {
            name: "scale-attn (1 head)",
            shape: format!("{n}x{d}"),
            want: plain::scale_attn(&q(&qm), &q(&km), &q(&vm), n, d, n),
            inputs: vec![qm.clone(), km.clone(), vm.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let [q, k, v] = [0, 1, 2].map(|i| cx.fx(v[i].clone(), Shape::new(n, d)));
                cx.scale_attn(&q, &k, &v, n).map(Fx::into_share)
            })
        },
    );
    let act = uniform(n * mlp, -6.0, 6.0, 10);
    report(
        Case {
            name: "gelu quad (MPCFormer)",
            shape: format!("{n}x{mlp}"),
            want: q(&act).iter().map(|v| plain::gelu_quad(*v)).collect(),
            inputs: vec![act.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
                cx.gelu_quad(&x).settled().map(Fx::into_share)
            })
        },
    );
    report(
        Case {
            name: "gelu piecewise (vs erf)",
            shape: format!("{n}x{mlp}"),
            want: q(&act).iter().map(|v| plain::gelu(*v)).collect(),
            inputs: vec![act.clone()],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
                cx.gelu(&x).settled().map(Fx::into_share)
            })
        },
    );
    let g = uniform(c, 0.5, 1.5, 11);
    let b = uniform(c, -0.5, 0.5, 12);
    let p = LayerNormParams::default();
    report(
        Case {
            name: "layernorm",
            shape: format!("{n}x{c}"),
            want: plain::layer_norm(&q(&x), &q(&g), &q(&b), n, c, p.eps),
            inputs: vec![x.clone(), g, b],
            out_frac: f,
            relative: false,
        },
        |s, v| {
            let g = s.run(|cx| cx.mask_weight(0, &v[1], 1, c))?;
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(n, c));
                cx.layer_norm(&x, Some(&g), Some(&v[2]), p)
                    .settled()
                    .map(Fx::into_share)
            })
        },
    );
}

//! Secure forward vs the plaintext forward on the same weights and inputs.

mod common;

use model::secure::{SecureModel, SecureParams, split_input, split_weights};
use model::{AttnKind, GeluKind, Model, ModelConfig, Trace, Weights};
use mpc_core::local::{LocalRun, run_local};
use mpc_core::{Prg, Seed, Share, reconstruct};

struct Compared {
    traces: Vec<Trace>,
    secure: Vec<Vec<Vec<f64>>>, // per image: embedded, block outputs..., logits
    run: LocalRun<Vec<Vec<Share>>>,
}

fn decode(fp: mpc_core::FixedPoint, a: &Share, b: &Share) -> Vec<f64> {
    fp.decode_all(&reconstruct(a, b))
}

/// Run prepare + forward on every image as both parties; return the plaintext
/// traces and the reconstructed secure stages.
fn compare(model: &Model, images: &[Vec<f32>]) -> Compared {
    compare_with(model, images, SecureParams::default())
}

/// [`compare`] with explicit secure-forward settings.
fn compare_with(model: &Model, images: &[Vec<f32>], params: SecureParams) -> Compared {
    let fp = params.fp;
    let mut prg = Prg::new(&Seed::for_tests(5));
    let shares = split_weights(model, fp, &mut prg);
    let inputs: Vec<[Share; 2]> = images
        .iter()
        .map(|im| split_input(im, fp, &mut prg))
        .collect();
    let run = run_local(fp, |s| {
        let p = s.party().index();
        let m = SecureModel::prepare(s, &shares[p], params)?;
        let mut out = Vec::new();
        for input in &inputs {
            let t = m.forward_trace(s, &input[p])?;
            let mut stages = vec![t.embedded];
            stages.extend(t.blocks.into_iter().map(|b| b.output));
            stages.push(t.logits);
            out.push(stages);
        }
        Ok::<_, model::ModelError>(out)
    })
    .expect("secure run");
    let secure = (0..images.len())
        .map(|i| {
            (0..run.outputs[0][i].len())
                .map(|k| decode(fp, &run.outputs[0][i][k], &run.outputs[1][i][k]))
                .collect()
        })
        .collect();
    let traces = images
        .iter()
        .map(|im| model.forward_trace(im).unwrap())
        .collect();
    Compared {
        traces,
        secure,
        run,
    }
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn images(config: &ModelConfig, count: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut p = Prg::new(&Seed::for_tests(seed));
    (0..count)
        .map(|_| {
            (0..config.input_len())
                .map(|_| ((p.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
                .collect()
        })
        .collect()
}

/// Check every stage against the plaintext trace; return the worst logit difference.
fn check(c: &Compared, stage_tol: f64, logit_tol: f64) -> f64 {
    let mut worst_logit: f64 = 0.0;
    for (t, s) in c.traces.iter().zip(&c.secure) {
        let e = max_diff(&t.embedded, &s[0]);
        assert!(e < 1e-3, "embedding differs by {e}");
        for (b, bt) in t.blocks.iter().enumerate() {
            // the last block's second half runs on the class token's row only
            let got = &s[1 + b];
            let rows = if b + 1 == t.blocks.len() {
                let tokens = bt.output.len() / got.len();
                assert_eq!(tokens * got.len(), bt.output.len(), "last block: one row");
                assert!(tokens > 1, "last block: the class token's row only");
                got.len()
            } else {
                bt.output.len()
            };
            let e = max_diff(&bt.output[..rows], got);
            assert!(
                e < stage_tol,
                "block {b} output differs by {e} (tolerance {stage_tol})"
            );
        }
        let logits = s.last().unwrap();
        let e = max_diff(&t.logits, logits);
        worst_logit = worst_logit.max(e);
        assert!(e < logit_tol, "logits differ by {e}");
        assert_eq!(
            argmax(&t.logits),
            argmax(logits),
            "top-1 differs: {:?} vs {:?}",
            t.logits,
            logits
        );
    }
    worst_logit
}

#[test]
fn small_model_every_attention_kind_and_beta() {
    let mut config = common::every_attention_kind();
    for gelu in [GeluKind::Erf, GeluKind::Quad] {
        config.gelu = gelu;
        let model = Model::random(config.clone(), 3).unwrap();
        let c = compare(&model, &images(&config, 3, 7));
        let worst = check(&c, 0.02, 0.02);
        eprintln!("small model, {gelu:?}: worst logit difference {worst:.2e}");
        // the projection folded into the heads' values by default (C = 4·d
        // here); and not folded
        assert!(SecureParams::default().fold_ratio >= 4);
        let whole = SecureParams {
            fold_ratio: 0,
            ..SecureParams::default()
        };
        let c = compare_with(&model, &images(&config, 3, 7), whole);
        let worst = check(&c, 0.02, 0.02);
        eprintln!(
            "small model, {gelu:?}, projection not folded: worst logit difference {worst:.2e}"
        );
    }
    // `measure_inference`: the same logits, and the cost of one image only.
    let model = Model::random(config.clone(), 3).unwrap();
    let image = &images(&config, 1, 9)[0];
    let cost = model::secure::measure_inference(&model, image).unwrap();
    let plain = model.forward(image).unwrap();
    let logits: Vec<f64> = cost.logits.iter().map(|&v| v as f64).collect();
    assert!(max_diff(&plain, &logits) < 0.02);
    assert!(
        cost.rounds > 20 && cost.bytes_per_party > 10_000,
        "{cost:?}"
    );
    assert!(cost.dealer_bytes[1] > cost.dealer_bytes[0], "{cost:?}");
    let again = model::secure::measure_inference(&model, image).unwrap();
    assert_eq!(
        (again.rounds, again.bytes_per_party),
        (cost.rounds, cost.bytes_per_party),
        "the cost of an inference does not depend on the shares"
    );
}

#[test]
fn a_block_of_scale_attn_heads_only_folds_each_head_in_three_rounds() {
    // Block 0 has ScaleAttn heads only: with the projection folded, each
    // head applies its attention matrix to `V·W_h` (3 rounds); with one
    // ReLU-softmax head among them, the attending head's path (4 rounds
    // with the one-round ReLU, where the ScaleAttn heads fold too; 5 with
    // the two-round ReLU) sets the block's length.
    let mut config = common::small_config("scale-only");
    config.beta = vec![None, None];
    let mixed = vec![
        AttnKind::ReluSoftmax,
        AttnKind::ScaleAttn,
        AttnKind::Softmax,
        AttnKind::ScaleAttn,
    ];
    config.attention = vec![vec![AttnKind::ScaleAttn; 4], mixed];
    let scale_only = Model::random(config.clone(), 5).unwrap();
    let c = compare(&scale_only, &images(&config, 3, 9));
    let worst = check(&c, 0.02, 0.02);
    eprintln!("ScaleAttn-only block, folded: worst logit difference {worst:.2e}");
    let whole = SecureParams {
        fold_ratio: 0,
        ..SecureParams::default()
    };
    let c = compare_with(&scale_only, &images(&config, 3, 9), whole);
    check(&c, 0.02, 0.02);

    let image = &images(&config, 1, 10)[0];
    let cost = model::secure::measure_inference(&scale_only, image).unwrap();
    config.attention[0] = vec![
        AttnKind::ReluSoftmax,
        AttnKind::ScaleAttn,
        AttnKind::ScaleAttn,
        AttnKind::ScaleAttn,
    ];
    let one_relu = Model::random(config, 5).unwrap();
    let with_relu = model::secure::measure_inference(&one_relu, image).unwrap();
    assert_eq!(cost.rounds + 1, with_relu.rounds, "{cost:?}\n{with_relu:?}");
    let two_round = SecureParams {
        relu_one_round_scores: 0,
        ..SecureParams::default()
    };
    let with_slow_relu =
        model::secure::measure_inference_with(&one_relu, image, two_round).unwrap();
    assert_eq!(cost.rounds + 2, with_slow_relu.rounds, "{with_slow_relu:?}");
    // both ReLUs agree with the plaintext model
    let two = images(one_relu.config(), 2, 11);
    check(&compare_with(&one_relu, &two, two_round), 0.02, 0.02);
    check(&compare(&one_relu, &two), 0.02, 0.02);
}

#[test]
fn an_outlier_channel_of_600_in_the_residual_stream_stays_exact() {
    // ViTs grow outlier channels in the residual stream. With the projection
    // folded into the values (the default at C = 4·d) the attention output
    // joins the residual untruncated at 2f + ATTN_INV_FRAC bits, and
    // LayerNorm's centring multiplies by 2^⌈log2 C⌉ = 256 here: a channel of
    // ±600 (variance about 1,400, inside the rsqrt's domain) must fit (at
    // 2f + 14 bits the bound would be 256).
    let mut config = ModelConfig {
        name: "outlier".into(),
        image_size: 16,
        in_channels: 3,
        patch_size: 4,
        dim: 256,
        depth: 1,
        heads: 4,
        mlp_hidden: 64,
        num_classes: 10,
        ..ModelConfig::vit_7_4_32()
    };
    config.attention = vec![vec![
        AttnKind::ReluSoftmax,
        AttnKind::ScaleAttn,
        AttnKind::Softmax,
        AttnKind::ReluSoftmax,
    ]];
    config.beta = vec![None];
    for gelu in [GeluKind::Quad, GeluKind::Erf] {
        config.gelu = gelu;
        let config = config.clone().normalized().unwrap();
        let mut w = Weights::random(&config, 4);
        let n = config.num_tokens();
        for t in 0..n {
            w.positional_emb[t * config.dim + 5] += if t % 2 == 0 { 600.0 } else { -600.0 };
        }
        let model = Model::new(config.clone(), w).unwrap();
        let c = compare(&model, &images(&config, 2, 8));
        let worst = check(&c, 0.05, 0.05);
        eprintln!("outlier channel, {gelu:?}: worst logit difference {worst:.2e}");
    }
}

#[test]
fn vit_7_4_32_mixed_heads_with_beta_matches_plaintext() {
    let mut config = ModelConfig::vit_7_4_32();
    // μ = 0.5: half of the 28 heads keep ReLU-softmax, alternating by block and head.
    for (b, row) in config.attention.iter_mut().enumerate() {
        for (h, k) in row.iter_mut().enumerate() {
            *k = if (b + h) % 2 == 0 {
                AttnKind::ReluSoftmax
            } else {
                AttnKind::ScaleAttn
            };
        }
    }
    let n = config.num_tokens();
    config.beta = (0..config.depth)
        .map(|b| (b % 2 == 1).then(|| (0..n).map(|t| t % 4 != 0).collect()))
        .collect();
    let model = Model::random(config.clone(), 11).unwrap();
    let c = compare(&model, &images(&config, 2, 9));
    let worst = check(&c, 0.05, 0.05);
    let o = c.run.online[0];
    eprintln!(
        "vit_7_4_32 μ=0.5 + beta: worst logit difference {worst:.2e}; 2 images: {} rounds, {} bytes sent by party 0 (with model load)",
        o.rounds, o.bytes_sent
    );
}

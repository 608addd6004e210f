//! The plan recorder's counts against a real two-party secure forward.

use model::config::{PAPER_LAYER_NORM_EPS, PAPER_RELU_SOFTMAX_EPS};
use model::cost::{count_forward, stage_keys, time_stages};
use model::secure::{SecureModel, SecureParams, split_input, split_weights};
use model::{AttnKind, GeluKind, Model, ModelConfig, ModelError};
use mpc_core::local::run_local;
use mpc_core::{OpCost, Prg, Seed};

use AttnKind::{ReluSoftmax as R, ScaleAttn as A, Softmax as M};

/// 28×28×1, patch 7 (16 + 1 tokens), dim 32, 4 heads (d = 8: the projection
/// folds), 3 blocks, MLP 64.
fn tiny(attention: Vec<Vec<AttnKind>>) -> ModelConfig {
    ModelConfig {
        name: "tiny".into(),
        image_size: 28,
        in_channels: 1,
        patch_size: 7,
        dim: 32,
        depth: 3,
        heads: 4,
        mlp_hidden: 64,
        num_classes: 10,
        layer_norm_eps: PAPER_LAYER_NORM_EPS,
        relu_softmax_eps: PAPER_RELU_SOFTMAX_EPS,
        mean: vec![0.286],
        std: vec![0.353],
        labels: Vec::new(),
        gelu: GeluKind::Erf,
        attention,
        beta: vec![None; 3],
    }
}

/// What a real two-party run of one inference costs: online rounds, bytes
/// per party, dealer bytes, party 0's rounds and bytes by operator kind
/// (the run with the forward minus the run that only loads the model).
struct Real {
    rounds: [u64; 2],
    bytes: [u64; 2],
    dealer: [u64; 2],
    by_op: Vec<(&'static str, OpCost)>,
}

fn real(config: &ModelConfig, params: SecureParams) -> Real {
    let model = Model::random(config.clone(), 7).unwrap();
    let mut prg = Prg::new(&Seed::for_tests(3));
    let shares = split_weights(&model, params.fp, &mut prg);
    let image: Vec<f32> = (0..config.input_len())
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let input = split_input(&image, params.fp, &mut prg);
    let load = run_local(params.fp, |s| {
        SecureModel::prepare(s, &shares[s.party().index()], params)?;
        Ok::<_, ModelError>(s.profile().clone())
    })
    .unwrap();
    let full = run_local(params.fp, |s| {
        let p = s.party().index();
        let m = SecureModel::prepare(s, &shares[p], params)?;
        m.forward(s, &input[p])?;
        Ok::<_, ModelError>(s.profile().clone())
    })
    .unwrap();
    let by_op = full.outputs[0]
        .iter()
        .filter_map(|(name, c)| {
            let before = load.outputs[0].get(name).copied().unwrap_or_default();
            let c = OpCost {
                rounds: c.rounds - before.rounds,
                bytes: c.bytes - before.bytes,
            };
            (c.rounds > 0).then_some((*name, c))
        })
        .collect();
    let online = [0, 1].map(|p| full.online[p] - load.online[p]);
    Real {
        rounds: online.map(|o| o.rounds),
        bytes: online.map(|o| o.bytes_sent),
        dealer: [0, 1].map(|p| full.dealer_bytes[p] - load.dealer_bytes[p]),
        by_op,
    }
}

fn check(what: &str, config: &ModelConfig, params: SecureParams) -> u64 {
    let counted = count_forward(config, params).unwrap();
    let real = real(config, params);
    assert_eq!(real.rounds, [counted.rounds; 2], "{what}: rounds");
    assert_eq!(real.bytes, counted.bytes_sent, "{what}: bytes sent");
    assert_eq!(real.dealer, counted.dealer_bytes, "{what}: dealer bytes");
    assert_eq!(real.by_op, counted.by_op, "{what}: by operator");
    assert!(counted.rounds > 0 && counted.bytes_per_party() > 0);
    counted.rounds
}

#[test]
fn the_recorder_counts_what_a_two_party_forward_sends() {
    let p = SecureParams::default();
    let all_relu = check("all ReLU-softmax", &tiny(vec![vec![R; 4]; 3]), p);
    // block 0 all ScaleAttn (folded), block 1 mixed, block 2 Softmax beside ScaleAttn
    let mixed = tiny(vec![vec![A; 4], vec![R, A, R, A], vec![M, A, A, R]]);
    let mixed_rounds = check("mixed, block 0 all ScaleAttn", &mixed, p);
    let softmax = check("all Softmax", &tiny(vec![vec![M; 4]; 3]), p);
    let scale = check("all ScaleAttn", &tiny(vec![vec![A; 4]; 3]), p);
    // the two-round ReLU, ScaleAttn heads beside ReLU-softmax ones stacked
    let two_round = SecureParams {
        relu_one_round_scores: 0,
        ..p
    };
    check("mixed, two-round ReLU", &mixed, two_round);
    // MPCViT+: linearised tokens, a block with all tokens linearised
    let mut plus = mixed.clone();
    plus.beta = vec![
        Some((0..17).map(|t| t % 3 != 0).collect()),
        Some(vec![false; 17]),
        Some((0..17).map(|t| t % 2 == 0).collect()),
    ];
    check("mixed with beta masks", &plus, p);
    // ScaleAttn everywhere is the fewest rounds, a Softmax head (block 2 of
    // `mixed`) the most
    assert!(
        scale < all_relu && all_relu < mixed_rounds && mixed_rounds < softmax,
        "rounds: {scale} {all_relu} {mixed_rounds} {softmax}"
    );
}

#[test]
fn a_table_of_the_wrong_shape_is_refused() {
    let err = count_forward(&tiny(vec![vec![R; 4]; 2]), SecureParams::default()).unwrap_err();
    assert!(
        matches!(err, ModelError::InvalidConfig { field, .. } if field == "attention"),
        "{err}"
    );
}

#[test]
fn every_stage_has_a_key_and_a_time() {
    let config = tiny(vec![vec![A; 4], vec![R, A, R, A], vec![M, A, A, R]]);
    let p = SecureParams::default();
    let keys = stage_keys(&config.clone().normalized().unwrap(), &p);
    let times = time_stages(&config, p, 2).unwrap();
    assert_eq!(keys.len(), config.depth + 2);
    assert_eq!(times.len(), keys.len());
    assert!(times.iter().all(|t| t.is_finite() && *t > 0.0), "{times:?}");
    assert_eq!(keys[0], "embed");
    assert!(keys[1].contains("scale_attn=4") && keys[1].contains("last=false"));
    assert!(keys[3].contains("softmax=1") && keys[3].contains("last=true"));
    // a block without ReLU-softmax heads does not depend on the ReLU's rounds
    assert!(keys[1].contains("one_round_relu=false"));
    assert!(keys[2].contains("one_round_relu=true"));
}

//! An exported model loads in the `model` crate and its plaintext logits equal candle's.

mod common;

use candle_core::{Device, Tensor};
use model::{AttnKind, Model};
use search::export::{binarized, export_dir};
use search::vit::{Relaxed, SearchSpace, Vit};

/// Largest |candle − model crate| logit difference over a few random inputs.
fn compare(vit: &Vit, model: &Model, seed: u64) -> f32 {
    let len = model.config().input_len();
    let mut rng = search::data::rng_for(seed, 5);
    let xs: Vec<f32> = (0..3 * len)
        .map(|_| search::data::below(&mut rng, 4001) as f32 / 1000.0 - 2.0)
        .collect();
    let c = model.config();
    let x = Tensor::from_vec(
        xs.clone(),
        (3, c.in_channels, c.image_size, c.image_size),
        &Device::Cpu,
    )
    .unwrap();
    let logits: Vec<Vec<f32>> = vit.forward(&x).unwrap().logits.to_vec2().unwrap();
    let mut worst = 0f32;
    for (i, row) in logits.iter().enumerate() {
        let plain = model.forward(&xs[i * len..(i + 1) * len]).unwrap();
        assert_eq!(plain.len(), row.len());
        for (a, b) in plain.iter().zip(row) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

#[test]
fn every_attention_kind_and_a_beta_mask_match_the_model_crate() {
    let mut cfg = common::tiny_config(AttnKind::Softmax);
    cfg.attention = vec![
        vec![
            AttnKind::Softmax,
            AttnKind::ReluSoftmax,
            AttnKind::ScaleAttn,
            AttnKind::ReluSoftmax,
        ],
        vec![
            AttnKind::ScaleAttn,
            AttnKind::ScaleAttn,
            AttnKind::ReluSoftmax,
            AttnKind::Softmax,
        ],
    ];
    let mut mask = vec![true; cfg.num_tokens()];
    for t in (0..mask.len()).step_by(3) {
        mask[t] = false;
    }
    cfg.beta[1] = Some(mask);
    // Weights of order one (the model crate's synthetic weights) so that every path matters.
    let reference = Model::random(cfg.clone(), 11).unwrap();
    let vit = Vit::from_model(&reference, SearchSpace::default(), true).unwrap();
    let dir = common::temp_dir("export-kinds");
    let loaded = export_dir(&vit, &dir).unwrap();
    let again = Model::load_dir(&dir).unwrap();
    assert_eq!(loaded, again);
    assert_eq!(again.config(), reference.config());
    assert_eq!(again.weights(), reference.weights());
    let diff = compare(&vit, &again, 1);
    assert!(diff <= 1e-4, "max |Δlogit| = {diff}");
    common::remove(&dir);
}

#[test]
fn uniform_tables_and_paper_initialisation_match() {
    for kind in [
        AttnKind::Softmax,
        AttnKind::ReluSoftmax,
        AttnKind::ScaleAttn,
    ] {
        let cfg = common::tiny_config(kind);
        let vit = Vit::new(&cfg, SearchSpace::default(), 3, true).unwrap();
        let model = vit.to_model().unwrap();
        let diff = compare(&vit, &model, 2);
        assert!(diff <= 1e-4, "{kind:?}: max |Δlogit| = {diff}");
        let random = Model::random(cfg, 5).unwrap();
        let vit = Vit::from_model(&random, SearchSpace::default(), false).unwrap();
        let diff = compare(&vit, &random, 3);
        assert!(
            diff <= 1e-4,
            "{kind:?} (random weights): max |Δlogit| = {diff}"
        );
    }
}

#[test]
fn a_searched_network_exports_after_binarisation() {
    let cfg = common::tiny_config(AttnKind::ReluSoftmax);
    let random = Model::random(cfg.clone(), 7).unwrap();
    let relaxed = Relaxed {
        alpha: vec![vec![0.9, 0.1, 0.5, 0.7], vec![0.2, 0.95, 0.3, 0.6]],
        beta: vec![
            (0..17).map(|t| t as f32 / 17.0).collect(),
            (0..17).map(|t| 1.0 - t as f32 / 34.0).collect(),
        ],
    };
    let space = SearchSpace {
        alpha: true,
        beta: true,
    };
    let searched = Vit::from_weights(&cfg, random.weights(), space, Some(&relaxed), true).unwrap();
    assert_eq!(searched.relaxed().unwrap(), relaxed);
    // Not exportable while relaxed.
    assert!(searched.to_model().is_err());
    let bin = binarized(&searched, 0.5, Some(0.5), false).unwrap();
    let c = bin.config();
    assert_eq!(
        c.attention,
        vec![
            vec![
                AttnKind::ReluSoftmax,
                AttnKind::ScaleAttn,
                AttnKind::ScaleAttn,
                AttnKind::ReluSoftmax
            ],
            vec![
                AttnKind::ScaleAttn,
                AttnKind::ReluSoftmax,
                AttnKind::ScaleAttn,
                AttnKind::ReluSoftmax
            ],
        ]
    );
    let kept: usize = c
        .beta
        .iter()
        .flatten()
        .map(|m| m.iter().filter(|&&b| b).count())
        .sum();
    assert_eq!(kept, 17);
    let dir = common::temp_dir("export-searched");
    let model = export_dir(&bin, &dir).unwrap();
    let diff = compare(&bin, &model, 4);
    assert!(diff <= 1e-4, "max |Δlogit| = {diff}");
    // The file carries the paper's alpha and beta tensors with binary values.
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&st[..200.min(st.len())]).into_owned();
    assert!(text.contains("{"), "safetensors header");
    assert!(Model::load_dir(&dir).unwrap().fused_ffn(0).is_some());
    common::remove(&dir);
    // Keeping GeLU on every token is plain MPCViT: no beta masks, same heads.
    let plain = binarized(&searched, 0.5, Some(1.0), false).unwrap();
    assert_eq!(plain.config().beta, vec![None, None]);
    assert_eq!(plain.config().attention, c.attention);
    let dir = common::temp_dir("export-searched-plain");
    let model = export_dir(&plain, &dir).unwrap();
    assert!(compare(&plain, &model, 4) <= 1e-4);
    assert!(model.fused_ffn(0).is_none());
    common::remove(&dir);
}

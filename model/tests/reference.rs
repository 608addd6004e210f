//! The plaintext forward against vectors from an independent PyTorch model of the paper's
//! code (`model/scripts/make_reference.py`): every attention kind, a beta mask with both
//! values, both GeLU kinds.

mod common;

use common::{data_dir, max_abs_diff, reference_config, reference_weights, tensor_values};
use model::{AttnKind, GeluKind, Model};

const TOL: f32 = 1e-4;

fn io() -> Vec<u8> {
    std::fs::read(data_dir().join("reference_io.safetensors")).unwrap()
}

/// Row `b` of a `[B, ...]` tensor.
fn row(bytes: &[u8], name: &str, b: usize) -> Vec<f32> {
    let (shape, values) = tensor_values(bytes, name);
    let per = values.len() / shape[0];
    values[b * per..(b + 1) * per].to_vec()
}

#[test]
fn vectors_cover_every_kind() {
    let config = reference_config();
    let kinds: Vec<AttnKind> = config.attention.iter().flatten().copied().collect();
    for kind in [
        AttnKind::Softmax,
        AttnKind::ReluSoftmax,
        AttnKind::ScaleAttn,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing from the reference");
    }
    let masks: Vec<&[bool]> = (0..config.depth)
        .filter_map(|i| config.block_beta(i))
        .collect();
    assert!(
        masks
            .iter()
            .any(|m| m.contains(&true) && m.contains(&false))
    );
}

#[test]
fn plaintext_forward_matches_pytorch_block_by_block() {
    let model = Model::load(
        &data_dir().join("reference_manifest.json"),
        &data_dir().join("reference.safetensors"),
    )
    .unwrap();
    let io = io();
    let (shape, _) = tensor_values(&io, "input");
    assert!(shape[0] >= 3);
    for b in 0..shape[0] {
        let trace = model.forward_trace(&row(&io, "input", b)).unwrap();
        let mut checks = vec![("embedded".to_string(), trace.embedded.clone())];
        for (i, blk) in trace.blocks.iter().enumerate() {
            checks.push((format!("block.{i}.attn_out"), blk.attn_out.clone()));
            checks.push((format!("block.{i}.output"), blk.output.clone()));
        }
        checks.push(("final_norm".into(), trace.final_norm.clone()));
        checks.push(("logits".into(), trace.logits.clone()));
        for (name, ours) in checks {
            let diff = max_abs_diff(&ours, &row(&io, &name, b));
            assert!(diff <= TOL, "input {b}: {name} differs by {diff}");
        }
        assert_eq!(model.forward(&row(&io, "input", b)).unwrap(), trace.logits);
    }
}

#[test]
fn quad_gelu_matches_pytorch() {
    let mut config = reference_config();
    config.gelu = GeluKind::Quad;
    let model = Model::from_safetensors(config, &reference_weights()).unwrap();
    let io = io();
    for b in 0..3 {
        let logits = model.forward(&row(&io, "input", b)).unwrap();
        let diff = max_abs_diff(&logits, &row(&io, "logits_quad", b));
        assert!(diff <= TOL, "input {b}: quad logits differ by {diff}");
    }
}

#[test]
fn unfused_linearised_ffn_agrees_with_fused() {
    let model = Model::from_safetensors(reference_config(), &reference_weights()).unwrap();
    let config = model.config();
    let block = (0..config.depth)
        .find(|&i| model.fused_ffn(i).is_some())
        .unwrap();
    let blk = &model.weights().blocks[block];
    let z: Vec<f32> = (0..config.num_tokens() * config.dim)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let fused = model::plain::ffn(config, block, blk, model.fused_ffn(block), &z);
    let unfused = model::plain::ffn(config, block, blk, None, &z);
    assert!(max_abs_diff(&fused, &unfused) <= 1e-5);
}

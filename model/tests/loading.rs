//! Loading errors (each names the tensor), dtype conversion, and save/load roundtrips.

mod common;

use common::{
    RawTensor, read_tensors, reference_config, reference_weights, temp_dir, write_tensors,
};
use model::{AttnKind, Model, ModelConfig, ModelError};
use safetensors::Dtype;

fn edited(edit: impl FnOnce(&mut Vec<RawTensor>)) -> Vec<u8> {
    let mut tensors = read_tensors(&reference_weights());
    edit(&mut tensors);
    write_tensors(&tensors)
}

fn tensor<'a>(tensors: &'a mut [RawTensor], name: &str) -> &'a mut RawTensor {
    tensors.iter_mut().find(|t| t.name == name).unwrap()
}

fn load(config: ModelConfig, bytes: &[u8]) -> Result<Model, ModelError> {
    Model::from_safetensors(config, bytes)
}

#[test]
fn reference_loads() {
    load(reference_config(), &reference_weights()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let name = "classifier.blocks.1.linear2.bias";
    let bytes = edited(|t| t.retain(|t| t.name != name));
    match load(reference_config(), &bytes) {
        Err(ModelError::MissingTensor { name: n }) => assert_eq!(n, name),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn extra_tensor_is_named() {
    // The LinFormer leftover of an older version of the paper's code.
    let name = "classifier.blocks.0.self_attn.E";
    let bytes = edited(|t| t.push(RawTensor::f32(name, &[1, 1, 2, 17], &[0.5; 34])));
    match load(reference_config(), &bytes) {
        Err(ModelError::UnexpectedTensor { name: n }) => assert_eq!(n, name),
        other => panic!("expected UnexpectedTensor, got {other:?}"),
    }
}

#[test]
fn wrong_shape_is_named() {
    let name = "classifier.fc.weight";
    let bytes = edited(|t| {
        let fc = tensor(t, name);
        let values = fc.values();
        fc.shape = vec![10, 31];
        fc.set_values(&values[..310]);
    });
    match load(reference_config(), &bytes) {
        Err(ModelError::ShapeMismatch {
            name: n,
            expected,
            found,
        }) => {
            assert_eq!(n, name);
            assert_eq!((expected, found), (vec![10, 32], vec![10, 31]));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn nan_and_inf_are_named() {
    let name = "classifier.blocks.0.linear1.weight";
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let bytes = edited(|t| {
            let w = tensor(t, name);
            let mut values = w.values();
            values[5] = bad;
            w.set_values(&values);
        });
        match load(reference_config(), &bytes) {
            Err(ModelError::NonFinite { name: n, index, .. }) => {
                assert_eq!((n.as_str(), index), (name, 5))
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
}

#[test]
fn manifest_dim_contradicting_tensors() {
    let mut config = reference_config();
    config.dim = 48; // still divisible by 4 heads
    match load(config, &reference_weights()) {
        Err(ModelError::ShapeMismatch {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "tokenizer.conv_layers.0.0.weight");
            assert_eq!((expected, found), (vec![48, 3, 4, 4], vec![32, 3, 4, 4]));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let mut config = reference_config();
    config.num_classes = 100;
    config.labels.clear();
    assert!(matches!(
        load(config, &reference_weights()),
        Err(ModelError::ShapeMismatch { name, .. }) if name == "classifier.fc.weight"
    ));
}

#[test]
fn manifest_heads_table_contradicting_alpha() {
    // Block 0 head 2 is ScaleAttn (alpha 0) in the weights.
    let mut config = reference_config();
    assert_eq!(config.attention[0][2], AttnKind::ScaleAttn);
    config.attention[0][2] = AttnKind::ReluSoftmax;
    match load(config, &reference_weights()) {
        Err(ModelError::AlphaMismatch {
            name,
            head,
            alpha,
            expected,
        }) => {
            assert_eq!(name, "classifier.blocks.0.self_attn.alpha");
            assert_eq!((head, alpha, expected), (2, 0.0, AttnKind::ReluSoftmax));
        }
        other => panic!("expected AlphaMismatch, got {other:?}"),
    }
    // A fractional (unbinarised, mid-search) alpha is rejected too.
    let bytes = edited(|t| {
        tensor(t, "classifier.blocks.1.self_attn.alpha").set_values(&[0.0, 0.7, 1.0, 0.0])
    });
    assert!(matches!(
        load(reference_config(), &bytes),
        Err(ModelError::AlphaMismatch { head: 1, .. })
    ));
}

#[test]
fn alpha_may_be_absent_only_for_all_softmax_blocks() {
    let name = "classifier.blocks.0.self_attn.alpha";
    let bytes = edited(|t| t.retain(|t| t.name != name));
    match load(reference_config(), &bytes) {
        Err(ModelError::MissingTensor { name: n }) => assert_eq!(n, name),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let mut config = reference_config();
    config.attention[0] = vec![AttnKind::Softmax; 4];
    let model = load(config.clone(), &bytes).unwrap();
    // Saving a teacher-style block writes no alpha for it.
    let saved = read_tensors(&model.to_safetensors().unwrap());
    assert!(!saved.iter().any(|t| t.name == name));
    // With alpha present, Softmax heads ignore its value.
    load(config, &reference_weights()).unwrap();
}

#[test]
fn manifest_beta_contradicting_tensors() {
    let name = "classifier.blocks.1.beta";
    let mut config = reference_config();
    let mask = config.beta[1].as_mut().unwrap();
    let token = mask.iter().position(|b| !b).unwrap();
    mask[token] = true;
    match load(config, &reference_weights()) {
        Err(ModelError::BetaMismatch {
            name: n,
            token: t,
            beta,
            expected,
        }) => {
            assert_eq!((n.as_str(), t, beta, expected), (name, token, 0.0, true));
        }
        other => panic!("expected BetaMismatch, got {other:?}"),
    }
    // The weights have beta for block 1 but the manifest has no mask there.
    let mut config = reference_config();
    config.beta[1] = None;
    match load(config, &reference_weights()) {
        Err(ModelError::UnexpectedBeta { name: n, block }) => {
            assert_eq!((n.as_str(), block), (name, 1))
        }
        other => panic!("expected UnexpectedBeta, got {other:?}"),
    }
    // The manifest has a mask for block 0 but the weights have no beta there.
    let mut config = reference_config();
    config.beta[0] = Some(vec![true; config.num_tokens()]);
    match load(config, &reference_weights()) {
        Err(ModelError::MissingTensor { name: n }) => assert_eq!(n, "classifier.blocks.0.beta"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn other_dtypes_are_converted() {
    let reference = load(reference_config(), &reference_weights()).unwrap();
    let image = vec![0.25f32; reference.config().input_len()];
    let expected = reference.forward(&image).unwrap();
    // F64: exact. F16 / BF16: rounded, logits close.
    for (dtype, tol) in [(Dtype::F64, 0.0), (Dtype::F16, 2e-2), (Dtype::BF16, 1e-1)] {
        let bytes = edited(|tensors| {
            for t in tensors.iter_mut() {
                let values = t.values();
                t.dtype = dtype;
                t.bytes = match dtype {
                    Dtype::F64 => values
                        .iter()
                        .flat_map(|v| f64::from(*v).to_le_bytes())
                        .collect(),
                    Dtype::BF16 => values
                        .iter()
                        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                        .collect(),
                    Dtype::F16 => values
                        .iter()
                        .flat_map(|v| to_f16_bits(*v).to_le_bytes())
                        .collect(),
                    _ => unreachable!(),
                };
            }
        });
        let model = load(reference_config(), &bytes).unwrap();
        if dtype == Dtype::F64 {
            assert_eq!(model, reference);
        }
        let logits = model.forward(&image).unwrap();
        let diff = common::max_abs_diff(&logits, &expected);
        assert!(diff <= tol, "{dtype:?}: logits differ by {diff}");
    }
    let bytes = edited(|t| {
        let w = tensor(t, "classifier.norm.bias");
        w.dtype = Dtype::I32;
    });
    assert!(matches!(
        load(reference_config(), &bytes),
        Err(ModelError::UnsupportedDtype { name, .. }) if name == "classifier.norm.bias"
    ));
}

/// f32 → binary16 bits, round to nearest (normal range only; enough for test weights).
fn to_f16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if v == 0.0 || exp <= 0 {
        return sign;
    }
    assert!(exp < 31, "test value out of f16 range");
    let mant = bits & 0x7f_ffff;
    let rounded = ((exp as u32) << 10) + (mant >> 13) + ((mant >> 12) & 1);
    sign | rounded as u16
}

#[test]
fn corrupt_container_is_an_error() {
    assert!(matches!(
        load(reference_config(), b"not a safetensors file"),
        Err(ModelError::SafeTensors(_))
    ));
}

#[test]
fn wrong_input_length_is_an_error() {
    let model = load(reference_config(), &reference_weights()).unwrap();
    assert!(matches!(
        model.forward(&[0.0; 10]),
        Err(ModelError::InputLength {
            expected: 768,
            found: 10,
            ..
        })
    ));
}

#[test]
fn reference_roundtrip_keeps_every_tensor() {
    let model = load(reference_config(), &reference_weights()).unwrap();
    let saved = model.to_safetensors().unwrap();
    let mut original = read_tensors(&reference_weights());
    let mut again = read_tensors(&saved);
    original.sort_by(|a, b| a.name.cmp(&b.name));
    again.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(original.len(), again.len());
    for (a, b) in original.iter().zip(&again) {
        assert_eq!((&a.name, &a.shape, &a.bytes), (&b.name, &b.shape, &b.bytes));
    }
    assert_eq!(load(reference_config(), &saved).unwrap(), model);
}

#[test]
fn save_dir_and_load_dir_roundtrip() {
    let mut config = ModelConfig::vit_7_4_32();
    config.depth = 2;
    config.attention = vec![
        vec![
            AttnKind::ReluSoftmax,
            AttnKind::ScaleAttn,
            AttnKind::Softmax,
            AttnKind::ScaleAttn,
        ],
        vec![AttnKind::Softmax; 4],
    ];
    let mut mask = vec![true; config.num_tokens()];
    mask[7] = false;
    config.beta = vec![None, Some(mask)];
    let model = Model::random(config, 7).unwrap();
    let dir = temp_dir("roundtrip");
    model.save_dir(&dir).unwrap();
    let loaded = Model::load_dir(&dir).unwrap();
    assert_eq!(loaded, model);
    let image: Vec<f32> = (0..model.config().input_len())
        .map(|i| (i % 13) as f32 / 13.0)
        .collect();
    assert_eq!(
        loaded.forward(&image).unwrap(),
        model.forward(&image).unwrap()
    );
    // Model::new re-checks in-memory weights.
    Model::new(model.config().clone(), model.weights().clone()).unwrap();
    let mut broken = model.weights().clone();
    broken.blocks[1].linear1.weight[0] = f32::NAN;
    assert!(matches!(
        Model::new(model.config().clone(), broken),
        Err(ModelError::NonFinite { name, index: 0, .. }) if name == "classifier.blocks.1.linear1.weight"
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_files_are_io_errors() {
    let dir = temp_dir("missing");
    assert!(matches!(Model::load_dir(&dir), Err(ModelError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

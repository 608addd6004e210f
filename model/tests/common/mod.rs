//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use model::{AttnKind, ModelConfig};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// `model/tests/data`.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The reference manifest, parsed.
pub fn reference_config() -> ModelConfig {
    let text = std::fs::read_to_string(data_dir().join("reference_manifest.json")).unwrap();
    ModelConfig::from_manifest_json(&text).unwrap()
}

/// The reference weights file, as bytes.
pub fn reference_weights() -> Vec<u8> {
    std::fs::read(data_dir().join("reference.safetensors")).unwrap()
}

/// One tensor of a safetensors file: name, dtype, shape, raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    pub fn f32(name: &str, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.to_string(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The values of an F32 tensor.
    pub fn values(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32);
        self.bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    pub fn set_values(&mut self, values: &[f32]) {
        self.dtype = Dtype::F32;
        self.bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
}

/// Every tensor of a safetensors file, in file order.
pub fn read_tensors(bytes: &[u8]) -> Vec<RawTensor> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| RawTensor {
            name,
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            bytes: view.data().to_vec(),
        })
        .collect()
}

/// Serialises tensors back into a safetensors file.
pub fn write_tensors(tensors: &[RawTensor]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, &None).unwrap()
}

/// The F32 values of tensor `name` in a safetensors file.
pub fn tensor_values(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = read_tensors(bytes)
        .into_iter()
        .find(|t| t.name == name)
        .unwrap();
    (t.shape.clone(), t.values())
}

/// Largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 16 × 16 px model of 2 blocks, dim 32, 4 heads (its head table that
/// of `vit_7_4_32` until set).
pub fn small_config(name: &str) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        image_size: 16,
        in_channels: 3,
        patch_size: 4,
        dim: 32,
        depth: 2,
        heads: 4,
        mlp_hidden: 64,
        num_classes: 10,
        ..ModelConfig::vit_7_4_32()
    }
}

/// [`small_config`] with every attention kind in each block and a β mask
/// on the second block.
pub fn every_attention_kind() -> ModelConfig {
    let mut config = small_config("small");
    config.attention = vec![
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
    let n = config.num_tokens();
    config.beta = vec![None, Some((0..n).map(|t| t % 3 != 1).collect())];
    config
}

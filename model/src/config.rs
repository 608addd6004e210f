//! Network configuration and the JSON manifest that carries it next to the weights.
//!
//! A [`ModelConfig`] fixes every shape of the network (image size, patch size, width,
//! depth, heads, MLP width, classes), the per-head attention kind, the optional per-token
//! MPCViT+ `beta` mask of each block, the GeLU variant and the input normalisation.
//! [`ModelConfig::to_manifest_json`] / [`ModelConfig::from_manifest_json`] write and read
//! it as `manifest.json` (see the crate README for the format).

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The manifest format this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside a model directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// File name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// ReLU-Softmax denominator epsilon of the paper's code (`self.eps = 1e-5` in
/// `src/utils/transformers.py`, class `Attention`).
pub const PAPER_RELU_SOFTMAX_EPS: f32 = 1e-5;

/// PyTorch's `nn.LayerNorm` default epsilon, used by every norm of the paper's network.
pub const PAPER_LAYER_NORM_EPS: f32 = 1e-5;

/// CIFAR-10 class names in label order.
pub const CIFAR10_LABELS: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// How one attention head turns the scores `S = Q·Kᵀ/√d` into attention weights.
///
/// `N` is the token count including the class token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnKind {
    /// `softmax_row(S)`: the baseline ViT (the paper's distillation teacher).
    Softmax,
    /// RSAttn: `ReLU(S) / (Σ_j ReLU(S)_ij + eps)`; the paper's `alpha = 1`.
    ReluSoftmax,
    /// ScaleAttn: `S / N`, no nonlinearity; the paper's `alpha = 0`.
    ScaleAttn,
}

/// Which GeLU the FFN uses (for tokens that are not linearised by `beta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GeluKind {
    /// Exact GeLU `0.5·x·(1 + erf(x/√2))`, PyTorch's `F.gelu` (the paper's checkpoints).
    #[default]
    Erf,
    /// MPCFormer's "quad" GeLU `0.125·x² + 0.25·x + 0.5`.
    Quad,
}

/// Everything that fixes the network's shapes and non-linearities.
///
/// Build one with a preset ([`ModelConfig::vit_7_4_32`], [`ModelConfig::vit_9_12_64`])
/// or by hand, then call [`ModelConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A free-form name (the paper's model name, e.g. `vit_7_4_32`).
    pub name: String,
    /// Input images are `image_size × image_size`.
    pub image_size: usize,
    /// Input channels (3 for RGB, 1 for grayscale).
    pub in_channels: usize,
    /// Side of the square conv patch (kernel = stride, no padding).
    pub patch_size: usize,
    /// Embedding width `C`.
    pub dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block (`C` must be a multiple).
    pub heads: usize,
    /// Hidden width of the FFN (`mlp_ratio · C` in the paper's code).
    pub mlp_hidden: usize,
    /// Number of output classes.
    pub num_classes: usize,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f32,
    /// Epsilon in the ReLU-Softmax denominator.
    #[serde(default = "default_rs_eps")]
    pub relu_softmax_eps: f32,
    /// Per-channel mean subtracted after scaling pixels to `[0, 1]`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided after subtracting the mean.
    pub std: Vec<f32>,
    /// Class names in label order (empty when unknown).
    #[serde(default)]
    pub labels: Vec<String>,
    /// GeLU variant of the FFN.
    #[serde(default)]
    pub gelu: GeluKind,
    /// `attention[block][head]`: the attention kind of every head.
    pub attention: Vec<Vec<AttnKind>>,
    /// `beta[block]`: MPCViT+ per-token mask, `None` for a block without one.
    /// `false` marks a linearised token whose FFN is `ReLU(W2·(W1·z + b1) + b2)`.
    /// In JSON an absent field means no block has a mask.
    #[serde(default, skip_serializing_if = "all_none")]
    pub beta: Vec<Option<Vec<bool>>>,
}

fn default_ln_eps() -> f32 {
    PAPER_LAYER_NORM_EPS
}

fn default_rs_eps() -> f32 {
    PAPER_RELU_SOFTMAX_EPS
}

fn all_none(beta: &[Option<Vec<bool>>]) -> bool {
    beta.iter().all(Option::is_none)
}

impl ModelConfig {
    /// The paper's CIFAR-10 network: 32 px, patch 4 (64 + 1 = 65 tokens), dim 256,
    /// 7 blocks, 4 heads, MLP 512, 10 classes, CIFAR-10 normalisation and labels.
    ///
    /// Every head is [`AttnKind::ReluSoftmax`] (the paper's `alpha` initialisation);
    /// change the table to the searched architecture, e.g. with
    /// [`ModelConfig::with_uniform_attention`] or by editing `attention`.
    pub fn vit_7_4_32() -> Self {
        Self {
            name: "vit_7_4_32".into(),
            image_size: 32,
            in_channels: 3,
            patch_size: 4,
            dim: 256,
            depth: 7,
            heads: 4,
            mlp_hidden: 512,
            num_classes: 10,
            layer_norm_eps: PAPER_LAYER_NORM_EPS,
            relu_softmax_eps: PAPER_RELU_SOFTMAX_EPS,
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
            labels: CIFAR10_LABELS.iter().map(|s| s.to_string()).collect(),
            gelu: GeluKind::Erf,
            attention: vec![vec![AttnKind::ReluSoftmax; 4]; 7],
            beta: vec![None; 7],
        }
    }

    /// The paper's Tiny-ImageNet network: 64 px, patch 4 (256 + 1 = 257 tokens), dim 192,
    /// 9 blocks, 12 heads, MLP 384, 200 classes, the repo's Tiny-ImageNet normalisation
    /// (`configs/datasets/tiny_imagenet.yml`). Labels are left empty.
    pub fn vit_9_12_64() -> Self {
        Self {
            name: "vit_9_12_64".into(),
            image_size: 64,
            in_channels: 3,
            patch_size: 4,
            dim: 192,
            depth: 9,
            heads: 12,
            mlp_hidden: 384,
            num_classes: 200,
            layer_norm_eps: PAPER_LAYER_NORM_EPS,
            relu_softmax_eps: PAPER_RELU_SOFTMAX_EPS,
            mean: vec![0.480, 0.448, 0.397],
            std: vec![0.272, 0.265, 0.274],
            labels: Vec::new(),
            gelu: GeluKind::Erf,
            attention: vec![vec![AttnKind::ReluSoftmax; 12]; 9],
            beta: vec![None; 9],
        }
    }

    /// Sets every head of every block to `kind`.
    pub fn with_uniform_attention(mut self, kind: AttnKind) -> Self {
        self.attention = vec![vec![kind; self.heads]; self.depth];
        self
    }

    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patch tokens (without the class token).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Number of tokens `N` including the class token.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + 1
    }

    /// Head width `d = C / heads`.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Length of a normalised CHW input image.
    pub fn input_len(&self) -> usize {
        self.in_channels * self.image_size * self.image_size
    }

    /// The beta mask of `block`, if it has one.
    pub fn block_beta(&self, block: usize) -> Option<&[bool]> {
        self.beta.get(block).and_then(|b| b.as_deref())
    }

    /// Checks that the configuration is consistent on its own: non-zero sizes,
    /// divisibility, table sizes, normalisation lengths, finite positive epsilons.
    ///
    /// An empty `beta` is accepted and means "no block has a mask"; use
    /// [`ModelConfig::normalized`] to expand it to one entry per block.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(ModelError::InvalidConfig { field, reason });
        for (field, v) in [
            ("image_size", self.image_size),
            ("in_channels", self.in_channels),
            ("patch_size", self.patch_size),
            ("dim", self.dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("mlp_hidden", self.mlp_hidden),
            ("num_classes", self.num_classes),
        ] {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return bad(
                "patch_size",
                format!(
                    "{} does not divide image_size {}",
                    self.patch_size, self.image_size
                ),
            );
        }
        if !self.dim.is_multiple_of(self.heads) {
            return bad(
                "heads",
                format!("{} does not divide dim {}", self.heads, self.dim),
            );
        }
        for (field, eps) in [
            ("layer_norm_eps", self.layer_norm_eps),
            ("relu_softmax_eps", self.relu_softmax_eps),
        ] {
            if !(eps.is_finite() && eps >= 0.0) {
                return bad(field, format!("{eps} is not a finite non-negative number"));
            }
        }
        if self.mean.len() != self.in_channels {
            return bad(
                "mean",
                format!(
                    "has {} values for {} channels",
                    self.mean.len(),
                    self.in_channels
                ),
            );
        }
        if self.std.len() != self.in_channels {
            return bad(
                "std",
                format!(
                    "has {} values for {} channels",
                    self.std.len(),
                    self.in_channels
                ),
            );
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad("mean", "holds a non-finite value".into());
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("std", "every value must be finite and positive".into());
        }
        if !self.labels.is_empty() && self.labels.len() != self.num_classes {
            return bad(
                "labels",
                format!(
                    "has {} names for {} classes",
                    self.labels.len(),
                    self.num_classes
                ),
            );
        }
        if self.attention.len() != self.depth {
            return bad(
                "attention",
                format!(
                    "has {} blocks, depth is {}",
                    self.attention.len(),
                    self.depth
                ),
            );
        }
        for (i, row) in self.attention.iter().enumerate() {
            if row.len() != self.heads {
                return bad(
                    "attention",
                    format!("block {i} has {} heads, expected {}", row.len(), self.heads),
                );
            }
        }
        if !self.beta.is_empty() && self.beta.len() != self.depth {
            return bad(
                "beta",
                format!("has {} blocks, depth is {}", self.beta.len(), self.depth),
            );
        }
        let n = self.num_tokens();
        for (i, mask) in self.beta.iter().enumerate() {
            if let Some(mask) = mask
                && mask.len() != n
            {
                return bad(
                    "beta",
                    format!("block {i} has {} tokens, the network has {n}", mask.len()),
                );
            }
        }
        Ok(())
    }

    /// Validates and expands an empty `beta` to one `None` per block.
    pub fn normalized(mut self) -> Result<Self> {
        self.validate()?;
        if self.beta.is_empty() {
            self.beta = vec![None; self.depth];
        }
        Ok(self)
    }

    /// Parses a manifest (`manifest.json`): checks `format_version`, rejects unknown
    /// fields, validates and normalises the configuration.
    pub fn from_manifest_json(text: &str) -> Result<Self> {
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        let obj = value.as_object_mut().ok_or_else(|| {
            ModelError::ManifestJson(serde::de::Error::custom("manifest must be a JSON object"))
        })?;
        let version = obj.remove("format_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(FORMAT_VERSION)) {
            return Err(ModelError::UnsupportedFormatVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let config: ModelConfig = serde_json::from_value(value)?;
        config.normalized()
    }

    /// Writes the manifest (pretty-printed JSON with `format_version` first).
    pub fn to_manifest_json(&self) -> Result<String> {
        let mut out = serde_json::Map::new();
        out.insert("format_version".into(), FORMAT_VERSION.into());
        if let serde_json::Value::Object(fields) = serde_json::to_value(self)? {
            out.extend(fields);
        }
        let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(out))?;
        text.push('\n');
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_paper_shapes() {
        let c = ModelConfig::vit_7_4_32();
        c.validate().unwrap();
        assert_eq!((c.num_tokens(), c.head_dim()), (65, 64));
        let t = ModelConfig::vit_9_12_64();
        t.validate().unwrap();
        assert_eq!(
            (t.num_tokens(), t.head_dim(), t.num_classes),
            (257, 16, 200)
        );
    }

    #[test]
    fn manifest_roundtrip_and_version_check() {
        let mut c = ModelConfig::vit_7_4_32();
        c.attention[1][2] = AttnKind::ScaleAttn;
        let mut mask = vec![true; 65];
        mask[3] = false;
        c.beta[4] = Some(mask);
        let text = c.to_manifest_json().unwrap();
        assert!(text.contains("\"format_version\": 1"));
        assert_eq!(ModelConfig::from_manifest_json(&text).unwrap(), c);

        let v2 = text.replace("\"format_version\": 1", "\"format_version\": 2");
        assert!(matches!(
            ModelConfig::from_manifest_json(&v2),
            Err(ModelError::UnsupportedFormatVersion { found: Some(2), .. })
        ));
        let unknown = text.replace("\"name\"", "\"bogus\": 1, \"name\"");
        assert!(matches!(
            ModelConfig::from_manifest_json(&unknown),
            Err(ModelError::ManifestJson(_))
        ));
    }

    #[test]
    fn inconsistent_configs_are_rejected() {
        let mut c = ModelConfig::vit_7_4_32();
        c.heads = 3;
        assert!(matches!(
            c.validate(),
            Err(ModelError::InvalidConfig { field: "heads", .. })
        ));
        let mut c = ModelConfig::vit_7_4_32();
        c.attention.pop();
        assert!(matches!(
            c.validate(),
            Err(ModelError::InvalidConfig {
                field: "attention",
                ..
            })
        ));
        let mut c = ModelConfig::vit_7_4_32();
        c.beta[0] = Some(vec![true; 64]);
        assert!(matches!(
            c.validate(),
            Err(ModelError::InvalidConfig { field: "beta", .. })
        ));
    }
}

//! [`Model`]: a validated configuration together with its weights.

use std::fs;
use std::path::Path;

use crate::config::{MANIFEST_FILE, ModelConfig, WEIGHTS_FILE};
use crate::error::{ModelError, Result};
use crate::weights::{Linear, Weights};

/// A network ready to run: configuration, weights, and the weights derived from them
/// (the fused linearised FFN of MPCViT+ blocks).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    config: ModelConfig,
    weights: Weights,
    fused_ffn: Vec<Option<Linear>>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| ModelError::Io {
        op: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|source| ModelError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source,
    })
}

impl Model {
    /// Builds a model from a configuration and in-memory weights, checking that every
    /// tensor has the shape the configuration implies and is finite.
    pub fn new(config: ModelConfig, weights: Weights) -> Result<Self> {
        let config = config.normalized()?;
        weights.check(&config)?;
        Ok(Self::assemble(config, weights))
    }

    fn assemble(config: ModelConfig, weights: Weights) -> Self {
        let fused_ffn = weights
            .blocks
            .iter()
            .enumerate()
            .map(|(i, blk)| {
                let linearised = config
                    .block_beta(i)
                    .is_some_and(|mask| mask.iter().any(|b| !b));
                linearised.then(|| fuse_linears(&blk.linear1, &blk.linear2))
            })
            .collect();
        Self {
            config,
            weights,
            fused_ffn,
        }
    }

    /// Synthetic model with deterministic random weights (see [`Weights::random`]).
    pub fn random(config: ModelConfig, seed: u64) -> Result<Self> {
        let config = config.normalized()?;
        let weights = Weights::random(&config, seed);
        Ok(Self::assemble(config, weights))
    }

    /// Loads weights from safetensors bytes for `config` (see
    /// [`Weights::from_safetensors`] for the checks).
    pub fn from_safetensors(config: ModelConfig, bytes: &[u8]) -> Result<Self> {
        let config = config.normalized()?;
        let weights = Weights::from_safetensors(&config, bytes)?;
        Ok(Self::assemble(config, weights))
    }

    /// Loads a manifest file and a safetensors file.
    pub fn load(manifest: &Path, weights: &Path) -> Result<Self> {
        let text = read(manifest)?;
        let text = String::from_utf8(text).map_err(|e| {
            ModelError::ManifestJson(serde::de::Error::custom(format!(
                "manifest is not UTF-8: {e}"
            )))
        })?;
        let config = ModelConfig::from_manifest_json(&text)?;
        Self::from_safetensors(config, &read(weights)?)
    }

    /// Loads `dir/manifest.json` and `dir/model.safetensors`.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        Self::load(&dir.join(MANIFEST_FILE), &dir.join(WEIGHTS_FILE))
    }

    /// Writes `dir/manifest.json` and `dir/model.safetensors` (creating `dir`).
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            op: "creating directory",
            path: dir.to_path_buf(),
            source,
        })?;
        write(
            &dir.join(MANIFEST_FILE),
            self.config.to_manifest_json()?.as_bytes(),
        )?;
        write(&dir.join(WEIGHTS_FILE), &self.to_safetensors()?)
    }

    /// The weights as F32 safetensors with the paper's state-dict names.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.weights.to_safetensors(&self.config)
    }

    /// The (normalised) configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// For a block with linearised tokens (some `beta = false`), the fused FFN
    /// `Linear(C, C)` with weight `W2·W1` and bias `W2·b1 + b2`; `None` otherwise.
    pub fn fused_ffn(&self, block: usize) -> Option<&Linear> {
        self.fused_ffn.get(block).and_then(Option::as_ref)
    }
}

/// Fuses `second ∘ first` (no activation in between) into one layer, in f64.
pub fn fuse_linears(first: &Linear, second: &Linear) -> Linear {
    let (inp, mid, out) = (first.in_features, first.out_features, second.out_features);
    let mut weight = vec![0.0f32; out * inp];
    let mut row = vec![0.0f64; inp];
    for o in 0..out {
        row.iter_mut().for_each(|v| *v = 0.0);
        for h in 0..mid {
            let s = f64::from(second.weight[o * mid + h]);
            let w1 = &first.weight[h * inp..(h + 1) * inp];
            for (acc, &w) in row.iter_mut().zip(w1) {
                *acc += s * f64::from(w);
            }
        }
        for (dst, &v) in weight[o * inp..(o + 1) * inp].iter_mut().zip(&row) {
            *dst = v as f32;
        }
    }
    let bias = (0..out)
        .map(|o| {
            let mut acc = second.bias.as_ref().map_or(0.0, |b| f64::from(b[o]));
            if let Some(b1) = &first.bias {
                for h in 0..mid {
                    acc += f64::from(second.weight[o * mid + h]) * f64::from(b1[h]);
                }
            }
            acc as f32
        })
        .collect();
    Linear {
        out_features: out,
        in_features: inp,
        weight,
        bias: Some(bias),
    }
}

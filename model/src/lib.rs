//! The MPCViT network (arXiv 2211.13955) in the layout of the paper's PyTorch code
//! (PKU-SEC-Lab/mpcvit, CCT-style `ViTLite`), so the paper's checkpoints load and give the
//! same logits.
//!
//! - [`config`]: [`ModelConfig`] (shapes, per-head [`AttnKind`] table, MPCViT+ `beta`
//!   masks, [`GeluKind`], normalisation, labels) and its JSON manifest.
//! - [`weights`]: the paper's state dict in safetensors, loaded and checked against the
//!   manifest, and written back.
//! - [`Model`]: configuration + weights (+ the fused linearised FFNs), load and save.
//! - [`plain`]: the plaintext f32 forward, one function per stage, with a trace of every
//!   intermediate.
//! - [`idx`]: the IDX files of MNIST and Fashion-MNIST (raw or gzip), for the client's
//!   accuracy check and the search's data sets.
//! - [`mod@preprocess`]: PNG/JPEG → normalised CHW input.
//! - [`secure`]: the weight split and the secure forward over mpc-core, stage by stage.
//! - [`cost`]: the online rounds and bytes of a secure inference, counted by the plan
//!   recorder, and each stage's compute time, measured.
//!
//! ```
//! use model::{Model, ModelConfig};
//! let model = Model::random(ModelConfig::vit_7_4_32(), 1).unwrap();
//! let image = vec![0.0f32; model.config().input_len()];
//! let logits = model.forward(&image).unwrap();
//! assert_eq!(logits.len(), 10);
//! ```

pub mod config;
pub mod cost;
pub mod error;
pub mod idx;
pub mod network;
pub mod plain;
pub mod preprocess;
pub mod secure;
pub mod weights;

pub use config::{AttnKind, GeluKind, ModelConfig};
pub use error::{ModelError, Result};
pub use network::Model;
pub use plain::{BlockTrace, Trace};
pub use preprocess::{preprocess, preprocess_image};
pub use secure::{SecureModel, SecureParams, WeightShares, split_input, split_weights};
pub use weights::Weights;

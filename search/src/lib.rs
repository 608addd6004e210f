//! MPC-aware architecture search and training of MPCViT (arXiv 2211.13955) in Rust, on
//! candle (CPU): the Softmax teacher, the search over per-head attention (`alpha`,
//! ReLU-Softmax vs ScaleAttn) and per-token GeLU linearisation (`beta`, MPCViT+),
//! binarisation, retraining with knowledge distillation, and export to the `model`
//! crate's directory format.
//!
//! - [`alloc`]: the allocator setting for training (freed buffers are kept).
//! - [`data`]: IDX (Fashion-MNIST, MNIST), MNIST CSV, CIFAR-10/100 binary, image folders;
//!   normalisation and augmentation.
//! - [`vit`]: the network in candle with the `model` crate's state-dict names.
//! - [`train`]: AdamW, schedules, the objectives, checkpoints and resume.
//! - [`decision`]: how decisive a search is (the gap at the cut, seeds' agreement).
//! - [`export`]: binarisation and `model.safetensors` + `manifest.json`.
//! - [`pareto`]: accuracy against measured secure-inference cost (table and SVG figure).
//! - [`cost`]: the latency of a head mask on a link model from the secure engine's
//!   counts and measured stage times; the per-head and per-block costs of the search's
//!   penalty.

#![deny(unsafe_code)]

pub mod alloc;
pub mod cost;
pub mod data;
pub mod decision;
pub mod export;
pub mod matmul;
pub mod ops;
pub mod pareto;
pub mod train;
pub mod vit;

use std::path::PathBuf;

pub use data::DataError;

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data set file is missing or malformed (the error names the file).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The `model` crate refused a configuration or weights.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// A tensor operation failed (shapes, dtypes).
    #[error("tensor operation: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A checkpoint is missing, of another run, or malformed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged (non-finite loss) at step {step}: lower the learning rate")]
    Diverged {
        /// The optimiser step.
        step: u64,
    },
    /// A request this crate does not support.
    #[error("{0}")]
    Unsupported(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

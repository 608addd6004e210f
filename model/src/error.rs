//! The crate's one error type.

use std::path::PathBuf;

use crate::config::AttnKind;

/// Everything that can go wrong while reading a manifest, loading or saving weights,
/// preprocessing an image or running the plaintext forward.
///
/// Variants about tensors always carry the PyTorch state-dict name of the tensor, so a
/// broken checkpoint points at the exact entry to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "creating directory").
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A secure operator failed (peer, correlated randomness, shapes).
    #[error("secure forward: {0}")]
    Mpc(#[from] mpc_core::MpcError),

    /// The secure forward cannot run this model or these settings.
    #[error("secure forward: {0}")]
    Secure(String),

    /// A weight share file is not valid: truncated, damaged, or not a share
    /// file (the problem in words).
    #[error("not a valid weight share file: {0}")]
    ShareFile(String),

    /// The manifest is not valid JSON or does not have the manifest's fields and types.
    #[error("manifest is not valid: {0}")]
    ManifestJson(#[from] serde_json::Error),

    /// The manifest's `format_version` is missing or not one this crate reads.
    #[error("manifest format_version {found:?} is not supported (this crate reads {supported})")]
    UnsupportedFormatVersion {
        /// The value found (`None` when the field is missing or not an integer).
        found: Option<u64>,
        /// The version this crate reads and writes.
        supported: u32,
    },

    /// The configuration is inconsistent on its own (before any tensor is looked at).
    #[error("invalid model configuration: {field}: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The safetensors container itself could not be parsed or written.
    #[error("safetensors container: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),

    /// A tensor the configuration needs is not in the file.
    #[error("tensor {name} is missing")]
    MissingTensor {
        /// State-dict name of the missing tensor.
        name: String,
    },

    /// The file holds a tensor that is not part of the configured network.
    #[error("unexpected tensor {name} (not part of the configured network)")]
    UnexpectedTensor {
        /// State-dict name of the extra tensor.
        name: String,
    },

    /// A tensor has a different shape from what the configuration implies.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// State-dict name of the tensor.
        name: String,
        /// Shape implied by the configuration.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },

    /// A tensor has an element type that is not converted to f32.
    #[error("tensor {name} has dtype {dtype}, expected F32 (F16, BF16, F64 are converted)")]
    UnsupportedDtype {
        /// State-dict name of the tensor.
        name: String,
        /// The dtype found, as safetensors spells it.
        dtype: String,
    },

    /// A tensor holds NaN or an infinity.
    #[error("tensor {name} holds a non-finite value {value} at flat index {index}")]
    NonFinite {
        /// State-dict name of the tensor.
        name: String,
        /// Flat (row-major) index of the first offending element.
        index: usize,
        /// The offending value.
        value: f32,
    },

    /// A head's `alpha` in the weights disagrees with the manifest's attention table.
    #[error(
        "tensor {name}: head {head} has alpha {alpha}, but the manifest says {expected:?} \
         (alpha must be 1 for ReluSoftmax and 0 for ScaleAttn)"
    )]
    AlphaMismatch {
        /// State-dict name of the alpha tensor.
        name: String,
        /// Head index within the block.
        head: usize,
        /// The alpha value in the weights.
        alpha: f32,
        /// The attention kind the manifest gives this head.
        expected: AttnKind,
    },

    /// A token's `beta` in the weights disagrees with the manifest's beta mask
    /// (or is not binary).
    #[error("tensor {name}: token {token} has beta {beta}, but the manifest says {expected}")]
    BetaMismatch {
        /// State-dict name of the beta tensor.
        name: String,
        /// Token index (0 is the class token).
        token: usize,
        /// The beta value in the weights.
        beta: f32,
        /// The manifest's value for this token.
        expected: bool,
    },

    /// The weights hold a `beta` tensor for a block that the manifest does not linearise.
    #[error(
        "tensor {name} is present but the manifest has no beta mask for block {block} \
         (add the mask to the manifest or drop the tensor)"
    )]
    UnexpectedBeta {
        /// State-dict name of the beta tensor.
        name: String,
        /// Block index.
        block: usize,
    },

    /// An input of the wrong length was passed to the forward.
    #[error("{what}: expected {expected} values, got {found}")]
    InputLength {
        /// Which input ("image", "tokens").
        what: &'static str,
        /// Expected number of values.
        expected: usize,
        /// Number of values passed.
        found: usize,
    },

    /// The image bytes could not be decoded (unknown format, corrupt data, unsupported
    /// colour type).
    #[error("cannot decode image: {0}")]
    ImageDecode(#[source] image::ImageError),

    /// The image's header announces more pixels than
    /// [`crate::preprocess::MAX_IMAGE_PIXELS`]: refused before decoding.
    #[error(
        "image of {width}x{height} pixels is over the limit of {limit} pixels \
         (refused before decoding; scale it down first)"
    )]
    ImageTooLarge {
        /// Width in the header.
        width: u32,
        /// Height in the header.
        height: u32,
        /// The limit in pixels.
        limit: u64,
    },

    /// The decoded image has a zero width or height.
    #[error("image has an empty dimension ({width}x{height})")]
    EmptyImage {
        /// Decoded width.
        width: u32,
        /// Decoded height.
        height: u32,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

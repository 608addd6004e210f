//! The secure forward: the same network as [`crate::plain`], stage by stage,
//! over mpc-core's operators.
//!
//! The model owner splits the weights into two additive shares
//! ([`split_weights`]); each party prepares its share once per model load
//! ([`SecureModel::prepare`]: every linear weight is masked and its `W − B`
//! opened, so later products open only activations); then
//! [`SecureModel::forward`] runs on a shared image. Both parties call the same
//! methods in the same order; everything that steers the computation (shapes,
//! the attention table, the MPCViT+ `beta` masks) is public.
//!
//! Approximations under MPC (the plaintext model is exact): fixed point with
//! `f` fractional bits (default 16); the exact-erf GeLU is evaluated by the
//! piecewise quadratic of `mpc_core::gelu::gelu_piecewise`, its input read
//! at `f − 4` bits (`Ctx::gelu` of `x.at_frac(f − 4)`: error 1.12e-3 on a dense grid over
//! [−8, 8], asserted < 1.6e-3);
//! softmax's exponential by `(1 + x/256)^256`; ReLU-softmax's and LayerNorm's
//! reciprocal and rsqrt piecewise linearly (relative error ≤ 1e-3 on their domains).

mod block;
mod cost;
mod forward;
mod params;
mod prepare;
mod shares;
mod split;

pub use block::GELU_INPUT_FRAC_DROP;
pub use cost::{InferenceCost, measure_inference, measure_inference_with};
pub use forward::{BlockTraceShare, TraceShare, process_cpu_seconds};
pub use params::SecureParams;
pub(crate) use params::{folds, one_round_relu};
pub use prepare::SecureModel;
pub use shares::{
    BlockShare, LayerNormShare, LinearShare, SHARE_FORMAT, SHARE_VERSION, WeightShares,
};
pub use split::{fold_norm, split_input, split_weights};

//! The transformer's blocks over the primitives: attention, LayerNorm and
//! the GeLU.

pub mod attention;
pub mod gelu;
pub mod layer_norm;

//! One party's share of a model's weights, and its file format.

use mpc_core::{Party, Share};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::weights::block_name;

/// One party's share of a linear layer, weight stored transposed (`in × out`).
#[derive(Clone, Debug)]
pub struct LinearShare {
    pub(super) in_features: usize,
    pub(super) out_features: usize,
    pub(super) weight: Share,
    pub(super) bias: Option<Share>,
}

/// One party's share of a LayerNorm.
#[derive(Clone, Debug)]
pub struct LayerNormShare {
    pub(super) gamma: Share,
    pub(super) beta: Share,
}

/// One party's share of a block. The pre-attention LayerNorm's scale and
/// shift are folded into `qkv` by the model owner ([`fold_norm`](super::fold_norm)).
#[derive(Clone, Debug)]
pub struct BlockShare {
    pub(super) qkv: LinearShare,
    pub(super) proj: LinearShare,
    pub(super) norm1: LayerNormShare,
    /// `linear1` with `norm1` folded in, and for MPCViT+ blocks the fused
    /// linearised FFN (also folded) beside it: `[W1' | F']`, C × (M + C).
    pub(super) ffn_in: LinearShare,
    pub(super) linear2: LinearShare,
}

/// One party's share of every weight, with the public configuration.
#[derive(Clone, Debug)]
pub struct WeightShares {
    pub(super) config: ModelConfig,
    pub(super) frac_bits: u32,
    pub(super) conv: LinearShare,
    pub(super) class_emb: Share,
    pub(super) positional_emb: Share,
    pub(super) blocks: Vec<BlockShare>,
    /// The classifier with the final LayerNorm's scale and shift folded in.
    pub(super) fc: LinearShare,
}

impl WeightShares {
    /// The public configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Fractional bits the shares are encoded at.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// This share as a file for `party` (see [`SHARE_FORMAT`] for the layout).
    pub fn to_safetensors(&self, party: Party) -> Result<Vec<u8>> {
        let c = &self.config;
        let mut w = ShareWriter(Vec::new());
        w.linear(CONV, &self.conv);
        w.put("classifier.class_emb".into(), vec![c.dim], &self.class_emb);
        w.put(
            "classifier.positional_emb".into(),
            vec![c.num_tokens(), c.dim],
            &self.positional_emb,
        );
        for (i, b) in self.blocks.iter().enumerate() {
            w.linear(&block_name(i, "self_attn.qkv"), &b.qkv);
            w.linear(&block_name(i, "self_attn.proj"), &b.proj);
            w.put(block_name(i, "norm1.weight"), vec![c.dim], &b.norm1.gamma);
            w.put(block_name(i, "norm1.bias"), vec![c.dim], &b.norm1.beta);
            w.linear(&block_name(i, "ffn_in"), &b.ffn_in);
            w.linear(&block_name(i, "linear2"), &b.linear2);
        }
        w.linear("classifier.fc", &self.fc);
        let w = w.0;
        let views = w
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::U64, shape.clone(), bytes).map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), SHARE_FORMAT.to_string()),
            ("version".to_string(), SHARE_VERSION.to_string()),
            ("party".to_string(), party.index().to_string()),
            ("frac_bits".to_string(), self.frac_bits.to_string()),
            ("manifest".to_string(), c.to_manifest_json()?),
        ]);
        Ok(safetensors::serialize(views, &Some(metadata))?)
    }

    /// Parse a share file, checking every tensor against its manifest; returns
    /// the share and the party it was written for.
    pub fn from_safetensors(bytes: &[u8]) -> Result<(WeightShares, Party)> {
        let bad = share_file_error;
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(container_problem(&e, bytes)))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("metadata entry {k:?} is missing")))
        };
        if field("format")? != SHARE_FORMAT {
            return Err(bad(format!(
                "its format entry is not {SHARE_FORMAT:?} (a plaintext model or another file?)"
            )));
        }
        let version = field("version")?;
        if version != SHARE_VERSION {
            return Err(bad(format!(
                "version {version}, this build reads {SHARE_VERSION}"
            )));
        }
        let party = field("party")?
            .parse::<usize>()
            .ok()
            .and_then(Party::from_index)
            .ok_or_else(|| bad("party must be 0 or 1".into()))?;
        let frac_bits: u32 = field("frac_bits")?
            .parse()
            .map_err(|_| bad("frac_bits is not a number".into()))?;
        let config = ModelConfig::from_manifest_json(&field("manifest")?)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(container_problem(&e, bytes)))?;
        let total = st.len();
        let mut r = ShareReader { st, seen: 0 };
        let c = &config;
        let (dim, hid) = (c.dim, c.mlp_hidden);
        let conv = r.linear(CONV, c.in_channels * c.patch_size * c.patch_size, dim)?;
        let class_emb = r.get("classifier.class_emb", &[dim])?;
        let positional_emb = r.get("classifier.positional_emb", &[c.num_tokens(), dim])?;
        let mut blocks = Vec::with_capacity(c.depth);
        for i in 0..c.depth {
            let linearised = c.block_beta(i).is_some_and(|m| m.iter().any(|b| !b));
            let width = hid + if linearised { dim } else { 0 };
            blocks.push(BlockShare {
                qkv: r.linear(&block_name(i, "self_attn.qkv"), dim, 3 * dim)?,
                proj: r.linear(&block_name(i, "self_attn.proj"), dim, dim)?,
                norm1: LayerNormShare {
                    gamma: r.get(&block_name(i, "norm1.weight"), &[dim])?,
                    beta: r.get(&block_name(i, "norm1.bias"), &[dim])?,
                },
                ffn_in: r.linear(&block_name(i, "ffn_in"), dim, width)?,
                linear2: r.linear(&block_name(i, "linear2"), hid, dim)?,
            });
        }
        let fc = r.linear("classifier.fc", dim, c.num_classes)?;
        if r.seen != total {
            return Err(bad(format!(
                "{} tensors are not part of the configured network",
                total - r.seen
            )));
        }
        let shares = WeightShares {
            config,
            frac_bits,
            conv,
            class_emb,
            positional_emb,
            blocks,
            fc,
        };
        Ok((shares, party))
    }
}

/// `format` metadata of a weight share file. The file is safetensors, every
/// tensor `U64` (little-endian ring elements at `frac_bits` fractional bits),
/// linear weights stored `[in, out]`:
/// `tokenizer.conv_layers.0.0.{weight,bias}`, `classifier.class_emb` `[C]`,
/// `classifier.positional_emb` `[N, C]`, per block
/// `classifier.blocks.{i}.self_attn.qkv.*` (pre-attention LayerNorm folded in),
/// `self_attn.proj.*`, `norm1.{weight,bias}`, `ffn_in.*` (`linear1` with
/// `norm1` folded in, beside the folded fused FFN for MPCViT+ blocks: `[C, H]`
/// or `[C, H + C]`), `linear2.*`, and `classifier.fc.*` (final LayerNorm
/// folded in). Metadata: `format`, `version`, `party`, `frac_bits` and
/// `manifest` (the public manifest JSON, so a share file is self-contained).
pub const SHARE_FORMAT: &str = "mpcvit-weight-share";
/// Version of the share file this crate reads and writes.
pub const SHARE_VERSION: &str = "1";

const CONV: &str = "tokenizer.conv_layers.0.0";

fn share_file_error(m: String) -> ModelError {
    ModelError::ShareFile(m)
}

/// What a safetensors parse error means for a share file of `bytes`, in
/// words (the crate's own errors are bare variant names).
fn container_problem(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let len = bytes.len();
    let announced = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match e {
        E::HeaderTooSmall => {
            format!("truncated or empty: {len} bytes, too short for even the length of a header")
        }
        E::InvalidHeaderLength => format!(
            "truncated: its header announces {} bytes, the file holds {len}",
            announced.map_or(0, |a| a.saturating_add(8))
        ),
        E::HeaderTooLarge => format!(
            "damaged: its first 8 bytes announce a header of {} bytes, more than any share file has",
            announced.unwrap_or(0)
        ),
        E::MetadataIncompleteBuffer => {
            format!("truncated: the tensors its header lists need more bytes than the file's {len}")
        }
        E::InvalidHeader
        | E::InvalidHeaderStart
        | E::InvalidHeaderDeserialization
        | E::JsonError(_) => "damaged: its header is not the JSON a share file begins with".into(),
        E::InvalidOffset(name) => {
            format!("damaged: the header's byte offsets of tensor {name} are not valid")
        }
        E::TensorInvalidInfo | E::InvalidTensorView(..) | E::ValidationOverflow => {
            "damaged: a tensor's type, shape and size in the header do not agree".into()
        }
        other => format!("damaged: {other}"),
    }
}

struct ShareWriter(Vec<(String, Vec<usize>, Vec<u8>)>);

impl ShareWriter {
    fn put(&mut self, name: String, shape: Vec<usize>, s: &Share) {
        let bytes = s.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0.push((name, shape, bytes));
    }

    fn linear(&mut self, prefix: &str, l: &LinearShare) {
        self.put(
            format!("{prefix}.weight"),
            vec![l.in_features, l.out_features],
            &l.weight,
        );
        if let Some(b) = &l.bias {
            self.put(format!("{prefix}.bias"), vec![l.out_features], b);
        }
    }
}

struct ShareReader<'a> {
    st: SafeTensors<'a>,
    seen: usize,
}

impl ShareReader<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Share> {
        let v = self
            .st
            .tensor(name)
            .map_err(|_| share_file_error(format!("tensor {name} is missing")))?;
        if v.dtype() != Dtype::U64 {
            return Err(share_file_error(format!(
                "tensor {name} is {:?}, expected U64",
                v.dtype()
            )));
        }
        if v.shape() != shape {
            return Err(share_file_error(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                v.shape()
            )));
        }
        self.seen += 1;
        Ok(Share::new(
            v.data()
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ))
    }

    fn linear(&mut self, prefix: &str, inp: usize, out: usize) -> Result<LinearShare> {
        Ok(LinearShare {
            in_features: inp,
            out_features: out,
            weight: self.get(&format!("{prefix}.weight"), &[inp, out])?,
            bias: Some(self.get(&format!("{prefix}.bias"), &[out])?),
        })
    }
}

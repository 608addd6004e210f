//! The secure forward of a prepared model: the embedding, the blocks and
//! the head, one [`Op`] per stage.

use mpc_core::{Ctx, Fx, Op, Session, Shape, Share};

use super::block::{BlockStage, centred, linear};
use super::params::layer_norm_params;
use super::prepare::SecureModel;
use crate::error::{ModelError, Result};

/// Shares of one block's activations (`N × C` each), for stage-by-stage
/// checks. In the last block, `attn_out`, `residual`, `normed` and `output`
/// hold the class token's row only (`1 × C`): the classifier reads no
/// other, so its second half (LayerNorm and FFN) runs on that row alone.
#[derive(Debug, Clone)]
pub struct BlockTraceShare {
    /// The attention branch before the residual.
    pub attn_out: Share,
    /// `y = x + attn_out`.
    pub residual: Share,
    /// `z = LN_1(y)`.
    pub normed: Share,
    /// The block output.
    pub output: Share,
}

/// Shares of every stage's activations.
#[derive(Debug, Clone)]
pub struct TraceShare {
    /// After the tokenizer and embeddings.
    pub embedded: Share,
    /// One per block.
    pub blocks: Vec<BlockTraceShare>,
    /// The logits.
    pub logits: Share,
    /// This party's wall time of each stage, seconds: the embedding, each
    /// block, then the head (waiting on the peer included).
    pub stage_seconds: Vec<f64>,
    /// The process's CPU time in each stage, seconds: this party's work (and
    /// its peer's, when both run in this process), not other programs'
    /// ([`process_cpu_seconds`]).
    pub stage_cpu_seconds: Vec<f64>,
}

/// CPU time this process has used, seconds (every thread; 0 where the
/// platform has no process CPU clock).
pub fn process_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    }
    #[cfg(not(unix))]
    {
        0.0
    }
}

impl SecureModel {
    /// This party's share of the logits for a shared normalised CHW image.
    pub fn forward(&self, s: &mut Session, image: &Share) -> Result<Share> {
        Ok(self.forward_trace(s, image)?.logits)
    }

    /// Like [`SecureModel::forward`], keeping every stage's shares.
    ///
    /// Each stage (the embedding, each block, the head) is one [`Op`]
    /// composed of mpc-core's operators, so everything independent within a
    /// stage shares rounds (every head's attention, the branches of the
    /// FFN, a truncation beside the next LayerNorm's centring).
    pub fn forward_trace(&self, s: &mut Session, image: &Share) -> Result<TraceShare> {
        let cfg = &self.config;
        for i in 0..cfg.depth {
            let width = self.blocks[i].ffn_in.w.cols();
            let linearised = cfg.block_beta(i).is_some_and(|m| m.iter().any(|b| !b));
            if linearised && width != cfg.mlp_hidden + cfg.dim {
                return Err(ModelError::Secure(format!(
                    "block {i}: linearised tokens without a fused FFN"
                )));
            }
        }
        let (mut clock, mut cpu) = (std::time::Instant::now(), process_cpu_seconds());
        let mut stage_seconds = Vec::with_capacity(cfg.depth + 2);
        let mut stage_cpu_seconds = Vec::with_capacity(cfg.depth + 2);
        let mut lap = || {
            let (now, now_cpu) = (std::time::Instant::now(), process_cpu_seconds());
            stage_seconds.push((now - clock).as_secs_f64());
            stage_cpu_seconds.push(now_cpu - cpu);
            (clock, cpu) = (now, now_cpu);
        };
        let cols = Share::new(crate::plain::patches(cfg, image.as_slice())?);
        let mut x = s.run(|c| self.embed(c, &cols))?;
        lap();
        let mut inputs = Vec::with_capacity(cfg.depth + 1);
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let stage = BlockStage {
                cfg: self.config.clone(),
                params: self.params,
                blk: self.blocks[i].clone(),
                i,
                class_only: i + 1 == cfg.depth,
            };
            let (input, t, out) = s.run(|c| stage.run(c, &x))?;
            lap();
            inputs.push(input);
            blocks.push(t);
            x = out;
        }
        let (output, logits) = s.run(|c| self.head(c, &x))?;
        lap();
        inputs.push(output);
        let mut inputs = inputs.into_iter();
        let embedded = inputs.next().expect("the embedding");
        let blocks = blocks
            .into_iter()
            .zip(inputs)
            .map(|(b, output)| BlockTraceShare {
                attn_out: b.attn_out,
                residual: b.residual,
                normed: b.normed,
                output,
            })
            .collect();
        Ok(TraceShare {
            embedded,
            blocks,
            logits,
            stage_seconds,
            stage_cpu_seconds,
        })
    }

    /// Tokenizer (on the image's patch columns, `patches × patch_len`) and
    /// embeddings, returned at `f` bits with the product's truncation
    /// pending (the first block truncates it beside its LayerNorm).
    fn embed(&self, c: &mut Ctx<'_>, cols: &Share) -> Op<Fx> {
        let cfg = &self.config;
        let (patches, dim) = (cfg.num_patches(), cfg.dim);
        let cols = c.fx(cols.clone(), Shape::new(patches, cols.len() / patches));
        let class = c.fx(self.class_emb.clone(), Shape::new(1, dim));
        let pos = c.fx(
            self.positional_emb.clone(),
            Shape::new(cfg.num_tokens(), dim),
        );
        linear(c, &cols, &self.conv)
            .map(move |tokens| Fx::concat_rows(&[&class, &tokens]).add(&pos))
    }

    /// Final LayerNorm on the class token (the only row the classifier reads),
    /// then the classifier (which carries the norm's scale and shift), beside
    /// the truncation of the last block's output (for the trace).
    fn head(&self, c: &mut Ctx<'_>, x: &Fx) -> Op<(Share, Share)> {
        let p = layer_norm_params(&self.config, &self.params);
        let (xc, p) = centred(&x.row_range(0..1), p);
        let logits = c.layer_norm_linear(&xc, &self.fc.w, self.fc.bias.as_ref(), p);
        c.settle(x.clone())
            .join(logits)
            .map(|(x, logits)| (x.into_share(), logits.into_share()))
    }
}

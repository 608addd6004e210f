//! One transformer block of the secure forward: the attention branch with
//! its heads and projection, the FFN branch, and the residual stream.

use mpc_core::blocks::attention::ReluAttention;
use mpc_core::blocks::gelu::gelu_output_bits;
use mpc_core::blocks::layer_norm::{LayerNormParams, center_rows};
use mpc_core::compare::Relu;
use mpc_core::nonlinear::{ATTN_INV_FRAC, Domain, tile};
use mpc_core::{Ctx, Fx, MaskedWeight, Op, Shape, Share};
use std::sync::Arc;

use super::params::{SecureParams, layer_norm_params, one_round_relu};
use super::prepare::{PreparedBlock, PreparedLinear, Projection};
use crate::config::{AttnKind, GeluKind, ModelConfig};

/// One block's stages for the trace, before its output is truncated.
pub(super) struct BlockParts {
    pub(super) attn_out: Share,
    pub(super) residual: Share,
    pub(super) normed: Share,
}

/// What one block's operators need: the public configuration, the
/// settings and this party's prepared block (cheap to clone into the
/// continuations of the block's [`Op`]).
#[derive(Clone, Debug)]
pub(super) struct BlockStage {
    pub(super) cfg: Arc<ModelConfig>,
    pub(super) params: SecureParams,
    pub(super) blk: Arc<PreparedBlock>,
    pub(super) i: usize,
    /// The last block: after the attention, only the class token's row.
    pub(super) class_only: bool,
}

impl BlockStage {
    /// The block on `x` (the residual stream at `f` bits, its truncation
    /// pending): the truncated input, the block's stages and its output
    /// at `f` bits, its truncation pending. The input's truncation runs beside
    /// the attention (only the residual needs it), the residual's beside
    /// the second LayerNorm, and each LayerNorm truncates its centred rows
    /// in its own first opening. In the last block the residual, the
    /// second LayerNorm and the FFN take the class token's row only.
    pub(super) fn run(&self, c: &mut Ctx<'_>, x: &Fx) -> Op<(Share, BlockParts, Fx)> {
        let me = self.clone();
        let lnp = layer_norm_params(&self.cfg, &self.params);
        let (xc, pre) = centred(x, lnp);
        let xt = c.settle(x.clone());
        let rows = self.query_rows();
        xt.join(self.attention(c, xc, pre))
            .then(move |c, (x, attn)| {
                // the residual at the attention's scale (x lifted to it)
                let residual = x.row_range(0..rows).add(&attn);
                let (xc, lnp) = centred(&residual, lnp);
                let blk = &me.blk;
                let residual = c.settle(residual);
                let norm = c
                    .layer_norm_and_linear(
                        &xc,
                        (&blk.norm1.gamma, &blk.norm1.beta),
                        (&blk.ffn_in.w, blk.ffn_in.bias.as_ref()),
                        lnp,
                    )
                    .then(move |c, (normed, first)| c.settle(normed).join(me.ffn(c, &first)));
                residual
                    .join(norm)
                    .map(move |(residual, (normed, ffn))| (x, residual, normed, ffn))
            })
            .map(move |(x, residual, normed, ffn)| {
                let out = normed.add(&ffn);
                let x = x.into_share();
                let parts = BlockParts {
                    attn_out: residual.share().sub(&x.slice(0..residual.len())),
                    residual: residual.into_share(),
                    normed: normed.into_share(),
                };
                (x, parts, out)
            })
    }

    /// Attention branch: LayerNorm and qkv (one operator), then every head
    /// by the library's operator for its kind, all heads side by side
    /// (`Op::all`), then the projection; returned at `f` bits with its
    /// truncation pending: `f` bits of it (the projection after the heads)
    /// or `f + ATTN_INV_FRAC` (folded into the heads' values,
    /// [`BlockStage::folded_head`]). In the last block only the class
    /// token's query attends (the keys and values are every token's), so
    /// the output is its row only.
    fn attention(&self, c: &mut Ctx<'_>, xc: Fx, lnp: LayerNormParams) -> Op<Fx> {
        let queries = self.query_rows();
        let qkv = &self.blk.qkv;
        let me = self.clone();
        c.layer_norm_linear(&xc, &qkv.w, qkv.bias.as_ref(), lnp)
            .then(move |c, qkv| match &me.blk.proj {
                Projection::Whole(proj) => {
                    let proj = proj.clone();
                    let heads = (0..me.cfg.heads).map(|h| me.head(c, &qkv, h)).collect();
                    // token t, head h → columns h·d..(h+1)·d
                    Op::all(heads).then(move |c, outs| linear(c, &Fx::concat_cols(&outs), &proj))
                }
                Projection::PerHead { rows, scale, bias } => {
                    let bias = bias.as_ref().map(|b| {
                        c.fx(
                            Share::new(tile(b.as_slice(), queries)),
                            Shape::new(queries, b.len()),
                        )
                    });
                    let mut heads: Vec<Op<Fx>> = rows
                        .iter()
                        .map(|(h, w)| me.folded_head(c, &qkv, *h, w))
                        .collect();
                    if let Some((hs, w)) = scale {
                        heads.push(me.scale_heads_projected(c, &qkv, hs, w));
                    }
                    Op::all(heads).map(move |outs| {
                        let mut outs = outs.into_iter();
                        let first = outs.next().expect("a head");
                        let sum = outs.fold(first, |sum, o| sum.add(&o));
                        match bias {
                            Some(b) => b.add(&sum),
                            None => sum,
                        }
                    })
                }
            })
    }

    /// The ScaleAttn heads `hs` side by side, their outputs (n × d each)
    /// side by side projected by their stacked rows `w` of the output
    /// projection in one product (n × C, untruncated, lifted by
    /// `ATTN_INV_FRAC` bits to the attending heads' scale).
    fn scale_heads_projected(
        &self,
        c: &mut Ctx<'_>,
        qkv: &Fx,
        hs: &[usize],
        w: &MaskedWeight,
    ) -> Op<Fx> {
        let outs = hs
            .iter()
            .map(|&h| {
                let [q, k, v] = self.head_columns(qkv, h);
                c.scale_attn(&q, &k, &v, self.cfg.num_tokens())
            })
            .collect();
        let w = w.clone();
        // token t, j-th ScaleAttn head → columns j·d..(j+1)·d
        Op::all(outs)
            .then(move |c, outs| c.weight_matmul(&Fx::concat_cols(&outs), &w))
            .map(|y| y.lift(ATTN_INV_FRAC))
    }

    /// Head `h` with its rows `w` of the output projection folded in (n × C
    /// at `f` bits, `f + ATTN_INV_FRAC` pending). A ReLU-softmax or
    /// Softmax head attends over the values `V·W_h` (computed beside the
    /// scores' comparison) and leaves the row scaling's product pending; a
    /// ScaleAttn head (in a block of ScaleAttn heads only, see
    /// [`stacked_heads`](super::prepare::stacked_heads)) applies its attention matrix to `V·W_h`, both
    /// computed side by side, in one product left untruncated (lifted by
    /// `ATTN_INV_FRAC` bits to the attending heads' scale): 3 rounds.
    /// Other ScaleAttn heads go through [`BlockStage::scale_heads_projected`].
    fn folded_head(&self, c: &mut Ctx<'_>, qkv: &Fx, h: usize, w: &MaskedWeight) -> Op<Fx> {
        let [q, k, v] = self.head_columns(qkv, h);
        let p = self.params;
        match self.cfg.attention[self.i][h] {
            AttnKind::ScaleAttn => {
                let vw = c.weight_matmul(&v, w).settled();
                c.scale_attn_weights(&q, &k, self.cfg.num_tokens())
                    .join(vw)
                    .then(move |c, (a, vw)| c.matmul(&a, &vw))
                    .map(|y| y.lift(ATTN_INV_FRAC))
            }
            // V·W_h's product beside the scores, its truncation beside
            // the first round on them (the one-round ReLU's only round)
            kind => {
                let rp = self.relu_attention_params();
                let vw = c.weight_matmul(&v, w);
                c.attention_scores(&q, &k).join(vw).then(move |c, (s, vw)| {
                    let vw = c.settle(vw);
                    if kind == AttnKind::Softmax {
                        c.softmax_attention(s, vw, p.score_bits)
                    } else {
                        c.relu_attention(&s, vw, rp)
                    }
                })
            }
        }
    }

    /// The tokens whose queries attend: the class token's alone in the
    /// last block (nothing reads the other rows after it), else all.
    fn query_rows(&self) -> usize {
        if self.class_only {
            1
        } else {
            self.cfg.num_tokens()
        }
    }

    /// The ReLU-softmax heads' settings: the scores' comparison (in one
    /// round up to [`SecureParams::relu_one_round_scores`]), the model's eps.
    fn relu_attention_params(&self) -> ReluAttention {
        ReluAttention {
            relu: Relu {
                bits: self.params.score_bits,
                coarse: self.params.score_coarse,
                one_round: one_round_relu(&self.cfg, &self.params),
            },
            eps: f64::from(self.cfg.relu_softmax_eps),
            row_sum: self.params.row_sums,
        }
    }

    /// Head `h` of the attention on the qkv rows (N × 3C): ReLU-softmax,
    /// Softmax or ScaleAttn, each the mpc-core operator of that name, at
    /// `f` bits.
    fn head(&self, c: &mut Ctx<'_>, qkv: &Fx, h: usize) -> Op<Fx> {
        let [q, k, v] = self.head_columns(qkv, h);
        let p = self.params;
        match self.cfg.attention[self.i][h] {
            AttnKind::ScaleAttn => c.scale_attn(&q, &k, &v, self.cfg.num_tokens()),
            AttnKind::Softmax => c
                .attention_scores(&q, &k)
                .then(move |c, s| c.softmax_attention(s, Op::ready(v), p.score_bits))
                .settled(),
            AttnKind::ReluSoftmax => {
                let rp = self.relu_attention_params();
                c.attention_scores(&q, &k)
                    .then(move |c, s| c.relu_attention(&s, Op::ready(v), rp))
                    .settled()
            }
        }
    }

    /// Head `h`'s queries (the attending rows' only), keys and values
    /// (n × d each) from the qkv rows (n × 3C; output channel `s·C + h·d +
    /// j` for s = q/k/v).
    fn head_columns(&self, qkv: &Fx, h: usize) -> [Fx; 3] {
        let (dim, d) = (self.cfg.dim, self.cfg.head_dim());
        let rows: Vec<usize> = (0..qkv.rows()).collect();
        let column = |sel: usize| qkv.gather(&rows, sel * dim + h * d..sel * dim + (h + 1) * d);
        [
            column(0).row_range(0..self.query_rows()),
            column(1),
            column(2),
        ]
    }

    /// FFN branch, given the first layer's output for the first `n` tokens
    /// (every token, or in the last block the class token; computed with
    /// `norm1`, see [`BlockStage::run`]): GeLU rows through GeLU and
    /// linear2; linearised rows (MPCViT+ `beta = 0`) through a ReLU of the
    /// fused layer, beside them. Returned at `f` bits with `2f − 5`
    /// pending: either GeLU reads its input at `f − 4` bits and its output
    /// goes into linear2 untruncated, at `2f − 5` bits
    /// ([`GELU_INPUT_FRAC_DROP`]), and the ReLU's rows are lifted to that
    /// scale.
    fn ffn(&self, c: &mut Ctx<'_>, first: &Fx) -> Op<Fx> {
        let cfg = &self.cfg;
        let (dim, m, n) = (cfg.dim, cfg.mlp_hidden, first.rows());
        let mask = cfg.block_beta(self.i);
        let keep = |t: usize| mask.is_none_or(|m| m[t]);
        let gelu_rows: Vec<usize> = (0..n).filter(|&t| keep(t)).collect();
        let lin_rows: Vec<usize> = (0..n).filter(|&t| !keep(t)).collect();
        // `first` holds [z·W1' | z·F'] per token, its last truncation
        // pending (the GeLU's or ReLU's opening performs it); the GeLU
        // reads it at GELU_INPUT_FRAC_DROP fewer bits
        let in_frac = first.frac() - GELU_INPUT_FRAC_DROP;
        let linearised = if lin_rows.is_empty() {
            Op::ready(None)
        } else {
            let y = first.gather(&lin_rows, m..m + dim);
            c.relu(&y, Relu::exact(self.params.relu_bits))
                .map(move |r| Some(r.lift(gelu_output_bits(in_frac))))
        };
        let gelu = if gelu_rows.is_empty() {
            Op::ready(None)
        } else {
            let h = first.gather(&gelu_rows, 0..m).at_frac(in_frac);
            let g = match cfg.gelu {
                GeluKind::Quad => c.gelu_quad(&h),
                _ => c.gelu(&h),
            };
            let linear2 = self.blk.linear2.clone();
            g.then(move |c, g| linear(c, &g.whole(), &linear2))
                .map(Some)
        };
        linearised.join(gelu).map(move |(r, y)| {
            let parts: Vec<(&[usize], &Fx)> =
                [(&lin_rows[..], r.as_ref()), (&gelu_rows[..], y.as_ref())]
                    .into_iter()
                    .filter_map(|(at, p)| p.map(|p| (at, p)))
                    .collect();
            Fx::scatter_rows(n, &parts)
        })
    }
}

/// Fractional bits below `f` at which the GeLU (quad or erf) reads its
/// input so that its output goes into linear2 untruncated
/// ([`Ctx::gelu_quad`], [`Ctx::gelu`] of an input read at `f − 4` bits): the quad GeLU then
/// costs one round instead of two, the erf GeLU two instead of three, the
/// input keeps 2^−12 resolution, and the block's output (at `3f − 5` bits,
/// times the LayerNorm centring's `2^⌈log2 C⌉`) stays exact while `|x| <
/// 2^11`.
pub const GELU_INPUT_FRAC_DROP: u32 = 4;

/// The centred rows of a residual-stream value `x` (rows × C) for a
/// LayerNorm, scaled by `k = C / 2^⌈log2 C⌉` ∈ (1/2, 1]: `center_rows`
/// gives `C·(x − μ)` exactly, and the division by `2^⌈log2 C⌉` joins the
/// pending truncation ([`Fx::scaled`] by a power of two; the LayerNorm's
/// first opening performs it), so no scale factor multiplies the rows on
/// the way (which would cost the ring 14 bits). With it, the LayerNorm
/// settings for rows scaled by `k`: eps and the variance domain times
/// `k²`, so that `LN(k·(x − μ)) = LN(x − μ)`.
pub(super) fn centred(x: &Fx, p: LayerNormParams) -> (Fx, LayerNormParams) {
    let (rows, dim) = (x.rows(), x.cols());
    let b = dim.next_power_of_two().trailing_zeros();
    let k2 = (dim as f64 / f64::from(1u32 << b)).powi(2);
    let scaled = LayerNormParams {
        eps: p.eps * k2,
        var: Domain {
            lo: p.var.lo * k2,
            hi: p.var.hi * k2,
        },
    };
    let xc = x
        .like(center_rows(x.share(), rows, dim))
        .scaled(1.0 / f64::from(1u32 << b));
    (xc, scaled)
}

/// `x·W + b` (the product untruncated, the bias lifted to it).
pub(super) fn linear(c: &mut Ctx<'_>, x: &Fx, l: &PreparedLinear) -> Op<Fx> {
    let bias = l.bias.as_ref().map(|b| {
        let rows = x.rows();
        c.fx(
            Share::new(tile(b.as_slice(), rows)),
            Shape::new(rows, b.len()),
        )
    });
    c.weight_matmul(x, &l.w).map(move |y| match bias {
        Some(b) => y.add(&b),
        None => y,
    })
}

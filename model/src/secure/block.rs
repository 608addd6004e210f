//! One transformer block of the secure forward: the attention branch with
//! its heads and projection, the FFN branch, and the residual stream.

use mpc_core::arith::Untruncated;
use mpc_core::blocks::attention::ReluAttention;
use mpc_core::blocks::layer_norm::{LayerNormParams, center_rows};
use mpc_core::nonlinear::{ATTN_INV_FRAC, Domain, tile};
use mpc_core::{Ctx, MaskedWeight, Op, Share};
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
    /// The block on `x_raw` (the residual stream at `2f` bits, truncation
    /// pending): the truncated input, the block's stages and its output
    /// at `2f` bits, truncation pending. The input's truncation runs beside
    /// the attention (only the residual needs it), the residual's beside
    /// the second LayerNorm, and each LayerNorm truncates its centred rows
    /// in its own first opening. In the last block the residual, the
    /// second LayerNorm and the FFN take the class token's row only.
    pub(super) fn run(
        &self,
        c: &mut Ctx<'_>,
        x_raw: &Untruncated,
    ) -> Op<(Share, BlockParts, Untruncated)> {
        let (n, dim) = (self.cfg.num_tokens(), self.cfg.dim);
        let (me, me2) = (self.clone(), self.clone());
        let lnp = layer_norm_params(&self.cfg, &self.params);
        let (xc, pre) = centred(&x_raw.raw, n, dim, x_raw.shift, lnp);
        let x = x_raw.clone().truncate(c);
        let rows = if self.class_only { 1 } else { n };
        x.join(self.attention(c, xc, pre))
            .then(move |c, (x, (attn_raw, extra))| {
                // the residual at f + extra bits (extra = f, or f + ATTN_INV_FRAC when folded)
                let kept = |s: &Share| s.slice(0..rows * dim);
                let raw = kept(&x).scale_int(1 << extra).add(&kept(&attn_raw));
                let (xc, lnp) = centred(&raw, rows, dim, extra, lnp);
                let blk = &me.blk;
                let residual = c.trunc(&raw, extra);
                let norm = c
                    .layer_norm_and_linear(
                        xc,
                        (&blk.norm1.gamma, &blk.norm1.beta),
                        (&blk.ffn_in.w, blk.ffn_in.bias.as_ref()),
                        rows,
                        dim,
                        lnp,
                    )
                    .then(move |c, (normed, first)| {
                        normed.truncate(c).join(me2.ffn(c, &first, rows))
                    });
                residual
                    .join(norm)
                    .map(move |(residual, (normed, ffn))| (x, residual, normed, ffn))
            })
            .map(move |(x, residual, normed, ffn)| {
                let out = Untruncated {
                    raw: normed.scale_int(1 << ffn.shift).add(&ffn.raw),
                    shift: ffn.shift,
                };
                let parts = BlockParts {
                    attn_out: residual.sub(&x.slice(0..residual.len())),
                    residual,
                    normed,
                };
                (x, parts, out)
            })
    }

    /// Attention branch: LayerNorm and qkv (one operator), then every head
    /// by the library's operator for its kind, all heads side by side
    /// (`Op::all`), then the projection; returned untruncated with its
    /// scale above `f` bits: `f` (the projection after the heads) or `f +
    /// ATTN_INV_FRAC` (folded into the heads' values, [`BlockStage::folded_head`]).
    /// In the last block only the class token's query attends (the keys
    /// and values are every token's), so the output is its row only.
    fn attention(
        &self,
        c: &mut Ctx<'_>,
        xc: Untruncated,
        lnp: LayerNormParams,
    ) -> Op<(Share, u32)> {
        let (n, dim) = (self.cfg.num_tokens(), self.cfg.dim);
        let queries = self.query_rows();
        let qkv = &self.blk.qkv;
        let me = self.clone();
        c.layer_norm_linear(xc, &qkv.w, qkv.bias.as_ref(), n, dim, lnp)
            .then(move |c, qkv| {
                let f = c.frac_bits();
                match &me.blk.proj {
                    Projection::Whole(proj) => {
                        let proj = proj.clone();
                        let heads = (0..me.cfg.heads).map(|h| me.head(c, &qkv, h)).collect();
                        Op::all(heads).then(move |c, outs| {
                            let d = me.cfg.head_dim();
                            // Concatenate heads: token t, head h → columns h·d..(h+1)·d.
                            let mut concat = vec![0u64; queries * dim];
                            for (h, o) in outs.iter().enumerate() {
                                for t in 0..queries {
                                    concat[t * dim + h * d..t * dim + (h + 1) * d]
                                        .copy_from_slice(&o.as_slice()[t * d..(t + 1) * d]);
                                }
                            }
                            linear_raw(c, &Share::new(concat), queries, &proj, 0)
                                .map(move |y| (y, f))
                        })
                    }
                    Projection::PerHead { rows, scale, bias } => {
                        let s = f + ATTN_INV_FRAC;
                        let bias = bias
                            .as_ref()
                            .map(|b| Share::new(tile(b.as_slice(), queries)).scale_int(1 << s));
                        let mut heads: Vec<Op<Share>> = rows
                            .iter()
                            .map(|(h, w)| me.folded_head(c, &qkv, *h, w))
                            .collect();
                        if let Some((hs, w)) = scale {
                            heads.push(me.scale_heads_projected(c, &qkv, hs, w));
                        }
                        Op::all(heads).map(move |outs| {
                            let mut sum = bias.unwrap_or_else(|| Share::zeros(queries * dim));
                            for o in &outs {
                                sum = sum.add(o);
                            }
                            (sum, s)
                        })
                    }
                }
            })
    }

    /// The ScaleAttn heads `hs` side by side, their outputs (n × d each)
    /// side by side projected by their stacked rows `w` of the output
    /// projection in one product (n × C at `2f + ATTN_INV_FRAC` bits,
    /// untruncated, `·2^ATTN_INV_FRAC` to match the attending heads).
    fn scale_heads_projected(
        &self,
        c: &mut Ctx<'_>,
        qkv: &Share,
        hs: &[usize],
        w: &MaskedWeight,
    ) -> Op<Share> {
        let cfg = &self.cfg;
        let (n, dim, d, rows) = (cfg.num_tokens(), cfg.dim, cfg.head_dim(), self.query_rows());
        let outs = hs
            .iter()
            .map(|&h| {
                let [q, k, v] = head_columns(qkv, n, dim, d, h);
                c.scale_attn(&q.slice(0..rows * d), &k, &v, rows, n, d, n)
            })
            .collect();
        let (w, k) = (w.clone(), hs.len());
        Op::all(outs)
            .then(move |c, outs| {
                // token t, j-th ScaleAttn head → columns j·d..(j+1)·d
                let mut side = vec![0u64; rows * k * d];
                for (j, o) in outs.iter().enumerate() {
                    for t in 0..rows {
                        side[t * k * d + j * d..t * k * d + (j + 1) * d]
                            .copy_from_slice(&o.as_slice()[t * d..(t + 1) * d]);
                    }
                }
                c.weight_matmul_raw(&Share::new(side), rows, &w)
            })
            .map(|y| y.scale_int(1 << ATTN_INV_FRAC))
    }

    /// Head `h` with its rows `w` of the output projection folded in (n × C
    /// at `2f + ATTN_INV_FRAC` bits, untruncated). A ReLU-softmax or
    /// Softmax head attends over the values `V·W_h` (computed beside the
    /// scores' comparison) and leaves the row scaling's product pending; a
    /// ScaleAttn head (in a block of ScaleAttn heads only, see
    /// [`stacked_heads`](super::prepare::stacked_heads)) applies its attention matrix to `V·W_h`, both
    /// computed side by side, in one product left untruncated: 3 rounds.
    /// Other ScaleAttn heads go through [`BlockStage::scale_heads_projected`].
    fn folded_head(&self, c: &mut Ctx<'_>, qkv: &Share, h: usize, w: &MaskedWeight) -> Op<Share> {
        let cfg = &self.cfg;
        let (n, dim, d, rows) = (cfg.num_tokens(), cfg.dim, cfg.head_dim(), self.query_rows());
        let [q, k, v] = head_columns(qkv, n, dim, d, h);
        let q = q.slice(0..rows * d);
        let p = self.params;
        let w = w.clone();
        match cfg.attention[self.i][h] {
            AttnKind::ScaleAttn => {
                let vw = c.weight_matmul(&v, n, &w);
                c.scale_attn_weights(&q, &k, rows, n, d, n)
                    .join(vw)
                    .then(move |c, (a, vw)| c.matmul_raw(&a, &vw, rows, n, dim))
                    .map(|y| y.scale_int(1 << ATTN_INV_FRAC))
            }
            // V·W_h's product beside the scores, its truncation beside
            // the first round on them (the one-round ReLU's only round)
            kind => {
                let (rp, f) = (self.relu_attention_params(), c.frac_bits());
                let vw = c.weight_matmul_raw(&v, n, &w);
                c.attention_scores_untruncated(&q, &k, rows, n, d)
                    .join(vw)
                    .then(move |c, (s, vw)| {
                        let vw = c.trunc(&vw, f);
                        if kind == AttnKind::Softmax {
                            c.softmax_attention_untruncated(s, vw, rows, n, dim, p.score_bits)
                        } else {
                            c.relu_attention_untruncated(s, vw, rows, n, dim, rp)
                        }
                    })
                    .map(|y| y.raw)
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
            bits: self.params.score_bits,
            coarse: self.params.score_coarse,
            one_round: one_round_relu(&self.cfg, &self.params),
            eps: f64::from(self.cfg.relu_softmax_eps),
            row_sum: self.params.row_sums,
        }
    }

    /// Head `h` of the attention on the qkv rows (N × 3C): ReLU-softmax,
    /// Softmax or ScaleAttn, each the mpc-core operator of that name.
    fn head(&self, c: &mut Ctx<'_>, qkv: &Share, h: usize) -> Op<Share> {
        let cfg = &self.cfg;
        let (n, dim, d, rows) = (cfg.num_tokens(), cfg.dim, cfg.head_dim(), self.query_rows());
        let [q, k, v] = head_columns(qkv, n, dim, d, h);
        let q = q.slice(0..rows * d);
        let p = self.params;
        match cfg.attention[self.i][h] {
            AttnKind::ScaleAttn => c.scale_attn(&q, &k, &v, rows, n, d, n),
            AttnKind::Softmax => c
                .attention_scores_untruncated(&q, &k, rows, n, d)
                .then(move |c, s| c.softmax_attention(s, &v, rows, n, d, p.score_bits)),
            AttnKind::ReluSoftmax => {
                let rp = self.relu_attention_params();
                c.attention_scores_untruncated(&q, &k, rows, n, d)
                    .then(move |c, s| c.relu_attention(s, &v, rows, n, d, rp))
            }
        }
    }

    /// FFN branch, given the first layer's output for the first `n` tokens
    /// (every token, or in the last block the class token; computed with
    /// `norm1`, see [`BlockStage::run`]): GeLU rows through GeLU and
    /// linear2; linearised rows (MPCViT+ `beta = 0`) through a ReLU of the
    /// fused layer, beside them. Returned untruncated at `3f − 5` bits:
    /// either GeLU reads its input at `f − 4` bits and its output goes into
    /// linear2 untruncated at `2f − 5` ([`GELU_INPUT_FRAC_DROP`]).
    fn ffn(&self, c: &mut Ctx<'_>, first: &Untruncated, n: usize) -> Op<Untruncated> {
        let cfg = &self.cfg;
        let (dim, m) = (cfg.dim, cfg.mlp_hidden);
        let f = c.frac_bits();
        let width = self.blk.ffn_in.w.cols();
        let mask = cfg.block_beta(self.i);
        let keep = |t: usize| mask.is_none_or(|m| m[t]);
        let gelu_rows: Vec<usize> = (0..n).filter(|&t| keep(t)).collect();
        let lin_rows: Vec<usize> = (0..n).filter(|&t| !keep(t)).collect();
        // `first` holds [z·W1' | z·F'] per token, its last truncation
        // pending (the GeLU's or ReLU's opening performs it).
        // the output's scale above f: the GeLU's untruncated output (at
        // 2·in_frac + 3 bits, so 2·in_frac + 3 − f above f) plus linear2's
        // weights' f
        let in_frac = f - GELU_INPUT_FRAC_DROP;
        let shift = 2 * in_frac + 3;
        let linearised = if lin_rows.is_empty() {
            Op::ready(Share::zeros(0))
        } else {
            let y = first.gather(&lin_rows, width, m..m + dim);
            c.relu_truncating(&y, self.params.relu_bits, 0)
                .map(move |r| r.scale_int(1 << shift))
        };
        let gelu = if gelu_rows.is_empty() {
            Op::ready(Share::zeros(0))
        } else {
            let h = first.gather(&gelu_rows, width, 0..m);
            let g = match cfg.gelu {
                GeluKind::Quad => c.gelu_quad_pending(h, in_frac),
                _ => c.gelu_pending(h, in_frac),
            }
            .map(move |g| {
                debug_assert_eq!(g.shift + f, shift);
                g.raw
            });
            let (rows, linear2) = (gelu_rows.len(), self.blk.linear2.clone());
            g.then(move |c, g| linear_raw(c, &g, rows, &linear2, shift - f))
        };
        linearised.join(gelu).map(move |(r, y)| {
            let mut out = vec![0u64; n * dim];
            for (j, &t) in lin_rows.iter().enumerate() {
                out[t * dim..(t + 1) * dim].copy_from_slice(&r.as_slice()[j * dim..(j + 1) * dim]);
            }
            for (j, &t) in gelu_rows.iter().enumerate() {
                out[t * dim..(t + 1) * dim].copy_from_slice(&y.as_slice()[j * dim..(j + 1) * dim]);
            }
            Untruncated {
                raw: Share::new(out),
                shift,
            }
        })
    }
}

/// Fractional bits below `f` at which the GeLU (quad or erf) reads its
/// input so that its output goes into linear2 untruncated
/// ([`Ctx::gelu_quad_pending`], [`Ctx::gelu_pending`]): the quad GeLU then
/// costs one round instead of two, the erf GeLU two instead of three, the
/// input keeps 2^−12 resolution, and the block's output (at `3f − 5` bits,
/// times the LayerNorm centring's `2^⌈log2 C⌉`) stays exact while `|x| <
/// 2^11`.
pub const GELU_INPUT_FRAC_DROP: u32 = 4;

/// The centred rows of a residual-stream value `raw` (rows × C at `f +
/// extra` bits) for a LayerNorm, scaled by `k = C / 2^⌈log2 C⌉` ∈ (1/2, 1]:
/// `center_rows` gives `C·(x − μ)` exactly, and the division by
/// `2^⌈log2 C⌉` joins the pending truncation (the LayerNorm's first opening
/// performs it), so no scale factor multiplies the rows on the way (which
/// would cost the ring 14 bits). With it, the LayerNorm settings for rows
/// scaled by `k`: eps and the variance domain times `k²`, so that
/// `LN(k·(x − μ)) = LN(x − μ)`.
pub(super) fn centred(
    raw: &Share,
    rows: usize,
    dim: usize,
    extra: u32,
    p: LayerNormParams,
) -> (Untruncated, LayerNormParams) {
    let b = dim.next_power_of_two().trailing_zeros();
    let k2 = (dim as f64 / f64::from(1u32 << b)).powi(2);
    let scaled = LayerNormParams {
        eps: p.eps * k2,
        var: Domain {
            lo: p.var.lo * k2,
            hi: p.var.hi * k2,
        },
    };
    let xc = Untruncated {
        raw: center_rows(raw, rows, dim),
        shift: extra + b,
    };
    (xc, scaled)
}

/// Head `h`'s queries, keys and values (n × d each) from the qkv rows
/// (n × 3C; output channel `s·C + h·d + j` for s = q/k/v).
fn head_columns(qkv: &Share, n: usize, dim: usize, d: usize, h: usize) -> [Share; 3] {
    let column = |sel: usize| -> Share {
        let q = qkv.as_slice();
        let mut m = Vec::with_capacity(n * d);
        for t in 0..n {
            let start = t * 3 * dim + sel * dim + h * d;
            m.extend_from_slice(&q[start..start + d]);
        }
        Share::new(m)
    };
    [column(0), column(1), column(2)]
}

/// `x·W + b` for `m` rows of `x` at `f + extra` bits, untruncated (`2f +
/// extra` bits; the bias is shifted up to match).
pub(super) fn linear_raw(
    c: &mut Ctx<'_>,
    x: &Share,
    m: usize,
    l: &PreparedLinear,
    extra: u32,
) -> Op<Share> {
    let f = c.frac_bits();
    let bias = l
        .bias
        .as_ref()
        .map(|b| Share::new(tile(b.as_slice(), m)).scale_int(1 << (f + extra)));
    c.weight_matmul_raw(x, m, &l.w).map(move |y| match bias {
        Some(b) => y.add(&b),
        None => y,
    })
}

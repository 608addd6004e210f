//! The MPCViT network in candle, with the `model` crate's state-dict names and layouts.
//!
//! The forward is the paper's CCT layout (see the `model` crate):
//!
//! ```text
//! tokens = patches(x) · convᵀ + b              (conv with kernel = stride = p)
//! x      = [class_emb ; tokens] + positional_emb
//! block:  y = x + Proj(Attn(LN_pre(x)));  z = LN_1(y);  out = z + FFN(z)
//! head:   features = LN(x);  logits = fc(features[:, 0])
//! ```
//!
//! Per head the attention weights are, with `S = Q·Kᵀ/√d` and `N` tokens:
//! Softmax `softmax(S)`; ReLU-Softmax `ReLU(S)/(Σ ReLU(S) + eps)`; ScaleAttn `S/N`; and
//! while searching the paper's relaxation `alpha·RS + (1 − alpha)·Scale` with a learnable
//! `alpha` of shape `[1, H, 1, 1]` per block. The FFN is `Linear2(GeLU(Linear1(z)))`
//! (exact erf GeLU), or with MPCViT+'s per-token `beta` (`[1, N, 1]`) the paper's
//! `h = Linear1(z); h = beta·GeLU(h) + (1 − beta)·h; o = Linear2(h);
//! o = (1 − beta)·ReLU(o) + beta·o`, which for a binary beta is the `model` crate's
//! GeLU path (beta = 1) or fused linear path `ReLU(W2·W1·z + W2·b1 + b2)` (beta = 0).
//!
//! Parameters are [`Var`]s when trainable and plain tensors when frozen (a teacher), so a
//! frozen network builds no autograd graph.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use model::weights::{
    BlockWeights, LayerNorm as MLayerNorm, Linear as MLinear, PatchConv, block_name,
};
use model::{AttnKind, GeluKind, Model, ModelConfig, Weights};

use crate::Result;
use crate::data::{Rng, rng_for};
use crate::ops::{AttentionOp, BetaMix, GeluOp, LayerNormOp, LinearOp};

/// The two forward outputs the trainer uses.
#[derive(Debug, Clone)]
pub struct Output {
    /// `[B, classes]`.
    pub logits: Tensor,
    /// The final LayerNorm of every token, `[B, N, C]` (the paper's token features for
    /// distillation).
    pub features: Tensor,
}

#[derive(Debug, Clone)]
struct Lin {
    w: Tensor,
    b: Option<Tensor>,
}

impl Lin {
    /// `x·Wᵀ + b` over the last axis of `x` (rank ≥ 2), as one matrix product
    /// ([`LinearOp`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        Ok(match &self.b {
            Some(b) => x.apply_op3(&self.w, b, LinearOp)?,
            None => x.apply_op2(&self.w, LinearOp)?,
        })
    }
}

#[derive(Debug, Clone)]
struct Ln {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl Ln {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let op = LayerNormOp {
            eps: self.eps as f32,
        };
        Ok(x.contiguous()?.apply_op3(&self.w, &self.b, op)?)
    }
}

/// How a block turns scores into attention weights: per head, Softmax (`softmax[h]`) or
/// `alpha·RS + (1 − alpha)·Scale` (alpha 1/0 for a fixed table, learnable when searched).
#[derive(Debug, Clone)]
struct Mix {
    softmax: Vec<bool>,
    /// `[1, H, 1, 1]`.
    alpha: Tensor,
    searched: bool,
}

#[derive(Debug, Clone)]
struct Block {
    pre_norm: Ln,
    qkv: Lin,
    proj: Lin,
    norm1: Ln,
    linear1: Lin,
    linear2: Lin,
    mix: Mix,
    /// `[1, N, 1]`: learnable (search) or constant 0/1 (MPCViT+), `None` for a plain FFN.
    beta: Option<Tensor>,
}

/// What is learnable besides the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchSpace {
    /// A relaxed per-head `alpha` in every block (the attention table of the
    /// configuration is then ignored).
    pub alpha: bool,
    /// A relaxed per-token `beta` in every block (MPCViT+; the configuration's beta masks
    /// are then ignored).
    pub beta: bool,
}

/// The network: its configuration, its parameters (by state-dict name) and whether they
/// are trainable.
#[derive(Debug, Clone)]
pub struct Vit {
    config: ModelConfig,
    space: SearchSpace,
    /// Every parameter with its state-dict name, in the `model` crate's order.
    params: Vec<(String, Tensor)>,
    /// The trainable ones (empty when frozen).
    vars: Vec<(String, Var)>,
    conv_w: Tensor,
    conv_b: Tensor,
    class_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<Block>,
    norm: Ln,
    fc: Lin,
}

/// Builds parameters, recording names and (when trainable) the [`Var`]s.
struct Builder {
    trainable: bool,
    params: Vec<(String, Tensor)>,
    vars: Vec<(String, Var)>,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
        let t = if self.trainable {
            let v = Var::from_tensor(&t)?;
            let t = v.as_tensor().clone();
            self.vars.push((name.clone(), v));
            t
        } else {
            t
        };
        self.params.push((name, t.clone()));
        Ok(t)
    }

    fn lin(&mut self, prefix: &str, l: &MLinear) -> Result<Lin> {
        let w = self.add(
            format!("{prefix}.weight"),
            &[l.out_features, l.in_features],
            l.weight.clone(),
        )?;
        let b = match &l.bias {
            Some(b) => Some(self.add(format!("{prefix}.bias"), &[l.out_features], b.clone())?),
            None => None,
        };
        Ok(Lin { w, b })
    }

    fn ln(&mut self, prefix: &str, l: &MLayerNorm) -> Result<Ln> {
        let n = l.weight.len();
        Ok(Ln {
            w: self.add(format!("{prefix}.weight"), &[n], l.weight.clone())?,
            b: self.add(format!("{prefix}.bias"), &[n], l.bias.clone())?,
            eps: f64::from(l.eps),
        })
    }
}

/// Standard normal draws (Box–Muller) from the seeded generator.
fn normal(rng: &mut Rng) -> f32 {
    use rand_core::RngCore;
    let u = |r: &mut Rng| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let (u1, u2) = (u(rng), u(rng));
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// PyTorch's `trunc_normal_(std = s)` (truncated to the absolute interval `[-2, 2]`).
fn trunc_normal(rng: &mut Rng, len: usize, std: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            loop {
                let v = std * normal(rng);
                if (-2.0..=2.0).contains(&v) {
                    break v;
                }
            }
        })
        .collect()
}

/// The paper's initialisation (`TransformerClassifier.init_weight`, the tokenizer's
/// `kaiming_normal_`): Linear weights `trunc_normal(0.02)` and zero biases, LayerNorm
/// ones/zeros, conv `N(0, 2/fan_in)` with zero bias, class token zeros, positional
/// embedding `trunc_normal(0.2)`. Deterministic in `seed`.
pub fn init_weights(config: &ModelConfig, seed: u64) -> Weights {
    let rng = &mut rng_for(seed, 0x1417);
    let (c, m, n, p, k) = (
        config.dim,
        config.mlp_hidden,
        config.num_tokens(),
        config.patch_size,
        config.in_channels,
    );
    let eps = config.layer_norm_eps;
    let lin = |rng: &mut Rng, out: usize, inp: usize, bias: bool| MLinear {
        out_features: out,
        in_features: inp,
        weight: trunc_normal(rng, out * inp, 0.02),
        bias: bias.then(|| vec![0.0; out]),
    };
    let ln = || MLayerNorm {
        weight: vec![1.0; c],
        bias: vec![0.0; c],
        eps,
    };
    let fan_in = (k * p * p) as f32;
    let conv = PatchConv {
        weight: (0..c * k * p * p)
            .map(|_| normal(rng) * (2.0 / fan_in).sqrt())
            .collect(),
        bias: vec![0.0; c],
    };
    let positional_emb = trunc_normal(rng, n * c, 0.2);
    let blocks = (0..config.depth)
        .map(|_| BlockWeights {
            pre_norm: ln(),
            qkv: lin(rng, 3 * c, c, false),
            proj: lin(rng, c, c, true),
            norm1: ln(),
            linear1: lin(rng, m, c, true),
            linear2: lin(rng, c, m, true),
        })
        .collect();
    Weights {
        conv,
        class_emb: vec![0.0; c],
        positional_emb,
        blocks,
        norm: ln(),
        fc: lin(rng, config.num_classes, c, true),
    }
}

impl Vit {
    /// A network with the paper's initialisation ([`init_weights`]).
    pub fn new(
        config: &ModelConfig,
        space: SearchSpace,
        seed: u64,
        trainable: bool,
    ) -> Result<Self> {
        let config = config.clone().normalized()?;
        let w = init_weights(&config, seed);
        Self::from_weights(&config, &w, space, None, trainable)
    }

    /// A network with the weights (and attention table / beta masks) of a `model` crate
    /// model.
    pub fn from_model(model: &Model, space: SearchSpace, trainable: bool) -> Result<Self> {
        Self::from_weights(model.config(), model.weights(), space, None, trainable)
    }

    /// Builds the network from weights. With `space.alpha` (`space.beta`), `relaxed`
    /// gives the starting alpha `[L][H]` (beta `[L][N]`); the default is 1.
    pub fn from_weights(
        config: &ModelConfig,
        w: &Weights,
        space: SearchSpace,
        relaxed: Option<&Relaxed>,
        trainable: bool,
    ) -> Result<Self> {
        let config = config.clone().normalized()?;
        let (c, n, h, p, k) = (
            config.dim,
            config.num_tokens(),
            config.heads,
            config.patch_size,
            config.in_channels,
        );
        let mut b = Builder {
            trainable,
            params: Vec::new(),
            vars: Vec::new(),
        };
        let conv_w = b.add(
            "tokenizer.conv_layers.0.0.weight".into(),
            &[c, k, p, p],
            w.conv.weight.clone(),
        )?;
        let conv_b = b.add(
            "tokenizer.conv_layers.0.0.bias".into(),
            &[c],
            w.conv.bias.clone(),
        )?;
        let class_emb = b.add(
            "classifier.class_emb".into(),
            &[1, 1, c],
            w.class_emb.clone(),
        )?;
        let pos_emb = b.add(
            "classifier.positional_emb".into(),
            &[1, n, c],
            w.positional_emb.clone(),
        )?;
        let mut blocks = Vec::with_capacity(config.depth);
        for (i, bw) in w.blocks.iter().enumerate() {
            let name = |s: &str| block_name(i, s);
            let pre_norm = b.ln(&name("pre_norm"), &bw.pre_norm)?;
            let qkv = b.lin(&name("self_attn.qkv"), &bw.qkv)?;
            let proj = b.lin(&name("self_attn.proj"), &bw.proj)?;
            let mix = if space.alpha {
                let a = relaxed
                    .and_then(|r| r.alpha.get(i).cloned())
                    .unwrap_or_else(|| vec![1.0; h]);
                Mix {
                    softmax: vec![false; h],
                    alpha: b.add(name("self_attn.alpha"), &[1, h, 1, 1], a)?,
                    searched: true,
                }
            } else {
                let kinds = &config.attention[i];
                let a: Vec<f32> = kinds
                    .iter()
                    .map(|&k| model::weights::alpha_for(k))
                    .collect();
                Mix {
                    softmax: kinds.iter().map(|&k| k == AttnKind::Softmax).collect(),
                    alpha: Tensor::from_vec(a, (1, h, 1, 1), &Device::Cpu)?,
                    searched: false,
                }
            };
            let linear1 = b.lin(&name("linear1"), &bw.linear1)?;
            let norm1 = b.ln(&name("norm1"), &bw.norm1)?;
            let linear2 = b.lin(&name("linear2"), &bw.linear2)?;
            let beta = if space.beta {
                let v = relaxed
                    .and_then(|r| r.beta.get(i).cloned())
                    .unwrap_or_else(|| vec![1.0; n]);
                Some(b.add(name("beta"), &[1, n, 1], v)?)
            } else {
                match config.block_beta(i) {
                    Some(mask) => {
                        let v: Vec<f32> = mask.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect();
                        Some(Tensor::from_vec(v, (1, n, 1), &Device::Cpu)?)
                    }
                    None => None,
                }
            };
            blocks.push(Block {
                pre_norm,
                qkv,
                proj,
                norm1,
                linear1,
                linear2,
                mix,
                beta,
            });
        }
        let norm = b.ln("classifier.norm", &w.norm)?;
        let fc = b.lin("classifier.fc", &w.fc)?;
        if config.gelu != GeluKind::Erf {
            return Err(crate::Error::Unsupported(
                "training uses the exact (erf) GeLU; set gelu = \"erf\"".into(),
            ));
        }
        Ok(Self {
            config,
            space,
            params: b.params,
            vars: b.vars,
            conv_w,
            conv_b,
            class_emb,
            pos_emb,
            blocks,
            norm,
            fc,
        })
    }

    /// The configuration (shapes, normalisation, labels, and, outside the search space,
    /// the attention table and beta masks).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// What is searched.
    pub fn space(&self) -> SearchSpace {
        self.space
    }

    /// Every parameter by state-dict name.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The trainable parameters by state-dict name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Overwrites parameters from `tensors` (e.g. a checkpoint); every parameter must be
    /// present with its shape.
    pub fn load_params(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in &self.vars {
            let t = tensors
                .get(name)
                .ok_or_else(|| crate::Error::Checkpoint(format!("tensor {name} is missing")))?;
            if t.dims() != var.dims() {
                return Err(crate::Error::Checkpoint(format!(
                    "tensor {name} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// A parameter's values.
    pub fn param(&self, name: &str) -> Result<Vec<f32>> {
        let t = self
            .params
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| crate::Error::Checkpoint(format!("no parameter {name}")))?;
        Ok(t.1.flatten_all()?.to_vec1()?)
    }

    /// The current relaxed alpha `[L][H]` and beta `[L][N]` (empty when not searched).
    pub fn relaxed(&self) -> Result<Relaxed> {
        let mut r = Relaxed::default();
        for (i, blk) in self.blocks.iter().enumerate() {
            if blk.mix.searched {
                r.alpha.push(blk.mix.alpha.flatten_all()?.to_vec1()?);
            }
            if self.space.beta {
                let b = blk
                    .beta
                    .as_ref()
                    .ok_or_else(|| crate::Error::Checkpoint(format!("block {i} has no beta")))?;
                r.beta.push(b.flatten_all()?.to_vec1()?);
            }
        }
        Ok(r)
    }

    /// The relaxed alpha tensors (one `[1, H, 1, 1]` per block) when searching.
    pub fn alpha_tensors(&self) -> Vec<Tensor> {
        self.blocks
            .iter()
            .filter(|b| b.mix.searched)
            .map(|b| b.mix.alpha.clone())
            .collect()
    }

    /// The relaxed beta tensors (one `[1, N, 1]` per block) when searching.
    pub fn beta_tensors(&self) -> Vec<Tensor> {
        if !self.space.beta {
            return Vec::new();
        }
        self.blocks.iter().filter_map(|b| b.beta.clone()).collect()
    }

    /// The weights in the `model` crate's structures.
    pub fn weights(&self) -> Result<Weights> {
        let get = |name: &str| -> Result<Vec<f32>> { self.param(name) };
        let (c, m) = (self.config.dim, self.config.mlp_hidden);
        let eps = self.config.layer_norm_eps;
        let lin = |prefix: &str, out: usize, inp: usize, bias: bool| -> Result<MLinear> {
            Ok(MLinear {
                out_features: out,
                in_features: inp,
                weight: get(&format!("{prefix}.weight"))?,
                bias: if bias {
                    Some(get(&format!("{prefix}.bias"))?)
                } else {
                    None
                },
            })
        };
        let ln = |prefix: &str| -> Result<MLayerNorm> {
            Ok(MLayerNorm {
                weight: get(&format!("{prefix}.weight"))?,
                bias: get(&format!("{prefix}.bias"))?,
                eps,
            })
        };
        let blocks = (0..self.config.depth)
            .map(|i| {
                let n = |s: &str| block_name(i, s);
                Ok(BlockWeights {
                    pre_norm: ln(&n("pre_norm"))?,
                    qkv: lin(&n("self_attn.qkv"), 3 * c, c, false)?,
                    proj: lin(&n("self_attn.proj"), c, c, true)?,
                    norm1: ln(&n("norm1"))?,
                    linear1: lin(&n("linear1"), m, c, true)?,
                    linear2: lin(&n("linear2"), c, m, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Weights {
            conv: PatchConv {
                weight: get("tokenizer.conv_layers.0.0.weight")?,
                bias: get("tokenizer.conv_layers.0.0.bias")?,
            },
            class_emb: get("classifier.class_emb")?,
            positional_emb: get("classifier.positional_emb")?,
            blocks,
            norm: ln("classifier.norm")?,
            fc: lin("classifier.fc", self.config.num_classes, c, true)?,
        })
    }

    /// The image batch `[B, in, S, S]` cut into patches `[B, P, in·p·p]`, each row
    /// ordered `(channel, ky, kx)` like the conv weight.
    fn patches(&self, x: &Tensor) -> Result<Tensor> {
        let (b, k, s, _) = x.dims4()?;
        let p = self.config.patch_size;
        let g = s / p;
        Ok(x.reshape((b, k, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, k * p * p))?)
    }

    /// Logits and final features for a normalised batch `[B, in, S, S]`.
    pub fn forward(&self, x: &Tensor) -> Result<Output> {
        let cfg = &self.config;
        let (bsz, c) = (x.dim(0)?, cfg.dim);
        let patches = self.patches(x)?;
        let conv = Lin {
            w: self.conv_w.reshape((c, ()))?,
            b: Some(self.conv_b.clone()),
        };
        let tokens = conv.forward(&patches)?;
        let cls = self.class_emb.broadcast_as((bsz, 1, c))?;
        let mut h = Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&self.pos_emb)?;
        for blk in &self.blocks {
            h = self.block(blk, &h)?;
        }
        let features = self.norm.forward(&h)?;
        let cls_out = features.narrow(1, 0, 1)?.squeeze(1)?;
        let logits = self.fc.forward(&cls_out)?;
        Ok(Output { logits, features })
    }

    fn block(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let y = (x + self.attention(blk, &blk.pre_norm.forward(x)?)?)?;
        let z = blk.norm1.forward(&y)?;
        let f = self.ffn(blk, &z)?;
        Ok((z + f)?)
    }

    fn attention(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let op = AttentionOp::new(
            (cfg.head_dim() as f32).powf(-0.5),
            cfg.relu_softmax_eps,
            blk.mix.softmax.clone(),
        );
        let o = blk.qkv.forward(x)?.apply_op2(&blk.mix.alpha, op)?;
        blk.proj.forward(&o)
    }

    fn ffn(&self, blk: &Block, z: &Tensor) -> Result<Tensor> {
        let h = blk.linear1.forward(z)?;
        match &blk.beta {
            None => blk.linear2.forward(&h.apply_op1(GeluOp)?),
            Some(beta) => {
                let h = h.apply_op2(beta, BetaMix::Gelu)?;
                let o = blk.linear2.forward(&h)?;
                Ok(o.apply_op2(beta, BetaMix::Relu)?)
            }
        }
    }

    /// The `model` crate model of this network. A searched network must be binarised
    /// first (see [`crate::export`]); its configuration must then carry the tables.
    pub fn to_model(&self) -> Result<Model> {
        if self.space.alpha || self.space.beta {
            return Err(crate::Error::Unsupported(
                "a network with relaxed alpha/beta cannot be exported: binarise it first".into(),
            ));
        }
        Ok(Model::new(self.config.clone(), self.weights()?)?)
    }
}

/// Relaxed architecture parameters: `alpha[block][head]`, `beta[block][token]`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Relaxed {
    /// Per-head alpha of every block (empty when alpha was not searched).
    pub alpha: Vec<Vec<f32>>,
    /// Per-token beta of every block (empty when beta was not searched).
    pub beta: Vec<Vec<f32>>,
}

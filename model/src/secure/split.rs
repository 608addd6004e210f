//! The model owner's and the client's step: splitting weights and input
//! into two additive shares.

use mpc_core::{FixedPoint, Prg, Share, ring};

use super::shares::{BlockShare, LayerNormShare, LinearShare, WeightShares};
use crate::network::Model;
use crate::weights::{LayerNorm, Linear};

struct Splitter<'a> {
    fp: FixedPoint,
    prg: &'a mut Prg,
}

impl Splitter<'_> {
    fn vec(&mut self, v: &[f32]) -> [Share; 2] {
        let enc: Vec<u64> = v.iter().map(|x| self.fp.encode(f64::from(*x))).collect();
        let (a, b) = mpc_core::share_secret(&enc, self.prg);
        [a, b]
    }

    fn linear(&mut self, l: &Linear) -> [LinearShare; 2] {
        let wt = ring::transpose(&l.weight, l.out_features, l.in_features);
        let [w0, w1] = self.vec(&wt);
        let [b0, b1] = match &l.bias {
            Some(b) => self.vec(b).map(Some),
            None => [None, None],
        };
        let mk = |weight, bias| LinearShare {
            in_features: l.in_features,
            out_features: l.out_features,
            weight,
            bias,
        };
        [mk(w0, b0), mk(w1, b1)]
    }

    fn norm(&mut self, n: &LayerNorm) -> [LayerNormShare; 2] {
        let [g0, g1] = self.vec(&n.weight);
        let [b0, b1] = self.vec(&n.bias);
        [
            LayerNormShare {
                gamma: g0,
                beta: b0,
            },
            LayerNormShare {
                gamma: g1,
                beta: b1,
            },
        ]
    }
}

/// Split a model's weights into two additive shares at fixed point `fp`
/// (the model owner's step). Each share alone is uniformly random.
pub fn split_weights(model: &Model, fp: FixedPoint, prg: &mut Prg) -> [WeightShares; 2] {
    let (config, w) = (model.config(), model.weights());
    let mut sp = Splitter { fp, prg };
    let conv = Linear {
        out_features: config.dim,
        in_features: config.in_channels * config.patch_size * config.patch_size,
        weight: w.conv.weight.clone(),
        bias: Some(w.conv.bias.clone()),
    };
    let [conv0, conv1] = sp.linear(&conv);
    let [ce0, ce1] = sp.vec(&w.class_emb);
    let [pe0, pe1] = sp.vec(&w.positional_emb);
    let mut blocks: [Vec<BlockShare>; 2] = [Vec::new(), Vec::new()];
    for (i, b) in w.blocks.iter().enumerate() {
        let [q0, q1] = sp.linear(&fold_norm(&b.pre_norm, &b.qkv));
        let [p0, p1] = sp.linear(&b.proj);
        let [n0, n1] = sp.norm(&b.norm1);
        let mut ffn_in = fold_norm(&b.norm1, &b.linear1);
        if let Some(f) = model.fused_ffn(i) {
            let f = fold_norm(&b.norm1, f);
            ffn_in.out_features += f.out_features;
            ffn_in.weight.extend(f.weight);
            if let (Some(b1), Some(bf)) = (&mut ffn_in.bias, f.bias) {
                b1.extend(bf);
            }
        }
        let [i0, i1] = sp.linear(&ffn_in);
        let [l20, l21] = sp.linear(&b.linear2);
        blocks[0].push(BlockShare {
            qkv: q0,
            proj: p0,
            norm1: n0,
            ffn_in: i0,
            linear2: l20,
        });
        blocks[1].push(BlockShare {
            qkv: q1,
            proj: p1,
            norm1: n1,
            ffn_in: i1,
            linear2: l21,
        });
    }
    let [fc0, fc1] = sp.linear(&fold_norm(&w.norm, &w.fc));
    let [b0, b1] = blocks;
    let mk = |conv, class_emb, positional_emb, blocks, fc| WeightShares {
        config: config.clone(),
        frac_bits: fp.frac_bits,
        conv,
        class_emb,
        positional_emb,
        blocks,
        fc,
    };
    [mk(conv0, ce0, pe0, b0, fc0), mk(conv1, ce1, pe1, b1, fc1)]
}

/// Fold a LayerNorm's scale `γ` and shift `β` into the linear layer that
/// consumes it: `(n⊙γ + β)·Wᵀ + b = n·(W·diag(γ))ᵀ + (W·β + b)`. Exact in
/// real arithmetic (accumulated in f64); the secure forward then normalises
/// without an affine step, saving a product per element.
pub fn fold_norm(norm: &LayerNorm, next: &Linear) -> Linear {
    let (out, inp) = (next.out_features, next.in_features);
    let mut weight = next.weight.clone();
    let mut bias = next.bias.clone().unwrap_or_else(|| vec![0.0; out]);
    for o in 0..out {
        let row = &mut weight[o * inp..(o + 1) * inp];
        let mut acc = f64::from(bias[o]);
        for (i, w) in row.iter_mut().enumerate() {
            acc += f64::from(*w) * f64::from(norm.bias[i]);
            *w *= norm.weight[i];
        }
        bias[o] = acc as f32;
    }
    Linear {
        out_features: out,
        in_features: inp,
        weight,
        bias: Some(bias),
    }
}

/// Split a normalised CHW image into two shares (the client's step).
pub fn split_input(image: &[f32], fp: FixedPoint, prg: &mut Prg) -> [Share; 2] {
    let enc: Vec<u64> = image.iter().map(|x| fp.encode(f64::from(*x))).collect();
    let (a, b) = mpc_core::share_secret(&enc, prg);
    [a, b]
}

//! Head tables for random-weight models at a given μ (the fraction of
//! ReLU-Softmax heads; the rest ScaleAttn), for latency-vs-μ benchmarks.
//!
//! The paper keeps the top `μ·L·H` heads of a searched, relaxed `alpha`; a
//! random model has no search, so the heads are taken in a fixed order: the
//! checkerboard `(block + head) % 2 == 0` first (row-major), then the other
//! heads (row-major). μ = 0.5 on an even head count is exactly the
//! checkerboard of `mpcvit-server`'s `_mu05` presets, μ = 1 is the
//! all-ReLU-Softmax `vit_7_4_32`, and a larger μ always keeps the heads of a
//! smaller one.

use model::{AttnKind, ModelConfig};

/// The order in which heads turn ReLU-Softmax as μ grows.
pub fn head_order(depth: usize, heads: usize) -> Vec<(usize, usize)> {
    let all = (0..depth).flat_map(|b| (0..heads).map(move |h| (b, h)));
    let (even, odd): (Vec<_>, Vec<_>) = all.partition(|(b, h)| (b + h) % 2 == 0);
    even.into_iter().chain(odd).collect()
}

/// How many of `total` heads μ keeps as ReLU-Softmax: `round(μ·total)`.
pub fn relu_softmax_count(mu: f64, total: usize) -> usize {
    ((mu.clamp(0.0, 1.0) * total as f64).round() as usize).min(total)
}

/// The attention table for `depth × heads` at μ.
pub fn attention_at_mu(depth: usize, heads: usize, mu: f64) -> Vec<Vec<AttnKind>> {
    let mut table = vec![vec![AttnKind::ScaleAttn; heads]; depth];
    for &(b, h) in head_order(depth, heads)
        .iter()
        .take(relu_softmax_count(mu, depth * heads))
    {
        table[b][h] = AttnKind::ReluSoftmax;
    }
    table
}

/// `config` with its head table set for μ and `_mu{μ}` appended to its name
/// (`vit_7_4_32_mu0.3`).
pub fn with_mu(mut config: ModelConfig, mu: f64) -> ModelConfig {
    config.attention = attention_at_mu(config.depth, config.heads, mu);
    let base = config
        .name
        .split("_mu")
        .next()
        .unwrap_or(&config.name)
        .to_string();
    config.name = format!("{base}_mu{mu}");
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &[Vec<AttnKind>]) -> usize {
        t.iter()
            .flatten()
            .filter(|&&k| k == AttnKind::ReluSoftmax)
            .count()
    }

    #[test]
    fn the_ends_and_the_checkerboard() {
        assert_eq!(count(&attention_at_mu(7, 4, 0.0)), 0);
        assert_eq!(count(&attention_at_mu(7, 4, 1.0)), 28);
        let half = attention_at_mu(7, 4, 0.5);
        for (b, row) in half.iter().enumerate() {
            for (h, k) in row.iter().enumerate() {
                let rs = (b + h) % 2 == 0;
                assert_eq!(*k == AttnKind::ReluSoftmax, rs, "block {b} head {h}");
            }
        }
        let c = with_mu(ModelConfig::vit_7_4_32(), 1.0);
        assert_eq!(c.attention, ModelConfig::vit_7_4_32().attention);
        assert_eq!(c.name, "vit_7_4_32_mu1");
        assert_eq!(with_mu(c, 0.3).name, "vit_7_4_32_mu0.3");
    }

    #[test]
    fn counts_round_and_grow_monotonically() {
        let mut prev = attention_at_mu(7, 4, 0.0);
        for i in 1..=20 {
            let mu = i as f64 / 20.0;
            let t = attention_at_mu(7, 4, mu);
            assert_eq!(count(&t), (mu * 28.0).round() as usize, "μ = {mu}");
            for (a, b) in prev.iter().flatten().zip(t.iter().flatten()) {
                assert!(
                    *a != AttnKind::ReluSoftmax || *b == AttnKind::ReluSoftmax,
                    "a head left at μ = {mu}"
                );
            }
            prev = t;
        }
        assert_eq!(relu_softmax_count(0.1, 28), 3);
        assert_eq!(relu_softmax_count(7.0, 28), 28);
    }
}

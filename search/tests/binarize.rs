//! Binarisation keeps exactly round(μ·L·H) ReLU-Softmax heads (and round(ρ·L·N) GeLU tokens).

use model::AttnKind;
use search::export::{binarize_alpha, binarize_beta, kept, random_alpha};

fn table(l: usize, h: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = search::data::rng_for(seed, 1);
    (0..l)
        .map(|_| {
            (0..h)
                .map(|_| search::data::below(&mut rng, 1000) as f32 / 1000.0 - 0.2)
                .collect()
        })
        .collect()
}

#[test]
fn keeps_exactly_round_mu_l_h_heads() {
    for (l, h) in [(4, 4), (7, 4), (9, 12)] {
        let alpha = table(l, h, (l * h) as u64);
        for mu in [0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.75, 0.9, 1.0] {
            let t = binarize_alpha(&alpha, mu);
            let rs = t
                .iter()
                .flatten()
                .filter(|&&k| k == AttnKind::ReluSoftmax)
                .count();
            let sa = t
                .iter()
                .flatten()
                .filter(|&&k| k == AttnKind::ScaleAttn)
                .count();
            let want = (mu * (l * h) as f64).round() as usize;
            assert_eq!((rs, rs + sa), (want, l * h), "L={l} H={h} mu={mu}");
            assert_eq!(kept(mu, l * h), want);
            // Every kept head has an alpha at least as large as every dropped one.
            let flat: Vec<(f32, AttnKind)> = alpha
                .iter()
                .flatten()
                .copied()
                .zip(t.iter().flatten().copied())
                .collect();
            let min_kept = flat
                .iter()
                .filter(|p| p.1 == AttnKind::ReluSoftmax)
                .map(|p| p.0)
                .fold(f32::INFINITY, f32::min);
            let max_dropped = flat
                .iter()
                .filter(|p| p.1 == AttnKind::ScaleAttn)
                .map(|p| p.0)
                .fold(f32::NEG_INFINITY, f32::max);
            assert!(min_kept >= max_dropped, "L={l} H={h} mu={mu}");
        }
    }
}

#[test]
fn ties_and_shape() {
    // All alphas equal: the earliest heads win, deterministically.
    let alpha = vec![vec![1.0f32; 4]; 4];
    let t = binarize_alpha(&alpha, 0.5);
    assert_eq!(t[0], vec![AttnKind::ReluSoftmax; 4]);
    assert_eq!(t[1], vec![AttnKind::ReluSoftmax; 4]);
    assert_eq!(t[2], vec![AttnKind::ScaleAttn; 4]);
    assert_eq!(t.len(), 4);
}

#[test]
fn beta_keeps_round_rho_l_n_tokens() {
    let beta = table(4, 50, 3);
    for rho in [0.0, 0.2, 0.5, 0.83, 1.0] {
        let masks = binarize_beta(&beta, rho);
        assert_eq!(masks.len(), 4);
        let kept_tokens: usize = masks
            .iter()
            .map(|m| m.as_ref().unwrap().iter().filter(|&&b| b).count())
            .sum();
        assert_eq!(kept_tokens, (rho * 200.0).round() as usize, "rho={rho}");
        assert!(masks.iter().all(|m| m.as_ref().unwrap().len() == 50));
    }
}

#[test]
fn random_masks_keep_exactly_k_heads_and_depend_on_their_seed() {
    let (l, h) = (4, 4);
    let masks: Vec<Vec<Vec<AttnKind>>> = (0..4)
        .map(|seed| binarize_alpha(&random_alpha(l, h, seed), 0.5))
        .collect();
    for m in &masks {
        let rs = m
            .iter()
            .flatten()
            .filter(|&&k| k == AttnKind::ReluSoftmax)
            .count();
        assert_eq!(rs, 8);
    }
    assert_eq!(
        masks[1],
        binarize_alpha(&random_alpha(l, h, 1), 0.5),
        "same seed, same mask"
    );
    assert!(
        masks.iter().skip(1).any(|m| *m != masks[0]),
        "four seeds gave one mask"
    );
}

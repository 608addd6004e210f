//! How decisive a search is: the margin at the binarisation cut, the spread of the
//! relaxed alphas, and how far two searches agree on the heads they keep.
//!
//! - [`cut_gap`]: for `k = round(μ·L·H)` kept heads, the smallest kept alpha minus the
//!   largest dropped one (binarisation keeps the top `k`, so the gap is ≥ 0). A search
//!   decides at `μ` when this gap is large against the alphas' noise from batch to batch.
//! - [`histogram`]: counts of alphas in ten bins of width 0.1 over `[0, 1]`, with the
//!   values below 0 and above 1 counted apart (a search without projection leaves them).
//! - [`agreement`]: the fraction of the `k` heads kept by one search that the other keeps
//!   too.

use serde::Serialize;

use crate::export::{kept, top_k};

/// Smallest kept alpha minus the largest dropped alpha at ratio `mu`; `None` when
/// every head or none is kept (there is no cut).
pub fn cut_gap(alpha: &[Vec<f32>], mu: f64) -> Option<f32> {
    let flat: Vec<f32> = alpha.iter().flatten().copied().collect();
    cut_sides(&flat, mu).map(|(kept, dropped)| kept - dropped)
}

/// The smallest kept and the largest dropped of `values` at ratio `mu` (the top
/// `round(μ·n)` are kept); `None` when every value or none is kept.
pub fn cut_sides(values: &[f32], mu: f64) -> Option<(f32, f32)> {
    let k = kept(mu, values.len());
    if k == 0 || k == values.len() {
        return None;
    }
    let order = top_k(values, values.len());
    Some((values[order[k - 1]], values[order[k]]))
}

/// Alphas counted in ten bins over `[0, 1]` plus those outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// Values below 0.
    pub below: usize,
    /// `bins[i]` counts values in `[i/10, (i+1)/10)`; the last bin includes 1.
    pub bins: [usize; 10],
    /// Values above 1.
    pub above: usize,
}

/// The histogram of `values` (see [`Histogram`]).
pub fn histogram(values: impl IntoIterator<Item = f32>) -> Histogram {
    let mut h = Histogram {
        below: 0,
        bins: [0; 10],
        above: 0,
    };
    for v in values {
        if v < 0.0 {
            h.below += 1;
        } else if v > 1.0 {
            h.above += 1;
        } else {
            h.bins[((v * 10.0) as usize).min(9)] += 1;
        }
    }
    h
}

/// Fraction of the heads kept at ratio `mu` by the search with alphas `a` that the
/// search with alphas `b` keeps too; `None` when no head is kept or the tables differ
/// in size.
pub fn agreement(a: &[Vec<f32>], b: &[Vec<f32>], mu: f64) -> Option<f64> {
    let fa: Vec<f32> = a.iter().flatten().copied().collect();
    let fb: Vec<f32> = b.iter().flatten().copied().collect();
    let k = kept(mu, fa.len());
    if fa.len() != fb.len() || k == 0 {
        return None;
    }
    let kb = top_k(&fb, k);
    let common = top_k(&fa, k).iter().filter(|i| kb.contains(i)).count();
    Some(common as f64 / k as f64)
}

/// The gap and the number of kept heads at one ratio.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cut {
    /// The ratio μ.
    pub mu: f64,
    /// Heads kept as ReLU-Softmax.
    pub kept: usize,
    /// [`cut_gap`] at `mu`.
    pub gap: Option<f32>,
}

/// The cuts at the ratios `mus`.
pub fn cuts(alpha: &[Vec<f32>], mus: &[f64]) -> Vec<Cut> {
    let total = alpha.iter().map(Vec::len).sum();
    mus.iter()
        .map(|&mu| Cut {
            mu,
            kept: kept(mu, total),
            gap: cut_gap(alpha, mu),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_the_margin_at_the_cut() {
        let alpha = vec![vec![0.9, 0.1], vec![0.5, 0.45]];
        assert_eq!(cut_gap(&alpha, 0.5), Some(0.5 - 0.45));
        assert!((cut_gap(&alpha, 0.25).unwrap() - 0.4).abs() < 1e-6);
        assert_eq!(cut_gap(&alpha, 0.0), None);
        assert_eq!(cut_gap(&alpha, 1.0), None);
    }

    #[test]
    fn the_histogram_counts_each_value_once() {
        let h = histogram([-0.2, 0.0, 0.05, 0.1, 0.55, 0.999, 1.0, 1.3]);
        assert_eq!(h.below, 1);
        assert_eq!(h.above, 1);
        assert_eq!(h.bins, [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
    }

    #[test]
    fn agreement_counts_the_shared_kept_heads() {
        let a = vec![vec![0.9, 0.8, 0.1, 0.0]];
        let b = vec![vec![0.9, 0.0, 0.8, 0.1]];
        assert_eq!(agreement(&a, &b, 0.5), Some(0.5));
        assert_eq!(agreement(&a, &a, 0.5), Some(1.0));
        assert_eq!(agreement(&a, &b, 0.0), None);
        assert_eq!(agreement(&a, &[vec![1.0]], 0.5), None);
    }
}

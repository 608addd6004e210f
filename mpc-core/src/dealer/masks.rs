//! The dealer's weight masks: what a model load leaves for the products
//! with those weights.

use crate::dealer::request::ValueProducts;
use crate::error::{MpcError, Result};
use crate::ring;
use std::collections::HashMap;

/// The dealer's full weight masks `B = B₀ + B₁`, by weight id: what a
/// model load's [`Request::WeightMask`](crate::dealer::Request::WeightMask)s leave for the products with those
/// weights.
#[derive(Debug, Default)]
pub(crate) struct Masks(HashMap<u32, (usize, usize, Vec<u64>)>);

impl Masks {
    /// Keep the full mask `b` of weight `id`, `k`×`n`.
    pub(crate) fn insert(&mut self, id: u32, k: usize, n: usize, b: Vec<u64>) {
        self.0.insert(id, (k, n, b));
    }

    /// The full mask `B` of weight `id`, which must be `k`×`n`.
    pub(crate) fn mask(&self, id: u32, k: usize, n: usize) -> Result<&[u64]> {
        let (mk, mn, b) = self
            .0
            .get(&id)
            .ok_or_else(|| MpcError::Dealer(format!("weight {id} was never masked")))?;
        if (*mk, *mn) != (k, n) {
            return Err(MpcError::Dealer(format!(
                "weight {id} is {mk}x{mn}, request says {k}x{n}"
            )));
        }
        Ok(b)
    }

    /// `v ⊙ γ` (broadcast over rows) then `v·W` for the masks of `p`'s
    /// weights, `v` being rows of `p.cols`.
    pub(crate) fn value_products(&self, p: &ValueProducts, v: &[u64]) -> Result<Vec<u64>> {
        let (cols, rows) = (p.cols, v.len() / p.cols.max(1));
        let mut full = Vec::with_capacity(p.words(v.len()));
        if let Some(id) = p.scale {
            let b = self.mask(id, 1, cols)?;
            full.extend(
                v.iter()
                    .enumerate()
                    .map(|(i, x)| x.wrapping_mul(b[i % cols])),
            );
        }
        if let Some((id, out)) = p.next {
            full.extend(ring::matmul(v, self.mask(id, cols, out)?, rows, cols, out));
        }
        Ok(full)
    }
}

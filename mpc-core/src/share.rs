//! Additive secret shares over Z_2^64.
//!
//! A secret vector `x` is held as `x = x₀ + x₁ (mod 2^64)`, party 0 holding
//! `x₀` and party 1 holding `x₁`; each share alone is uniformly random.

use crate::prg::Prg;

/// Which of the two computing parties this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// Party 0: adds public constants, holds only a seed from the dealer.
    P0,
    /// Party 1: receives the dealer's corrections.
    P1,
}

impl Party {
    /// 0 or 1.
    pub fn index(self) -> usize {
        match self {
            Party::P0 => 0,
            Party::P1 => 1,
        }
    }

    /// The party with index `i` (0 or 1).
    pub fn from_index(i: usize) -> Option<Party> {
        match i {
            0 => Some(Party::P0),
            1 => Some(Party::P1),
            _ => None,
        }
    }

    /// The other party.
    pub fn other(self) -> Party {
        match self {
            Party::P0 => Party::P1,
            Party::P1 => Party::P0,
        }
    }
}

/// One party's additive share of a vector. `Debug` shows only the length;
/// the elements are wiped (zeroize) when the share is dropped.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Share(Vec<u64>);

impl Drop for Share {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl zeroize::ZeroizeOnDrop for Share {}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(<{} secret elements>)", self.0.len())
    }
}

impl Share {
    /// Wrap a party's share.
    pub fn new(v: Vec<u64>) -> Self {
        Share(v)
    }

    /// A share of the all-zero vector (both parties hold zeros).
    pub fn zeros(n: usize) -> Self {
        Share(vec![0; n])
    }

    /// The share's elements.
    pub fn as_slice(&self) -> &[u64] {
        &self.0
    }

    /// The share's elements, owned (the caller then holds, and wipes, them).
    pub fn into_vec(mut self) -> Vec<u64> {
        std::mem::take(&mut self.0)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty share.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Elementwise sum of two shares (local).
    pub fn add(&self, o: &Share) -> Share {
        Share(crate::ring::add(&self.0, &o.0))
    }

    /// Elementwise difference of two shares (local).
    pub fn sub(&self, o: &Share) -> Share {
        Share(crate::ring::sub(&self.0, &o.0))
    }

    /// Multiply every element by a public integer (local, no truncation).
    pub fn scale_int(&self, k: u64) -> Share {
        Share(crate::ring::scale(&self.0, k))
    }

    /// Negation (local).
    pub fn neg(&self) -> Share {
        Share(self.0.iter().map(|x| x.wrapping_neg()).collect())
    }

    /// Elements `range` of this share.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Share {
        Share(self.0[range].to_vec())
    }

    /// Concatenate shares (to batch several operands into one round).
    pub fn concat(parts: &[&Share]) -> Share {
        Share(parts.iter().flat_map(|p| p.0.iter().copied()).collect())
    }

    /// Split into consecutive pieces of the given lengths.
    pub fn split(&self, lens: &[usize]) -> Vec<Share> {
        assert_eq!(
            lens.iter().sum::<usize>(),
            self.0.len(),
            "split: lengths do not add up"
        );
        let mut at = 0;
        lens.iter()
            .map(|l| {
                let s = Share(self.0[at..at + l].to_vec());
                at += l;
                s
            })
            .collect()
    }
}

/// Split public values into two fresh shares using randomness from `prg`.
pub fn share_secret(values: &[u64], prg: &mut Prg) -> (Share, Share) {
    let r = prg.u64s(values.len());
    let other = crate::ring::sub(values, &r);
    (Share(r), Share(other))
}

/// Add the two shares back together.
pub fn reconstruct(s0: &Share, s1: &Share) -> Vec<u64> {
    crate::ring::add(&s0.0, &s1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::Seed;

    #[test]
    fn share_reconstruct_and_opaque_debug() {
        let mut prg = Prg::new(&Seed::for_tests(1));
        let v = vec![1, 2, u64::MAX, 42];
        let (a, b) = share_secret(&v, &mut prg);
        assert_eq!(reconstruct(&a, &b), v);
        assert_ne!(a.as_slice(), v.as_slice());
        let dbg = format!("{a:?}");
        assert_eq!(dbg, "Share(<4 secret elements>)");
    }
}

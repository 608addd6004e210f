//! A party's view of one secure computation.
//!
//! [`Ctx`] is what operators are built from: who this party is, the
//! fixed-point format and where its correlated randomness comes from. Every
//! secure operator is a method on it returning an [`Op`](crate::Op) (see
//! [`crate::op`]); methods branch only on public values (shapes, the party
//! index, opened masked values). [`Session`](crate::Session) adds the link
//! to the peer and runs operators.

use crate::dealer::{CorrelationSource, Material, Request};
use crate::error::{MpcError, Result, check_len};
use crate::fixed::FixedPoint;
use crate::share::{Party, Share};

/// One party's context for building operators: its index, the fixed-point
/// format and its source of correlated randomness. It has no link: an
/// operator built here only says what it would send.
pub struct Ctx<'a> {
    party: Party,
    fp: FixedPoint,
    src: &'a mut dyn CorrelationSource,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("party", &self.party)
            .field("fp", &self.fp)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// A context for `party` taking correlations from `src`.
    pub fn new(party: Party, fp: FixedPoint, src: &'a mut dyn CorrelationSource) -> Self {
        Ctx { party, fp, src }
    }

    /// This party.
    pub fn party(&self) -> Party {
        self.party
    }

    /// The fixed-point format.
    pub fn fp(&self) -> FixedPoint {
        self.fp
    }

    /// Fractional bits `f`.
    pub fn frac_bits(&self) -> u32 {
        self.fp.frac_bits
    }

    pub(crate) fn is_p0(&self) -> bool {
        self.party == Party::P0
    }

    pub(crate) fn take(&mut self, op: &'static str, req: Request) -> Result<Material> {
        self.src.take(op, req)
    }

    /// True while a plan is recorded on placeholder material (see
    /// [`CorrelationSource::is_recording`]).
    pub(crate) fn is_recording(&self) -> bool {
        self.src.is_recording()
    }

    /// This party's share of a public vector (party 0 holds it, party 1 holds zeros).
    pub fn public(&self, v: &[u64]) -> Share {
        if self.is_p0() {
            Share::new(v.to_vec())
        } else {
            Share::zeros(v.len())
        }
    }

    /// `x + c` for a public vector `c` (local).
    pub fn add_public(&self, x: &Share, c: &[u64]) -> Result<Share> {
        check_len("add_public", "constant", c.len(), x.len())?;
        Ok(if self.is_p0() {
            Share::new(crate::ring::add(x.as_slice(), c))
        } else {
            x.clone()
        })
    }

    /// `x + c` for a public scalar `c` added to every element (local).
    pub fn add_scalar(&self, x: &Share, c: u64) -> Share {
        if self.is_p0() {
            Share::new(x.as_slice().iter().map(|v| v.wrapping_add(c)).collect())
        } else {
            x.clone()
        }
    }

    /// Encode a real at the session's fixed point.
    pub fn encode(&self, x: f64) -> u64 {
        self.fp.encode(x)
    }
}

pub(crate) fn expect_triple(
    op: &'static str,
    m: Material,
) -> Result<(Vec<u64>, Vec<u64>, Vec<u64>)> {
    match m {
        Material::Triple(crate::dealer::kinds::Triple { a, b, c }) => Ok((a, b, c)),
        other => Err(MpcError::OutOfStep {
            op,
            needed: "triple".into(),
            found: format!("{other:?}"),
        }),
    }
}

//! A party's view of one secure computation.
//!
//! [`Ctx`] is what operators are built from: who this party is, the
//! fixed-point format and where its correlated randomness comes from. Every
//! secure operator is a method on it returning an [`Op`] (see [`crate::op`]);
//! methods branch only on public values (shapes, the party index, opened
//! masked values). [`Session`] adds the link to the peer and runs operators.

use crate::channel::{self, Channel};
use crate::dealer::{CorrelationSource, Material, Request};
use crate::error::{MpcError, Result, check_len};
use crate::fixed::FixedPoint;
use crate::op::{Op, Step};
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

    /// Reveal a shared vector to both parties.
    ///
    /// Rounds 1; sends `8n` bytes per party.
    pub fn open(&mut self, x: &Share) -> Op<Vec<u64>> {
        let mine = x.as_slice().to_vec();
        Op::exchange("open", channel::pack(&mine, 64), move |_, peer| {
            let other = channel::unpack(peer, mine.len(), 64);
            Op::ready(crate::ring::add(&mine, &other))
        })
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

/// Rounds and bytes of one operator kind (the name its exchanges carry,
/// such as `"trunc"` or `"compare-products"`) over a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCost {
    /// Rounds in which this kind sent something (a round shared by several
    /// kinds counts for each of them).
    pub rounds: u64,
    /// Bytes this kind sent.
    pub bytes: u64,
}

/// Rounds and bytes by operator kind, as [`Session::run`] recorded them.
pub type OpProfile = std::collections::BTreeMap<&'static str, OpCost>;

/// One party's state for a secure computation: a [`Ctx`] and the link to
/// the peer. [`Session::run`] is the synchronous driver of [`Op`]s.
pub struct Session<'a> {
    ctx: Ctx<'a>,
    ch: &'a mut dyn Channel,
    profile: OpProfile,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl<'a> Session<'a> {
    /// A session for `party` over `ch`, taking correlations from `src`.
    pub fn new(
        party: Party,
        fp: FixedPoint,
        ch: &'a mut dyn Channel,
        src: &'a mut dyn CorrelationSource,
    ) -> Self {
        Session {
            ctx: Ctx::new(party, fp, src),
            ch,
            profile: OpProfile::new(),
        }
    }

    /// Rounds and bytes by operator kind of everything run so far.
    pub fn profile(&self) -> &OpProfile {
        &self.profile
    }

    /// This party.
    pub fn party(&self) -> Party {
        self.ctx.party
    }

    /// The fixed-point format.
    pub fn fp(&self) -> FixedPoint {
        self.ctx.fp
    }

    /// Fractional bits `f`.
    pub fn frac_bits(&self) -> u32 {
        self.ctx.fp.frac_bits
    }

    /// The context operators are built from.
    pub fn ctx(&mut self) -> &mut Ctx<'a> {
        &mut self.ctx
    }

    /// Build an operator with `build` and run it to the end: each of its
    /// rounds sends one message and receives the peer's (of the same
    /// length). An exchange with nothing to send on either side is skipped
    /// (both parties know it is empty). Rounds and bytes are the operator's.
    pub fn run<T: Send + 'static>(
        &mut self,
        build: impl FnOnce(&mut Ctx<'a>) -> Op<T>,
    ) -> Result<T> {
        let mut op = build(&mut self.ctx);
        loop {
            match op.step(&mut self.ctx) {
                Step::Done(r) => return r,
                Step::Exchange { parts, msg, next } => {
                    let peer = if msg.is_empty() {
                        Vec::new()
                    } else {
                        self.record(&parts);
                        channel::exchange_bytes(self.ch, parts[0].0, msg)?
                    };
                    op = next(&mut self.ctx, &peer);
                }
            }
        }
    }
}

impl Session<'_> {
    /// Count one exchange: a round for each kind in it, and its bytes.
    fn record(&mut self, parts: &crate::op::Parts) {
        let mut seen: Vec<&'static str> = Vec::with_capacity(parts.len());
        for (name, bytes) in parts {
            let cost = self.profile.entry(name).or_default();
            cost.bytes += *bytes as u64;
            if !seen.contains(name) {
                seen.push(name);
                cost.rounds += 1;
            }
        }
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

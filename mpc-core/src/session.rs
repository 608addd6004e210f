//! One secure computation: [`Session`] adds the link to the peer to a
//! party's [`Ctx`] and runs operators, counting each kind's
//! rounds and bytes.

use crate::channel::{self, Channel};
use crate::ctx::Ctx;
use crate::dealer::CorrelationSource;
use crate::error::Result;
use crate::fixed::FixedPoint;
use crate::op::{Op, Step};
use crate::share::Party;

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
        self.ctx.party()
    }

    /// The fixed-point format.
    pub fn fp(&self) -> FixedPoint {
        self.ctx.fp()
    }

    /// Fractional bits `f`.
    pub fn frac_bits(&self) -> u32 {
        self.ctx.frac_bits()
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

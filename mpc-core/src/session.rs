//! A party's view of one secure computation: who it is, the fixed-point
//! format, the link to its peer and where its correlated randomness comes from.
//!
//! Every secure operator is a method on [`Session`]; both parties call the
//! same methods in the same order with their own shares. Methods branch only
//! on public values (shapes, the party index, opened masked values).

use crate::channel::{self, Channel};
use crate::dealer::{CorrelationSource, Material, Request};
use crate::error::{MpcError, Result, check_len};
use crate::fixed::FixedPoint;
use crate::share::{Party, Share};

/// One party's state for a secure computation.
pub struct Session<'a> {
    party: Party,
    fp: FixedPoint,
    ch: &'a mut dyn Channel,
    src: &'a mut dyn CorrelationSource,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("party", &self.party)
            .field("fp", &self.fp)
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
        Session { party, fp, ch, src }
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

    /// Send 64-bit words and receive the peer's as many: one round.
    pub(crate) fn exchange(&mut self, op: &'static str, words: &[u64]) -> Result<Vec<u64>> {
        channel::exchange_packed(self.ch, op, words, 64)
    }

    /// Reveal a shared vector to both parties.
    ///
    /// Rounds 1; sends `8n` bytes per party.
    pub fn open(&mut self, x: &Share) -> Result<Vec<u64>> {
        let other = self.exchange("open", x.as_slice())?;
        Ok(crate::ring::add(x.as_slice(), &other))
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

/// The first half of one communication round of an operator: the bytes this
/// party sends, and how to finish once the peer's message (of the same,
/// public length) arrives. Splitting operators this way lets independent
/// operators share a round ([`Session::finish2`]); the correlated randomness
/// is taken when the round is begun, so begin order fixes the plan.
pub struct Round<T> {
    op: &'static str,
    msg: Vec<u8>,
    finish: Finish<T>,
}

/// What turns the peer's message into an operator's result.
type Finish<T> = Box<dyn FnOnce(&[u8]) -> Result<T>>;

impl<T> std::fmt::Debug for Round<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Round({}, {} bytes)", self.op, self.msg.len())
    }
}

impl<T> Round<T> {
    /// A round sending `msg`, finished by `finish` on the peer's message.
    pub(crate) fn new(
        op: &'static str,
        msg: Vec<u8>,
        finish: impl FnOnce(&[u8]) -> Result<T> + 'static,
    ) -> Self {
        Round {
            op,
            msg,
            finish: Box::new(finish),
        }
    }
}

impl<T: 'static> Round<T> {
    /// The same round with `f` applied to its result.
    pub(crate) fn then<U>(self, f: impl FnOnce(T) -> Result<U> + 'static) -> Round<U> {
        let finish = self.finish;
        Round {
            op: self.op,
            msg: self.msg,
            finish: Box::new(move |peer| f(finish(peer)?)),
        }
    }
}

impl Session<'_> {
    /// Run one begun round on its own.
    pub fn finish<T>(&mut self, r: Round<T>) -> Result<T> {
        let peer = channel::exchange_bytes(self.ch, r.op, r.msg)?;
        (r.finish)(&peer)
    }

    /// Run two independent begun rounds as one: one message each way.
    pub fn finish2<A, B>(&mut self, a: Round<A>, b: Round<B>) -> Result<(A, B)> {
        let split = a.msg.len();
        let mut msg = a.msg;
        msg.extend(b.msg);
        let peer = channel::exchange_bytes(self.ch, a.op, msg)?;
        let (pa, pb) = peer.split_at(split);
        Ok(((a.finish)(pa)?, (b.finish)(pb)?))
    }
}

pub(crate) fn expect_triple(
    op: &'static str,
    m: Material,
) -> Result<(Vec<u64>, Vec<u64>, Vec<u64>)> {
    match m {
        Material::Triple { a, b, c } => Ok((a, b, c)),
        other => Err(MpcError::OutOfStep {
            op,
            needed: "triple".into(),
            found: format!("{other:?}"),
        }),
    }
}

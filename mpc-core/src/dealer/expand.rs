//! A party's side of the dealer: its stream and the dealer's messages
//! expanded into [`Material`] (generic over the kind's declaration).

use crate::dealer::material::{Material, with_kind};
use crate::dealer::parts::{Keys, Kind, draw_parts, fill_corrections};
use crate::dealer::request::Request;
use crate::error::{MpcError, Result};
use crate::prg::{Prg, Seed};
use crate::share::Party;

/// A party's side of the dealer: expands its seed and the dealer's messages into [`Material`].
#[derive(Debug)]
pub struct MaterialGen {
    party: Party,
    prg: Prg,
}

impl MaterialGen {
    /// The generator of `party`, sharing `seed` with the dealer (batch 0).
    pub fn new(party: Party, seed: &Seed) -> Self {
        Self::for_batch(party, seed, 0)
    }

    /// The generator of `party` for batch `batch` (see [`Dealer::start_batch`](crate::Dealer::start_batch)).
    pub fn for_batch(party: Party, seed: &Seed, batch: u64) -> Self {
        MaterialGen {
            party,
            prg: Prg::with_stream(seed, batch),
        }
    }

    /// The party this generator expands for.
    pub fn party(&self) -> Party {
        self.party
    }

    /// This party's material for `req`, given the dealer's message to this party.
    pub fn expand(&mut self, req: &Request, msg: &[u8]) -> Result<Material> {
        let expected = req.dealer_bytes(self.party);
        if msg.len() != expected {
            return Err(MpcError::Dealer(format!(
                "{}: message of {} bytes, expected {expected}",
                req.kind(),
                msg.len()
            )));
        }
        Ok(with_kind!(req, K => Material::from(self.expand_kind::<K>(req, msg))))
    }

    /// `K`'s material: drawn, its keys read from the head of `msg` and (party
    /// 1) its corrected parts from the rest.
    fn expand_kind<K: Kind>(&mut self, req: &Request, msg: &[u8]) -> K {
        let parts = K::parts(req);
        let shape = K::key_shape(req);
        let at = shape.wire_len();
        let drawn = draw_parts(&parts, self.party, &mut self.prg);
        let mut m = K::assemble(drawn, K::Keys::read(&shape, &msg[..at]));
        if self.party == Party::P1 {
            fill_corrections(&parts, &mut m, &msg[at..]);
        }
        m
    }
}

//! Recording a program's plan: its requests, answered with placeholder
//! material of the declared shapes.

use crate::dealer::material::{Material, with_kind};
use crate::dealer::parts::{Keys, Kind, draw_parts};
use crate::dealer::pool::CorrelationSource;
use crate::dealer::request::Request;
use crate::error::Result;
use crate::prg::{Prg, Seed};
use crate::share::Party;

/// Records a program's requests and hands out placeholder material of the
/// right shape, so the program can run once without a dealer to learn its plan.
#[derive(Debug)]
pub struct Recorder {
    party: Party,
    plan: Vec<Request>,
    prg: Prg,
}

impl Recorder {
    /// A recorder for `party`.
    pub fn new(party: Party) -> Self {
        Recorder {
            party,
            plan: Vec::new(),
            prg: Prg::new(&Seed::from_bytes([0; 32])),
        }
    }

    /// The requests seen so far, in order.
    pub fn into_plan(self) -> Vec<Request> {
        self.plan
    }
}

impl CorrelationSource for Recorder {
    fn take(&mut self, _op: &'static str, req: Request) -> Result<Material> {
        let m = with_kind!(&req, K => Material::from(self.placeholder::<K>(&req)));
        self.plan.push(req);
        Ok(m)
    }

    fn is_recording(&self) -> bool {
        true
    }
}

impl Recorder {
    /// `K`'s material for `req`: drawn, with keys of zero corrections.
    fn placeholder<K: Kind>(&mut self, req: &Request) -> K {
        let drawn = draw_parts(&K::parts(req), self.party, &mut self.prg);
        K::assemble(drawn, K::Keys::zeros(&K::key_shape(req)))
    }
}

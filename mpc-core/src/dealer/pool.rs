//! Where operators take their correlated randomness from, and the
//! preprocessed pool of a whole plan.

use crate::dealer::expand::MaterialGen;
use crate::dealer::material::Material;
use crate::dealer::request::Request;
use crate::error::{MpcError, Result};
use std::collections::VecDeque;

/// Where operators take their correlated randomness from.
pub trait CorrelationSource: Send {
    /// The next material, which must answer `req`.
    fn take(&mut self, op: &'static str, req: Request) -> Result<Material>;

    /// True when the material is placeholder (a [`Recorder`](crate::dealer::Recorder) learning a
    /// plan): operators may then skip local work whose result cannot matter,
    /// such as DCF evaluation (control flow never depends on values).
    fn is_recording(&self) -> bool {
        false
    }
}

/// Preprocessed material, consumed in order.
#[derive(Debug, Default)]
pub struct Pool {
    items: VecDeque<(Request, Material)>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Pool::default()
    }

    /// Append preprocessed material for `req`.
    pub fn push(&mut self, req: Request, m: Material) {
        self.items.push_back((req, m));
    }

    /// Items left.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Expand a whole plan with the dealer's messages for this party.
    pub fn preprocess(
        generator: &mut MaterialGen,
        plan: &[Request],
        msgs: &[Vec<u8>],
    ) -> Result<Pool> {
        if plan.len() != msgs.len() {
            return Err(MpcError::Dealer(format!(
                "{} dealer messages for a plan of {} requests",
                msgs.len(),
                plan.len()
            )));
        }
        let mut pool = Pool::new();
        for (req, msg) in plan.iter().zip(msgs) {
            let m = generator.expand(req, msg)?;
            pool.push(req.clone(), m);
        }
        Ok(pool)
    }
}

impl CorrelationSource for Pool {
    fn take(&mut self, op: &'static str, req: Request) -> Result<Material> {
        match self.items.front() {
            None => Err(MpcError::PoolExhausted {
                op,
                needed: format!("{req:?}"),
            }),
            Some((r, _)) if *r != req => Err(MpcError::OutOfStep {
                op,
                needed: format!("{req:?}"),
                found: format!("{r:?}"),
            }),
            Some(_) => Ok(self.items.pop_front().expect("front exists").1),
        }
    }
}

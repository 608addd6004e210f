//! The dealer: both parties' streams, the weight masks of a model load, and
//! its answer to each request (generic over the kind's declaration).

use crate::dealer::masks::Masks;
use crate::dealer::material::with_kind;
use crate::dealer::parts::{Kind, draw_kind, put_corrections};
use crate::dealer::request::Request;
use crate::error::Result;
use crate::prg::{Prg, Seed};
use crate::share::Party;

/// What the dealer sends for one request: a message for each party (often empty for party 0).
#[derive(Clone, Default)]
pub struct Dealt {
    /// Message for party 0.
    pub to_p0: Vec<u8>,
    /// Message for party 1.
    pub to_p1: Vec<u8>,
}

impl std::fmt::Debug for Dealt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dealt(<{} + {} secret bytes>)",
            self.to_p0.len(),
            self.to_p1.len()
        )
    }
}

/// The trusted dealer: holds both parties' seeds, never sees inputs or weights.
///
/// Each batch (the model load, then one batch per inference) is drawn from
/// its own ChaCha stream of the two seeds ([`Dealer::start_batch`],
/// [`MaterialGen::for_batch`](crate::MaterialGen::for_batch)), so batches can be expanded independently and
/// in any order; the weight masks of the model load stay with the dealer.
#[derive(Debug)]
pub struct Dealer {
    seeds: [Seed; 2],
    prg: [Prg; 2],
    /// Full weight masks `B = B₀ + B₁`, by weight id.
    masks: Masks,
}

impl Dealer {
    /// A dealer sharing `seed0` with party 0 and `seed1` with party 1.
    pub fn new(seed0: &Seed, seed1: &Seed) -> Self {
        Dealer {
            seeds: [seed0.clone(), seed1.clone()],
            prg: [Prg::new(seed0), Prg::new(seed1)],
            masks: Masks::default(),
        }
    }

    /// Deal the following requests from batch `batch`'s streams (a new
    /// dealer starts in batch 0).
    pub fn start_batch(&mut self, batch: u64) {
        self.prg = [
            Prg::with_stream(&self.seeds[0], batch),
            Prg::with_stream(&self.seeds[1], batch),
        ];
    }

    /// Answer one request: the keys (to both parties) and party 1's
    /// corrections, in the order the kind declares its parts.
    pub fn deal(&mut self, req: &Request) -> Result<Dealt> {
        with_kind!(req, K => self.deal_kind::<K>(req))
    }

    fn deal_kind<K: Kind>(&mut self, req: &Request) -> Result<Dealt> {
        let m0: K = draw_kind(req, Party::P0, &mut self.prg[0]);
        let m1: K = draw_kind(req, Party::P1, &mut self.prg[1]);
        let (full, keys) = K::derive(&mut self.masks, req, &m0, &m1)?;
        let mut to_p1 = keys.clone();
        put_corrections(&K::parts(req), &m0, &full, &mut to_p1);
        Ok(Dealt { to_p0: keys, to_p1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dealer::expand::MaterialGen;
    use crate::dealer::request::{Squares, ValueProducts};

    /// One request of every kind and variety (weights masked first).
    pub(crate) fn every_kind() -> Vec<Request> {
        let products = ValueProducts {
            cols: 4,
            scale: Some(2),
            next: Some((3, 5)),
        };
        vec![
            Request::WeightMask { id: 1, k: 4, n: 3 },
            Request::WeightMask { id: 2, k: 1, n: 4 },
            Request::WeightMask { id: 3, k: 4, n: 5 },
            Request::Triple { n: 5 },
            Request::Dot { n: 3, terms: 2 },
            Request::Square { n: 4 },
            Request::MatMul { m: 2, k: 3, n: 2 },
            Request::RowScale { rows: 2, cols: 3 },
            Request::TruncRowScale {
                rows: 2,
                cols: 3,
                shift: 12,
            },
            Request::PendingRowScale {
                rows: 2,
                cols: 3,
                x_shift: 12,
                v_shift: 14,
            },
            Request::PendingRowScale {
                rows: 2,
                cols: 3,
                x_shift: 40,
                v_shift: 30,
            },
            Request::WeightMatMul {
                id: 1,
                m: 2,
                k: 4,
                n: 3,
            },
            Request::NormProducts {
                id: Some(2),
                next: Some((3, 5)),
                square: true,
                rows: 2,
                cols: 4,
            },
            Request::NormProducts {
                id: None,
                next: None,
                square: true,
                rows: 2,
                cols: 4,
            },
            Request::Wrap { n: 7, shift: 12 },
            Request::Compare {
                n: 3,
                bits: 40,
                coarse: 2,
            },
            Request::BitCompare {
                n: 8,
                bits: 40,
                coarse: 2,
                points: 2,
                select: true,
                square: Squares::RowSums(4),
                trunc: 12,
                products: Some(products),
            },
            Request::BitCompare {
                n: 4,
                bits: 30,
                coarse: 0,
                points: 3,
                select: true,
                square: Squares::EachTruncated(6),
                trunc: 0,
                products: None,
            },
            Request::BitCompare {
                n: 4,
                bits: 30,
                coarse: 1,
                points: 0,
                select: false,
                square: Squares::Each,
                trunc: 10,
                products: None,
            },
            Request::BitCompare {
                n: 4,
                bits: 64,
                coarse: 0,
                points: 1,
                select: true,
                square: Squares::No,
                trunc: 10,
                products: None,
            },
            Request::CompareProducts {
                n: 3,
                bits: 40,
                coarse: 2,
                trunc: 12,
                stops: vec![4, 9],
            },
            Request::CompareProducts {
                n: 3,
                bits: 20,
                coarse: 0,
                trunc: 0,
                stops: vec![],
            },
        ]
    }

    fn fnv(h: u64, bytes: &[u8]) -> u64 {
        bytes.iter().fold(h, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The dealer's messages for every kind, from fixed seeds, are the
    /// stored bytes (a 64-bit FNV-1a of each party's, and their lengths),
    /// so the order in which material is drawn from the streams and the
    /// corrections' encoding stay what they are; each party expands them.
    #[test]
    fn every_kind_deals_the_same_bytes_from_the_same_seeds() {
        let (s0, s1) = (Seed::for_tests(100), Seed::for_tests(101));
        let mut dealer = Dealer::new(&s0, &s1);
        let mut gens = [
            MaterialGen::new(Party::P0, &s0),
            MaterialGen::new(Party::P1, &s1),
        ];
        let (mut h, mut len) = ([0xcbf2_9ce4_8422_2325u64; 2], [0usize; 2]);
        for req in every_kind() {
            let d = dealer.deal(&req).unwrap();
            for (p, msg) in [&d.to_p0, &d.to_p1].into_iter().enumerate() {
                let party = Party::from_index(p).unwrap();
                assert_eq!(msg.len(), req.dealer_bytes(party), "{req:?}");
                h[p] = fnv(h[p], msg);
                len[p] += msg.len();
                gens[p].expand(&req, msg).unwrap();
            }
        }
        assert_eq!(len, [18379, 20541]);
        assert_eq!(
            h,
            [0x591117eabb2f1d40, 0xf258215e07503031],
            "fingerprints {h:#018x?}"
        );
    }
}

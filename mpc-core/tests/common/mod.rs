//! Helpers shared by the integration tests: share real inputs, run both
//! parties in memory, reconstruct and decode.
#![allow(dead_code)]

use mpc_core::local::{LocalRun, run_local};
use mpc_core::{FixedPoint, Party, Prg, Result, Seed, Session, Share, reconstruct, share_secret};

/// Inputs shared for both parties: `shares[p][i]` is party `p`'s share of input `i`.
pub struct Shared {
    pub shares: [Vec<Share>; 2],
}

impl Shared {
    pub fn new(fp: FixedPoint, inputs: &[&[f64]]) -> Shared {
        let mut prg = Prg::new(&Seed::for_tests(99));
        let mut s0 = Vec::new();
        let mut s1 = Vec::new();
        for x in inputs {
            let (a, b) = share_secret(&fp.encode_all(x), &mut prg);
            s0.push(a);
            s1.push(b);
        }
        Shared { shares: [s0, s1] }
    }
    pub fn of(&self, s: &Session) -> &[Share] {
        &self.shares[s.party().index()]
    }
}

/// Run `f` on both parties with `inputs` shared; return the decoded output and the run.
pub fn run<F>(fp: FixedPoint, inputs: &[&[f64]], f: F) -> (Vec<f64>, LocalRun<Share>)
where
    F: Fn(&mut Session, &[Share]) -> Result<Share> + Sync,
{
    run_at(fp, fp.frac_bits, inputs, f)
}

/// As [`run`], decoding the output at `out_bits` fractional bits.
pub fn run_at<F>(
    fp: FixedPoint,
    out_bits: u32,
    inputs: &[&[f64]],
    f: F,
) -> (Vec<f64>, LocalRun<Share>)
where
    F: Fn(&mut Session, &[Share]) -> Result<Share> + Sync,
{
    let shared = Shared::new(fp, inputs);
    let r = run_local(fp, |s| {
        let xs = shared.of(s).to_vec();
        f(s, &xs)
    })
    .expect("secure run");
    let v = reconstruct(&r.outputs[0], &r.outputs[1]);
    let out = v
        .iter()
        .map(|x| mpc_core::fixed::decode_at(*x, out_bits))
        .collect();
    (out, r)
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Deterministic pseudo-random reals in `[lo, hi)`.
pub fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut p = Prg::new(&Seed::for_tests(seed));
    (0..n)
        .map(|_| lo + (hi - lo) * ((p.next_u64() >> 11) as f64 / (1u64 << 53) as f64))
        .collect()
}

pub const P0: Party = Party::P0;

/// Party's share `s` at the session's `f` fractional bits, a rows × cols matrix.
pub fn fx(c: &mpc_core::Ctx<'_>, s: &Share, rows: usize, cols: usize) -> mpc_core::Fx {
    c.fx(s.clone(), mpc_core::Shape::new(rows, cols))
}

/// `op`'s result with its pending truncation applied, as a share.
pub fn settled(op: mpc_core::Op<mpc_core::Fx>) -> mpc_core::Op<Share> {
    op.then(|c, y| c.settle(y)).map(mpc_core::Fx::into_share)
}

/// Party's share `s` at the session's `f` fractional bits, as one row.
pub fn flat(c: &mpc_core::Ctx<'_>, s: &Share) -> mpc_core::Fx {
    fx(c, s, 1, s.len())
}

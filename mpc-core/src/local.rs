//! Run both parties and the dealer in one process over an in-memory channel.
//!
//! Used by tests, benchmarks and the client's local mode. The program runs
//! three times: once per party under a [`Recorder`] with an [`EchoChannel`]
//! to learn its correlation plan (they must agree), then the dealer answers
//! the plan and each party expands its answers into a [`Pool`] (offline),
//! then both parties run for real on two threads (online).

use crate::channel::{CommStats, CountingChannel, EchoChannel, MemChannel};
use crate::dealer::{Dealer, MaterialGen, Pool, Recorder, Request};
use crate::error::{MpcError, Result};
use crate::fixed::FixedPoint;
use crate::prg::Seed;
use crate::session::Session;
use crate::share::Party;
use std::time::{Duration, Instant};

/// What a local two-party run produced and cost.
#[derive(Debug)]
pub struct LocalRun<T> {
    /// Party 0's and party 1's outputs.
    pub outputs: [T; 2],
    /// Online traffic of each party.
    pub online: [CommStats; 2],
    /// Bytes the dealer sent to party 0 and to party 1.
    pub dealer_bytes: [u64; 2],
    /// The correlation plan (one entry per request).
    pub plan: Vec<Request>,
    /// Wall time of the dealer and the pool expansion.
    pub offline_time: Duration,
    /// Wall time of the online phase (both parties in parallel).
    pub online_time: Duration,
}

/// Record the correlation plan of `program` for `party` without a peer or a dealer.
pub fn record_plan<T, E, F>(
    fp: FixedPoint,
    party: Party,
    program: &F,
) -> std::result::Result<Vec<Request>, E>
where
    F: Fn(&mut Session) -> std::result::Result<T, E>,
{
    let mut rec = Recorder::new(party);
    let mut ch = EchoChannel::default();
    {
        let mut s = Session::new(party, fp, &mut ch, &mut rec);
        program(&mut s)?;
    }
    Ok(rec.into_plan())
}

/// The dealer's messages for a plan, one per request, for one party.
pub type DealerMessages = Vec<Vec<u8>>;

/// The dealer's messages for a plan: `(to party 0, to party 1)`.
pub fn deal_plan(
    dealer: &mut Dealer,
    plan: &[Request],
) -> Result<(DealerMessages, DealerMessages)> {
    let mut m0 = Vec::with_capacity(plan.len());
    let mut m1 = Vec::with_capacity(plan.len());
    for req in plan {
        let d = dealer.deal(req)?;
        m0.push(d.to_p0);
        m1.push(d.to_p1);
    }
    Ok((m0, m1))
}

/// Run `program` as both parties with fresh dealer seeds. The program's
/// error type only needs to absorb [`MpcError`].
pub fn run_local<T, E, F>(fp: FixedPoint, program: F) -> std::result::Result<LocalRun<T>, E>
where
    T: Send,
    E: From<MpcError> + Send,
    F: Fn(&mut Session) -> std::result::Result<T, E> + Sync,
{
    let plan = record_plan(fp, Party::P0, &program)?;
    let plan1 = record_plan(fp, Party::P1, &program)?;
    if plan != plan1 {
        return Err(MpcError::Dealer(
            "the two parties' programs ask for different correlations".into(),
        )
        .into());
    }
    let t0 = Instant::now();
    let (seed0, seed1) = (Seed::random(), Seed::random());
    let mut dealer = Dealer::new(&seed0, &seed1);
    let (msgs0, msgs1) = deal_plan(&mut dealer, &plan)?;
    let dealer_bytes = [
        msgs0.iter().map(|m| m.len() as u64).sum(),
        msgs1.iter().map(|m| m.len() as u64).sum(),
    ];
    let mut pools = [
        Pool::preprocess(&mut MaterialGen::new(Party::P0, &seed0), &plan, &msgs0)?,
        Pool::preprocess(&mut MaterialGen::new(Party::P1, &seed1), &plan, &msgs1)?,
    ];
    let offline_time = t0.elapsed();

    let (c0, c1) = MemChannel::pair();
    let t1 = Instant::now();
    let [pool0, pool1] = &mut pools;
    let (r0, r1) = std::thread::scope(|scope| {
        let program = &program;
        let run = move |party: Party, ch: MemChannel, pool: &mut Pool| {
            let mut ch = CountingChannel::new(ch);
            let out = {
                let mut s = Session::new(party, fp, &mut ch, pool);
                program(&mut s)
            };
            out.map(|o| (o, ch.stats()))
        };
        let h1 = scope.spawn(move || run(Party::P1, c1, pool1));
        let r0 = run(Party::P0, c0, pool0);
        let r1 = h1.join().expect("party 1 thread panicked");
        (r0, r1)
    });
    let online_time = t1.elapsed();
    let (o0, s0) = r0?;
    let (o1, s1) = r1?;
    Ok(LocalRun {
        outputs: [o0, o1],
        online: [s0, s1],
        dealer_bytes,
        plan,
        offline_time,
        online_time,
    })
}

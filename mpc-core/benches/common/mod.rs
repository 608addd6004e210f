//! Shared by the operator benchmarks: inputs at the shapes of vit_7_4_32
//! (f = 16), a criterion group that reports the *online* time only, and a
//! one-off line per operator with its rounds, bytes and dealer bytes.
//!
//! `run_local` does the plan recording, the dealer, the pool expansion and the
//! online phase in one call; the benchmarks time the whole call but hand
//! criterion `LocalRun::online_time`, so the figures criterion prints are
//! online wall times (both parties on two threads of this machine).
#![allow(dead_code)]

use criterion::{Criterion, SamplingMode};
use mpc_core::local::{deal_plan, record_plan, run_local};
use mpc_core::{
    CommStats, CountingChannel, Dealer, FixedPoint, MaterialGen, MemChannel, Party, Pool, Prg,
    Result, Seed, Session, Share, share_secret,
};
use std::time::{Duration, Instant};

pub const FP: FixedPoint = FixedPoint { frac_bits: 16 };
/// Tokens (7×7 patches of a 32×32 image, plus the class token).
pub const N: usize = 65;
/// Embedding width.
pub const C: usize = 256;
/// Width of the fused QKV projection (3·C).
pub const H: usize = 768;
/// MLP hidden width.
pub const MLP: usize = 512;
/// Attention heads.
pub const HEADS: usize = 4;
/// Head width.
pub const D: usize = 64;

/// `n` reals uniform in `[lo, hi)`, reproducible from `seed`.
pub fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut p = Prg::new(&Seed::for_tests(seed));
    (0..n)
        .map(|_| lo + (hi - lo) * ((p.next_u64() >> 11) as f64 / (1u64 << 53) as f64))
        .collect()
}

/// `shares[p][i]`: party `p`'s share of input `i`, at `FP`.
pub fn share_inputs(inputs: &[Vec<f64>]) -> [Vec<Share>; 2] {
    let mut prg = Prg::new(&Seed::for_tests(1));
    let mut shares = [Vec::new(), Vec::new()];
    for x in inputs {
        let (a, b) = share_secret(&FP.encode_all(x), &mut prg);
        shares[0].push(a);
        shares[1].push(b);
    }
    shares
}

/// What one run of an operator cost.
#[derive(Clone, Copy, Debug)]
pub struct Costs {
    pub online: [CommStats; 2],
    pub dealer_bytes: [u64; 2],
    pub offline_time: Duration,
    pub online_time: Duration,
}

/// Print the costs of one run (stderr), for the README table.
pub fn print_costs(name: &str, shape: &str, c: &Costs) {
    eprintln!(
        "costs {name} [{shape}]: rounds {} | sent/party B: P0 {} P1 {} | dealer B: ->P0 {} ->P1 {} \
         | offline {:.2} ms, online {:.2} ms (this single run)",
        c.online[0].rounds,
        c.online[0].bytes_sent,
        c.online[1].bytes_sent,
        c.dealer_bytes[0],
        c.dealer_bytes[1],
        c.offline_time.as_secs_f64() * 1e3,
        c.online_time.as_secs_f64() * 1e3,
    );
    assert_eq!(
        c.online[0].rounds, c.online[1].rounds,
        "{name}: the parties disagree on rounds"
    );
}

/// A criterion group for one operator: 10 samples, flat sampling (every
/// sample runs the same iteration count, so slow operators need only 10
/// runs), short warm-up and measurement (measured in online time).
fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    g
}

/// Run `f` on both parties (inputs shared once) with `run_local`.
fn run_once<F>(shares: &[Vec<Share>; 2], f: &F) -> Costs
where
    F: Fn(&mut Session, &[Share]) -> Result<Share> + Sync,
{
    let r = run_local(FP, |s| f(s, &shares[s.party().index()])).expect("secure run");
    Costs {
        online: r.online,
        dealer_bytes: r.dealer_bytes,
        offline_time: r.offline_time,
        online_time: r.online_time,
    }
}

/// Benchmark one secure operator `f` on `inputs`: print its costs once, then
/// let criterion measure its online time (`name/shape`).
pub fn bench_operator<F>(c: &mut Criterion, name: &str, shape: &str, inputs: &[Vec<f64>], f: F)
where
    F: Fn(&mut Session, &[Share]) -> Result<Share> + Sync,
{
    let shares = share_inputs(inputs);
    print_costs(name, shape, &run_once(&shares, &f));
    group(c, name).bench_function(shape, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_once(&shares, &f).online_time).sum())
    });
}

/// As [`run_local`], but the program has an untimed `setup` stage (such as
/// masking a weight once per model load) followed by the `timed` stage: the
/// returned costs (traffic, dealer bytes, online time) are those of `timed`
/// alone; the setup's online traffic is returned beside them.
pub fn run_split<U, S, T>(shares: &[Vec<Share>; 2], setup: &S, timed: &T) -> (Costs, [CommStats; 2])
where
    U: Send,
    S: Fn(&mut Session, &[Share]) -> Result<U> + Sync,
    T: Fn(&mut Session, &[Share], &U) -> Result<Share> + Sync,
{
    let whole = |s: &mut Session| {
        let mine = &shares[s.party().index()];
        let u = setup(s, mine)?;
        timed(s, mine, &u)
    };
    let plan = record_plan(FP, Party::P0, &whole).expect("record plan");
    assert_eq!(
        plan,
        record_plan(FP, Party::P1, &whole).expect("record plan"),
        "the parties' plans differ"
    );
    let setup_len = record_plan(FP, Party::P0, &|s: &mut Session| {
        let mine = &shares[s.party().index()];
        setup(s, mine)
    })
    .expect("record setup plan")
    .len();

    let t0 = Instant::now();
    let (seed0, seed1) = (Seed::random(), Seed::random());
    let mut dealer = Dealer::new(&seed0, &seed1);
    let (msgs0, msgs1) = deal_plan(&mut dealer, &plan).expect("deal");
    let dealer_bytes = [
        msgs0[setup_len..].iter().map(|m| m.len() as u64).sum(),
        msgs1[setup_len..].iter().map(|m| m.len() as u64).sum(),
    ];
    let mut pools = [
        Pool::preprocess(&mut MaterialGen::new(Party::P0, &seed0), &plan, &msgs0).expect("pool"),
        Pool::preprocess(&mut MaterialGen::new(Party::P1, &seed1), &plan, &msgs1).expect("pool"),
    ];
    let offline_time = t0.elapsed();

    let (c0, c1) = MemChannel::pair();
    let [pool0, pool1] = &mut pools;
    // Each party: setup, then timestamps around the timed stage. The setup
    // ends with an opening, so the parties leave it together.
    let run = |party: Party, ch: MemChannel, pool: &mut Pool| {
        let mut ch = CountingChannel::new(ch);
        let mine = &shares[party.index()];
        let u = setup(&mut Session::new(party, FP, &mut ch, pool), mine).expect("setup");
        let before = ch.stats();
        let start = Instant::now();
        timed(&mut Session::new(party, FP, &mut ch, pool), mine, &u).expect("timed stage");
        (before, ch.stats() - before, start, Instant::now())
    };
    let (r0, r1) = std::thread::scope(|scope| {
        let h1 = scope.spawn(|| run(Party::P1, c1, pool1));
        let r0 = run(Party::P0, c0, pool0);
        (r0, h1.join().expect("party 1 panicked"))
    });
    let online_time = r0.3.max(r1.3) - r0.2.min(r1.2);
    (
        Costs {
            online: [r0.1, r1.1],
            dealer_bytes,
            offline_time,
            online_time,
        },
        [r0.0, r1.0],
    )
}

/// Benchmark the `timed` stage of a two-stage program (see [`run_split`]).
pub fn bench_split<U, S, T>(
    c: &mut Criterion,
    name: &str,
    shape: &str,
    inputs: &[Vec<f64>],
    setup: S,
    timed: T,
) where
    U: Send,
    S: Fn(&mut Session, &[Share]) -> Result<U> + Sync,
    T: Fn(&mut Session, &[Share], &U) -> Result<Share> + Sync,
{
    let shares = share_inputs(inputs);
    let (costs, setup_traffic) = run_split(&shares, &setup, &timed);
    eprintln!(
        "costs {name} setup (untimed): rounds {} | sent/party B: P0 {} P1 {}",
        setup_traffic[0].rounds, setup_traffic[0].bytes_sent, setup_traffic[1].bytes_sent
    );
    print_costs(name, shape, &costs);
    group(c, name).bench_function(shape, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_split(&shares, &setup, &timed).0.online_time)
                .sum()
        })
    });
}

//! Run both parties and the dealer in one process over an in-memory channel.
//!
//! Used by tests, benchmarks and the client's local mode. The program runs
//! three times: once per party under a [`Recorder`] with an [`EchoChannel`]
//! to learn its correlation plan (they must agree), then the dealer answers
//! the plan and each party expands its answers into a [`Pool`] (offline),
//! then both parties run for real on two threads (online).

use crate::channel::{CommStats, CountingChannel, EchoChannel, MemChannel};
use crate::dealer::{CorrelationSource, Dealer, MaterialGen, Pool, Recorder, Request};
use crate::error::{MpcError, Result};
use crate::feed::{ChannelFeed, DealerFeed, PREFETCH_AHEAD, Prefetch, StreamedPool};
use crate::fixed::FixedPoint;
use crate::prg::Seed;
use crate::session::Session;
use crate::share::Party;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
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

/// Cuts each party's dealer byte stream into pieces of at most `piece`
/// bytes: a request's answer is appended as it is dealt, and every full piece
/// goes out at once. Both parties' pieces go out together and in an order
/// that never puts one party's bytes of a request ahead of the other's bytes
/// of an earlier request (see [`PieceCutter::flush`]), so neither party can
/// wait on bytes the dealer holds back while it is blocked sending to the
/// other.
#[derive(Debug)]
pub struct PieceCutter {
    piece: usize,
    buf: [Vec<u8>; 2],
}

impl PieceCutter {
    /// Pieces of at most `piece` bytes (at least 1).
    pub fn new(piece: usize) -> Self {
        PieceCutter {
            piece: piece.max(1),
            buf: [Vec::new(), Vec::new()],
        }
    }

    /// Append one request's answers; returns the pieces now ready, in the
    /// order to send them, each with its party's index (0 or 1). When
    /// either party has a full piece, both parties' buffers are emptied, so
    /// a party never waits for bytes of a request that was dealt before the
    /// one the dealer is sending now.
    pub fn push(&mut self, to_p0: &[u8], to_p1: &[u8]) -> Vec<(usize, Vec<u8>)> {
        self.buf[0].extend_from_slice(to_p0);
        self.buf[1].extend_from_slice(to_p1);
        if self.buf.iter().any(|b| b.len() >= self.piece) {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// Everything still held, as pieces in the order to send them: each
    /// party's first piece, then the rest of party 0's, then the rest of
    /// party 1's. A buffer holds less than a piece before a push, so the
    /// first pieces carry every byte of the earlier requests and the rest
    /// belong to the last request alone: a party blocked on a full queue
    /// never holds back bytes of an earlier request the other party needs
    /// to get there. (Sending all of party 0's pieces first deadlocked once
    /// a request's key batch spanned more pieces than a party buffers: party
    /// 0 waited in an exchange for party 1, which waited for its bytes of an
    /// earlier request behind them.)
    pub fn flush(&mut self) -> Vec<(usize, Vec<u8>)> {
        let piece = self.piece;
        let mut cut = |party: usize| -> Vec<(usize, Vec<u8>)> {
            let all = std::mem::take(&mut self.buf[party]);
            all.chunks(piece).map(|c| (party, c.to_vec())).collect()
        };
        let (mut p0, mut p1) = (cut(0).into_iter(), cut(1).into_iter());
        let firsts = [p0.next(), p1.next()];
        firsts.into_iter().flatten().chain(p0).chain(p1).collect()
    }
}

/// How [`run_local_streamed`] streams the material.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Largest piece of a party's dealer stream, in bytes.
    pub piece_bytes: usize,
    /// Pieces buffered per party between the dealer and the party.
    pub buffered_pieces: usize,
    /// How long a party waits for the next piece.
    pub wait: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            piece_bytes: 1 << 20,
            buffered_pieces: 64,
            wait: Duration::from_secs(120),
        }
    }
}

/// What [`run_local_streamed`] observed of the stream.
#[derive(Debug)]
pub struct StreamedRun<T> {
    /// Outputs, traffic and plan, as [`run_local`] reports them; the
    /// offline time is the dealer's busy time (it runs beside the parties).
    pub run: LocalRun<T>,
    /// Most dealer bytes that were sent but not yet read by each party.
    pub max_in_flight: [u64; 2],
}

/// A [`ChannelFeed`] that counts the bytes it has read.
struct CountedFeed {
    feed: ChannelFeed,
    read: Arc<AtomicU64>,
}

impl DealerFeed for CountedFeed {
    fn next_piece(&mut self) -> std::result::Result<Vec<u8>, String> {
        let p = self.feed.next_piece()?;
        self.read.fetch_add(p.len() as u64, Ordering::SeqCst);
        Ok(p)
    }
}

/// Record `program`'s plan for both parties and check they agree.
fn agreed_plan<T, E, F>(fp: FixedPoint, program: &F) -> std::result::Result<Vec<Request>, E>
where
    E: From<MpcError>,
    F: Fn(&mut Session) -> std::result::Result<T, E>,
{
    let plan = record_plan(fp, Party::P0, program)?;
    let plan1 = record_plan(fp, Party::P1, program)?;
    if plan != plan1 {
        return Err(MpcError::Dealer(
            "the two parties' programs ask for different correlations".into(),
        )
        .into());
    }
    Ok(plan)
}

/// Run `program` as both parties over an in-memory channel, each taking its
/// material from `sources[party]`; returns outputs, traffic and wall time.
fn run_parties<T, E, F>(
    fp: FixedPoint,
    program: &F,
    sources: [&mut dyn CorrelationSource; 2],
) -> std::result::Result<([T; 2], [CommStats; 2], Duration), E>
where
    T: Send,
    E: Send,
    F: Fn(&mut Session) -> std::result::Result<T, E> + Sync,
{
    let (c0, c1) = MemChannel::pair();
    let t1 = Instant::now();
    let [src0, src1] = sources;
    let (r0, r1) = std::thread::scope(|scope| {
        let run = move |party: Party, ch: MemChannel, src: &mut dyn CorrelationSource| {
            let mut ch = CountingChannel::new(ch);
            let out = {
                let mut s = Session::new(party, fp, &mut ch, src);
                program(&mut s)
            };
            out.map(|o| (o, ch.stats()))
        };
        let h1 = scope.spawn(move || run(Party::P1, c1, src1));
        let r0 = run(Party::P0, c0, src0);
        let r1 = h1.join().expect("party 1 thread panicked");
        (r0, r1)
    });
    let online_time = t1.elapsed();
    let (o0, s0) = r0?;
    let (o1, s1) = r1?;
    Ok(([o0, o1], [s0, s1], online_time))
}

/// Run `program` as both parties with the dealer on a thread beside them,
/// streaming each party's material through a channel of
/// `limits.buffered_pieces` pieces ([`StreamedPool`], expanded
/// [`PREFETCH_AHEAD`] requests ahead by a [`Prefetch`]): memory stays
/// bounded by that buffer and a few requests' material, whatever the plan's
/// size.
pub fn run_local_streamed<T, E, F>(
    fp: FixedPoint,
    limits: StreamLimits,
    program: F,
) -> std::result::Result<StreamedRun<T>, E>
where
    T: Send,
    E: From<MpcError> + Send,
    F: Fn(&mut Session) -> std::result::Result<T, E> + Sync,
{
    let plan = Arc::new(agreed_plan(fp, &program)?);
    let (seed0, seed1) = (Seed::random(), Seed::random());
    let (tx0, rx0) = mpsc::sync_channel::<Vec<u8>>(limits.buffered_pieces);
    let (tx1, rx1) = mpsc::sync_channel::<Vec<u8>>(limits.buffered_pieces);
    let sent = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let read = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let feed = |rx, i: usize| CountedFeed {
        feed: ChannelFeed::new(rx, limits.wait),
        read: read[i].clone(),
    };
    let prefetched =
        |pool: StreamedPool<CountedFeed>| Prefetch::spawn(pool, plan.clone(), PREFETCH_AHEAD);
    let mut pools = [
        prefetched(StreamedPool::new(
            MaterialGen::new(Party::P0, &seed0),
            plan.clone(),
            feed(rx0, 0),
        )),
        prefetched(StreamedPool::new(
            MaterialGen::new(Party::P1, &seed1),
            plan.clone(),
            feed(rx1, 1),
        )),
    ];
    let dealer_plan = plan.clone();
    let (sent_d, read_d) = (sent.clone(), read.clone());
    let dealer = std::thread::spawn(move || -> Result<(Duration, [u64; 2], [u64; 2])> {
        let mut dealer = Dealer::new(&seed0, &seed1);
        let mut cutter = PieceCutter::new(limits.piece_bytes);
        let mut busy = Duration::ZERO;
        let mut max_in_flight = [0u64; 2];
        let txs = [tx0, tx1];
        let mut send = |pieces: Vec<(usize, Vec<u8>)>| -> bool {
            for (i, p) in pieces {
                let len = p.len() as u64;
                if txs[i].send(p).is_err() {
                    return false;
                }
                let s = sent_d[i].fetch_add(len, Ordering::SeqCst) + len;
                let r = read_d[i].load(Ordering::SeqCst);
                max_in_flight[i] = max_in_flight[i].max(s - r.min(s));
            }
            true
        };
        for req in dealer_plan.iter() {
            let t = Instant::now();
            let d = dealer.deal(req)?;
            let pieces = cutter.push(&d.to_p0, &d.to_p1);
            busy += t.elapsed();
            if !send(pieces) {
                break;
            }
        }
        send(cutter.flush());
        let total = [
            sent_d[0].load(Ordering::SeqCst),
            sent_d[1].load(Ordering::SeqCst),
        ];
        Ok((busy, total, max_in_flight))
    });
    let [p0, p1] = &mut pools;
    let parties = run_parties(fp, &program, [p0, p1]);
    drop(pools);
    let (busy, dealer_bytes, max_in_flight) = dealer.join().expect("dealer thread panicked")?;
    let (outputs, online, online_time) = parties?;
    Ok(StreamedRun {
        run: LocalRun {
            outputs,
            online,
            dealer_bytes,
            plan: plan.to_vec(),
            offline_time: busy,
            online_time,
        },
        max_in_flight,
    })
}

/// Run `program` as both parties with fresh dealer seeds. The program's
/// error type only needs to absorb [`MpcError`].
pub fn run_local<T, E, F>(fp: FixedPoint, program: F) -> std::result::Result<LocalRun<T>, E>
where
    T: Send,
    E: From<MpcError> + Send,
    F: Fn(&mut Session) -> std::result::Result<T, E> + Sync,
{
    let plan = agreed_plan(fp, &program)?;
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
    let [pool0, pool1] = &mut pools;
    let (outputs, online, online_time) = run_parties(fp, &program, [pool0, pool1])?;
    Ok(LocalRun {
        outputs,
        online,
        dealer_bytes,
        plan,
        offline_time,
        online_time,
    })
}

#[cfg(test)]
mod tests {
    use super::PieceCutter;

    #[test]
    fn each_partys_first_piece_goes_before_either_partys_later_pieces() {
        let mut cutter = PieceCutter::new(4);
        assert!(cutter.push(&[1, 2], &[9]).is_empty());
        // a request whose party-0 part spans three pieces
        let out = cutter.push(&[3; 10], &[8, 8]);
        let order: Vec<usize> = out.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            order,
            [0, 1, 0, 0],
            "party 1's earlier bytes wait behind party 0's"
        );
        assert_eq!(out[0].1, [1, 2, 3, 3]);
        assert_eq!(out[1].1, [9, 8, 8]);
        assert!(cutter.flush().is_empty());
    }
}

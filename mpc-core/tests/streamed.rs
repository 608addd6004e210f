//! Material streamed from the dealer while the program runs: same results as
//! a preprocessed pool, bounded memory, typed errors when it does not arrive.

mod common;

use common::{Shared, max_abs_diff, uniform};
use mpc_core::compare::Relu;
use mpc_core::local::{StreamLimits, run_local, run_local_streamed};
use mpc_core::{
    ChannelFeed, FixedPoint, Fx, MaterialGen, MemChannel, MpcError, Party, Result, Seed, Session,
    Shape, Share, StreamedPool, reconstruct,
};
use std::sync::Arc;
use std::time::Duration;

const FP: FixedPoint = FixedPoint { frac_bits: 16 };

/// A few "layers" of products, truncations and comparisons, like a network's.
fn layers(s: &mut Session, x: &Share) -> Result<Share> {
    let mut y = x.clone();
    for _ in 0..6 {
        let sq = s.run(|cx| {
            let y = cx.fx(y.clone(), Shape::flat(y.len()));
            cx.mul(&y, &y).settled().map(Fx::into_share)
        })?;
        let r = s.run(|cx| {
            let d = cx.fx(y.sub(&sq), Shape::flat(y.len()));
            cx.relu(&d, Relu::exact(32)).map(Fx::into_share)
        })?;
        y = r.add(&y);
    }
    Ok(y)
}

#[test]
fn streamed_material_gives_the_pooled_result_with_bounded_buffering() {
    let xs = uniform(3000, -1.0, 1.0, 7);
    let shared = Shared::new(FP, &[&xs]);
    let program = |s: &mut Session| layers(s, &shared.of(s)[0]);
    let pooled = run_local(FP, program).unwrap();
    let limits = StreamLimits {
        piece_bytes: 16 << 10,
        buffered_pieces: 2,
        wait: Duration::from_secs(60),
    };
    let streamed = run_local_streamed(FP, limits, program).unwrap();
    let decode = |o: &[Share; 2]| FP.decode_all(&reconstruct(&o[0], &o[1]));
    let (a, b) = (decode(&pooled.outputs), decode(&streamed.run.outputs));
    assert!(
        max_abs_diff(&a, &b) < 1e-3,
        "streamed and pooled results differ"
    );
    assert_eq!(pooled.dealer_bytes, streamed.run.dealer_bytes);
    assert_eq!(pooled.online[0].rounds, streamed.run.online[0].rounds);
    // The dealer never ran more than the buffer (plus the piece being sent)
    // ahead of a party, while the whole plan is many times larger.
    let bound = ((limits.buffered_pieces + 1) * limits.piece_bytes) as u64;
    for p in 0..2 {
        let total = streamed.run.dealer_bytes[p];
        let ahead = streamed.max_in_flight[p];
        assert!(
            ahead <= bound,
            "party {p}: {ahead} bytes in flight > {bound}"
        );
        if p == 1 {
            assert!(total > 20 * bound, "plan too small for the test: {total}");
        }
    }
}

#[test]
fn a_stream_that_ends_early_is_a_typed_error() {
    use mpc_core::local::{deal_plan, record_plan};
    let xs = uniform(500, -1.0, 1.0, 8);
    let shared = Shared::new(FP, &[&xs]);
    let program = |s: &mut Session| layers(s, &shared.of(s)[0]);
    let plan = Arc::new(record_plan(FP, Party::P0, &program).unwrap());
    let (s0, s1) = (Seed::for_tests(1), Seed::for_tests(2));
    let (_, m1) = deal_plan(&mut mpc_core::Dealer::new(&s0, &s1), &plan).unwrap();
    // Half of party 1's bytes, then the dealer is gone.
    let all: Vec<u8> = m1.concat();
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let half = all[..all.len() / 2].to_vec();
    let feeder = std::thread::spawn(move || {
        for piece in half.chunks(1000) {
            tx.send(piece.to_vec()).unwrap();
        }
    });
    let mut pool = StreamedPool::new(
        MaterialGen::new(Party::P1, &s1),
        plan.clone(),
        ChannelFeed::new(rx, Duration::from_secs(30)),
    );
    // Party 1 runs against a peer that echoes nothing useful: run party 0's
    // program side by side so the channel works; only party 1's error matters.
    let (c0, mut c1) = MemChannel::pair();
    let p0 = std::thread::spawn(move || {
        let mut c0 = c0;
        // Answer every message with zeros of the same length until closed.
        use mpc_core::Channel;
        while let Ok(m) = c0.recv() {
            if c0.send(vec![0; m.len()]).is_err() {
                break;
            }
        }
    });
    let err = {
        let mut s = Session::new(Party::P1, FP, &mut c1, &mut pool);
        program(&mut s).unwrap_err()
    };
    assert!(
        matches!(err, MpcError::MaterialUnavailable { .. }),
        "expected MaterialUnavailable, got {err}"
    );
    assert!(pool.taken() > 0 && pool.taken() < plan.len());
    feeder.join().unwrap();
    drop(c1);
    p0.join().unwrap();
}

#[test]
fn a_program_that_leaves_the_plan_is_out_of_step() {
    let plan = Arc::new(vec![mpc_core::dealer::Request::Triple { n: 4 }]);
    let (_tx, rx) = std::sync::mpsc::sync_channel(1);
    let mut pool = StreamedPool::new(
        MaterialGen::new(Party::P0, &Seed::for_tests(1)),
        plan,
        ChannelFeed::new(rx, Duration::from_secs(1)),
    );
    let (mut c0, _c1) = MemChannel::pair();
    let mut s = Session::new(Party::P0, FP, &mut c0, &mut pool);
    let err = s.run(|cx| cx.trunc(&Share::zeros(3), 16)).unwrap_err();
    assert!(matches!(err, MpcError::OutOfStep { .. }), "{err}");
}

#[test]
fn prefetched_material_reports_errors_at_the_request_they_concern() {
    use mpc_core::dealer::Request;
    use mpc_core::{CorrelationSource, Prefetch};
    let plan = Arc::new(vec![
        Request::Triple { n: 4 },
        Request::Wrap { n: 3, shift: 16 },
    ]);
    let pool = |rx| {
        StreamedPool::new(
            MaterialGen::new(Party::P1, &Seed::for_tests(1)),
            plan.clone(),
            ChannelFeed::new(rx, Duration::from_secs(5)),
        )
    };
    // the dealer is gone before the first byte: the asking operator is named
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    drop(tx);
    let mut ahead = Prefetch::spawn(pool(rx), plan.clone(), 2);
    let err = ahead.take("mul", Request::Triple { n: 4 }).unwrap_err();
    assert!(
        matches!(err, MpcError::MaterialUnavailable { op: "mul", .. }),
        "{err}"
    );
    let err = ahead
        .take("trunc", Request::Wrap { n: 3, shift: 16 })
        .unwrap_err();
    assert!(matches!(err, MpcError::MaterialUnavailable { .. }), "{err}");
    // a program that leaves the plan is out of step, as without prefetching
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let mut ahead = Prefetch::spawn(pool(rx), plan.clone(), 2);
    let err = ahead
        .take("trunc", Request::Wrap { n: 3, shift: 16 })
        .unwrap_err();
    assert!(matches!(err, MpcError::OutOfStep { .. }), "{err}");
    drop(tx);
}

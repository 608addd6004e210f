//! Faults of the deployed shape (three processes on loopback, as in
//! `processes.rs`) that `processes.rs` does not cover: party 0 killed with
//! SIGKILL while its sessions run, and a burst of requests against a pool of
//! one batch and one compute slot.

mod common;

use std::time::{Duration, Instant};

use common::deploy::{Deployment, check_correct, ready};
use common::{argmax, max_diff, png, small_model};
use mpcvit_client::{ClientError, Inference};
use tonic::Code;

/// No request of these tests may take longer than this (client side).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// A replacement party 0 must serve within this of its start.
const RECOVER_WITHIN: Duration = Duration::from_secs(30);

/// kill -9 of party 0 while sessions run: every client gets an answer or a
/// clear `UNAVAILABLE`/`ABORTED` within a bound (no hang), party 1 and the
/// dealer stay up, and a replacement party 0 started with the same flags
/// serves correct answers within [`RECOVER_WITHIN`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party0_killed_mid_session_then_a_replacement_serves() {
    let d = Deployment::new("kill-p0");
    let _dealer = d.dealer();
    let _p1 = d.party(1, &["--pool", "1"]);
    // One batch kept ready: of 8 requests at once, all but the first wait
    // at party 0 for material dealt one batch after another.
    let flags = ["--pool", "1"];
    let mut p0 = d.party(0, &flags);
    let client = d.client().await;
    let m = ready(&client).await;
    check_correct(&client, &m, 40..41).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u64 {
        let (client, m) = (client.clone(), m.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let r = tokio::time::timeout(ANSWER_WITHIN, client.infer_image(&m, &png(16, 60 + i)))
                .await
                .unwrap_or_else(|_| panic!("request {i}: no answer within {ANSWER_WITHIN:?}"));
            (i, r, t.elapsed())
        });
    }
    // Kill party 0 as soon as the first answer is back: sessions are then
    // running, and the others admitted or waiting at party 0.
    let (mut ok, mut failed) = (0, 0);
    let mut record = |i: u64, r: Result<Inference, ClientError>, took: Duration| match r {
        Ok(_) => ok += 1,
        Err(e) => {
            println!("faults: party 0 killed: request {i} failed after {took:?}: {e}");
            assert!(
                matches!(e.code(), Some(Code::Unavailable | Code::Aborted)),
                "request {i}: unexpected error: {e}"
            );
            // The client says which party failed.
            assert!(e.to_string().contains("party 0"), "request {i}: {e}");
            failed += 1;
        }
    };
    let (i, r, took) = tasks.join_next().await.unwrap().unwrap();
    p0.0.kill().unwrap();
    p0.0.wait().unwrap();
    let killed = Instant::now();
    record(i, r, took);
    let mut last_failure = Duration::ZERO;
    while let Some(j) = tasks.join_next().await {
        let (i, r, took) = j.unwrap();
        if r.is_err() {
            last_failure = killed.elapsed();
        }
        record(i, r, took);
    }
    println!(
        "faults: party 0 killed: {ok} of 8 answered, {failed} failed, the last failure {:.0} ms \
         after the kill",
        last_failure.as_secs_f64() * 1e3
    );
    assert!(failed > 0, "party 0 was killed but every request succeeded");
    // Party 1 and the dealer keep running, and party 1 notices.
    assert!(d.healthy(0, "mpcvit.v1.Dealer"));
    assert!(d.healthy(2, ""));
    d.wait_health(2, "mpcvit.v1.Inference", false).await;

    // A replacement party 0 with the same flags pairs again and serves.
    let restarted = Instant::now();
    let _p0 = d.party(0, &flags);
    let client = d.client().await;
    let m = client
        .wait_ready("small", RECOVER_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("the replacement party 0 is not ready: {e}"));
    check_correct(&client, &m, 41..43).await;
    let recovered = restarted.elapsed();
    println!(
        "faults: party 0 killed: the replacement served a correct answer {:.0} ms after its start",
        recovered.as_secs_f64() * 1e3
    );
    assert!(recovered < RECOVER_WITHIN, "recovery took {recovered:?}");
    d.wait_health(2, "mpcvit.v1.Inference", true).await;
}

/// Requests in the burst of the pool test.
const BURST: u64 = 16;

/// A burst of [`BURST`] requests at once against one batch kept ready, one
/// compute slot at party 0 and a pool wait of 0.25 s (a session of the
/// `small` model takes about 100 ms here, so the later ones of the burst
/// cannot get a slot or a batch in time): each request gets the right
/// answer or `UNAVAILABLE` (the README's code for no material or no free
/// slot in time), none waits beyond [`ANSWER_WITHIN`], and the parties
/// serve normally afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhausted_under_a_burst_fails_clearly_then_serves() {
    let d = Deployment::new("burst");
    let _dealer = d.dealer();
    let flags = ["--pool", "1", "--max-sessions", "1", "--pool-wait", "0.25"];
    let _p1 = d.party(1, &flags);
    let _p0 = d.party(0, &flags);
    let client = d.client().await;
    let m = ready(&client).await;
    check_correct(&client, &m, 70..71).await;

    let model = small_model();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..BURST {
        // Each request on its own connection, as separate clients.
        let client = d.client().await;
        let m = m.clone();
        tasks.spawn(async move {
            let bytes = png(16, 80 + i);
            let t = Instant::now();
            let r = tokio::time::timeout(ANSWER_WITHIN, client.infer_image(&m, &bytes))
                .await
                .unwrap_or_else(|_| panic!("request {i}: no answer within {ANSWER_WITHIN:?}"));
            (i, bytes, r, t.elapsed())
        });
    }
    let (mut ok, mut refused, mut slowest) = (0, 0, Duration::ZERO);
    while let Some(j) = tasks.join_next().await {
        let (i, bytes, r, took) = j.unwrap();
        slowest = slowest.max(took);
        match r {
            Ok(r) => {
                let plain = model
                    .forward(&model::preprocess(model.config(), &bytes).unwrap())
                    .unwrap();
                assert!(max_diff(&plain, &r.logits) < 0.05, "request {i}");
                assert_eq!(argmax(&plain), argmax(&r.logits), "request {i}");
                ok += 1;
            }
            Err(e) => {
                println!("faults: burst: request {i} refused after {took:?}: {e}");
                assert_eq!(e.code(), Some(Code::Unavailable), "request {i}: {e}");
                refused += 1;
            }
        }
    }
    println!(
        "faults: burst of {BURST} (--pool 1 --max-sessions 1 --pool-wait 0.25): {ok} answered right, \
         {refused} UNAVAILABLE, slowest {:.0} ms, all done in {:.0} ms",
        slowest.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(ok + refused, BURST);
    assert!(ok > 0, "no request of the burst was served");
    assert!(
        refused > 0,
        "every request of the burst was served: no exhaustion"
    );

    // Afterwards, once the pool has its batch again: served normally, one
    // request after another.
    let t = Instant::now();
    let deadline = t + RECOVER_WITHIN;
    while client
        .model(Some("small"))
        .await
        .unwrap()
        .info
        .pool_available
        < 1
    {
        assert!(Instant::now() < deadline, "the pool never refilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_correct(&client, &m, 90..94).await;
    println!(
        "faults: burst: the pool refilled and 4 requests after it answered right {:.0} ms after the burst",
        t.elapsed().as_secs_f64() * 1e3
    );
}

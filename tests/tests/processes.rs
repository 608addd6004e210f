//! The deployed shape: `mpcvit-dealer`, `mpcvit-server --party 1` and
//! `mpcvit-server --party 0` as three processes on loopback, each given only
//! its own directory from `mpcvit-server certs --per-role` and
//! `mpcvit-server split --per-party` (as the containers are); a client in
//! this process. End to end against the plaintext model, the health ports
//! (`--health-listen`, probed with `mpcvit-server health`), then faults: the
//! peer dies mid-inference and comes back; the dealer dies and the pool
//! drains; SIGTERM to each process while paired, and under load; SIGTERM
//! to the dealer while it deals, with no request lost.

use std::time::{Duration, Instant};

use mpcvit_bench::{LinkSpec, Relay};
use mpcvit_e2e::deploy::{Deployment, check_correct, exits_within, ready};
use mpcvit_e2e::load::{Load, reference_images, tally};
use mpcvit_e2e::png;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_end_to_end_and_peer_death() {
    let d = Deployment::new("e2e");
    let _dealer = d.dealer();
    let _p0 = d.party(0, &[]);
    // Party 0 is alive but not ready until party 1 is there to pair with.
    d.wait_health(1, "", true).await;
    assert!(!d.healthy(1, "mpcvit.v1.Inference"));
    let mut p1 = d.party(1, &[]);
    let client = d.client().await;
    let m = ready(&client).await;
    check_correct(&client, &m, 0..3).await;
    for i in 1..3 {
        d.wait_health(i, "mpcvit.v1.Inference", true).await;
    }
    assert!(d.healthy(0, "mpcvit.v1.Dealer"));
    assert!(!d.healthy(0, "no.such.Service"));

    // Party 1 dies while sessions are in flight.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4u64 {
        let (client, m) = (client.clone(), m.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            (client.infer_image(&m, &png(16, 50 + i)).await, t.elapsed())
        });
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    drop(p1);
    let mut failed = 0;
    while let Some(j) = tasks.join_next().await {
        let (r, took) = j.unwrap();
        assert!(took < Duration::from_secs(15), "a session took {took:?}");
        if let Err(e) = r {
            failed += 1;
            let code = e.code();
            assert!(
                matches!(code, Some(Code::Unavailable | Code::Aborted)),
                "unexpected error: {e}"
            );
            // Party 1's death is reported as such, not as the dealer's
            // (which ends the pairing's stream when a party leaves).
            assert!(!e.to_string().contains("dealer"), "{e}");
        }
    }
    assert!(failed > 0, "party 1 died but every session succeeded");
    // Party 0 answers at once that it is not paired.
    let t = Instant::now();
    let e = client.infer_image(&m, &png(16, 9)).await.unwrap_err();
    assert!(
        matches!(e.code(), Some(Code::Unavailable | Code::Aborted)),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // ...and its readiness says so, while it stays alive.
    d.wait_health(1, "mpcvit.v1.Inference", false).await;
    assert!(d.healthy(1, ""));

    // Party 1 comes back: party 0 pairs again and serves.
    p1 = d.party(1, &[]);
    let m = ready(&client).await;
    check_correct(&client, &m, 10..12).await;
    d.wait_health(1, "mpcvit.v1.Inference", true).await;
    drop(p1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealer_death_drains_the_pool_then_fails_clearly() {
    let d = Deployment::new("dealer");
    let dealer = d.dealer();
    let _p1 = d.party(1, &["--pool", "2"]);
    let _p0 = d.party(0, &["--pool", "2"]);
    let client = d.client().await;
    ready(&client).await;
    // Wait until both pools are full.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Both parties hold at least two batches.
        let m = client.model(Some("small")).await.unwrap();
        if m.info.pool_available >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "pools never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(dealer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = client.model(Some("small")).await.unwrap();
    check_correct(&client, &m, 20..22).await;
    let t = Instant::now();
    let e = client.infer_image(&m, &png(16, 23)).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(e.to_string().contains("dealer"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// SIGTERM while paired (as Kubernetes and compose stop containers): party
/// 1 ends its pairing and tells party 0, and exits within seconds; a
/// replacement started with the same flags serves at once. The dealer and
/// party 0 stop as promptly while paired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_pairing_and_a_replacement_serves() {
    let d = Deployment::new("sigterm");
    let mut dealer = d.dealer();
    let mut p1 = d.party(1, &[]);
    let mut p0 = d.party(0, &[]);
    let client = d.client().await;
    let m = ready(&client).await;
    check_correct(&client, &m, 30..31).await;

    p1.terminate().unwrap();
    let status = exits_within(&mut p1, Duration::from_secs(15));
    assert!(status.success(), "party 1 exited with {status}");
    // Party 0 was told: not ready any more, at once (not after keepalives).
    d.wait_health(1, "mpcvit.v1.Inference", false).await;
    let p1_log = d.logs("party1");
    assert!(p1_log.contains("pairing ended: shutting down"), "{p1_log}");

    // The replacement, same flags, serves right away.
    let _p1 = d.party(1, &[]);
    let m = ready(&client).await;
    check_correct(&client, &m, 31..33).await;

    dealer.terminate().unwrap();
    let status = exits_within(&mut dealer, Duration::from_secs(15));
    assert!(status.success(), "the dealer exited with {status}");
    p0.terminate().unwrap();
    let status = exits_within(&mut p0, Duration::from_secs(15));
    assert!(status.success(), "party 0 exited with {status}");
    // Party 1 saw party 0 leave.
    d.wait_health(2, "mpcvit.v1.Inference", false).await;
}

/// A SIGTERMed process must be gone within this: the shutdown grace for
/// sessions in flight (`--shutdown-grace`, 5 s) + the close grace for
/// connections (2 s) + slack for a busy 2-core machine.
const EXIT_WITHIN: Duration = Duration::from_secs(12);
/// No request under load may take longer than this (no hang).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// A replacement must serve a right answer within this of its start.
const RECOVER_WITHIN: Duration = Duration::from_secs(30);

/// SIGTERM of each role in turn (party 1, party 0, the dealer) while 4
/// clients send requests: the process exits with success within
/// [`EXIT_WITHIN`]; every request in flight or sent meanwhile either gets
/// the right answer or a clear `UNAVAILABLE`/`ABORTED`, none hangs
/// ([`ANSWER_WITHIN`]); a replacement started with the same flags serves
/// within [`RECOVER_WITHIN`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_each_role_under_load_then_a_replacement_serves() {
    let d = Deployment::new("sigterm-load");
    let mut procs = [d.dealer(), d.party(1, &[]), d.party(0, &[])];
    let client = d.client().await;
    let m = ready(&client).await;
    check_correct(&client, &m, 200..201).await;
    let images = reference_images(8, 210);
    for (i, role) in [(1, "party 1"), (2, "party 0"), (0, "dealer")] {
        let load = Load::start(&d, &m, &images, 4, ANSWER_WITHIN).await;
        // Requests in flight: every client has had an answer.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let t = Instant::now();
        procs[i].terminate().unwrap();
        let status = exits_within(&mut procs[i], EXIT_WITHIN);
        let (exited, exit_at) = (t.elapsed(), Instant::now());
        assert!(status.success(), "{role} exited with {status}");
        // Keep the load on a moment after the exit: requests then meet the
        // role's absence.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let outcomes = load.stop().await;
        let what = format!("processes: SIGTERM {role} under load");
        let tally = tally(&outcomes, &[Code::Unavailable, Code::Aborted], &what);
        let in_flight: Vec<_> = outcomes
            .iter()
            .filter(|o| o.sent < t && o.sent + o.took > t)
            .collect();
        let in_flight_right = in_flight.iter().filter(|o| o.result.is_ok()).count();
        for c in 0..4 {
            assert!(
                outcomes.iter().any(|o| o.client == c && o.result.is_ok()),
                "{what}: client {c} got no answer before the SIGTERM"
            );
        }
        // The replacement, same flags.
        procs[i] = match i {
            0 => d.dealer(),
            p => d.party(2 - p, &[]),
        };
        let recovered = d.serves_within(RECOVER_WITHIN).await;
        let after_exit = exit_at.elapsed();
        println!(
            "{what}: exited (status 0) {:.0} ms after the signal; {} of {} requests in flight \
             at the signal answered right; {} requests: {} right, {} failed, the slowest {:.0} \
             ms; the replacement served a right answer {:.0} ms after its start ({:.0} ms after \
             the exit)",
            exited.as_secs_f64() * 1e3,
            in_flight_right,
            in_flight.len(),
            outcomes.len(),
            tally.answers,
            tally.failures,
            tally.slowest.as_secs_f64() * 1e3,
            recovered.as_secs_f64() * 1e3,
            after_exit.as_secs_f64() * 1e3
        );
    }
    check_correct(&d.client().await, &ready(&client).await, 220..222).await;
}

/// Each party's link to the dealer in the drain test: slow enough (a
/// `small` batch, 0.57 MB per party, takes about 0.2 s) that sessions wait
/// for batches as they stream in, so the signal always finds batches
/// being delivered.
const SLOW_DEALER_LINK: LinkSpec = LinkSpec {
    one_way_delay: Duration::ZERO,
    bits_per_second: Some(20e6),
};

/// SIGTERM of the dealer while 2 clients keep it dealing through a slow
/// link (one batch kept ready: sessions take batches as they stream in):
/// the dealer drains, dealing the batches the parties asked for before its
/// streams end, so every request in flight at the signal gets its right
/// answer (before, a session whose batch was cut off failed: "correlated
/// randomness did not arrive: the dealer's stream for this batch ended").
/// The dealer exits with success within [`EXIT_WITHIN`], and a replacement
/// serves within [`RECOVER_WITHIN`]; three rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_dealer_mid_dealing_loses_no_request() {
    let d = Deployment::new("dealer-drain");
    let mut dealer = d.dealer();
    let relay = Relay::start("127.0.0.1:0", &d.addr(0), SLOW_DEALER_LINK)
        .await
        .unwrap();
    let via_relay = relay.local_addr().to_string();
    let flags = ["--pool", "1", "--dealer", &via_relay];
    let _p1 = d.party(1, &flags);
    let _p0 = d.party(0, &flags);
    let client = d.client().await;
    let m = ready(&client).await;
    let images = reference_images(6, 300);
    for round in 0..3 {
        let load = Load::start(&d, &m, &images, 2, ANSWER_WITHIN).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        // No request after the signal: each one in flight meets it.
        load.stop_sending();
        dealer.terminate().unwrap();
        let status = exits_within(&mut dealer, EXIT_WITHIN);
        assert!(status.success(), "the dealer exited with {status}");
        let outcomes = load.stop().await;
        let what = format!("processes: SIGTERM of the dealer mid-dealing, round {round}");
        let t = tally(&outcomes, &[Code::Unavailable, Code::Aborted], &what);
        println!(
            "{what}: {} requests, {} right, {} failed",
            outcomes.len(),
            t.answers,
            t.failures
        );
        assert_eq!(t.failures, 0, "{what}: a request failed");
        assert!(d.logs("dealer").contains("drained"), "{}", d.logs("dealer"));
        dealer = d.dealer();
        // The next round starts once party 0 paired through the new dealer
        // (until then it serves from the drained pairing's pool, and a
        // request after that pool ran dry is refused UNAVAILABLE).
        let deadline = Instant::now() + RECOVER_WITHIN;
        while d
            .logs("party0")
            .matches("new pairing replaces the drained one")
            .count()
            <= round
        {
            assert!(
                Instant::now() < deadline,
                "no pairing through the new dealer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d.serves_within(RECOVER_WITHIN).await;
    }
}

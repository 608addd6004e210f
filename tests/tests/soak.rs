//! A bounded soak of the deployed shape: the dealer and both parties as
//! three processes on loopback (as in `processes.rs`), 4 clients sending
//! inferences one after another for [`SOAK`], every answer checked against
//! the plaintext model, and each process's resident memory (`VmRSS`)
//! sampled after a warm-up and at the end. The long run (minutes) is the
//! same test with a larger [`SOAK`]; this one must fit in CI.

use std::time::{Duration, Instant};

use mpcvit_client::RemoteModel;
use mpcvit_e2e::deploy::{Deployment, check_correct, ready, rss_kib};
use mpcvit_e2e::load::{Images, Load, reference_images};
use mpcvit_e2e::procs::Proc;

/// How long the 4 clients send inferences after the warm-up: long enough
/// for hundreds of sessions (and so for a per-session leak to show), short
/// enough for CI (about 37 s with start-up and [`WARMUP`] on 2 cores).
const SOAK: Duration = Duration::from_secs(30);
/// Warm-up under the same load before the first RSS sample.
const WARMUP: Duration = Duration::from_secs(5);
/// Concurrent clients, each on its own connection.
const CLIENTS: u64 = 4;
/// Images the clients cycle through (each client starts at another one).
const IMAGES: u64 = 16;
/// A process fails the soak if its RSS at the end exceeds the RSS after
/// warm-up by more than this much plus [`GROWTH_FRACTION`] of it:
/// generous, so that allocator noise on a busy 2-core machine does not
/// fail it, while a leak of even a few KiB per session over hundreds of
/// sessions (each moving megabytes) would.
const GROWTH_SLACK_KIB: u64 = 64 << 10;
const GROWTH_FRACTION: f64 = 0.5;
/// No single inference may take longer than this.
const MAX_LATENCY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_four_clients_answers_right_and_memory_flat() {
    let d = Deployment::new("soak");
    let dealer = d.dealer();
    let p1 = d.party(1, &[]);
    let p0 = d.party(0, &[]);
    let client = d.client().await;
    let m = ready(&client).await;

    // The reference: the plaintext model's logits for each image.
    let images = reference_images(IMAGES, 1000);

    // Warm-up with the same load: pools filled, allocator arenas, buffers
    // and thread pools at their working size before the first sample.
    check_correct(&client, &m, 0..2).await;
    let (warm, _) = drive(&d, &m, &images, WARMUP).await;
    let procs: [(&str, &Proc); 3] = [("dealer", &dealer), ("party 0", &p0), ("party 1", &p1)];
    let sample = || -> Vec<u64> { procs.iter().map(|(_, p)| rss_kib(p)).collect() };
    let start = sample();

    let t0 = Instant::now();
    let (first, _) = drive(&d, &m, &images, SOAK / 2).await;
    let middle = sample();
    let (second, slowest) = drive(&d, &m, &images, SOAK / 2).await;
    let answers = first + second;
    let took = t0.elapsed();
    let end = sample();

    println!(
        "soak: {CLIENTS} clients for {:.1} s after {warm} answers of warm-up: {answers} answers, \
         all with the plaintext top-1 (logits within 0.05), {:.2} answers/s, slowest {:.0} ms",
        took.as_secs_f64(),
        answers as f64 / took.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    let mut grew = Vec::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (i, (name, _)) in procs.iter().enumerate() {
        let (s, e) = (&start[i], &end[i]);
        let bound = s + GROWTH_SLACK_KIB + (*s as f64 * GROWTH_FRACTION) as u64;
        println!(
            "soak: {name}: RSS {:.1} MiB after warm-up, {:.1} MiB half-way, {:.1} MiB at the end \
             (bound {:.1} MiB)",
            mib(*s),
            mib(middle[i]),
            mib(*e),
            mib(bound)
        );
        if *e > bound {
            grew.push(format!("{name}: {s} KiB -> {e} KiB (bound {bound} KiB)"));
        }
    }
    assert!(grew.is_empty(), "memory grew: {grew:?}");
    // Still serving after the soak.
    check_correct(&client, &m, 8..10).await;
}

/// [`CLIENTS`] clients, each on its own connection, sending inferences one
/// after another for `length`, each answer checked against the plaintext
/// logits: the number of answers and the slowest one. Any failure fails the
/// soak.
async fn drive(
    d: &Deployment,
    m: &RemoteModel,
    images: &Images,
    length: Duration,
) -> (u64, Duration) {
    let load = Load::start(d, m, images, CLIENTS, MAX_LATENCY).await;
    tokio::time::sleep(length).await;
    let outcomes = load.stop().await;
    for o in &outcomes {
        if let Err(e) = &o.result {
            panic!("client {}, request {}: {e}", o.client, o.n);
        }
    }
    for c in 0..CLIENTS {
        assert!(
            outcomes.iter().any(|o| o.client == c),
            "client {c} got no answer in {length:?}"
        );
    }
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    (outcomes.len() as u64, slowest)
}

//! End-to-end benchmark across three processes on loopback: the dealer,
//! party 0 and party 1 (each a child process of this example, running the
//! same code as `mpcvit-dealer` / `mpcvit-server --party p`), a client in
//! this process.
//!
//! ```sh
//! cargo run --release -p mpcvit-server --example e2e -- [--preset vit_7_4_32_mu05|vit_9_12_64_mu05|…] [--mu 0.3] [--gelu erf|quad] [--model-dir DIR] [--link none|lan|wan|DELAY_MS,MBIT] [--csv FILE] [--images 4] [--throughput true] [--clients 8] [--per-client 2] [--pool 2] [--pool-buffer-mb 256]
//! ```
//!
//! `--link` puts `mpcvit_bench`'s relay on the party 0 ↔ party 1 link
//! (party 0 dials party 1's peer listener through it; TLS passes through,
//! its server name is the role's, not the address): `lan` = 1 Gbit/s and
//! 0.25 ms each way, `wan` = 400 Mbit/s and 20 ms each way, or
//! `DELAY_MS,MBIT` (`MBIT` 0 = no limit). The dealer's and the client's
//! links stay direct. With a relay it also reports what crossed the link per
//! image and the share of the latency spent on it: the link model's
//! estimate (rounds × one-way delay + bytes / bandwidth) and the time the
//! relay held data in flight. `--csv FILE` appends one row (the format of
//! `mpcvit_bench::report`) for `bench/results/`.
//!
//! `--p1-netns NAME --p1-ip IP --host-ip IP` run party 1 in a network
//! namespace (`bench/wan-netns.sh` makes it, with `tc tbf` shaping the veth
//! pair; `--shaped-mbit` then tells the estimate the bandwidth).
//!
//! Prints, for one image: end-to-end latency with a warm pool, bytes sent
//! by each party, rounds, the parties' online time, the dealer's bytes per
//! inference; then images per second with `--clients` concurrent clients
//! (dealing and pool expansion included: the machine's cores are shared by
//! all three processes), with the CPU time each process spent per image and
//! the throughput that CPU time alone allows (on these cores, and with each
//! process on a machine of its own), and each process's peak resident
//! memory (`VmHWM` from `/proc/PID/status`). Every answer is checked against
//! the plaintext model's top-1.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use mpc_core::{FixedPoint, Party};
use mpcvit_bench::procs::{
    Proc, clock_ticks_per_second, cpu_seconds, free_port, launch, machine_summary, peak_rss_mib,
};
use mpcvit_bench::report::{E2eRow, today_utc};
use mpcvit_bench::{Link, Relay, RelayStats};
use mpcvit_client::{Client, ClientAuth, Inference};
use mpcvit_server::cli::{Cli, Command as ServerCmd};
use mpcvit_server::tls::{CertBundle, Role};

#[derive(Debug, Parser)]
struct Args {
    /// Model preset (random weights of that architecture).
    #[arg(long, default_value = "vit_7_4_32_mu05")]
    preset: String,
    /// Replace the preset's head table: this fraction of the heads
    /// ReLU-Softmax, the rest ScaleAttn (`mpcvit_bench::heads`; 0.5 is the
    /// `_mu05` presets' checkerboard).
    #[arg(long)]
    mu: Option<f64>,
    /// The preset's GeLU: `erf` (the paper's, piecewise under MPC) or `quad`.
    #[arg(long, default_value = "erf")]
    gelu: String,
    /// A model directory (manifest.json + model.safetensors) instead of a preset.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Sequential single-image runs for latency.
    #[arg(long, default_value_t = 4)]
    images: usize,
    /// Concurrent clients for throughput.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Images per client in the throughput run.
    #[arg(long, default_value_t = 2)]
    per_client: usize,
    /// Online batches each party keeps ready.
    #[arg(long, default_value_t = 2)]
    pool: u64,
    /// MiB of dealer material each party buffers per batch (a larger batch
    /// streams while its session runs).
    #[arg(long, default_value_t = mpcvit_server::party::DEFAULT_POOL_BUFFER_BYTES >> 20)]
    pool_buffer_mb: usize,
    /// Also time the forward with both parties in this process (it holds a
    /// whole inference's material: skipped above 1 GB of dealer bytes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    in_memory: bool,
    /// The party 0 ↔ party 1 link: `none` (direct), `lan`, `wan` or
    /// `DELAY_MS,MBIT` through the relay.
    #[arg(long, default_value = "none")]
    link: Link,
    /// Append the latency run's row to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also measure throughput (dealing included) after the latency run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    throughput: bool,
    /// Run party 1 inside this network namespace (`ip netns exec`).
    #[arg(long, requires_all = ["p1_ip", "host_ip"])]
    p1_netns: Option<String>,
    /// Party 1's address in its namespace.
    #[arg(long)]
    p1_ip: Option<String>,
    /// This namespace's address that party 1 reaches (the dealer listens there).
    #[arg(long)]
    host_ip: Option<String>,
    /// Bandwidth shaped outside the relay (tc), Mbit/s, for the estimate.
    #[arg(long)]
    shaped_mbit: Option<f64>,
    /// Kernel threads per party (each party's `--threads`). 0: every core
    /// behind a relay, whose delay makes the parties' work alternate, and
    /// half of them on a direct link, where both work at the same moments.
    #[arg(long, default_value_t = 0)]
    party_threads: usize,
}

fn child_main(args: Vec<String>) -> ! {
    let cli = Cli::parse_from(std::iter::once("mpcvit-server".to_string()).chain(args));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = match cli.command {
        Some(ServerCmd::Dealer(a)) => rt.block_on(mpcvit_server::cli::run_dealer(a)),
        None => rt.block_on(mpcvit_server::cli::run_party(cli.party)),
        Some(_) => unreachable!("only services run as children"),
    };
    if let Err(e) = r {
        eprintln!("child: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        let v = (x * 31 + y * 17 + seed * 101).wrapping_mul(2_654_435_761);
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Online time of one forward with both parties in this process over an
/// in-memory channel: the same computation without gRPC, TLS or separate
/// processes.
fn in_memory_forward(model: &model::Model) -> Duration {
    let input = vec![0.1f32; model.config().input_len()];
    let cost = model::secure::measure_inference(model, &input).unwrap();
    Duration::from_secs_f64(cost.online_seconds)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--child") {
        child_main(argv[2..].to_vec());
    }
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let dir: PathBuf = std::env::temp_dir().join(format!("mpcvit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certs = CertBundle::generate().unwrap();
    certs.write_dir(&dir.join("certs")).unwrap();
    let model = match &a.model_dir {
        Some(d) => model::Model::load_dir(d).unwrap(),
        None => {
            let mut config = mpcvit_server::cli::preset_config(&a.preset).unwrap();
            if a.mu == Some(0.5) && a.preset.ends_with("_mu05") {
                // The bench's μ rule reproduces the presets' checkerboard.
                let ours = mpcvit_bench::heads::attention_at_mu(config.depth, config.heads, 0.5);
                assert_eq!(ours, config.attention, "μ = 0.5 differs from the preset");
            }
            if let Some(mu) = a.mu {
                config = mpcvit_bench::heads::with_mu(config, mu);
            }
            config.gelu = match a.gelu.as_str() {
                "erf" => model::GeluKind::Erf,
                "quad" => model::GeluKind::Quad,
                other => panic!("--gelu erf|quad, not {other:?}"),
            };
            model::Model::random(config, 1).unwrap()
        }
    };
    mpcvit_server::shares::split_to_dir(&model, FixedPoint::default(), &dir.join("model")).unwrap();
    let name = model.config().name.clone();
    let manifest = model.config().to_manifest_json().unwrap();
    let plans =
        mpcvit_server::plan::for_manifest(&manifest, model::SecureParams::default()).unwrap();
    let dealer_bytes = [
        plans.online_dealer_bytes(Party::P0),
        plans.online_dealer_bytes(Party::P1),
    ];
    let in_memory = (a.in_memory && dealer_bytes[1] < 1 << 30).then(|| in_memory_forward(&model));
    // Batches that fit the parties' buffer arrive whole ahead of their
    // sessions ("pool full" = `--pool` batches); a larger batch streams, and
    // only its first part can be ready.
    let ready_batches = if dealer_bytes[1] <= a.pool_buffer_mb << 20 {
        a.pool
    } else {
        1
    };
    // Dealer, party 0, party 1 (client API), party 1 (peer listener). With
    // party 1 in a namespace, its ports are on its address there and the
    // dealer listens where party 1 reaches it.
    let host = a.host_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
    let p1_host = a.p1_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
    let port = || free_port().unwrap();
    let ports: Vec<String> = vec![
        format!("{host}:{}", port()),
        format!("127.0.0.1:{}", port()),
        format!("{p1_host}:{}", port()),
        format!("{p1_host}:{}", port()),
    ];
    // The emulated link: party 0 dials the relay, the relay dials party 1.
    let relay = match a.link.spec() {
        Some(spec) => Some(
            Relay::start("127.0.0.1:0", &ports[3], spec)
                .await
                .expect("relay"),
        ),
        None => None,
    };
    let peer_for_p0 = relay
        .as_ref()
        .map_or(ports[3].clone(), |r| r.local_addr().to_string());
    if let Some(r) = &relay {
        println!(
            "link party 0 → {} (relay: {}) → party 1 at {}",
            r.local_addr(),
            r.spec().describe(),
            ports[3]
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let party_threads = match (a.party_threads, a.link.spec()) {
        (0, Some(_)) => cores,
        (0, None) => (cores / 2).max(1),
        (t, _) => t,
    };
    println!("kernel threads per party: {party_threads} (of {cores} cores)");
    let exe = std::env::current_exe().unwrap();
    let spawn = |args: Vec<String>, log: &str, netns: Option<&str>| {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.arg("--child").args(args).env("RUST_LOG", "info");
        launch(cmd, &dir.join(log)).unwrap()
    };
    let certs_dir = dir.join("certs").display().to_string();
    let model_dir = dir.join("model").display().to_string();
    let dealer = spawn(
        vec![
            "dealer".into(),
            "--listen".into(),
            ports[0].clone(),
            "--certs".into(),
            certs_dir.clone(),
        ],
        "dealer.log",
        None,
    );
    let party = |p: usize| {
        vec![
            "--party".into(),
            p.to_string(),
            "--model".into(),
            model_dir.clone(),
            "--certs".into(),
            certs_dir.clone(),
            "--listen".into(),
            ports[1 + p].clone(),
            "--peer-listen".into(),
            ports[3].clone(),
            "--peer".into(),
            peer_for_p0.clone(),
            "--dealer".into(),
            ports[0].clone(),
            "--pool".into(),
            a.pool.to_string(),
            "--pool-buffer-mb".into(),
            a.pool_buffer_mb.to_string(),
            "--max-sessions".into(),
            a.clients.to_string(),
            "--recv-timeout".into(),
            "300".into(),
            "--pool-wait".into(),
            "600".into(),
            "--threads".into(),
            party_threads.to_string(),
        ]
    };
    let p1: Proc = spawn(party(1), "party1.log", a.p1_netns.as_deref());
    let p0: Proc = spawn(party(0), "party0.log", None);
    // Dealer, party 0, party 1: whose CPU time the throughput runs account.
    let pids = [dealer.id(), p0.id(), p1.id()];
    let tck = clock_ticks_per_second();
    let cpu_now = || pids.map(|pid| cpu_seconds(pid, tck).unwrap_or(f64::NAN));
    let t = Instant::now();
    let auth = ClientAuth::Cert(certs.material(Role::Client));
    let client = loop {
        match Client::connect([&ports[1], &ports[2]], &auth).await {
            Ok(c) => break c,
            Err(_) if t.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let m = client
        .wait_ready(&name, Duration::from_secs(900))
        .await
        .unwrap();
    let ready = t.elapsed();
    let wait_pool = |min: u64| {
        let client = client.clone();
        let name = name.clone();
        async move {
            loop {
                let m = client.model(Some(&name)).await.unwrap();
                if m.info.pool_available >= min {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let t_pool = Instant::now();
    wait_pool(1).await;
    let first_batch = t_pool.elapsed();
    assert_eq!(
        m.info.manifest_json, manifest,
        "the parties serve another manifest"
    );
    println!(
        "model {name}: paired and weights masked {:.1} s after start; first online batch {:.1} s later",
        ready.as_secs_f64(),
        first_batch.as_secs_f64()
    );
    println!(
        "dealer → party 0: {:.2} MB, dealer → party 1: {:.2} MB per inference",
        dealer_bytes[0] as f64 / 1e6,
        dealer_bytes[1] as f64 / 1e6
    );

    // Latency, one image at a time, pool full (no dealing in the background).
    // Every answer is checked against the plaintext model; disagreements
    // are counted and reported (random-weight models of 200 classes have
    // close logits), and the run fails at the end if there were any.
    let disagreements = Arc::new(AtomicU64::new(0));
    let mut runs: Vec<Inference> = Vec::new();
    let mut on_link: Vec<RelayStats> = Vec::new();
    for i in 0..a.images {
        wait_pool(ready_batches).await;
        let bytes = png(i as u32);
        let before = relay.as_ref().map(Relay::stats);
        let r = client.infer_image(&m, &bytes).await.unwrap();
        if let (Some(relay), Some(before)) = (&relay, before) {
            on_link.push(relay.stats().since(&before));
        }
        let plain = model
            .forward(&model::preprocess(model.config(), &bytes).unwrap())
            .unwrap();
        let d = plain
            .iter()
            .zip(&r.logits)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let same = argmax(&plain) == argmax(&r.logits);
        disagreements.fetch_add(u64::from(!same), Ordering::Relaxed);
        println!(
            "image {i}: {:.3} s end to end, online {:.3} s / {:.3} s, max |logit error| {d:.2e}{}",
            r.elapsed.as_secs_f64(),
            r.stats[0].online_micros as f64 / 1e6,
            r.stats[1].online_micros as f64 / 1e6,
            if same {
                ""
            } else {
                ", TOP-1 DIFFERS from plaintext"
            },
        );
        runs.push(r);
    }
    let mut lat: Vec<f64> = runs.iter().map(|r| r.elapsed.as_secs_f64()).collect();
    lat.sort_by(f64::total_cmp);
    let median_latency = lat[lat.len() / 2];
    let r = &runs[0];
    println!();
    println!(
        "| metric (one image, {name}, 3 processes on loopback, party 0 ↔ party 1 link: {}) | value |",
        match (a.link.spec(), a.shaped_mbit) {
            (None, _) => "direct".to_string(),
            (Some(s), None) => format!("relay, {}", s.describe()),
            (Some(s), Some(m)) => format!("relay, {}; tc tbf {m} Mbit/s", s.describe()),
        }
    );
    println!("|---|---|");
    println!(
        "| end-to-end latency, median of {} | {:.3} s |",
        lat.len(),
        lat[lat.len() / 2]
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let online_of = |p: usize| {
        median(
            runs.iter()
                .map(|r| r.stats[p].online_micros as f64 / 1e6)
                .collect(),
        )
    };
    println!(
        "| online time party 0 / party 1, median | {:.3} s / {:.3} s |",
        online_of(0),
        online_of(1)
    );
    println!(
        "| bytes sent by party 0 / party 1 | {} / {} |",
        r.stats[0].bytes_sent, r.stats[1].bytes_sent
    );
    println!("| rounds | {} |", r.stats[0].rounds);
    println!(
        "| client sent (two input shares) | {} B |",
        r.client_bytes_sent
    );
    println!(
        "| dealer bytes to party 0 / party 1 | {} / {} |",
        dealer_bytes[0], dealer_bytes[1]
    );
    match in_memory {
        Some(t) => println!(
            "| same forward, both parties in one process over an in-memory channel | {:.3} s |",
            t.as_secs_f64()
        ),
        None if !a.in_memory => println!(
            "| same forward, both parties in one process over an in-memory channel | skipped (--in-memory false) |"
        ),
        None => println!(
            "| same forward, both parties in one process over an in-memory channel | skipped (whole-inference material) |"
        ),
    }

    // The link: the model's estimate against what the relay measured.
    let rounds = r.stats[0].rounds;
    let bytes_max = r.stats[0].bytes_sent.max(r.stats[1].bytes_sent);
    let mut spec = a.link.spec();
    if let (Some(s), Some(mbit)) = (spec.as_mut(), a.shaped_mbit) {
        s.bits_per_second = Some(mbit * 1e6);
    }
    let estimate = spec.map_or(0.0, |s| s.estimate(rounds, bytes_max).as_secs_f64());
    let in_flight = median(on_link.iter().map(|s| s.in_flight.as_secs_f64()).collect());
    let (fwd, back) = (
        median(on_link.iter().map(|s| s.forward.bytes as f64).collect()),
        median(on_link.iter().map(|s| s.backward.bytes as f64).collect()),
    );
    if let Some(s) = spec {
        println!(
            "| link estimate: {rounds} rounds × {:.2} ms + {bytes_max} B / {} | {estimate:.3} s ({:.0}% of the latency) |",
            s.one_way_delay.as_secs_f64() * 1e3,
            s.bits_per_second
                .map_or("∞".to_string(), |b| format!("{} Mbit/s", b / 1e6)),
            100.0 * estimate / median_latency
        );
        println!(
            "| link measured by the relay: data in flight (median per image) | {in_flight:.3} s ({:.0}% of the latency) |",
            100.0 * in_flight / median_latency
        );
        println!(
            "| bytes through the relay per image, party 0 → 1 / 1 → 0 (TLS, HTTP/2, framing) | {fwd:.0} / {back:.0} |"
        );
    }
    let online = median(
        runs.iter()
            .map(|r| r.stats[0].online_micros as f64 / 1e6)
            .collect(),
    );
    let agreeing = a.images as u64 - disagreements.load(Ordering::Relaxed);
    if let Some(csv) = &a.csv {
        let attn = &model.config().attention;
        let heads = attn.iter().flatten().count();
        let rs = attn
            .iter()
            .flatten()
            .filter(|&&k| k == model::AttnKind::ReluSoftmax)
            .count();
        let row = E2eRow {
            date: today_utc(),
            machine: machine_summary(),
            model: name.clone(),
            mu: rs as f64 / heads as f64,
            gelu: match model.config().gelu {
                model::GeluKind::Quad => "quad".into(),
                _ => "erf".into(),
            },
            link: match (a.link, spec) {
                (Link::None, _) => "none".into(),
                // Shaped by tc in namespaces: not the relay-only rows.
                (_, Some(s)) if a.shaped_mbit.is_some() => format!(
                    "netns {},{}",
                    s.one_way_delay.as_secs_f64() * 1e3,
                    s.bits_per_second.map_or(0.0, |b| b / 1e6)
                ),
                (_, Some(s)) if s == mpcvit_bench::LinkSpec::LAN => "lan".into(),
                (_, Some(s)) if s == mpcvit_bench::LinkSpec::WAN => "wan".into(),
                (_, Some(s)) => format!(
                    "{},{}",
                    s.one_way_delay.as_secs_f64() * 1e3,
                    s.bits_per_second.map_or(0.0, |b| b / 1e6)
                ),
                (_, None) => unreachable!("a relay has a spec"),
            },
            delay_ms: spec.map_or(0.0, |s| s.one_way_delay.as_secs_f64() * 1e3),
            mbit: spec
                .and_then(|s| s.bits_per_second)
                .map_or(0.0, |b| b / 1e6),
            images: a.images,
            latency_s: median_latency,
            online_s: online,
            rounds,
            bytes_p0: r.stats[0].bytes_sent,
            bytes_p1: r.stats[1].bytes_sent,
            dealer_p0: dealer_bytes[0] as u64,
            dealer_p1: dealer_bytes[1] as u64,
            relay_fwd_bytes: fwd as u64,
            relay_back_bytes: back as u64,
            relay_in_flight_s: in_flight,
            estimate_s: estimate,
            agreement: format!("{agreeing}/{}", a.images),
        };
        row.append(csv).unwrap();
        println!("| row appended to | {} |", csv.display());
    }

    // Throughput, dealing included: one client one image at a time, then
    // `--clients` at once, the same number of images each time. The three
    // processes' CPU time over each run says how busy the machine was and
    // bounds what any concurrency could reach on it.
    let n = if a.throughput {
        a.clients * a.per_client
    } else {
        0
    };
    if a.throughput {
        let cores = cores as f64;
        let mut rates = Vec::new();
        let mut cpu_per_image = Vec::new();
        for (clients, per) in [(1, n), (a.clients, a.per_client)] {
            wait_pool(ready_batches).await;
            let cpu_before = cpu_now();
            let t = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..clients {
                let (auth, ports, m, model) =
                    (auth.clone(), ports.clone(), m.clone(), model.clone());
                let disagreements = disagreements.clone();
                tasks.spawn(async move {
                    let client = Client::connect([&ports[1], &ports[2]], &auth)
                        .await
                        .unwrap();
                    for k in 0..per {
                        let bytes = png((1000 + c * 100 + k) as u32);
                        let r = client.infer_image(&m, &bytes).await.unwrap();
                        let plain = model
                            .forward(&model::preprocess(model.config(), &bytes).unwrap())
                            .unwrap();
                        if argmax(&plain) != argmax(&r.logits) {
                            disagreements.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            while let Some(j) = tasks.join_next().await {
                j.unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            // Dealing for the images of this run may finish after the last
            // answer: wait until the pool is full again, then read the clocks.
            wait_pool(ready_batches).await;
            let secs_with_refill = t.elapsed().as_secs_f64();
            let cpu: Vec<f64> = cpu_now()
                .iter()
                .zip(cpu_before)
                .map(|(after, before)| (after - before) / n as f64)
                .collect();
            rates.push(n as f64 / secs);
            println!(
                "| throughput, {clients} client(s) × {per} images one after another (dealing included) | {:.3} images/s ({n} in {secs:.1} s) |",
                n as f64 / secs
            );
            println!(
                "| CPU per image, dealer / party 0 / party 1 ({clients} client(s)) | {:.3} / {:.3} / {:.3} s |",
                cpu[0], cpu[1], cpu[2]
            );
            println!(
                "| cores busy ({clients} client(s), until the pool is full again) | {:.2} of {cores} |",
                cpu.iter().sum::<f64>() * n as f64 / secs_with_refill
            );
            cpu_per_image.push(cpu);
        }
        println!(
            "| concurrency gain ({} clients over 1) | {:.2}× |",
            a.clients,
            rates[1] / rates[0]
        );
        // Upper bounds from CPU time alone (no waiting on rounds at all): every
        // process on this machine's cores, or each process on a machine of its
        // own with as many cores. Measured with one client.
        let cpu = &cpu_per_image[0];
        let shared = cores / cpu.iter().sum::<f64>();
        let separate = cores / cpu.iter().cloned().fold(0.0, f64::max);
        println!(
            "| CPU bound on images/s: all three processes on these {cores} cores | {shared:.3} ({:.2}× one at a time) |",
            shared / rates[0]
        );
        println!(
            "| CPU bound on images/s: each process on its own {cores}-core machine | {separate:.3} ({:.2}× one at a time here) |",
            separate / rates[0]
        );
    }
    let rss = pids.map(peak_rss_mib);
    println!(
        "| peak resident memory, dealer / party 0 / party 1 | {:.0} / {:.0} / {:.0} MiB |",
        rss[0], rss[1], rss[2]
    );
    let answers = a.images + 2 * n;
    let bad = disagreements.load(Ordering::Relaxed);
    println!(
        "| top-1 agreement with the plaintext model | {}/{answers} |",
        answers as u64 - bad
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        bad, 0,
        "{bad} of {answers} answers differ from the plaintext top-1"
    );
}

//! `mpcvit-bench`: the harness's command line.
//!
//! - `relay --listen ADDR --upstream ADDR --link wan`: a standalone link
//!   emulator (used by `bench/wan-netns.sh`; prints its counters at exit).
//! - `export --mu 0.5 --gelu quad --out DIR`: the random `vit_7_4_32` the
//!   benchmarks run (same seed, same head table) as a plaintext model
//!   directory with the paper's state-dict names, for peers to load, and
//!   `reference.json` (a fixed input and the plaintext logits).
//! - `report`: `bench/results/` from the CSV files.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mpcvit_bench::{Link, Relay, heads, report};

#[derive(Debug, Parser)]
#[command(name = "mpcvit-bench", about = "mpcvit's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Relay TCP connections over an emulated link until interrupted.
    Relay {
        /// Address to accept on.
        #[arg(long)]
        listen: String,
        /// Address each accepted connection is relayed to.
        #[arg(long)]
        upstream: String,
        /// `lan`, `wan` or `DELAY_MS,MBIT` (MBIT 0 = no limit).
        #[arg(long, default_value = "wan")]
        link: Link,
        /// Stop after this many seconds (0 = until interrupted).
        #[arg(long, default_value_t = 0.0)]
        seconds: f64,
    },
    /// Write a random model of a preset shape at μ as a plaintext model
    /// directory (`manifest.json` + `model.safetensors`, the paper's names).
    Export {
        /// `vit_7_4_32` (CIFAR shape) or `vit_9_12_64`.
        #[arg(long, default_value = "vit_7_4_32")]
        shape: String,
        /// Fraction of ReLU-Softmax heads (see `mpcvit_bench::heads`).
        #[arg(long, default_value_t = 0.5)]
        mu: f64,
        /// `erf` or `quad`.
        #[arg(long, default_value = "quad")]
        gelu: String,
        /// Seed of the random weights (the e2e benchmark uses 1).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write `README.md`, `latency_vs_mu.csv` and the SVG figures.
    Report {
        /// Our runs.
        #[arg(long, default_value = "bench/results/e2e.csv")]
        e2e: PathBuf,
        /// Peer runs.
        #[arg(long, default_value = "bench/results/crypten.csv")]
        peers: PathBuf,
        /// The paper's points.
        #[arg(long, default_value = "bench/paper.csv")]
        paper: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
}

/// The configuration the e2e benchmark builds for `shape` at μ with `gelu`.
fn shape_config(shape: &str, mu: f64, gelu: &str) -> Result<model::ModelConfig, String> {
    let base = match shape {
        "vit_7_4_32" => model::ModelConfig::vit_7_4_32(),
        "vit_9_12_64" => model::ModelConfig::vit_9_12_64(),
        other => return Err(format!("--shape vit_7_4_32|vit_9_12_64, not {other:?}")),
    };
    let mut c = heads::with_mu(base, mu);
    c.gelu = match gelu {
        "erf" => model::GeluKind::Erf,
        "quad" => model::GeluKind::Quad,
        other => return Err(format!("--gelu erf|quad, not {other:?}")),
    };
    Ok(c)
}

fn main() {
    let cli = Cli::parse();
    let r: Result<(), String> = match cli.command {
        Cmd::Relay {
            listen,
            upstream,
            link,
            seconds,
        } => (|| {
            let spec = link
                .spec()
                .ok_or("--link none: nothing to relay (connect directly)")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let relay = Relay::start(&listen, &upstream, spec)
                    .await
                    .map_err(|e| format!("relay on {listen}: {e}"))?;
                eprintln!(
                    "mpcvit-bench relay: {} → {upstream}, {}",
                    relay.local_addr(),
                    spec.describe()
                );
                if seconds > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                } else {
                    let _ = tokio::signal::ctrl_c().await;
                }
                let s = relay.stats();
                eprintln!(
                    "mpcvit-bench relay: {} connections, {} B forward, {} B back, {:.3} s in flight",
                    s.connections,
                    s.forward.bytes,
                    s.backward.bytes,
                    s.in_flight.as_secs_f64()
                );
                Ok(())
            })
        })(),
        Cmd::Export {
            shape,
            mu,
            gelu,
            seed,
            out,
        } => (|| {
            let config = shape_config(&shape, mu, &gelu)?;
            let m = model::Model::random(config, seed).map_err(|e| e.to_string())?;
            m.save_dir(&out).map_err(|e| e.to_string())?;
            // A reference for peers: a fixed input and this crate's
            // plaintext logits, so a port of the network can show it runs the
            // same weights and head table before it is timed.
            let input: Vec<f32> = (0..m.config().input_len())
                .map(|i| 1.5 * (0.37 * i as f32).sin())
                .collect();
            let logits = m.forward(&input).map_err(|e| e.to_string())?;
            let list = |v: &[f32]| {
                v.iter()
                    .map(|x| format!("{x:e}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            std::fs::write(
                out.join("reference.json"),
                format!(
                    "{{\"input\":[{}],\"logits\":[{}]}}\n",
                    list(&input),
                    list(&logits)
                ),
            )
            .map_err(|e| e.to_string())?;
            eprintln!(
                "mpcvit-bench export: {} (seed {seed}) → {}",
                m.config().name,
                out.display()
            );
            Ok(())
        })(),
        Cmd::Report {
            e2e,
            peers,
            paper,
            out,
        } => report::write_all(&e2e, &peers, &paper, &out, "bash bench/run.sh")
            .map(|r| {
                eprintln!(
                    "mpcvit-bench report: {} runs, {} peer runs, {} paper points → {}",
                    r.e2e.len(),
                    r.peers.len(),
                    r.paper.len(),
                    out.display()
                )
            })
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = r {
        eprintln!("mpcvit-bench: {e}");
        std::process::exit(1);
    }
}

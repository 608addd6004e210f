//! The bundled model's accuracy under MPC, measured: the first `--images`
//! Fashion-MNIST test images through a dealer and two parties started in this
//! process (real gRPC, mutual TLS, loopback), `--clients` clients at once;
//! prints a Markdown table of secure accuracy, plaintext accuracy, top-1
//! agreement, the worst logit difference and the throughput.
//!
//! `cargo run --release -p mpcvit-client --example accuracy -- [--images 10000] [--clients 4] [--data DIR]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use mpcvit_client::accuracy::{AccuracyOptions, LOGIT_TOLERANCE, evaluate_local};
use mpcvit_client::fashion_mnist::{FASHION_MNIST_DIR, TestSplit};

/// Secure accuracy of the bundled model on the Fashion-MNIST test split.
#[derive(Debug, Parser)]
struct Args {
    /// Test images, from the first.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Clients sending images at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Directory with `t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`.
    #[arg(long, default_value = FASHION_MNIST_DIR)]
    data: PathBuf,
}

fn main() -> ExitCode {
    let a = Args::parse();
    mpcvit_server::telemetry::init(mpcvit_server::telemetry::LogFormat::Human, "warn");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let t = Instant::now();
    let r = rt.block_on(async {
        let data = Arc::new(TestSplit::load(&a.data)?);
        let model = Arc::new(mpcvit_client::bundled_model()?);
        eprintln!(
            "{} of {} test images through a local dealer and two parties (mutual TLS, loopback), {} clients, model {}",
            a.images,
            data.len(),
            a.clients,
            model.config().name
        );
        let opts = AccuracyOptions {
            images: a.images,
            clients: a.clients,
            progress: true,
        };
        evaluate_local(model, data, &opts).await
    });
    match r {
        Ok(report) => {
            println!("{}", report.markdown());
            let beyond = report.beyond_tolerance().len();
            eprintln!(
                "{:.1} s in all (cluster start and weight masking included); {beyond} images beyond the logit tolerance {LOGIT_TOLERANCE}",
                t.elapsed().as_secs_f64()
            );
            if beyond > 0 {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("accuracy: {e}");
            ExitCode::FAILURE
        }
    }
}

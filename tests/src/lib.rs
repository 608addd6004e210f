//! The end-to-end suites of mpcvit (`tests/tests/*.rs`) and the helpers
//! they share: the small test model, images, checks against the plaintext
//! model, a local cluster with a connected client (the in-process suites,
//! real gRPC over loopback), [`deploy`]: the dealer and both parties as
//! processes of the deployed binaries, and [`load`]: clients sending
//! inferences until told to stop, every outcome kept.
//!
//! Processes are launched, stopped and measured with the one set of
//! process helpers of the project, [`mpcvit_bench::procs`] (also the e2e
//! benchmark's and the bench crate's), re-exported here as [`procs`].

pub mod deploy;
pub mod load;

pub use mpcvit_bench::procs;

use std::time::Duration;

use model::Model;
use mpc_core::{FixedPoint, Prg, Seed};
use mpcvit_client::{Client, ClientAuth, RemoteModel};
use mpcvit_server::local::{LocalCluster, LocalOptions};

/// The test model: preset `small` (16 px, dim 32, 2 blocks, every attention
/// kind, MPCViT+ linearised tokens in block 1), deterministic weights.
pub fn small_model() -> Model {
    mpcvit_server::cli::random_model("small", 1).unwrap()
}

/// A deterministic RGB PNG of `side`×`side` pixels.
pub fn png(side: u32, seed: u64) -> Vec<u8> {
    let mut prg = Prg::new(&Seed::for_tests(seed));
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        let v = prg.next_u64();
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A local cluster serving `model`, a client connected to it, and the model
/// as the parties describe it (ready: paired and masked).
pub async fn cluster(model: &Model, opts: LocalOptions) -> (LocalCluster, Client, RemoteModel) {
    let mut prg = Prg::new(&Seed::random());
    let [s0, s1] = model::secure::split_weights(model, FixedPoint::default(), &mut prg);
    let c = LocalCluster::start([vec![s0], vec![s1]], opts)
        .await
        .unwrap();
    let auth = ClientAuth::Cert(c.client_tls.clone());
    let client = Client::connect([&c.party_addrs[0], &c.party_addrs[1]], &auth)
        .await
        .unwrap();
    let m = client
        .wait_ready(&model.config().name, Duration::from_secs(60))
        .await
        .unwrap();
    (c, client, m)
}

/// Options for tests: short timeouts, and dealer chunks of 16 KiB into a
/// party buffer of 64 KiB, much smaller than a batch of the test model, so
/// that every test runs with batches streamed while their sessions consume
/// them and the dealer held back by flow control.
pub fn test_options() -> LocalOptions {
    LocalOptions {
        pool_target: 2,
        pool_buffer_bytes: 64 << 10,
        dealer_chunk_bytes: 16 << 10,
        max_sessions: 4,
        join_timeout: Duration::from_secs(5),
        recv_timeout: Duration::from_secs(20),
        pool_wait: Duration::from_secs(60),
        client_token: None,
        web: None,
    }
}

//! Time of one training step (forward, backward, AdamW) of the default Fashion-MNIST
//! network on a random batch.
//!
//! ```sh
//! cargo run --release -p search --example bench_step -- [BATCH] [sm|rs|sa]
//! # env: DIM (64), MLP (128), PATCH (4), STEPS (5), RAYON_NUM_THREADS, TRACE=1
//! ```

use std::time::Instant;

use candle_core::{Device, Tensor};
use model::{AttnKind, ModelConfig};
use search::train::{Objective, Trainer};
use search::vit::{SearchSpace, Vit};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    search::alloc::keep_freed_memory();
    let mut args = std::env::args().skip(1);
    let b: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(128);
    let kind = match args.next().as_deref() {
        Some("rs") => AttnKind::ReluSoftmax,
        Some("sa") => AttnKind::ScaleAttn,
        _ => AttnKind::Softmax,
    };
    let (dim, mlp, patch, depth, heads) = (env("DIM", 64), env("MLP", 128), env("PATCH", 4), 4, 4);
    let cfg = ModelConfig {
        name: "bench".into(),
        image_size: 28,
        in_channels: 1,
        patch_size: patch,
        dim,
        depth,
        heads,
        mlp_hidden: mlp,
        num_classes: 10,
        layer_norm_eps: 1e-5,
        relu_softmax_eps: 1e-5,
        mean: vec![0.286],
        std: vec![0.353],
        labels: Vec::new(),
        gelu: model::GeluKind::Erf,
        attention: vec![vec![kind; heads]; depth],
        beta: vec![None; depth],
    };
    let vit = Vit::new(&cfg, SearchSpace::default(), 1, true).expect("network");
    let x = Tensor::randn(0f32, 1f32, (b, 1, 28, 28), &Device::Cpu).expect("input");
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, b, &Device::Cpu).expect("labels");
    let objective = Objective::Supervised;
    let mut trainer = Trainer::new(&vit, &objective, 0.05, 0.1).expect("trainer");
    for _ in 0..2 {
        trainer.step(&x, &y, 1e-3).expect("warm-up step");
    }
    let steps = env("STEPS", 5);
    let trace = std::env::var_os("TRACE").is_some();
    let (mut tf, mut tb, mut to) = (0.0, 0.0, 0.0);
    for _ in 0..steps {
        let t = Instant::now();
        let (loss, _) = trainer.loss(&x, &y).expect("forward");
        loss.to_scalar::<f32>().expect("loss");
        tf += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward().expect("backward");
        tb += t.elapsed().as_secs_f64();
        let t = Instant::now();
        trainer.opt.update(&grads, 1e-3).expect("update");
        to += t.elapsed().as_secs_f64();
        if trace {
            eprint!("{:.2} ", tf + tb + to);
        }
    }
    let n = steps.max(1) as f64;
    println!(
        "batch {b}, {kind:?}, dim {dim}, MLP {mlp}, patch {patch}: forward {:.3} s, backward {:.3} s, AdamW {:.3} s per step",
        tf / n,
        tb / n,
        to / n
    );
}

//! Secure forward of vit_7_4_32 (random weights) on one machine over the
//! in-memory channel, for several head mixes and both GeLU variants: online
//! wall time per image, bytes sent per party, rounds, dealer bytes, and the
//! one-off model-load cost. Both parties run as threads of this process, so
//! each gets one of the machine's cores.
//!
//! `cargo bench -p model --bench secure_forward`

use model::secure::{SecureModel, SecureParams, split_input, split_weights};
use model::{AttnKind, GeluKind, Model, ModelConfig};
use mpc_core::local::{LocalRun, run_local};
use mpc_core::{Prg, Seed, Share};

fn config(rs_fraction: Option<f64>, gelu: GeluKind) -> ModelConfig {
    let mut c = ModelConfig::vit_7_4_32();
    c.gelu = gelu;
    // keep round(μ·L·H) ReLU-softmax heads, spread evenly over the network
    let total = c.depth * c.heads;
    let keep = rs_fraction.map(|mu| (mu * total as f64).round() as usize);
    for (k, h) in c.attention.iter_mut().flatten().enumerate() {
        *h = match keep {
            None => AttnKind::Softmax,
            Some(keep) if (k + 1) * keep / total > k * keep / total => AttnKind::ReluSoftmax,
            Some(_) => AttnKind::ScaleAttn,
        };
    }
    c
}

fn run(model: &Model, with_image: bool) -> LocalRun<Option<Share>> {
    let params = SecureParams::default();
    let mut prg = Prg::new(&Seed::for_tests(1));
    let shares = split_weights(model, params.fp, &mut prg);
    let image: Vec<f32> = (0..model.config().input_len())
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let input = split_input(&image, params.fp, &mut prg);
    run_local(params.fp, |s| {
        let p = s.party().index();
        let m = SecureModel::prepare(s, &shares[p], params)?;
        if with_image {
            m.forward(s, &input[p]).map(Some)
        } else {
            Ok::<_, model::ModelError>(None)
        }
    })
    .expect("secure run")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; nothing to list here.
    }
    println!(
        "vit_7_4_32, f = 16, both parties in one process (one core each), per image (model load excluded)\n"
    );
    println!(
        "| heads | GeLU | online s | sent/party MB | rounds | dealer→P0 MB | dealer→P1 MB | offline s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let cases: [(&str, Option<f64>); 4] = [
        ("μ=0 (all ScaleAttn)", Some(0.0)),
        ("μ=0.5", Some(0.5)),
        ("μ=1 (all ReLU-softmax)", Some(1.0)),
        ("all Softmax", None),
    ];
    for gelu in [GeluKind::Quad, GeluKind::Erf] {
        for (name, mu) in cases {
            let model = Model::random(config(mu, gelu), 7).expect("model");
            let load = run(&model, false);
            let full = run(&model, true);
            let o = full.online[0] - load.online[0];
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "| {name} | {} | {:.2} | {:.1} | {} | {:.1} | {:.1} | {:.2} |",
                match gelu {
                    GeluKind::Quad => "quad",
                    _ => "erf (piecewise)",
                },
                (full.online_time.saturating_sub(load.online_time)).as_secs_f64(),
                mb(o.bytes_sent),
                o.rounds,
                mb(full.dealer_bytes[0] - load.dealer_bytes[0]),
                mb(full.dealer_bytes[1] - load.dealer_bytes[1]),
                (full.offline_time.saturating_sub(load.offline_time)).as_secs_f64(),
            );
        }
    }
}

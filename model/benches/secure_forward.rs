//! Secure forward of vit_7_4_32 (random weights) on one machine over the
//! in-memory channel, for several head mixes and both GeLU variants: online
//! wall time per image, bytes sent per party, rounds, dealer bytes, and the
//! one-off model-load cost. Both parties run as threads of this process, so
//! each gets one of the machine's cores.
//!
//! `cargo bench -p model --bench secure_forward`

use model::secure::measure_inference;
use model::{AttnKind, GeluKind, Model, ModelConfig};

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
            let image: Vec<f32> = (0..model.config().input_len())
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let c = measure_inference(&model, &image).expect("secure run");
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "| {name} | {} | {:.2} | {:.1} | {} | {:.1} | {:.1} | {:.2} |",
                match gelu {
                    GeluKind::Quad => "quad",
                    _ => "erf (piecewise)",
                },
                c.online_seconds,
                mb(c.bytes_per_party),
                c.rounds,
                mb(c.dealer_bytes[0]),
                mb(c.dealer_bytes[1]),
                c.offline_seconds,
            );
        }
    }
}

//! Online time of `Session::layer_norm` (65×256, default `LayerNormParams`, f = 16).
//! `cargo bench -p mpc-core --bench layer_norm`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::blocks::layer_norm::LayerNormParams;
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let x = uniform(N * C, -4.0, 4.0, 2);
    let gamma = uniform(C, 0.5, 1.5, 11);
    let beta = uniform(C, -0.5, 0.5, 12);
    let p = LayerNormParams::default();
    bench_operator(
        c,
        "layer_norm",
        &format!("{N}x{C}"),
        &[x, gamma, beta],
        |s, v| {
            let g = s.run(|cx| cx.mask_weight(0, &v[1], 1, C))?;
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(N, C));
                cx.layer_norm(&x, Some(&g), Some(&v[2]), p)
                    .settled()
                    .map(Fx::into_share)
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

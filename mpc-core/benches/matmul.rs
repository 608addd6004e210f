//! Online time of the secret×secret product `Session::matmul`
//! (65×256·256×768, f = 16). `cargo bench -p mpc-core --bench matmul`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let x = uniform(N * C, -4.0, 4.0, 2);
    let w = uniform(C * H, -0.1, 0.1, 4);
    bench_operator(
        c,
        "matmul",
        &format!("{N}x{C}·{C}x{H}"),
        &[x, w],
        |s, v| {
            s.run(|cx| {
                let (a, b) = (
                    cx.fx(v[0].clone(), Shape::new(N, C)),
                    cx.fx(v[1].clone(), Shape::new(C, H)),
                );
                cx.matmul(&a, &b).settled().map(Fx::into_share)
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

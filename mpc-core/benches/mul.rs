//! Online time of the elementwise product `Session::mul` (65×256, f = 16).
//! `cargo bench -p mpc-core --bench mul`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let x = uniform(N * C, -4.0, 4.0, 2);
    let y = uniform(N * C, -4.0, 4.0, 3);
    bench_operator(c, "mul", &format!("{N}x{C}"), &[x, y], |s, v| {
        s.run(|cx| {
            let (x, y) = (
                cx.fx(v[0].clone(), Shape::flat(v[0].len())),
                cx.fx(v[1].clone(), Shape::flat(v[1].len())),
            );
            cx.mul(&x, &y).settled().map(Fx::into_share)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

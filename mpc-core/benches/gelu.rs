//! Online time of the piecewise-quadratic GeLU, `Session::gelu` (65×512, f = 16).
//! `cargo bench -p mpc-core --bench gelu`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let act = uniform(N * MLP, -6.0, 6.0, 10);
    bench_operator(c, "gelu", &format!("{N}x{MLP}"), &[act], |s, v| {
        s.run(|cx| {
            let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
            cx.gelu(&x).settled().map(Fx::into_share)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Online time of `Session::relu` on the attention scores of all heads
//! (4×65×65, 24-bit comparison, f = 16). `cargo bench -p mpc-core --bench relu`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::compare::Relu;
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let scores = uniform(HEADS * N * N, -6.0, 6.0, 5);
    bench_operator(c, "relu", &format!("{HEADS}x{N}x{N}"), &[scores], |s, v| {
        s.run(|cx| {
            let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
            cx.relu(&x, Relu::exact(24)).map(Fx::into_share)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

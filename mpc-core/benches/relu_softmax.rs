//! Online time of `Session::relu_softmax` over the attention scores of all
//! heads (4·65 rows × 65, 24-bit comparisons, eps 1e-3, `ROW_SUMS` domain, f = 16).
//! `cargo bench -p mpc-core --bench relu_softmax`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::blocks::attention::ReluAttention;
use mpc_core::compare::Relu;
use mpc_core::nonlinear::ROW_SUMS;
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let scores = uniform(HEADS * N * N, -6.0, 6.0, 5);
    bench_operator(
        c,
        "relu_softmax",
        &format!("{HEADS}x{N}x{N}"),
        &[scores],
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(HEADS * N, N));
                let p = ReluAttention {
                    relu: Relu::exact(24),
                    eps: 1e-3,
                    row_sum: ROW_SUMS,
                };
                cx.relu_softmax(&x, p).settled().map(Fx::into_share)
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Online time of `Session::relu_softmax` over the attention scores of all
//! heads (4·65 rows × 65, 24-bit comparisons, eps 1e-3, `ROW_SUMS` domain, f = 16).
//! `cargo bench -p mpc-core --bench relu_softmax`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::nonlinear::ROW_SUMS;

fn bench(c: &mut Criterion) {
    let scores = uniform(HEADS * N * N, -6.0, 6.0, 5);
    bench_operator(
        c,
        "relu_softmax",
        &format!("{HEADS}x{N}x{N}"),
        &[scores],
        |s, v| s.run(|cx| cx.relu_softmax(&v[0], HEADS * N, N, 24, 1e-3, ROW_SUMS)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Online time of the exp-based `Session::softmax` over the attention scores
//! of all heads (4·65 rows × 65, 24-bit comparisons, f = 16).
//! `cargo bench -p mpc-core --bench softmax`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let scores = uniform(HEADS * N * N, -6.0, 6.0, 5);
    bench_operator(
        c,
        "softmax",
        &format!("{HEADS}x{N}x{N}"),
        &[scores],
        |s, v| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(HEADS * N, N));
                cx.softmax(&x, 24).settled().map(Fx::into_share)
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Online time of the piecewise-quadratic GeLU, `Session::gelu` (65×512, f = 16).
//! `cargo bench -p mpc-core --bench gelu`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let act = uniform(N * MLP, -6.0, 6.0, 10);
    bench_operator(c, "gelu", &format!("{N}x{MLP}"), &[act], |s, v| {
        s.run(|cx| cx.gelu(&v[0]))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

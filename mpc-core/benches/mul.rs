//! Online time of the elementwise product `Session::mul` (65×256, f = 16).
//! `cargo bench -p mpc-core --bench mul`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let x = uniform(N * C, -4.0, 4.0, 2);
    let y = uniform(N * C, -4.0, 4.0, 3);
    bench_operator(c, "mul", &format!("{N}x{C}"), &[x, y], |s, v| {
        s.run(|cx| cx.mul(&v[0], &v[1]))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

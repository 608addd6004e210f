//! Online time of the secret×secret product `Session::matmul`
//! (65×256·256×768, f = 16). `cargo bench -p mpc-core --bench matmul`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let x = uniform(N * C, -4.0, 4.0, 2);
    let w = uniform(C * H, -0.1, 0.1, 4);
    bench_operator(
        c,
        "matmul",
        &format!("{N}x{C}·{C}x{H}"),
        &[x, w],
        |s, v| s.run(|cx| cx.matmul(&v[0], &v[1], N, C, H)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

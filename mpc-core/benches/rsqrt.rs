//! Online time of `Session::rsqrt` on 260 row sums (4 heads × 65 rows) in the
//! `nonlinear::ROW_SUMS` domain, f = 16. `cargo bench -p mpc-core --bench rsqrt`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::nonlinear::ROW_SUMS;
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    // 2^u for u uniform in [-6, 11): inside ROW_SUMS = [2^-10, 2^12]
    let sums: Vec<f64> = uniform(HEADS * N, -6.0, 11.0, 6)
        .iter()
        .map(|e| 2f64.powf(*e))
        .collect();
    bench_operator(c, "rsqrt", &format!("{}", HEADS * N), &[sums], |s, v| {
        s.run(|cx| {
            let x = cx.fx(v[0].clone(), Shape::flat(v[0].len()));
            cx.rsqrt(&x, ROW_SUMS, 1.0).settled().map(Fx::into_share)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Online time of the known-MSB truncation `Session::trunc` (65×768, by 2 bits).
//! `cargo bench -p mpc-core --bench trunc`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let x = uniform(N * H, -4.0, 4.0, 2);
    bench_operator(c, "trunc", &format!("{N}x{H}"), &[x], |s, v| {
        s.run(|cx| cx.trunc(&v[0], 2))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

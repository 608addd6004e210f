//! Online time of `Session::scale_attn` for one head (Q, K, V: 65×64, f = 16).
//! `cargo bench -p mpc-core --bench scale_attn`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let q = uniform(N * D, -1.5, 1.5, 7);
    let k = uniform(N * D, -1.5, 1.5, 8);
    let v = uniform(N * D, -1.5, 1.5, 9);
    bench_operator(c, "scale_attn", &format!("{N}x{D}"), &[q, k, v], |s, v| {
        s.run(|cx| cx.scale_attn(&v[0], &v[1], &v[2], N, N, D, N))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

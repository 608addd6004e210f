//! Online time of `Session::scale_attn` for one head (Q, K, V: 65×64, f = 16).
//! `cargo bench -p mpc-core --bench scale_attn`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let q = uniform(N * D, -1.5, 1.5, 7);
    let k = uniform(N * D, -1.5, 1.5, 8);
    let v = uniform(N * D, -1.5, 1.5, 9);
    bench_operator(c, "scale_attn", &format!("{N}x{D}"), &[q, k, v], |s, v| {
        s.run(|cx| {
            let [q, k, v] = [0, 1, 2].map(|i| cx.fx(v[i].clone(), Shape::new(N, D)));
            cx.scale_attn(&q, &k, &v, N).map(Fx::into_share)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

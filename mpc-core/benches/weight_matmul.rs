//! Online time of one use of a masked weight, `Session::weight_matmul`
//! (65×256·256×768, f = 16). The weight is masked (`Session::mask_weight`,
//! once per model load) in an untimed setup stage of the same run; the
//! printed rounds, bytes and dealer bytes are those of the use alone.
//! `cargo bench -p mpc-core --bench weight_matmul`

mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use mpc_core::{Fx, Shape};

fn bench(c: &mut Criterion) {
    let x = uniform(N * C, -4.0, 4.0, 2);
    let w = uniform(C * H, -0.1, 0.1, 4);
    bench_split(
        c,
        "weight_matmul",
        &format!("{N}x{C}·{C}x{H}"),
        &[x, w],
        |s, v| s.run(|cx| cx.mask_weight(0, &v[1], C, H)),
        |s, v, mw| {
            s.run(|cx| {
                let x = cx.fx(v[0].clone(), Shape::new(N, C));
                cx.weight_matmul(&x, mw).settled().map(Fx::into_share)
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

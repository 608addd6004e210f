//! The local kernel under every secure product: `mpc_core::ring::matmul`
//! (wrapping u64) at the QKV projection's shape 65×256·256×768, against an
//! f32 matmul of the same shape on one core: (a) the same blocked loop in
//! f32, (b) the `matrixmultiply` crate's `sgemm` (single-threaded; it picks
//! AVX/FMA kernels at run time where the CPU has them, while the ring loop is
//! compiled for the build's target features).
//!
//! After criterion's report, `cargo bench` also prints the ratios ring/f32,
//! from medians of separate `Instant` timings of the same three kernels.
//! `cargo bench -p mpc-core --bench ring_matmul`

use criterion::{Criterion, SamplingMode};
use mpc_core::{Prg, Seed, ring};
use std::hint::black_box;
use std::time::{Duration, Instant};

const M: usize = 65;
const K: usize = 256;
const N: usize = 768;

/// The blocked loop of `ring::matmul_acc`, in f32.
fn f32_blocked(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    let mut out = vec![0f32; m * n];
    const KB: usize = 128;
    const NB: usize = 512;
    for n0 in (0..n).step_by(NB) {
        let n1 = (n0 + NB).min(n);
        for k0 in (0..k).step_by(KB) {
            let k1 = (k0 + KB).min(k);
            for i in 0..m {
                let row = &mut out[i * n + n0..i * n + n1];
                let arow = &a[i * k..(i + 1) * k];
                for p in k0..k1 {
                    let x = arow[p];
                    if x == 0.0 {
                        continue;
                    }
                    let brow = &b[p * n + n0..p * n + n1];
                    for (o, y) in row.iter_mut().zip(brow) {
                        *o += x * y;
                    }
                }
            }
        }
    }
    out
}

/// `matrixmultiply::sgemm` on row-major `m×k` and `k×n` matrices.
fn f32_sgemm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    let mut out = vec![0f32; m * n];
    // SAFETY: the three buffers hold exactly m·k, k·n and m·n elements, laid
    // out row-major with the strides given, and `out` is not aliased.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    out
}

struct Inputs {
    a: Vec<u64>,
    b: Vec<u64>,
    af: Vec<f32>,
    bf: Vec<f32>,
}

fn inputs() -> Inputs {
    let mut p = Prg::new(&Seed::for_tests(3));
    // Full-range ring elements (as shares are), so the loop never skips a zero.
    let a = p.u64s(M * K);
    let b = p.u64s(K * N);
    let unit = |v: &u64| ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    let (af, bf) = (a.iter().map(unit).collect(), b.iter().map(unit).collect());
    Inputs { a, b, af, bf }
}

fn bench(c: &mut Criterion, x: &Inputs) {
    let mut g = c.benchmark_group("ring_matmul");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let shape = format!("{M}x{K}·{K}x{N}");
    g.bench_function(format!("u64 ring::matmul {shape}"), |bch| {
        bch.iter(|| ring::matmul(black_box(&x.a), black_box(&x.b), M, K, N))
    });
    g.bench_function(format!("f32 blocked loop {shape}"), |bch| {
        bch.iter(|| f32_blocked(black_box(&x.af), black_box(&x.bf), M, K, N))
    });
    g.bench_function(format!("f32 matrixmultiply::sgemm {shape}"), |bch| {
        bch.iter(|| f32_sgemm(black_box(&x.af), black_box(&x.bf), M, K, N))
    });
    g.finish();
}

/// Median wall time of `runs` calls of `f` (after one warm-up call).
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    black_box(f());
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            black_box(f());
            t0.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn print_ratios(x: &Inputs) {
    const RUNS: usize = 21;
    let ring_t = median(RUNS, || {
        ring::matmul(black_box(&x.a), black_box(&x.b), M, K, N)
    });
    let loop_t = median(RUNS, || {
        f32_blocked(black_box(&x.af), black_box(&x.bf), M, K, N)
    });
    let sgemm_t = median(RUNS, || {
        f32_sgemm(black_box(&x.af), black_box(&x.bf), M, K, N)
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "ring_matmul {M}x{K}·{K}x{N}, one core, medians of {RUNS} runs: u64 ring {:.3} ms, \
         f32 blocked loop {:.3} ms, f32 sgemm {:.3} ms",
        ms(ring_t),
        ms(loop_t),
        ms(sgemm_t)
    );
    eprintln!(
        "ratio ring/f32: {:.2}x against the same loop in f32, {:.2}x against matrixmultiply::sgemm",
        ring_t.as_secs_f64() / loop_t.as_secs_f64(),
        ring_t.as_secs_f64() / sgemm_t.as_secs_f64()
    );
}

fn main() {
    let x = inputs();
    // The three kernels agree on shape (and f32 on values) before anything is timed.
    let (l, s) = (
        f32_blocked(&x.af, &x.bf, M, K, N),
        f32_sgemm(&x.af, &x.bf, M, K, N),
    );
    assert!(l.iter().zip(&s).all(|(u, v)| (u - v).abs() < 1e-2));
    assert_eq!(ring::matmul(&x.a, &x.b, M, K, N).len(), l.len());

    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &x);
    c.final_summary();
    // Only under `cargo bench` (not `cargo test --benches`, which runs each benchmark once).
    if std::env::args().any(|a| a == "--bench") {
        print_ratios(&x);
    }
}

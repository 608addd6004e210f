//! The ring Z_2^64: elementwise helpers and the wrapping matrix product.
//!
//! Every share and every opened value is a `u64` read modulo 2^64; all
//! arithmetic wraps. Matrices are row-major slices with explicit dimensions.

/// `out[i] = a[i] + b[i]` (mod 2^64).
pub fn add(a: &[u64], b: &[u64]) -> Vec<u64> {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}

/// `out[i] = a[i] - b[i]` (mod 2^64).
pub fn sub(a: &[u64], b: &[u64]) -> Vec<u64> {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect()
}

/// `a[i] += b[i]` in place.
pub fn add_assign(a: &mut [u64], b: &[u64]) {
    debug_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.wrapping_add(*y);
    }
}

/// `a[i] -= b[i]` in place.
pub fn sub_assign(a: &mut [u64], b: &[u64]) {
    debug_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.wrapping_sub(*y);
    }
}

/// `out[i] = a[i] * b[i]` (mod 2^64).
pub fn mul(a: &[u64], b: &[u64]) -> Vec<u64> {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.wrapping_mul(*y)).collect()
}

/// `out[i] = k * a[i]` (mod 2^64).
pub fn scale(a: &[u64], k: u64) -> Vec<u64> {
    a.iter().map(|x| x.wrapping_mul(k)).collect()
}

/// Wrapping product of an `m×k` and a `k×n` row-major matrix, added into `out` (`m×n`).
///
/// Register-blocked: a pass keeps a `4×C` tile of `out` in registers while
/// it runs over a block of up to `KC` (256) terms, so `out` is loaded and stored
/// once per block rather than once per term. On x86-64 the same safe loop is
/// also compiled with AVX-512 (`C = 32`: sixteen 8-lane accumulators, one
/// `vpmullq` and one `vpaddq` per 8 terms) and with AVX2, and the best build
/// the CPU supports is picked at run time; elsewhere the portable build runs.
/// All builds give the same result (the sum is exact mod 2^64). A large
/// product runs in bands of rows on [`crate::parallel`]'s threads.
pub fn matmul_acc(a: &[u64], b: &[u64], out: &mut [u64], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k, "matmul: lhs is not {m}x{k}");
    assert_eq!(b.len(), k * n, "matmul: rhs is not {k}x{n}");
    assert_eq!(out.len(), m * n, "matmul: out is not {m}x{n}");
    let parts = crate::parallel::parts(m * k * n, m.div_ceil(MR));
    if parts > 1 && n > 0 {
        // row bands of whole register tiles, one per part
        let band = m.div_ceil(MR).div_ceil(parts) * MR;
        use rayon::prelude::*;
        out.par_chunks_mut(band * n)
            .zip(a.par_chunks(band * k))
            .for_each(|(o, a)| matmul_band(a, b, o, o.len() / n, k, n));
        return;
    }
    matmul_band(a, b, out, m, k, n);
}

/// [`matmul_acc`] on one thread.
fn matmul_band(a: &[u64], b: &[u64], out: &mut [u64], m: usize, k: usize, n: usize) {
    let x = Operands { a, b, m, k, n };
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = x86::detect() {
        x86::matmul_acc(isa, &x, out);
        return;
    }
    matmul_acc_portable(&x, out);
}

/// The two factors of a product and its shape; lengths checked by [`matmul_acc`].
struct Operands<'a> {
    a: &'a [u64],
    b: &'a [u64],
    m: usize,
    k: usize,
    n: usize,
}

/// Rows of `out` per register tile ([`tile`] is written out for four rows).
const MR: usize = 4;
/// Terms of the inner product per pass over a tile. The `KC×32` panel of `b`
/// that one column block's tiles share (64 KiB) stays in L2; at the bench's
/// shape (k = 256) 128 was no faster.
const KC: usize = 256;

/// The build of [`blocked`] for any target (scalar, or baseline SIMD).
fn matmul_acc_portable(x: &Operands, out: &mut [u64]) {
    blocked::<8, 2>(x, out);
}

/// `out += a·b` by blocks of [`KC`] terms; in each, the columns in blocks of
/// width `C`, then `C2`, then 1, and each column block in tiles of [`MR`]
/// rows, then single rows.
///
/// Every helper is `#[inline(always)]` so that each `#[target_feature]`
/// wrapper gets its own copy, vectorised for its features. The tiles spell out
/// their rows (rather than loop over them) so that the accumulators become
/// registers without relying on LLVM's full-unroll size limit.
#[inline(always)]
fn blocked<const C: usize, const C2: usize>(x: &Operands, out: &mut [u64]) {
    for k0 in (0..x.k).step_by(KC) {
        let k1 = (k0 + KC).min(x.k);
        let mut j0 = 0;
        column_blocks::<C>(x, out, k0, k1, &mut j0);
        column_blocks::<C2>(x, out, k0, k1, &mut j0);
        column_blocks::<1>(x, out, k0, k1, &mut j0);
    }
}

/// The terms `k0..k1` of every full `C`-wide column block from column `*j0`
/// on; advances `*j0` past them.
#[inline(always)]
fn column_blocks<const C: usize>(
    x: &Operands,
    out: &mut [u64],
    k0: usize,
    k1: usize,
    j0: &mut usize,
) {
    let m_main = x.m - x.m % MR;
    while *j0 + C <= x.n {
        for i0 in (0..m_main).step_by(MR) {
            tile::<C>(x, out, i0, *j0, k0, k1);
        }
        for i in m_main..x.m {
            row_tile::<C>(x, out, i, *j0, k0, k1);
        }
        *j0 += C;
    }
}

/// `out[i0..i0+4, j0..j0+C] += a[i0..i0+4, k0..k1] · b[k0..k1, j0..j0+C]`,
/// summed in four `C`-arrays that the compiler keeps in registers.
#[inline(always)]
fn tile<const C: usize>(x: &Operands, out: &mut [u64], i0: usize, j0: usize, k0: usize, k1: usize) {
    let (k, n, kb) = (x.k, x.n, k1 - k0);
    let row = |r: usize| &x.a[(i0 + r) * k + k0..][..kb];
    let (a0, a1, a2, a3) = (row(0), row(1), row(2), row(3));
    let (mut s0, mut s1, mut s2, mut s3) = ([0u64; C], [0u64; C], [0u64; C], [0u64; C]);
    for (q, brow) in x.b[k0 * n + j0..].chunks(n).take(kb).enumerate() {
        let brow: &[u64; C] = brow[..C].try_into().expect("tile inside b");
        mul_add(&mut s0, a0[q], brow);
        mul_add(&mut s1, a1[q], brow);
        mul_add(&mut s2, a2[q], brow);
        mul_add(&mut s3, a3[q], brow);
    }
    for (r, sums) in [s0, s1, s2, s3].iter().enumerate() {
        add_into(&mut out[(i0 + r) * n + j0..][..C], sums);
    }
}

/// [`tile`] for the single row `i` (the last `m mod 4` rows).
#[inline(always)]
fn row_tile<const C: usize>(
    x: &Operands,
    out: &mut [u64],
    i: usize,
    j0: usize,
    k0: usize,
    k1: usize,
) {
    let (k, n, kb) = (x.k, x.n, k1 - k0);
    let a0 = &x.a[i * k + k0..][..kb];
    let mut s0 = [0u64; C];
    for (q, brow) in x.b[k0 * n + j0..].chunks(n).take(kb).enumerate() {
        let brow: &[u64; C] = brow[..C].try_into().expect("tile inside b");
        mul_add(&mut s0, a0[q], brow);
    }
    add_into(&mut out[i * n + j0..][..C], &s0);
}

/// `acc += s·b` lane by lane.
#[inline(always)]
fn mul_add<const C: usize>(acc: &mut [u64; C], s: u64, b: &[u64; C]) {
    for (o, y) in acc.iter_mut().zip(b) {
        *o = o.wrapping_add(s.wrapping_mul(*y));
    }
}

/// `out += sums` lane by lane.
#[inline(always)]
fn add_into(out: &mut [u64], sums: &[u64]) {
    for (o, s) in out.iter_mut().zip(sums) {
        *o = o.wrapping_add(*s);
    }
}

/// Run-time dispatch to builds of [`blocked`] for x86-64 vector extensions.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Operands, blocked};

    /// A vector extension that a build below is compiled for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Isa {
        Avx512,
        Avx2,
    }

    impl Isa {
        /// Every extension, best first.
        pub(super) const ALL: [Isa; 2] = [Isa::Avx512, Isa::Avx2];

        /// Whether this CPU has every feature the build for `self` is compiled with.
        pub(super) fn supported(self) -> bool {
            match self {
                Isa::Avx512 => {
                    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq")
                }
                Isa::Avx2 => is_x86_feature_detected!("avx2"),
            }
        }
    }

    /// The best extension this CPU has, if any (all beat the portable build).
    pub(super) fn detect() -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.supported())
    }

    /// `out += a·b` with the build for `isa`.
    ///
    /// # Panics
    /// If the CPU lacks a feature of `isa`'s build.
    pub(super) fn matmul_acc(isa: Isa, x: &Operands, out: &mut [u64]) {
        assert!(isa.supported(), "{isa:?} kernel on a CPU without it");
        // SAFETY: the assertion above checked at run time (through
        // `is_x86_feature_detected!`) that this CPU has every feature the
        // called function is compiled with: AVX-512F and AVX-512DQ for
        // `avx512`, AVX2 for `avx2`. Nothing else is unsafe: both functions
        // are safe code whose codegen alone differs.
        #[allow(unsafe_code)]
        unsafe {
            match isa {
                Isa::Avx512 => avx512(x, out),
                Isa::Avx2 => avx2(x, out),
            }
        }
    }

    /// [`blocked`] with 512-bit vectors: a `4×32` tile is 16 zmm accumulators,
    /// and every 8 terms cost one `vpmullq` and one `vpaddq`.
    #[target_feature(enable = "avx512f,avx512dq")]
    fn avx512(x: &Operands, out: &mut [u64]) {
        blocked::<32, 8>(x, out);
    }

    /// [`blocked`] with 256-bit vectors (the 64-bit lane multiply is built from
    /// three `vpmuludq`).
    #[target_feature(enable = "avx2")]
    fn avx2(x: &Operands, out: &mut [u64]) {
        blocked::<16, 4>(x, out);
    }
}

/// Wrapping product of an `m×k` and a `k×n` row-major matrix.
pub fn matmul(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    let mut out = vec![0u64; m * n];
    matmul_acc(a, b, &mut out, m, k, n);
    out
}

/// Transpose of a row-major `rows×cols` matrix.
pub fn transpose<T: Copy + Default>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(a.len(), rows * cols, "transpose: not {rows}x{cols}");
    let mut out = vec![T::default(); rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = a[i * cols + j];
        }
    }
    out
}

/// Sum of each row of a `rows×cols` matrix.
pub fn row_sums(a: &[u64], rows: usize, cols: usize) -> Vec<u64> {
    assert_eq!(a.len(), rows * cols, "row_sums: not {rows}x{cols}");
    a.chunks_exact(cols)
        .map(|r| r.iter().fold(0u64, |s, x| s.wrapping_add(*x)))
        .collect()
}

/// Repeat each of `v`'s entries `cols` times: the column vector `v` broadcast to `v.len()×cols`.
pub fn repeat_rows(v: &[u64], cols: usize) -> Vec<u64> {
    v.iter()
        .flat_map(|x| std::iter::repeat_n(*x, cols))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build of `matmul_acc` under test.
    type Kernel = Box<dyn Fn(&[u64], &[u64], &mut [u64], usize, usize, usize)>;

    /// The x86-64 builds this CPU can run.
    #[cfg(target_arch = "x86_64")]
    fn x86_builds() -> Vec<(String, Kernel)> {
        let with = |isa: x86::Isa| -> Kernel {
            Box::new(move |a: &[u64], b: &[u64], o: &mut [u64], m, k, n| {
                x86::matmul_acc(isa, &Operands { a, b, m, k, n }, o)
            })
        };
        x86::Isa::ALL
            .into_iter()
            .filter(|isa| isa.supported())
            .map(|isa| (format!("{isa:?}"), with(isa)))
            .collect()
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn x86_builds() -> Vec<(String, Kernel)> {
        Vec::new()
    }

    #[test]
    fn matmul_matches_naive_with_wraparound() {
        let (m, k, n) = (5, 300, 7);
        let a: Vec<u64> = (0..m * k)
            .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let b: Vec<u64> = (0..k * n)
            .map(|i| (i as u64 + 3).wrapping_mul(0xbf58_476d_1ce4_e5b9))
            .collect();
        let fast = matmul(&a, &b, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0u64;
                for p in 0..k {
                    s = s.wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
                }
                assert_eq!(fast[i * n + j], s);
            }
        }
    }

    /// The dispatched kernel and every build this CPU can run (the portable one,
    /// and on x86-64 the AVX2 and AVX-512 ones) against a naive triple loop, on
    /// shapes that hit every remainder (rows past the last 4-row tile; columns
    /// past the last 32-, 16- or 8-wide block and the last 8-, 4- or 2-wide
    /// one; sizes of 1), `k` past one block, and a nonzero `out` to add into.
    #[test]
    fn matmul_builds_match_naive_on_odd_shapes() {
        let dispatched: Kernel =
            Box::new(|a: &[u64], b: &[u64], o: &mut [u64], m, k, n| matmul_acc(a, b, o, m, k, n));
        let portable: Kernel = Box::new(|a: &[u64], b: &[u64], o: &mut [u64], m, k, n| {
            matmul_acc_portable(&Operands { a, b, m, k, n }, o)
        });
        let builds: Vec<(String, Kernel)> = [
            ("dispatched".to_string(), dispatched),
            ("portable".to_string(), portable),
        ]
        .into_iter()
        .chain(x86_builds())
        .collect();
        let mut seed = 0x243f_6a88_85a3_08d3u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(0x5851_f42d_4c95_7f2d)
                .wrapping_add(1442695040888963407);
            seed ^ (seed >> 29)
        };
        for m in [1, 2, 3, 4, 5, 7, 9] {
            for k in [1, 3, KC + 3] {
                for n in [1, 5, 8, 9, 31, 32, 41, 65] {
                    let a: Vec<u64> = (0..m * k)
                        .map(|i| if i % 7 == 3 { 0 } else { next() })
                        .collect();
                    let b: Vec<u64> = (0..k * n).map(|_| next()).collect();
                    let init: Vec<u64> = (0..m * n).map(|_| next()).collect();
                    let mut want = init.clone();
                    for i in 0..m {
                        for j in 0..n {
                            for p in 0..k {
                                let t = a[i * k + p].wrapping_mul(b[p * n + j]);
                                want[i * n + j] = want[i * n + j].wrapping_add(t);
                            }
                        }
                    }
                    for (name, f) in &builds {
                        let mut got = init.clone();
                        f(&a, &b, &mut got, m, k, n);
                        assert!(got == want, "{name} build wrong at {m}x{k}·{k}x{n}");
                    }
                }
            }
        }
    }

    /// A product large enough to split, on pools of 1, 2, 3 and 4 threads
    /// (bands of uneven height, the last one short): the same as one band.
    #[test]
    fn matmul_in_bands_matches_one_band() {
        let (m, k, n) = (67, 130, 45);
        assert!(m * k * n >= 2 * crate::parallel::MIN_WORK);
        let a: Vec<u64> = (0..m * k)
            .map(|i| (i as u64 + 11).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let b: Vec<u64> = (0..k * n)
            .map(|i| (i as u64 + 5).wrapping_mul(0xbf58_476d_1ce4_e5b9))
            .collect();
        let init: Vec<u64> = (0..m * n).map(|i| i as u64 * 31).collect();
        let mut want = init.clone();
        matmul_band(&a, &b, &mut want, m, k, n);
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut got = init.clone();
            pool.install(|| matmul_acc(&a, &b, &mut got, m, k, n));
            assert!(got == want, "{threads} threads");
        }
    }

    #[test]
    fn transpose_roundtrip() {
        let a: Vec<u64> = (0..12).collect();
        let t = transpose(&a, 3, 4);
        assert_eq!(t[1], 4);
        assert_eq!(transpose(&t, 4, 3), a);
    }
}

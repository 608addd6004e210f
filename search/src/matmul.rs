//! Matrix products on strided views of `f32` slices, for the fused kernels of
//! [`crate::ops`]: the `gemm` crate's kernels (the ones candle's CPU matmul calls, with
//! run-time AVX2 / AVX-512 dispatch) behind a bounds-checked safe function.
//!
//! A view is `(slice, row stride, column stride)`, so a head's `Q`, `Kᵀ` or `V` is read
//! straight out of the `[B, N, 3C]` output of the qkv projection without a copy.

use gemm::Parallelism;

/// A read-only `rows × cols` matrix inside a slice: element `(i, j)` is
/// `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix with row stride `rs`.
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }

    /// The transpose of a row-major matrix with row stride `rs`.
    pub fn transposed(data: &'a [f32], rs: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rs,
        }
    }

    /// Whether a `rows × cols` matrix fits in the slice.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// How many threads a matrix product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only (inside a kernel that is already parallel over heads or
    /// rows).
    One,
    /// Rayon's pool with this many threads.
    Pool(usize),
}

/// `dst = lhs·rhs` (or `dst += lhs·rhs` when `accumulate`) for an `m × k` `lhs`, a
/// `k × n` `rhs` and a row-major `m × n` `dst` with row stride `dst_rs ≥ n`.
///
/// # Panics
/// If a view or `dst` is too short for its matrix, or `dst_rs < n`.
pub fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: View<'_>,
    rhs: View<'_>,
    accumulate: bool,
    threads: Threads,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst_rs >= n && (m - 1) * dst_rs + n <= dst.len(),
        "matmul: destination of {} elements with row stride {dst_rs} cannot hold {m}×{n}",
        dst.len()
    );
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        lhs.fits(m, k) && rhs.fits(k, n),
        "matmul: operands too short for {m}×{k} · {k}×{n}"
    );
    let parallelism = match threads {
        Threads::Pool(t) if t > 1 => Parallelism::Rayon(t),
        _ => Parallelism::None,
    };
    // SAFETY: the assertions above bound every element the product reads
    // (`lhs[(m−1)·rs + (k−1)·cs]`, `rhs[(k−1)·rs + (n−1)·cs]`) and writes
    // (`dst[(m−1)·dst_rs + n − 1]`) inside its slice; `dst_rs ≥ n` keeps the
    // destination's rows apart, so no element is written twice, and `dst` is a unique
    // borrow, so it aliases neither operand. All strides are non-negative and fit an
    // `isize` because they index within a slice.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The thread count for a product outside a parallel kernel (candle's rule:
/// `RAYON_NUM_THREADS`, else every core).
pub fn pool_threads() -> Threads {
    Threads::Pool(candle_core::utils::get_num_threads())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn strided_products_match_the_naive_loop() {
        let (m, k, n) = (7, 5, 6);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.21).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        // Plain row-major.
        let mut c = vec![0f32; m * n];
        matmul(
            &mut c,
            n,
            (m, n, k),
            View::rows(&a, k),
            View::rows(&b, n),
            false,
            Threads::One,
        );
        let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-5);
        assert!(close(&c, &want));
        // rhs given as the transpose of its row-major transpose, dst with a wider row,
        // accumulating onto ones.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut wide = vec![1f32; m * (n + 3)];
        matmul(
            &mut wide,
            n + 3,
            (m, n, k),
            View::rows(&a, k),
            View::transposed(&bt, k),
            true,
            Threads::Pool(2),
        );
        for i in 0..m {
            let row = &wide[i * (n + 3)..];
            let shifted: Vec<f32> = want[i * n..(i + 1) * n].iter().map(|v| v + 1.0).collect();
            assert!(close(&row[..n], &shifted));
            assert!(row[n..n + 3].iter().all(|&v| v == 1.0), "padding written");
        }
    }

    #[test]
    #[should_panic(expected = "operands too short")]
    fn a_short_operand_is_refused() {
        let a = vec![0f32; 5];
        let mut c = vec![0f32; 4];
        matmul(
            &mut c,
            2,
            (2, 2, 3),
            View::rows(&a, 3),
            View::rows(&a, 2),
            false,
            Threads::One,
        );
    }
}

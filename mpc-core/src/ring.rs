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
/// Blocked over `k` and `n` so that a panel of `b` stays in cache; the inner
/// loop is a contiguous multiply-add that the compiler vectorises where the
/// target has 64-bit lane multiplies.
pub fn matmul_acc(a: &[u64], b: &[u64], out: &mut [u64], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k, "matmul: lhs is not {m}x{k}");
    assert_eq!(b.len(), k * n, "matmul: rhs is not {k}x{n}");
    assert_eq!(out.len(), m * n, "matmul: out is not {m}x{n}");
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
                    if x == 0 {
                        continue;
                    }
                    let brow = &b[p * n + n0..p * n + n1];
                    for (o, y) in row.iter_mut().zip(brow) {
                        *o = o.wrapping_add(x.wrapping_mul(*y));
                    }
                }
            }
        }
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

    #[test]
    fn transpose_roundtrip() {
        let a: Vec<u64> = (0..12).collect();
        let t = transpose(&a, 3, 4);
        assert_eq!(t[1], 4);
        assert_eq!(transpose(&t, 4, 3), a);
    }
}

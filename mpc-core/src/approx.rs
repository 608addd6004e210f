//! Piecewise polynomial approximations shared by the secure operators and
//! their plaintext references, so both evaluate the same function.
//!
//! A [`Piecewise`] has sorted thresholds `t_0 < … < t_{J−1}` and `J + 1`
//! segments (segment 0 is `x < t_0`, segment `J` is `x ≥ t_{J−1}`), each with
//! a polynomial of degree ≤ 2. Segment polynomials inside `[t_0, t_{J−1})`
//! interpolate the target at Chebyshev nodes (near-minimax, [`Piecewise::fit`])
//! or are its minimax polynomials on the segment widened to the left
//! ([`Piecewise::fit_minimax`], for comparisons that may pick a segment for
//! inputs just below it); the two outer segments are given explicitly.
//! The GeLU's approximations live with its operators in [`crate::gelu`].

/// A piecewise polynomial of degree ≤ 2.
#[derive(Clone, Debug, PartialEq)]
pub struct Piecewise {
    /// Sorted thresholds `t_j`.
    pub thresholds: Vec<f64>,
    /// Coefficients `[c0, c1, c2]` per segment (`thresholds.len() + 1` of them).
    pub coeffs: Vec<[f64; 3]>,
}

impl Piecewise {
    /// Fit `target` on each interval between consecutive `thresholds` with a
    /// polynomial of degree `degree` (1 or 2) through its Chebyshev nodes;
    /// `below` and `above` are the outer segments' coefficients.
    pub fn fit(
        thresholds: Vec<f64>,
        degree: usize,
        target: impl Fn(f64) -> f64,
        below: [f64; 3],
        above: [f64; 3],
    ) -> Self {
        Self::fit_segments(thresholds, degree, below, above, |lo, hi| {
            let nodes: Vec<f64> = (0..=degree)
                .map(|i| {
                    let th = std::f64::consts::PI * (2 * i + 1) as f64 / (2 * (degree + 1)) as f64;
                    0.5 * (lo + hi) - 0.5 * (hi - lo) * th.cos()
                })
                .collect();
            let ys: Vec<f64> = nodes.iter().map(|x| target(*x)).collect();
            interpolate(&nodes, &ys)
        })
    }

    /// Fit `target` on each interval `[t_{j−1} − widen, t_j]` by its minimax
    /// polynomial of degree `degree` (1 or 2, [`minimax`]): each segment stays
    /// accurate on the `widen` below it, where a coarse comparison may select
    /// it. `below` and `above` are the outer segments' coefficients.
    pub fn fit_minimax(
        thresholds: Vec<f64>,
        degree: usize,
        target: impl Fn(f64) -> f64,
        below: [f64; 3],
        above: [f64; 3],
        widen: f64,
    ) -> Self {
        Self::fit_segments(thresholds, degree, below, above, |lo, hi| {
            minimax(lo - widen, hi, degree, &target).0
        })
    }

    /// The piecewise polynomial with `segment(t_{j−1}, t_j)`'s coefficients
    /// between consecutive thresholds and `below` / `above` outside.
    fn fit_segments(
        thresholds: Vec<f64>,
        degree: usize,
        below: [f64; 3],
        above: [f64; 3],
        segment: impl Fn(f64, f64) -> [f64; 3],
    ) -> Self {
        assert!((1..=2).contains(&degree), "piecewise: degree {degree}");
        assert!(
            thresholds.windows(2).all(|w| w[0] < w[1]),
            "piecewise: unsorted thresholds"
        );
        let mut coeffs = vec![below];
        coeffs.extend(thresholds.windows(2).map(|w| segment(w[0], w[1])));
        coeffs.push(above);
        Piecewise { thresholds, coeffs }
    }

    /// The segment of `x`.
    pub fn segment(&self, x: f64) -> usize {
        self.thresholds.iter().take_while(|t| x >= **t).count()
    }

    /// Evaluate in f64.
    pub fn eval(&self, x: f64) -> f64 {
        let [c0, c1, c2] = self.coeffs[self.segment(x)];
        c0 + c1 * x + c2 * x * x
    }

    /// Highest degree with a non-zero coefficient.
    pub fn degree(&self) -> usize {
        if self.coeffs.iter().any(|c| c[2] != 0.0) {
            2
        } else {
            1
        }
    }
}

/// Coefficients of the polynomial through 2 or 3 points.
fn interpolate(x: &[f64], y: &[f64]) -> [f64; 3] {
    match x.len() {
        2 => {
            let c1 = (y[1] - y[0]) / (x[1] - x[0]);
            [y[0] - c1 * x[0], c1, 0.0]
        }
        3 => {
            // Newton form, expanded.
            let d01 = (y[1] - y[0]) / (x[1] - x[0]);
            let d12 = (y[2] - y[1]) / (x[2] - x[1]);
            let c2 = (d12 - d01) / (x[2] - x[0]);
            let c1 = d01 - c2 * (x[0] + x[1]);
            let c0 = y[0] - c1 * x[0] - c2 * x[0] * x[0];
            [c0, c1, c2]
        }
        n => panic!("interpolate: {n} points"),
    }
}

/// Grid points per unit interval in [`minimax`]'s search for the error's extrema.
const MINIMAX_GRID: usize = 4096;

/// The minimax polynomial of degree `degree` (1 or 2) for `target` on
/// `[lo, hi]` and its maximum error there, by the Remez exchange on a grid of
/// `MINIMAX_GRID` (4096) points: solve for the polynomial whose error alternates
/// with equal magnitude on `degree + 2` reference points, move the reference
/// to the error's alternating extrema, repeat (a few iterations; the best
/// polynomial seen is kept). Deterministic, so both parties derive the same
/// coefficients.
pub fn minimax(lo: f64, hi: f64, degree: usize, target: impl Fn(f64) -> f64) -> ([f64; 3], f64) {
    assert!((1..=2).contains(&degree), "minimax: degree {degree}");
    assert!(lo < hi, "minimax: [{lo}, {hi}]");
    let n = degree + 2;
    let grid: Vec<f64> = (0..=MINIMAX_GRID)
        .map(|i| lo + (hi - lo) * i as f64 / MINIMAX_GRID as f64)
        .collect();
    let ys: Vec<f64> = grid.iter().map(|x| target(*x)).collect();
    // initial reference: the Chebyshev extrema, as grid indices
    let mut reference: Vec<usize> = (0..n)
        .map(|i| {
            let t = 0.5 - 0.5 * (std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
            (t * MINIMAX_GRID as f64).round() as usize
        })
        .collect();
    let mut best = ([0.0; 3], f64::INFINITY);
    for _ in 0..12 {
        // c_0 + c_1·x (+ c_2·x²) + (−1)^i·E = y at the reference points
        let mut a: Vec<Vec<f64>> = reference
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                let x = grid[g];
                let mut row: Vec<f64> = (0..=degree).map(|k| x.powi(k as i32)).collect();
                row.push(if i % 2 == 0 { 1.0 } else { -1.0 });
                row
            })
            .collect();
        let mut b: Vec<f64> = reference.iter().map(|&g| ys[g]).collect();
        let sol = solve(&mut a, &mut b);
        let mut c = [0.0; 3];
        c[..=degree].copy_from_slice(&sol[..=degree]);
        let err: Vec<f64> = grid
            .iter()
            .zip(&ys)
            .map(|(x, y)| c[0] + c[1] * x + c[2] * x * x - y)
            .collect();
        let worst = err.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        if worst < best.1 {
            best = (c, worst);
        }
        // the new reference: the largest |error| of each run of one sign
        let mut runs: Vec<usize> = Vec::new();
        for (g, e) in err.iter().enumerate() {
            match runs.last_mut() {
                Some(last) if (err[*last] >= 0.0) == (*e >= 0.0) => {
                    if e.abs() > err[*last].abs() {
                        *last = g;
                    }
                }
                _ => runs.push(g),
            }
        }
        if runs.len() < n {
            break;
        }
        // keep n alternating points including the largest: drop the smaller end
        while runs.len() > n {
            if err[runs[0]].abs() < err[runs[runs.len() - 1]].abs() {
                runs.remove(0);
            } else {
                runs.pop();
            }
        }
        if runs == reference {
            break;
        }
        reference = runs;
    }
    best
}

/// Gaussian elimination with partial pivoting (small dense systems).
fn solve(a: &mut [Vec<f64>], b: &mut [f64]) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("non-empty");
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in 0..n {
            if row != col {
                let m = a[row][col] / a[col][col];
                for k in col..n {
                    a[row][k] -= m * a[col][k];
                }
                b[row] -= m * b[col];
            }
        }
    }
    (0..n).map(|i| b[i] / a[i][i]).collect()
}

/// Thresholds `lo·2^(j/per_octave)` covering `[lo, hi]`.
pub fn geometric_thresholds(lo: f64, hi: f64, per_octave: usize) -> Vec<f64> {
    assert!(lo > 0.0 && hi > lo, "geometric thresholds: [{lo}, {hi}]");
    let steps = ((hi / lo).log2() * per_octave as f64).ceil() as usize;
    (0..=steps)
        .map(|j| lo * (2f64).powf(j as f64 / per_octave as f64))
        .collect()
}

/// Piecewise-linear `1/x` on `[lo, hi]` with `per_octave` segments per octave.
/// Relative error about `(2^(1/p) − 1)²/8` inside the domain (p = per_octave);
/// below `lo` and above `hi` the end segments are extrapolated.
pub fn reciprocal_piecewise(lo: f64, hi: f64, per_octave: usize) -> Piecewise {
    let t = geometric_thresholds(lo, hi, per_octave);
    let first = Piecewise::fit(t[..2].to_vec(), 1, |x| 1.0 / x, [0.0; 3], [0.0; 3]).coeffs[1];
    let n = t.len();
    let last = Piecewise::fit(t[n - 2..].to_vec(), 1, |x| 1.0 / x, [0.0; 3], [0.0; 3]).coeffs[1];
    Piecewise::fit(t, 1, |x| 1.0 / x, first, last)
}

/// Piecewise-linear `k/√x` on `[lo, hi]` (see [`reciprocal_piecewise`]).
pub fn rsqrt_piecewise(lo: f64, hi: f64, per_octave: usize, k: f64) -> Piecewise {
    let f = move |x: f64| k / x.sqrt();
    let t = geometric_thresholds(lo, hi, per_octave);
    let first = Piecewise::fit(t[..2].to_vec(), 1, f, [0.0; 3], [0.0; 3]).coeffs[1];
    let n = t.len();
    let last = Piecewise::fit(t[n - 2..].to_vec(), 1, f, [0.0; 3], [0.0; 3]).coeffs[1];
    Piecewise::fit(t, 1, f, first, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reciprocal_and_rsqrt_fits_meet_relative_error_goal() {
        let r = reciprocal_piecewise(1.0 / 256.0, 4096.0, 8);
        let q = rsqrt_piecewise(1.0 / 256.0, 4096.0, 8, 1.0);
        let mut worst: f64 = 0.0;
        for i in 0..=20000 {
            let x = (1.0f64 / 256.0) * (2f64).powf(20.0 * i as f64 / 20000.0);
            worst = worst.max((r.eval(x) * x - 1.0).abs());
            worst = worst.max((q.eval(x) * x.sqrt() - 1.0).abs());
        }
        assert!(worst < 1e-3, "relative error {worst}");
    }
}

//! Piecewise polynomial approximations shared by the secure operators and
//! their plaintext references, so both evaluate the same function.
//!
//! A [`Piecewise`] has sorted thresholds `t_0 < … < t_{J−1}` and `J + 1`
//! segments (segment 0 is `x < t_0`, segment `J` is `x ≥ t_{J−1}`), each with
//! a polynomial of degree ≤ 2. Segment polynomials inside `[t_0, t_{J−1})`
//! interpolate the target at Chebyshev nodes (near-minimax); the two outer
//! segments are given explicitly.

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
        assert!((1..=2).contains(&degree), "piecewise: degree {degree}");
        assert!(
            thresholds.windows(2).all(|w| w[0] < w[1]),
            "piecewise: unsorted thresholds"
        );
        let mut coeffs = vec![below];
        for w in thresholds.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            let nodes: Vec<f64> = (0..=degree)
                .map(|i| {
                    let th = std::f64::consts::PI * (2 * i + 1) as f64 / (2 * (degree + 1)) as f64;
                    0.5 * (lo + hi) - 0.5 * (hi - lo) * th.cos()
                })
                .collect();
            let ys: Vec<f64> = nodes.iter().map(|x| target(*x)).collect();
            coeffs.push(interpolate(&nodes, &ys));
        }
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

/// Thresholds `lo·2^(j/per_octave)` covering `[lo, hi]`.
pub fn geometric_thresholds(lo: f64, hi: f64, per_octave: usize) -> Vec<f64> {
    assert!(lo > 0.0 && hi > lo, "geometric thresholds: [{lo}, {hi}]");
    let steps = ((hi / lo).log2() * per_octave as f64).ceil() as usize;
    (0..=steps)
        .map(|j| lo * (2f64).powf(j as f64 / per_octave as f64))
        .collect()
}

/// The exact GeLU, `x·Φ(x) = x/2·(1 + erf(x/√2))`.
pub fn gelu_exact(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The piecewise-quadratic GeLU used under MPC: 16 equal segments on
/// `[−4, 4)`, 0 below and `x` above. Maximum error against [`gelu_exact`]:
/// about 7·10⁻⁴ on the whole real line (asserted in tests).
pub fn gelu_piecewise() -> Piecewise {
    let thresholds: Vec<f64> = (0..=16).map(|i| -4.0 + 0.5 * i as f64).collect();
    Piecewise::fit(thresholds, 2, gelu_exact, [0.0; 3], [0.0, 1.0, 0.0])
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
    fn gelu_fit_error_is_below_1e_3_everywhere() {
        let p = gelu_piecewise();
        let mut worst: f64 = 0.0;
        for i in 0..=32000 {
            let x = -16.0 + i as f64 * 0.001;
            worst = worst.max((p.eval(x) - gelu_exact(x)).abs());
        }
        assert!(worst < 1e-3, "gelu piecewise error {worst}");
    }

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

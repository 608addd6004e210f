//! Nonlinear operators built from products, truncation and comparison:
//! exp, piecewise polynomials (reciprocal, rsqrt, GeLU), softmax,
//! ReLU-softmax, ScaleAttn and LayerNorm.
//!
//! Rounds and bytes below are per party and online; "n" is the element count.
//! Accuracy figures are measured by the tests in `tests/nonlinear.rs` at the
//! default `f = 16`.

use crate::approx::{self, Piecewise};
use crate::arith::MaskedWeight;
use crate::dealer::Request;
use crate::error::{Result, check_len};
use crate::fixed::encode_at;
use crate::ring;
use crate::session::Session;
use crate::session::expect_triple;
use crate::share::Share;

/// Fractional bits of reciprocal and rsqrt outputs above the session's `f`,
/// so that small results (such as `1/4096`) keep about 18 significant bits.
pub const EXTRA_FRAC: u32 = 14;

/// Segments per octave of the piecewise-linear reciprocal and rsqrt.
pub const PER_OCTAVE: usize = 10;

/// Squarings in the exponential's limit approximation `(1 + x/2^k)^(2^k)`.
pub const EXP_SQUARINGS: u32 = 8;

/// Input domain of a piecewise-linear reciprocal or rsqrt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Domain {
    /// Smallest input approximated to the stated accuracy.
    pub lo: f64,
    /// Largest input approximated to the stated accuracy.
    pub hi: f64,
}

impl Domain {
    /// Comparison width for inputs up to `hi` at `f` fractional bits (sign bit and margin included).
    pub fn compare_bits(&self, f: u32) -> u32 {
        (self.hi.log2().ceil() as i64 + f as i64 + 2).clamp(8, 64) as u32
    }
}

/// A piecewise approximation with the settings its secure evaluation needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseEval {
    /// The segments.
    pub pw: Piecewise,
    /// Comparison width for inputs at `f` fractional bits.
    pub bits: u32,
    /// Output fractional bits.
    pub out_frac: u32,
    /// Bound on every term of the polynomial on the domain.
    pub max_out: f64,
}

impl PiecewiseEval {
    /// `1/x` on `domain`, output at `f + EXTRA_FRAC` bits (see [`Session::reciprocal`]).
    pub fn reciprocal(domain: Domain, f: u32) -> Self {
        PiecewiseEval {
            pw: approx::reciprocal_piecewise(domain.lo, domain.hi, PER_OCTAVE),
            bits: domain.compare_bits(f),
            out_frac: f + EXTRA_FRAC,
            max_out: 2.0 / domain.lo,
        }
    }

    /// `k/√x` on `domain`, output at `f + EXTRA_FRAC` bits (see [`Session::rsqrt_scaled`]).
    pub fn rsqrt(domain: Domain, k: f64, f: u32) -> Self {
        PiecewiseEval {
            pw: approx::rsqrt_piecewise(domain.lo, domain.hi, PER_OCTAVE, k),
            bits: domain.compare_bits(f),
            out_frac: f + EXTRA_FRAC,
            max_out: 2.0 * k / domain.lo.sqrt(),
        }
    }

    /// The segment bounds encoded at `bits` fractional bits.
    pub fn thresholds(&self, bits: u32) -> Vec<u64> {
        self.pw
            .thresholds
            .iter()
            .map(|t| encode_at(*t, bits))
            .collect()
    }
}

/// The products [`Session::norm_products_raw`] computes from one opening.
#[derive(Clone, Debug)]
pub struct NormProducts {
    /// `x ⊙ x` (after [`Session::layer_norm`]'s truncation: the row sums `u`).
    pub square: Share,
    /// `x ⊙ γ`, when a scale was given.
    pub scaled: Option<Share>,
    /// `x·W`, when a weight was given.
    pub product: Option<Share>,
}

/// Parameters of LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormParams {
    /// Added to the variance (PyTorch's default 1e-5).
    pub eps: f64,
    /// Range of the per-row variance over which `1/√(var + eps)` is accurate.
    pub var: Domain,
}

impl Default for LayerNormParams {
    fn default() -> Self {
        LayerNormParams {
            eps: 1e-5,
            var: Domain {
                lo: 1.0 / 1024.0,
                hi: 16384.0,
            },
        }
    }
}

impl Session<'_> {
    /// Evaluate a piecewise polynomial of degree ≤ 2 (see [`Piecewise`]).
    ///
    /// Steps: one multi-threshold comparison gives the bits `g_j = [x ≥ t_j]`;
    /// the segment's coefficients are the telescoping sums
    /// `c = c_0 + Σ_j (c_{j+1} − c_j)·g_j` (local); then `c₀ + c₁·x + c₂·x²`
    /// costs one product round (after a square for degree 2) and one truncation.
    /// Coefficients are encoded at the widest scale `w` for which every term,
    /// bounded by `max_out`, stays below 2^61 at `w + f` bits (so slopes keep
    /// their precision at the far end of a wide domain); the output carries
    /// `out_frac` fractional bits.
    ///
    /// Rounds: 3 (degree 1) or 5 (degree 2). Bytes: `⌈n·ℓ/8⌉ + 16n + ⌈n/8⌉`
    /// (degree 1; degree 2 adds `8n + ⌈n/8⌉` for the square and `16n` more
    /// in the product round). Each threshold costs one local DCF evaluation
    /// (3·(ℓ−1) AES blocks) per element.
    /// Domain: `|x − t_j| < 2^(ℓ−1−f)` for every threshold, and every term
    /// `|c_i·x^i| ≤ max_out`.
    pub fn piecewise(
        &mut self,
        x: &Share,
        pw: &Piecewise,
        bits: u32,
        out_frac: u32,
        max_out: f64,
    ) -> Result<Share> {
        let t: Vec<u64> = pw
            .thresholds
            .iter()
            .map(|t| encode_at(*t, self.frac_bits()))
            .collect();
        let g = self.ge_thresholds(x, &t, bits)?;
        self.piecewise_from_bits(x, &g, pw, out_frac, max_out)
    }

    /// The second half of [`Session::piecewise`]: given the comparison bits
    /// `g_j = [x ≥ t_j]` (computed by the caller, possibly in a round shared
    /// with other work), assemble the coefficients and evaluate. Rounds 2
    /// (degree 1) or 4 (degree 2).
    pub fn piecewise_from_bits(
        &mut self,
        x: &Share,
        g: &[Share],
        pw: &Piecewise,
        out_frac: u32,
        max_out: f64,
    ) -> Result<Share> {
        let (raw, shift) = self.piecewise_raw(x, g, pw, out_frac, max_out)?;
        self.trunc(&raw, shift)
    }

    /// [`Session::piecewise_from_bits`] without its final truncation: returns
    /// the value and the shift that brings it to `out_frac` bits, so the
    /// caller can truncate it in a round shared with other work.
    /// Rounds 1 (degree 1) or 3 (degree 2).
    pub fn piecewise_raw(
        &mut self,
        x: &Share,
        g: &[Share],
        pw: &Piecewise,
        out_frac: u32,
        max_out: f64,
    ) -> Result<(Share, u32)> {
        self.piecewise_raw_squared(x, None, g, pw, out_frac, max_out)
    }

    /// [`Session::piecewise_raw`] given `x²` (at `f` bits) for degree 2,
    /// computed by the caller (for example from the comparison's opening):
    /// saves the square's two rounds.
    pub fn piecewise_raw_squared(
        &mut self,
        x: &Share,
        x2: Option<&Share>,
        g: &[Share],
        pw: &Piecewise,
        out_frac: u32,
        max_out: f64,
    ) -> Result<(Share, u32)> {
        let n = x.len();
        let f = self.frac_bits();
        let w = (61 - f as i64 - max_out.log2().ceil().max(0.0) as i64)
            .clamp(out_frac as i64, (out_frac + 30) as i64) as u32;
        let p0 = self.is_p0();
        let coef = |d: usize, scale: u32| -> Share {
            let enc: Vec<u64> = pw.coeffs.iter().map(|c| encode_at(c[d], scale)).collect();
            let mut acc = vec![if p0 { enc[0] } else { 0 }; n];
            for (j, gj) in g.iter().enumerate() {
                let delta = enc[j + 1].wrapping_sub(enc[j]);
                if delta != 0 {
                    for (a, b) in acc.iter_mut().zip(gj.as_slice()) {
                        *a = a.wrapping_add(delta.wrapping_mul(*b));
                    }
                }
            }
            Share::new(acc)
        };
        let a = coef(0, w + f);
        let b = coef(1, w);
        let prod = if pw.degree() == 2 {
            let c = coef(2, w);
            let x2 = match x2 {
                Some(x2) => x2.clone(),
                None => self.square(x)?,
            };
            let both = self.mul_raw(&Share::concat(&[&b, &c]), &Share::concat(&[x, &x2]))?;
            let parts = both.split(&[n, n]);
            parts[0].add(&parts[1])
        } else {
            self.mul_raw(&b, x)?
        };
        Ok((a.add(&prod), w + f - out_frac))
    }

    /// `1/x` for `x` in `domain` (positive), with `f + EXTRA_FRAC` fractional bits out.
    ///
    /// Piecewise linear with [`PER_OCTAVE`] segments per octave (one
    /// comparison round against all segment boundaries), then one product and
    /// one truncation. Rounds 3; bytes `⌈n·ℓ/8⌉ + 16n + ⌈n/8⌉` with
    /// `ℓ = ⌈log2 hi⌉ + f + 2`. Relative error ≤ 1e-3 on the domain
    /// (measured ≤ 4e-4); outside it the end segments are extrapolated.
    pub fn reciprocal(&mut self, x: &Share, domain: Domain) -> Result<Share> {
        let p = PiecewiseEval::reciprocal(domain, self.frac_bits());
        self.piecewise(x, &p.pw, p.bits, p.out_frac, p.max_out)
    }

    /// `k/√x` for `x` in `domain`, with `f + EXTRA_FRAC` fractional bits out.
    /// Same method, rounds and bytes as [`Session::reciprocal`]; relative error ≤ 1e-3.
    pub fn rsqrt_scaled(&mut self, x: &Share, domain: Domain, k: f64) -> Result<Share> {
        let p = PiecewiseEval::rsqrt(domain, k, self.frac_bits());
        self.piecewise(x, &p.pw, p.bits, p.out_frac, p.max_out)
    }

    /// `1/√x`: [`Session::rsqrt_scaled`] with `k = 1`.
    pub fn rsqrt(&mut self, x: &Share, domain: Domain) -> Result<Share> {
        self.rsqrt_scaled(x, domain, 1.0)
    }

    /// `exp(x)` for `x ≤ 0` by the limit `(1 + x/2^k)^(2^k)`, k = [`EXP_SQUARINGS`].
    ///
    /// `1 + x/2^k` is formed exactly by reading `x` at `f + k` fractional bits;
    /// each squaring is a square and a truncation. Rounds `2k` (16); bytes
    /// `k·(8n + ⌈n/8⌉)`. Absolute error ≤ 1.1e-3 on `[−2^k, 0]` (the limit's
    /// `e^x·x²/2^(k+1)` plus rounding); inputs below `−2^k` give garbage.
    pub fn exp_neg(&mut self, x: &Share) -> Result<Share> {
        let f = self.frac_bits();
        let k = EXP_SQUARINGS;
        let hi = f + k;
        let mut y = self.add_scalar(x, 1u64 << hi);
        for i in 0..k {
            let sq = self.square_raw(&y)?;
            let shift = if i + 1 == k { hi + k } else { hi };
            y = self.trunc(&sq, shift)?;
        }
        Ok(y)
    }

    /// Row softmax of `x` (rows×cols): `exp(x − max) / Σ exp(x − max)`.
    ///
    /// Steps: row maximum (pairwise tree of ReLUs), [`Session::exp_neg`],
    /// row sums (local), [`Session::reciprocal`] on `[1, cols]`, one
    /// row-broadcast product and a truncation.
    /// Rounds `2⌈log2 cols⌉ + 2k + 3 + 2` (37 for cols = 65).
    /// Accuracy: absolute error ≤ 2e-3 per probability for scores whose
    /// pairwise differences stay within `2^(ℓ−1−f)` and above `−2^k`.
    pub fn softmax(&mut self, x: &Share, rows: usize, cols: usize, bits: u32) -> Result<Share> {
        check_len("softmax", "scores", x.len(), rows * cols)?;
        let m = self.row_max(x, rows, cols, bits)?;
        let d = x.sub(&Share::new(ring::repeat_rows(m.as_slice(), cols)));
        let e = self.exp_neg(&d)?;
        let s = Share::new(ring::row_sums(e.as_slice(), rows, cols));
        let inv = self.reciprocal(
            &s,
            Domain {
                lo: 1.0,
                hi: cols as f64,
            },
        )?;
        let p = self.mul_rows_raw(&e, &inv, rows, cols)?;
        self.trunc(&p, self.frac_bits() + EXTRA_FRAC)
    }

    /// ReLU-softmax row normalisation: `ReLU(x) / (Σ_j ReLU(x)_j + eps)`.
    ///
    /// Rounds 2 (ReLU) + 3 (reciprocal of the row sums on `row_sum`) + 2
    /// (row-broadcast product, truncation) = 7. Bytes ≈ `n·(8 + 1/8) + 8n + …`.
    /// Accuracy: relative error ≤ 1e-3 per entry (plus 1 ulp) while the row
    /// sum plus eps lies in `row_sum`.
    pub fn relu_softmax(
        &mut self,
        x: &Share,
        rows: usize,
        cols: usize,
        bits: u32,
        eps: f64,
        row_sum: Domain,
    ) -> Result<Share> {
        check_len("relu_softmax", "scores", x.len(), rows * cols)?;
        let r = self.relu(x, bits)?;
        let s = Share::new(ring::row_sums(r.as_slice(), rows, cols));
        let s = self.add_scalar(&s, self.encode(eps));
        let inv = self.reciprocal(&s, row_sum)?;
        let p = self.mul_rows_raw(&r, &inv, rows, cols)?;
        self.trunc(&p, self.frac_bits() + EXTRA_FRAC)
    }

    /// ReLU-softmax attention for one head: `diag(1/(rowsum(R) + eps))·(R·V)`
    /// with `R = ReLU(S)`, `S` n×n and `V` n×d. Normalising after the product
    /// scales n×d values instead of n×n.
    ///
    /// Rounds 2 (ReLU) + 2 (R·V) + 3 (reciprocal) + 2 = 9.
    pub fn relu_attention(
        &mut self,
        s: &Share,
        v: &Share,
        n: usize,
        d: usize,
        bits: u32,
        eps: f64,
        row_sum: Domain,
    ) -> Result<Share> {
        check_len("relu_attention", "scores", s.len(), n * n)?;
        check_len("relu_attention", "values", v.len(), n * d)?;
        let r = self.relu(s, bits)?;
        let rv = self.matmul(&r, v, n, n, d)?;
        let sums = Share::new(ring::row_sums(r.as_slice(), n, n));
        let sums = self.add_scalar(&sums, self.encode(eps));
        let inv = self.reciprocal(&sums, row_sum)?;
        let out = self.mul_rows_raw(&rv, &inv, n, d)?;
        self.trunc(&out, self.frac_bits() + EXTRA_FRAC)
    }

    /// Attention scores `Q·Kᵀ/√d` for one head (Q, K: n×d); the 1/√d is folded
    /// into the truncation. Rounds 2; bytes `16nd + ⌈n²/8⌉`.
    pub fn attention_scores(&mut self, q: &Share, k: &Share, n: usize, d: usize) -> Result<Share> {
        let kt = Share::new(ring::transpose(k.as_slice(), n, d));
        let s = self.matmul_raw(q, &kt, n, d, n)?;
        self.trunc_scaled(&s, self.frac_bits(), 1.0 / (d as f64).sqrt())
    }

    /// ScaleAttn for one head: `(Q·Kᵀ/√d)/N · V` with no nonlinearity, computed as
    /// `Q·(Kᵀ·V)` when `d < n` (2nd² instead of 2n²d multiply-adds) and as
    /// `(Q·Kᵀ)·V` otherwise; the public factor `1/(√d·N)` is folded into the
    /// first truncation. `tokens` is the paper's N (the token count).
    ///
    /// Rounds 4. Bytes: `8(nd + nd) + ⌈·/8⌉` for the first product and
    /// `8(nd + d²)` (or `8(n² + nd)`) for the second.
    /// Accuracy: a few ulps times √(inner dimension).
    pub fn scale_attn(
        &mut self,
        q: &Share,
        k: &Share,
        v: &Share,
        n: usize,
        d: usize,
        tokens: usize,
    ) -> Result<Share> {
        check_len("scale_attn", "queries", q.len(), n * d)?;
        check_len("scale_attn", "keys", k.len(), n * d)?;
        check_len("scale_attn", "values", v.len(), n * d)?;
        let f = self.frac_bits();
        let scale = 1.0 / ((d as f64).sqrt() * tokens as f64);
        let kt = Share::new(ring::transpose(k.as_slice(), n, d));
        if d < n {
            let m = self.matmul_raw(&kt, v, d, n, d)?;
            let m = self.trunc_scaled(&m, f, scale)?;
            self.matmul(q, &m, n, d, d)
        } else {
            let s = self.matmul_raw(q, &kt, n, d, n)?;
            let s = self.trunc_scaled(&s, f, scale)?;
            self.matmul(&s, v, n, n, d)
        }
    }

    /// MPCFormer's quadratic GeLU, `0.125x² + 0.25x + 0.5`.
    ///
    /// Evaluated at `2f + 3` fractional bits as `x² + 2x·2^f + 4·2^(2f)` and
    /// truncated once by `f + 3`. Rounds 2; bytes `8n + ⌈n/8⌉`. Exact to 1 ulp
    /// for `|x| < 2^(29.5 − f)`.
    pub fn gelu_quad(&mut self, x: &Share) -> Result<Share> {
        let f = self.frac_bits();
        let sq = self.square_raw(x)?;
        let lin = x.scale_int(1u64 << (f + 1));
        let t = self.add_scalar(&sq.add(&lin), 4u64 << (2 * f));
        self.trunc(&t, f + 3)
    }

    /// GeLU by the piecewise quadratic of [`approx::gelu_piecewise`] (16
    /// segments on [−4, 4], 0 below, x above): max error ≈ 7e-4 against the
    /// exact erf GeLU everywhere (measured 5.2e-4 including inputs next to
    /// the segment boundaries). The segment comparison ignores the input's
    /// bits below 2^−8 (a value within 2^−8 below a boundary may take the
    /// next segment, whose polynomial agrees there to ~1e-3), which makes
    /// each DCF 8 levels shallower.
    ///
    /// Steps: one opening of `x + r` serves the bit comparison at the 17
    /// boundaries ([`Session::bit_compare_begin`], XOR-output DCF) and `x²`
    /// (`m² − 2m·r + r²`); round 2 truncates `x²` and opens the 17 masked
    /// bits, which become arithmetic shares locally; round 3 multiplies the
    /// segment's coefficients by `(x, x²)`; round 4 truncates.
    /// Rounds 4; bytes `8n + ⌈n/8⌉ + ⌈17n/8⌉ + 32n + ⌈n/8⌉`. Dealer per
    /// element: a 15-bit [`crate::dcf_bit::BitKeys`] key (144 bytes) to each
    /// party; to party 1 also `8·17` (the bits' `ρ`), `8` (`r²`), `8 + 8`
    /// (truncations) and `16` (the product triple). 17 DCF evaluations of
    /// 8 AES blocks + 1 per element. Domain `|x| < 124` at f = 16.
    pub fn gelu(&mut self, x: &Share) -> Result<Share> {
        let f = self.frac_bits();
        let pw = approx::gelu_piecewise();
        let t: Vec<u64> = pw.thresholds.iter().map(|t| encode_at(*t, f)).collect();
        let r = self.bit_compare_begin(x, &t, f + 8, f.saturating_sub(8), false, true)?;
        let c = self.finish(r)?;
        let x2_raw = c.square_raw();
        let trunc = self.trunc_many_begin(&[(&x2_raw, f)])?;
        let (mut x2, opened) = self.finish2(trunc, c.open())?;
        let x2 = x2.pop().expect("one truncation");
        let g = opened.bits();
        let (raw, shift) = self.piecewise_raw_squared(x, Some(&x2), &g, &pw, f, 128.0)?;
        self.trunc(&raw, shift)
    }

    /// LayerNorm of each row of `x` (rows×c): `(x − μ)/√(σ² + eps)·γ + β`,
    /// with `γ` a masked 1×c weight (see [`Session::mask_weight`]) and `β` a
    /// shared vector; either may be absent (γ = 1, β = 0), for example when the
    /// model owner has folded them into the next linear layer.
    ///
    /// Steps: `d = c·x − Σx` (local); `x − μ = d/c` by a scaled truncation
    /// (round 1); one opening of `x − μ − A` serves both `(x − μ)²` and
    /// `(x − μ)·γ` (round 2, one dealer correlation with the same mask `A`);
    /// one truncation round for both (round 3); `u = Σ(x − μ)² + c·eps =
    /// c·(σ² + eps)` (local); `√c/√u` by [`Session::rsqrt_scaled`] (rounds
    /// 4–6, the public `1/c` folded into the constant); one row-broadcast
    /// product and a truncation (rounds 7–8); `+ β` (local).
    ///
    /// Rounds 8. Bytes per party ≈ `rows·c·(8 + 8 + 3/8) + rows·(ℓ/8 + 32)`.
    /// Dealer: `16·rows·c` bytes to party 1 (8 without γ).
    /// Accuracy: relative error ≤ 1e-3 of `(x − μ)/σ` while `σ²` lies in
    /// `params.var`, plus a few ulps; requires `|x − μ| < 2^(31 − f)`.
    pub fn layer_norm(
        &mut self,
        x: &Share,
        gamma: Option<&MaskedWeight>,
        beta: Option<&Share>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Result<Share> {
        check_len("layer_norm", "input", x.len(), rows * c)?;
        let xc = self.trunc_scaled(&center_rows(x, rows, c), 0, 1.0 / c as f64)?;
        self.layer_norm_centered(&xc, gamma, beta, rows, c, params)
    }

    /// [`Session::layer_norm`] from the centred rows `x − μ` on (rounds 2–7).
    /// A caller that already truncates the input can produce `x − μ` in the
    /// same round: `trunc_scaled(center_rows(x_raw), extra, 1/c)` next to the
    /// truncation of `x_raw` itself, saving LayerNorm's first round.
    pub fn layer_norm_centered(
        &mut self,
        xc: &Share,
        gamma: Option<&MaskedWeight>,
        beta: Option<&Share>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Result<Share> {
        if let Some(b) = beta {
            check_len("layer_norm", "beta", b.len(), c)?;
        }
        let (inv, p) = self.norm_inverse(xc, gamma, None, rows, c, params)?;
        let num = p.scaled.unwrap_or_else(|| xc.clone());
        self.scale_rows_shift(&num, &inv, rows, c, beta)
    }

    /// `diag(inv)·x + shift` for `x` (rows×cols) and row inverses at
    /// `f + EXTRA_FRAC` bits, `shift` broadcast over rows. Rounds 2.
    fn scale_rows_shift(
        &mut self,
        x: &Share,
        inv: &Share,
        rows: usize,
        cols: usize,
        shift: Option<&Share>,
    ) -> Result<Share> {
        let y = self.mul_rows_raw(x, inv, rows, cols)?;
        let y = self.trunc(&y, self.frac_bits() + EXTRA_FRAC)?;
        Ok(match shift {
            Some(b) => y.add(&Share::new(tile(b.as_slice(), rows))),
            None => y,
        })
    }

    /// `LN(x)·W + b` for centred rows `xc` (rows×c), a LayerNorm without
    /// affine step (fold `γ`, `β` into `W`, `b` beforehand) followed by a
    /// linear layer, in 6 rounds instead of 6 + 2: the opening of `x − μ`
    /// for the variance also serves the product `(x − μ)·W`, which is then
    /// scaled per row by `1/σ`.
    /// Bytes per party ≈ `8·rows·(c + out) + …` (the row scaling opens rows×out).
    pub fn layer_norm_linear(
        &mut self,
        xc: &Share,
        w: &MaskedWeight,
        bias: Option<&Share>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Result<Share> {
        let out = w.cols();
        if let Some(b) = bias {
            check_len("layer_norm_linear", "bias", b.len(), out)?;
        }
        let (inv, p) = self.norm_inverse(xc, None, Some(w), rows, c, params)?;
        let xw = p.product.expect("requested product");
        self.scale_rows_shift(&xw, &inv, rows, out, bias)
    }

    /// `z = LN(x)·γ + β` and `LN(x)·W + b` together, for a LayerNorm whose
    /// output feeds both a residual and a linear layer (`W`, `b` must carry
    /// the norm's `γ`, `β`). 6 rounds from the centred rows, instead of 6 + 2:
    /// the opening for the variance also serves `(x − μ)·γ` and `(x − μ)·W`,
    /// and both are scaled by `1/σ` in one round.
    pub fn layer_norm_and_linear(
        &mut self,
        xc: &Share,
        norm: (&MaskedWeight, &Share),
        next: (&MaskedWeight, Option<&Share>),
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Result<(Share, Share)> {
        let ((gamma, beta), (w, bias)) = (norm, next);
        let out = w.cols();
        check_len("layer_norm", "beta", beta.len(), c)?;
        if let Some(b) = bias {
            check_len("layer_norm_and_linear", "bias", b.len(), out)?;
        }
        let (inv, p) = self.norm_inverse(xc, Some(gamma), Some(w), rows, c, params)?;
        let zr = self.mul_rows_raw_begin(p.scaled.as_ref().expect("scaled"), &inv, rows, c)?;
        let yr = self.mul_rows_raw_begin(p.product.as_ref().expect("product"), &inv, rows, out)?;
        let (z, y) = self.finish2(zr, yr)?;
        let s = self.frac_bits() + EXTRA_FRAC;
        let mut t = self.trunc_many(&[(&z, s), (&y, s)])?;
        let y = t.pop().expect("product");
        let z = t
            .pop()
            .expect("normed")
            .add(&Share::new(tile(beta.as_slice(), rows)));
        let y = match bias {
            Some(b) => y.add(&Share::new(tile(b.as_slice(), rows))),
            None => y,
        };
        Ok((z, y))
    }

    /// Shared part of the LayerNorm variants: the products of `x − μ` (one
    /// opening), then `√c/√u` with `u = Σ(x − μ)² + c·eps`, whose comparison
    /// runs in the round that truncates `u` and the products. Returns the
    /// row inverses (at `f + EXTRA_FRAC` bits) and the truncated products.
    fn norm_inverse(
        &mut self,
        xc: &Share,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
        rows: usize,
        c: usize,
        params: LayerNormParams,
    ) -> Result<(Share, NormProducts)> {
        check_len("layer_norm", "input", xc.len(), rows * c)?;
        if let Some(g) = gamma {
            check_len("layer_norm", "gamma", g.rows() * g.cols(), c)?;
        }
        let f = self.frac_bits();
        let p = self.norm_products_raw(xc, gamma, next, rows, c)?;
        // u = Σ(x − μ)² + c·eps = c·(σ² + eps), at 2f bits
        let u_raw = Share::new(ring::row_sums(p.square.as_slice(), rows, c));
        let u_raw = self.add_scalar(&u_raw, encode_at(c as f64 * params.eps, 2 * f));
        let dom = Domain {
            lo: c as f64 * (params.var.lo + params.eps),
            hi: c as f64 * (params.var.hi + params.eps),
        };
        let pe = PiecewiseEval::rsqrt(dom, (c as f64).sqrt(), f);
        let mut parts = vec![(&u_raw, f)];
        parts.extend(p.scaled.iter().map(|s| (s, f)));
        parts.extend(p.product.iter().map(|s| (s, f)));
        let trunc = self.trunc_many_begin(&parts)?;
        let cmp =
            self.ge_thresholds_begin(&u_raw, &pe.thresholds(2 * f), dom.compare_bits(2 * f))?;
        let (t, g) = self.finish2(trunc, cmp)?;
        let mut t = t.into_iter();
        let u = t.next().expect("u");
        let scaled = p.scaled.as_ref().map(|_| t.next().expect("scaled"));
        let product = p.product.as_ref().map(|_| t.next().expect("product"));
        let inv = self.piecewise_from_bits(&u, &g, &pe.pw, pe.out_frac, pe.max_out)?;
        Ok((
            inv,
            NormProducts {
                square: u,
                scaled,
                product,
            },
        ))
    }

    /// From one opening of `x − A` (x: rows×c): `x ⊙ x`; with a masked
    /// scale `γ` (1×c), `x ⊙ γ` broadcast over rows; with a masked weight `W`
    /// (c×out), `x·W`. All without truncation.
    /// Rounds 1; sends `8·rows·c` bytes per party; local work includes one
    /// rows×c×out product pair for `W`.
    pub fn norm_products_raw(
        &mut self,
        x: &Share,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
        rows: usize,
        c: usize,
    ) -> Result<NormProducts> {
        check_len("norm_products", "input", x.len(), rows * c)?;
        if let Some(w) = next {
            check_len("norm_products", "weight rows", w.rows(), c)?;
        }
        let req = Request::NormProducts {
            id: gamma.map(|g| g.id()),
            next: next.map(|w| (w.id(), w.cols())),
            rows,
            cols: c,
        };
        let (a, _, cc) = expect_triple("norm_products", self.take("norm_products", req)?)?;
        let e_mine = ring::sub(x.as_slice(), &a);
        let other = self.exchange("norm_products", &e_mine)?;
        let e = ring::add(&e_mine, &other);
        let p0 = self.is_p0();
        let n = rows * c;
        // x² = c_sq + 2e·a + e²  (e² by party 0)
        let sq: Vec<u64> = (0..n)
            .map(|i| {
                let mut z = cc[i].wrapping_add(e[i].wrapping_mul(a[i]).wrapping_mul(2));
                if p0 {
                    z = z.wrapping_add(e[i].wrapping_mul(e[i]));
                }
                z
            })
            .collect();
        let mut at = n;
        let scaled = gamma.map(|g| {
            // x·γ = c_w + e·(B_i + [p0]F) + a·F, per column j
            let (eb, f) = (g.eb_share(), g.opened());
            let v = (0..n)
                .map(|i| {
                    let j = i % c;
                    cc[at + i]
                        .wrapping_add(e[i].wrapping_mul(eb[j]))
                        .wrapping_add(a[i].wrapping_mul(f[j]))
                })
                .collect::<Vec<u64>>();
            at += n;
            Share::new(v)
        });
        let product = next.map(|w| {
            // x·W = C + E·(B_i + [p0]F) + A·F
            let mut z = cc[at..at + rows * w.cols()].to_vec();
            ring::matmul_acc(&e, w.eb_share(), &mut z, rows, c, w.cols());
            ring::matmul_acc(&a, w.opened(), &mut z, rows, c, w.cols());
            Share::new(z)
        });
        Ok(NormProducts {
            square: Share::new(sq),
            scaled,
            product,
        })
    }
}

/// Default range of ReLU-softmax row sums: `[2^−10, 2^12]`.
pub const ROW_SUMS: Domain = Domain {
    lo: 1.0 / 1024.0,
    hi: 4096.0,
};

/// `c·x − Σ_j x_j` for each row of `x` (rows×c): `c` times the centred rows,
/// exact and local. Divide by `c` with a scaled truncation.
pub fn center_rows(x: &Share, rows: usize, c: usize) -> Share {
    let sums = ring::row_sums(x.as_slice(), rows, c);
    Share::new(ring::sub(
        &ring::scale(x.as_slice(), c as u64),
        &ring::repeat_rows(&sums, c),
    ))
}

/// `v` repeated `times` times (a row vector broadcast over rows).
pub fn tile(v: &[u64], times: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(v.len() * times);
    for _ in 0..times {
        out.extend_from_slice(v);
    }
    out
}

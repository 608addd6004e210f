//! LayerNorm: centred rows, their inverse standard deviation, and the
//! products of the normalised rows with the scale and the next weight.

use crate::arith::{MaskedWeight, beaver_term};
use crate::channel;
use crate::ctx::{Ctx, expect_triple};
use crate::dealer::Request;
use crate::error::check_len;
use crate::fixed::encode_at;
use crate::fx::{Fx, Shape};
use crate::nonlinear::{Domain, NORM_INV_FRAC, PiecewiseEval, tile};
use crate::op::{Op, attempt};
use crate::open::{NormProducts, masked_products};
use crate::ring;
use crate::share::Share;

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

/// What a LayerNorm's shared part (`Ctx::norm_inverse`) leaves: the
/// truncated centred rows, their requested products at `2f` bits
/// (untruncated) and the rows' `√c/√u` with its truncation pending (to
/// `f + EXTRA_FRAC` bits; [`NormInverse::scale`] for the products).
struct NormInverse {
    inv: Fx,
    centred: Fx,
    scaled: Option<Fx>,
    product: Option<Fx>,
}

impl NormInverse {
    /// `x`'s rows times `√c/√u` ([`Ctx::mul_rows`]), read at `f` bits:
    /// the centred rows (at `f`) by the inverse at `f + EXTRA_FRAC`, a
    /// product (at `2f`, kept whole) by the inverse read at `f +
    /// NORM_INV_FRAC`, so that their product fits the ring untruncated.
    fn scale(&self, ctx: &mut Ctx<'_>, x: &Fx) -> Op<Fx> {
        let f = self.centred.frac();
        let inv = if x.frac() > f {
            self.inv.at_frac(f + NORM_INV_FRAC)
        } else {
            self.inv.clone()
        };
        ctx.mul_rows(x, &inv).map(move |y| y.at_frac(f))
    }
}

/// `c·x − Σ_j x_j` for each row of `x` (rows×c): `c` times the centred rows,
/// exact and local. Divide by `c` with a scaled truncation.
pub fn center_rows(x: &Share, rows: usize, c: usize) -> Share {
    let sums = ring::row_sums(x.as_slice(), rows, c);
    Share::new(ring::sub(
        &ring::scale(x.as_slice(), c as u64),
        &ring::repeat_rows(&sums, c),
    ))
}

impl Ctx<'_> {
    /// LayerNorm of each row of `x` (rows×c): `(x − μ)/√(σ² + eps)·γ + β`,
    /// with `γ` a masked 1×c weight (see [`Ctx::mask_weight`]) and `β` a
    /// shared vector; either may be absent (γ = 1, β = 0), for example when the
    /// model owner has folded them into the next linear layer.
    ///
    /// Steps: `d = c·x − Σx` (local); `x − μ = d/c` with its truncation
    /// pending ([`Fx::scaled`]), then [`Ctx::layer_norm_centered`],
    /// whose first opening performs it.
    ///
    /// Returned at `f` bits with its last truncation pending. Rounds 4 (5
    /// with [`Ctx::settle`]). Bytes per party ≈ `rows·c·(8 + t/8 + 8 + 3/8) +
    /// rows·(ℓ/8 + 32)`, `t` the shift of the scaling by `1/c` (`log2 c`
    /// for a power of two, else about `SCALE_BITS + log2 c`): the second
    /// opening carries only its wrap part ([`crate::open::BitCompared::products`]).
    /// Dealer: about `36·rows·c` bytes to party 1 (28 without γ; narrowed
    /// corrections, see [`crate::Request`], and the squares summed per row
    /// by the dealer, `Squares::RowSums`).
    /// Accuracy: relative error ≤ 1e-3 of `(x − μ)/σ` while `σ²` lies in
    /// `params.var`, plus a few ulps; requires `|x − μ| < 2^(31 − f)`.
    pub fn layer_norm(
        &mut self,
        x: &Fx,
        gamma: Option<&MaskedWeight>,
        beta: Option<&Share>,
        params: LayerNormParams,
    ) -> Op<Fx> {
        let (rows, c) = (x.rows(), x.cols());
        let xc = x.like(center_rows(x.share(), rows, c));
        self.layer_norm_centered(&xc.scaled(1.0 / c as f64), gamma, beta, params)
    }

    /// [`Ctx::layer_norm`] from the centred rows `x − μ` on (rows×c), which may carry
    /// a pending truncation (for example `center_rows` of a residual-stream
    /// value at `2f` bits, [`Fx::scaled`] by `1/c`): the first
    /// opening performs it. The result is returned at `f` bits with its last truncation
    /// pending (`2f + NORM_INV_FRAC` bits with `γ`, `f + EXTRA_FRAC`
    /// without), for a consumer to merge.
    ///
    /// Steps, for a pending input: round 1 opens `x − μ + r` once for its
    /// truncation and square (a comparison with no threshold,
    /// [`Ctx::bit_compare`]), so `u = Σ(x − μ)² + c·eps = c·(σ² + eps)` is
    /// known after one round ([`Ctx::norm_opening`]); round 2 opens, for
    /// `(x − μ)·γ` (and `(x − μ)·W` in the linear variants), only the
    /// truncation's wrap part masked modulo `2^s` (`s` bits per element for
    /// a pending shift `s`, [`crate::open::BitCompared::products`]) beside the rsqrt's
    /// comparison of `u` and the truncation of `u`; round 3 the rsqrt's
    /// product beside the products' truncations; round 4 the row scaling
    /// by `√c/√u` (which also truncates the rsqrt). For an input with
    /// nothing pending, round 1 opens `x − μ − A` for every product at
    /// once and the rest moves up. Rounds 4 (5 with the final truncation).
    pub fn layer_norm_centered(
        &mut self,
        xc: &Fx,
        gamma: Option<&MaskedWeight>,
        beta: Option<&Share>,
        params: LayerNormParams,
    ) -> Op<Fx> {
        let (rows, c) = (xc.rows(), xc.cols());
        if let Some(b) = beta {
            attempt!(check_len("layer_norm", "beta", b.len(), c));
        }
        let beta = beta.map(|b| self.fx(Share::new(tile(b.as_slice(), rows)), xc.shape()));
        self.norm_inverse(xc, gamma, None, params)
            .then(move |ctx, n| match &n.scaled {
                Some(xg) => n.scale(ctx, xg),
                None => n.scale(ctx, &n.centred),
            })
            .map(move |y| match beta {
                Some(b) => y.add(&b),
                None => y,
            })
    }

    /// `LN(x)·W + b` for centred rows `xc` (rows×c, possibly with a pending
    /// truncation), a LayerNorm without affine step (fold `γ`, `β` into
    /// `W`, `b` beforehand) followed by a linear layer: the opening of
    /// `x − μ` for the products also serves `(x − μ)·W`, which is then
    /// scaled per row by `1/σ`; the result at `f` bits, settled. Rounds 5, as [`Ctx::layer_norm_centered`].
    /// Bytes per party ≈ `8·rows·(2c + out) + …` (the row scaling opens rows×out).
    pub fn layer_norm_linear(
        &mut self,
        xc: &Fx,
        w: &MaskedWeight,
        bias: Option<&Share>,
        params: LayerNormParams,
    ) -> Op<Fx> {
        let (rows, out) = (xc.rows(), w.cols());
        if let Some(b) = bias {
            attempt!(check_len("layer_norm_linear", "bias", b.len(), out));
        }
        let bias =
            bias.map(|b| self.fx(Share::new(tile(b.as_slice(), rows)), Shape::new(rows, out)));
        self.norm_inverse(xc, None, Some(w), params)
            .then(move |ctx, n| {
                let xw = n.product.as_ref().expect("requested product");
                n.scale(ctx, xw).then(move |ctx, y| ctx.settle(y))
            })
            .map(move |y| match bias {
                Some(b) => y.add(&b),
                None => y,
            })
    }

    /// `z = LN(x)·γ + β` and `LN(x)·W + b` together, for a LayerNorm whose
    /// output feeds both a residual and a linear layer (`W`, `b` must carry
    /// the norm's `γ`, `β`): one opening serves `(x − μ)·γ` and `(x − μ)·W`,
    /// and both are scaled by `1/σ` in one round. Both are returned with
    /// their last truncation pending (4 rounds from the centred rows), so
    /// the residual's truncation and the consumer of the linear output (a
    /// GeLU or ReLU that truncates in its own opening) can run side by side.
    pub fn layer_norm_and_linear(
        &mut self,
        xc: &Fx,
        norm: (&MaskedWeight, &Share),
        next: (&MaskedWeight, Option<&Share>),
        params: LayerNormParams,
    ) -> Op<(Fx, Fx)> {
        let ((gamma, beta), (w, bias)) = (norm, next);
        let (rows, c, out) = (xc.rows(), xc.cols(), w.cols());
        attempt!(check_len("layer_norm", "beta", beta.len(), c));
        if let Some(b) = bias {
            attempt!(check_len("layer_norm_and_linear", "bias", b.len(), out));
        }
        // the shifts, lifted to the products' scale by the sums
        let beta = self.fx(Share::new(tile(beta.as_slice(), rows)), xc.shape());
        let bias =
            bias.map(|b| self.fx(Share::new(tile(b.as_slice(), rows)), Shape::new(rows, out)));
        self.norm_inverse(xc, Some(gamma), Some(w), params)
            .then(move |ctx, n| {
                let scaled = n.scaled.as_ref().expect("scaled");
                let product = n.product.as_ref().expect("product");
                let z = n.scale(ctx, scaled);
                let y = n.scale(ctx, product);
                z.join(y)
            })
            .map(move |(z, y)| {
                let y = match bias {
                    Some(b) => y.add(&b),
                    None => y,
                };
                (z.add(&beta), y)
            })
    }

    /// Shared part of the LayerNorm variants (see
    /// [`Ctx::layer_norm_centered`] for the rounds): the truncated centred
    /// rows and their products, and `√c/√u` with `u = Σ(x − μ)² + c·eps`,
    /// its last truncation pending (for the row scaling).
    fn norm_inverse(
        &mut self,
        xc: &Fx,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
        params: LayerNormParams,
    ) -> Op<NormInverse> {
        let (rows, c) = (xc.rows(), xc.cols());
        if let Some(g) = gamma {
            attempt!(check_len("layer_norm", "gamma", g.rows() * g.cols(), c));
        }
        let f = self.frac_bits();
        let dom = Domain {
            lo: c as f64 * (params.var.lo + params.eps),
            hi: c as f64 * (params.var.hi + params.eps),
        };
        let pe = PiecewiseEval::rsqrt(dom, (c as f64).sqrt(), f);
        let eps = encode_at(c as f64 * params.eps, 2 * f);
        let (gamma, next) = (gamma.cloned(), next.cloned());
        // u = Σ(x − μ)² + c·eps = c·(σ² + eps), at 2f bits
        let u_of = move |ctx: &Ctx<'_>, sq: &Share| {
            ctx.add_scalar(&Share::new(ring::row_sums(sq.as_slice(), rows, c)), eps)
        };
        // the rsqrt in one round on u at 2f (its truncation done by the same opening)
        let rsqrt = move |ctx: &mut Ctx<'_>, u_raw: Share| {
            let u = Fx::with_pending(u_raw, Shape::new(rows, 1), f, f);
            ctx.piecewise_linear(u, &pe)
        };
        // x − μ at f bits, its products with γ and W at 2f (kept whole)
        let (shape, out) = (xc.shape(), next.as_ref().map_or(0, |w| w.cols()));
        let finish = move |xt: Share, p: NormProducts, inv: Fx| NormInverse {
            inv,
            centred: Fx::new(xt, shape, f),
            scaled: p.scaled.map(|s| Fx::new(s, shape, 2 * f)),
            product: p.product.map(|s| Fx::new(s, Shape::new(rows, out), 2 * f)),
        };
        if xc.pending() == 0 {
            // one opening for the square and every product
            let xt = xc.share().clone();
            return self
                .norm_products(xc.share(), true, gamma.as_ref(), next.as_ref(), rows, c)
                .then(move |ctx, p| {
                    let u_raw = u_of(ctx, &p.square);
                    rsqrt(ctx, u_raw).map(move |inv| finish(xt, p, inv))
                });
        }
        // a truncating opening gives x − μ and its square; then the products
        self.norm_opening(xc, gamma.as_ref(), next.as_ref())
            .then(move |ctx, o| {
                let xt = o.value();
                let u_raw = ctx.add_scalar(&o.square_row_sums(), eps);
                let products = if gamma.is_none() && next.is_none() {
                    Op::ready(NormProducts {
                        square: Share::zeros(0),
                        scaled: None,
                        product: None,
                    })
                } else {
                    o.products(gamma.as_ref(), next.as_ref())
                };
                products
                    .join(rsqrt(ctx, u_raw))
                    .map(move |(p, inv)| finish(xt, p, inv))
            })
    }

    /// From one opening of `x − A` (x: rows×c): with `square`, `x ⊙ x`; with a masked
    /// scale `γ` (1×c), `x ⊙ γ` broadcast over rows; with a masked weight `W`
    /// (c×out), `x·W`. All without truncation.
    /// Rounds 1; sends `8·rows·c` bytes per party; local work includes one
    /// rows×c×out product pair for `W`.
    fn norm_products(
        &mut self,
        x: &Share,
        square: bool,
        gamma: Option<&MaskedWeight>,
        next: Option<&MaskedWeight>,
        rows: usize,
        c: usize,
    ) -> Op<NormProducts> {
        attempt!(check_len("norm_products", "input", x.len(), rows * c));
        if let Some(w) = next {
            attempt!(check_len("norm_products", "weight rows", w.rows(), c));
        }
        let req = Request::NormProducts {
            id: gamma.map(|g| g.id()),
            next: next.map(|w| (w.id(), w.cols())),
            rows,
            cols: c,
            square,
        };
        let (a, _, cc) = attempt!(
            self.take("norm_products", req)
                .and_then(|m| expect_triple("norm_products", m))
        );
        let e_mine = ring::sub(x.as_slice(), &a);
        let p0 = self.is_p0();
        let (gamma, next) = (gamma.cloned(), next.cloned());
        Op::exchange(
            "norm_products",
            channel::pack(&e_mine, 64),
            move |_, peer| {
                let other = channel::unpack(peer, rows * c, 64);
                let e = ring::add(&e_mine, &other);
                let n = rows * c;
                // x² = c_sq + 2e·a + e²  (e² by party 0)
                let sq: Vec<u64> = if square {
                    (0..n)
                        .map(|i| cc[i].wrapping_add(beaver_term(p0, e[i], e[i], a[i], a[i])))
                        .collect()
                } else {
                    Vec::new()
                };
                // x = E + A: E public, A this party's; the dealer's A·B after the squares
                let at = if square { n } else { 0 };
                let (scaled, product) =
                    masked_products((&e, &a, &cc[at..]), gamma.as_ref(), next.as_ref(), c);
                Op::ready(NormProducts {
                    square: Share::new(sq),
                    scaled,
                    product,
                })
            },
        )
    }
}

//! The vocabulary of correlated randomness: what an operator asks for
//! ([`Request`]), its parameters ([`Squares`], [`ValueProducts`]), and its
//! size on the wire ([`Request::dealer_bytes`]).

/// One request for correlated randomness: a kind and a public shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// Elementwise Beaver triples: `a`, `b`, `c = a·b`, each `n` long.
    Triple {
        /// Elements.
        n: usize,
    },
    /// Dot-product triples: `a_t`, `b_t` (`terms` of them, `n` long each,
    /// term after term) and `c = Σ_t a_t·b_t` (`n` long): the masks of
    /// [`crate::Ctx::dot`], one product share per element whatever
    /// the number of terms.
    Dot {
        /// Elements.
        n: usize,
        /// Products summed per element.
        terms: usize,
    },
    /// Square pairs: `a`, `c = a²`.
    Square {
        /// Elements.
        n: usize,
    },
    /// Matrix triple: `A` (m×k), `B` (k×n), `C = A·B`.
    MatMul {
        /// Rows of A.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of B.
        n: usize,
    },
    /// Row-broadcast triple: `A` (rows×cols), `b` (rows), `C_ij = A_ij·b_i`.
    RowScale {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// For a row scaling whose vector is truncated on the way in (see
    /// `Ctx::mul_rows`): `A` (rows×cols) masks the matrix, a 64-bit `r`
    /// (rows) masks the vector, and with `r_h = r >> shift`, `m_r = msb(r)`:
    /// shares of `r_h`, `m_r`, `A_ij·r_h,i` and `A_ij·m_r,i`.
    TruncRowScale {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// The vector's truncation (1..64).
        shift: u32,
    },
    /// For a row scaling whose matrix and vector are both truncated on the
    /// way in (see `Ctx::mul_rows`): 64-bit masks `A` (rows×cols)
    /// and `r` (rows); with `a_h = A >> x_shift`, `a_m = msb(A)`, `r_h = r >>
    /// v_shift`, `r_m = msb(r)`: shares of `a_h`, `a_m`, `r_h`, `r_m` and of
    /// the four products `a_h·r_h`, `a_h·r_m`, `a_m·r_h`, `a_m·r_m`
    /// (row-broadcast).
    PendingRowScale {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// The matrix's truncation (1..64).
        x_shift: u32,
        /// The vector's truncation (1..64).
        v_shift: u32,
    },
    /// The mask `B` (k×n) of a fixed weight, drawn once per model load.
    WeightMask {
        /// The weight's identifier, unique within a model.
        id: u32,
        /// Rows of the weight.
        k: usize,
        /// Columns of the weight.
        n: usize,
    },
    /// A fresh `A` (m×k) and `C = A·B` for a weight masked earlier by [`Request::WeightMask`].
    WeightMatMul {
        /// The weight's identifier.
        id: u32,
        /// Rows of the activation.
        m: usize,
        /// Rows of the weight.
        k: usize,
        /// Columns of the weight.
        n: usize,
    },
    /// For LayerNorm: one mask `A` (rows×cols) serving several products of
    /// the same opened `X − A`: with `square`, `C_sq = A ⊙ A`; when `id` names a masked
    /// 1×cols weight `B` (the LayerNorm scale), `C_w = A ⊙ B` broadcast over
    /// rows; when `next` names a masked cols×out weight `W`, `C_next = A·W`.
    NormProducts {
        /// The masked scale vector, if any.
        id: Option<u32>,
        /// A masked cols×out weight `W` and its width: adds `C_next = A·W`.
        next: Option<(u32, usize)>,
        /// Add `C_sq = A ⊙ A` (the square of `X`).
        square: bool,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// For truncation by `shift`: party 0 holds random bits `a`, party 1
    /// bits `b`, both hold shares of `a·b` modulo `2^shift` (the product is
    /// only used times `2^(64−shift)`).
    Wrap {
        /// Elements.
        n: usize,
        /// The truncation (1..64).
        shift: u32,
    },
    /// For comparison on `bits`-bit inputs: a mask `r` (shared mod 2^bits), shares of
    /// `msb(r)`, and a DCF key for `(1 − 2·msb(r))·[x < r mod 2^(bits−1)]`
    /// on the top `bits − 1 − coarse` of those bits.
    Compare {
        /// Elements.
        n: usize,
        /// Input width in bits (2..=64).
        bits: u32,
        /// Low bits the comparison ignores (0 for an exact comparison).
        coarse: u32,
    },
    /// For comparisons with XOR-shared results consumed in the next round
    /// (see [`crate::compare`]'s "bit comparisons"): a 64-bit mask `r`, an
    /// XOR-output DCF key for `[x < r mod 2^(bits−1)]` on the top
    /// `bits − 1 − coarse` of those bits, and per element and threshold a
    /// random bit `ρ = σ ⊕ msb_bits(r)` with both XOR shares `σ_b` drawn by
    /// the parties and arithmetic shares of `ρ`; with `select`, shares of
    /// `ρ·r`; with `square`, shares of `r²`. With `trunc = s > 0` the opened
    /// value is also truncated by `s` (see [`crate::compare`]): shares of
    /// `r_h = r >> s` and `msb(r)`, and `r_h` takes `r`'s place in `ρ·r` and
    /// `r²`, with shares of `ρ·msb(r)` (select) and `r_h·msb(r)` (square)
    /// beside them. With `Squares::EachTruncated(q)` (and `select`) the
    /// bits' opening round also truncates `x²` by `q`
    /// ([`crate::open::BitCompared::open`]): a 64-bit mask `r₂` drawn by
    /// the parties, shares of `r₂ >> q` and `msb(r₂)`, and per threshold
    /// of `ρ·(r₂ >> q)` and `ρ·msb(r₂)` (the `msb` parts modulo `2^q`).
    /// With no thresholds (`points = 0`) there is no DCF key.
    /// With `products` (and a truncation by `s`), the material for products
    /// of the truncated value `v` with masked weights in the next round
    /// ([`crate::open::BitCompared::products`]): a mask `A_t` drawn by
    /// the parties (shared modulo `2^s`) and shares of `C* = (r_h −
    /// 2^(64−s)·A_t)·B` for each weight `B`, as the products' opening of
    /// `T − A_t` (with `T` the wrap part of `v`, modulo `2^s`) needs.
    BitCompare {
        /// Elements.
        n: usize,
        /// Input width in bits (2..=64).
        bits: u32,
        /// Low bits the comparison ignores (0 for an exact comparison).
        coarse: u32,
        /// Thresholds per element (bits opened per element).
        points: usize,
        /// Add shares of `ρ·r` (to select `x` by each bit).
        select: bool,
        /// Shares of `r²` (to square `x` from the same opening), per element
        /// or summed over rows.
        square: Squares,
        /// Truncate the opened value by this many bits (0: none).
        trunc: u32,
        /// Products of the truncated value with masked weights in the next
        /// round (needs `trunc > 0`).
        products: Option<ValueProducts>,
    },
    /// For a comparison whose bits multiply the compared value in the same
    /// round (see `Ctx::compare_products`): a 64-bit mask `R` whose low
    /// `bits` bits `r` mask the comparison, shares of `msb_bits(r)`, and a
    /// DCF key with a `w`-word payload per element for `[x < r mod 2^(bits−1)]`
    /// on the top `bits − 1 − coarse` of those bits, with payloads `β`,
    /// `β·Y₁` (and `β·Y₂`), `β = 1 − 2·msb_bits(r)`; with `trunc = s > 0`,
    /// `Y₁ = R >> s`, `Y₂ = msb(R)` (w = 3) and shares of both, else
    /// `Y₁ = R` (w = 2); and shares of `msb_bits(r)·Y_j`.
    CompareProducts {
        /// Elements.
        n: usize,
        /// Input width in bits (2..=62).
        bits: u32,
        /// Low bits the comparison ignores (0 for an exact comparison).
        coarse: u32,
        /// Truncate the opened value by this many bits (0: none).
        trunc: u32,
        /// Depths (increasing, below the key's `bits − 1 − coarse` levels)
        /// at which some thresholds' points stop ([`crate::dcf::DcfKeys`]).
        stops: Vec<u32>,
    },
}

/// The products a truncating [`Request::BitCompare`] prepares for its
/// value `v` (rows of `cols`), as a LayerNorm's centred rows need: `v ⊙ γ`
/// with a masked 1×cols scale and `v·W` with a masked cols×out weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueProducts {
    /// Columns of each row of `v`.
    pub cols: usize,
    /// The masked scale `γ` (1×cols), if any.
    pub scale: Option<u32>,
    /// A masked cols×out weight `W` and its width, if any.
    pub next: Option<(u32, usize)>,
}

impl ValueProducts {
    /// Words of the products for `n` elements of `v`.
    pub(crate) fn words(&self, n: usize) -> usize {
        let rows = n / self.cols.max(1);
        let scaled = if self.scale.is_some() { n } else { 0 };
        scaled + self.next.map_or(0, |(_, out)| rows * out)
    }
}

/// Which squares a [`Request::BitCompare`] gives from its opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Squares {
    /// None.
    No,
    /// One per element (`r²` per element from the dealer).
    Each,
    /// Only their sums over each row of this many elements, as a
    /// LayerNorm's `Σ(x − μ)²` needs: one word of `Σ r²` per row instead
    /// of one per element.
    RowSums(usize),
    /// One per element, also truncated by this many bits (1..62) in the
    /// round that opens the bits, and selected by each bit there (needs
    /// `select`): `[x ≥ t_j]·⌊x²/2^q⌋` for a piecewise quadratic.
    EachTruncated(u32),
}

impl Squares {
    /// Words of the mask's squares for `n` elements.
    pub(crate) fn mask_words(self, n: usize) -> usize {
        match self {
            Squares::No => 0,
            Squares::Each | Squares::EachTruncated(_) => n,
            Squares::RowSums(cols) => n / cols.max(1),
        }
    }
}

/// Payload words of a [`Request::CompareProducts`]'s DCF key.
pub(crate) fn product_keys(trunc: u32) -> usize {
    if trunc > 0 { 3 } else { 2 }
}

/// The shift by which a bit comparison's bits' round truncates its squares
/// (0: it does not).
pub(crate) fn square_shift(square: Squares) -> u32 {
    match square {
        Squares::EachTruncated(q) => q,
        _ => 0,
    }
}

impl Request {
    /// Short name for errors and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Triple { .. } => "triple",
            Request::Square { .. } => "square",
            Request::Dot { .. } => "dot",
            Request::MatMul { .. } => "matmul",
            Request::RowScale { .. } => "rowscale",
            Request::TruncRowScale { .. } => "trunc-rowscale",
            Request::PendingRowScale { .. } => "pending-rowscale",
            Request::WeightMask { .. } => "weight-mask",
            Request::WeightMatMul { .. } => "weight-matmul",
            Request::Wrap { .. } => "wrap",
            Request::NormProducts { .. } => "norm-products",
            Request::Compare { .. } => "compare",
            Request::BitCompare { .. } => "bit-compare",
            Request::CompareProducts { .. } => "compare-products",
        }
    }
}

//! The answer to a request: [`Material`], one party's half of the kind
//! that answers it, drawn by [`draw`]; and the one map from a request to its
//! kind.

use crate::dealer::kinds;
use crate::dealer::parts;
use crate::dealer::request::Request;
use crate::prg::Prg;
use crate::share::Party;

/// Runs `$body` with the type `$K` naming the [`kinds`] kind that answers
/// `$req`: the one place a request is mapped to its kind.
macro_rules! with_kind {
    ($req:expr, $K:ident => $body:expr) => {{
        use $crate::dealer::{Request as R, kinds};
        match $req {
            R::Triple { .. }
            | R::Dot { .. }
            | R::Square { .. }
            | R::MatMul { .. }
            | R::RowScale { .. }
            | R::WeightMatMul { .. }
            | R::NormProducts { .. } => {
                type $K = kinds::Triple;
                $body
            }
            R::WeightMask { .. } => {
                type $K = kinds::WeightMask;
                $body
            }
            R::TruncRowScale { .. } => {
                type $K = kinds::TruncRowScale;
                $body
            }
            R::PendingRowScale { .. } => {
                type $K = kinds::PendingRowScale;
                $body
            }
            R::Wrap { .. } => {
                type $K = kinds::Wrap;
                $body
            }
            R::Compare { .. } => {
                type $K = kinds::Compare;
                $body
            }
            R::BitCompare { .. } => {
                type $K = kinds::BitCompare;
                $body
            }
            R::CompareProducts { .. } => {
                type $K = kinds::CompareProducts;
                $body
            }
        }
    }};
}
pub(crate) use with_kind;

/// One party's half of a correlation, of the kind that answers its
/// request ([`kinds`]). `Debug` shows only the kind.
#[derive(Clone)]
pub enum Material {
    /// See [`kinds::Triple`].
    Triple(kinds::Triple),
    /// See [`kinds::WeightMask`].
    WeightMask(kinds::WeightMask),
    /// See [`kinds::TruncRowScale`].
    TruncRowScale(kinds::TruncRowScale),
    /// See [`kinds::PendingRowScale`].
    PendingRowScale(kinds::PendingRowScale),
    /// See [`kinds::Wrap`].
    Wrap(kinds::Wrap),
    /// See [`kinds::Compare`].
    Compare(kinds::Compare),
    /// See [`kinds::BitCompare`].
    BitCompare(kinds::BitCompare),
    /// See [`kinds::CompareProducts`].
    CompareProducts(kinds::CompareProducts),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Material::Triple(_) => "triple",
            Material::WeightMask(_) => "weight-mask",
            Material::TruncRowScale(_) => "trunc-rowscale",
            Material::PendingRowScale(_) => "pending-rowscale",
            Material::Wrap(_) => "wrap",
            Material::Compare(_) => "compare",
            Material::BitCompare(_) => "bit-compare",
            Material::CompareProducts(_) => "compare-products",
        };
        write!(f, "Material::{kind}(<secret>)")
    }
}

/// `From` each kind's material for [`Material`].
macro_rules! material_from {
    ($($kind:ident),+) => {
        $(
            impl From<kinds::$kind> for Material {
                fn from(m: kinds::$kind) -> Self {
                    Material::$kind(m)
                }
            }
        )+
    };
}

material_from!(
    Triple,
    WeightMask,
    TruncRowScale,
    PendingRowScale,
    Wrap,
    Compare,
    BitCompare,
    CompareProducts
);

/// Draw from `prg` every component of `req` that `party` generates itself,
/// leaving the corrected parts zero (party 1) and the keys empty. The dealer
/// calls this for both parties with its copies of their streams; a party
/// calls it with its own stream. Both therefore consume each stream in
/// exactly the same order: the order of the kind's parts.
pub fn draw(req: &Request, party: Party, prg: &mut Prg) -> Material {
    with_kind!(req, K => Material::from(parts::draw_kind::<K>(req, party, prg)))
}

impl Request {
    /// Bytes the dealer sends to `party` for this request: the kind's keys
    /// (to both parties) and party 1's corrections, as the kind declares
    /// them.
    pub fn dealer_bytes(&self, party: Party) -> usize {
        with_kind!(self, K => parts::dealer_bytes::<K>(self, party))
    }
}

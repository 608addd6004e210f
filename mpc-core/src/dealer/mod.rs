//! Correlated randomness: what operators ask for, how the dealer makes it, and
//! how a party receives it.
//!
//! **Vocabulary.** Each operator asks for a [`Request`] (a kind and a shape);
//! the answer is a [`Material`] holding this party's half of the correlation.
//! Each kind of material is declared once ([`kinds`]): its parts, each with
//! its length and whether both parties draw it or the dealer derives it and
//! corrects party 1's share (and in how many bits the correction travels),
//! its DCF keys, and the formulas of its derived parts. Drawing, dealing,
//! expanding, counting dealer bytes and recording are generic over that
//! declaration.
//!
//! **Seed trick (CrypTen's TTP provider).** The dealer shares one ChaCha seed
//! with each party. Every random component is drawn from the owner's stream
//! by [`draw`], in the same order on the dealer and on the party, so it never
//! travels. Only what cannot be random is sent: party 1's half of each
//! derived part (`c₁ = a·b − c₀`, a *correction*) and the DCF correction words
//! (to both parties). Party 0 therefore receives nothing but its seed for
//! every arithmetic correlation, which halves dealer traffic.
//!
//! **Offline/online.** A program's requests depend only on public shapes, so
//! they are recorded once ([`Recorder`]) as a plan; the dealer answers the
//! plan ahead of time ([`Dealer::deal`]), each party expands the answers into
//! a [`Pool`] ([`MaterialGen::expand`]), and the online run takes from the
//! pool. An empty pool or an item of the wrong kind is a typed error
//! ([`MpcError::PoolExhausted`](crate::MpcError::PoolExhausted),
//! [`MpcError::OutOfStep`](crate::MpcError::OutOfStep)), never a fallback.
//!
//! Files: `request.rs` (the vocabulary), `encode.rs` (its canonical
//! encoding), `parts.rs` (what a kind is made of, and the generic code),
//! `kinds/` (the declarations), `deal.rs` (the dealer), `expand.rs` (a
//! party's expansion), `pool.rs` (where operators take material from),
//! `recorder.rs` (recording a plan).

mod deal;
mod encode;
mod expand;
pub mod kinds;
pub(crate) mod parts;
mod pool;
mod recorder;
mod request;

pub use deal::{Dealer, Dealt};
pub use expand::MaterialGen;
pub use pool::{CorrelationSource, Pool};
pub use recorder::Recorder;
pub use request::{Request, Squares, ValueProducts};
pub(crate) use request::{product_keys, square_shift};

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

/// Draw from `prg` every component of `req` that `party` generates itself,
/// leaving the corrected parts zero (party 1) and the keys empty. The dealer
/// calls this for both parties with its copies of their streams; a party
/// calls it with its own stream. Both therefore consume each stream in
/// exactly the same order: the order of the kind's parts.
pub fn draw(req: &Request, party: Party, prg: &mut Prg) -> Material {
    with_kind!(req, K => parts::Kind::into_material(parts::draw_kind::<K>(req, party, prg)))
}

/// `2^bits − 1` (all ones for 64).
pub fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

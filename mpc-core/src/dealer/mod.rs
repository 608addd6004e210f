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
//! `kinds/` (the declarations), `material.rs` (the answer to a request and
//! the map from a request to its kind), `deal.rs` (the dealer), `expand.rs` (a
//! party's expansion), `pool.rs` (where operators take material from),
//! `recorder.rs` (recording a plan).

mod deal;
mod encode;
mod expand;
pub mod kinds;
mod masks;
mod material;
pub(crate) mod parts;
mod pool;
mod recorder;
mod request;

pub use deal::{Dealer, Dealt};
pub use expand::MaterialGen;
pub use material::{Material, draw};
pub use parts::low_mask;
pub use pool::{CorrelationSource, Pool};
pub use recorder::Recorder;
pub(crate) use request::product_keys;
pub use request::{Request, Squares, ValueProducts};

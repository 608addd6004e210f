//! # mpc-core
//!
//! Two-party secure computation over the ring Z_2^64 with fixed-point
//! encoding and a trusted dealer of correlated randomness: the protocol layer
//! of mpcvit. Pure code: no async runtime, no network, no files. Everything
//! talks to the peer through the [`Channel`] trait.
//!
//! - [`ring`], [`fixed`]: the ring and the fixed-point encoding (`f` fractional bits).
//! - [`fx`]: [`Fx`], a share that carries its shape, its fractional bits and
//!   its pending truncation; the scale conventions every operator follows.
//! - [`share`]: additive shares; [`prg`]: seeds and ChaCha streams.
//! - [`channel`]: the link, an in-memory pair, a counting wrapper.
//! - [`dealer`]: the vocabulary of correlations, the dealer (PRG-seed trick),
//!   the party-side expansion and the preprocessed [`Pool`].
//! - [`feed`]: material streamed from the dealer while the computation runs
//!   ([`StreamedPool`]), so a party's memory does not grow with the model.
//! - [`dcf`]: distributed comparison functions for one-round comparisons;
//!   [`dcf::bit`]: the same with XOR-shared bit outputs and early termination.
//! - [`Op`]: a secure operator as a value (the message it sends next and
//!   what to do with the reply), composed with [`Op::join`], [`Op::all`] and
//!   [`Op::then`] so that independent operators share rounds.
//! - [`Ctx`]: one party's view without the link; every secure operator is a
//!   method on it returning an [`Op`] (`arith`: products and truncation;
//!   `compare`: comparison, ReLU, max; `bit_compare`: comparisons whose
//!   XOR-shared bits are opened in the next round; [`open`]: that opening,
//!   with the truncation, squares and products it serves; `nonlinear`: the
//!   primitives exp, piecewise, reciprocal, rsqrt; [`blocks`]: softmax,
//!   ReLU-softmax, ScaleAttn, LayerNorm and the GeLUs). [`Session`] adds the
//!   link and runs operators ([`Session::run`]).
//! - [`plain`]: the f64 reference of every operator.
//! - [`local`]: run both parties and the dealer in one process.

pub mod approx;
pub mod arith;
pub mod bit_compare;
pub mod blocks;
pub mod channel;
pub mod compare;
pub mod ctx;
pub mod dcf;
pub mod dealer;
pub mod error;
pub mod feed;
pub mod fixed;
pub mod fx;
pub mod local;
pub mod nonlinear;
pub mod op;
pub mod open;
pub mod parallel;
pub mod plain;
pub mod prg;
pub mod ring;
pub mod row_scale;
pub mod session;
pub mod share;

pub use arith::MaskedWeight;
pub use blocks::gelu;
pub use channel::{Channel, CommStats, CountingChannel, MemChannel};
pub use ctx::Ctx;
pub use dealer::{CorrelationSource, Dealer, MaterialGen, Pool, Request, Squares, ValueProducts};
pub use error::{ChannelError, MpcError, Result};
pub use feed::{ChannelFeed, DealerFeed, PREFETCH_AHEAD, Prefetch, StreamedPool};
pub use fixed::FixedPoint;
pub use fx::{Fx, Shape};
pub use op::Op;
pub use prg::{Prg, Seed};
pub use session::{OpCost, OpProfile, Session};
pub use share::{Party, Share, reconstruct, share_secret};

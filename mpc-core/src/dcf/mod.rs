//! Distributed comparison functions (Boyle et al., EUROCRYPT 2021, Fig. 3).
//!
//! A DCF key pair for `(α, β)` over `n`-bit inputs lets each party evaluate
//! locally, at any public `x`, a share of `f(x) = β · [x < α]` in Z_2^64.
//! Neither key alone reveals anything about `α` or `β`.
//!
//! Construction: a GGM-style tree of depth `n` over 128-bit seeds; the PRG
//! `G(s)` is fixed-key AES-128 in Matyas–Meyer–Oseas mode (three blocks per
//! node: left seed, right seed, and the two 64-bit value words). Each level
//! carries one correction word of 16 + 8 bytes and two control bits; the key
//! of party `b` is its root seed plus the `n + 1` correction words, which are
//! the same for both parties.
//!
//! Cost: `Gen` is 6·n AES blocks per key ([`generate_batch`] pipelines them
//! over many keys), `Eval` is 2·n AES blocks per point in [`eval_batch`].
//! Key material: 16 bytes of root seed (drawn from the party's own PRG stream,
//! so it is never sent) plus `n·24 + ⌈2n/8⌉ + 8` bytes of correction words,
//! sent to both parties, and held as those bytes ([`DcfKeys`]).
//!
//! Files: `tree.rs` (the GGM tree both variants walk: its PRG and the
//! level corrections), `keys.rs` (the key format), `keygen.rs` (key
//! generation), `eval.rs` (evaluation); [`bit`] is the variant with
//! XOR-shared bit outputs and early termination on the same tree.

pub mod bit;
mod eval;
mod keygen;
mod keys;
mod tree;

pub use eval::{eval, eval_batch, eval_batch_stopping, eval_words, eval_words_at};
pub use keygen::{generate, generate_batch, generate_batch_of, generate_batch_stopping};
pub use keys::{Block, DcfKeys};

#[cfg(test)]
mod tests;

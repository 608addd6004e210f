//! The GGM tree that both DCFs walk (Boyle et al., EUROCRYPT 2021, Fig. 3).
//!
//! A node is a 128-bit seed. Its PRG is fixed-key AES-128 in
//! Matyas–Meyer–Oseas mode, one block per output: `G_τ(s) = AES(s ⊕ τ) ⊕ s ⊕ τ`
//! for a small tweak `τ` (which child, which value block). A child's raw
//! output carries the control bit `t` in bit 0 and, below `low`, any bits
//! the variant packs beside it (the bit-output DCF's value bit); the rest is
//! the child's seed.
//!
//! At each level the dealer corrects the side that leaves α's path so that
//! the two parties' seeds agree below it ([`LevelCorrection`]), and each
//! party applies the level's correction where its control bit is 1
//! ([`follow`]): off α's path the parties' nodes are then equal, on it they
//! differ with control bits that XOR to 1. The payload (ring words or one
//! bit per level, a leaf or a stop's conversion) is each variant's own.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use std::sync::OnceLock;

/// The fixed-key AES-128 permutation of the tree's PRG.
pub(super) fn cipher() -> &'static Aes128 {
    static C: OnceLock<Aes128> = OnceLock::new();
    C.get_or_init(|| {
        // A fixed, public key: the construction only needs a fixed random permutation.
        Aes128::new(&GenericArray::from(*b"mpcvit dcf prg k"))
    })
}

/// One AES block of the tree's PRG, as the little-endian integer it holds.
pub(super) type Aes = GenericArray<u8, aes::cipher::consts::U16>;

/// The AES input of `G_τ(s)`: `s ⊕ τ`.
pub(super) fn mmo_input(s: u128, tweak: u128) -> Aes {
    GenericArray::from((s ^ tweak).to_le_bytes())
}

/// `G_τ(s)` from the encrypted block `AES(s ⊕ τ)`.
pub(super) fn mmo_output(encrypted: &Aes, s: u128, tweak: u128) -> u128 {
    u128::from_le_bytes((*encrypted).into()) ^ s ^ tweak
}

/// `G_τ(s)` for one block (the readable reference evaluations; batches
/// encrypt many [`mmo_input`]s at once).
pub(super) fn mmo(s: u128, tweak: u128) -> u128 {
    let mut b = mmo_input(s, tweak);
    cipher().encrypt_block(&mut b);
    mmo_output(&b, s, tweak)
}

/// `u128::MAX` when `t = 1`, else 0: applies a correction without a branch.
#[inline(always)]
fn mask_of(t: u8) -> u128 {
    0u128.wrapping_sub(u128::from(t))
}

/// One level's seed and control-bit correction, the same for both parties.
#[derive(Clone, Copy)]
pub(super) struct LevelCorrection {
    /// The seed correction (zero under `low`).
    pub(super) seed: u128,
    /// The control-bit corrections of the left and right child.
    pub(super) t: [u8; 2],
}

impl LevelCorrection {
    /// The correction for α's bit `a` at this level, from the two parties'
    /// raw children `children[party][side]` (before any correction): the
    /// seed correction makes the lost side's seeds equal, the control bits
    /// make them XOR to 0 off the path and to 1 on it.
    pub(super) fn new(children: [[u128; 2]; 2], a: usize, low: u128) -> Self {
        let lose = 1 - a;
        let t_of = |side: usize| ((children[0][side] ^ children[1][side]) & 1) as u8;
        LevelCorrection {
            seed: (children[0][lose] ^ children[1][lose]) & !low,
            t: [t_of(0) ^ a as u8 ^ 1, t_of(1) ^ a as u8],
        }
    }
}

/// A party's next node from its raw `child` on one side, given its control
/// bit `t` and the level's corrections of that side (`seed`, `t_side`):
/// the seed `(child & !low) ⊕ t·seed` and the control bit
/// `child₀ ⊕ t·t_side`, without a branch.
#[inline(always)]
pub(super) fn follow(child: u128, t: u8, seed: u128, t_side: u8, low: u128) -> (u128, u8) {
    (
        (child ^ (seed & mask_of(t))) & !low,
        (child as u8 ^ (t & t_side)) & 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrected_children_agree_off_the_path_and_differ_on_it() {
        let roots = [
            0x1234_5678_9abc_def0_u128 << 3,
            0x0fed_cba9_8765_4321_u128 << 3,
        ];
        for low in [1u128, 7] {
            for a in 0..2 {
                // party 0 starts with t = 0, party 1 with t = 1
                let children = [0, 1].map(|b| [0, 1].map(|side| mmo(roots[b], side as u128)));
                let cw = LevelCorrection::new(children, a, low);
                let next = |side: usize| {
                    [0, 1].map(|b| follow(children[b][side], b as u8, cw.seed, cw.t[side], low))
                };
                let (off, on) = (next(1 - a), next(a));
                assert_eq!(off[0], off[1], "low {low} a {a}: off the path");
                assert_ne!(on[0].0, on[1].0, "low {low} a {a}: seeds on the path");
                assert_eq!(
                    on[0].1 ^ on[1].1,
                    1,
                    "low {low} a {a}: control bits on the path"
                );
            }
        }
    }
}

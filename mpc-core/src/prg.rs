//! Seeds and the ChaCha pseudo-random generator that expands them.
//!
//! A [`Seed`] is 32 secret bytes; a [`Prg`] is ChaCha12 keyed by it. The
//! dealer and a party holding the same seed draw identical streams, which is
//! how correlated randomness reaches a party without being sent.
//!
//! ChaCha12, not ChaCha20: the seed expansion is a fifth of the whole
//! system's CPU (the dealer's material and each party's pool), and 12
//! rounds cut it by 40 %. It is the cipher of `rand`'s `StdRng`; the best
//! published attacks reach 7 of ChaCha's rounds.

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

/// 32 secret bytes that key a [`Prg`]. `Debug` never shows them; they are
/// wiped (zeroize) when the seed is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed([u8; 32]);

impl Drop for Seed {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl zeroize::ZeroizeOnDrop for Seed {}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(<secret>)")
    }
}

impl Seed {
    /// A seed from raw bytes (for example the output of a key agreement).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Seed(bytes)
    }

    /// The raw bytes, to hand to a key-derivation step or a transport.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// A fresh seed from the operating system's entropy.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand_core::TryRngCore::try_fill_bytes(&mut rand_core::OsRng, &mut b)
            .expect("operating system entropy");
        Seed(b)
    }

    /// A seed derived from a test label; never use outside tests and benchmarks.
    pub fn for_tests(label: u64) -> Self {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&label.to_le_bytes());
        b[8..16].copy_from_slice(b"mpcvit-t");
        Seed(b)
    }
}

/// ChaCha12 stream keyed by a [`Seed`]. `Debug` never shows its state.
pub struct Prg(ChaCha12Rng);

impl std::fmt::Debug for Prg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prg(<secret>)")
    }
}

impl Prg {
    /// The stream for `seed`.
    pub fn new(seed: &Seed) -> Self {
        Prg(ChaCha12Rng::from_seed(seed.0))
    }

    /// Stream number `stream` of `seed`: independent of every other stream
    /// of the same seed (ChaCha's 64-bit stream id). `Prg::new` is stream 0.
    pub fn with_stream(seed: &Seed, stream: u64) -> Self {
        let mut rng = ChaCha12Rng::from_seed(seed.0);
        rng.set_stream(stream);
        Prg(rng)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// `n` uniform ring elements.
    pub fn u64s(&mut self, n: usize) -> Vec<u64> {
        let mut v = vec![0u64; n];
        self.fill_u64(&mut v);
        v
    }

    /// Fill `out` with uniform ring elements.
    pub fn fill_u64(&mut self, out: &mut [u64]) {
        for x in out.iter_mut() {
            *x = self.0.next_u64();
        }
    }

    /// `n` uniform bits, one per byte (each 0 or 1).
    pub fn bits(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let w = self.0.next_u64();
            let take = (n - out.len()).min(64);
            out.extend((0..take).map(|i| ((w >> i) & 1) as u8));
        }
        out
    }

    /// 16 uniform bytes (a DCF seed).
    pub fn block(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.0.fill_bytes(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_debug_is_opaque() {
        let s = Seed::for_tests(7);
        let mut a = Prg::new(&s);
        let mut b = Prg::new(&s);
        assert_eq!(a.u64s(10), b.u64s(10));
        assert_eq!(a.bits(70), b.bits(70));
        assert!(!format!("{s:?}").contains('7'));
        assert_eq!(format!("{a:?}"), "Prg(<secret>)");
    }
}

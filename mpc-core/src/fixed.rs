//! Two's-complement fixed point in Z_2^64.
//!
//! A real `x` is encoded as `round(x · 2^f)` read modulo 2^64, where `f` is
//! the number of fractional bits (a parameter, default 16). A product of two
//! encodings carries `2f` fractional bits and is brought back by a
//! truncation (see [`crate::Ctx::trunc`]).

/// The fixed-point format: `frac_bits` fractional bits in a 64-bit ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPoint {
    /// Number of fractional bits `f`.
    pub frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        FixedPoint { frac_bits: 16 }
    }
}

impl FixedPoint {
    /// A format with `frac_bits` fractional bits (at most 30, so that a product fits with headroom).
    pub fn new(frac_bits: u32) -> Self {
        assert!(
            (1..=30).contains(&frac_bits),
            "fixed point: frac_bits {frac_bits} outside 1..=30"
        );
        FixedPoint { frac_bits }
    }

    /// `2^f` as a float.
    pub fn scale(self) -> f64 {
        (1u64 << self.frac_bits) as f64
    }

    /// Encode one real at `f` fractional bits.
    pub fn encode(self, x: f64) -> u64 {
        encode_at(x, self.frac_bits)
    }

    /// Decode one ring element at `f` fractional bits.
    pub fn decode(self, v: u64) -> f64 {
        decode_at(v, self.frac_bits)
    }

    /// Encode a slice.
    pub fn encode_all(self, xs: &[f64]) -> Vec<u64> {
        xs.iter().map(|x| self.encode(*x)).collect()
    }

    /// Decode a slice.
    pub fn decode_all(self, vs: &[u64]) -> Vec<f64> {
        vs.iter().map(|v| self.decode(*v)).collect()
    }
}

/// Encode `x` with `bits` fractional bits: `round(x · 2^bits)` as a two's-complement `u64`.
pub fn encode_at(x: f64, bits: u32) -> u64 {
    let v = (x * (2f64).powi(bits as i32)).round();
    assert!(
        v.abs() < 9.2e18,
        "fixed point: {x} does not fit in 64 bits at {bits} fractional bits"
    );
    (v as i64) as u64
}

/// Decode a two's-complement `u64` with `bits` fractional bits.
pub fn decode_at(v: u64, bits: u32) -> f64 {
    (v as i64) as f64 / (2f64).powi(bits as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_including_negatives() {
        let fp = FixedPoint::default();
        for x in [0.0, 1.0, -1.0, 3.25, -1234.5678, 1e-4, -1e-4] {
            assert!((fp.decode(fp.encode(x)) - x).abs() <= 0.5 / fp.scale());
        }
        assert_eq!(fp.encode(-1.0), (-(1i64 << 16)) as u64);
    }
}

//! Seed agreement between the dealer and a party: ephemeral X25519
//! (curve25519-dalek's Montgomery ladder with clamped scalars), the shared
//! point hashed with SHA-256 together with the transcript into a 32-byte
//! [`Seed`]. A fresh key pair per connection; the secret scalar never leaves
//! this module and has an opaque `Debug`.

use curve25519_dalek::montgomery::MontgomeryPoint;
use mpc_core::Seed;
use sha2::{Digest, Sha256};

use crate::error::ServerError;

/// An ephemeral X25519 key pair.
pub struct KeyPair {
    secret: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair(<secret>)")
    }
}

impl KeyPair {
    /// A fresh key pair from the operating system's entropy.
    pub fn generate() -> Self {
        let secret = Seed::random().to_bytes();
        let public = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        KeyPair { secret, public }
    }

    /// The public key to send.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The seed shared with the holder of `their_public`.
    ///
    /// `party_public` and `dealer_public` are the two public keys in a fixed
    /// order, bound into the hash with the pairing id and the party index so
    /// that both ends derive the same seed and no other pairing can.
    pub fn agree(
        self,
        their_public: &[u8],
        pairing_id: &[u8],
        party: usize,
        party_public: &[u8; 32],
        dealer_public: &[u8; 32],
    ) -> Result<Seed, ServerError> {
        let their: [u8; 32] = their_public.try_into().map_err(|_| {
            ServerError::Dealer(format!(
                "public key of {} bytes, expected 32",
                their_public.len()
            ))
        })?;
        let shared = MontgomeryPoint(their).mul_clamped(self.secret).to_bytes();
        if shared == [0u8; 32] {
            return Err(ServerError::Dealer(
                "low-order public key (the shared secret would be zero)".into(),
            ));
        }
        let mut h = Sha256::new();
        h.update(b"mpcvit/v1 dealer seed");
        h.update((pairing_id.len() as u64).to_le_bytes());
        h.update(pairing_id);
        h.update((party as u64).to_le_bytes());
        h.update(party_public);
        h.update(dealer_public);
        h.update(shared);
        Ok(Seed::from_bytes(h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_agree_and_others_do_not() {
        let (p, d) = (KeyPair::generate(), KeyPair::generate());
        let (pp, dp) = (p.public(), d.public());
        let s1 = p.agree(&dp, b"pair", 1, &pp, &dp).unwrap();
        let s2 = d.agree(&pp, b"pair", 1, &pp, &dp).unwrap();
        assert_eq!(s1, s2);
        let e = KeyPair::generate();
        let s3 = e.agree(&pp, b"pair", 1, &pp, &dp).unwrap();
        assert_ne!(s1, s3);
        assert!(
            KeyPair::generate()
                .agree(&[0u8; 32], b"p", 0, &pp, &dp)
                .is_err()
        );
        assert!(
            KeyPair::generate()
                .agree(&[1u8; 5], b"p", 0, &pp, &dp)
                .is_err()
        );
        assert_eq!(format!("{:?}", KeyPair::generate()), "KeyPair(<secret>)");
    }
}

//! Seed agreement between the dealer and a party: ephemeral X25519
//! (curve25519-dalek's Montgomery ladder with clamped scalars), the shared
//! point hashed with SHA-256 together with the transcript into a 32-byte
//! [`Seed`]. A fresh key pair per connection; the secret scalar never leaves
//! this module and has an opaque `Debug`.

use curve25519_dalek::montgomery::MontgomeryPoint;
use mpc_core::Seed;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::ServerError;
use crate::tls::Role;

/// Which end of the agreement a key pair belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// A computing party.
    Party,
    /// The dealer.
    Dealer,
}

/// An ephemeral X25519 key pair; the secret scalar is wiped (zeroize)
/// when the pair is dropped (after [`KeyPair::agree`] at the latest).
pub struct KeyPair {
    secret: [u8; 32],
    public: [u8; 32],
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
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

    /// The seed shared with the holder of `their_public`; `me` says which
    /// end this key pair is.
    ///
    /// The party's and the dealer's public keys, in that fixed order, are
    /// bound into the hash with the pairing id and the party index so that
    /// both ends derive the same seed and no other pairing can.
    pub fn agree(
        self,
        their_public: &[u8; 32],
        pairing_id: &[u8],
        party: usize,
        me: End,
    ) -> Result<Seed, ServerError> {
        let (party_public, dealer_public) = match me {
            End::Party => (&self.public, their_public),
            End::Dealer => (their_public, &self.public),
        };
        let shared = Zeroizing::new(
            MontgomeryPoint(*their_public)
                .mul_clamped(self.secret)
                .to_bytes(),
        );
        if *shared == [0u8; 32] {
            let peer = match me {
                End::Party => Role::Dealer,
                End::Dealer => Role::Party(party as u8),
            };
            return Err(ServerError::LowOrderKey { peer });
        }
        let mut h = Sha256::new();
        h.update(b"mpcvit/v1 dealer seed");
        h.update((pairing_id.len() as u64).to_le_bytes());
        h.update(pairing_id);
        h.update((party as u64).to_le_bytes());
        h.update(party_public);
        h.update(dealer_public);
        h.update(shared.as_slice());
        let mut out: [u8; 32] = h.finalize().into();
        let seed = Seed::from_bytes(out);
        out.zeroize();
        Ok(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_agree_and_others_do_not() {
        let (p, d) = (KeyPair::generate(), KeyPair::generate());
        let (pp, dp) = (p.public(), d.public());
        let s1 = p.agree(&dp, b"pair", 1, End::Party).unwrap();
        let s2 = d.agree(&pp, b"pair", 1, End::Dealer).unwrap();
        assert_eq!(s1, s2);
        // A third key pair in the dealer's place derives another seed.
        let e = KeyPair::generate();
        let s3 = e.agree(&pp, b"pair", 1, End::Dealer).unwrap();
        assert_ne!(s1, s3);
        assert!(
            KeyPair::generate()
                .agree(&[0u8; 32], b"p", 0, End::Party)
                .is_err()
        );
        assert_eq!(format!("{:?}", KeyPair::generate()), "KeyPair(<secret>)");
    }
}

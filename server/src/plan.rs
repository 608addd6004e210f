//! The correlation plans of a model (model load and one inference),
//! recorded without a peer or a dealer. The parties and the dealer each
//! record them from the public manifest and compare digests, so no plan
//! travels and the dealer learns nothing but the public architecture.

use std::sync::Arc;

use mpc_core::local::record_plan;
use mpc_core::{Party, Request, Share};
use sha2::{Digest, Sha256};

use crate::error::ServerError;
use model::secure::{SecureModel, WeightShares};

/// The two plans of a model: weight masking at load, and one inference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPlans {
    /// Requests of `SecureModel::prepare`.
    pub prepare: Arc<Vec<Request>>,
    /// Requests of one `SecureModel::forward`.
    pub online: Arc<Vec<Request>>,
}

impl ModelPlans {
    /// Record both plans from this party's shares (shapes only matter).
    pub fn record(
        shares: &WeightShares,
        party: Party,
        params: model::SecureParams,
    ) -> Result<Self, ServerError> {
        let fp = params.fp;
        let prepare = record_plan(fp, party, &|s: &mut mpc_core::Session| {
            SecureModel::prepare(s, shares, params).map(|_| ())
        })?;
        let input_len = shares.config().input_len();
        let online = record_plan(fp, party, &|s: &mut mpc_core::Session| {
            let m = SecureModel::prepare(s, shares, params)?;
            m.forward(s, &Share::zeros(input_len)).map(|_| ())
        })?;
        // The second recording contains the prepare plan again: keep the rest.
        let online = online[prepare.len()..].to_vec();
        Ok(ModelPlans {
            prepare: Arc::new(prepare),
            online: Arc::new(online),
        })
    }

    /// SHA-256 over the domain `mpcvit/v2 plan`, the manifest (its length
    /// as 8 bytes little-endian, then its bytes) and both plans (each its
    /// length as 8 bytes little-endian, then each request's canonical
    /// encoding, [`Request::encode_canonical`]): two parties with equal
    /// digests run the same program.
    pub fn digest(&self, manifest_json: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"mpcvit/v2 plan");
        h.update((manifest_json.len() as u64).to_le_bytes());
        h.update(manifest_json.as_bytes());
        let mut bytes = Vec::new();
        for plan in [&self.prepare, &self.online] {
            h.update((plan.len() as u64).to_le_bytes());
            for r in plan.iter() {
                bytes.clear();
                r.encode_canonical(&mut bytes);
                h.update(&bytes);
            }
        }
        h.finalize().into()
    }

    /// Bytes the dealer sends to `party` for one inference.
    pub fn online_dealer_bytes(&self, party: Party) -> usize {
        self.online.iter().map(|r| r.dealer_bytes(party)).sum()
    }
}

/// The plans of the model described by a public manifest, recorded on
/// placeholder shares of the right shapes (what the dealer does: it needs
/// the shapes, never the weights).
pub fn for_manifest(
    manifest_json: &str,
    params: model::SecureParams,
) -> Result<ModelPlans, ServerError> {
    let config = model::ModelConfig::from_manifest_json(manifest_json)?;
    let placeholder = model::Model::random(config, 0)?;
    let mut prg = mpc_core::Prg::new(&mpc_core::Seed::for_tests(0));
    let [shares, _] = model::secure::split_weights(&placeholder, params.fp, &mut prg);
    ModelPlans::record(&shares, Party::P0, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dealer_records_the_parties_plans() {
        let model = crate::cli::random_model("small", 3).unwrap();
        let params = model::SecureParams::default();
        let mut prg = mpc_core::Prg::new(&mpc_core::Seed::for_tests(1));
        let [s0, s1] = model::secure::split_weights(&model, params.fp, &mut prg);
        let p0 = ModelPlans::record(&s0, Party::P0, params).unwrap();
        let p1 = ModelPlans::record(&s1, Party::P1, params).unwrap();
        let manifest = model.config().to_manifest_json().unwrap();
        let d = for_manifest(&manifest, params).unwrap();
        assert_eq!(p0, p1);
        assert_eq!(p0, d);
        assert_eq!(p0.digest(&manifest), d.digest(&manifest));
        assert!(
            p0.prepare
                .iter()
                .all(|r| matches!(r, Request::WeightMask { .. }))
        );
        assert!(!p0.online.is_empty());
    }

    #[test]
    fn the_digest_hashes_the_canonical_encoding() {
        let plans = ModelPlans {
            prepare: Arc::new(vec![Request::WeightMask { id: 1, k: 2, n: 3 }]),
            online: Arc::new(vec![
                Request::Triple { n: 4 },
                Request::Wrap { n: 4, shift: 12 },
            ]),
        };
        let manifest = "{}";
        let mut h = Sha256::new();
        h.update(b"mpcvit/v2 plan");
        h.update(2u64.to_le_bytes());
        h.update(b"{}");
        h.update(1u64.to_le_bytes());
        h.update([7u8]);
        h.update(1u32.to_le_bytes());
        h.update(2u64.to_le_bytes());
        h.update(3u64.to_le_bytes());
        h.update(2u64.to_le_bytes());
        h.update([0u8]);
        h.update(4u64.to_le_bytes());
        h.update([10u8]);
        h.update(4u64.to_le_bytes());
        h.update(12u32.to_le_bytes());
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(plans.digest(manifest), want);
        // one field changed: another digest
        let mut other = plans.clone();
        other.online = Arc::new(vec![
            Request::Triple { n: 4 },
            Request::Wrap { n: 4, shift: 13 },
        ]);
        assert_ne!(other.digest(manifest), want);
    }
}

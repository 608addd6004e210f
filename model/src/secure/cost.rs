//! What one secure inference costs, measured with both parties in one
//! process.

use mpc_core::Prg;

use super::params::SecureParams;
use super::prepare::SecureModel;
use super::split::{split_input, split_weights};
use crate::error::{ModelError, Result};
use crate::network::Model;

/// What one secure inference of a model costs, measured on this machine
/// with both parties as threads of one process over the in-memory channel
/// (no network; the model load and its weight masking are excluded).
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceCost {
    /// Wall time of the online phase (both parties in parallel), seconds.
    pub online_seconds: f64,
    /// Wall time of the dealer and the pool expansion, seconds.
    pub offline_seconds: f64,
    /// Bytes each party sends (the protocol is symmetric up to a few bytes: party 0's count).
    pub bytes_per_party: u64,
    /// Communication rounds.
    pub rounds: u64,
    /// Bytes the dealer sends to party 0 and to party 1.
    pub dealer_bytes: [u64; 2],
    /// Rounds and bytes of party 0 by operator kind (a round shared by
    /// several kinds counts for each; see [`mpc_core::OpProfile`]).
    pub by_op: Vec<(&'static str, mpc_core::OpCost)>,
    /// Bytes the dealer sends to party 0 and to party 1 by request kind
    /// ([`mpc_core::Request::kind`]), largest first.
    pub dealer_by_kind: Vec<(&'static str, [u64; 2])>,
    /// The reconstructed logits.
    pub logits: Vec<f32>,
}

/// Bytes the dealer sends to party 0 and to party 1 for `plan`, summed by
/// request kind.
fn dealer_bytes_by_kind(plan: &[mpc_core::Request]) -> Vec<(&'static str, [u64; 2])> {
    let mut by_kind: Vec<(&'static str, [u64; 2])> = Vec::new();
    for req in plan {
        let bytes = [mpc_core::Party::P0, mpc_core::Party::P1].map(|p| req.dealer_bytes(p) as u64);
        match by_kind.iter_mut().find(|(k, _)| *k == req.kind()) {
            Some((_, sum)) => {
                sum[0] += bytes[0];
                sum[1] += bytes[1];
            }
            None => by_kind.push((req.kind(), bytes)),
        }
    }
    by_kind
}

/// Run `model` securely on `image` (preprocessed, [`Model::forward`]'s
/// input) with both parties in this process and measure one inference:
/// the run with the image minus a run that only loads the model.
pub fn measure_inference(model: &Model, image: &[f32]) -> Result<InferenceCost> {
    measure_inference_with(model, image, SecureParams::default())
}

/// [`measure_inference`] with the given secure parameters.
pub fn measure_inference_with(
    model: &Model,
    image: &[f32],
    params: SecureParams,
) -> Result<InferenceCost> {
    use mpc_core::local::run_local;
    let mut prg = Prg::new(&mpc_core::Seed::random());
    let shares = split_weights(model, params.fp, &mut prg);
    let input = split_input(image, params.fp, &mut prg);
    let load = run_local(params.fp, |s| {
        SecureModel::prepare(s, &shares[s.party().index()], params)?;
        Ok::<_, ModelError>(s.profile().clone())
    })?;
    let full = run_local(params.fp, |s| {
        let p = s.party().index();
        let out = SecureModel::prepare(s, &shares[p], params)?.forward(s, &input[p])?;
        Ok::<_, ModelError>((out, s.profile().clone()))
    })?;
    let [(out0, profile), (out1, _)] = &full.outputs;
    let loaded = &load.outputs[0];
    let by_op = profile
        .iter()
        .filter_map(|(name, cost)| {
            let before = loaded.get(name).copied().unwrap_or_default();
            let cost = mpc_core::OpCost {
                rounds: cost.rounds - before.rounds,
                bytes: cost.bytes - before.bytes,
            };
            (cost.rounds > 0).then_some((*name, cost))
        })
        .collect();
    let logits = params
        .fp
        .decode_all(&mpc_core::reconstruct(out0, out1))
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let online = full.online[0] - load.online[0];
    let loaded_by_kind = dealer_bytes_by_kind(&load.plan);
    let mut dealer_by_kind = dealer_bytes_by_kind(&full.plan);
    for (kind, bytes) in &mut dealer_by_kind {
        if let Some((_, before)) = loaded_by_kind.iter().find(|(k, _)| k == kind) {
            bytes[0] -= before[0];
            bytes[1] -= before[1];
        }
    }
    dealer_by_kind.retain(|(_, b)| b[0] + b[1] > 0);
    dealer_by_kind.sort_by_key(|(_, b)| std::cmp::Reverse(b[0] + b[1]));
    Ok(InferenceCost {
        online_seconds: full
            .online_time
            .saturating_sub(load.online_time)
            .as_secs_f64(),
        offline_seconds: full
            .offline_time
            .saturating_sub(load.offline_time)
            .as_secs_f64(),
        bytes_per_party: online.bytes_sent,
        rounds: online.rounds,
        dealer_bytes: [
            full.dealer_bytes[0] - load.dealer_bytes[0],
            full.dealer_bytes[1] - load.dealer_bytes[1],
        ],
        by_op,
        dealer_by_kind,
        logits,
    })
}

//! What one secure inference of a network costs, from the secure engine itself.
//!
//! - [`count_forward`]: the online rounds and bytes, exactly. Each party's
//!   program ([`SecureModel::prepare`], then [`SecureModel::forward`]) runs
//!   once under mpc-core's plan recorder (placeholder correlated randomness)
//!   over a channel that echoes every message and counts it. The program is
//!   the one the parties run, and nothing that steers it depends on secret
//!   values (shapes, the attention table and the beta masks are public), so
//!   its messages have the lengths of a real inference's: the counts are the
//!   same as a two-party run's, per operator kind too. No peer, no dealer, no
//!   DCF evaluation (the recorder skips it).
//! - [`time_stages`]: the compute, measured: the real two-party forward in
//!   this process (both parties as threads, in-memory channel, the dealer's
//!   material prepared beforehand), the CPU time of each stage (the
//!   embedding, each block, the head;
//!   [`crate::secure::TraceShare::stage_cpu_seconds`]) per party. CPU time,
//!   not wall time: other programs on the machine do not enter it.
//! - [`stage_keys`]: what each stage's compute depends on, so a stage time
//!   measured on one network can stand for the same stage in another.

use mpc_core::channel::EchoChannel;
use mpc_core::dealer::Recorder;
use mpc_core::{CountingChannel, OpCost, Party, Prg, Seed, Session, Share};

use crate::config::{AttnKind, ModelConfig};
use crate::error::{ModelError, Result};
use crate::network::Model;
use crate::secure::{SecureModel, SecureParams, folds, one_round_relu, split_input, split_weights};

/// The online cost of one secure inference, counted by the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardCount {
    /// Communication rounds of one inference (both parties send in each).
    pub rounds: u64,
    /// Bytes party 0 and party 1 send during one inference.
    pub bytes_sent: [u64; 2],
    /// Bytes the dealer sends to party 0 and to party 1 for one inference.
    pub dealer_bytes: [u64; 2],
    /// Party 0's rounds and bytes by operator kind (a round shared by
    /// several kinds counts for each; see [`mpc_core::OpProfile`]).
    pub by_op: Vec<(&'static str, OpCost)>,
}

impl ForwardCount {
    /// The larger party's bytes: what a link of one bandwidth per direction
    /// must carry one way.
    pub fn bytes_per_party(&self) -> u64 {
        self.bytes_sent[0].max(self.bytes_sent[1])
    }
}

/// The placeholder weight shares of `config` (random weights: only shapes
/// steer the program).
fn placeholder_shares(
    config: &ModelConfig,
    params: SecureParams,
) -> Result<[crate::WeightShares; 2]> {
    let model = Model::random(config.clone(), 0)?;
    let mut prg = Prg::new(&Seed::for_tests(0));
    Ok(split_weights(&model, params.fp, &mut prg))
}

/// Count one secure inference of `config` under `params` with the plan
/// recorder (see the module doc): exact online rounds and bytes per party,
/// the dealer's bytes, and the rounds and bytes by operator kind. The model
/// load (weight masking) is not counted.
pub fn count_forward(config: &ModelConfig, params: SecureParams) -> Result<ForwardCount> {
    let config = config.clone().normalized()?;
    let shares = placeholder_shares(&config, params)?;
    let mut rounds = [0u64; 2];
    let mut bytes_sent = [0u64; 2];
    let mut dealer_bytes = [0u64; 2];
    let mut by_op = Vec::new();
    for party in [Party::P0, Party::P1] {
        let p = party.index();
        let mut ch = CountingChannel::new(EchoChannel::default());
        let mut load = Recorder::new(party);
        let model = {
            let mut s = Session::new(party, params.fp, &mut ch, &mut load);
            SecureModel::prepare(&mut s, &shares[p], params)?
        };
        let loaded = ch.stats();
        let mut rec = Recorder::new(party);
        let profile = {
            let mut s = Session::new(party, params.fp, &mut ch, &mut rec);
            model.forward(&mut s, &Share::zeros(config.input_len()))?;
            s.profile().clone()
        };
        let online = ch.stats() - loaded;
        rounds[p] = online.rounds;
        bytes_sent[p] = online.bytes_sent;
        dealer_bytes[p] = rec
            .into_plan()
            .iter()
            .map(|r| r.dealer_bytes(party) as u64)
            .sum();
        if party == Party::P0 {
            by_op = profile.into_iter().filter(|(_, c)| c.rounds > 0).collect();
        }
    }
    if rounds[0] != rounds[1] {
        return Err(ModelError::Secure(format!(
            "the parties' programs take {} and {} rounds",
            rounds[0], rounds[1]
        )));
    }
    Ok(ForwardCount {
        rounds: rounds[0],
        bytes_sent,
        dealer_bytes,
        by_op,
    })
}

/// One key per stage of the secure forward of `config` (the embedding,
/// each block, the head), naming everything that stage's work depends on
/// besides the network's shapes: for a block, how many heads of each kind
/// it has, whether it is the last block (class token only), whether the
/// ReLU-softmax heads take the one-round ReLU and whether the projection is
/// folded (both model-wide settings of [`SecureParams`]), and its MPCViT+
/// rows (GeLU and linearised tokens, fused FFN or not). Two stages with the
/// same key on networks of the same shapes run the same operators on the
/// same sizes.
pub fn stage_keys(config: &ModelConfig, params: &SecureParams) -> Vec<String> {
    let one_round = one_round_relu(config, params);
    let fold = folds(config, params);
    let mut keys = vec!["embed".to_string()];
    for (i, kinds) in config.attention.iter().enumerate() {
        let count = |k: AttnKind| kinds.iter().filter(|&&x| x == k).count();
        let last = i + 1 == config.depth;
        let rows = if last { 1 } else { config.num_tokens() };
        let (gelu, fused) = match config.block_beta(i) {
            Some(m) => (
                m[..rows].iter().filter(|&&b| b).count(),
                m.iter().any(|b| !b),
            ),
            None => (rows, false),
        };
        let relu = count(AttnKind::ReluSoftmax);
        keys.push(format!(
            "block softmax={} relu_softmax={relu} scale_attn={} last={last} one_round_relu={} fold={fold} gelu_rows={gelu} linearised_rows={} fused_ffn={fused}",
            count(AttnKind::Softmax),
            count(AttnKind::ScaleAttn),
            one_round && relu > 0,
            rows - gelu,
        ));
    }
    keys.push("head".to_string());
    keys
}

/// Compute time of each stage of one secure inference of `config` (the
/// embedding, each block, the head; see [`stage_keys`]) for one party,
/// measured with both parties in this process over the in-memory channel:
/// the forward runs `repeats` times after the model load, and each stage's
/// time is the least CPU time the process spent in it, halved (the parties'
/// work is symmetric). That is a party's compute on one core; a party whose
/// kernels run on several cores takes less wall time. Random weights and a
/// zero image: the work does not depend on values.
pub fn time_stages(config: &ModelConfig, params: SecureParams, repeats: usize) -> Result<Vec<f64>> {
    let config = config.clone().normalized()?;
    let shares = placeholder_shares(&config, params)?;
    let mut prg = Prg::new(&Seed::for_tests(1));
    let input = split_input(&vec![0.0; config.input_len()], params.fp, &mut prg);
    let run = mpc_core::local::run_local(params.fp, |s| {
        let p = s.party().index();
        let m = SecureModel::prepare(s, &shares[p], params)?;
        let mut best: Vec<f64> = Vec::new();
        for _ in 0..repeats.max(1) {
            let t = m.forward_trace(s, &input[p])?;
            let per_party = t.stage_cpu_seconds.iter().map(|c| c / 2.0);
            if best.is_empty() {
                best = per_party.collect();
            } else {
                for (b, t) in best.iter_mut().zip(per_party) {
                    *b = b.min(t);
                }
            }
        }
        Ok::<_, ModelError>(best)
    })?;
    let [times, _] = run.outputs;
    Ok(times)
}

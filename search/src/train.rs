//! Training: AdamW, warm-up + cosine learning rate, the three objectives of the method,
//! checkpoints every epoch with resume, a progress bar and a summary table.
//!
//! | objective | loss |
//! |---|---|
//! | [`Objective::Supervised`] (Softmax teacher) | `CE` (label smoothing optional) |
//! | [`Objective::Search`] | `CE + λα·(Σ_l Σ_h c_lh·|alpha_lh| + Σ_l b_l·max_h |alpha_lh|) + λβ·Σ|beta|` (`c` = per-head cost, mean 1, 1 when not given; `b` = per-block cost in the same unit, 0 when not given; see [`crate::cost`]) |
//! | [`Objective::Distill`] (retraining) | `w_ce·CE + w_kd·T²·H(softmax(t/T), log_softmax(s/T)) + w_feat·MSE(features_s, features_t)` |
//!
//! The distillation loss is the paper's `KLTokenMSELoss` (soft cross-entropy against the
//! teacher's logits plus the MSE of the final-norm token features) plus the hard-label CE
//! its `retrain_one_epoch` adds. The paper's defaults are `T = 1` and all weights 1.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{D, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::data::{Augment, Dataset, Normalize, Splits, permutation, rng_for};
use crate::ops::AdamWStep;
use crate::vit::Vit;
use crate::{Error, Result};

/// AdamW (decoupled weight decay, Loshchilov & Hutter) with its state exposed for
/// checkpoints. Weight decay applies to weight matrices and the conv kernel only (not to
/// biases, norms, embeddings, alpha or beta), as timm's `filter_bias_and_bn`.
#[derive(Debug)]
pub struct AdamW {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Updates done so far.
    pub step: u64,
    state: Vec<ParamState>,
}

#[derive(Debug)]
struct ParamState {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
    /// Multiplies the learning rate of this parameter.
    lr_scale: f64,
    /// Projects the parameter into `[lo, hi]` after each update.
    bounds: Option<(f64, f64)>,
}

impl AdamW {
    /// Optimiser state for `vars` (moments zero).
    pub fn new(vars: &[(String, Var)], weight_decay: f64) -> Result<Self> {
        let state = vars
            .iter()
            .map(|(name, var)| {
                let decay = name.ends_with(".weight") && var.rank() >= 2;
                Ok(ParamState {
                    name: name.clone(),
                    var: var.clone(),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    decay,
                    lr_scale: 1.0,
                    bounds: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            state,
        })
    }

    /// Gives the parameters whose name `selects` their own learning-rate multiplier and,
    /// with `bounds`, a projection into `[lo, hi]` after every update (projected
    /// gradient descent). Returns how many parameters were selected.
    pub fn configure(
        &mut self,
        selects: impl Fn(&str) -> bool,
        lr_scale: f64,
        bounds: Option<(f64, f64)>,
    ) -> usize {
        let mut n = 0;
        for st in self.state.iter_mut().filter(|st| selects(&st.name)) {
            st.lr_scale = lr_scale;
            st.bounds = bounds;
            n += 1;
        }
        n
    }

    /// One update with learning rate `lr`; parameters without a gradient are skipped.
    /// Each parameter's update is one fused pass ([`AdamWStep`]).
    pub fn update(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        for st in &mut self.state {
            let Some(g) = grads.get(st.var.as_tensor()) else {
                continue;
            };
            let step = AdamWStep {
                lr: lr as f32,
                lr_scale: st.lr_scale as f32,
                beta1: b1 as f32,
                beta2: b2 as f32,
                bias1: (1.0 - b1.powi(t)) as f32,
                bias2: (1.0 - b2.powi(t)) as f32,
                eps: self.eps as f32,
                weight_decay: if st.decay {
                    self.weight_decay as f32
                } else {
                    0.0
                },
            };
            let (theta, m, v) = step.apply(st.var.as_tensor(), g, &st.m, &st.v)?;
            st.m = m;
            st.v = v;
            match st.bounds {
                Some((lo, hi)) => st.var.set(&theta.clamp(lo, hi)?)?,
                None => st.var.set(&theta)?,
            }
        }
        Ok(())
    }

    /// The moments as named tensors (`adamw.m.NAME`, `adamw.v.NAME`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for st in &self.state {
            out.insert(format!("adamw.m.{}", st.name), st.m.clone());
            out.insert(format!("adamw.v.{}", st.name), st.v.clone());
        }
        out
    }

    /// Restores the moments written by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for st in &mut self.state {
            for (key, slot) in [("m", &mut st.m), ("v", &mut st.v)] {
                let name = format!("adamw.{key}.{}", st.name);
                let t = tensors.get(&name).ok_or_else(|| {
                    Error::Checkpoint(format!("optimizer tensor {name} is missing"))
                })?;
                if t.dims() != st.var.dims() {
                    return Err(Error::Checkpoint(format!(
                        "optimizer tensor {name} has the wrong shape"
                    )));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Learning rate at `step` of `total`: linear warm-up from `base/100` to `base` over
/// `warmup` steps, then cosine decay to `min`.
pub fn lr_at(step: u64, total: u64, warmup: u64, base: f64, min: f64) -> f64 {
    if step < warmup {
        let f = (step as f64 + 1.0) / warmup as f64;
        return base * (0.01 + 0.99 * f);
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let f = ((step - warmup) as f64 / span).min(1.0);
    min + 0.5 * (base - min) * (1.0 + (std::f64::consts::PI * f).cos())
}

/// Hyper-parameters of one training run (saved in the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs in total (a resumed run continues up to this number).
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine.
    pub min_lr: f64,
    /// Warm-up length in epochs (may be fractional).
    pub warmup_epochs: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Seed of the data order and augmentation (each epoch draws its own stream).
    pub seed: u64,
    /// Random-crop padding (0: none).
    pub crop_pad: usize,
    /// Random horizontal flip.
    pub flip: bool,
    /// Batch size for evaluation.
    pub eval_batch: usize,
    /// Evaluate on the test set every this many epochs (and after the last).
    pub eval_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 128,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_epochs: 1.0,
            weight_decay: 0.05,
            label_smoothing: 0.1,
            seed: 42,
            crop_pad: 2,
            flip: true,
            eval_batch: 500,
            eval_every: 1,
        }
    }
}

/// What the run minimises.
#[derive(Debug, Clone)]
pub enum Objective {
    /// Cross-entropy (the Softmax teacher, or any fixed architecture without a teacher).
    Supervised,
    /// The architecture search: CE plus the L1 penalties on the relaxed alpha and beta.
    Search {
        /// `λα`.
        lambda_alpha: f64,
        /// `λβ`.
        lambda_beta: f64,
        /// Per-head cost `[L][H]` (e.g. measured latency saved by ScaleAttn), normalised
        /// to mean 1; `None` = 1 everywhere.
        head_cost: Option<Vec<Vec<f32>>>,
        /// Per-block cost `[L]` of a block keeping any ReLU-Softmax head (e.g. the
        /// latency its fold saves when all its heads are ScaleAttn), weighting
        /// `max_h |alpha_lh|`, in the unit of `head_cost` (divided by the same mean);
        /// `None` = 0.
        block_cost: Option<Vec<f32>>,
        /// How alpha and beta are optimised.
        arch: ArchOptim,
    },
    /// Retraining with knowledge distillation from a frozen teacher.
    Distill {
        /// The teacher (frozen).
        teacher: Box<Vit>,
        /// Weight of the hard-label CE.
        ce: f64,
        /// Weight of the logit distillation.
        kd: f64,
        /// Temperature of the logit distillation.
        temperature: f64,
        /// Weight of the token-feature MSE.
        feat: f64,
    },
}

/// How the search optimises its architecture parameters (alpha, beta) beside the
/// network's weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchOptim {
    /// Learning-rate multiplier of alpha and beta (their AdamW steps are `lr_scale·lr`).
    pub lr_scale: f64,
    /// Project alpha and beta into `[0, 1]` after each step: the mixing weight's own
    /// domain, where the L1 penalty can drive an unneeded head to exactly 0.
    pub clamp: bool,
    /// A budget for the search: the mean alpha it should end at (μ, the fraction of
    /// heads that keep ReLU-Softmax). After every step the alpha penalty's multiplier
    /// `s` (λα·s is the weight in the loss) becomes `s·exp(rate·(mean(alpha) − μ))`:
    /// dual ascent on `mean(alpha) ≤ μ`, which raises the penalty until only the heads
    /// the loss needs most stay up. The penalty is then applied as a decoupled step
    /// beside Adam's (see `Trainer::step`). `None`: a fixed λα in the loss.
    pub target_mu: Option<f64>,
    /// The `rate` of the budget's update.
    pub budget_rate: f64,
    /// A commitment phase at the end of a budgeted search (see [`Commit`]); `None`:
    /// the alphas end where the loss and the budget leave them.
    pub commit: Option<Commit>,
}

/// The end of a budgeted search, where the relaxed alphas turn into a decision.
///
/// From the fraction `from` of the search's steps on, after each step every alpha moves
/// away from the current cut `τ` (the midpoint between the `k`-th and `(k+1)`-th largest
/// alpha, `k = round(μ·L·H)`): `alpha ← clamp(alpha + lr·lr_scale·strength·r·sign(alpha − τ),
/// 0, 1)`, with `r` rising linearly from 0 at `from` to 1 at the last step. Early in the
/// phase the loss's own pull (Adam's step, at most `lr·lr_scale` per step) still moves a
/// head across the cut; once `strength·r` exceeds it the kept heads go to 1 and the
/// dropped ones to 0, and the network trains its last steps on the mixture that
/// binarisation keeps. The ranking is the loss's: the push only widens the margins it made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Commit {
    /// Where the phase starts, as a fraction of the search's steps, in `[0, 1)`.
    pub from: f64,
    /// The push at the end of the phase, in units of `lr·lr_scale` per step.
    pub strength: f64,
}

impl Default for ArchOptim {
    /// The paper's code: the weights' learning rate, no projection, a fixed λ.
    fn default() -> Self {
        Self {
            lr_scale: 1.0,
            clamp: false,
            target_mu: None,
            budget_rate: 0.05,
            commit: None,
        }
    }
}

/// Bounds of the budget's penalty multiplier (so a long run can neither zero nor
/// overflow it).
const PENALTY_SCALE_RANGE: (f64, f64) = (1e-3, 1e6);

/// Whether a parameter name is an architecture parameter (alpha or beta).
pub fn is_arch_param(name: &str) -> bool {
    name.ends_with(".alpha") || name.ends_with(".beta")
}

impl Objective {
    /// A short name stored in the checkpoint.
    pub fn stage(&self) -> &'static str {
        match self {
            Self::Supervised => "supervised",
            Self::Search { .. } => "search",
            Self::Distill { .. } => "distill",
        }
    }
}

/// Cross-entropy with label smoothing `eps`: `(1 − eps)·NLL + eps·mean_c(−log p_c)`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = candle_nn::loss::nll(&logp, labels)?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let smooth = logp.mean(D::Minus1)?.mean_all()?.neg()?;
    Ok(((nll * (1.0 - eps))? + (smooth * eps)?)?)
}

/// Soft cross-entropy of the student against the teacher at temperature `t`, times `t²`
/// (the paper's `KLLossSoft`; it differs from the KL divergence by the teacher's entropy,
/// a constant).
pub fn soft_cross_entropy(student: &Tensor, teacher: &Tensor, t: f64) -> Result<Tensor> {
    let p = candle_nn::ops::softmax(&(teacher / t)?, D::Minus1)?;
    let logq = candle_nn::ops::log_softmax(&(student / t)?, D::Minus1)?;
    Ok(((p * logq)?.sum(D::Minus1)?.mean_all()?.neg()? * (t * t))?)
}

/// Loss and number of correct top-1 predictions of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The total loss.
    pub loss: f64,
    /// Correct predictions in the batch.
    pub correct: usize,
}

/// Optimises one network for one objective.
#[derive(Debug)]
pub struct Trainer<'a> {
    vit: &'a Vit,
    objective: &'a Objective,
    label_smoothing: f64,
    /// The optimiser (public for checkpoints).
    pub opt: AdamW,
    head_cost: Vec<Tensor>,
    block_cost: Vec<f64>,
    /// The alpha penalty's multiplier (1 unless the search has a budget; see
    /// [`ArchOptim::target_mu`]); public for checkpoints.
    pub penalty_scale: f64,
    /// Steps of the whole run (set by [`train`]; the commitment phase is placed in it).
    total_steps: u64,
    /// The alphas (flattened, block-major) when the commitment phase began: the
    /// ranking the loss and the budget made on their own; public for checkpoints.
    pub commit_start_alpha: Option<Vec<f32>>,
}

impl<'a> Trainer<'a> {
    /// A trainer of `vit`'s trainable parameters.
    pub fn new(
        vit: &'a Vit,
        objective: &'a Objective,
        weight_decay: f64,
        label_smoothing: f64,
    ) -> Result<Self> {
        let mut opt = AdamW::new(vit.vars(), weight_decay)?;
        if let Objective::Search { arch, .. } = objective {
            let bounds = arch.clamp.then_some((0.0, 1.0));
            opt.configure(is_arch_param, arch.lr_scale, bounds);
        }
        let mut head_cost = Vec::new();
        let mut mean = 1.0;
        if let Objective::Search {
            head_cost: Some(cost),
            ..
        } = objective
        {
            let flat: Vec<f32> = cost.iter().flatten().copied().collect();
            mean = flat.iter().sum::<f32>() / flat.len().max(1) as f32;
            if cost.len() != vit.config().depth
                || cost.iter().any(|r| r.len() != vit.config().heads)
                || !mean.is_finite()
                || mean <= 0.0
                || flat.iter().any(|c| !(c.is_finite() && *c >= 0.0))
            {
                return Err(Error::Unsupported(format!(
                    "head cost must be {}×{} finite non-negative numbers with a positive mean",
                    vit.config().depth,
                    vit.config().heads
                )));
            }
            for row in cost {
                let r: Vec<f32> = row.iter().map(|c| c / mean).collect();
                head_cost.push(Tensor::from_vec(r, (1, row.len(), 1, 1), &Device::Cpu)?);
            }
        }
        let block_cost = crate::cost::block_penalty(objective, vit.config().depth, mean)?;
        Ok(Self {
            vit,
            objective,
            label_smoothing,
            opt,
            head_cost,
            block_cost,
            penalty_scale: 1.0,
            total_steps: 0,
            commit_start_alpha: None,
        })
    }

    /// Tells the trainer how many steps the run has in all, which places a commitment
    /// phase ([`Commit`]); without it (0) there is none.
    pub fn set_total_steps(&mut self, total: u64) {
        self.total_steps = total;
    }

    /// The loss of a batch (with its graph) and the number of correct predictions.
    pub fn loss(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, usize)> {
        let out = self.vit.forward(x)?;
        let correct = count_correct(&out.logits, y)?;
        let ce = cross_entropy(&out.logits, y, self.label_smoothing)?;
        let loss = match self.objective {
            Objective::Supervised => ce,
            Objective::Search {
                lambda_alpha,
                lambda_beta,
                ..
            } => {
                let mut loss = ce;
                if !self.budgeted() {
                    let penalty = self.alpha_penalty()?;
                    loss = (loss + (penalty * (*lambda_alpha * self.penalty_scale))?)?;
                }
                for b in self.vit.beta_tensors() {
                    loss = (loss + (b.abs()?.sum_all()? * *lambda_beta)?)?;
                }
                loss
            }
            Objective::Distill {
                teacher,
                ce: w_ce,
                kd,
                temperature,
                feat,
            } => {
                let t = teacher.forward(x)?;
                let (tl, tf) = (t.logits.detach(), t.features.detach());
                let mut loss = (ce * *w_ce)?;
                if *kd != 0.0 {
                    loss = (loss + (soft_cross_entropy(&out.logits, &tl, *temperature)? * *kd)?)?;
                }
                if *feat != 0.0 {
                    let mse = (&out.features - &tf)?.sqr()?.mean_all()?;
                    loss = (loss + (mse * *feat)?)?;
                }
                loss
            }
        };
        Ok((loss, correct))
    }

    /// One optimisation step on a batch at learning rate `lr`; with a budget, the
    /// alpha penalty's decoupled step and the budget's update follow Adam's.
    pub fn step(&mut self, x: &Tensor, y: &Tensor, lr: f64) -> Result<StepStats> {
        let (loss, correct) = self.loss(x, y)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(Error::Diverged {
                step: self.opt.step,
            });
        }
        let grads = loss.backward()?;
        self.opt.update(&grads, lr)?;
        if self.budgeted() {
            self.decoupled_penalty_step(lr)?;
            self.update_budget()?;
            self.commit_step(lr)?;
        }
        Ok(StepStats {
            loss: value,
            correct,
        })
    }
}

impl Trainer<'_> {
    /// The alpha penalty `Σ_l Σ_h c_lh·|alpha_lh| + Σ_l b_l·max_h |alpha_lh|` (without λα).
    fn alpha_penalty(&self) -> Result<Tensor> {
        let mut total = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
        for (i, a) in self.vit.alpha_tensors().iter().enumerate() {
            let mut term = match self.head_cost.get(i) {
                Some(c) => a.abs()?.broadcast_mul(c)?.sum_all()?,
                None => a.abs()?.sum_all()?,
            };
            if let Some(b) = self.block_cost.get(i) {
                term = (term + (a.abs()?.max_all()? * *b)?)?;
            }
            total = (total + term)?;
        }
        Ok(total)
    }

    /// Whether the search runs with a budget (see [`ArchOptim::target_mu`]).
    fn budgeted(&self) -> bool {
        matches!(
            self.objective,
            Objective::Search {
                arch: ArchOptim {
                    target_mu: Some(_),
                    ..
                },
                ..
            }
        )
    }

    /// With a budget the alpha penalty is a decoupled step, as AdamW's weight decay:
    /// after Adam's step on the loss, `alpha ← alpha − lr·lr_scale·λα·s·∂P/∂alpha`
    /// (projected when clamping). Through Adam's per-parameter normalisation the
    /// penalty would move every alpha at the same speed whatever the loss says; apart
    /// from it, a head stays up exactly when the loss pulls it up harder than the
    /// penalty pushes it down.
    fn decoupled_penalty_step(&mut self, lr: f64) -> Result<()> {
        let Objective::Search {
            lambda_alpha, arch, ..
        } = self.objective
        else {
            return Ok(());
        };
        let grads = self.alpha_penalty()?.backward()?;
        let rate = lr * arch.lr_scale * lambda_alpha * self.penalty_scale;
        for (name, var) in self.vit.vars() {
            if !name.ends_with(".alpha") {
                continue;
            }
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let next = (var.as_tensor().detach() - (g * rate)?)?;
            var.set(&if arch.clamp {
                next.clamp(0.0, 1.0)?
            } else {
                next
            })?;
        }
        Ok(())
    }

    /// The budget's dual step (see [`ArchOptim::target_mu`]); nothing without a budget.
    fn update_budget(&mut self) -> Result<()> {
        let Objective::Search {
            arch:
                ArchOptim {
                    target_mu: Some(mu),
                    budget_rate,
                    ..
                },
            ..
        } = self.objective
        else {
            return Ok(());
        };
        let alphas = self.vit.alpha_tensors();
        let (mut sum, mut n) = (0.0f64, 0usize);
        for a in &alphas {
            sum += f64::from(a.sum_all()?.to_scalar::<f32>()?);
            n += a.elem_count();
        }
        if n > 0 {
            let mean = sum / n as f64;
            let (lo, hi) = PENALTY_SCALE_RANGE;
            self.penalty_scale =
                (self.penalty_scale * (budget_rate * (mean - mu)).exp()).clamp(lo, hi);
        }
        Ok(())
    }
}

impl Trainer<'_> {
    /// The commitment phase's step (see [`Commit`]); nothing outside the phase.
    fn commit_step(&mut self, lr: f64) -> Result<()> {
        let Objective::Search {
            arch:
                arch @ ArchOptim {
                    target_mu: Some(mu),
                    commit: Some(commit),
                    ..
                },
            ..
        } = self.objective
        else {
            return Ok(());
        };
        let ramp = commit_ramp(commit, self.opt.step, self.total_steps);
        if ramp <= 0.0 {
            return Ok(());
        }
        let alphas = self.vit.alpha_tensors();
        let mut flat = Vec::new();
        for a in &alphas {
            flat.extend(a.flatten_all()?.to_vec1::<f32>()?);
        }
        if self.commit_start_alpha.is_none() {
            self.commit_start_alpha = Some(flat.clone());
        }
        let Some((lowest_kept, highest_dropped)) = crate::decision::cut_sides(&flat, *mu) else {
            return Ok(());
        };
        let tau = 0.5 * (lowest_kept + highest_dropped);
        let push = lr * arch.lr_scale * commit.strength * ramp;
        for (name, var) in self.vit.vars() {
            if !name.ends_with(".alpha") {
                continue;
            }
            let a = var.as_tensor().detach();
            let side = (a.ge(f64::from(tau))?.to_dtype(a.dtype())? * 2.0)?.affine(1.0, -1.0)?;
            var.set(&(a + (side * push)?)?.clamp(0.0, 1.0)?)?;
        }
        Ok(())
    }
}

/// How far into a commitment phase step `step` of `total` is: 0 before it starts, rising
/// linearly to 1 at the last step (0 when `total` is unknown).
pub fn commit_ramp(commit: &Commit, step: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let progress = step as f64 / total as f64;
    ((progress - commit.from) / (1.0 - commit.from).max(f64::EPSILON)).clamp(0.0, 1.0)
}

fn count_correct(logits: &Tensor, y: &Tensor) -> Result<usize> {
    let pred: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
    let y: Vec<u32> = y.to_vec1()?;
    Ok(pred.iter().zip(&y).filter(|(a, b)| a == b).count())
}

/// A batch as tensors: `[B, C, H, W]` inputs and `[B]` labels.
pub fn batch_tensors(
    data: &Dataset,
    idx: &[usize],
    norm: &Normalize,
    aug: Option<(&Augment, &mut crate::data::Rng)>,
) -> Result<(Tensor, Tensor)> {
    let (x, y) = data.batch(idx, norm, aug);
    let x = Tensor::from_vec(
        x,
        (idx.len(), data.channels, data.height, data.width),
        &Device::Cpu,
    )?;
    let y = Tensor::from_vec(y, idx.len(), &Device::Cpu)?;
    Ok((x, y))
}

/// Mean cross-entropy (no smoothing) and top-1 accuracy of `vit` on `data`.
pub fn evaluate(vit: &Vit, data: &Dataset, norm: &Normalize, batch: usize) -> Result<(f64, f64)> {
    let mut loss = 0.0;
    let mut correct = 0usize;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, y) = batch_tensors(data, chunk, norm, None)?;
        let out = vit.forward(&x)?;
        loss += f64::from(cross_entropy(&out.logits, &y, 0.0)?.to_scalar::<f32>()?)
            * chunk.len() as f64;
        correct += count_correct(&out.logits, &y)?;
    }
    let n = data.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// One row of the training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Mean training loss (the objective's full loss).
    pub train_loss: f64,
    /// Training accuracy (on augmented inputs).
    pub train_acc: f64,
    /// Test cross-entropy (`None` when not evaluated this epoch).
    pub test_loss: Option<f64>,
    /// Test accuracy.
    pub test_acc: Option<f64>,
    /// Wall time of the training part of the epoch, seconds.
    pub train_seconds: f64,
    /// `Σ|alpha|` at the end of the epoch (search only).
    pub alpha_l1: Option<f64>,
    /// The alpha penalty's weight in the loss at the end of the epoch (search only).
    #[serde(default)]
    pub lambda_alpha: Option<f64>,
    /// The gap at the budget's cut at the end of the epoch (a search with a budget
    /// only; see [`crate::decision::cut_gap`]).
    #[serde(default)]
    pub alpha_gap: Option<f64>,
}

/// What a checkpoint's JSON holds besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// `supervised`, `search` or `distill`.
    pub stage: String,
    /// Completed epochs.
    pub epoch: usize,
    /// Optimiser steps done.
    pub step: u64,
    /// The run's hyper-parameters.
    pub train: TrainConfig,
    /// The network's configuration (manifest form).
    pub model: model::ModelConfig,
    /// Whether alpha / beta were searched.
    pub search_alpha: bool,
    /// See `search_alpha`.
    pub search_beta: bool,
    /// History so far.
    pub history: Vec<EpochStats>,
    /// The alpha penalty's multiplier (see [`Trainer::penalty_scale`]).
    #[serde(default = "one")]
    pub penalty_scale: f64,
    /// See [`Trainer::commit_start_alpha`].
    #[serde(default)]
    pub commit_start_alpha: Option<Vec<f32>>,
}

fn one() -> f64 {
    1.0
}

/// File names of a checkpoint inside its directory.
pub const CHECKPOINT_TENSORS: &str = "checkpoint.safetensors";
/// See [`CHECKPOINT_TENSORS`].
pub const CHECKPOINT_META: &str = "checkpoint.json";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the parameters, optimiser moments and metadata to `dir` (atomically: each file
/// is written under a temporary name and renamed).
pub fn save_checkpoint(dir: &Path, vit: &Vit, opt: &AdamW, meta: &CheckpointMeta) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut tensors = opt.state_tensors();
    for (name, t) in vit.params() {
        tensors.insert(name.clone(), t.clone());
    }
    let tmp = dir.join(format!("{CHECKPOINT_TENSORS}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)?;
    let dst = dir.join(CHECKPOINT_TENSORS);
    fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    let json = serde_json::to_string_pretty(meta).map_err(|e| Error::Checkpoint(e.to_string()))?;
    let tmp = dir.join(format!("{CHECKPOINT_META}.tmp"));
    fs::write(&tmp, json).map_err(io_err(&tmp))?;
    let dst = dir.join(CHECKPOINT_META);
    fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    Ok(())
}

/// Reads a checkpoint's metadata and tensors.
pub fn load_checkpoint(dir: &Path) -> Result<(CheckpointMeta, HashMap<String, Tensor>)> {
    let meta_path = dir.join(CHECKPOINT_META);
    let text = fs::read_to_string(&meta_path).map_err(io_err(&meta_path))?;
    let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: meta_path.clone(),
        source: e,
    })?;
    let tpath = dir.join(CHECKPOINT_TENSORS);
    let bytes = fs::read(&tpath).map_err(io_err(&tpath))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", tpath.display())))?;
    Ok((meta, tensors))
}

/// Whether `dir` holds a checkpoint.
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join(CHECKPOINT_META).is_file() && dir.join(CHECKPOINT_TENSORS).is_file()
}

/// Options of [`train`] that are not hyper-parameters.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where to write a checkpoint after every epoch.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir` when there is one.
    pub resume: bool,
    /// Show a progress bar (drawn only on a terminal).
    pub progress: bool,
    /// Print one line per epoch.
    pub verbose: bool,
}

/// Trains `vit` on `data.train` for `cfg.epochs` epochs, evaluating on `data.test`.
/// Returns the whole history (including epochs done before a resume).
pub fn train(
    vit: &Vit,
    data: &Splits,
    cfg: &TrainConfig,
    objective: &Objective,
    run: &RunOptions,
) -> Result<Vec<EpochStats>> {
    train_until(vit, data, cfg, objective, run, cfg.epochs)
}

/// [`train`], stopping after epoch `stop` (of the `cfg.epochs`-epoch schedule), as an
/// interrupted run would.
pub fn train_until(
    vit: &Vit,
    data: &Splits,
    cfg: &TrainConfig,
    objective: &Objective,
    run: &RunOptions,
    stop: usize,
) -> Result<Vec<EpochStats>> {
    let mut trainer = Trainer::new(vit, objective, cfg.weight_decay, cfg.label_smoothing)?;
    let steps_per_epoch = data.train.len().div_ceil(cfg.batch_size.max(1)) as u64;
    let total = steps_per_epoch * cfg.epochs as u64;
    trainer.set_total_steps(total);
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let mut history: Vec<EpochStats> = Vec::new();
    let mut start_epoch = 0usize;
    if run.resume
        && let Some(dir) = &run.checkpoint_dir
        && has_checkpoint(dir)
    {
        let (meta, tensors) = load_checkpoint(dir)?;
        if meta.stage != objective.stage()
            || meta.model.clone().normalized()? != vit.config().clone()
            || meta.search_alpha != vit.space().alpha
            || meta.search_beta != vit.space().beta
        {
            return Err(Error::Checkpoint(format!(
                "{}: the checkpoint is of another run (stage {}, or a different network); \
                 use another --out or drop --resume",
                dir.display(),
                meta.stage
            )));
        }
        vit.load_params(&tensors)?;
        trainer.opt.load_state(&tensors, meta.step)?;
        trainer.penalty_scale = meta.penalty_scale;
        trainer.commit_start_alpha = meta.commit_start_alpha;
        start_epoch = meta.epoch;
        history = meta.history;
        if run.verbose {
            eprintln!(
                "resumed from {} at epoch {start_epoch}, step {}",
                dir.display(),
                meta.step
            );
        }
    }
    let augment = Augment {
        pad: cfg.crop_pad,
        flip: cfg.flip && data.flip_ok,
    };
    if run.verbose && start_epoch < stop.min(cfg.epochs) {
        let header = summary_table(&[]);
        let search = vit.space().alpha;
        let mut lines = header.lines();
        let (h, _) = (lines.next().unwrap_or(""), lines.next());
        eprintln!(
            "{h}{}",
            if search {
                " | Σ|alpha| |       λα |     gap"
            } else {
                ""
            }
        );
    }
    for epoch in start_epoch..stop.min(cfg.epochs) {
        let mut rng = rng_for(cfg.seed, epoch as u64 + 1);
        let order = permutation(data.train.len(), &mut rng);
        let bar = if run.progress {
            let bar = indicatif::ProgressBar::new(steps_per_epoch);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("epoch {}/{}", epoch + 1, cfg.epochs));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            lr = lr_at(trainer.opt.step, total, warmup, cfg.lr, cfg.min_lr);
            let (x, y) = batch_tensors(&data.train, chunk, &data.norm, Some((&augment, &mut rng)))?;
            let s = trainer.step(&x, &y, lr)?;
            loss_sum += s.loss * chunk.len() as f64;
            correct += s.correct;
            seen += chunk.len();
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% lr {lr:.2e}",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64
            ));
        }
        bar.finish_and_clear();
        let train_seconds = t0.elapsed().as_secs_f64();
        let last = epoch + 1 == cfg.epochs;
        let (test_loss, test_acc) = if last || (epoch + 1) % cfg.eval_every.max(1) == 0 {
            let (l, a) = evaluate(vit, &data.test, &data.norm, cfg.eval_batch)?;
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        let (alpha_l1, alpha_gap) = if vit.space().alpha {
            let r = vit.relaxed()?;
            let gap = match objective {
                Objective::Search {
                    arch:
                        ArchOptim {
                            target_mu: Some(mu),
                            ..
                        },
                    ..
                } => crate::decision::cut_gap(&r.alpha, *mu).map(f64::from),
                _ => None,
            };
            let l1 = r.alpha.iter().flatten().map(|a| f64::from(a.abs())).sum();
            (Some(l1), gap)
        } else {
            (None, None)
        };
        let stats = EpochStats {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            test_loss,
            test_acc,
            train_seconds,
            alpha_l1,
            lambda_alpha: match objective {
                Objective::Search { lambda_alpha, .. } => {
                    Some(lambda_alpha * trainer.penalty_scale)
                }
                _ => None,
            },
            alpha_gap,
        };
        if run.verbose {
            eprintln!("{}", format_row(&stats));
        }
        history.push(stats);
        if let Some(dir) = &run.checkpoint_dir {
            let meta = CheckpointMeta {
                stage: objective.stage().into(),
                epoch: epoch + 1,
                step: trainer.opt.step,
                train: cfg.clone(),
                model: vit.config().clone(),
                search_alpha: vit.space().alpha,
                search_beta: vit.space().beta,
                history: history.clone(),
                penalty_scale: trainer.penalty_scale,
                commit_start_alpha: trainer.commit_start_alpha.clone(),
            };
            save_checkpoint(dir, vit, &trainer.opt, &meta)?;
        }
    }
    Ok(history)
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

fn format_row(s: &EpochStats) -> String {
    format!(
        "{:>5} | {:>9.2e} | {:>10.4} | {:>9.2} | {:>9} | {:>8} | {:>7.1}{}{}{}",
        s.epoch,
        s.lr,
        s.train_loss,
        100.0 * s.train_acc,
        s.test_loss.map_or("-".into(), |v| format!("{v:.4}")),
        opt_pct(s.test_acc),
        s.train_seconds,
        s.alpha_l1.map_or(String::new(), |v| format!(" | {v:>8.3}")),
        s.lambda_alpha
            .map_or(String::new(), |v| format!(" | {v:>8.2e}")),
        match (s.alpha_l1, s.alpha_gap) {
            (Some(_), Some(g)) => format!(" | {g:>7.4}"),
            (Some(_), None) => format!(" | {:>7}", "-"),
            _ => String::new(),
        },
    )
}

/// The history as a table (one row per epoch).
pub fn summary_table(history: &[EpochStats]) -> String {
    let search = history.iter().any(|s| s.alpha_l1.is_some());
    let mut out =
        String::from("epoch |        lr | train loss | train acc | test loss | test acc |  time s");
    out.push_str(if search {
        " | Σ|alpha| |       λα |     gap\n"
    } else {
        "\n"
    });
    out.push_str("------|-----------|------------|-----------|-----------|----------|--------");
    out.push_str(if search {
        "-|----------|----------|--------\n"
    } else {
        "\n"
    });
    for s in history {
        out.push_str(&format_row(s));
        out.push('\n');
    }
    out
}

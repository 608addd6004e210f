//! Training on real Fashion-MNIST data: the loss decreases; checkpoints resume exactly.

mod common;

use candle_core::Tensor;
use model::AttnKind;
use search::train::{self, ArchOptim, Commit, Objective, RunOptions, TrainConfig, Trainer};
use search::vit::{SearchSpace, Vit};

/// The first `n` training images of Fashion-MNIST and their labels, as one batch.
fn first_batch(n: usize) -> (Tensor, Tensor) {
    let data = common::fashion_mnist(n, 0);
    let idx: Vec<usize> = (0..n).collect();
    train::batch_tensors(&data.train, &idx, &data.norm, None).unwrap()
}

/// A search of alpha alone with λα = 1e-3 and `arch`.
fn alpha_search(arch: ArchOptim) -> Objective {
    Objective::Search {
        lambda_alpha: 1e-3,
        lambda_beta: 0.0,
        head_cost: None,
        block_cost: None,
        arch,
    }
}

#[test]
fn training_steps_decrease_the_loss_on_real_data() {
    let (x, y) = first_batch(128);
    for (kind, space) in [
        (AttnKind::Softmax, SearchSpace::default()),
        (
            AttnKind::ReluSoftmax,
            SearchSpace {
                alpha: true,
                beta: true,
            },
        ),
    ] {
        let vit = Vit::new(&common::tiny_config(kind), space, 1, true).unwrap();
        let objective = if space.alpha {
            Objective::Search {
                lambda_alpha: 1e-3,
                lambda_beta: 1e-3,
                head_cost: None,
                block_cost: None,
                arch: ArchOptim::default(),
            }
        } else {
            Objective::Supervised
        };
        let mut trainer = Trainer::new(&vit, &objective, 0.0, 0.0).unwrap();
        let before = trainer.loss(&x, &y).unwrap().0.to_scalar::<f32>().unwrap();
        let mut last = before;
        for _ in 0..20 {
            last = trainer.step(&x, &y, 3e-3).unwrap().loss as f32;
        }
        let after = trainer.loss(&x, &y).unwrap().0.to_scalar::<f32>().unwrap();
        assert!(
            after < 0.85 * before && last < before,
            "{kind:?}: loss {before} -> {after}"
        );
        if space.alpha {
            // The architecture parameters moved.
            let r = vit.relaxed().unwrap();
            assert!(r.alpha.iter().flatten().any(|&a| (a - 1.0).abs() > 1e-4));
            assert!(r.beta.iter().flatten().any(|&b| (b - 1.0).abs() > 1e-4));
        }
    }
}

#[test]
fn distillation_from_a_teacher_trains() {
    let (x, y) = first_batch(64);
    let teacher = Vit::new(
        &common::tiny_config(AttnKind::Softmax),
        SearchSpace::default(),
        2,
        false,
    )
    .unwrap();
    assert!(teacher.vars().is_empty());
    let student = Vit::new(
        &common::tiny_config(AttnKind::ScaleAttn),
        SearchSpace::default(),
        3,
        true,
    )
    .unwrap();
    let objective = Objective::Distill {
        teacher: Box::new(teacher),
        ce: 1.0,
        kd: 1.0,
        temperature: 2.0,
        feat: 1.0,
    };
    let mut trainer = Trainer::new(&student, &objective, 0.0, 0.0).unwrap();
    let before = trainer.loss(&x, &y).unwrap().0.to_scalar::<f32>().unwrap();
    for _ in 0..10 {
        trainer.step(&x, &y, 2e-3).unwrap();
    }
    let after = trainer.loss(&x, &y).unwrap().0.to_scalar::<f32>().unwrap();
    assert!(after < before, "loss {before} -> {after}");
}

fn params(vit: &Vit) -> Vec<f32> {
    vit.params()
        .iter()
        .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn resume_restores_epoch_step_and_weights() {
    let data = common::fashion_mnist(192, 64);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 64,
        warmup_epochs: 0.5,
        eval_batch: 64,
        ..TrainConfig::default()
    };
    let arch = common::tiny_config(AttnKind::ReluSoftmax);
    let space = SearchSpace {
        alpha: true,
        beta: false,
    };
    // With a budget, so the penalty's multiplier must be restored too.
    let objective = Objective::Search {
        lambda_alpha: 1e-3,
        lambda_beta: 0.0,
        head_cost: None,
        block_cost: None,
        arch: ArchOptim {
            target_mu: Some(0.25),
            clamp: true,
            ..ArchOptim::default()
        },
    };

    // Uninterrupted: two epochs.
    let dir_a = common::temp_dir("resume-a");
    let a = Vit::new(&arch, space, 9, true).unwrap();
    let run_a = RunOptions {
        checkpoint_dir: Some(dir_a.clone()),
        ..RunOptions::default()
    };
    let hist_a = train::train(&a, &data, &cfg, &objective, &run_a).unwrap();
    let (meta_a, _) = train::load_checkpoint(&dir_a).unwrap();
    assert_eq!((meta_a.epoch, meta_a.step), (2, 6));

    // Interrupted after the first epoch of the same schedule ...
    let dir_b = common::temp_dir("resume-b");
    let b1 = Vit::new(&arch, space, 9, true).unwrap();
    let run_b = RunOptions {
        checkpoint_dir: Some(dir_b.clone()),
        ..RunOptions::default()
    };
    train::train_until(&b1, &data, &cfg, &objective, &run_b, 1).unwrap();
    let (meta_b, _) = train::load_checkpoint(&dir_b).unwrap();
    assert_eq!((meta_b.epoch, meta_b.step, meta_b.history.len()), (1, 3, 1));

    // ... and resumed into a network with other initial weights, which the checkpoint
    // overwrites: the result is the uninterrupted run's.
    let b2 = Vit::new(&arch, space, 123, true).unwrap();
    let resume = RunOptions {
        resume: true,
        ..run_b.clone()
    };
    let hist_b = train::train(&b2, &data, &cfg, &objective, &resume).unwrap();
    assert_eq!(hist_b.len(), 2);
    for (x, y) in hist_a.iter().zip(&hist_b) {
        assert_eq!(x.epoch, y.epoch);
        assert!((x.train_loss - y.train_loss).abs() < 1e-6, "{x:?} vs {y:?}");
        assert!((x.train_acc - y.train_acc).abs() < 1e-9, "{x:?} vs {y:?}");
        assert!(
            (x.test_acc.unwrap() - y.test_acc.unwrap()).abs() < 1e-9,
            "{x:?} vs {y:?}"
        );
        assert!((x.lr - y.lr).abs() < 1e-12);
    }
    let (pa, pb) = (params(&a), params(&b2));
    let worst = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "weights after resume differ by {worst}");
    let (meta_end, tensors) = train::load_checkpoint(&dir_b).unwrap();
    assert_eq!((meta_end.epoch, meta_end.step), (2, 6));
    assert!(tensors.contains_key("adamw.m.classifier.blocks.0.self_attn.alpha"));
    assert!(tensors.contains_key("classifier.blocks.1.self_attn.alpha"));

    // A checkpoint of another kind of run is refused.
    let other = Vit::new(
        &common::tiny_config(AttnKind::Softmax),
        SearchSpace::default(),
        1,
        true,
    )
    .unwrap();
    let err = train::train(&other, &data, &cfg, &Objective::Supervised, &resume).unwrap_err();
    assert!(err.to_string().contains("another run"), "{err}");
    for d in [dir_a, dir_b] {
        common::remove(&d);
    }
}

#[test]
fn a_projected_search_keeps_alpha_and_beta_in_their_domain() {
    let (x, y) = first_batch(64);
    let space = SearchSpace {
        alpha: true,
        beta: true,
    };
    let mut moved = Vec::new();
    for arch in [
        ArchOptim {
            clamp: true,
            ..ArchOptim::default()
        },
        ArchOptim {
            lr_scale: 10.0,
            clamp: true,
            ..ArchOptim::default()
        },
    ] {
        let vit = Vit::new(&common::tiny_config(AttnKind::ReluSoftmax), space, 1, true).unwrap();
        // A penalty far above the cross-entropy's pull drives every alpha and beta down.
        let objective = Objective::Search {
            lambda_alpha: 1.0,
            lambda_beta: 1.0,
            head_cost: None,
            block_cost: None,
            arch,
        };
        let mut trainer = Trainer::new(&vit, &objective, 0.0, 0.0).unwrap();
        for _ in 0..40 {
            trainer.step(&x, &y, 3e-3).unwrap();
        }
        let r = vit.relaxed().unwrap();
        let all: Vec<f32> = r.alpha.iter().chain(&r.beta).flatten().copied().collect();
        assert!(
            all.iter().all(|&a| (0.0..=1.0).contains(&a)),
            "outside [0, 1]: {all:?}"
        );
        moved.push(all.iter().map(|a| 1.0 - a).sum::<f32>() / all.len() as f32);
        if arch.lr_scale > 1.0 {
            // 40 steps of about 10·3e-3 each (Adam's step is about lr when the gradient
            // keeps its sign) reach 0 from 1, and the projection holds them there.
            let mean = all.iter().sum::<f32>() / all.len() as f32;
            assert!(mean < 0.05, "not driven to 0 (mean {mean}): {all:?}");
        }
    }
    assert!(
        moved[1] > 5.0 * moved[0],
        "lr scale had no effect: {moved:?}"
    );
}

#[test]
fn a_budget_raises_the_penalty_above_its_target_and_lowers_it_below() {
    let (x, y) = first_batch(64);
    let space = SearchSpace {
        alpha: true,
        beta: false,
    };
    // Alphas start at 1: above a target of 0.5 the multiplier grows at every step;
    // below a target of 1.0 (never exceeded with the projection) it shrinks.
    for (target, grows) in [(0.5, true), (1.0, false)] {
        let vit = Vit::new(&common::tiny_config(AttnKind::ReluSoftmax), space, 1, true).unwrap();
        let objective = alpha_search(ArchOptim {
            clamp: true,
            target_mu: Some(target),
            ..ArchOptim::default()
        });
        let mut trainer = Trainer::new(&vit, &objective, 0.0, 0.0).unwrap();
        let mut scales = vec![trainer.penalty_scale];
        for _ in 0..5 {
            trainer.step(&x, &y, 3e-3).unwrap();
            scales.push(trainer.penalty_scale);
        }
        if grows {
            // The penalty acted on the alphas (as a decoupled step beside Adam's).
            let r = vit.relaxed().unwrap();
            let mean = r.alpha.iter().flatten().sum::<f32>() / 8.0;
            assert!(mean < 1.0, "alphas did not move: {:?}", r.alpha);
        }
        for w in scales.windows(2) {
            if grows {
                assert!(w[1] > w[0], "target {target}: {scales:?}");
            } else {
                assert!(w[1] <= w[0], "target {target}: {scales:?}");
            }
        }
    }
}

#[test]
fn the_commitment_ramp_rises_from_its_start_to_the_last_step() {
    let c = Commit {
        from: 0.5,
        strength: 2.0,
    };
    assert_eq!(train::commit_ramp(&c, 0, 100), 0.0);
    assert_eq!(train::commit_ramp(&c, 50, 100), 0.0);
    assert!((train::commit_ramp(&c, 75, 100) - 0.5).abs() < 1e-12);
    assert_eq!(train::commit_ramp(&c, 100, 100), 1.0);
    // Without the run's length there is no phase.
    assert_eq!(train::commit_ramp(&c, 100, 0), 0.0);
}

#[test]
fn a_commitment_phase_ends_the_alphas_at_zero_or_one_on_the_budget() {
    let (x, y) = first_batch(64);
    let space = SearchSpace {
        alpha: true,
        beta: false,
    };
    let vit = Vit::new(&common::tiny_config(AttnKind::ReluSoftmax), space, 1, true).unwrap();
    let objective = alpha_search(ArchOptim {
        lr_scale: 10.0,
        clamp: true,
        target_mu: Some(0.5),
        budget_rate: 0.05,
        commit: Some(Commit {
            from: 0.5,
            strength: 8.0,
        }),
    });
    let mut trainer = Trainer::new(&vit, &objective, 0.0, 0.0).unwrap();
    trainer.set_total_steps(40);
    let mut gaps = Vec::new();
    for _ in 0..40 {
        trainer.step(&x, &y, 3e-3).unwrap();
        let r = vit.relaxed().unwrap();
        gaps.push(search::decision::cut_gap(&r.alpha, 0.5).unwrap());
    }
    let r = vit.relaxed().unwrap();
    let alphas: Vec<f32> = r.alpha.iter().flatten().copied().collect();
    assert_eq!(alphas.len(), 8);
    // Half the heads end at 1 and half at 0: the budget's cut, fully decided.
    assert_eq!(
        alphas.iter().filter(|&&a| a == 1.0).count(),
        4,
        "{alphas:?}"
    );
    assert_eq!(
        alphas.iter().filter(|&&a| a == 0.0).count(),
        4,
        "{alphas:?}"
    );
    // The margin was the loss's before the phase and only widened inside it.
    assert!(gaps[19] < 0.5, "decided before the phase: {gaps:?}");
    assert!(gaps[39] == 1.0, "{gaps:?}");
    // The alphas at the phase's start are kept (for the report and checkpoints).
    let start = trainer.commit_start_alpha.clone().expect("phase started");
    let start_gap = search::decision::cut_gap(&[start], 0.5).unwrap();
    assert!(start_gap < 0.5, "decided before the phase: {start_gap}");
}

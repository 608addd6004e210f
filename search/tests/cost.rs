//! The engine-derived cost model and the search penalty that uses it.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use model::AttnKind::{ReluSoftmax as R, ScaleAttn as A};
use model::SecureParams;
use model::cost::count_forward;
use mpcvit_bench::Link;
use search::cost::{
    COST_FORMAT, CostFile, Evaluator, StageTimes, cost_table, mask_string, parse_mask,
};
use search::export::check_ratio;
use search::train::{ArchOptim, Objective, Trainer};
use search::vit::{SearchSpace, Vit};

#[test]
fn a_whole_scale_attn_block_is_a_block_cost_and_latency_follows_the_counts() {
    let config = common::tiny_config(R);
    // one second per round and no bandwidth limit: rounds dominate everything else
    let slow: Link = "1000,0".parse().unwrap();
    let mut times = StageTimes::in_memory();
    let params = SecureParams::default();
    let mut eval = Evaluator::new(&config, params, 1, &mut times).unwrap();
    let reference = vec![vec![R, R, A, A], vec![R, A, R, A]];
    let cost = eval.evaluate(&reference).unwrap();
    let mut c = config.clone();
    c.attention = reference.clone();
    let counted = count_forward(&c, params).unwrap();
    assert_eq!(cost.count, counted);
    let latency = cost.latency(slow);
    let expected = counted.rounds as f64 + cost.compute_seconds;
    assert!((latency - expected).abs() < 1e-9, "{latency} vs {expected}");
    assert_eq!(cost.latency("none".parse().unwrap()), cost.compute_seconds);

    let table = cost_table(&mut eval, &reference, slow).unwrap();
    assert_eq!(table.head.len(), 2);
    assert!(table.head.iter().all(|r| r.len() == 4));
    for (l, b) in table.block.iter().enumerate() {
        // the fold saves a round: a second, give or take the compute
        assert!((0.5..1.5).contains(b), "block {l}: {b}");
    }
    for row in &table.head {
        for c in row {
            // another head of the block attends: no round differs
            assert!(c.abs() < 0.5, "{c}");
        }
    }
}

#[test]
fn a_mask_of_the_wrong_shape_is_refused() {
    let own = vec![vec![R; 4]; 2];
    assert_eq!(parse_mask("model", &own).unwrap(), own);
    assert_eq!(
        mask_string(&parse_mask("0000,1s10", &own).unwrap()),
        "0000,1s10"
    );
    assert_eq!(parse_mask("scale-attn", &own).unwrap(), vec![vec![A; 4]; 2]);
    for bad in ["0000", "0000,101", "0000,1010,1111"] {
        let e = parse_mask(bad, &own).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("2 blocks of 4 heads"), "{e}");
    }
    let dir = common::temp_dir("mask");
    let file = dir.join("mask.json");
    std::fs::write(&file, r#"{"attention": [["relu_softmax", "scale_attn"]]}"#).unwrap();
    let e = parse_mask(file.to_str().unwrap(), &own)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mask.json"), "{e}");
    let mut times = StageTimes::in_memory();
    let mut eval = Evaluator::new(
        &common::tiny_config(R),
        SecureParams::default(),
        1,
        &mut times,
    )
    .unwrap();
    let e = eval.evaluate(&[vec![R; 3], vec![R; 3]]).unwrap_err();
    assert!(e.to_string().contains("2 blocks × 3 heads"), "{e}");
    common::remove(&dir);
}

#[test]
fn an_impossible_mu_is_refused() {
    assert_eq!(check_ratio("μ", 0.5).unwrap(), 0.5);
    for mu in [1.5, -0.1, f64::NAN] {
        let e = check_ratio("μ", mu).unwrap_err().to_string();
        assert!(e.contains(&format!("{mu}")), "{e}");
    }
}

fn cost_file(head: Vec<Vec<f64>>, block: Vec<f64>) -> CostFile {
    CostFile {
        format: COST_FORMAT.into(),
        link: "wan".into(),
        reference: vec![vec![R; 4]; 2],
        reference_latency_s: 1.0,
        head,
        block,
    }
}

fn read_error(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    let e = CostFile::read(path, 2, 4).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    e
}

#[test]
fn bad_cost_files_name_the_file() {
    let dir = common::temp_dir("cost-file");
    let path = dir.join("costs.json");
    assert!(read_error(&path, "").contains("empty"));
    assert!(read_error(&path, " \n").contains("empty"));
    read_error(&path, "{\"format\": ");
    read_error(&path, "[[1, 2, 3, 4], [1, 2, 3, 4]]");
    let text = |f: &CostFile| serde_json::to_string(f).unwrap();
    let ok = cost_file(vec![vec![0.002; 4]; 2], vec![0.04, 0.0]);
    let e = read_error(
        &path,
        &text(&cost_file(vec![vec![0.002; 4]; 3], vec![0.04; 3])),
    );
    assert!(e.contains("2 blocks of 4 heads"), "{e}");
    let e = read_error(
        &path,
        &text(&cost_file(vec![vec![0.002; 4]; 2], vec![0.04])),
    );
    assert!(e.contains("1 block costs"), "{e}");
    let e = read_error(
        &path,
        &text(&cost_file(vec![vec![-0.002; 4]; 2], vec![0.0; 2])),
    );
    assert!(e.contains("-0.002"), "{e}");
    let e = read_error(
        &path,
        &text(&cost_file(vec![vec![0.0; 4]; 2], vec![0.1; 2])),
    );
    assert!(e.contains("every head cost is 0"), "{e}");
    let mut other = ok.clone();
    other.format = "something-else".into();
    assert!(read_error(&path, &text(&other)).contains("something-else"));
    // what `cost --out` writes reads back; negative noise is written as 0
    let mut noisy = ok.clone();
    noisy.block[1] = -1e-4;
    noisy.write(&path).unwrap();
    let back = CostFile::read(&path, 2, 4).unwrap();
    assert_eq!(back.head, ok.head);
    assert_eq!(back.block, vec![0.04, 0.0]);
    let (h, b) = back.penalty_weights();
    assert_eq!(h, vec![vec![1.0f32; 4]; 2]);
    assert_eq!(b, vec![20.0f32, 0.0]);
    common::remove(&dir);
}

fn search_loss(vit: &Vit, block_cost: Option<Vec<f32>>) -> f32 {
    let objective = Objective::Search {
        lambda_alpha: 1.0,
        lambda_beta: 0.0,
        head_cost: Some(vec![vec![2.0; 4], vec![2.0; 4]]),
        block_cost,
        arch: ArchOptim::default(),
    };
    let trainer = Trainer::new(vit, &objective, 0.0, 0.0).unwrap();
    let x = Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::from_vec(vec![1u32, 3], 2, &Device::Cpu).unwrap();
    trainer.loss(&x, &y).unwrap().0.to_scalar::<f32>().unwrap()
}

#[test]
fn the_block_cost_weighs_the_largest_alpha_of_its_block() {
    let space = SearchSpace {
        alpha: true,
        beta: false,
    };
    let vit = Vit::new(&common::tiny_config(R), space, 1, true).unwrap();
    // alpha starts at 1: the block term is b_l / mean(head cost) per block
    let without = search_loss(&vit, None);
    let with = search_loss(&vit, Some(vec![3.0, 5.0]));
    assert!((with - without - 4.0).abs() < 1e-4, "{with} - {without}");
    let objective = Objective::Search {
        lambda_alpha: 1.0,
        lambda_beta: 0.0,
        head_cost: None,
        block_cost: Some(vec![1.0]),
        arch: ArchOptim::default(),
    };
    let e = Trainer::new(&vit, &objective, 0.0, 0.0).unwrap_err();
    assert!(e.to_string().contains("2 finite non-negative"), "{e}");
}

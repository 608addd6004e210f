//! The secure forward is a fixed function of its seeds: for fixed weight,
//! input and dealer seeds, every shipped model and a small model with every
//! attention kind give the same dealer messages and the same shares of the
//! logits, bit for bit (a 64-bit FNV-1a of each, stored below). A change to the
//! dealer's stream order, to a correlation's encoding or to an operator's
//! arithmetic changes them.

mod common;

use std::path::Path;

use model::secure::{SecureModel, SecureParams, split_input, split_weights};
use model::{GeluKind, Model, ModelConfig};
use mpc_core::local::{deal_plan, record_plan};
use mpc_core::{MaterialGen, MemChannel, Party, Pool, Prg, Seed, Session, Share};

/// 64-bit FNV-1a over the bytes: enough to notice any change.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The fingerprints (dealer messages, logits shares) of one image's secure
/// forward of `model`.
fn fingerprint(model: &Model, params: SecureParams) -> (u64, u64) {
    let fp = params.fp;
    let mut prg = Prg::new(&Seed::for_tests(5));
    let shares = split_weights(model, fp, &mut prg);
    let image: Vec<f32> = (0..model.config().input_len())
        .map(|_| ((prg.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
        .collect();
    let input = split_input(&image, fp, &mut prg);
    let program = |s: &mut Session, p: usize| -> Result<Share, model::ModelError> {
        let m = SecureModel::prepare(s, &shares[p], params)?;
        m.forward(s, &input[p])
    };
    let plan = record_plan(fp, Party::P0, &|s: &mut Session| program(s, 0)).unwrap();
    let (seed0, seed1) = (Seed::for_tests(100), Seed::for_tests(101));
    let mut dealer = mpc_core::Dealer::new(&seed0, &seed1);
    let (msgs0, msgs1) = deal_plan(&mut dealer, &plan).unwrap();
    let dealt = fnv(msgs0.iter().chain(&msgs1).flatten().copied());
    let mut pool0 =
        Pool::preprocess(&mut MaterialGen::new(Party::P0, &seed0), &plan, &msgs0).unwrap();
    let mut pool1 =
        Pool::preprocess(&mut MaterialGen::new(Party::P1, &seed1), &plan, &msgs1).unwrap();
    let (c0, c1) = MemChannel::pair();
    let (l0, l1) = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            let mut ch = c1;
            let mut s = Session::new(Party::P1, fp, &mut ch, &mut pool1);
            program(&mut s, 1).unwrap()
        });
        let mut ch = c0;
        let mut s = Session::new(Party::P0, fp, &mut ch, &mut pool0);
        let l0 = program(&mut s, 0).unwrap();
        (l0, h.join().unwrap())
    });
    let logits = fnv(l0
        .as_slice()
        .iter()
        .chain(l1.as_slice())
        .flat_map(|w| w.to_le_bytes()));
    (dealt, logits)
}

fn small(gelu: GeluKind) -> Model {
    let config = ModelConfig {
        gelu,
        ..common::every_attention_kind()
    };
    Model::random(config, 3).unwrap()
}

#[test]
fn the_secure_forward_is_bit_identical_for_the_same_seeds() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut got = Vec::new();
    for name in [
        "fashion-mnist-mu0",
        "fashion-mnist-mu0.5",
        "fashion-mnist-mu0.5-plus",
        "fashion-mnist-mu1",
        "fashion-mnist-softmax",
    ] {
        let model = Model::load_dir(&models.join(name)).unwrap();
        got.push((
            name.to_string(),
            fingerprint(&model, SecureParams::default()),
        ));
    }
    for gelu in [GeluKind::Erf, GeluKind::Quad] {
        let model = small(gelu);
        got.push((
            format!("small {gelu:?}"),
            fingerprint(&model, SecureParams::default()),
        ));
        let whole = SecureParams {
            fold_ratio: 0,
            ..SecureParams::default()
        };
        got.push((
            format!("small {gelu:?} unfolded"),
            fingerprint(&model, whole),
        ));
    }
    let want: &[(&str, (u64, u64))] = &[
        (
            "fashion-mnist-mu0",
            (0x0b280071cec30976, 0x391483706e775c13),
        ),
        (
            "fashion-mnist-mu0.5",
            (0x6f21f843a896f9ad, 0xf7315dcdb6ff4991),
        ),
        (
            "fashion-mnist-mu0.5-plus",
            (0xb3cfd780e73e48ee, 0x749c2623ca031609),
        ),
        (
            "fashion-mnist-mu1",
            (0x1ccab3018e30f887, 0x00a09c2f9e6d1a2e),
        ),
        (
            "fashion-mnist-softmax",
            (0x9158f4acd98faba1, 0x168df94d6b414077),
        ),
        ("small Erf", (0xa511427210e4d15a, 0xad32251a5622a0b6)),
        (
            "small Erf unfolded",
            (0x6f18ed95902aca1b, 0x61acee267bf842e3),
        ),
        ("small Quad", (0x6cd1b2bc7a1a9b1a, 0x33fc057eb1896289)),
        (
            "small Quad unfolded",
            (0x083463f3480e2f26, 0x6b1efe5c7b285b84),
        ),
    ];
    assert_eq!(got.len(), want.len());
    for ((name, fp), (wname, wfp)) in got.iter().zip(want) {
        assert_eq!(name, wname);
        assert_eq!(
            fp, wfp,
            "{name}: (dealer messages, logits) fingerprints {fp:#018x?}, stored {wfp:#018x?}"
        );
    }
}

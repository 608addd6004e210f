//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use model::{AttnKind, ModelConfig};
use search::data::{DatasetKind, FASHION_MNIST_DIR, Splits};

/// A tiny network on 28×28×1 inputs: patch 7 (16 + 1 tokens), dim 32, 2 blocks, 4 heads.
pub fn tiny_config(kind: AttnKind) -> ModelConfig {
    ModelConfig {
        name: "tiny".into(),
        image_size: 28,
        in_channels: 1,
        patch_size: 7,
        dim: 32,
        depth: 2,
        heads: 4,
        mlp_hidden: 64,
        num_classes: 10,
        layer_norm_eps: 1e-5,
        relu_softmax_eps: 1e-5,
        mean: vec![0.286],
        std: vec![0.353],
        labels: search::data::FASHION_MNIST_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        gelu: model::GeluKind::Erf,
        attention: vec![vec![kind; 4]; 2],
        beta: vec![None; 2],
    }
}

/// Fashion-MNIST as installed by `scripts/setup.sh` (Debian package `dataset-fashion-mnist`),
/// cut to `train` / `test` examples.
pub fn fashion_mnist(train: usize, test: usize) -> Splits {
    let dir = std::env::var_os("FASHION_MNIST_DIR")
        .map_or_else(|| PathBuf::from(FASHION_MNIST_DIR), PathBuf::from);
    let mut s = DatasetKind::FashionMnist.load(&dir, 28, 1).unwrap_or_else(|e| {
        panic!("Fashion-MNIST is needed for this test (run scripts/setup.sh, or set FASHION_MNIST_DIR): {e}")
    });
    s.train = s.train.take(train);
    s.test = s.test.take(test);
    s
}

/// A fresh empty directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mpcvit-search-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

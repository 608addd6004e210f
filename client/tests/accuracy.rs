//! The bundled model under MPC on the first 200 Fashion-MNIST test images,
//! through the real services (dealer and both parties on loopback, gRPC with
//! mutual TLS), against the plaintext model: top-1 agreement ≥ 99.5%, secure
//! accuracy within 1 point of plaintext accuracy, every image's logits within
//! the tolerance. Needs Fashion-MNIST (`bash scripts/setup.sh`); fails, not
//! skips, without it.

use std::sync::Arc;

use mpcvit_client::accuracy::{AccuracyOptions, LOGIT_TOLERANCE, evaluate_local};
use mpcvit_client::fashion_mnist::{FASHION_MNIST_DIR, TestSplit};

const IMAGES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_accuracy_matches_plaintext_on_200_test_images() {
    let data = TestSplit::load_default().unwrap_or_else(|e| {
        panic!(
            "this test needs the Fashion-MNIST test split in {FASHION_MNIST_DIR}: {e}\n\
             install it with: bash scripts/setup.sh (as root)"
        )
    });
    assert_eq!(data.len(), 10_000, "the Fashion-MNIST test split");
    let model = Arc::new(mpcvit_client::bundled_model().unwrap());
    let opts = AccuracyOptions {
        images: IMAGES,
        clients: 4,
        progress: false,
    };
    let report = evaluate_local(model, Arc::new(data), &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", report.markdown());

    assert_eq!(report.images(), IMAGES);
    assert!(
        report.results.iter().enumerate().all(|(i, r)| r.index == i),
        "one result per image, in order"
    );
    let beyond = report.beyond_tolerance();
    assert!(
        beyond.is_empty(),
        "{} images with logits further than {LOGIT_TOLERANCE} from the plaintext ones: {beyond:?}",
        beyond.len()
    );
    assert!(
        report.agreement() >= 0.995,
        "top-1 agreement {:.2}% < 99.5%; disagreements: {:?}",
        100.0 * report.agreement(),
        report.disagreements()
    );
    let gap = (report.secure_accuracy() - report.plain_accuracy()).abs();
    assert!(
        gap <= 0.01,
        "secure accuracy {:.2}% vs plaintext {:.2}%",
        100.0 * report.secure_accuracy(),
        100.0 * report.plain_accuracy()
    );
    // The images really are Fashion-MNIST read the way the model was trained
    // on them (the bundled model reaches 90.94% on the whole split).
    assert!(
        report.plain_accuracy() >= 0.85,
        "plaintext accuracy {:.2}% on the first {IMAGES} images",
        100.0 * report.plain_accuracy()
    );
}

//! `mpcvit-client infer` in local mode (dealer and both parties started in
//! the client's process on loopback): one image with `--json`, then a
//! folder; the labels match the plaintext model's top-1.

use std::path::Path;
use std::process::Command;

const CLIENT: &str = env!("CARGO_BIN_EXE_mpcvit-client");

fn png(path: &Path, side: u32, seed: u32) {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        let v = (x * 31 + y * 17 + seed * 101).wrapping_mul(2_654_435_761);
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    img.save(path).unwrap();
}

fn plain_top1(path: &Path) -> usize {
    let model = mpcvit_server::cli::random_model("small", 1).unwrap();
    let input = model::preprocess(model.config(), &std::fs::read(path).unwrap()).unwrap();
    let logits = model.forward(&input).unwrap();
    (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b })
}

#[test]
fn local_mode_one_image_and_a_folder() {
    let dir = std::env::temp_dir().join(format!("mpcvit-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..3 {
        png(&dir.join(format!("img{i}.png")), 16 + 8 * i, i);
    }
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();

    let out = Command::new(CLIENT)
        .arg("infer")
        .arg(dir.join("img0.png"))
        .args(["--preset", "small", "--json", "--top", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["top"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["top"][0]["class"].as_u64().unwrap() as usize,
        plain_top1(&dir.join("img0.png"))
    );
    assert!(v["parties"][0]["rounds"].as_u64().unwrap() > 10);
    assert!(String::from_utf8_lossy(&out.stderr).contains("local mode"));

    let out = Command::new(CLIENT)
        .arg("infer")
        .arg(&dir)
        .args(["--preset", "small", "--json", "--concurrency", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, v) in lines.iter().enumerate() {
        let path = dir.join(format!("img{i}.png"));
        assert_eq!(v["image"].as_str().unwrap(), path.display().to_string());
        assert_eq!(
            v["top"][0]["class"].as_u64().unwrap() as usize,
            plain_top1(&path)
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("images/s"));

    // An undecodable image: a clear error and a failure exit.
    std::fs::write(dir.join("bad.png"), "not a png").unwrap();
    let out = Command::new(CLIENT)
        .arg("infer")
        .arg(dir.join("bad.png"))
        .args(["--preset", "small"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mpcvit-client:") && err.to_lowercase().contains("image"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's main job: the bundled model, no flags, on the shipped
/// samples. The secure labels equal the plaintext model's, which are right.
#[test]
fn bundled_model_classifies_the_shipped_samples() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let model = mpcvit_client::bundled_model().unwrap();
    assert_eq!(model.config().name, mpcvit_client::BUNDLED_MODEL);
    let out = Command::new(CLIENT)
        .arg("infer")
        .arg(&samples)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("bundled, trained on Fashion-MNIST"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "one answer per sample image");
    for v in &lines {
        let path = v["image"].as_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let logits = model
            .forward(&model::preprocess(model.config(), &bytes).unwrap())
            .unwrap();
        let plain = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
        assert_eq!(
            v["top"][0]["class"].as_u64().unwrap() as usize,
            plain,
            "{path}"
        );
        // The file name carries the test set's label, e.g. `...-0-ankle-boot.png`.
        let label = model.config().labels[plain]
            .to_lowercase()
            .replace(['/', ' '], "-");
        assert!(
            path.ends_with(&format!("-{label}.png")),
            "{path}: classified as {}",
            model.config().labels[plain]
        );
    }
}

/// A party that accepts connections but never answers (a stalled or
/// overloaded server): the client stops at its `--timeout` with an error
/// that says so, instead of hanging.
#[test]
fn timeout_bounds_a_party_that_never_answers() {
    let dir = std::env::temp_dir().join(format!("mpcvit-cli-timeout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    mpcvit_server::tls::CertBundle::generate()
        .unwrap()
        .write_dir(&dir.join("certs"))
        .unwrap();
    png(&dir.join("img.png"), 16, 1);
    // Accepts, reads nothing, answers nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let t = std::time::Instant::now();
    let out = Command::new(CLIENT)
        .arg("infer")
        .arg(dir.join("img.png"))
        .args(["--party0", &addr, "--party1", &addr, "--timeout", "2"])
        .arg("--certs")
        .arg(dir.join("certs"))
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    assert!(err.contains("no answer within 2s"), "{err}");
    assert!(err.contains("--timeout"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

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

/// A fresh directory for a test.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mpcvit-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `--json` on a folder writes each result as one flushed line when it is
/// ready, so a run that stops keeps what it finished: the folder's last
/// "image" is a FIFO that nobody writes yet, so the client waits on it
/// while the test reads the first two results; then the image arrives and
/// the third result follows.
#[cfg(unix)]
#[test]
fn json_results_stream_while_the_folder_is_still_running() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = fresh_dir("stream");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    png(&images.join("a.png"), 16, 1);
    png(&images.join("b.png"), 16, 2);
    let fifo = images.join("c.png");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(CLIENT)
        .arg("infer")
        .arg(&images)
        .args(["--preset", "small", "--json", "--concurrency", "1"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Not a timed assertion: the bound only keeps a failing test from
    // hanging (without streaming, nothing comes until the FIFO is written).
    let line = |what: &str| {
        rx.recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("no JSON line for {what} while the folder runs"))
    };
    for name in ["a.png", "b.png"] {
        let v: serde_json::Value = serde_json::from_str(&line(name)).unwrap();
        assert!(v["image"].as_str().unwrap().ends_with(name), "{v}");
        assert_eq!(
            v["top"][0]["class"].as_u64().unwrap() as usize,
            plain_top1(&images.join(name))
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the client is still waiting for the third image"
    );
    let third = dir.join("third.png");
    png(&third, 16, 3);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(&std::fs::read(&third).unwrap())
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line("c.png")).unwrap();
    assert!(v["image"].as_str().unwrap().ends_with("c.png"), "{v}");
    assert_eq!(
        v["top"][0]["class"].as_u64().unwrap() as usize,
        plain_top1(&third)
    );
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.join("stderr")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stdout closed under the client (`... | head -0`): it stops quietly with
/// status 141, without a panic or a backtrace.
#[test]
fn a_closed_stdout_ends_the_client_quietly() {
    use std::process::Stdio;

    let dir = fresh_dir("closed");
    png(&dir.join("a.png"), 16, 1);
    png(&dir.join("b.png"), 16, 2);
    let mut child = Command::new(CLIENT)
        .arg("infer")
        .arg(&dir)
        .args(["--preset", "small", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody will read: the first result meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    for noise in ["panicked", "Broken pipe", "backtrace"] {
        assert!(!err.contains(noise), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

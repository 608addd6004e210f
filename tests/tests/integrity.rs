//! Shares at rest (three processes on loopback, as in `processes.rs`): a
//! party refuses to start on a share file that does not match its split's
//! record (`split.json`): a flipped byte, a truncated file, a directory
//! without a record (until `mpcvit-server stamp` records it); and the two
//! parties refuse to pair with halves of different splits, each naming
//! both splits' identifiers.

use std::process::Command;
use std::time::{Duration, Instant};

use mpcvit_e2e::deploy::{Deployment, exits_within, run, server_bin};

/// A party refusing its share stops within this (it reads and digests the
/// share before anything else; generous for a busy 2-core machine).
const REFUSED_WITHIN: Duration = Duration::from_secs(30);

/// Start party 1 on its directory as it is, and return its exit status
/// and its log, once it stopped.
fn party1_refuses(d: &Deployment) -> String {
    let mut p1 = d.party(1, &[]);
    let status = exits_within(&mut p1, REFUSED_WITHIN);
    assert!(!status.success(), "party 1 started on a bad share");
    d.logs("party1")
}

/// The split identifier recorded in `dir/split.json`.
fn split_id(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("split.json")).unwrap();
    let at = text.find("\"split_id\"").expect("a split_id entry");
    let rest = &text[at + "\"split_id\"".len()..];
    let start = rest.find('"').unwrap() + 1;
    rest[start..start + 32].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_truncated_and_unrecorded_shares_are_refused_by_name() {
    let d = Deployment::new("integrity");
    let dir = d.dir.join("model/party1");
    let share = dir.join("share-1.safetensors");
    let intact = std::fs::read(&share).unwrap();
    let header = 8 + u64::from_le_bytes(intact[..8].try_into().unwrap()) as usize;

    // One flipped bit inside a tensor (past the header): refused, naming
    // the file, instead of serving wrong answers.
    let mut flipped = intact.clone();
    let at = header + (intact.len() - header) / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&share, &flipped).unwrap();
    let log = party1_refuses(&d);
    assert!(
        log.contains(&share.display().to_string()) && log.contains("is damaged"),
        "{log}"
    );
    assert!(log.contains("SHA-256"), "{log}");

    // Truncated: the size says so, in words (not the safetensors crate's
    // error names).
    std::fs::write(&share, &intact[..intact.len() / 3]).unwrap();
    let log = party1_refuses(&d);
    assert!(log.contains("truncated"), "{log}");
    assert!(
        !log.contains("MetadataIncompleteBuffer") && !log.contains("HeaderTooSmall"),
        "{log}"
    );

    // Shares without a record (split before records existed): the message
    // says how to re-split or stamp them; `stamp` records them and the
    // party starts.
    std::fs::write(&share, &intact).unwrap();
    for p in 0..2 {
        std::fs::remove_file(d.dir.join(format!("model/party{p}/split.json"))).unwrap();
    }
    let log = party1_refuses(&d);
    assert!(
        log.contains("no split.json") && log.contains("mpcvit-server stamp --dir"),
        "{log}"
    );
    run(Command::new(server_bin())
        .args(["stamp", "--dir"])
        .arg(d.dir.join("model")));
    assert_eq!(
        split_id(&d.dir.join("model/party0")),
        split_id(&dir),
        "one split, one identifier"
    );
    let mut p1 = d.party(1, &[]);
    d.wait_health(2, "", true).await;
    assert!(p1.running(), "party 1 refused its stamped share");
    assert!(
        d.logs("party1")
            .contains("share checked against its split record"),
        "{}",
        d.logs("party1")
    );
}

/// Party 0 with the share of one split, party 1 with the share of another
/// split of the same model (the same manifest and plans): before, they
/// paired and served wrong answers. Party 1 refuses the pairing, and both
/// logs name both identifiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_of_different_splits_refuse_to_pair_naming_both() {
    let d = Deployment::new("mixed-splits");
    let other = d.dir.join("model-b");
    run(Command::new(server_bin())
        .args(["split", "--random", "small", "--seed", "1", "--per-party"])
        .arg("--out")
        .arg(&other));
    // Party 1 gets its directory of the other split.
    for f in ["manifest.json", "share-1.safetensors", "split.json"] {
        std::fs::copy(
            other.join("party1").join(f),
            d.dir.join("model/party1").join(f),
        )
        .unwrap();
    }
    let (a, b) = (
        split_id(&d.dir.join("model/party0")),
        split_id(&d.dir.join("model/party1")),
    );
    assert_ne!(a, b);
    let _dealer = d.dealer();
    let _p1 = d.party(1, &[]);
    let _p0 = d.party(0, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (l0, l1) = (d.logs("party0"), d.logs("party1"));
        let names_both =
            |l: &str| l.contains(&a) && l.contains(&b) && l.contains("different splits");
        if names_both(&l0) && names_both(&l1) {
            assert!(!l0.contains("paired with party 1"), "{l0}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both parties must name both splits: party 0: {l0}\nparty 1: {l1}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Neither is ready.
    assert!(!d.healthy(1, "mpcvit.v1.Inference"));
    assert!(!d.healthy(2, "mpcvit.v1.Inference"));
}

//! The weight share file: one party's additive share of every weight, written
//! by the model owner's `mpcvit-server split` and read by that party's server.
//!
//! Format: `model::secure::SHARE_FORMAT` (safetensors of `U64` ring
//! elements with the public manifest in the metadata).
//!
//! Each file alone is uniformly random: party 0's file is the ChaCha stream
//! of a fresh seed, party 1's is the encoded weights minus it.
//!
//! Beside the files, `split` writes their record ([`crate::stamp`]): the
//! split's identifier and each file's size and SHA-256, which a party checks
//! its share against before it parses it ([`load`]); [`stamp_dir`] writes
//! the record for shares split without one.

use std::path::{Path, PathBuf};

use mpc_core::{FixedPoint, Party, Prg, Seed};
use zeroize::Zeroizing;

use crate::error::ServerError;
use crate::files::write_file;
use crate::stamp::{self, SplitId, SplitRecord};
use model::secure::{WeightShares, split_weights};

/// File name of party `p`'s share inside a model directory.
pub fn share_file_name(party: Party) -> String {
    format!("share-{}.safetensors", party.index())
}

/// Split a plaintext model into the two parties' share files (the model
/// owner's step). Returns the two files' bytes (wiped when dropped).
pub fn split_model(
    model: &model::Model,
    fp: FixedPoint,
) -> Result<[Zeroizing<Vec<u8>>; 2], ServerError> {
    let mut prg = Prg::new(&Seed::random());
    let [s0, s1] = split_weights(model, fp, &mut prg);
    Ok([
        Zeroizing::new(to_safetensors(&s0, Party::P0)?),
        Zeroizing::new(to_safetensors(&s1, Party::P1)?),
    ])
}

/// Write `dir/manifest.json` (public) and `dir/share-{0,1}.safetensors`
/// (each created with mode 0600: readable by its owner only), then their
/// record `dir/split.json` ([`crate::stamp`]). Returns the split's identifier.
pub fn split_to_dir(
    model: &model::Model,
    fp: FixedPoint,
    dir: &Path,
) -> Result<SplitId, ServerError> {
    std::fs::create_dir_all(dir).map_err(|e| ServerError::io("creating", dir, e))?;
    let manifest = model.config().to_manifest_json()?;
    let path = dir.join(model::config::MANIFEST_FILE);
    write_file(&path, manifest.as_bytes(), false)?;
    let [b0, b1] = split_model(model, fp)?;
    let (n0, n1) = (share_file_name(Party::P0), share_file_name(Party::P1));
    for (name, bytes) in [(&n0, &b0), (&n1, &b1)] {
        write_file(&dir.join(name), bytes, true)?;
    }
    let id = SplitId::random();
    let files: [(&str, &[u8]); 3] = [
        (model::config::MANIFEST_FILE, manifest.as_bytes()),
        (&n0, &b0),
        (&n1, &b1),
    ];
    SplitRecord::new(id, &model.config().name, &files).write(dir)?;
    Ok(id)
}

/// Party `p`'s directory under a `split --per-party` output: `dir/party<p>`.
pub fn party_dir(dir: &Path, party: Party) -> std::path::PathBuf {
    dir.join(format!("party{}", party.index()))
}

/// [`split_to_dir`], one directory per party: `dir/party0/{manifest.json,
/// share-0.safetensors, split.json}` and `dir/party1/{manifest.json,
/// share-1.safetensors, split.json}` (each record lists its own directory's
/// files; both name the same split).
pub fn split_to_party_dirs(
    model: &model::Model,
    fp: FixedPoint,
    dir: &Path,
) -> Result<SplitId, ServerError> {
    let manifest = model.config().to_manifest_json()?;
    let shares = split_model(model, fp)?;
    let id = SplitId::random();
    for (party, bytes) in [Party::P0, Party::P1].into_iter().zip(shares) {
        let sub = party_dir(dir, party);
        std::fs::create_dir_all(&sub).map_err(|e| ServerError::io("creating", &sub, e))?;
        let path = sub.join(model::config::MANIFEST_FILE);
        write_file(&path, manifest.as_bytes(), false)?;
        let name = share_file_name(party);
        write_file(&sub.join(&name), &bytes, true)?;
        let files: [(&str, &[u8]); 2] = [
            (model::config::MANIFEST_FILE, manifest.as_bytes()),
            (&name, &bytes),
        ];
        SplitRecord::new(id, &model.config().name, &files).write(&sub)?;
    }
    Ok(id)
}

/// Where the two halves of one split lie under `dir`: `dir/share-{0,1}.safetensors`,
/// or `dir/party0/share-0.safetensors` and `dir/party1/share-1.safetensors`
/// (`split --per-party`); `None` if neither layout is complete.
pub fn halves(dir: &Path) -> Option<[PathBuf; 2]> {
    let together = [Party::P0, Party::P1].map(|p| dir.join(share_file_name(p)));
    let apart = [Party::P0, Party::P1].map(|p| party_dir(dir, p).join(share_file_name(p)));
    [together, apart]
        .into_iter()
        .find(|files| files.iter().all(|f| f.is_file()))
}

/// Record shares split without a record: read both halves under `dir`
/// ([`halves`]), check that each is a share of its party and that both
/// hold the same manifest and fixed point, and write `split.json` beside
/// each (a fresh split identifier, the size and SHA-256 of each file).
/// Refuses if a record exists (remove it to stamp again). The record says
/// what the files are now: stamp only shares known to be intact halves of
/// one split.
pub fn stamp_dir(dir: &Path) -> Result<SplitId, ServerError> {
    let files = halves(dir).ok_or_else(|| {
        ServerError::Config(format!(
            "{0} holds neither share-0.safetensors and share-1.safetensors nor party0/share-0.safetensors and \
             party1/share-1.safetensors: stamp needs both halves of one split",
            dir.display()
        ))
    })?;
    for f in &files {
        let record = stamp::parent_dir(f).join(stamp::STAMP_FILE);
        if record.exists() {
            return Err(ServerError::Config(format!(
                "{} exists: these shares are stamped already (remove it to stamp them again)",
                record.display()
            )));
        }
    }
    let mut read = Vec::new();
    for (party, f) in [Party::P0, Party::P1].into_iter().zip(&files) {
        let bytes = Zeroizing::new(std::fs::read(f).map_err(|e| ServerError::io("reading", f, e))?);
        let loaded = parse(f, &bytes)?;
        if loaded.party != party {
            return Err(ServerError::WrongParty {
                path: f.clone(),
                file: loaded.party,
                this: party,
            });
        }
        read.push((bytes, loaded));
    }
    let (s0, s1) = (&read[0].1.shares, &read[1].1.shares);
    if s0.config() != s1.config() || s0.frac_bits() != s1.frac_bits() {
        return Err(ServerError::Config(format!(
            "{} and {} hold different models or fixed points: not halves of one split",
            files[0].display(),
            files[1].display()
        )));
    }
    let id = SplitId::random();
    let model = s0.config().name.clone();
    let mut dirs: Vec<PathBuf> = files.iter().map(|f| stamp::parent_dir(f)).collect();
    dirs.dedup();
    let names = [Party::P0, Party::P1].map(share_file_name);
    for sub in dirs {
        let manifest_path = sub.join(model::config::MANIFEST_FILE);
        let manifest = if manifest_path.is_file() {
            Some(
                std::fs::read(&manifest_path)
                    .map_err(|e| ServerError::io("reading", &manifest_path, e))?,
            )
        } else {
            None
        };
        let mut listed: Vec<(&str, &[u8])> = Vec::new();
        if let Some(m) = &manifest {
            listed.push((model::config::MANIFEST_FILE, m));
        }
        for ((f, (bytes, _)), name) in files.iter().zip(&read).zip(&names) {
            if stamp::parent_dir(f) == sub {
                listed.push((name, bytes));
            }
        }
        SplitRecord::new(id, &model, &listed).write(&sub)?;
    }
    Ok(id)
}

/// What a party loaded: its share and which party it belongs to.
#[derive(Debug)]
pub struct LoadedShare {
    /// The share (opaque `Debug`).
    pub shares: WeightShares,
    /// The party the file was written for.
    pub party: Party,
}

/// Read a share file, checked against its split's record
/// ([`stamp::check_share`]) before it is parsed: a damaged, truncated or
/// unrecorded file is refused, naming it. Returns the share and its split.
pub fn load(path: &Path) -> Result<(LoadedShare, SplitId), ServerError> {
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| ServerError::io("reading", path, e))?);
    let split = stamp::check_share(path, &bytes)?;
    Ok((parse(path, &bytes)?, split))
}

/// Parse a share file's bytes, naming `path` in errors.
fn parse(path: &Path, bytes: &[u8]) -> Result<LoadedShare, ServerError> {
    from_safetensors(bytes).map_err(|e| match e {
        ServerError::ShareFile { source, .. } => ServerError::ShareFile {
            path: Some(path.to_path_buf()),
            source,
        },
        other => other,
    })
}

/// One party's share as safetensors bytes (format: `model::secure::SHARE_FORMAT`).
pub fn to_safetensors(s: &WeightShares, party: Party) -> Result<Vec<u8>, ServerError> {
    Ok(s.to_safetensors(party)?)
}

/// Parse one party's share, checking every tensor against the manifest.
pub fn from_safetensors(bytes: &[u8]) -> Result<LoadedShare, ServerError> {
    let (shares, party) = WeightShares::from_safetensors(bytes)
        .map_err(|source| ServerError::ShareFile { path: None, source })?;
    Ok(LoadedShare { shares, party })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Model, ModelConfig};

    fn tiny() -> ModelConfig {
        let mut c = ModelConfig {
            name: "tiny".into(),
            image_size: 8,
            patch_size: 4,
            dim: 8,
            depth: 2,
            heads: 2,
            mlp_hidden: 16,
            ..ModelConfig::vit_7_4_32()
        };
        c.attention = vec![vec![model::AttnKind::ReluSoftmax; 2]; 2];
        let n = c.num_tokens();
        c.beta = vec![None, Some((0..n).map(|t| t != 1).collect())];
        c
    }

    #[test]
    fn roundtrip_and_parties() {
        let m = Model::random(tiny(), 1).unwrap();
        let fp = FixedPoint::default();
        let [b0, b1] = split_model(&m, fp).unwrap();
        let l0 = from_safetensors(&b0).unwrap();
        let l1 = from_safetensors(&b1).unwrap();
        assert_eq!((l0.party, l1.party), (Party::P0, Party::P1));
        assert_eq!(l0.shares.config(), m.config());
        // Re-encoding gives the same bytes.
        assert_eq!(
            to_safetensors(&l1.shares, Party::P1).unwrap().len(),
            b1.len()
        );
        // Debug never shows values.
        let dbg = format!("{:?}", l0.shares);
        assert!(dbg.contains("secret"));
    }

    /// Share files are created readable by their owner only; the public
    /// manifest is not.
    #[cfg(unix)]
    #[test]
    fn share_files_are_written_0600() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let m = Model::random(tiny(), 1).unwrap();
        let dir = std::env::temp_dir().join(format!("mpcvit-split-{}", std::process::id()));
        split_to_dir(&m, FixedPoint::default(), &dir).unwrap();
        split_to_party_dirs(&m, FixedPoint::default(), &dir).unwrap();
        for party in [Party::P0, Party::P1] {
            for share in [
                dir.join(share_file_name(party)),
                party_dir(&dir, party).join(share_file_name(party)),
            ] {
                assert_eq!(mode(&share), 0o600, "{}", share.display());
                assert_eq!(load(&share).unwrap().0.party, party);
            }
        }
        let manifest = dir.join(model::config::MANIFEST_FILE);
        assert_ne!(mode(&manifest) & 0o044, 0, "the manifest is public");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `split` records its files (one identifier for both halves, each
    /// party's record in its own directory); `stamp` records shares left
    /// without a record, and refuses recorded ones.
    #[test]
    fn split_records_its_files_and_stamp_records_unrecorded_shares() {
        let m = Model::random(tiny(), 1).unwrap();
        let dir = std::env::temp_dir().join(format!("mpcvit-stamp-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fp = FixedPoint::default();
        let share = |p: Party| party_dir(&dir, p).join(share_file_name(p));
        let id = split_to_party_dirs(&m, fp, &dir).unwrap();
        for p in [Party::P0, Party::P1] {
            assert_eq!(load(&share(p)).unwrap().1, id);
        }
        assert_ne!(
            split_to_party_dirs(&m, fp, &dir).unwrap(),
            id,
            "a new split"
        );
        let e = stamp_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("stamped already"), "{e}");
        for p in [Party::P0, Party::P1] {
            std::fs::remove_file(party_dir(&dir, p).join(stamp::STAMP_FILE)).unwrap();
        }
        let e = load(&share(Party::P1)).unwrap_err().to_string();
        assert!(
            e.contains("no split.json") && e.contains("stamp --dir"),
            "{e}"
        );
        let stamped = stamp_dir(&dir).unwrap();
        for p in [Party::P0, Party::P1] {
            assert_eq!(load(&share(p)).unwrap().1, stamped);
        }
        std::fs::remove_file(share(Party::P0)).unwrap();
        let e = stamp_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("both halves"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A share file cut short is described in words, whatever the cut.
    #[test]
    fn truncated_share_files_are_described_in_words() {
        let m = Model::random(tiny(), 1).unwrap();
        let [b0, _] = split_model(&m, FixedPoint::default()).unwrap();
        for cut in [0, 4, 100, b0.len() / 2, b0.len() - 1] {
            let e = from_safetensors(&b0[..cut]).unwrap_err().to_string();
            assert!(e.contains("truncated"), "{cut} bytes: {e}");
            for raw in [
                "MetadataIncompleteBuffer",
                "HeaderTooSmall",
                "InvalidHeaderLength",
            ] {
                assert!(!e.contains(raw), "{cut} bytes: {e}");
            }
            assert!(!e.contains("secure forward"), "{cut} bytes: {e}");
        }
    }

    #[test]
    fn wrong_files_are_clear_errors() {
        assert!(matches!(
            from_safetensors(b"not a file"),
            Err(ServerError::ShareFile { .. })
        ));
        let m = Model::random(tiny(), 1).unwrap();
        let plain = m.to_safetensors().unwrap();
        let err = from_safetensors(&plain).unwrap_err().to_string();
        assert!(err.contains("format"), "{err}");
    }
}

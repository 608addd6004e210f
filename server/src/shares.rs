//! The weight share file: one party's additive share of every weight, written
//! by the model owner's `mpcvit-server split` and read by that party's server.
//!
//! Format: `model::secure::SHARE_FORMAT` (safetensors of `U64` ring
//! elements with the public manifest in the metadata).
//!
//! Each file alone is uniformly random: party 0's file is the ChaCha stream
//! of a fresh seed, party 1's is the encoded weights minus it.

use std::path::Path;

use mpc_core::{FixedPoint, Party, Prg, Seed};
use zeroize::Zeroizing;

use crate::error::ServerError;
use crate::files::write_file;
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
/// (each created with mode 0600: readable by its owner only).
pub fn split_to_dir(model: &model::Model, fp: FixedPoint, dir: &Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(dir).map_err(|e| ServerError::io("creating", dir, e))?;
    let manifest = model.config().to_manifest_json()?;
    let path = dir.join(model::config::MANIFEST_FILE);
    write_file(&path, manifest.as_bytes(), false)?;
    let [b0, b1] = split_model(model, fp)?;
    for (party, bytes) in [(Party::P0, b0), (Party::P1, b1)] {
        write_file(&dir.join(share_file_name(party)), &bytes, true)?;
    }
    Ok(())
}

/// Party `p`'s directory under a `split --per-party` output: `dir/party<p>`.
pub fn party_dir(dir: &Path, party: Party) -> std::path::PathBuf {
    dir.join(format!("party{}", party.index()))
}

/// [`split_to_dir`], one directory per party: `dir/party0/{manifest.json,
/// share-0.safetensors}` and `dir/party1/{manifest.json, share-1.safetensors}`.
pub fn split_to_party_dirs(
    model: &model::Model,
    fp: FixedPoint,
    dir: &Path,
) -> Result<(), ServerError> {
    let manifest = model.config().to_manifest_json()?;
    let shares = split_model(model, fp)?;
    for (party, bytes) in [Party::P0, Party::P1].into_iter().zip(shares) {
        let sub = party_dir(dir, party);
        std::fs::create_dir_all(&sub).map_err(|e| ServerError::io("creating", &sub, e))?;
        let path = sub.join(model::config::MANIFEST_FILE);
        write_file(&path, manifest.as_bytes(), false)?;
        write_file(&sub.join(share_file_name(party)), &bytes, true)?;
    }
    Ok(())
}

/// What a party loaded: its share and which party it belongs to.
#[derive(Debug)]
pub struct LoadedShare {
    /// The share (opaque `Debug`).
    pub shares: WeightShares,
    /// The party the file was written for.
    pub party: Party,
}

/// Read a share file.
pub fn load(path: &Path) -> Result<LoadedShare, ServerError> {
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| ServerError::io("reading", path, e))?);
    from_safetensors(&bytes).map_err(|e| match e {
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
                assert_eq!(load(&share).unwrap().party, party);
            }
        }
        let manifest = dir.join(model::config::MANIFEST_FILE);
        assert_ne!(mode(&manifest) & 0o044, 0, "the manifest is public");
        std::fs::remove_dir_all(&dir).unwrap();
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

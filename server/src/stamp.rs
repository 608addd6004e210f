//! The record of a split (`split.json`, beside the share files): the split's
//! identifier, and the size and SHA-256 of each file `split` wrote there
//! (the share files and `manifest.json`). `mpcvit-server split` writes it
//! last, after the files it describes; `mpcvit-server stamp` writes it for
//! shares split without one.
//!
//! A party checks its share file against the record before it parses it
//! ([`check_share`]): a file of another size is truncated or extended, one
//! of another digest is damaged or belongs to another split, and the party
//! refuses to start, naming the file. The identifier travels in the pair
//! header, and party 1 refuses to pair with a party 0 whose share comes
//! from another split ([`crate::admission::same_split`]).
//!
//! This guards against disks, copies and mix-ups, not against a party: the
//! record is no signature, and a party that rewrites its share and its
//! record alike is outside the semi-honest model the protocol assumes.
//!
//! Format (JSON): `format` ([`STAMP_FORMAT`]), `version` ([`STAMP_VERSION`]),
//! `split_id` (32 hex digits), `model` (its name), and `files`: for each
//! file name, `bytes` and `sha256` (64 hex digits).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ServerError;
use crate::files::write_file;
use crate::hex;

/// The record's file name, in the directory of the files it describes.
pub const STAMP_FILE: &str = "split.json";
/// `format` of a split record.
pub const STAMP_FORMAT: &str = "mpcvit-split";
/// `version` of the split record this build reads and writes.
pub const STAMP_VERSION: u32 = 1;

/// The identifier of one split: 16 random bytes, the same in both parties'
/// records. Shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitId(pub [u8; 16]);

impl SplitId {
    /// A fresh identifier.
    pub fn random() -> Self {
        let bytes = mpc_core::Seed::random().to_bytes();
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[..16]);
        SplitId(id)
    }

    /// Parse 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(SplitId(id))
    }
}

impl fmt::Display for SplitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for SplitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SplitId({self})")
    }
}

/// Size and SHA-256 of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Its length in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, 64 hex digits.
    pub sha256: String,
}

impl FileDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        FileDigest {
            bytes: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
        }
    }
}

/// The record of a split, as stored in [`STAMP_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// [`STAMP_FORMAT`].
    pub format: String,
    /// [`STAMP_VERSION`].
    pub version: u32,
    /// The split's identifier, 32 hex digits.
    pub split_id: String,
    /// The model's name.
    pub model: String,
    /// The files of the directory, by name.
    pub files: BTreeMap<String, FileDigest>,
}

impl SplitRecord {
    /// A record of `files` (name, bytes) of split `id` of model `model`.
    pub fn new(id: SplitId, model: &str, files: &[(&str, &[u8])]) -> Self {
        SplitRecord {
            format: STAMP_FORMAT.into(),
            version: STAMP_VERSION,
            split_id: id.to_string(),
            model: model.into(),
            files: files
                .iter()
                .map(|(name, bytes)| (name.to_string(), FileDigest::of(bytes)))
                .collect(),
        }
    }

    /// Write the record into `dir` (after the files it describes).
    pub fn write(&self, dir: &Path) -> Result<(), ServerError> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| stamp_error(&dir.join(STAMP_FILE), e.to_string()))?;
        write_file(&dir.join(STAMP_FILE), (json + "\n").as_bytes(), false)
    }

    /// Read the record of `dir`: [`ServerError::Unstamped`] if there is none.
    pub fn read(dir: &Path) -> Result<Self, ServerError> {
        let path = dir.join(STAMP_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ServerError::Unstamped {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(ServerError::io("reading", &path, e)),
        };
        let r: SplitRecord = serde_json::from_str(&text)
            .map_err(|e| stamp_error(&path, format!("not a split record ({e}): damaged?")))?;
        if r.format != STAMP_FORMAT || r.version != STAMP_VERSION {
            return Err(stamp_error(
                &path,
                format!(
                    "format {:?} version {}, this build reads {STAMP_FORMAT:?} version {STAMP_VERSION}",
                    r.format, r.version
                ),
            ));
        }
        r.id(&path)?;
        Ok(r)
    }

    /// The split's identifier (`path`: the record's file, for the error).
    fn id(&self, path: &Path) -> Result<SplitId, ServerError> {
        SplitId::from_hex(&self.split_id).ok_or_else(|| {
            stamp_error(
                path,
                format!("split_id {:?} is not 32 hex digits", self.split_id),
            )
        })
    }

    /// Check file `name` of `dir` with contents `bytes` against the record.
    fn check(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ServerError> {
        let path = dir.join(name);
        let Some(want) = self.files.get(name) else {
            return Err(stamp_error(
                &dir.join(STAMP_FILE),
                format!(
                    "it has no entry for {name}: it belongs to other files (split the model again, or stamp these)"
                ),
            ));
        };
        let got = FileDigest::of(bytes);
        let problem = if got.bytes < want.bytes {
            format!(
                "truncated: {} of the {} bytes split wrote",
                got.bytes, want.bytes
            )
        } else if got.bytes > want.bytes {
            format!(
                "{} bytes, {} more than split wrote",
                got.bytes,
                got.bytes - want.bytes
            )
        } else if got.sha256 != want.sha256 {
            format!(
                "its SHA-256 differs from the one in {STAMP_FILE}: a changed byte, or a file of another split"
            )
        } else {
            return Ok(());
        };
        Err(ServerError::Damaged { path, problem })
    }
}

fn stamp_error(path: &Path, problem: String) -> ServerError {
    ServerError::Stamp {
        path: path.to_path_buf(),
        problem,
    }
}

/// Check a share file read from `path` against the record in its
/// directory, and `manifest.json` there too when the record lists it and
/// the file is present. Returns the split's identifier.
pub fn check_share(path: &Path, bytes: &[u8]) -> Result<SplitId, ServerError> {
    let dir = parent_dir(path);
    let record = SplitRecord::read(&dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ServerError::Config(format!("{}: not a file name", path.display())))?;
    record.check(&dir, name, bytes)?;
    let manifest = model::config::MANIFEST_FILE;
    if record.files.contains_key(manifest) {
        let mpath = dir.join(manifest);
        match std::fs::read(&mpath) {
            Ok(m) => record.check(&dir, manifest, &m)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServerError::io("reading", &mpath, e)),
        }
    }
    record.id(&dir.join(STAMP_FILE))
}

/// The directory of `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ids_round_trip_as_hex() {
        let id = SplitId::random();
        assert_eq!(SplitId::from_hex(&id.to_string()), Some(id));
        assert_ne!(SplitId::random(), id);
        assert_eq!(SplitId::from_hex("00"), None);
        assert_eq!(SplitId::from_hex(&"g".repeat(32)), None);
    }

    #[test]
    fn files_are_checked_against_the_record() {
        let dir = std::env::temp_dir().join(format!("mpcvit-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = SplitId::random();
        let data = b"some share bytes".to_vec();
        let r = SplitRecord::new(id, "m", &[("share-1.safetensors", &data)]);
        r.write(&dir).unwrap();
        let back = SplitRecord::read(&dir).unwrap();
        assert_eq!(back, r);
        let path = dir.join("share-1.safetensors");
        assert_eq!(check_share(&path, &data).unwrap(), id);
        let mut flipped = data.clone();
        flipped[3] ^= 1;
        let e = check_share(&path, &flipped).unwrap_err().to_string();
        assert!(
            e.contains("share-1.safetensors") && e.contains("damaged"),
            "{e}"
        );
        let e = check_share(&path, &data[..5]).unwrap_err().to_string();
        assert!(e.contains("truncated: 5 of the 16 bytes"), "{e}");
        let e = check_share(&dir.join("share-0.safetensors"), &data)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no entry for share-0.safetensors"), "{e}");
        std::fs::remove_file(dir.join(STAMP_FILE)).unwrap();
        let e = check_share(&path, &data).unwrap_err().to_string();
        assert!(e.contains("stamp") && e.contains("split"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

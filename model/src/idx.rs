//! The IDX format of MNIST and Fashion-MNIST (unsigned-byte arrays with a
//! big-endian header), raw or gzip: one reader for the client's accuracy
//! check and the search's data sets.
//!
//! An IDX file is the magic number `0x0800 | dims` (big-endian `u32`), one
//! big-endian `u32` per dimension, then the array's bytes, row-major. Every
//! failure is an [`IdxError`] that names the file: unreadable, a corrupt or
//! truncated gzip stream, a wrong magic number, a short header or body, bytes
//! after the array, image and label counts that differ.

use std::io::Read;
use std::path::{Path, PathBuf};

/// IDX magic number of an unsigned-byte 3-D array (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic number of an unsigned-byte 1-D array (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Why an IDX file could not be read. `Display` is `FILE: REASON`.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdxError {
    /// The file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The magic number is not the one expected for this file.
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        found: u32,
        /// The magic number of the expected content.
        expected: u32,
        /// What the file should hold.
        what: &'static str,
    },
    /// The file is shorter than its header says.
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        expected: u64,
        /// Bytes present (after decompression).
        found: u64,
    },
    /// The content is malformed in another way (gzip stream, bytes after
    /// the array, dimensions that overflow).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The images and labels files disagree on the number of examples
    /// (named by the labels file).
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Its image count.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Its label count.
        n_labels: usize,
    },
}

impl IdxError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            IdxError::Io { path, .. }
            | IdxError::BadMagic { path, .. }
            | IdxError::Truncated { path, .. }
            | IdxError::Corrupt { path, .. } => path,
            IdxError::CountMismatch { labels, .. } => labels,
        }
    }

    /// What is wrong with [`IdxError::path`], without its name.
    pub fn reason(&self) -> String {
        match self {
            IdxError::Io { source, .. } => source.to_string(),
            IdxError::BadMagic {
                found,
                expected,
                what,
                ..
            } => format!("bad IDX magic number {found:#010x}, expected {expected:#010x} ({what})"),
            IdxError::Truncated {
                what,
                expected,
                found,
                ..
            } => format!("truncated: {what} needs {expected} bytes, the file has {found}"),
            IdxError::Corrupt { reason, .. } => reason.clone(),
            IdxError::CountMismatch {
                images,
                n_images,
                n_labels,
                ..
            } => format!(
                "{n_labels} labels, but {} holds {n_images} images",
                images.display()
            ),
        }
    }
}

impl std::fmt::Display for IdxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path().display(), self.reason())
    }
}

impl std::error::Error for IdxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdxError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The file's bytes, gunzipped when they start with the gzip magic `1f 8b`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let raw = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| IdxError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("gzip stream is corrupt or truncated: {e}"),
        })?;
    Ok(out)
}

/// Parses the bytes of an IDX file of unsigned bytes with `dims` dimensions
/// (`what` says what it should hold, for errors); returns the dimensions and
/// the array. The magic number, the header and the exact length are checked.
pub fn parse_idx(
    path: &Path,
    bytes: &[u8],
    dims: usize,
    what: &'static str,
) -> Result<(Vec<usize>, Vec<u8>), IdxError> {
    let truncated = |what, expected: usize| IdxError::Truncated {
        path: path.to_path_buf(),
        what,
        expected: expected as u64,
        found: bytes.len() as u64,
    };
    let corrupt = |reason: String| IdxError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let header = 4 + 4 * dims;
    if bytes.len() < 4 {
        return Err(truncated("the IDX magic number", 4));
    }
    let expected = 0x0800 | dims as u32;
    if be(0) != expected {
        return Err(IdxError::BadMagic {
            path: path.to_path_buf(),
            found: be(0),
            expected,
            what,
        });
    }
    if bytes.len() < header {
        return Err(truncated("the IDX header", header));
    }
    let shape: Vec<usize> = (0..dims).map(|d| be(4 + 4 * d) as usize).collect();
    let total = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| corrupt(format!("IDX dimensions {shape:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() < total {
        return Err(truncated(what, header + total));
    }
    if body.len() > total {
        return Err(corrupt(format!(
            "{} trailing bytes after the {shape:?} array the header declares",
            body.len() - total
        )));
    }
    Ok((shape, body.to_vec()))
}

/// An IDX images file and its labels file, read together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxPair {
    /// Images.
    pub count: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Every image's pixels, `count · rows · cols` bytes, row-major.
    pub pixels: Vec<u8>,
    /// Every image's label (not range-checked), `count` bytes.
    pub labels: Vec<u8>,
}

/// Reads an IDX images file (`[count, rows, cols]`) and its IDX labels file
/// (`[count]`), each raw or gzip.
pub fn read_pair(images: &Path, labels: &Path) -> Result<IdxPair, IdxError> {
    let (shape, pixels) = parse_idx(images, &read_maybe_gz(images)?, 3, "IDX images (u8, 3-D)")?;
    let (lshape, labels_v) = parse_idx(labels, &read_maybe_gz(labels)?, 1, "IDX labels (u8, 1-D)")?;
    if shape[0] != lshape[0] {
        return Err(IdxError::CountMismatch {
            images: images.to_path_buf(),
            n_images: shape[0],
            labels: labels.to_path_buf(),
            n_labels: lshape[0],
        });
    }
    Ok(IdxPair {
        count: shape[0],
        rows: shape[1],
        cols: shape[2],
        pixels,
        labels: labels_v,
    })
}

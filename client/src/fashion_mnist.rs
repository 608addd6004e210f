//! The Fashion-MNIST test split (10,000 labelled 28×28 grayscale images) read
//! from its IDX files, raw or gzip, as the Debian package
//! `dataset-fashion-mnist` installs them ([`FASHION_MNIST_DIR`]).
//!
//! Every failure names the file: missing, unreadable, a corrupt or truncated
//! gzip stream, a wrong IDX magic number, a short or overlong body, image and
//! label counts that differ, a label outside 0..10.

use std::path::{Path, PathBuf};

/// Where the Debian package `dataset-fashion-mnist` installs the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The command that installs Fashion-MNIST on this project's machines.
pub const SETUP_COMMAND: &str =
    "bash scripts/setup.sh (as root; it runs apt-get install dataset-fashion-mnist)";

pub use model::idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC};

/// Number of Fashion-MNIST classes.
pub const CLASSES: usize = 10;

/// Why the test split could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// None of the accepted names exists in the directory.
    #[error(
        "Fashion-MNIST test file not found: none of {} in {}; install it with {}",
        .candidates.join(", "),
        .dir.display(),
        SETUP_COMMAND
    )]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// The file names tried.
        candidates: Vec<String>,
    },
    /// The file exists but could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not what an IDX file of this kind holds.
    #[error("{}: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<model::idx::IdxError> for DatasetError {
    fn from(e: model::idx::IdxError) -> Self {
        match e {
            model::idx::IdxError::Io { path, source } => DatasetError::Io { path, source },
            other => DatasetError::Corrupt {
                path: other.path().to_path_buf(),
                reason: other.reason(),
            },
        }
    }
}

/// The labelled test images: `count` images of `rows × cols` 8-bit pixels,
/// row-major, one after the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSplit {
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Every image's pixels, `count · rows · cols` bytes (0 = background).
    pub pixels: Vec<u8>,
    /// Every image's class, `0..CLASSES`.
    pub labels: Vec<u8>,
}

impl TestSplit {
    /// Reads `t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`
    /// from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DatasetError> {
        let images = find(dir, "t10k-images-idx3-ubyte")?;
        let labels = find(dir, "t10k-labels-idx1-ubyte")?;
        Self::load_files(&images, &labels)
    }

    /// Reads the test split from the Debian package's directory,
    /// [`FASHION_MNIST_DIR`].
    pub fn load_default() -> Result<Self, DatasetError> {
        Self::load(Path::new(FASHION_MNIST_DIR))
    }

    /// Reads an IDX images file and its IDX labels file (each raw or gzip,
    /// [`model::idx::read_pair`]).
    pub fn load_files(images: &Path, labels: &Path) -> Result<Self, DatasetError> {
        let pair = model::idx::read_pair(images, labels)?;
        if let Some(i) = pair.labels.iter().position(|&l| usize::from(l) >= CLASSES) {
            return Err(DatasetError::Corrupt {
                path: labels.to_path_buf(),
                reason: format!(
                    "label {} of image {i} is outside 0..{CLASSES}",
                    pair.labels[i]
                ),
            });
        }
        Ok(TestSplit {
            rows: pair.rows,
            cols: pair.cols,
            pixels: pair.pixels,
            labels: pair.labels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`'s pixels (`rows · cols` bytes, row-major).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Image `i` as a grayscale image, ready for [`model::preprocess_image`].
    pub fn dynamic_image(&self, i: usize) -> image::DynamicImage {
        let buf =
            image::GrayImage::from_raw(self.cols as u32, self.rows as u32, self.image(i).to_vec())
                .expect("rows · cols pixels");
        image::DynamicImage::ImageLuma8(buf)
    }
}

/// The file called `stem.gz` or `stem` in `dir`, gzip first.
fn find(dir: &Path, stem: &str) -> Result<PathBuf, DatasetError> {
    let candidates = vec![format!("{stem}.gz"), stem.to_string()];
    candidates
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DatasetError::NotFound {
            dir: dir.to_path_buf(),
            candidates,
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx(magic: u32, shape: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in shape {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mpcvit-fmnist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const IMAGES: &str = "t10k-images-idx3-ubyte";
    const LABELS: &str = "t10k-labels-idx1-ubyte";

    fn pixels(n: usize) -> Vec<u8> {
        (0..n * 4).map(|i| i as u8).collect()
    }

    #[test]
    fn reads_gzip_and_raw_files() {
        let d = dir("ok");
        std::fs::write(
            d.join(format!("{IMAGES}.gz")),
            gz(&idx(IDX_IMAGES_MAGIC, &[3, 2, 2], &pixels(3))),
        )
        .unwrap();
        std::fs::write(d.join(LABELS), idx(IDX_LABELS_MAGIC, &[3], &[9, 0, 4])).unwrap();
        let s = TestSplit::load(&d).unwrap();
        assert_eq!((s.len(), s.rows, s.cols), (3, 2, 2));
        assert_eq!(s.labels, vec![9, 0, 4]);
        assert_eq!(s.image(1), &[4, 5, 6, 7]);
        let img = s.dynamic_image(2).to_luma8();
        assert_eq!(img.get_pixel(1, 0).0, [9]);
        assert_eq!(img.get_pixel(0, 1).0, [10]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_file_names_it_and_the_setup_command() {
        let d = dir("missing");
        std::fs::write(d.join(LABELS), idx(IDX_LABELS_MAGIC, &[1], &[0])).unwrap();
        let e = TestSplit::load(&d).unwrap_err().to_string();
        assert!(e.contains(&format!("{IMAGES}.gz")), "{e}");
        assert!(e.contains("scripts/setup.sh"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_are_named_with_the_reason() {
        let d = dir("bad");
        let (images, labels) = (d.join(IMAGES), d.join(LABELS));
        let good_labels = idx(IDX_LABELS_MAGIC, &[2], &[1, 2]);
        std::fs::write(&labels, &good_labels).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (idx(IDX_LABELS_MAGIC, &[2, 2, 2], &pixels(2)), "magic"),
            (
                idx(IDX_IMAGES_MAGIC, &[2, 2, 2], &pixels(2)[..7]),
                "truncated",
            ),
            (vec![0, 0, 8], "truncated"),
            (idx(IDX_IMAGES_MAGIC, &[2, 2], &[]), "truncated"),
            (idx(IDX_IMAGES_MAGIC, &[2, 2, 2], &pixels(3)), "after"),
            (
                gz(&idx(IDX_IMAGES_MAGIC, &[2, 2, 2], &pixels(2)))[..20].to_vec(),
                "gzip",
            ),
            (idx(IDX_IMAGES_MAGIC, &[3, 2, 2], &pixels(3)), "3 images"),
        ];
        for (bytes, want) in cases {
            std::fs::write(&images, &bytes).unwrap();
            let e = TestSplit::load_files(&images, &labels).unwrap_err();
            let s = e.to_string();
            assert!(matches!(e, DatasetError::Corrupt { .. }), "{s}");
            assert!(s.contains(want), "{want}: {s}");
            let named = if want == "3 images" { &labels } else { &images };
            assert!(s.starts_with(&named.display().to_string()), "{s}");
        }
        std::fs::write(&images, idx(IDX_IMAGES_MAGIC, &[2, 2, 2], &pixels(2))).unwrap();
        std::fs::write(&labels, idx(IDX_LABELS_MAGIC, &[2], &[1, 10])).unwrap();
        let s = TestSplit::load_files(&images, &labels)
            .unwrap_err()
            .to_string();
        assert!(s.contains("label 10 of image 1"), "{s}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! Datasets: loaders for the published file formats, normalisation and augmentation.
//!
//! | format | files | loader |
//! |---|---|---|
//! | IDX (MNIST, Fashion-MNIST), raw or gzip | `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` | [`load_idx_pair`], [`load_idx_split`] |
//! | MNIST CSV | `label,p0,…,p783` per line, optional header | [`load_mnist_csv`] |
//! | CIFAR-10 binary | `data_batch_{1..5}.bin`, `test_batch.bin`: records of 1 + 3072 bytes | [`load_cifar10`] |
//! | CIFAR-100 binary | `train.bin`, `test.bin`: records of 2 + 3072 bytes (coarse, fine) | [`load_cifar100`] |
//! | image folder | `DIR/{train,test}/CLASS/*.png\|jpg` | [`load_image_folder`] |
//!
//! Every check that fails (magic number, header, length, label range, decoding) is a
//! [`DataError`] that names the file. Images are kept as `u8` CHW; a batch is cut,
//! augmented (random crop with zero padding, horizontal flip) with a seeded generator and
//! normalised (`(v/255 − mean[c]) / std[c]`) in [`Dataset::batch`].

use std::fs;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Fashion-MNIST class names in label order.
pub const FASHION_MNIST_LABELS: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where the Debian package `dataset-fashion-mnist` installs the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Everything that can go wrong while reading a data set. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The IDX magic number is not the one expected for this file.
    #[error("{path}: bad magic number {found:#010x}, expected {expected:#010x} ({what})")]
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
    /// The file is shorter than its header (or record size) says.
    #[error("{path}: truncated: {what} needs {expected} bytes, the file has {found}")]
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
    /// The content is malformed in another way (gzip stream, trailing bytes, a bad CSV
    /// field, a label out of range, an undecodable image, …).
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Images and labels files disagree on the number of examples.
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Its example count.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Its label count.
        n_labels: usize,
    },
    /// No file of the expected name exists in the directory.
    #[error("{dir}: none of {candidates:?} found")]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// The names tried.
        candidates: Vec<String>,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, DataError>;

fn corrupt(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a file, transparently decompressing gzip (detected by its magic bytes `1f 8b`;
/// [`model::idx::read_maybe_gz`]).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    Ok(model::idx::read_maybe_gz(path)?)
}

impl From<model::idx::IdxError> for DataError {
    fn from(e: model::idx::IdxError) -> Self {
        use model::idx::IdxError as E;
        match e {
            E::Io { path, source } => DataError::Io { path, source },
            E::BadMagic {
                path,
                found,
                expected,
                what,
            } => DataError::BadMagic {
                path,
                found,
                expected,
                what,
            },
            E::Truncated {
                path,
                what,
                expected,
                found,
            } => DataError::Truncated {
                path,
                what,
                expected,
                found,
            },
            E::CountMismatch {
                images,
                n_images,
                labels,
                n_labels,
            } => DataError::CountMismatch {
                images,
                n_images,
                labels,
                n_labels,
            },
            other => DataError::Corrupt {
                path: other.path().to_path_buf(),
                reason: other.reason(),
            },
        }
    }
}

/// A labelled image set held as `u8` CHW images.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Image channels.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// `len × channels × height × width` pixel values, image-major, CHW inside.
    pub pixels: Vec<u8>,
    /// One label per image, each `< classes.len()`.
    pub labels: Vec<u32>,
    /// Class names in label order.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Pixels of image `i` (CHW).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The first `n` examples (all when `n ≥ len`).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.clone()
        }
    }

    /// Per-channel mean and standard deviation of the pixels scaled to `[0, 1]`
    /// (population statistics over every pixel, as the usual dataset constants).
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let plane = self.height * self.width;
        let mut sum = vec![0f64; self.channels];
        let mut sq = vec![0f64; self.channels];
        for img in self.pixels.chunks_exact(self.image_len()) {
            for (c, ch) in img.chunks_exact(plane).enumerate() {
                for &v in ch {
                    let v = f64::from(v) / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let count = (self.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / count - m * m).max(1e-12)).sqrt() as f32)
            .collect();
        (mean.iter().map(|&m| m as f32).collect(), std)
    }

    /// Builds a batch: for each index, the image (augmented when `aug` is given)
    /// normalised to `(v/255 − mean[c]) / std[c]`, concatenated as `B × C × H × W`, and
    /// the labels.
    pub fn batch(
        &self,
        indices: &[usize],
        norm: &Normalize,
        mut aug: Option<(&Augment, &mut Rng)>,
    ) -> (Vec<f32>, Vec<u32>) {
        let n = self.image_len();
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(indices.len() * n);
        let mut scratch = vec![0u8; n];
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let src = self.image(i);
            let img: &[u8] = match aug.as_mut() {
                Some((a, rng)) => {
                    a.apply(
                        src,
                        &mut scratch,
                        self.channels,
                        self.height,
                        self.width,
                        rng,
                    );
                    &scratch
                }
                None => src,
            };
            for (c, ch) in img.chunks_exact(plane).enumerate() {
                let (m, s) = (norm.mean[c], norm.std[c]);
                out.extend(ch.iter().map(|&v| (f32::from(v) / 255.0 - m) / s));
            }
            labels.push(self.labels[i]);
        }
        (out, labels)
    }
}

/// Per-channel input normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Mean of the `[0, 1]`-scaled pixels per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

/// The generator used for shuffling and augmentation (seeded, reproducible).
pub type Rng = ChaCha8Rng;

/// A generator for `seed` and `stream` (e.g. the epoch number), so that a resumed run
/// draws the same order and augmentations as an uninterrupted one.
pub fn rng_for(seed: u64, stream: u64) -> Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Uniform integer in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the sizes here).
pub fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// `0..n` in a random order (Fisher–Yates).
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, below(rng, i + 1));
    }
    p
}

/// Training augmentation: random crop of the zero-padded image (torchvision's
/// `RandomCrop(size, padding = pad)`) and a horizontal flip with probability 1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on each side before the crop (0 disables the crop).
    pub pad: usize,
    /// Random horizontal flip (off for digits, whose mirror image is another glyph).
    pub flip: bool,
}

impl Augment {
    /// Writes the augmented `src` (CHW) into `dst`.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], c: usize, h: usize, w: usize, rng: &mut Rng) {
        let (dy, dx) = if self.pad > 0 {
            (
                below(rng, 2 * self.pad + 1) as isize - self.pad as isize,
                below(rng, 2 * self.pad + 1) as isize - self.pad as isize,
            )
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.next_u32() & 1 == 1;
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    dst[(ch * h + y) * w + x] =
                        if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                            src[(ch * h + sy as usize) * w + sx as usize]
                        } else {
                            0
                        };
                }
            }
        }
    }
}

pub use model::idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC};

/// Parses an IDX file of unsigned bytes with `dims` dimensions; returns the dimensions
/// and the data ([`model::idx::parse_idx`]: the magic number, the header, and the exact
/// data length are checked).
pub fn parse_idx(
    path: &Path,
    bytes: &[u8],
    dims: usize,
    what: &'static str,
) -> Result<(Vec<usize>, Vec<u8>)> {
    Ok(model::idx::parse_idx(path, bytes, dims, what)?)
}

/// Loads an IDX images file (`[n, rows, cols]`) and its IDX labels file, gzip or raw,
/// with every label `< classes.len()`.
pub fn load_idx_pair(images: &Path, labels: &Path, classes: &[String]) -> Result<Dataset> {
    let pair = model::idx::read_pair(images, labels)?;
    let labels_u32 = check_labels(
        labels,
        pair.labels.iter().map(|&l| u32::from(l)),
        classes.len(),
    )?;
    Ok(Dataset {
        channels: 1,
        height: pair.rows,
        width: pair.cols,
        pixels: pair.pixels,
        labels: labels_u32,
        classes: classes.to_vec(),
    })
}

fn check_labels(
    path: &Path,
    labels: impl Iterator<Item = u32>,
    classes: usize,
) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for (i, l) in labels.enumerate() {
        if l as usize >= classes {
            return Err(corrupt(
                path,
                format!("label {l} of example {i} is out of range (classes: {classes})"),
            ));
        }
        out.push(l);
    }
    Ok(out)
}

fn find(dir: &Path, names: &[String]) -> Result<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::NotFound {
            dir: dir.to_path_buf(),
            candidates: names.to_vec(),
        })
}

/// Which half of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training examples.
    Train,
    /// Test examples.
    Test,
}

/// Loads the `train` or `t10k` IDX pair from `dir` (names as published, with or without
/// `.gz`), e.g. the Debian package's [`FASHION_MNIST_DIR`].
pub fn load_idx_split(dir: &Path, split: Split, classes: &[String]) -> Result<Dataset> {
    let stem = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let names = |kind: &str| -> Vec<String> {
        vec![
            format!("{stem}-{kind}-ubyte.gz"),
            format!("{stem}-{kind}-ubyte"),
            format!(
                "{stem}-{kind}.idx{}-ubyte",
                if kind.starts_with("images") { 3 } else { 1 }
            ),
        ]
    };
    let images = find(dir, &names("images-idx3"))?;
    let labels = find(dir, &names("labels-idx1"))?;
    load_idx_pair(&images, &labels, classes)
}

/// Loads an MNIST CSV file: one `label,p0,…,p783` line per 28×28 image (an optional
/// non-numeric header line is skipped; a `.gz` file is decompressed).
pub fn load_mnist_csv(path: &Path) -> Result<Dataset> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| corrupt(path, format!("not UTF-8: {e}")))?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split(',');
        let first = fields.next().unwrap_or("");
        let label: u32 = match first.trim().parse() {
            Ok(v) => v,
            Err(_) if lineno == 0 => continue, // header
            Err(_) => {
                return Err(corrupt(
                    path,
                    format!("line {}: label {first:?} is not a number", lineno + 1),
                ));
            }
        };
        if label >= 10 {
            return Err(corrupt(
                path,
                format!("line {}: label {label} is not a digit", lineno + 1),
            ));
        }
        let start = pixels.len();
        for f in fields {
            let v: u8 = f.trim().parse().map_err(|_| {
                corrupt(
                    path,
                    format!(
                        "line {}: pixel {f:?} is not an integer in 0..=255",
                        lineno + 1
                    ),
                )
            })?;
            pixels.push(v);
        }
        let count = pixels.len() - start;
        if count != 784 {
            return Err(corrupt(
                path,
                format!(
                    "line {}: {count} pixel values, expected 784 (28×28)",
                    lineno + 1
                ),
            ));
        }
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(corrupt(path, "no examples"));
    }
    Ok(Dataset {
        channels: 1,
        height: 28,
        width: 28,
        pixels,
        labels,
        classes: (0..10).map(|d| d.to_string()).collect(),
    })
}

/// Record layout of the CIFAR binary files.
fn load_cifar_records(
    path: &Path,
    label_bytes: usize,
    label_index: usize,
    classes: usize,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let bytes = read_maybe_gz(path)?;
    let rec = label_bytes + 3072;
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        let records = bytes.len() / rec + 1;
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "CIFAR records (label bytes + 3072 pixels each)",
            expected: (records * rec) as u64,
            found: bytes.len() as u64,
        });
    }
    let n = bytes.len() / rec;
    let mut pixels = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for r in bytes.chunks_exact(rec) {
        labels.push(u32::from(r[label_index]));
        pixels.extend_from_slice(&r[label_bytes..]);
    }
    let labels = check_labels(path, labels.into_iter(), classes)?;
    Ok((pixels, labels))
}

fn read_names(path: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (!names.is_empty()).then_some(names)
}

/// Loads CIFAR-10 from the published binary version (`cifar-10-batches-bin`):
/// `data_batch_1..5.bin` for training, `test_batch.bin` for test.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let classes = read_names(&dir.join("batches.meta.txt")).unwrap_or_else(|| {
        model::config::CIFAR10_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let path = find(dir, std::slice::from_ref(&f))?;
        let (p, l) = load_cifar_records(&path, 1, 0, 10)?;
        pixels.extend(p);
        labels.extend(l);
    }
    Ok(Dataset {
        channels: 3,
        height: 32,
        width: 32,
        pixels,
        labels,
        classes: classes.into_iter().take(10).collect(),
    })
}

/// Loads CIFAR-100 from the published binary version (`cifar-100-binary`): `train.bin` or
/// `test.bin`, fine labels (the second label byte).
pub fn load_cifar100(dir: &Path, split: Split) -> Result<Dataset> {
    let name = match split {
        Split::Train => "train.bin",
        Split::Test => "test.bin",
    };
    let path = find(dir, &[name.to_string()])?;
    let (pixels, labels) = load_cifar_records(&path, 2, 1, 100)?;
    let classes = read_names(&dir.join("fine_label_names.txt"))
        .filter(|n| n.len() == 100)
        .unwrap_or_else(|| (0..100).map(|i| i.to_string()).collect());
    Ok(Dataset {
        channels: 3,
        height: 32,
        width: 32,
        pixels,
        labels,
        classes,
    })
}

/// Loads `dir/CLASS/*.{png,jpg,jpeg}` (classes in sorted order), each image brought to
/// `size × size` the way the `model` crate's preprocessing does (shorter side resized,
/// centre crop) with `channels` 1 (grayscale) or 3 (RGB).
pub fn load_image_folder(dir: &Path, size: usize, channels: usize) -> Result<Dataset> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let mut classes: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.path().is_dir() {
            classes.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(corrupt(dir, "no class sub-folders"));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        let mut files: Vec<PathBuf> = fs::read_dir(&cdir)
            .map_err(io(&cdir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .collect();
        files.sort();
        for f in files {
            let bytes = fs::read(&f).map_err(io(&f))?;
            let img = image::load_from_memory(&bytes)
                .map_err(|e| corrupt(&f, format!("cannot decode image: {e}")))?;
            pixels.extend(fit_image(&img, size, channels).map_err(|r| corrupt(&f, r))?);
            labels.push(label as u32);
        }
    }
    if labels.is_empty() {
        return Err(corrupt(dir, "no images"));
    }
    Ok(Dataset {
        channels,
        height: size,
        width: size,
        pixels,
        labels,
        classes,
    })
}

/// Shorter side resized to `size` (triangle filter) then centre-cropped, as CHW `u8`.
fn fit_image(
    img: &image::DynamicImage,
    size: usize,
    channels: usize,
) -> std::result::Result<Vec<u8>, String> {
    let hwc =
        model::preprocess::fit_pixels(img, size as u32, channels).map_err(|e| e.to_string())?;
    let plane = size * size;
    let mut chw = vec![0u8; channels * plane];
    for (i, px) in hwc.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            chw[c * plane + i] = v;
        }
    }
    Ok(chw)
}

/// The data sets the command line knows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST IDX files (default directory: the Debian package's).
    FashionMnist,
    /// MNIST IDX files.
    Mnist,
    /// MNIST CSV: `DIR/mnist_train.csv` and `DIR/mnist_test.csv` (or `train.csv`/`test.csv`).
    MnistCsv,
    /// CIFAR-10 binary version.
    Cifar10,
    /// CIFAR-100 binary version.
    Cifar100,
    /// `DIR/train/CLASS/*.png` and `DIR/test/CLASS/*.png`.
    Folder,
}

/// A training and a test set with what the network needs to know about them.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training examples.
    pub train: Dataset,
    /// Test examples.
    pub test: Dataset,
    /// Normalisation: the standard constants of the data set where there are some,
    /// otherwise computed on the training set.
    pub norm: Normalize,
    /// Whether a horizontal flip is a valid augmentation (not for digits).
    pub flip_ok: bool,
}

impl DatasetKind {
    /// The default location of the files, when there is one.
    pub fn default_dir(self) -> Option<&'static str> {
        match self {
            Self::FashionMnist => Some(FASHION_MNIST_DIR),
            _ => None,
        }
    }

    /// Loads both splits from `dir`; `image_size`/`channels` only matter for a folder.
    pub fn load(self, dir: &Path, image_size: usize, channels: usize) -> Result<Splits> {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
        let (train, test, norm, flip_ok) = match self {
            Self::FashionMnist => {
                let c = names(&FASHION_MNIST_LABELS);
                let tr = load_idx_split(dir, Split::Train, &c)?;
                let te = load_idx_split(dir, Split::Test, &c)?;
                (tr, te, None, true)
            }
            Self::Mnist => {
                let tr = load_idx_split(dir, Split::Train, &digits)?;
                let te = load_idx_split(dir, Split::Test, &digits)?;
                (tr, te, None, false)
            }
            Self::MnistCsv => {
                let tr = load_mnist_csv(&find(
                    dir,
                    &names(&["mnist_train.csv", "train.csv", "mnist_train.csv.gz"]),
                )?)?;
                let te = load_mnist_csv(&find(
                    dir,
                    &names(&["mnist_test.csv", "test.csv", "mnist_test.csv.gz"]),
                )?)?;
                (tr, te, None, false)
            }
            Self::Cifar10 => {
                let n = Normalize {
                    mean: vec![0.4914, 0.4822, 0.4465],
                    std: vec![0.2470, 0.2435, 0.2616],
                };
                (
                    load_cifar10(dir, Split::Train)?,
                    load_cifar10(dir, Split::Test)?,
                    Some(n),
                    true,
                )
            }
            Self::Cifar100 => {
                let n = Normalize {
                    mean: vec![0.5071, 0.4865, 0.4409],
                    std: vec![0.2673, 0.2564, 0.2762],
                };
                (
                    load_cifar100(dir, Split::Train)?,
                    load_cifar100(dir, Split::Test)?,
                    Some(n),
                    true,
                )
            }
            Self::Folder => {
                let tr = load_image_folder(&dir.join("train"), image_size, channels)?;
                let te = load_image_folder(&dir.join("test"), image_size, channels)?;
                if te.classes != tr.classes {
                    return Err(corrupt(
                        &dir.join("test"),
                        "class folders differ from train/",
                    ));
                }
                (tr, te, None, true)
            }
        };
        let norm = norm.unwrap_or_else(|| {
            let (mean, std) = train.mean_std();
            Normalize { mean, std }
        });
        Ok(Splits {
            train,
            test,
            norm,
            flip_ok,
        })
    }
}

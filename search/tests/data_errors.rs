//! A corrupt or truncated data file is a typed error that names the file.

mod common;

use std::io::Write;

use search::data::{
    DataError, Split, load_cifar10, load_cifar100, load_idx_pair, load_image_folder,
    load_mnist_csv, parse_idx,
};

fn idx_images(n: u32, rows: u32, cols: u32, body: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, body));
    v
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&n.to_be_bytes());
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn classes() -> Vec<String> {
    (0..10).map(|i| i.to_string()).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn valid_idx_files_load_raw_and_gzip() {
    let dir = common::temp_dir("idx-ok");
    let (img, lab) = (
        dir.join("train-images-idx3-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte"),
    );
    std::fs::write(&img, gzip(&idx_images(5, 4, 3, 60))).unwrap();
    std::fs::write(&lab, idx_labels(5)).unwrap();
    let d = load_idx_pair(&img, &lab, &classes()).unwrap();
    assert_eq!((d.len(), d.height, d.width, d.channels), (5, 4, 3, 1));
    assert_eq!(d.labels, vec![0, 1, 2, 3, 4]);
    common::remove(&dir);
}

#[test]
fn truncated_idx_names_the_file() {
    let dir = common::temp_dir("idx-trunc");
    let (img, lab) = (
        dir.join("train-images-idx3-ubyte"),
        dir.join("train-labels-idx1-ubyte"),
    );
    std::fs::write(&img, idx_images(10, 28, 28, 10 * 784 - 100)).unwrap();
    std::fs::write(&lab, idx_labels(10)).unwrap();
    let err = load_idx_pair(&img, &lab, &classes()).unwrap_err();
    match &err {
        DataError::Truncated {
            path,
            expected,
            found,
            ..
        } => {
            assert_eq!(path, &img);
            assert_eq!((*expected, *found), (16 + 7840, 16 + 7740));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&img.display().to_string()),
        "{err}"
    );

    // A header cut short, and a gzip stream cut short.
    std::fs::write(&img, &idx_images(10, 28, 28, 0)[..10]).unwrap();
    assert!(
        matches!(load_idx_pair(&img, &lab, &classes()), Err(DataError::Truncated { path, .. }) if path == img)
    );
    let gz = gzip(&idx_images(10, 28, 28, 7840));
    let img_gz = dir.join("train-images-idx3-ubyte.gz");
    std::fs::write(&img_gz, &gz[..gz.len() / 2]).unwrap();
    let err = load_idx_pair(&img_gz, &lab, &classes()).unwrap_err();
    assert!(
        matches!(&err, DataError::Corrupt { path, .. } if *path == img_gz),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("train-images-idx3-ubyte.gz"),
        "{err}"
    );
    common::remove(&dir);
}

#[test]
fn wrong_magic_names_the_file() {
    let dir = common::temp_dir("idx-magic");
    let (img, lab) = (
        dir.join("t10k-images-idx3-ubyte"),
        dir.join("t10k-labels-idx1-ubyte"),
    );
    let mut bytes = idx_images(2, 28, 28, 2 * 784);
    bytes[3] = 1; // a labels magic on an images file
    std::fs::write(&img, bytes).unwrap();
    std::fs::write(&lab, idx_labels(2)).unwrap();
    let err = load_idx_pair(&img, &lab, &classes()).unwrap_err();
    match &err {
        DataError::BadMagic {
            path,
            found,
            expected,
            ..
        } => {
            assert_eq!(path, &img);
            assert_eq!((*found, *expected), (0x0801, 0x0803));
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    assert!(err.to_string().contains("t10k-images-idx3-ubyte"), "{err}");
    // Swapped files: the labels file is read as images.
    let err = load_idx_pair(&lab, &img, &classes()).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { path, .. } if path == lab));
    common::remove(&dir);
}

#[test]
fn other_corruptions_are_typed_and_name_the_file() {
    let dir = common::temp_dir("misc");
    let p = dir.join("x.idx");
    // Trailing bytes.
    let mut b = idx_labels(3);
    b.push(0);
    assert!(
        matches!(parse_idx(&p, &b, 1, "labels"), Err(DataError::Corrupt { path, .. }) if path == p)
    );
    // Label out of range and count mismatch.
    let (img, lab) = (dir.join("i"), dir.join("l"));
    std::fs::write(&img, idx_images(3, 2, 2, 12)).unwrap();
    let mut l = idx_labels(3);
    l[9] = 42;
    std::fs::write(&lab, &l).unwrap();
    assert!(
        matches!(load_idx_pair(&img, &lab, &classes()), Err(DataError::Corrupt { path, .. }) if path == lab)
    );
    std::fs::write(&lab, idx_labels(4)).unwrap();
    assert!(matches!(
        load_idx_pair(&img, &lab, &classes()),
        Err(DataError::CountMismatch { .. })
    ));
    // A missing file.
    let missing = dir.join("nope");
    assert!(
        matches!(load_idx_pair(&missing, &lab, &classes()), Err(DataError::Io { path, .. }) if path == missing)
    );
    // CIFAR-10 record cut short.
    let cifar = dir.join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    std::fs::write(cifar.join("test_batch.bin"), vec![3u8; 3073 * 2 - 5]).unwrap();
    let err = load_cifar10(&cifar, Split::Test).unwrap_err();
    assert!(
        matches!(&err, DataError::Truncated { path, .. } if path.ends_with("test_batch.bin")),
        "{err:?}"
    );
    // MNIST CSV: a short line.
    let csv = dir.join("mnist_test.csv");
    let good: String = std::iter::once("5".to_string())
        .chain((0..784).map(|_| "0".to_string()))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(&csv, format!("label,pixels\n{good}\n3,1,2,3\n")).unwrap();
    let err = load_mnist_csv(&csv).unwrap_err();
    assert!(
        matches!(&err, DataError::Corrupt { path, reason } if *path == csv && reason.contains("line 3")),
        "{err:?}"
    );
    std::fs::write(&csv, format!("{good}\n{good}\n")).unwrap();
    assert_eq!(load_mnist_csv(&csv).unwrap().len(), 2);
    common::remove(&dir);
}

#[test]
fn cifar_and_image_folders_load_and_report_bad_files() {
    let dir = common::temp_dir("cifar-folder");
    // CIFAR-10: two records in test_batch.bin.
    let mut rec = Vec::new();
    for (label, value) in [(3u8, 10u8), (9, 200)] {
        rec.push(label);
        rec.extend(std::iter::repeat_n(value, 3072));
    }
    std::fs::write(dir.join("test_batch.bin"), &rec).unwrap();
    let d = load_cifar10(&dir, Split::Test).unwrap();
    assert_eq!(
        (d.len(), d.channels, d.height, d.labels.clone()),
        (2, 3, 32, vec![3, 9])
    );
    assert_eq!(d.image(1)[0], 200);
    assert_eq!(d.classes[3], "cat");
    // CIFAR-100: (coarse, fine) labels, the fine one is used; a fine label of 100 is refused.
    let mut rec = vec![1u8, 42];
    rec.extend(std::iter::repeat_n(5u8, 3072));
    std::fs::write(dir.join("test.bin"), &rec).unwrap();
    assert_eq!(load_cifar100(&dir, Split::Test).unwrap().labels, vec![42]);
    rec[1] = 100;
    std::fs::write(dir.join("test.bin"), &rec).unwrap();
    assert!(
        matches!(load_cifar100(&dir, Split::Test), Err(DataError::Corrupt { path, .. }) if path.ends_with("test.bin"))
    );

    // An image folder: two classes, sorted by name; images resized to the requested side.
    let root = dir.join("images");
    for (class, shade) in [("zebra", 250u8), ("apple", 5u8)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        let img = image::RgbImage::from_pixel(20, 10, image::Rgb([shade, shade, shade]));
        img.save(root.join(class).join("a.png")).unwrap();
    }
    let d = load_image_folder(&root, 8, 3).unwrap();
    assert_eq!(d.classes, vec!["apple".to_string(), "zebra".to_string()]);
    assert_eq!((d.len(), d.channels, d.height, d.width), (2, 3, 8, 8));
    assert_eq!((d.image(0)[0], d.image(1)[0]), (5, 250));
    let g = load_image_folder(&root, 4, 1).unwrap();
    assert_eq!(g.image_len(), 16);
    // A file that is not an image names itself.
    let bad = root.join("apple").join("broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let err = load_image_folder(&root, 8, 3).unwrap_err();
    assert!(
        matches!(&err, DataError::Corrupt { path, .. } if *path == bad),
        "{err:?}"
    );
    common::remove(&dir);
}

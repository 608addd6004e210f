//! Image decoding and normalisation.

mod common;

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage};
use model::{ModelConfig, ModelError, preprocess};

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn pattern(x: u32, y: u32, c: u32) -> u8 {
    ((x * 13 + y * 7 + c * 50) % 256) as u8
}

#[test]
fn png_at_model_size_gives_exact_chw_values() {
    let config = common::reference_config(); // 16 px, CIFAR-10 mean/std
    let img = RgbImage::from_fn(16, 16, |x, y| {
        Rgb([pattern(x, y, 0), pattern(x, y, 1), pattern(x, y, 2)])
    });
    let input = preprocess(
        &config,
        &encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png),
    )
    .unwrap();
    assert_eq!(input.len(), 3 * 16 * 16);
    for c in 0..3 {
        for y in 0..16 {
            for x in 0..16 {
                let expected = (f32::from(pattern(x, y, c)) / 255.0 - config.mean[c as usize])
                    / config.std[c as usize];
                let got = input[(c as usize * 16 + y as usize) * 16 + x as usize];
                assert!(
                    (got - expected).abs() < 1e-6,
                    "c{c} y{y} x{x}: {got} vs {expected}"
                );
            }
        }
    }
}

#[test]
fn other_sizes_are_resized() {
    let config = ModelConfig::vit_7_4_32();
    // A uniform image stays uniform under any resampling.
    let img = RgbImage::from_pixel(50, 20, Rgb([255, 0, 128]));
    let input = preprocess(
        &config,
        &encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png),
    )
    .unwrap();
    assert_eq!(input.len(), 3 * 32 * 32);
    let plane = 32 * 32;
    for (c, v) in [255.0f32, 0.0, 128.0].into_iter().enumerate() {
        let expected = (v / 255.0 - config.mean[c]) / config.std[c];
        assert!(
            input[c * plane..(c + 1) * plane]
                .iter()
                .all(|x| (x - expected).abs() < 1e-5)
        );
    }
    // A gradient is resampled smoothly: values stay within the source range.
    let grad = RgbImage::from_fn(64, 64, |x, _| Rgb([(x * 4) as u8; 3]));
    let input = preprocess(
        &config,
        &encode(&DynamicImage::ImageRgb8(grad), ImageFormat::Png),
    )
    .unwrap();
    let lo = (0.0 - config.mean[0]) / config.std[0];
    let hi = (1.0 - config.mean[0]) / config.std[0];
    assert!(
        input[..plane]
            .iter()
            .all(|x| (lo - 1e-5..=hi + 1e-5).contains(x))
    );
    assert!(input[1] > input[0]);
}

#[test]
fn non_square_images_are_centre_cropped() {
    let config = ModelConfig::vit_7_4_32();
    // 64 x 32: shorter side already 32, so no resampling; the centre 32 columns are blue.
    let img = RgbImage::from_fn(64, 32, |x, _| {
        if (16..48).contains(&x) {
            Rgb([0, 0, 255])
        } else {
            Rgb([255, 0, 0])
        }
    });
    let input = preprocess(
        &config,
        &encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png),
    )
    .unwrap();
    let red = (0.0 - config.mean[0]) / config.std[0];
    let blue = (1.0 - config.mean[2]) / config.std[2];
    assert!(input[..1024].iter().all(|v| (v - red).abs() < 1e-6));
    assert!(input[2048..].iter().all(|v| (v - blue).abs() < 1e-6));
    // 40 x 100 (portrait): resized to 32 x 80, centre rows kept.
    let img = RgbImage::from_fn(40, 100, |_, y| {
        if (20..80).contains(&y) {
            Rgb([0, 255, 0])
        } else {
            Rgb([0, 0, 0])
        }
    });
    let input = preprocess(
        &config,
        &encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png),
    )
    .unwrap();
    let green = (1.0 - config.mean[1]) / config.std[1];
    assert!(input[1024..2048].iter().all(|v| (v - green).abs() < 1e-4));
}

#[test]
fn jpeg_and_grayscale_inputs() {
    let config = ModelConfig::vit_7_4_32();
    let img = RgbImage::from_fn(32, 32, |x, y| Rgb([pattern(x, y, 0), 90, 200]));
    let input = preprocess(
        &config,
        &encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg),
    )
    .unwrap();
    assert_eq!(input.len(), 3 * 32 * 32);
    assert!(input.iter().all(|v| v.is_finite()));

    // A grayscale PNG into an RGB network: three equal channels before normalisation.
    let gray = GrayImage::from_fn(32, 32, |x, y| image::Luma([pattern(x, y, 0)]));
    let bytes = encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png);
    let input = preprocess(&config, &bytes).unwrap();
    let px = |c: usize| input[c * 1024 + 5] * config.std[c] + config.mean[c];
    assert!((px(0) - px(1)).abs() < 1e-6 && (px(1) - px(2)).abs() < 1e-6);

    // A 1-channel network reads any image as grayscale.
    let mut mono = ModelConfig::vit_7_4_32();
    mono.in_channels = 1;
    mono.mean = vec![0.5];
    mono.std = vec![0.5];
    let input = preprocess(&mono, &bytes).unwrap();
    assert_eq!(input.len(), 32 * 32);
    assert!((input[5] - (f32::from(pattern(5, 0, 0)) / 255.0 - 0.5) / 0.5).abs() < 1e-6);
}

#[test]
fn undecodable_bytes_are_a_typed_error() {
    let config = ModelConfig::vit_7_4_32();
    assert!(matches!(
        preprocess(&config, b"definitely not an image"),
        Err(ModelError::ImageDecode(_))
    ));
    let mut png = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(8, 8)),
        ImageFormat::Png,
    );
    png.truncate(png.len() / 2);
    assert!(matches!(
        preprocess(&config, &png),
        Err(ModelError::ImageDecode(_))
    ));
}

/// CRC-32 (IEEE) of `bytes`, as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small PNG whose header announces 20000 × 20000 pixels (400 megapixels)
/// is refused from its header, with the size and the limit in the error,
/// instead of being decoded into hundreds of megabytes first.
#[test]
fn an_image_announcing_too_many_pixels_is_refused_before_decoding() {
    let mut png = encode(
        &DynamicImage::ImageLuma8(GrayImage::new(8, 8)),
        ImageFormat::Png,
    );
    // Signature (8), IHDR length (4) and type (4), then width and height.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let config = ModelConfig::vit_7_4_32();
    let err = preprocess(&config, &png).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ImageTooLarge {
                width: 20_000,
                height: 20_000,
                limit: model::preprocess::MAX_IMAGE_PIXELS
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("20000x20000"), "{err}");
    // An ordinary image still decodes.
    let ok = encode(
        &DynamicImage::ImageLuma8(GrayImage::new(64, 48)),
        ImageFormat::Png,
    );
    assert_eq!(preprocess(&config, &ok).unwrap().len(), 3 * 32 * 32);
}

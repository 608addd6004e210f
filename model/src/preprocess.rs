//! Image decoding and normalisation into the network's input layout.
//!
//! PNG or JPEG bytes → RGB (or grayscale for a 1-channel network) → when the size is not
//! already `image_size × image_size`: shorter side resized to `image_size` with a triangle
//! (bilinear) filter, then a centre crop, as timm's evaluation transform with
//! `crop_pct = 1` (`Resize(s)` + `CenterCrop(s)`) → scaled to `[0, 1]` →
//! `(v - mean[c]) / std[c]` → CHW `f32`, the layout of `torchvision.transforms.ToTensor`
//! followed by `Normalize(mean, std)`.
//!
//! The paper evaluates CIFAR at 32 px and Tiny-ImageNet at 64 px without resampling; its
//! timm loader would use bicubic for other sizes, so resampled inputs match PyTorch only
//! approximately.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageReader, Pixel, imageops::FilterType};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// The largest image [`preprocess`] decodes, in pixels (width × height):
/// 25 megapixels (e.g. 6000 × 4000, a camera photo). The size is read from
/// the file's header and a larger image is refused before it is decoded, so
/// a small file announcing a huge image (a PNG of a few hundred KB can
/// claim 20000 × 20000) costs no memory. Decoding then needs at most about
/// 4 bytes per pixel (100 MB).
pub const MAX_IMAGE_PIXELS: u64 = 25_000_000;

/// Decodes PNG or JPEG bytes and returns the normalised CHW input for `config`.
/// Images whose header announces more than [`MAX_IMAGE_PIXELS`] pixels are
/// refused ([`ModelError::ImageTooLarge`]) before decoding.
pub fn preprocess(config: &ModelConfig, bytes: &[u8]) -> Result<Vec<f32>> {
    let image = decode_bounded(bytes)?;
    preprocess_image(config, &image)
}

/// Decode an image, refusing one whose header announces more than
/// [`MAX_IMAGE_PIXELS`] pixels before any pixel is decoded.
pub fn decode_bounded(bytes: &[u8]) -> Result<DynamicImage> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ModelError::ImageDecode(image::ImageError::IoError(e)))
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(ModelError::ImageDecode)?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(ModelError::ImageTooLarge {
            width,
            height,
            limit: MAX_IMAGE_PIXELS,
        });
    }
    reader()?.decode().map_err(ModelError::ImageDecode)
}

/// Returns the normalised CHW input for `config` from an already decoded image.
pub fn preprocess_image(config: &ModelConfig, image: &DynamicImage) -> Result<Vec<f32>> {
    config.validate()?;
    let side = u32::try_from(config.image_size).map_err(|_| ModelError::InvalidConfig {
        field: "image_size",
        reason: format!("{} does not fit an image dimension", config.image_size),
    })?;
    let channels = config.in_channels;
    let pixels = fit_pixels(image, side, channels)?;
    let plane = config.image_size * config.image_size;
    let mut out = vec![0.0f32; channels * plane];
    for (i, px) in pixels.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + i] = (f32::from(v) / 255.0 - config.mean[c]) / config.std[c];
        }
    }
    Ok(out)
}

/// The image as interleaved (HWC) 8-bit pixels with `channels` (1: luma, 3:
/// RGB), its shorter side resized to `side` and the centre `side × side`
/// cropped, as torchvision's `Resize(int)` + `CenterCrop`.
pub fn fit_pixels(image: &DynamicImage, side: u32, channels: usize) -> Result<Vec<u8>> {
    let (width, height) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return Err(ModelError::EmptyImage { width, height });
    }
    match channels {
        1 => Ok(fit(image.to_luma8(), side).into_raw()),
        3 => Ok(fit(image.to_rgb8(), side).into_raw()),
        other => Err(ModelError::InvalidConfig {
            field: "in_channels",
            reason: format!("images can be read for 1 or 3 channels, not {other}"),
        }),
    }
}

/// Resizes the shorter side to `side` (keeping the aspect ratio, as torchvision's
/// `Resize(int)`) and crops the centre `side × side` (as `CenterCrop`).
fn fit<P: Pixel + 'static>(
    img: ImageBuffer<P, Vec<P::Subpixel>>,
    side: u32,
) -> ImageBuffer<P, Vec<P::Subpixel>> {
    let (w, h) = img.dimensions();
    if (w, h) == (side, side) {
        return img;
    }
    let scale = |long: u32, short: u32| {
        ((u64::from(side) * u64::from(long)) / u64::from(short)).max(u64::from(side)) as u32
    };
    let (nw, nh) = if w <= h {
        (side, scale(h, w))
    } else {
        (scale(w, h), side)
    };
    let resized = if (nw, nh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, nw, nh, FilterType::Triangle)
    };
    let left = ((f64::from(nw - side)) / 2.0).round() as u32;
    let top = ((f64::from(nh - side)) / 2.0).round() as u32;
    image::imageops::crop_imm(&resized, left, top, side, side).to_image()
}

//! Image decoding with limits. The header is read first, so a decompression bomb (a small
//! file that declares a huge canvas) is rejected before any pixel memory is allocated.
//!
//! Valid images in unusual encodings are converted rather than rejected: 16-bit samples are
//! scaled to 8 bits, alpha is composited over white (how the image shows on a page), CMYK
//! JPEGs are converted to RGB by the decoder. `SourceImage::color` records what the file held.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Decoding limits.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeLimits {
    /// Largest canvas accepted, in pixels. Default 89,478,485, Pillow's `MAX_IMAGE_PIXELS`.
    pub max_pixels: u64,
    /// Largest file accepted, in bytes. Default 64 MiB.
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 89_478_485,
            max_bytes: 64 << 20,
        }
    }
}

/// A decoded image, greyscale for OCR.
pub(crate) struct SourceImage {
    pub format: ImageFormat,
    /// The file's own colour type as the decoder reports it (`Rgba16`, `Cmyk8`, …).
    pub color: String,
    pub gray: GrayImage,
}

/// Why an image could not be decoded. `kind` is a stable short name for counting.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub kind: &'static str,
    pub message: String,
}

fn err(kind: &'static str, message: impl Into<String>) -> DecodeError {
    DecodeError {
        kind,
        message: message.into(),
    }
}

pub(crate) fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<SourceImage, DecodeError> {
    if bytes.is_empty() {
        return Err(err("empty_file", "the file is empty (0 bytes)"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err("read", e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(err(
            "not_an_image",
            "not an image: the content matches no known image format",
        ));
    };
    let mut decoder = reader.into_decoder().map_err(|e| classify(format, e))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(err(
            "too_many_pixels",
            format!(
                "{width}x{height} = {pixels} pixels is over the pixel limit of {}; decompression bomb or huge image",
                limits.max_pixels
            ),
        ));
    }
    if width == 0 || height == 0 {
        return Err(err("decode", format!("the image is {width}x{height}")));
    }
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        // The JPEG decoder fills a truncated scan with grey instead of failing.
        return Err(err(
            "truncated",
            "jpeg: truncated: no end-of-image marker after the last scan",
        ));
    }
    let color = if format == ImageFormat::Jpeg && jpeg_components(bytes) == Some(4) {
        // The decoder converts CMYK (and YCCK) to RGB and reports the result's type.
        "Cmyk8".to_string()
    } else {
        format!("{:?}", decoder.original_color_type())
    };
    let mut decode_limits = Limits::default();
    // Enough for the largest accepted canvas at 16 bits per channel with alpha, plus slack.
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(1 << 26));
    decoder
        .set_limits(decode_limits)
        .map_err(|e| classify(format, e))?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| classify(format, e))?;
    Ok(SourceImage {
        format,
        color,
        gray: to_gray(&image),
    })
}

fn classify(format: ImageFormat, e: image::ImageError) -> DecodeError {
    use image::ImageError as E;
    let name = format!("{format:?}").to_lowercase();
    match e {
        E::Unsupported(u) => err(
            "unsupported",
            format!("{name}: unsupported by the decoder: {u}"),
        ),
        E::Limits(l) => err("too_many_pixels", format!("{name}: {l}")),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => err(
            "truncated",
            format!("{name}: truncated: the data ends early ({io})"),
        ),
        other => err("decode", format!("{name}: corrupt or truncated: {other}")),
    }
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan (FF DA). Scan
/// data byte-stuffs FF as FF 00, so neither marker can appear inside it; EXIF thumbnails
/// come before the main image's scans and data appended after EOI is ignored.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let Some(last_sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[last_sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Number of colour components in a JPEG's frame header (SOFn), walking the marker segments.
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        let length = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if is_sof {
            return bytes.get(i + 9).copied();
        }
        i += 2 + length;
    }
    None
}

/// Greyscale for OCR; alpha is composited over white.
fn to_gray(image: &DynamicImage) -> GrayImage {
    if !image.color().has_alpha() {
        return image.to_luma8();
    }
    let la = image.to_luma_alpha8();
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [l, a] = la.get_pixel(x, y).0;
        let (l, a) = (u32::from(l), u32::from(a));
        image::Luma([((l * a + 255 * (255 - a) + 127) / 255) as u8])
    })
}

/// The file extension WebDataset consumers expect for a format.
pub(crate) fn extension(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpg",
        other => other.extensions_str().first().copied().unwrap_or("bin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_pixels_turn_white_and_opaque_keep_their_grey() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        let gray = to_gray(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(gray.as_raw(), &[255, 0]);
    }
}

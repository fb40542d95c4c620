//! `init_image`: the picture a generation starts from (regenerating one line of an earlier
//! result). A client names a file of its own earlier generation or sends a base64 PNG; the
//! route checks it when the job is submitted and the worker loads it again when the job runs
//! (the stored input keeps the reference, not the pixels of a file).

use std::io::Cursor;

use base64::Engine as _;
use image::{DynamicImage, ImageFormat, RgbImage};

use crate::error::ApiError;
use crate::ids;
use crate::input::MAX_SIDE;
use crate::store::{Store, now_ms};

/// Decodes `init_image` for `owner`; the image must be `width`×`height`.
pub fn load(
    store: &Store,
    owner: &str,
    reference: &str,
    (width, height): (u32, u32),
) -> Result<RgbImage, ApiError> {
    let image = decode(store, owner, reference, "init_image")?;
    if image.dimensions() != (width, height) {
        return Err(ApiError::invalid(
            "init_image",
            format!(
                "init_image is {}×{} but the generation is {width}×{height}; give the same \
                 width and height (or the same layout) as the image's generation",
                image.width(),
                image.height()
            ),
        ));
    }
    Ok(image)
}

/// The bytes of the caller's own, unexpired image file.
fn file_bytes(store: &Store, owner: &str, id: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    let unknown = || {
        ApiError::invalid(
            field,
            format!("{field}: no image file {id:?} (unknown, expired or not yours)"),
        )
    };
    if !ids::is_valid(id, ids::FILE_PREFIX) {
        return Err(unknown());
    }
    let record = match store.file(id)? {
        Some(r) if r.owner == owner && r.kind == "image" && r.expires_ms > now_ms() => r,
        _ => return Err(unknown()),
    };
    if record.content_type != "image/png" {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field}: file {id} is {}; use a PNG result (output_format png)",
                record.content_type
            ),
        ));
    }
    match store.read_file(&record) {
        Ok(Some(bytes)) => Ok(bytes),
        _ => Err(unknown()),
    }
}

/// Decodes a picture the request names in `field`: a file id of the caller's own PNG result
/// or a base64 PNG (a data URL's header is optional).
pub fn decode(
    store: &Store,
    owner: &str,
    reference: &str,
    field: &str,
) -> Result<RgbImage, ApiError> {
    Ok(decode_exact(store, owner, reference, field)?.to_rgb8())
}

/// [`decode`] without the conversion to 8-bit RGB: the picture as the PNG holds it.
pub fn decode_exact(
    store: &Store,
    owner: &str,
    reference: &str,
    field: &str,
) -> Result<DynamicImage, ApiError> {
    let bytes = if reference.starts_with(ids::FILE_PREFIX) {
        file_bytes(store, owner, reference, field)?
    } else {
        let b64 = reference
            .split_once(";base64,")
            .map_or(reference, |(_, b)| b);
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| {
                ApiError::invalid(
                    field,
                    format!(
                        "{field} must be a file id of an earlier generation's image (file_…) \
                         or a base64 PNG"
                    ),
                )
            })?
    };
    let not_png =
        |e: image::ImageError| ApiError::invalid(field, format!("{field} is not a PNG: {e}"));
    // The header first: a small file may declare a huge canvas, refused before any pixel
    // memory is allocated.
    let (width, height) = image::ImageReader::with_format(Cursor::new(&bytes), ImageFormat::Png)
        .into_dimensions()
        .map_err(not_png)?;
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ApiError::invalid(
            field,
            format!("{field} is {width}×{height}; no side may be over {MAX_SIDE}"),
        ));
    }
    image::load_from_memory_with_format(&bytes, ImageFormat::Png).map_err(not_png)
}

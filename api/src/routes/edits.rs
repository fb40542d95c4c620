//! `POST /v1/edits`: replace text in a picture, as a job followed like a generation.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use image::DynamicImage;
use letterpress_render::Renderer;

use super::JsonBody;
use super::generations::{answer_submitted, idempotency_key, require_model};
use crate::auth::Caller;
use crate::edit_input::{EditSpec, edit_input, split};
use crate::error::ApiError;
use crate::schema::{EditRequest, Generation};
use crate::state::AppState;

#[utoipa::path(
    post,
    path = "/v1/edits",
    operation_id = "createEdit",
    summary = "Edit the text of a picture",
    description = "Queues a job that replaces each `old` text of the picture (found by OCR) with its `new` text, inpainted in place; every pixel outside the edited boxes stays the picture's. The job is followed, canceled and answered like a generation (`/v1/generations/{id}`): its layout is the new lines, its mask the edited region, `output.certificates[0]` how the new text reads back. An `old` that is not in the picture or a `new` that cannot be drawn is a 400 naming `replacements[i].old` or `.new` (the server checks the edit with OCR before queueing it).",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body = EditRequest,
    responses(
        (status = 201, description = "Created.", body = Generation),
        (status = 200, description = "Replayed: an earlier request with this Idempotency-Key.", body = Generation),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (spec, rest) = split(body.clone())?;
    let image = crate::init_image::decode_exact(&state.store, &caller.owner, &spec.image, "image")?;
    check_keepable(&image)?;
    check_drawable(&state.renderer, &spec)?;
    let pairs: Vec<(String, String)> = spec
        .replacements
        .iter()
        .map(|r| (r.old.clone(), r.new.clone()))
        .collect();
    let input = edit_input(
        spec,
        rest,
        (image.width(), image.height()),
        &state.schedulers(),
        &state.settings.limits(),
    )?;
    require_model(&state)?;
    // Last, once everything cheap has passed: the edit as the engine will plan it (OCR).
    if let Some(check) = state.edit_check.get().cloned() {
        let rgb = image.to_rgb8();
        tokio::task::spawn_blocking(move || check(&rgb, &pairs))
            .await
            .map_err(|e| ApiError::internal(format!("edit check: {e}")))?
            .map_err(|r| ApiError::invalid(r.field, r.message))?;
    }
    answer_submitted(&state, &caller, &headers, &input, key.as_deref(), &body).await
}

/// Every pixel outside the edited boxes must come back as it was, and the result is an 8-bit
/// RGB PNG: a picture with transparency or 16-bit samples is refused rather than changed
/// everywhere.
fn check_keepable(image: &DynamicImage) -> Result<(), ApiError> {
    let color = image.color();
    if color.bytes_per_pixel() / color.channel_count() > 1 {
        return Err(ApiError::invalid(
            "image",
            format!(
                "image has {color:?} samples, which the edited PNG (8-bit RGB) cannot keep: \
                 send it as 8-bit"
            ),
        ));
    }
    if color.has_alpha() && image.to_rgba8().pixels().any(|p| p.0[3] < 255) {
        return Err(ApiError::invalid(
            "image",
            "image has transparent pixels, which the edited PNG (RGB) cannot keep: flatten it \
             first",
        ));
    }
    Ok(())
}

/// The checks that need no OCR, made before a job exists: each text has something to look
/// for or draw, and every character of a new text has a font.
fn check_drawable(renderer: &Renderer, spec: &EditSpec) -> Result<(), ApiError> {
    for (i, r) in spec.replacements.iter().enumerate() {
        for (name, text) in [("old", &r.old), ("new", &r.new)] {
            if !text.chars().any(char::is_alphanumeric) {
                return Err(ApiError::invalid(
                    format!("replacements[{i}].{name}"),
                    format!("{text:?} has no letters or digits"),
                ));
            }
        }
        for ch in r.new.chars().filter(|c| !c.is_whitespace()) {
            let drawable = renderer.font_for_char(ch, None).ok().flatten().is_some();
            if !drawable {
                return Err(ApiError::invalid(
                    format!("replacements[{i}].new"),
                    format!(
                        "no installed font has a glyph for {ch:?} (U+{:04X})",
                        ch as u32
                    ),
                ));
            }
        }
    }
    Ok(())
}

//! `POST /v1/edits`: replace text in a picture, as a job followed like a generation.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::JsonBody;
use super::generations::{answer_submitted, idempotency_key, require_model};
use crate::auth::Caller;
use crate::edit_input::{edit_input, split};
use crate::error::ApiError;
use crate::schema::{EditRequest, Generation};
use crate::state::{AppState, ModelState};

#[utoipa::path(
    post,
    path = "/v1/edits",
    operation_id = "createEdit",
    summary = "Edit the text of a picture",
    description = "Queues a job that replaces each `old` text of the picture (found by OCR, or in a Letterpress PNG's own layout) with its `new` text, inpainted in place; every pixel outside the edited boxes stays the picture's. The job is followed, canceled and answered like a generation (`/v1/generations/{id}`): its layout is the new lines, its mask the edited region, `output.certificates[0]` how the new text reads back. An `old` that is not in the picture or a `new` that cannot be drawn fails the job (`unsupported`) with a message naming `replacements[i].old` or `.new`.",
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
    let schedulers = match state.model_state() {
        ModelState::Ready(info) => info.schedulers,
        _ => Vec::new(),
    };
    let (spec, rest) = split(body.clone())?;
    let image = crate::init_image::decode(&state.store, &caller.owner, &spec.image, "image")?;
    let limits = state.settings.limits();
    let input = edit_input(spec, rest, image.dimensions(), &schedulers, &limits)?;
    require_model(&state)?;
    answer_submitted(&state, &caller, &headers, &input, key.as_deref(), &body).await
}

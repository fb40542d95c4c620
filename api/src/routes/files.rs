//! `GET /v1/files/{id}`: images, masks and layouts. Ids are checked against the id format and
//! looked up in the store; the file name on disk comes from the store, never from the client.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::ids;
use crate::schema::{Binary, FileId};
use crate::state::AppState;
use crate::store::now_ms;

#[utoipa::path(
    get,
    path = "/v1/files/{id}",
    operation_id = "getFile",
    summary = "Download a file",
    params(FileId),
    responses((status = 200, description = "Image, mask or layout.", content(
        (Binary = "image/png"),
        (Binary = "image/jpeg"),
        (Binary = "image/webp"),
        (Object = "application/json"),
    )))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(FileId { id }): Path<FileId>,
) -> Result<Response, ApiError> {
    if !ids::is_valid(&id, ids::FILE_PREFIX) {
        return Err(ApiError::not_found("file"));
    }
    let record = match state.store.file(&id)? {
        Some(r) if r.owner == caller.owner => r,
        _ => return Err(ApiError::not_found("file")),
    };
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            "file_expired",
            format!(
                "file {id} has expired (files are kept {} s)",
                state.settings.file_ttl_secs
            ),
        )
    };
    if record.expires_ms <= now_ms() {
        return Err(gone());
    }
    let bytes = match state.store.read_file(&record) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(gone()),
        Err(e) => return Err(e.into()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, record.content_type.clone()),
            (
                header::CACHE_CONTROL,
                "private, max-age=86400, immutable".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{}\"", record.name),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        bytes,
    )
        .into_response())
}

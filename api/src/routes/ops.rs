//! Health, readiness, metrics, the OpenAPI document and its docs page, and the JSON 404/405.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::openapi;
use crate::state::{AppState, ModelState};

pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// 200 when requests can be served (planning and rendering always can; generation once the
/// model is loaded, or never without one); 503 while the model loads or during shutdown.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, generation) = match state.model_state() {
        ModelState::Absent => (
            true,
            json!({ "available": false, "reason": "no model configured (model_dir)" }),
        ),
        ModelState::Loading => (
            false,
            json!({ "available": false, "reason": "the model is loading" }),
        ),
        ModelState::Ready(info) => (
            true,
            json!({ "available": true, "model": info.model, "schedulers": info.schedulers }),
        ),
        ModelState::Failed(_) => (
            true,
            json!({ "available": false, "reason": "the model failed to load (see the server log)" }),
        ),
    };
    let ready = ready && !state.is_shutting_down();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        json!({ "status": if ready { "ready" } else { "not_ready" }, "generation": generation });
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let queued = state.store.queued_count()?;
    let counts = state.store.counts_by_status()?;
    let loaded = matches!(state.model_state(), ModelState::Ready(_));
    let text = state.metrics.render(queued, &counts, loaded);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn openapi(State(state): State<AppState>) -> Response {
    axum::Json(openapi::document(&state)).into_response()
}

pub async fn docs(State(state): State<AppState>) -> Html<String> {
    Html(openapi::docs_page(&openapi::document(&state)))
}

pub async fn index() -> Response {
    axum::Json(json!({
        "service": "letterpress",
        "docs": "/docs",
        "openapi": "/openapi.json",
    }))
    .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /docs",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /docs",
    )
}

//! Health, readiness, metrics, the OpenAPI document and its docs page, and the JSON 404/405.

use crate::error::ApiError;
use crate::openapi;
use crate::schema::{GenerationAvailability, Health, Readiness, ServiceIndex};
use crate::state::{AppState, ModelState};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn healthz() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

/// Whether generation is possible, and if not, why.
fn availability(model: ModelState) -> GenerationAvailability {
    let unavailable = |reason| GenerationAvailability {
        available: false,
        reason: Some(reason),
        model: None,
        schedulers: None,
    };
    match model {
        ModelState::Absent => unavailable("no model configured (model_dir)"),
        ModelState::Loading => unavailable("the model is loading"),
        ModelState::AwaitingWorker => unavailable("no worker has registered a model yet"),
        ModelState::Ready(info) => GenerationAvailability {
            available: true,
            reason: None,
            model: Some(info.model),
            schedulers: Some(info.schedulers),
        },
        ModelState::Failed(_) => unavailable("the model failed to load (see the server log)"),
    }
}

/// 200 when requests can be served (planning and rendering always can; generation once the
/// model is loaded, or never without one); 503 while the model loads or during shutdown.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness",
    security(()),
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Loading or shutting down.", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let model = state.model_state();
    let ready = !matches!(model, ModelState::Loading | ModelState::AwaitingWorker)
        && !state.is_shutting_down();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        generation: availability(model),
        queue: state.queues(),
    };
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Needs the API key when the server has keys (Prometheus: `authorization: {credentials: KEY}`).",
    responses((status = 200, description = "Text exposition format.", content((String = "text/plain"))))
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let queued = state.store.queued_count()?;
    let counts = state.store.counts_by_status()?;
    let loaded = matches!(state.model_state(), ModelState::Ready(_));
    let mut text = state.metrics.render(queued, &counts, loaded);
    if let Some(queues) = state.queues() {
        text.push_str(&crate::metrics::render_queues(&queues));
    }
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
    axum::Json(ServiceIndex {
        service: "letterpress",
        docs: "/docs",
        openapi: "/openapi.json",
    })
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

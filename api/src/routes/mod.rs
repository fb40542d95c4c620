//! The HTTP surface: `app(state)` builds the router, so tests drive it with `oneshot`.

mod designer;
pub(crate) mod edits;
pub(crate) mod files;
pub(crate) mod generations;
pub(crate) mod openai;
pub(crate) mod ops;
pub(crate) mod plan;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) use generations::job_view;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The service's router with all its layers.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/layouts", post(plan::layouts))
        .route("/v1/render", post(plan::render))
        .route("/v1/generations", post(generations::create))
        .route("/v1/edits", post(edits::create))
        .route("/v1/generations/{id}", get(generations::get))
        .route("/v1/generations/{id}/events", get(generations::events))
        .route("/v1/generations/{id}/cancel", post(generations::cancel))
        .route("/v1/files/{id}", get(files::get))
        .route("/v1/images/generations", post(openai::create))
        // Queue depth and job counts are the operator's business: behind the keys too.
        .route("/metrics", get(ops::metrics))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    let cors = cors_layer(&state.settings.cors_origins);
    let body_limit = state.settings.max_body_bytes;
    let router = Router::new()
        .merge(v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
        .route("/docs", get(ops::docs))
        .route("/", get(designer::index))
        .route("/assets/{name}", get(designer::asset))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(axum::middleware::map_response(errors_as_json));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                // Every response is logged above with its status; our own 5xx causes are logged
                // where they happen (ApiError::internal). A 503 while loading is no failure.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RandomRequestId))
        .with_state(state)
}

/// Every error answer in the service's shape: one the framework wrote as plain text (a path
/// that does not decode, a query that does not parse) becomes the JSON error object, its text
/// the message.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    // A framework's 5xx text may carry internals; its 4xx text says what was wrong.
    let message = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut error = ApiError::new(status, crate::error::code_for_status(status), message);
    error.retry_after = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut json = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().entry(name).or_insert(value.clone());
        }
    }
    json
}

/// `req_` and 16 random hex digits, unless the client sent its own `x-request-id`.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&format!("req_{:016x}", rand::random::<u64>()))
            .ok()
            .map(RequestId::new)
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // `null` is what Figma plug-ins (sandboxed iframes) send; it is listed like any origin.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("prefer"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                header::LOCATION,
                REQUEST_ID.clone(),
                HeaderName::from_static("preference-applied"),
            ])
            .max_age(Duration::from_secs(3600)),
    )
}

/// A JSON request body. Failures use the service's error shape: 415 for another content
/// type, 413 over the size limit, 400 for JSON that does not parse.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large(state.settings.max_body_bytes)
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("reading the body: {e}"),
                )
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })
    }
}

/// Where absolute URLs in answers point: `public_url`, else the request's `Host`.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.settings.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(h) => format!("http://{h}"),
        None => String::new(),
    }
}

/// `Retry-After` for a full queue: a rough guess from the queue length.
pub fn queue_retry_after(queued: usize) -> u64 {
    (queued as u64 * 5).clamp(1, 120)
}

/// Adds `Location`, `Preference-Applied` and similar headers to a response.
pub fn with_header(mut response: Response, name: &'static str, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), v);
    }
    response
}

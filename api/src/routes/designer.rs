//! The designer page at `/` and its two assets, embedded at build time (api/build.rs) from
//! `plugin/web/dist`. Clients that do not ask for HTML still get the JSON index at `/`.

use axum::extract::Path;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX_HTML: &str = include_str!(concat!(env!("LETTERPRESS_DESIGNER_DIR"), "/index.html"));
const DESIGNER_JS: &str = include_str!(concat!(env!("LETTERPRESS_DESIGNER_DIR"), "/designer.js"));
const DESIGNER_CSS: &str = include_str!(concat!(env!("LETTERPRESS_DESIGNER_DIR"), "/designer.css"));

/// Browsers (`Accept: text/html`) get the designer; API clients the JSON index.
pub async fn index(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        return super::ops::index().await;
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (content_type, body) = match name.as_str() {
        "designer.js" => ("text/javascript; charset=utf-8", DESIGNER_JS),
        "designer.css" => ("text/css; charset=utf-8", DESIGNER_CSS),
        _ => return Err(ApiError::not_found("asset")),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

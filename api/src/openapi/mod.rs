//! The OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]` attributes and the
//! request and response types in `crate::schema`, then fitted to this server: its limits,
//! its model's schedulers and its planners (see `limits`). A self-contained HTML page reads it.

mod errors;
mod limits;
mod page;

use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::job_error::JobErrorCode;
use crate::routes::{edits, files, generations, openai, ops, plan};
use crate::schema;
use crate::state::AppState;
use errors::ErrorResponses;

pub use page::docs_page;

/// Sides offered through the OpenAI shim's `size` (`WxH` from any two of these).
pub const OPENAI_SIDES: &[u32] = &[64, 128, 256, 512, 768, 1024, 1536, 1792, 2048];

/// `WxH` for every pair of [`OPENAI_SIDES`] up to `max_side`.
pub fn openai_sizes(max_side: u32) -> Vec<String> {
    let sides: Vec<u32> = OPENAI_SIDES
        .iter()
        .copied()
        .filter(|s| *s <= max_side)
        .collect();
    sides
        .iter()
        .flat_map(|w| sides.iter().map(move |h| format!("{w}x{h}")))
        .collect()
}

/// The service's operations and types. `servers` is left out so clients use the address
/// they called.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Letterpress",
        description = "Text-in-image poster generation: plan a layout, render its glyph mask, generate posters with a glyph ControlNet. Jobs follow Replicate's conventions; errors and /v1/images/generations follow OpenAI's."
    ),
    paths(
        plan::layouts,
        plan::render,
        generations::create,
        edits::create,
        generations::get,
        generations::events,
        generations::cancel,
        files::get,
        openai::create,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(
        ErrorBody,
        JobErrorCode,
        schema::GenerationOutput,
        schema::GenerationMetrics,
        schema::Keywords,
    )),
    security((), ("bearer" = [])),
    modifiers(&BearerScheme, &ErrorResponses)
)]
struct ApiDoc;

/// The optional API key, as a bearer token.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("Only when the server is configured with api_key_hashes.".into());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// The document for this server.
pub fn document(state: &AppState) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| {
        // Serializing a derived document cannot fail; answer an empty one rather than panic.
        tracing::error!(error = %e, "serializing the OpenAPI document");
        Value::Null
    });
    limits::fit(&mut doc, state);
    doc
}

#[cfg(test)]
mod tests;

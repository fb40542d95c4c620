//! Path parameters. Handlers extract these types, so the names the document gives are the
//! names the router matches.

use serde::Deserialize;
use utoipa::IntoParams;

/// The `{id}` of a generation's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct GenerationId {
    /// `gen_` and 32 hex digits
    pub id: String,
}

/// The `{id}` of `/v1/files/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FileId {
    /// `file_` and 32 hex digits
    pub id: String,
}

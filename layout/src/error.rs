use thiserror::Error;

/// Errors from reading or converting layouts.
#[derive(Debug, Error)]
pub enum LayoutError {
    /// The layout JSON did not parse; the message names the field and position.
    #[error("invalid layout JSON: {0}")]
    Json(#[from] serde_json::Error),
}

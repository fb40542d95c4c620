//! The poster engine's one error type: what went wrong, in the engine's words (fields and
//! values, never a front end's flag or parameter; the caller maps them).

use letterpress_layout::LayoutError;
use letterpress_render::RenderError;

/// Why a poster was not made.
#[derive(Debug, thiserror::Error)]
pub enum PosterError {
    /// The request cannot be made as asked; `field` names the request field at fault.
    #[error("{field}: {message}")]
    Request {
        field: &'static str,
        message: String,
    },

    /// An edit cannot be made as asked; `field` names the edit request's field at fault
    /// (`replacements[0].old`, …).
    #[error("{field}: {message}")]
    Edit { field: String, message: String },

    /// The layout could not be planned (bad keywords or canvas, or the LLM planner failed).
    #[error("planning the layout: {0}")]
    Layout(#[from] LayoutError),

    /// The layout could not be drawn (a box off the canvas, a character no font has, …).
    #[error("rendering the glyph mask: {0}")]
    Render(#[from] RenderError),

    /// Loading or running the diffusion model failed.
    #[error(transparent)]
    Model(letterpress_diffusion::Error),

    /// Tesseract could not start or read an image (verification and repair).
    #[error("reading the text back: {0}")]
    Ocr(#[from] letterpress_ocr::OcrError),

    /// The caller's stop check fired between stages or denoising steps.
    #[error("stopped before the poster was finished")]
    Stopped,
}

impl PosterError {
    pub(crate) fn request(field: &'static str, message: impl Into<String>) -> Self {
        PosterError::Request {
            field,
            message: message.into(),
        }
    }

    /// True when the request itself is at fault (a client error), false for failures of the
    /// planner's server, the model or the machine.
    pub fn is_request_error(&self) -> bool {
        match self {
            PosterError::Request { .. } | PosterError::Edit { .. } | PosterError::Render(_) => true,
            PosterError::Layout(e) => !matches!(e, LayoutError::Llm { .. }),
            PosterError::Model(e) => matches!(e, letterpress_diffusion::Error::Request(_)),
            PosterError::Ocr(_) | PosterError::Stopped => false,
        }
    }
}

impl From<letterpress_diffusion::Error> for PosterError {
    fn from(e: letterpress_diffusion::Error) -> Self {
        match e {
            letterpress_diffusion::Error::Canceled => PosterError::Stopped,
            other => PosterError::Model(other),
        }
    }
}

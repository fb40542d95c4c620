use thiserror::Error;

/// Errors from reading layouts and planning them.
#[derive(Debug, Error)]
pub enum LayoutError {
    /// The layout JSON did not parse; the message names the field and position.
    #[error("invalid layout JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("{count} keywords given; the planner places at most {max}")]
    TooManyKeywords { count: usize, max: usize },

    #[error("keyword {index} has {chars} characters; at most {max} are allowed")]
    KeywordTooLong {
        index: usize,
        chars: usize,
        max: usize,
    },

    /// A keyword with nothing to draw: only zero-width, control, private-use or space
    /// characters. It would be planned as an empty box that rendering refuses.
    #[error(
        "keyword {index} ({keyword:?}) has no visible character (only zero-width, control, \
         private-use or space characters); give text that can be drawn"
    )]
    InvisibleKeyword { index: usize, keyword: String },

    #[error(
        "canvas {width}x{height} is out of range: sides must be {min}..={max} pixels and the aspect between 1:4 and 4:1"
    )]
    CanvasSize {
        width: u32,
        height: u32,
        min: u32,
        max: u32,
    },

    #[error("measuring {text:?}: {message}")]
    Measure { text: String, message: String },

    /// The LLM planner could not be reached or answered with an error.
    #[error("LLM planner at {url}: {message}")]
    Llm { url: String, message: String },

    /// An edit instruction that names no understood change or no line of the layout.
    #[error(
        "could not understand the edit {instruction:?}: {reason}. Understood edits: make TARGET \
         larger or smaller, move TARGET to the top, bottom, left or right, align TARGET left, \
         center or right; TARGET is the title, the date, a line's text (in quotes or not), the \
         first/second/third/last line, or everything"
    )]
    UnclearEdit { instruction: String, reason: String },

    /// Strict mode: the LLM's answer held no usable layout.
    #[error("the LLM's answer holds no usable layout ({reason}); raw answer:\n{raw}")]
    UnusableAnswer { reason: String, raw: String },
}

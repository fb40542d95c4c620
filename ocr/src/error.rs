use thiserror::Error;

/// Errors from OCR.
#[derive(Debug, Error)]
pub enum OcrError {
    #[error(
        "cannot start tesseract for languages {languages:?}: {message} (scripts/setup installs tesseract-ocr-eng; other languages need their tesseract-ocr-LANG package)"
    )]
    Init { languages: String, message: String },

    #[error("tesseract failed on the image: {0}")]
    Recognize(String),

    #[error("image {width}x{height} is too large or empty for OCR")]
    ImageSize { width: u32, height: u32 },
}

/// Errors that stop a dataset build. Problems with single images are not errors of the build:
/// they are written to `errors.jsonl`.
#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: not a readable WebDataset tar shard: {message}")]
    BadShard {
        path: std::path::PathBuf,
        message: String,
    },

    #[error("{path}: unreadable output of an earlier run: {message}")]
    BadOutput {
        path: std::path::PathBuf,
        message: String,
    },

    #[error(
        "{path} belongs to a run with other settings or inputs (differing: {fields}); resume with the same options or use a new output folder"
    )]
    DifferentRun {
        path: std::path::PathBuf,
        fields: String,
    },

    #[error("{0}")]
    Config(String),

    #[error("the build was cancelled")]
    Cancelled,

    #[error(transparent)]
    Ocr(#[from] OcrError),

    #[error("glyph renderer: {0}")]
    Render(#[from] letterpress_render::RenderError),
}

impl DatasetError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

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

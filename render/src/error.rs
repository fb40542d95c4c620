use std::path::PathBuf;

use letterpress_layout::BBox;
use thiserror::Error;

/// Errors from the glyph renderer. Each names the line, font or character at fault and says
/// what is allowed.
#[derive(Debug, Error)]
pub enum RenderError {
    #[error("canvas {width}x{height} is out of range: each side must be 1..={max} pixels")]
    CanvasSize { width: u32, height: u32, max: u32 },

    #[error(
        "line {line}: box [{}, {}, {}, {}] has zero or negative size (need right > left and bottom > top)",
        bbox.left, bbox.top, bbox.right, bbox.bottom
    )]
    EmptyBox { line: usize, bbox: BBox },

    #[error(
        "line {line}: box [{}, {}, {}, {}] lies entirely outside the {width}x{height} canvas",
        bbox.left, bbox.top, bbox.right, bbox.bottom
    )]
    BoxOutsideCanvas {
        line: usize,
        bbox: BBox,
        width: u32,
        height: u32,
    },

    #[error("line {line}: text has {chars} characters; at most {max} are allowed per line")]
    LineTooLong {
        line: usize,
        chars: usize,
        max: usize,
    },

    #[error(
        "line {line}: no installed font has a glyph for {ch:?} (U+{:04X}); install a font that \
         covers it or render with the `skip` missing-glyph policy",
        *ch as u32
    )]
    MissingGlyph { line: usize, ch: char },

    #[error("font {spec:?} not found{hint}")]
    FontNotFound { spec: String, hint: String },

    #[error("cannot read font file {path}: {source}")]
    FontIo {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} (face {index}) is not a usable font: {reason}")]
    InvalidFont {
        path: PathBuf,
        index: u32,
        reason: String,
    },
}

//! OCR tooling for Letterpress: tesseract in-process (no subprocess per image), words, lines
//! merged as TextDiffuser-2 merges them, character boxes, and the MARIO-Eval legibility
//! metrics, and the dataset builder (`dataset`).
//!
//! ```no_run
//! use letterpress_ocr::{OcrConfig, OcrEngine};
//!
//! let mut engine = OcrEngine::new(OcrConfig::default())?;
//! let page = engine.recognize(&image::open("poster.png")?.to_luma8())?;
//! for line in &page.lines {
//!     println!("{} {:?}", line.text, line.bbox);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod dataset;
mod engine;
mod error;
mod hocr;
mod lines;
mod metrics;
mod text_regions;

pub use engine::{OcrChar, OcrConfig, OcrEngine, OcrPage, OcrWord, tesseract_version};
pub use error::{DatasetError, OcrError};
pub use lines::{OcrLine, merge_lines};
pub use metrics::{ImageScore, Summary, normalize_words, score_image, summarize};
pub use text_regions::{LINE_AREA_SLACK, TextRegions};

//! Tesseract in-process through the `tesseract` crate: one engine per worker thread.
//! Set `OMP_THREAD_LIMIT=1` in the process environment before starting engines for bulk OCR;
//! tesseract's own OpenMP threads otherwise fight the workers for the cores (docs/architecture.md).

use image::GrayImage;
use letterpress_layout::BBox;
use serde::Serialize;
use tesseract::{PageSegMode, Tesseract};

use crate::lines::{OcrLine, merge_lines};
use crate::{OcrError, hocr};

/// OCR settings.
#[derive(Debug, Clone)]
pub struct OcrConfig {
    /// Tesseract languages, `+`-separated. Default `eng`.
    pub languages: String,
    /// Page segmentation mode (tesseract `--psm`). Default 11, sparse text: posters scatter
    /// words over the image rather than laying out paragraphs.
    pub psm: u32,
    /// Words below this confidence (0–100) are dropped. Default 0 (keep all).
    pub min_confidence: f32,
    /// Also read character boxes (hOCR with `hocr_char_boxes=1`). Default true.
    pub char_boxes: bool,
}

impl Default for OcrConfig {
    fn default() -> Self {
        OcrConfig {
            languages: "eng".into(),
            psm: 11,
            min_confidence: 0.0,
            char_boxes: true,
        }
    }
}

/// A recognised word.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OcrWord {
    pub text: String,
    pub bbox: BBox,
    /// Tesseract's confidence, 0–100.
    pub confidence: f32,
}

/// A recognised character with its symbol box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OcrChar {
    #[serde(rename = "char")]
    pub text: String,
    pub bbox: BBox,
    pub confidence: f32,
}

/// What OCR found on one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OcrPage {
    pub width: u32,
    pub height: u32,
    pub words: Vec<OcrWord>,
    pub lines: Vec<OcrLine>,
    pub chars: Vec<OcrChar>,
}

impl OcrPage {
    /// Mean word confidence, 0 when there are no words.
    pub fn mean_confidence(&self) -> f32 {
        if self.words.is_empty() {
            return 0.0;
        }
        self.words.iter().map(|w| w.confidence).sum::<f32>() / self.words.len() as f32
    }
}

/// The version of the linked tesseract library, for dataset metadata.
pub fn tesseract_version() -> String {
    // SAFETY: TessVersion returns a pointer to a static NUL-terminated string.
    let version =
        unsafe { std::ffi::CStr::from_ptr(tesseract::plumbing::tesseract_sys::TessVersion()) };
    version.to_string_lossy().into_owned()
}

/// One tesseract engine. Not `Sync`: give each worker thread its own.
pub struct OcrEngine {
    // `Tesseract`'s builder methods take `self`; the engine is put back after each call and
    // is `None` only when a call failed, in which case the next image starts a fresh one.
    tess: Option<Tesseract>,
    config: OcrConfig,
}

impl OcrEngine {
    pub fn new(config: OcrConfig) -> Result<Self, OcrError> {
        let tess = start(&config)?;
        Ok(OcrEngine {
            tess: Some(tess),
            config,
        })
    }

    pub fn config(&self) -> &OcrConfig {
        &self.config
    }

    /// Recognises the words, lines and characters of a greyscale image.
    pub fn recognize(&mut self, image: &GrayImage) -> Result<OcrPage, OcrError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 || width > i32::MAX as u32 / 4 || height > i32::MAX as u32 / 4
        {
            return Err(OcrError::ImageSize { width, height });
        }
        let tess = match self.tess.take() {
            Some(t) => t,
            None => start(&self.config)?,
        };
        let fail = |e: &dyn std::fmt::Display| OcrError::Recognize(e.to_string());
        let mut tess = tess
            .set_frame(image.as_raw(), width as i32, height as i32, 1, width as i32)
            .map_err(|e| fail(&e))?
            // Rendered and photographed posters carry no DPI; 300 avoids tesseract's
            // "invalid resolution" guess of 70.
            .set_source_resolution(300)
            .recognize()
            .map_err(|e| fail(&e))?;
        let tsv = tess.get_tsv_text(0).map_err(|e| fail(&e))?;
        let hocr = if self.config.char_boxes {
            Some(tess.get_hocr_text(0).map_err(|e| fail(&e))?)
        } else {
            None
        };
        self.tess = Some(tess);

        let words = parse_tsv(&tsv, self.config.min_confidence);
        let lines = merge_lines(&words);
        let chars = hocr
            .map(|h| {
                hocr::char_boxes(&h)
                    .into_iter()
                    .map(|(text, b, confidence)| OcrChar {
                        text,
                        bbox: BBox::new(b[0], b[1], b[2], b[3]),
                        confidence,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(OcrPage {
            width,
            height,
            words,
            lines,
            chars,
        })
    }
}

fn start(config: &OcrConfig) -> Result<Tesseract, OcrError> {
    let init = |message: String| OcrError::Init {
        languages: config.languages.clone(),
        message,
    };
    let mut tess =
        Tesseract::new(None, Some(&config.languages)).map_err(|e| init(e.to_string()))?;
    tess.set_page_seg_mode(psm(config.psm));
    let tess = if config.char_boxes {
        tess.set_variable("hocr_char_boxes", "1")
            .map_err(|e| init(e.to_string()))?
    } else {
        tess
    };
    Ok(tess)
}

fn psm(mode: u32) -> PageSegMode {
    match mode {
        0 => PageSegMode::PsmOsdOnly,
        1 => PageSegMode::PsmAutoOsd,
        2 => PageSegMode::PsmAutoOnly,
        3 => PageSegMode::PsmAuto,
        4 => PageSegMode::PsmSingleColumn,
        5 => PageSegMode::PsmSingleBlockVertText,
        6 => PageSegMode::PsmSingleBlock,
        7 => PageSegMode::PsmSingleLine,
        8 => PageSegMode::PsmSingleWord,
        9 => PageSegMode::PsmCircleWord,
        10 => PageSegMode::PsmSingleChar,
        12 => PageSegMode::PsmSparseTextOsd,
        13 => PageSegMode::PsmRawLine,
        _ => PageSegMode::PsmSparseText,
    }
}

/// Words (TSV level 5) with non-empty text and at least `min_confidence`.
fn parse_tsv(tsv: &str, min_confidence: f32) -> Vec<OcrWord> {
    tsv.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 12 || f[0] != "5" {
                return None;
            }
            let n = |i: usize| f[i].trim().parse::<i32>().ok();
            let (left, top, w, h) = (n(6)?, n(7)?, n(8)?, n(9)?);
            let confidence: f32 = f[10].trim().parse().ok()?;
            let text = f[11].trim();
            (!text.is_empty() && confidence >= min_confidence).then(|| OcrWord {
                text: text.to_string(),
                bbox: BBox::new(left, top, left + w, top + h),
                confidence,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_words_and_confidence_filter() {
        let tsv = "1\t1\t0\t0\t0\t0\t0\t0\t512\t512\t-1\t\n5\t1\t1\t1\t1\t1\t36\t92\t344\t94\t95.9\tSUMMER\n5\t1\t2\t1\t1\t1\t40\t300\t10\t10\t12.0\t~\n5\t1\t3\t1\t1\t1\t40\t300\t10\t10\t80.0\t \n";
        let words = parse_tsv(tsv, 50.0);
        assert_eq!(
            words,
            [OcrWord {
                text: "SUMMER".into(),
                bbox: BBox::new(36, 92, 380, 186),
                confidence: 95.9
            }]
        );
        assert_eq!(parse_tsv(tsv, 0.0).len(), 2);
    }
}

//! Tesseract in-process through the `tesseract` crate: one engine per worker thread.
//! Set `OMP_THREAD_LIMIT=1` in the process environment before starting engines for bulk OCR;
//! tesseract's own OpenMP threads otherwise fight the workers for the cores (docs/architecture.md).

use std::ffi::CString;

use image::GrayImage;
use letterpress_layout::BBox;
use serde::Serialize;
use tesseract::plumbing::TessBaseApi;
use tesseract::plumbing::leptonica_plumbing::Boxa;
use tesseract::plumbing::tesseract_sys::{
    TessPageIteratorLevel_RIL_TEXTLINE as RIL_TEXTLINE, TessPageIteratorLevel_RIL_WORD as RIL_WORD,
    TessPageSegMode_PSM_COUNT as PSM_COUNT,
};

use crate::lines::{OcrLine, merge_lines};
use crate::text_regions::TextRegions;
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
    // `None` only after a call failed: the next image starts a fresh engine, in case the failed
    // one was left mid-call.
    api: Option<TessBaseApi>,
    config: OcrConfig,
    /// Size of the image set by the last `analyse_layout`, while its layout can be recognised.
    analysed: Option<(u32, u32)>,
}

impl OcrEngine {
    pub fn new(config: OcrConfig) -> Result<Self, OcrError> {
        let api = start(&config)?;
        Ok(OcrEngine {
            api: Some(api),
            config,
            analysed: None,
        })
    }

    pub fn config(&self) -> &OcrConfig {
        &self.config
    }

    /// Recognises the words, lines and characters of a greyscale image.
    pub fn recognize(&mut self, image: &GrayImage) -> Result<OcrPage, OcrError> {
        self.set_image(image)?;
        self.read_page(image.dimensions())
    }

    /// Tesseract's layout analysis alone (no recognition): the text lines it found and how
    /// many words they hold. [`recognize_analysed`](Self::recognize_analysed) then recognises
    /// this same layout, so analysing first costs a survivor nothing and changes nothing in
    /// its result (docs/architecture.md, "OCR first stage").
    pub fn analyse_layout(&mut self, image: &GrayImage) -> Result<TextRegions, OcrError> {
        let api = self.set_image(image)?;
        let (width, height) = image.dimensions();
        // GetComponentImages runs AnalyseLayout when nothing is recognised yet; it returns
        // null for a page where layout analysis found no blocks at all.
        let lines = match api.get_component_images_1(RIL_TEXTLINE, 0) {
            Ok(boxa) => boxes(&boxa),
            Err(_) => Vec::new(),
        };
        // On a page with no lines tesseract keeps no layout, so a second GetComponentImages
        // would run the whole analysis again (as costly as the first) only to find nothing.
        let words = if lines.is_empty() {
            0
        } else {
            match api.get_component_images_1(RIL_WORD, 0) {
                Ok(boxa) => boxa.get_count().max(0) as usize,
                Err(_) => 0,
            }
        };
        self.analysed = Some((width, height));
        Ok(TextRegions {
            width,
            height,
            lines,
            words,
        })
    }

    /// Recognises the image of the last [`analyse_layout`](Self::analyse_layout) on the layout
    /// found there (tesseract's `Recognize` reuses a layout already made for the image).
    pub fn recognize_analysed(&mut self) -> Result<OcrPage, OcrError> {
        let size = self.analysed.take().ok_or_else(|| {
            OcrError::Recognize("recognize_analysed called without analyse_layout".into())
        })?;
        self.read_page(size)
    }

    /// Hands the image to tesseract (which copies it), starting an engine if the last failed.
    fn set_image(&mut self, image: &GrayImage) -> Result<&mut TessBaseApi, OcrError> {
        let (width, height) = image.dimensions();
        // Tesseract takes sizes and the byte count as C ints.
        if width == 0 || height == 0 || u64::from(width) * u64::from(height) > i32::MAX as u64 {
            return Err(OcrError::ImageSize { width, height });
        }
        self.analysed = None;
        let mut api = match self.api.take() {
            Some(a) => a,
            None => start(&self.config)?,
        };
        api.set_image(image.as_raw(), width as i32, height as i32, 1, width as i32)
            .map_err(|e| OcrError::Recognize(e.to_string()))?;
        // Rendered and photographed posters carry no DPI; 300 avoids tesseract's
        // "invalid resolution" guess of 70.
        api.set_source_resolution(300);
        Ok(self.api.insert(api))
    }

    /// Recognises the image already set and reads words, lines and characters.
    fn read_page(&mut self, (width, height): (u32, u32)) -> Result<OcrPage, OcrError> {
        let mut api = self
            .api
            .take()
            .ok_or_else(|| OcrError::Recognize("no image was set before recognition".into()))?;
        let fail = |e: &dyn std::fmt::Display| OcrError::Recognize(e.to_string());
        api.recognize().map_err(|e| fail(&e))?;
        let tsv = text(api.get_tsv_text(0).map_err(|e| fail(&e))?);
        let hocr = if self.config.char_boxes {
            Some(text(api.get_hocr_text(0).map_err(|e| fail(&e))?))
        } else {
            None
        };
        self.api = Some(api);

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

fn text(t: tesseract::plumbing::Text) -> String {
    t.as_ref().to_string_lossy().into_owned()
}

/// The boxes of a leptonica box array, as left, top, right, bottom.
fn boxes(boxa: &Boxa) -> Vec<BBox> {
    (0..boxa.get_count())
        .filter_map(|i| {
            let b = boxa.get_box_copied(i)?;
            let (mut x, mut y, mut w, mut h) = (0, 0, 0, 0);
            b.get_geometry(Some(&mut x), Some(&mut y), Some(&mut w), Some(&mut h));
            Some(BBox::new(x, y, x + w, y + h))
        })
        .collect()
}

fn start(config: &OcrConfig) -> Result<TessBaseApi, OcrError> {
    let init = |message: String| OcrError::Init {
        languages: config.languages.clone(),
        message,
    };
    let languages = CString::new(config.languages.as_str()).map_err(|e| init(e.to_string()))?;
    let mut api = TessBaseApi::create();
    api.init_2(None, Some(&languages))
        .map_err(|e| init(e.to_string()))?;
    // Modes 0–13 are tesseract's; anything else is read as 11, sparse text.
    api.set_page_seg_mode(if config.psm < PSM_COUNT {
        config.psm
    } else {
        11
    });
    if config.char_boxes {
        api.set_variable(c"hocr_char_boxes", c"1")
            .map_err(|e| init(e.to_string()))?;
    }
    Ok(api)
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

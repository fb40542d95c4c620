//! MARIO-10M's filters (TextDiffuser, Chen et al. 2023, §3 "MARIO-10M"): short side ≥ 256,
//! 1–8 text boxes, text area ≥ 10 % of the image, the detected text appears in the caption;
//! plus a mean OCR confidence floor. Each can be loosened or switched off.
//!
//! The first stage (`check_layout`) applies the word-count and text-area filters to bounds
//! from tesseract's layout analysis, before recognition: it rejects only what recognition
//! could not make pass (docs/architecture.md, "OCR first stage").

use std::collections::HashSet;

use serde::Serialize;

use crate::{OcrPage, TextRegions};

/// Filter thresholds; a sample must pass all of them to be kept.
#[derive(Debug, Clone, Serialize)]
pub struct Filters {
    /// Shortest accepted image side of the original, in pixels. Default 256; 0 keeps all.
    pub min_side: u32,
    /// Fewest recognised words. Default 1.
    pub min_words: usize,
    /// Most recognised words. Default 8.
    pub max_words: usize,
    /// Smallest share of the image covered by word boxes, 0–1. Default 0.10.
    pub min_text_area: f32,
    /// Lowest mean word confidence, 0–100. Default 70.
    pub min_mean_confidence: f32,
    /// Smallest share of recognised words found among the caption's words, 0–1, checked only
    /// when the sample has a caption. Default 0.5: MARIO-10M asks that the detected text
    /// appear in the caption; half tolerates OCR misreads. 0 switches it off.
    pub min_caption_match: f32,
}

impl Default for Filters {
    fn default() -> Self {
        Filters {
            min_side: 256,
            min_words: 1,
            max_words: 8,
            min_text_area: 0.10,
            min_mean_confidence: 70.0,
            min_caption_match: 0.5,
        }
    }
}

/// The filter a sample failed, with the measured value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub filter: &'static str,
    pub detail: String,
}

/// Names of the filters in the order they are checked; `_stats.json` counts rejections under
/// these names. `layout_word_count` and `layout_text_area` are the first stage's rejections,
/// made on layout analysis alone: no words at all, or line boxes too small to hold the text
/// area asked for.
pub const FILTER_NAMES: [&str; 7] = [
    "short_side",
    "layout_word_count",
    "layout_text_area",
    "word_count",
    "text_area",
    "confidence",
    "caption",
];

/// Measurements the filters look at; they are also written into each sample's JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measures {
    pub text_area: f32,
    pub mean_confidence: f32,
    /// `None` when there is no caption.
    pub caption_match: Option<f32>,
}

impl Filters {
    /// Checked on the original size before OCR, so small images cost no OCR.
    pub(crate) fn check_size(&self, width: u32, height: u32) -> Result<(), Rejection> {
        let side = width.min(height);
        if side < self.min_side {
            return Err(Rejection {
                filter: "short_side",
                detail: format!("short side {side} < {}", self.min_side),
            });
        }
        Ok(())
    }

    /// The first stage: rejects a page whose layout cannot pass the word-count or text-area
    /// filter, whatever recognition would read in it.
    pub(crate) fn check_layout(&self, regions: &TextRegions) -> Result<(), Rejection> {
        if self.min_words > 0 && regions.is_empty() {
            return Err(Rejection {
                filter: "layout_word_count",
                detail: format!(
                    "layout analysis found no words, at least {} needed",
                    self.min_words
                ),
            });
        }
        let bound = regions.text_area_bound();
        if bound < self.min_text_area {
            return Err(Rejection {
                filter: "layout_text_area",
                detail: format!(
                    "text lines cover {:.3} of the image, so words at most {bound:.3} < {}",
                    regions.line_area(),
                    self.min_text_area
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn measure(page: &OcrPage, caption: Option<&str>) -> Measures {
        let image_area = f64::from(page.width) * f64::from(page.height);
        // Word boxes rarely overlap; their summed area stands for the covered area.
        let covered: f64 = page
            .words
            .iter()
            .map(|w| f64::from(w.bbox.width().max(0)) * f64::from(w.bbox.height().max(0)))
            .sum();
        Measures {
            text_area: (covered / image_area.max(1.0)).min(1.0) as f32,
            mean_confidence: page.mean_confidence(),
            caption_match: caption.map(|c| caption_match(page, c)),
        }
    }

    pub(crate) fn check_text(&self, page: &OcrPage, m: &Measures) -> Result<(), Rejection> {
        let n = page.words.len();
        if n < self.min_words || n > self.max_words {
            return Err(Rejection {
                filter: "word_count",
                detail: format!("{n} words, allowed {}–{}", self.min_words, self.max_words),
            });
        }
        if m.text_area < self.min_text_area {
            return Err(Rejection {
                filter: "text_area",
                detail: format!(
                    "text covers {:.3} of the image < {}",
                    m.text_area, self.min_text_area
                ),
            });
        }
        if m.mean_confidence < self.min_mean_confidence {
            return Err(Rejection {
                filter: "confidence",
                detail: format!(
                    "mean confidence {:.1} < {}",
                    m.mean_confidence, self.min_mean_confidence
                ),
            });
        }
        if let Some(share) = m.caption_match
            && share < self.min_caption_match
        {
            return Err(Rejection {
                filter: "caption",
                detail: format!(
                    "{share:.2} of the words are in the caption < {}",
                    self.min_caption_match
                ),
            });
        }
        Ok(())
    }
}

/// Lower-cased alphanumeric tokens.
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// Share of the page's word tokens that occur among the caption's tokens.
fn caption_match(page: &OcrPage, caption: &str) -> f32 {
    let caption: HashSet<String> = tokens(caption).collect();
    let words: Vec<String> = page.words.iter().flat_map(|w| tokens(&w.text)).collect();
    if words.is_empty() {
        return 0.0;
    }
    words.iter().filter(|w| caption.contains(*w)).count() as f32 / words.len() as f32
}

#[cfg(test)]
mod tests {
    use letterpress_layout::BBox;

    use super::*;
    use crate::OcrWord;

    fn page(words: &[(&str, [i32; 4], f32)]) -> OcrPage {
        OcrPage {
            width: 100,
            height: 100,
            words: words
                .iter()
                .map(|(t, b, c)| OcrWord {
                    text: t.to_string(),
                    bbox: BBox::new(b[0], b[1], b[2], b[3]),
                    confidence: *c,
                })
                .collect(),
            lines: vec![],
            chars: vec![],
        }
    }

    #[test]
    fn each_filter_rejects_by_its_own_name() {
        let f = Filters::default();
        assert_eq!(f.check_size(300, 255).unwrap_err().filter, "short_side");
        assert!(f.check_size(256, 900).is_ok());
        let check = |p: &OcrPage, caption: Option<&str>| {
            f.check_text(p, &Filters::measure(p, caption))
                .map_err(|r| r.filter)
        };
        let good = page(&[
            ("Summer", [0, 0, 50, 20], 90.0),
            ("Sale", [0, 30, 40, 50], 80.0),
        ]);
        assert_eq!(check(&good, None), Ok(()));
        assert_eq!(check(&good, Some("a summer sale poster")), Ok(()));
        assert_eq!(check(&good, Some("a poster")), Err("caption"));
        assert_eq!(check(&page(&[]), None), Err("word_count"));
        let nine: Vec<_> = (0..9)
            .map(|i| ("w", [0, i * 10, 100, i * 10 + 9], 90.0))
            .collect();
        assert_eq!(check(&page(&nine), None), Err("word_count"));
        assert_eq!(
            check(&page(&[("tiny", [0, 0, 10, 10], 90.0)]), None),
            Err("text_area")
        );
        assert_eq!(
            check(&page(&[("blur", [0, 0, 50, 50], 30.0)]), None),
            Err("confidence")
        );
    }

    #[test]
    fn the_first_stage_rejects_empty_layouts_and_small_line_boxes() {
        let f = Filters::default();
        let regions = |lines: Vec<BBox>, words| TextRegions {
            width: 100,
            height: 100,
            lines,
            words,
        };
        let layout = |r: &TextRegions| f.check_layout(r).map_err(|r| r.filter);
        assert_eq!(layout(&regions(vec![], 0)), Err("layout_word_count"));
        let speck = regions(vec![BBox::new(0, 0, 10, 5), BBox::new(50, 50, 70, 60)], 2);
        assert_eq!(layout(&speck), Err("layout_text_area"));
        let line = regions(vec![BBox::new(0, 0, 100, 10)], 3);
        assert_eq!(layout(&line), Ok(()));
        let off = Filters {
            min_words: 0,
            min_text_area: 0.0,
            ..Filters::default()
        };
        assert!(off.check_layout(&regions(vec![], 0)).is_ok());
    }
}

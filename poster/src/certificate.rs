//! The OCR certificate: each planned line's box (with a margin) is read back with tesseract
//! and compared with the line's intended text after MARIO-Eval's normalisation
//! (`letterpress_ocr::score_image`), so a poster says which of its lines can be trusted.

use std::cell::RefCell;

use image::{GrayImage, RgbImage, imageops};
use letterpress_layout::{BBox, Layout};
use letterpress_ocr::{OcrConfig, OcrEngine, score_image};
use serde::Serialize;

use crate::PosterError;

/// Crops are scaled up to at least this height before reading: tesseract misses glyphs much
/// smaller than ~30 px, and posters from 256-pixel models have lines about that tall.
const MIN_READ_HEIGHT: u32 = 64;

/// How one planned line reads back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineCheck {
    /// 0-based index into the layout's lines.
    pub index: usize,
    /// What the line should say.
    pub text: String,
    /// What tesseract read in its box (words joined by spaces; empty when nothing).
    pub read: String,
    /// Levenshtein distance of the normalised words over the longer length: 0 identical,
    /// 1 nothing in common.
    pub edit_distance: f64,
    /// Mean word confidence of the read, 0–100 to two decimals (0 when nothing was read).
    pub confidence: f64,
    /// The normalised words are exactly the intended ones.
    pub ok: bool,
    /// The repair round whose paint the line shows; 0 for the first image.
    pub round: usize,
}

impl LineCheck {
    /// Whether this read is strictly better than `other`: right where it was wrong, else
    /// closer to the intended text.
    pub fn better_than(&self, other: &LineCheck) -> bool {
        (self.ok && !other.ok) || (self.ok == other.ok && self.edit_distance < other.edit_distance)
    }
}

/// A poster image's certificate: every planned line's read and a summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificate {
    /// Lines that read exactly as intended.
    pub lines_ok: usize,
    /// Planned lines.
    pub line_count: usize,
    /// Mean of `1 − edit_distance` over the lines (1 with no lines): ranks images whose
    /// `lines_ok` tie.
    pub score: f64,
    /// Repair rounds run (0: the image as first painted).
    pub rounds: usize,
    /// The seed of each repair round, in order.
    pub repair_seeds: Vec<u64>,
    pub lines: Vec<LineCheck>,
}

impl Certificate {
    /// The summary of `lines`, after `repair_seeds.len()` repair rounds.
    pub fn from_lines(lines: Vec<LineCheck>, repair_seeds: Vec<u64>) -> Self {
        let line_count = lines.len();
        let score = if line_count == 0 {
            1.0
        } else {
            lines.iter().map(|l| 1.0 - l.edit_distance).sum::<f64>() / line_count as f64
        };
        Certificate {
            lines_ok: lines.iter().filter(|l| l.ok).count(),
            line_count,
            score,
            rounds: repair_seeds.len(),
            repair_seeds,
            lines,
        }
    }

    /// Whether this image ranks above `other`: more lines right, then a higher score.
    pub fn ranks_above(&self, other: &Certificate) -> bool {
        (self.lines_ok, self.score) > (other.lines_ok, other.score)
    }

    /// The certificate as JSON (what the PNG's `certificate` chunk holds).
    pub fn to_json(&self) -> String {
        // Plain strings and numbers always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Line `index`'s box grown by a margin of a quarter of its height (at least 4 px), clamped to
/// a `width`×`height` image, as `(left, top, right, bottom)`; `None` when nothing is left.
pub fn read_box(bbox: &BBox, (width, height): (u32, u32)) -> Option<(u32, u32, u32, u32)> {
    // In i64: a given layout's box may lie anywhere in the i32 range.
    let (left, top, right, bottom) = (
        i64::from(bbox.left),
        i64::from(bbox.top),
        i64::from(bbox.right),
        i64::from(bbox.bottom),
    );
    let margin = ((bottom - top) / 4).max(4);
    let clamp = |v: i64, max: u32| v.clamp(0, i64::from(max)) as u32;
    let l = clamp(left - margin, width);
    let t = clamp(top - margin, height);
    let r = clamp(right + margin, width);
    let b = clamp(bottom + margin, height);
    (r > l && b > t).then_some((l, t, r, b))
}

thread_local! {
    // Tesseract is not `Sync` and takes a moment to start: one engine per thread, kept.
    static OCR: RefCell<Option<OcrEngine>> = const { RefCell::new(None) };
}

/// Reads `crop` with this thread's certificate engine (psm 6: a block of one or a few lines).
fn read_crop(crop: &GrayImage) -> Result<(String, f64), PosterError> {
    OCR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let engine = match slot.as_mut() {
            Some(e) => e,
            None => slot.insert(OcrEngine::new(OcrConfig {
                psm: 6,
                char_boxes: false,
                ..Default::default()
            })?),
        };
        let page = engine.recognize(crop)?;
        let read = page
            .words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        // Two decimals: the same number whether read as f32 or f64 from the JSON.
        let confidence = (f64::from(page.mean_confidence()) * 100.0).round() / 100.0;
        Ok((read, confidence))
    })
}

/// Reads line `index` of `layout` (drawn at `image`'s size) back from `image`.
pub fn check_line(
    image: &RgbImage,
    layout: &Layout,
    index: usize,
) -> Result<LineCheck, PosterError> {
    let line = layout.lines.get(index).ok_or_else(|| {
        PosterError::request(
            "layout",
            format!(
                "line {index}: the layout has {} line(s)",
                layout.lines.len()
            ),
        )
    })?;
    let (read, confidence) = match read_box(&line.bbox, image.dimensions()) {
        Some((l, t, r, b)) => {
            let crop =
                imageops::grayscale(&imageops::crop_imm(image, l, t, r - l, b - t).to_image());
            read_crop(&upscaled(crop))?
        }
        None => (String::new(), 0.0),
    };
    let score = score_image(
        std::slice::from_ref(&line.text),
        std::slice::from_ref(&read),
    );
    Ok(LineCheck {
        index,
        text: line.text.clone(),
        read,
        edit_distance: score.normalized_edit_distance,
        confidence,
        ok: score.accuracy == 1.0,
        round: 0,
    })
}

/// The certificate of `image` against every line of `layout` (at the image's size).
pub fn certify(image: &RgbImage, layout: &Layout) -> Result<Certificate, PosterError> {
    let lines = (0..layout.lines.len())
        .map(|i| check_line(image, layout, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Certificate::from_lines(lines, Vec::new()))
}

fn upscaled(crop: GrayImage) -> GrayImage {
    let (w, h) = crop.dimensions();
    if h >= MIN_READ_HEIGHT || h == 0 {
        return crop;
    }
    let factor = MIN_READ_HEIGHT.div_ceil(h);
    imageops::resize(
        &crop,
        w * factor,
        h * factor,
        imageops::FilterType::Triangle,
    )
}

#[cfg(test)]
mod tests {
    use letterpress_layout::TextLine;
    use letterpress_render::Renderer;

    use super::*;

    fn drawn(layout: &Layout) -> RgbImage {
        let mask = Renderer::with_default_font()
            .unwrap()
            .render(layout)
            .unwrap()
            .glyph_mask;
        // Black text on white, as a printed poster would read.
        RgbImage::from_fn(mask.width(), mask.height(), |x, y| {
            let v = 255 - mask.get_pixel(x, y).0[0];
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn a_rendered_line_reads_ok_and_a_blank_one_does_not() {
        let layout = Layout::new(
            320,
            160,
            vec![
                TextLine::new("SUMMER SALE", BBox::new(20, 20, 300, 70)),
                TextLine::new("TODAY", BBox::new(80, 100, 240, 140)),
            ],
        );
        let mut image = drawn(&layout);
        // Wipe the second line: nothing to read there.
        for y in 96..144 {
            for x in 70..250 {
                image.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let cert = certify(&image, &layout).unwrap();
        assert_eq!(cert.line_count, 2);
        assert!(cert.lines[0].ok, "{:?}", cert.lines[0]);
        assert!(cert.lines[0].confidence > 50.0, "{:?}", cert.lines[0]);
        assert!(!cert.lines[1].ok);
        assert_eq!(cert.lines[1].edit_distance, 1.0);
        assert_eq!(cert.lines_ok, 1);
        assert!((cert.score - 0.5).abs() < 1e-9, "{}", cert.score);
        let json: serde_json::Value = serde_json::from_str(&cert.to_json()).unwrap();
        assert_eq!(json["lines"][0]["text"], "SUMMER SALE");
        assert_eq!(json["lines_ok"], 1);
    }

    #[test]
    fn read_boxes_get_a_margin_and_stay_on_the_image() {
        assert_eq!(
            read_box(&BBox::new(10, 10, 50, 50), (100, 100)),
            Some((0, 0, 60, 60))
        );
        assert_eq!(
            read_box(&BBox::new(90, 96, 120, 100), (100, 100)),
            Some((86, 92, 100, 100))
        );
        assert_eq!(read_box(&BBox::new(200, 200, 300, 300), (100, 100)), None);
        assert_eq!(
            read_box(
                &BBox::new(i32::MIN, i32::MIN, i32::MAX, i32::MAX),
                (100, 100)
            ),
            Some((0, 0, 100, 100))
        );
    }

    #[test]
    fn ranking_prefers_lines_ok_then_score() {
        let line = |ok: bool, d: f64| LineCheck {
            index: 0,
            text: "A".into(),
            read: String::new(),
            edit_distance: d,
            confidence: 0.0,
            ok,
            round: 0,
        };
        let a = Certificate::from_lines(vec![line(true, 0.0), line(false, 0.9)], vec![]);
        let b = Certificate::from_lines(vec![line(false, 0.1), line(false, 0.1)], vec![]);
        assert!(a.ranks_above(&b) && !b.ranks_above(&a));
        assert!(line(true, 0.0).better_than(&line(false, 0.0)));
        assert!(line(false, 0.2).better_than(&line(false, 0.5)));
        assert!(!line(false, 0.5).better_than(&line(false, 0.5)));
    }
}

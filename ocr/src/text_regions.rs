//! What tesseract's layout analysis found before any recognition, and the bound on the text
//! area it gives (docs/architecture.md, "OCR first stage").

use letterpress_layout::BBox;
use serde::Serialize;

/// Text lines found by layout analysis alone, in the pixels of the analysed image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextRegions {
    pub width: u32,
    pub height: u32,
    /// Text line boxes.
    pub lines: Vec<BBox>,
    /// Words the layout split the lines into. Recognition can split a word further (the LSTM
    /// may read a space inside it), so this is no upper bound on recognised words except at
    /// zero: no layout words, no recognised words.
    pub words: usize,
}

/// How far recognised word boxes may outgrow the layout's line boxes, as a factor on their
/// summed area. Recognition re-segments: the LSTM splits layout words at spaces it reads, and
/// the split words' boxes can overlap one another and reach past the line, so the word boxes
/// can sum to more than the line boxes. Measured over about 1,700 procedural photographs
/// (`textless_photo`), the committed real images and rendered posters, the ratio never went
/// over 1.37 (docs/architecture.md, "OCR first stage"); 2 leaves room for what was not seen.
pub const LINE_AREA_SLACK: f32 = 2.0;

impl TextRegions {
    /// Summed area of the line boxes as a share of the image.
    pub fn line_area(&self) -> f32 {
        let image = f64::from(self.width) * f64::from(self.height);
        let lines: f64 = self
            .lines
            .iter()
            .map(|b| f64::from(b.width().max(0)) * f64::from(b.height().max(0)))
            .sum();
        (lines / image.max(1.0)).min(1.0) as f32
    }

    /// The bound the first stage puts on the `text_area` filter's measure (the summed word
    /// boxes, as a share of the image): the line area times [`LINE_AREA_SLACK`], at most 1.
    pub fn text_area_bound(&self) -> f32 {
        (self.line_area() * LINE_AREA_SLACK).min(1.0)
    }

    /// No text at all: layout analysis found no words.
    pub fn is_empty(&self) -> bool {
        self.words == 0 || self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_bound_sums_line_boxes_and_saturates() {
        let regions = |lines: Vec<BBox>| TextRegions {
            width: 100,
            height: 50,
            lines,
            words: 2,
        };
        let r = regions(vec![BBox::new(0, 0, 50, 10), BBox::new(0, 20, 25, 40)]);
        assert!((r.line_area() - 0.2).abs() < 1e-6);
        assert!((r.text_area_bound() - 0.2 * LINE_AREA_SLACK).abs() < 1e-6);
        assert_eq!(
            regions(vec![BBox::new(0, 0, 100, 50); 3]).text_area_bound(),
            1.0
        );
        assert!(regions(vec![]).is_empty());
    }
}

//! What tesseract's layout analysis found before any recognition, and the upper bound on the
//! text area it gives (docs/architecture.md, "OCR first stage").

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

impl TextRegions {
    /// An upper bound on the share of the image that recognised word boxes can cover (the
    /// `text_area` filter's measure): each recognised word is made of the blobs of one layout
    /// line and lies inside that line's box, and the words of a line do not overlap, so their
    /// summed area is at most the summed area of the line boxes.
    pub fn text_area_bound(&self) -> f32 {
        let image = f64::from(self.width) * f64::from(self.height);
        let lines: f64 = self
            .lines
            .iter()
            .map(|b| f64::from(b.width().max(0)) * f64::from(b.height().max(0)))
            .sum();
        (lines / image.max(1.0)).min(1.0) as f32
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
        assert!((r.text_area_bound() - 0.2).abs() < 1e-6);
        assert_eq!(
            regions(vec![BBox::new(0, 0, 100, 50); 3]).text_area_bound(),
            1.0
        );
        assert!(regions(vec![]).is_empty());
    }
}

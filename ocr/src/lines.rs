//! Word boxes merged into text lines as TextDiffuser-2 builds its planner data (docs/architecture.md):
//! two boxes are on one line when each one's vertical centre lies inside the other box and
//! they are close: `(w1 + w2) / (x_max2 − x_min1) ≥ 0.8`.

use letterpress_layout::BBox;
use serde::Serialize;

use crate::OcrWord;

/// Closeness threshold of TextDiffuser-2's merge rule.
const MERGE_RATIO: f32 = 0.8;

/// A text line: words joined by spaces and the union of their boxes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OcrLine {
    pub text: String,
    pub bbox: BBox,
    /// Indices into the page's words, left to right.
    pub words: Vec<usize>,
}

fn centre_y_inside(a: &BBox, b: &BBox) -> bool {
    let cy2 = a.top + a.bottom; // twice the centre, to stay in integers
    cy2 >= 2 * b.top && cy2 <= 2 * b.bottom
}

/// True when `right` continues the line that ends with `left`.
fn same_line(left: &BBox, right: &BBox) -> bool {
    let span = (right.right.max(left.right) - left.left.min(right.left)) as f32;
    centre_y_inside(left, right)
        && centre_y_inside(right, left)
        && span > 0.0
        && (left.width() + right.width()) as f32 / span >= MERGE_RATIO
}

/// Merges words into lines, scanning left to right; each word joins the first line whose last
/// word it continues.
pub fn merge_lines(words: &[OcrWord]) -> Vec<OcrLine> {
    let mut order: Vec<usize> = (0..words.len()).collect();
    order.sort_by_key(|&i| (words[i].bbox.left, words[i].bbox.top));
    let mut lines: Vec<OcrLine> = Vec::new();
    for i in order {
        let b = words[i].bbox;
        match lines.iter_mut().find(|l| {
            same_line(
                &words[*l.words.last().expect("lines start with a word")].bbox,
                &b,
            )
        }) {
            Some(line) => {
                line.words.push(i);
                line.text.push(' ');
                line.text.push_str(&words[i].text);
                let u = &mut line.bbox;
                *u = BBox::new(
                    u.left.min(b.left),
                    u.top.min(b.top),
                    u.right.max(b.right),
                    u.bottom.max(b.bottom),
                );
            }
            None => lines.push(OcrLine {
                text: words[i].text.clone(),
                bbox: b,
                words: vec![i],
            }),
        }
    }
    // Reading order: top to bottom, then left to right.
    lines.sort_by_key(|l| (l.bbox.top, l.bbox.left));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, b: [i32; 4]) -> OcrWord {
        OcrWord {
            text: text.into(),
            bbox: BBox::new(b[0], b[1], b[2], b[3]),
            confidence: 90.0,
        }
    }

    #[test]
    fn near_words_on_a_row_merge_and_far_ones_do_not() {
        let words = [
            word("Summer", [10, 10, 110, 50]),
            word("Sale", [120, 12, 190, 50]),
            word("far", [400, 10, 440, 50]),
            word("below", [10, 100, 100, 140]),
        ];
        let lines = merge_lines(&words);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["Summer Sale", "far", "below"]);
        assert_eq!(lines[0].bbox, BBox::new(10, 10, 190, 50));
    }

    #[test]
    fn vertically_offset_words_stay_apart() {
        let words = [
            word("up", [10, 10, 60, 40]),
            word("down", [62, 35, 120, 65]),
        ];
        assert_eq!(merge_lines(&words).len(), 2);
    }
}

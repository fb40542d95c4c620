//! The typographic planner: a deterministic, model-free layout with a visual hierarchy
//! (headline, then smaller lines), balanced line breaks, margins and no overlaps, sized from
//! the renderer's real font metrics.

use std::collections::HashMap;

use serde::Serialize;

use super::{Plan, SplitMix64};
use crate::{Align, BBox, Layout, LayoutError, TextLine, TextMeasure};

/// Most keywords one layout holds (TextDiffuser-2's data has 1–8 text lines).
pub const MAX_KEYWORDS: usize = 8;
/// Longest keyword accepted, in characters.
pub const MAX_KEYWORD_CHARS: usize = 200;
/// Canvas sides accepted, in pixels.
pub const MIN_SIDE: u32 = 256;
pub const MAX_SIDE: u32 = 2048;

/// Font size below which a warning says the text may not be legible.
const SMALL_PX: f32 = 12.0;

/// Composition templates, chosen by seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// The stack hangs from the top margin.
    TopHeadline,
    /// The stack is centred vertically.
    CenteredStack,
    /// The stack sits on the bottom margin.
    BottomBanner,
    /// Left-aligned in a column on the left.
    LeftColumn,
    /// Headline at the top, the other lines at the bottom.
    SplitHeadline,
}

const TEMPLATES: [Template; 5] = [
    Template::TopHeadline,
    Template::CenteredStack,
    Template::BottomBanner,
    Template::LeftColumn,
    Template::SplitHeadline,
];

/// Size of each keyword relative to the headline: a clear step after the headline, then
/// gently smaller lines.
const SIZE_RATIOS: [f32; MAX_KEYWORDS] = [1.0, 0.5, 0.44, 0.4, 0.37, 0.35, 0.33, 0.32];

/// A keyword set in lines, at a font size: its ink extent in pixels.
#[derive(Debug, Clone)]
struct Block {
    text: String,
    px: f32,
    /// Ink extent per pixel of font size.
    unit_w: f32,
    unit_h: f32,
}

impl Block {
    fn size(&self) -> (f32, f32) {
        (self.unit_w * self.px, self.unit_h * self.px)
    }
}

/// Plans layouts with real font metrics from a [`TextMeasure`] (the renderer).
pub struct TypographicPlanner<'m> {
    measure: &'m dyn TextMeasure,
    font: Option<String>,
}

impl<'m> TypographicPlanner<'m> {
    pub fn new(measure: &'m dyn TextMeasure) -> Self {
        TypographicPlanner {
            measure,
            font: None,
        }
    }

    /// Measure (and name in the layout) this font instead of the renderer's default.
    pub fn with_font(mut self, font: impl Into<String>) -> Self {
        self.font = Some(font.into());
        self
    }

    /// Plans `keywords` (1–8; none gives an empty layout with a warning) on a canvas with
    /// sides 256..=2048 and an aspect between 1:4 and 4:1. Same seed, same layout.
    pub fn plan(
        &self,
        width: u32,
        height: u32,
        keywords: &[String],
        seed: u64,
    ) -> Result<Plan, LayoutError> {
        check_canvas(width, height)?;
        check_keywords(keywords)?;
        let mut plan = Plan {
            layout: Layout::new(width, height, Vec::new()),
            planner: "typographic".into(),
            template: None,
            seed,
            font_px: Vec::new(),
            warnings: Vec::new(),
        };
        if keywords.is_empty() {
            plan.warnings.push(
                "no keywords: nothing to place (quote the text to show, or pass keywords)".into(),
            );
            return Ok(plan);
        }
        let mut rng = SplitMix64::new(seed);
        let mut template = TEMPLATES[(rng.next_u64() % TEMPLATES.len() as u64) as usize];
        if template == Template::SplitHeadline && keywords.len() < 2 {
            template = Template::CenteredStack;
        }
        let (w, h) = (width as f32, height as f32);
        let margin = (0.06 * w.min(h)).round();
        let (avail_w, avail_h) = (w - 2.0 * margin, h - 2.0 * margin);
        let column_w = if template == Template::LeftColumn && w >= 0.8 * h {
            avail_w * 0.62
        } else {
            avail_w
        };
        let headline_px = w.min(h) * rng.range(0.13, 0.19);

        let mut blocks = keywords
            .iter()
            .enumerate()
            .map(|(i, k)| self.set_block(k, headline_px * SIZE_RATIOS[i], column_w))
            .collect::<Result<Vec<_>, _>>()?;
        fit_height(&mut blocks, avail_h, template);

        let split = template == Template::SplitHeadline;
        let total = stack_height(&blocks);
        let mut y = match template {
            Template::TopHeadline | Template::SplitHeadline => margin,
            Template::CenteredStack | Template::LeftColumn => margin + (avail_h - total) / 2.0,
            Template::BottomBanner => margin + avail_h - total,
        };
        let align = if template == Template::LeftColumn {
            Align::Left
        } else {
            Align::Center
        };
        for (i, block) in blocks.iter().enumerate() {
            if split && i == 1 {
                // The rest of the stack sits on the bottom margin.
                y = margin + avail_h - stack_height(&blocks[1..]);
            }
            let (bw, bh) = block.size();
            let x = match align {
                Align::Left => margin,
                _ => margin + (avail_w - bw) / 2.0,
            };
            let mut line =
                TextLine::new(block.text.clone(), padded_box(x, y, bw, bh, width, height));
            line.font = self.font.clone();
            line.align = (align != Align::Center).then_some(align);
            plan.layout.lines.push(line);
            plan.font_px.push(block.px);
            if block.px < SMALL_PX {
                plan.warnings.push(format!(
                    "keyword {i} set at {:.1} px: it may not be legible",
                    block.px
                ));
            }
            y += bh + blocks.get(i + 1).map_or(0.0, |next| gap(block, next));
        }
        plan.template = Some(template);
        Ok(plan)
    }

    /// Places `missing` keywords (those an LLM left out) into free space of `layout` without
    /// overlapping its boxes; returns warnings for any that could not be placed.
    pub fn place_missing(
        &self,
        layout: &mut Layout,
        missing: &[String],
        seed: u64,
    ) -> Result<Vec<String>, LayoutError> {
        let mut warnings = Vec::new();
        let (w, h) = (layout.width as f32, layout.height as f32);
        let margin = (0.04 * w.min(h)).round();
        let mut rng = SplitMix64::new(seed ^ 0x5EED);
        'keywords: for keyword in missing {
            let mut px = w.min(h) * rng.range(0.06, 0.08);
            while px >= 6.0 {
                let block = self.set_block(keyword, px, w - 2.0 * margin)?;
                let (bw, bh) = block.size();
                let xs = [(w - bw) / 2.0, margin, w - margin - bw];
                let mut y = margin;
                while y + bh <= h - margin {
                    for x in xs {
                        let candidate = padded_box(x, y, bw, bh, layout.width, layout.height);
                        let spaced = BBox::new(
                            candidate.left - 4,
                            candidate.top - 4,
                            candidate.right + 4,
                            candidate.bottom + 4,
                        );
                        if !layout.lines.iter().any(|l| l.bbox.overlaps(&spaced)) {
                            let mut line = TextLine::new(block.text.clone(), candidate);
                            line.font = self.font.clone();
                            layout.lines.push(line);
                            warnings.push(format!("placed keyword {keyword:?}, which the LLM left out, into free space"));
                            continue 'keywords;
                        }
                    }
                    y += 4.0;
                }
                px *= 0.8;
            }
            warnings.push(format!(
                "no free space left for keyword {keyword:?}; it was not placed"
            ));
        }
        Ok(warnings)
    }

    /// Sets a keyword at `px` in as few balanced lines as fit `column_w` (at most 3, or 4 for
    /// long keywords); when even that is too wide, shrinks it to fit.
    fn set_block(&self, keyword: &str, px: f32, column_w: f32) -> Result<Block, LayoutError> {
        let (tokens, joiner) = break_tokens(keyword);
        let mut widths: HashMap<(usize, usize), f32> = HashMap::new();
        let mut span_width = |i: usize, j: usize| -> Result<f32, LayoutError> {
            if let Some(&w) = widths.get(&(i, j)) {
                return Ok(w);
            }
            let w = self.extent(&tokens[i..j].join(joiner))?.0;
            widths.insert((i, j), w);
            Ok(w)
        };
        let n = tokens.len();
        let max_lines = n.min(if n > 6 { 4 } else { 3 });
        let mut best: Option<(Vec<usize>, f32)> = None;
        for k in 1..=max_lines {
            let Some((breaks, widest)) = balanced_breaks(n, k, &mut span_width)? else {
                continue;
            };
            let fits = widest * px <= column_w;
            if best.as_ref().is_none_or(|(_, w)| widest < *w) {
                best = Some((breaks, widest));
            }
            if fits {
                break;
            }
        }
        let (breaks, _) = best.unwrap_or((vec![n], 0.0));
        let mut lines = Vec::new();
        let mut start = 0;
        for end in breaks {
            lines.push(tokens[start..end].join(joiner));
            start = end;
        }
        let text = lines.join("\n");
        let (unit_w, unit_h) = self.extent(&text)?;
        let px = if unit_w * px > column_w && unit_w > 0.0 {
            column_w / unit_w
        } else {
            px
        };
        Ok(Block {
            text,
            px,
            unit_w,
            unit_h,
        })
    }

    fn extent(&self, text: &str) -> Result<(f32, f32), LayoutError> {
        let e = self
            .measure
            .ink_extent(text, self.font.as_deref())
            .map_err(|e| LayoutError::Measure {
                text: text.to_string(),
                message: e.to_string(),
            })?;
        Ok((e.width, e.height))
    }
}

fn check_canvas(width: u32, height: u32) -> Result<(), LayoutError> {
    let sides = (MIN_SIDE..=MAX_SIDE).contains(&width) && (MIN_SIDE..=MAX_SIDE).contains(&height);
    let aspect = width.max(height) <= 4 * width.min(height);
    if sides && aspect {
        Ok(())
    } else {
        Err(LayoutError::CanvasSize {
            width,
            height,
            min: MIN_SIDE,
            max: MAX_SIDE,
        })
    }
}

/// The keyword limits every planner applies before placing anything: at most
/// [`MAX_KEYWORDS`], each at most [`MAX_KEYWORD_CHARS`] characters with something to draw.
pub fn check_keywords(keywords: &[String]) -> Result<(), LayoutError> {
    if keywords.len() > MAX_KEYWORDS {
        return Err(LayoutError::TooManyKeywords {
            count: keywords.len(),
            max: MAX_KEYWORDS,
        });
    }
    for (index, k) in keywords.iter().enumerate() {
        let chars = k.chars().count();
        if chars > MAX_KEYWORD_CHARS {
            return Err(LayoutError::KeywordTooLong {
                index,
                chars,
                max: MAX_KEYWORD_CHARS,
            });
        }
        if !k.chars().any(crate::is_visible) {
            return Err(LayoutError::InvisibleKeyword {
                index,
                keyword: k.clone(),
            });
        }
    }
    Ok(())
}

/// Where a keyword may break: between words, or between characters for CJK text written
/// without spaces.
fn break_tokens(keyword: &str) -> (Vec<String>, &'static str) {
    let words: Vec<String> = keyword.split_whitespace().map(str::to_string).collect();
    let cjk = |c: char| {
        ('\u{2E80}'..='\u{9FFF}').contains(&c)
            || ('\u{AC00}'..='\u{D7AF}').contains(&c)
            || ('\u{F900}'..='\u{FAFF}').contains(&c)
    };
    if words.len() == 1 && keyword.chars().count() > 1 && keyword.chars().all(cjk) {
        (keyword.chars().map(String::from).collect(), "")
    } else {
        (words, " ")
    }
}

/// Break points (ends of each line) splitting `n` tokens into `k` lines with the smallest
/// widest line, with no single-token last line after a longer one (no orphans) when there are
/// three or more tokens. `None` when `k` lines are impossible under that rule.
fn balanced_breaks(
    n: usize,
    k: usize,
    span_width: &mut impl FnMut(usize, usize) -> Result<f32, LayoutError>,
) -> Result<Option<(Vec<usize>, f32)>, LayoutError> {
    if k == 0 || k > n {
        return Ok(None);
    }
    // best[j][i]: smallest widest line setting the first i tokens in j lines, and the previous
    // break. Lines are non-empty.
    let mut best = vec![vec![None::<(f32, usize)>; n + 1]; k + 1];
    best[0][0] = Some((0.0, 0));
    for j in 1..=k {
        for i in j..=n {
            let last_line = j == k;
            if last_line && i != n {
                continue;
            }
            let mut choice: Option<(f32, usize)> = None;
            for (p, cell) in best[j - 1].iter().enumerate().take(i).skip(j - 1) {
                let Some((prev, _)) = *cell else {
                    continue;
                };
                if last_line && k >= 2 && n >= 3 && i - p < 2 {
                    continue; // an orphan: one word alone on the last line
                }
                let cost = prev.max(span_width(p, i)?);
                if choice.is_none_or(|(c, _)| cost < c) {
                    choice = Some((cost, p));
                }
            }
            best[j][i] = choice;
        }
    }
    let Some((widest, _)) = best[k][n] else {
        return Ok(None);
    };
    let mut breaks = vec![n];
    let (mut j, mut i) = (k, n);
    while j > 1 {
        let (_, p) = best[j][i].expect("reached from a filled cell");
        breaks.push(p);
        i = p;
        j -= 1;
    }
    breaks.reverse();
    Ok(Some((breaks, widest)))
}

/// Space between two stacked blocks: a third of the smaller size, never under 6 px.
fn gap(a: &Block, b: &Block) -> f32 {
    (0.35 * a.px.min(b.px)).max(6.0)
}

fn stack_height(blocks: &[Block]) -> f32 {
    let heights: f32 = blocks.iter().map(|b| b.size().1).sum();
    let gaps: f32 = blocks.windows(2).map(|p| gap(&p[0], &p[1])).sum();
    heights + gaps
}

/// Shrinks every block by the same factor until the stack (or, for the split template, both
/// parts with a gap between them) fits the available height.
fn fit_height(blocks: &mut [Block], avail_h: f32, template: Template) {
    for _ in 0..40 {
        let needed = if template == Template::SplitHeadline && blocks.len() > 1 {
            stack_height(&blocks[..1])
                + stack_height(&blocks[1..])
                + gap(&blocks[0], &blocks[1]) * 2.0
        } else {
            stack_height(blocks)
        };
        if needed <= avail_h {
            return;
        }
        let factor = (avail_h / needed).clamp(0.5, 0.99);
        blocks.iter_mut().for_each(|b| b.px *= factor);
    }
}

/// The block's ink box grown by a pixel on each side and rounded outward, inside the canvas.
fn padded_box(x: f32, y: f32, w: f32, h: f32, width: u32, height: u32) -> BBox {
    let clamp = |v: f32, max: u32| (v as i32).clamp(0, max as i32);
    BBox::new(
        clamp(x.floor() - 1.0, width),
        clamp(y.floor() - 1.0, height),
        clamp((x + w).ceil() + 1.0, width),
        clamp((y + h).ceil() + 1.0, height),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_are_balanced_without_orphans() {
        // Width = number of characters (plus spaces), as a monospaced font would measure.
        let words = ["the", "quick", "brown", "fox", "jumps"];
        let mut width = |i: usize, j: usize| Ok(words[i..j].join(" ").len() as f32);
        let (breaks, widest) = balanced_breaks(5, 2, &mut width).unwrap().unwrap();
        assert_eq!(breaks, [2, 5], "the quick / brown fox jumps");
        assert_eq!(widest, 15.0);
        // Three words in two lines: "a bb / ccccccccc" is allowed, "a bb ccccccccc" split as
        // "a bb / c…" is not chosen when it would leave one word alone after two.
        let w3 = ["aaaaaaaa", "bbbbbbbb", "c"];
        let mut width3 = |i: usize, j: usize| Ok(w3[i..j].join(" ").len() as f32);
        let (breaks, _) = balanced_breaks(3, 2, &mut width3).unwrap().unwrap();
        assert_eq!(breaks, [1, 3], "no orphan on the last line");
    }

    #[test]
    fn cjk_breaks_between_characters() {
        assert_eq!(break_tokens("夏日音乐节").0.len(), 5);
        assert_eq!(break_tokens("Grand Opening").0, ["Grand", "Opening"]);
        assert_eq!(break_tokens("SALE").0, ["SALE"]);
    }

    #[test]
    fn canvas_and_keyword_limits() {
        assert!(check_canvas(256, 1024).is_ok());
        assert!(check_canvas(2048, 512).is_ok());
        assert!(check_canvas(255, 512).is_err());
        assert!(check_canvas(256, 1025).is_err());
        assert!(check_canvas(2049, 2048).is_err());
        let nine: Vec<String> = (0..9).map(|i| i.to_string()).collect();
        let err = check_keywords(&nine).unwrap_err().to_string();
        assert!(
            err.contains("9 keywords") && err.contains("at most 8"),
            "{err}"
        );
        for invisible in [
            "\u{200B}\u{200D}",
            "\0",
            "\u{E000}\u{F8FF}",
            " \u{FEFF} ",
            "",
        ] {
            let keywords = vec!["SALE".to_string(), invisible.to_string()];
            let err = check_keywords(&keywords).unwrap_err();
            assert!(
                matches!(&err, LayoutError::InvisibleKeyword { index: 1, keyword } if keyword == invisible),
                "{invisible:?}: {err}"
            );
        }
        assert!(check_keywords(&["\u{200B}SALE".into(), "50%".into(), "开业".into()]).is_ok());
    }

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            let v = a.range(0.2, 0.3);
            assert_eq!(v, b.range(0.2, 0.3));
            assert!((0.2..0.3).contains(&v));
        }
    }
}

//! Sets a line's text at 1 px font size: glyph positions, kerning, stacked sub-lines and
//! alignment. Outline fonts scale linearly, so fitting to a box is one division afterwards.

use ab_glyph::Font;
use letterpress_layout::Align;

use crate::cache::GlyphCache;
use crate::fonts::{FaceId, FontBook};

/// A glyph placed at 1 px font size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShapedGlyph {
    pub ch: char,
    pub face: FaceId,
    pub id: ab_glyph::GlyphId,
    /// Pen position on the baseline, y down.
    pub x: f32,
    pub y: f32,
    /// Absolute ink box `[x0, y0, x1, y1]`, `None` for blank glyphs (spaces).
    pub ink: Option<[f32; 4]>,
}

/// A line's glyphs at 1 px font size and the union of their ink.
#[derive(Debug, Default)]
pub(crate) struct ShapedText {
    pub glyphs: Vec<ShapedGlyph>,
    pub ink: Option<[f32; 4]>,
    /// Characters no installed font has, in order of appearance (skipped here).
    pub missing: Vec<char>,
}

/// Sets `text` (sub-lines separated by `\n`) in `primary` with per-glyph fallback.
pub(crate) fn shape(
    text: &str,
    primary: FaceId,
    align: Align,
    book: &FontBook,
    cache: &GlyphCache,
) -> ShapedText {
    let primary_font = book.face(primary);
    let pf = &primary_font.font;
    // Baseline-to-baseline distance in the primary face: ascent − descent + line gap.
    let line_advance = (pf.height_unscaled() + pf.line_gap_unscaled()) / pf.height_unscaled();
    let ascent = pf.ascent_unscaled() / pf.height_unscaled();

    let mut out = ShapedText::default();
    let mut sublines: Vec<(usize, Option<[f32; 2]>)> = Vec::new();
    for (row, sub) in text.split('\n').enumerate() {
        let start = out.glyphs.len();
        let baseline = ascent + row as f32 * line_advance;
        let mut pen = 0.0f32;
        let mut prev: Option<(FaceId, ab_glyph::GlyphId)> = None;
        let mut span: Option<[f32; 2]> = None;
        for ch in sub.chars() {
            let Some(info) = cache.info(book, primary, ch) else {
                out.missing.push(ch);
                continue;
            };
            if let Some((pface, pid)) = prev.filter(|(f, _)| *f == info.face) {
                let font = book.face(pface);
                pen += font.font.kern_unscaled(pid, info.id) / font.font.height_unscaled();
            }
            let ink = info
                .ink
                .map(|[x0, y0, x1, y1]| [pen + x0, baseline + y0, pen + x1, baseline + y1]);
            if let Some([x0, _, x1, _]) = ink {
                span = Some(span.map_or([x0, x1], |[a, b]| [a.min(x0), b.max(x1)]));
            }
            out.glyphs.push(ShapedGlyph {
                ch,
                face: info.face,
                id: info.id,
                x: pen,
                y: baseline,
                ink,
            });
            pen += info.advance;
            prev = Some((info.face, info.id));
        }
        sublines.push((start, span));
    }

    // Align each sub-line's ink inside the widest one, then the block's ink starts at x = 0.
    let block_width = sublines
        .iter()
        .filter_map(|(_, s)| s.map(|[a, b]| b - a))
        .fold(0.0, f32::max);
    let factor = match align {
        Align::Left => 0.0,
        Align::Center => 0.5,
        Align::Right => 1.0,
    };
    for (i, (start, span)) in sublines.iter().enumerate() {
        let end = sublines.get(i + 1).map_or(out.glyphs.len(), |(s, _)| *s);
        let Some([x0, x1]) = span else { continue };
        let dx = (block_width - (x1 - x0)) * factor - x0;
        for g in &mut out.glyphs[*start..end] {
            g.x += dx;
            if let Some(ink) = &mut g.ink {
                ink[0] += dx;
                ink[2] += dx;
            }
        }
    }
    out.ink = out.glyphs.iter().filter_map(|g| g.ink).reduce(|a, b| {
        [
            a[0].min(b[0]),
            a[1].min(b[1]),
            a[2].max(b[2]),
            a[3].max(b[3]),
        ]
    });
    out
}

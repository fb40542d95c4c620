//! Layout quality after parsing (LLM answers and edits): boxes snapped inside the canvas,
//! boxes whose text would render too small grown, overlaps resolved by moving the later box
//! into free space (or shrinking it); every change is reported (docs/llm-planner.md,
//! "After parsing").

use crate::{BBox, Layout, LayoutError, TextMeasure};

/// Smallest font size a line should render at on a 512×512 canvas, in pixels; it scales with
/// the canvas's shorter side.
pub const MIN_TEXT_PX_AT_512: f32 = 12.0;

/// Tidies `layout` in place; returns one warning per change.
pub fn tidy(
    layout: &mut Layout,
    measure: &dyn TextMeasure,
    font: Option<&str>,
) -> Result<Vec<String>, LayoutError> {
    tidy_pinned(layout, measure, font, &[])
}

/// [`tidy`], where the `pinned` lines (those an edit just placed) keep their place: overlaps
/// are resolved in the order pinned lines first, then the others in reading order.
pub fn tidy_pinned(
    layout: &mut Layout,
    measure: &dyn TextMeasure,
    font: Option<&str>,
    pinned: &[usize],
) -> Result<Vec<String>, LayoutError> {
    let mut warnings = Vec::new();
    if layout.width == 0
        || layout.height == 0
        || layout.width.max(layout.height) > i32::MAX as u32 / 4
    {
        return Ok(warnings); // no canvas to tidy on; the planners refuse such canvases first
    }
    snap_inside(layout, &mut warnings);
    let min_px = MIN_TEXT_PX_AT_512 * layout.width.min(layout.height) as f32 / 512.0;
    let mut needed = Vec::with_capacity(layout.lines.len());
    for i in 0..layout.lines.len() {
        let line = &layout.lines[i];
        let extent = ink_extent(measure, &line.text, line.font.as_deref().or(font))?;
        needed.push(extent.map(|(w, h)| (w * min_px, h * min_px)));
        if let Some(need) = needed[i] {
            grow_to(layout, i, need, min_px, &mut warnings);
        }
    }
    let mut order: Vec<usize> = pinned
        .iter()
        .copied()
        .filter(|&i| i < needed.len())
        .collect();
    order.extend((0..layout.lines.len()).filter(|i| !pinned.contains(i)));
    for k in 1..order.len() {
        resolve_overlap(layout, &order[..=k], needed[order[k]], &mut warnings);
    }
    Ok(warnings)
}

/// Ink extent at 1 px, `None` for text with no ink.
fn ink_extent(
    measure: &dyn TextMeasure,
    text: &str,
    font: Option<&str>,
) -> Result<Option<(f32, f32)>, LayoutError> {
    let e = measure
        .ink_extent(text, font)
        .map_err(|e| LayoutError::Measure {
            text: text.to_string(),
            message: e.to_string(),
        })?;
    Ok((e.width > 0.0 && e.height > 0.0).then_some((e.width, e.height)))
}

fn canvas(layout: &Layout) -> BBox {
    BBox::new(0, 0, layout.width as i32, layout.height as i32)
}

/// Moves each box inside the canvas (a box larger than the canvas is cut to it) and gives an
/// empty box one pixel.
pub(crate) fn snap_inside(layout: &mut Layout, warnings: &mut Vec<String>) {
    let (cw, ch) = (layout.width as i32, layout.height as i32);
    for line in &mut layout.lines {
        let b = line.bbox;
        let (w, h) = (b.width().clamp(1, cw), b.height().clamp(1, ch));
        let left = b.left.clamp(0, cw - w);
        let top = b.top.clamp(0, ch - h);
        let snapped = BBox::new(left, top, left + w, top + h);
        if snapped != b {
            warnings.push(format!(
                "moved {:?} inside the canvas: {:?} → {:?}",
                line.text,
                bbox_list(b),
                bbox_list(snapped)
            ));
            line.bbox = snapped;
        }
    }
}

/// Grows line `i`'s box about its centre until its text renders at `min_px` (`need` is the
/// text's ink size at that size), within the canvas.
fn grow_to(
    layout: &mut Layout,
    i: usize,
    need: (f32, f32),
    min_px: f32,
    warnings: &mut Vec<String>,
) {
    let c = canvas(layout);
    let b = layout.lines[i].bbox;
    let px = (b.width() as f32 / need.0).min(b.height() as f32 / need.1) * min_px;
    if px >= min_px {
        return;
    }
    let w = b.width().max(need.0.ceil() as i32 + 2).min(c.right);
    let h = b.height().max(need.1.ceil() as i32 + 2).min(c.bottom);
    let (cx, cy) = ((b.left + b.right) / 2, (b.top + b.bottom) / 2);
    let left = (cx - w / 2).clamp(0, c.right - w);
    let top = (cy - h / 2).clamp(0, c.bottom - h);
    let grown = BBox::new(left, top, left + w, top + h);
    let line = &mut layout.lines[i];
    warnings.push(format!(
        "grew {:?} from {}x{} to {}x{} px: its text would render at {px:.1} px, under the {min_px:.0} px minimum",
        line.text,
        b.width(),
        b.height(),
        w,
        h
    ));
    line.bbox = grown;
}

/// Moves the last line of `order` off the boxes of the lines before it in `order`: to the
/// nearest free place of its size, else shrunk (down to what its text needs at the minimum
/// size) into the nearest free place, else cut to its largest part that overlaps nothing.
fn resolve_overlap(
    layout: &mut Layout,
    order: &[usize],
    need: Option<(f32, f32)>,
    warnings: &mut Vec<String>,
) {
    let Some((&i, before)) = order.split_last() else {
        return;
    };
    let earlier: Vec<BBox> = before.iter().map(|&j| layout.lines[j].bbox).collect();
    let b = layout.lines[i].bbox;
    if !earlier.iter().any(|e| e.overlaps(&b)) {
        return;
    }
    let others: Vec<BBox> = (0..layout.lines.len())
        .filter(|&j| j != i)
        .map(|j| layout.lines[j].bbox)
        .collect();
    let (min_w, min_h) = need.map_or((1, 1), |(w, h)| (w.ceil() as i32 + 2, h.ceil() as i32 + 2));
    let mut scale = 1.0f32;
    let found = loop {
        let (w, h) = (
            (b.width() as f32 * scale) as i32,
            (b.height() as f32 * scale) as i32,
        );
        if scale < 1.0 && (w < min_w.min(b.width()) || h < min_h.min(b.height())) {
            break None;
        }
        let spot = free_spot(layout, b, (w, h), &others)
            .or_else(|| free_spot(layout, b, (w, h), &earlier));
        if spot.is_some() {
            break spot;
        }
        scale *= 0.85;
    };
    let text = layout.lines[i].text.clone();
    let cut = Some(cut_free(b, &earlier)).filter(|c| !c.is_empty());
    let Some(fixed) = found.or(cut) else {
        return make_room(layout, order, (min_w, min_h), warnings);
    };
    let how = match (
        found.is_some(),
        fixed.width() == b.width() && fixed.height() == b.height(),
    ) {
        (true, true) => "moved",
        (true, false) => "shrank and moved",
        (false, _) => "cut",
    };
    warnings.push(format!(
        "{how} {text:?} off an earlier line's box: {:?} → {:?}",
        bbox_list(b),
        bbox_list(fixed)
    ));
    layout.lines[i].bbox = fixed;
}

/// The place of size `size` nearest to `from`'s centre that overlaps none of `avoid`, on a
/// grid of one TextDiffuser-2 unit.
fn free_spot(layout: &Layout, from: BBox, size: (i32, i32), avoid: &[BBox]) -> Option<BBox> {
    let c = canvas(layout);
    let (w, h) = size;
    if w < 1 || h < 1 || w > c.right || h > c.bottom {
        return None;
    }
    let step_x = (c.right / 128).max(1);
    let step_y = (c.bottom / 128).max(1);
    let (cx, cy) = (
        (from.left + from.right - w) / 2,
        (from.top + from.bottom - h) / 2,
    );
    let xs = (0..=(c.right - w) / step_x)
        .map(|k| k * step_x)
        .chain([c.right - w]);
    let ys: Vec<i32> = (0..=(c.bottom - h) / step_y)
        .map(|k| k * step_y)
        .chain([c.bottom - h])
        .collect();
    xs.flat_map(|x| ys.iter().map(move |&y| BBox::new(x, y, x + w, y + h)))
        .filter(|cand| !avoid.iter().any(|a| a.overlaps(cand)))
        .min_by_key(|cand| {
            let (dx, dy) = (i64::from(cand.left - cx), i64::from(cand.top - cy));
            (dx * dx + dy * dy, cand.top, cand.left)
        })
}

/// The last resort when line `i` fits nowhere: it keeps the middle of its box at the size its
/// text needs, and the earlier boxes it overlaps are cut around it.
fn make_room(layout: &mut Layout, order: &[usize], size: (i32, i32), warnings: &mut Vec<String>) {
    let Some((&i, before)) = order.split_last() else {
        return;
    };
    let b = layout.lines[i].bbox;
    let (w, h) = (size.0.min(b.width()).max(1), size.1.min(b.height()).max(1));
    let (left, top) = ((b.left + b.right - w) / 2, (b.top + b.bottom - h) / 2);
    let kept = BBox::new(left, top, left + w, top + h);
    layout.lines[i].bbox = kept;
    for &j in before {
        let was = layout.lines[j].bbox;
        if was.overlaps(&kept) {
            let after = cut_free(was, &[kept]);
            warnings.push(format!(
                "cut {:?} to make room for {:?}: {:?} → {:?}",
                layout.lines[j].text,
                layout.lines[i].text,
                bbox_list(was),
                bbox_list(after)
            ));
            layout.lines[j].bbox = after;
        }
    }
}

/// The largest part of `b` left of, right of, above or below every box of `avoid` it overlaps
/// (a last resort; may be empty, then one pixel at its corner).
fn cut_free(b: BBox, avoid: &[BBox]) -> BBox {
    let mut out = b;
    for a in avoid.iter().filter(|a| a.overlaps(&b)) {
        let parts = [
            BBox::new(out.left, out.top, out.right.min(a.left), out.bottom),
            BBox::new(out.left.max(a.right), out.top, out.right, out.bottom),
            BBox::new(out.left, out.top, out.right, out.bottom.min(a.top)),
            BBox::new(out.left, out.top.max(a.bottom), out.right, out.bottom),
        ];
        out = parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .max_by_key(|p| i64::from(p.width()) * i64::from(p.height()))
            .unwrap_or(BBox::new(out.left, out.top, out.left, out.top));
    }
    out
}

fn bbox_list(b: BBox) -> [i32; 4] {
    [b.left, b.top, b.right, b.bottom]
}

/// Whether every box is inside the canvas, non-empty and overlaps no other: what a tidied
/// layout promises (the benchmark's "valid after post-processing").
pub fn is_tidy(layout: &Layout) -> bool {
    let c = canvas(layout);
    let boxes: Vec<BBox> = layout.lines.iter().map(|l| l.bbox).collect();
    boxes.iter().all(|b| !b.is_empty() && c.contains(b))
        && (0..boxes.len()).all(|i| (i + 1..boxes.len()).all(|j| !boxes[i].overlaps(&boxes[j])))
}

/// Pairs of overlapping boxes in `layout`.
pub fn overlap_count(layout: &Layout) -> usize {
    let n = layout.lines.len();
    (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .filter(|&(i, j)| layout.lines[i].bbox.overlaps(&layout.lines[j].bbox))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TextLine;
    use crate::planner::fixed_measure::FixedMeasure;

    fn layout(lines: &[(&str, [i32; 4])]) -> Layout {
        let lines = lines
            .iter()
            .map(|(t, [l, top, r, b])| TextLine::new(*t, BBox::new(*l, *top, *r, *b)))
            .collect();
        Layout::new(512, 512, lines)
    }

    #[test]
    fn overlapping_later_box_moves_to_free_space() {
        let mut l = layout(&[
            ("TITLE", [40, 40, 472, 160]),
            ("date", [100, 100, 300, 140]),
        ]);
        let w = tidy(&mut l, &FixedMeasure, None).unwrap();
        assert!(is_tidy(&l), "{l:?}");
        assert_eq!(
            l.lines[0].bbox,
            BBox::new(40, 40, 472, 160),
            "the first box stays"
        );
        assert_eq!(l.lines[1].bbox.width(), 200, "moved, same size");
        assert!(w.iter().any(|w| w.starts_with("moved \"date\"")), "{w:?}");
    }

    #[test]
    fn tiny_and_outside_boxes_are_fixed() {
        let mut l = layout(&[
            ("a long line of text", [0, 0, 60, 4]),
            ("x", [500, 500, 600, 530]),
        ]);
        let w = tidy(&mut l, &FixedMeasure, None).unwrap();
        assert!(is_tidy(&l), "{l:?}");
        let b = l.lines[0].bbox;
        let px = (b.width() as f32 / (0.6 * 19.0)).min(b.height() as f32 / 0.7);
        assert!(px >= 12.0, "{px}");
        let w = w.join("\n");
        assert!(w.contains("grew") && w.contains("inside the canvas"), "{w}");
    }

    #[test]
    fn a_full_canvas_still_ends_without_overlaps() {
        let mut l = layout(&[
            ("A", [0, 0, 512, 512]),
            ("B", [0, 0, 512, 512]),
            ("C", [10, 10, 500, 500]),
        ]);
        tidy(&mut l, &FixedMeasure, None).unwrap();
        assert_eq!(overlap_count(&l), 0, "{l:?}");
        assert!(is_tidy(&l), "{l:?}");
    }
}

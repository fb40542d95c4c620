//! Editing the text of an existing picture: OCR finds each old text (a word or a line), the
//! renderer fits the new text into its box (same height, centred, the box widened into free
//! space when the new text is longer), and the boxes are inpainted with the glyph mask as
//! control. Only the edited regions are copied from the painting, so every other pixel is the
//! input's exactly.

use image::{GrayImage, Luma, RgbImage};
use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_ocr::{OcrConfig, OcrEngine, OcrPage, normalize_words};
use letterpress_render::{RenderError, Renderer};

use crate::certificate::{Certificate, certify};
use crate::repair::paste;
use crate::{PosterEngine, PosterError, PosterInit, PosterRequest, PosterText, RepaintRegion};

/// The smallest and largest side of a picture to edit (the diffusion canvas limits).
pub const MIN_EDIT_SIDE: u32 = 64;
pub const MAX_EDIT_SIDE: u32 = 2048;
/// A new text set smaller than this cannot be read reliably: refused rather than painted.
pub const MIN_FONT_PX: f32 = 8.0;

/// One text to replace.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    pub old: String,
    pub new: String,
}

/// An edit: the picture, what to replace, and the generation settings (`base`'s prompt,
/// steps, seed, guidance, scheduler and control options; its text and init are ignored).
#[derive(Debug, Clone)]
pub struct EditRequest {
    pub image: RgbImage,
    pub replacements: Vec<Replacement>,
    /// The picture's own layout (e.g. from a Letterpress PNG's metadata): where OCR does not
    /// find an old text, a layout line that says it gives its box.
    pub known_layout: Option<Layout>,
    pub base: PosterRequest,
}

/// Where one replacement went.
#[derive(Debug, Clone, PartialEq)]
pub struct EditedBox {
    /// The box the old text was found in.
    pub found: BBox,
    /// `ocr` or `layout`: what found it.
    pub found_by: &'static str,
    /// The box the new text was drawn in.
    pub drawn: BBox,
    /// The font size the new text was drawn at.
    pub font_px: f32,
}

/// An edited picture.
#[derive(Debug, Clone)]
pub struct Edited {
    pub image: RgbImage,
    pub boxes: Vec<EditedBox>,
    /// White where pixels may differ from the input; black pixels are the input's exactly.
    pub region: GrayImage,
    /// The new texts read back from the result.
    pub certificate: Certificate,
    pub seed: u64,
}

/// Where an edit paints and what, found before any model runs (OCR, fitting): a front end
/// can refuse a bad edit at once with [`plan_edit`].
#[derive(Debug, Clone)]
pub struct EditPlan {
    /// The new lines, in the picture's pixels.
    pub lines: Vec<TextLine>,
    pub boxes: Vec<EditedBox>,
    /// White where pixels may differ from the input.
    pub region: GrayImage,
}

fn field(i: usize, name: &str) -> String {
    format!("replacements[{i}].{name}")
}

fn bad(field: String, message: String) -> PosterError {
    PosterError::Edit { field, message }
}

impl PosterEngine {
    /// Replaces each old text of `request.image` with its new text, in place.
    pub fn edit(
        &self,
        request: &EditRequest,
        stop: &dyn Fn() -> bool,
    ) -> Result<Edited, PosterError> {
        let plan = plan_edit(
            self.renderer(),
            &request.image,
            &request.replacements,
            request.known_layout.as_ref(),
        )?;
        self.paint_edit(request, plan, stop)
    }

    /// Paints an edit [`plan_edit`] planned for `request`'s picture and replacements: inpaints
    /// the plan's region with its lines as the glyph layout (on a canvas padded to a multiple
    /// of 8), copies the region onto the input and reads the new lines back.
    pub fn paint_edit(
        &self,
        request: &EditRequest,
        plan: EditPlan,
        stop: &dyn Fn() -> bool,
    ) -> Result<Edited, PosterError> {
        let EditPlan {
            lines,
            boxes,
            region,
        } = plan;
        let (width, height) = request.image.dimensions();
        let (pw, ph) = (width.div_ceil(8) * 8, height.div_ceil(8) * 8);
        // Edge pixels repeated into the padding: the model sees no border.
        let padded = RgbImage::from_fn(pw, ph, |x, y| {
            *request.image.get_pixel(x.min(width - 1), y.min(height - 1))
        });
        let padded_mask = GrayImage::from_fn(pw, ph, |x, y| {
            if x < width && y < height {
                *region.get_pixel(x, y)
            } else {
                Luma([0])
            }
        });
        let mut r = request.base.clone();
        r.text = PosterText::Layout(Layout::new(pw, ph, lines.clone()));
        (r.width, r.height, r.n) = (Some(pw), Some(ph), 1);
        (r.verify, r.repair, r.best_of) = (false, 0, false);
        r.init = Some(PosterInit {
            image: padded,
            strength: 1.0,
            region: Some(RepaintRegion::Mask(padded_mask)),
        });
        let poster = self.make(&r, &mut |_| {}, stop)?;
        let painted = poster
            .images
            .into_iter()
            .next()
            .ok_or_else(|| PosterError::request("image", "the model painted no image"))?;
        let painted_crop =
            image::imageops::crop_imm(&painted.image, 0, 0, width, height).to_image();
        let mut image = request.image.clone();
        paste(&mut image, &painted_crop, &region);
        let certificate = certify(&image, &Layout::new(width, height, lines))?;
        Ok(Edited {
            image,
            boxes,
            region,
            certificate,
            seed: painted.seed,
        })
    }
}

/// Finds each old text of `image` (OCR, else `known_layout`), fits its new text and returns
/// where the edit will paint: every check an edit makes before the model runs.
pub fn plan_edit(
    renderer: &Renderer,
    image: &RgbImage,
    replacements: &[Replacement],
    known_layout: Option<&Layout>,
) -> Result<EditPlan, PosterError> {
    let (width, height) = image.dimensions();
    let sides = MIN_EDIT_SIDE..=MAX_EDIT_SIDE;
    if !sides.contains(&width) || !sides.contains(&height) {
        return Err(PosterError::request(
            "image",
            format!(
                "{width}x{height}: each side must be {MIN_EDIT_SIDE} to {MAX_EDIT_SIDE} pixels"
            ),
        ));
    }
    if replacements.is_empty() {
        return Err(PosterError::request(
            "replacements",
            "nothing to replace: give at least one old=new pair",
        ));
    }
    let page =
        OcrEngine::new(OcrConfig::default())?.recognize(&image::imageops::grayscale(image))?;
    let found = replacements
        .iter()
        .enumerate()
        .map(|(i, r)| find_old(i, &r.old, &page, known_layout, (width, height)))
        .collect::<Result<Vec<_>, _>>()?;
    refuse_overlaps(replacements, &found)?;
    let mut lines = Vec::new();
    let mut boxes = Vec::new();
    for (i, (r, (bbox, by))) in replacements.iter().zip(&found).enumerate() {
        let others: Vec<BBox> = found
            .iter()
            .map(|f| f.0)
            .chain(page.words.iter().map(|w| w.bbox))
            .filter(|b| !overlaps(b, bbox))
            .collect();
        let (drawn, font_px) = fit_new(renderer, i, r, *bbox, &others, (width, height))?;
        lines.push(TextLine::new(r.new.clone(), drawn));
        boxes.push(EditedBox {
            found: *bbox,
            found_by: by,
            drawn,
            font_px,
        });
    }
    let protected: Vec<BBox> = page
        .words
        .iter()
        .map(|w| w.bbox)
        .filter(|w| !boxes.iter().any(|b| overlaps(w, &b.found)))
        .collect();
    let region = edit_region(&boxes, &protected, (width, height));
    Ok(EditPlan {
        lines,
        boxes,
        region,
    })
}

/// Two replacements whose old texts share pixels would draw two texts into one region.
fn refuse_overlaps(
    replacements: &[Replacement],
    found: &[(BBox, &'static str)],
) -> Result<(), PosterError> {
    for (j, (b, _)) in found.iter().enumerate() {
        if let Some(i) = found[..j].iter().position(|(a, _)| overlaps(a, b)) {
            return Err(bad(
                field(j, "old"),
                format!(
                    "{:?} is found where replacement {i} ({:?}) is: each old text must be \
                     its own",
                    replacements[j].old, replacements[i].old
                ),
            ));
        }
    }
    Ok(())
}

fn overlaps(a: &BBox, b: &BBox) -> bool {
    a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom
}

/// The box of `old`: an OCR line or word that says it (after MARIO-Eval normalisation), else a
/// line of the picture's own layout that does.
fn find_old(
    i: usize,
    old: &str,
    page: &OcrPage,
    known: Option<&Layout>,
    size: (u32, u32),
) -> Result<(BBox, &'static str), PosterError> {
    let want = normalize_words([old]);
    if want.is_empty() {
        return Err(bad(
            field(i, "old"),
            format!("{old:?} has no letters or digits to look for"),
        ));
    }
    let same = |text: &str| normalize_words([text]) == want;
    if let Some(line) = page.lines.iter().find(|l| same(&l.text)) {
        return Ok((line.bbox, "ocr"));
    }
    if let Some(word) = page.words.iter().find(|w| same(&w.text)) {
        return Ok((word.bbox, "ocr"));
    }
    // A layout from a file's metadata can say anything: its box is clipped to the picture.
    if let Some(bbox) = known
        .and_then(|k| layout_box(k, &same))
        .and_then(|b| clip(b, size))
    {
        return Ok((bbox, "layout"));
    }
    let read: Vec<String> = page.lines.iter().map(|l| format!("{:?}", l.text)).collect();
    let read = if read.is_empty() {
        "nothing".to_string()
    } else {
        read.join(", ")
    };
    Err(bad(
        field(i, "old"),
        format!("{old:?} is not in the picture; OCR read {read}"),
    ))
}

/// `b` clipped to a `width`×`height` picture; `None` when nothing of it is inside.
fn clip(b: BBox, (width, height): (u32, u32)) -> Option<BBox> {
    let c = BBox::new(
        b.left.clamp(0, width as i32),
        b.top.clamp(0, height as i32),
        b.right.clamp(0, width as i32),
        b.bottom.clamp(0, height as i32),
    );
    (c.right > c.left && c.bottom > c.top).then_some(c)
}

/// The box of the layout line, or of the stacked sub-line (`\n`) of one, that `same` accepts;
/// a line's sub-lines share its height equally, as the renderer stacks them.
fn layout_box(layout: &Layout, same: &dyn Fn(&str) -> bool) -> Option<BBox> {
    layout.lines.iter().find_map(|line| {
        if same(&line.text) {
            return Some(line.bbox);
        }
        let subs: Vec<&str> = line.text.split('\n').collect();
        let j = subs.iter().position(|s| same(s))?;
        let (b, n) = (line.bbox, subs.len() as i32);
        let row = |k: i32| {
            (i64::from(b.top)
                + (i64::from(b.bottom) - i64::from(b.top)) * i64::from(k) / i64::from(n))
                as i32
        };
        Some(BBox::new(b.left, row(j as i32), b.right, row(j as i32 + 1)))
    })
}

/// The font size `text` fills `bbox` at (`None`: nothing drawable).
fn font_px(
    renderer: &Renderer,
    i: usize,
    text: &str,
    bbox: BBox,
    size: (u32, u32),
) -> Result<Option<f32>, PosterError> {
    let layout = Layout::new(size.0, size.1, vec![TextLine::new(text, bbox)]);
    match renderer.render(&layout) {
        Ok(r) => Ok(r.lines.first().and_then(|l| l.font_px)),
        Err(RenderError::MissingGlyph { ch, .. }) => Err(bad(
            field(i, "new"),
            format!(
                "no installed font has a glyph for {ch:?} (U+{:04X})",
                ch as u32
            ),
        )),
        Err(e @ RenderError::LineTooLong { .. }) => Err(bad(field(i, "new"), e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The box the new text is drawn in, and its font size: the old box when the new text fills
/// its height there, else the box widened (centred, then into whichever side has room) up
/// to the nearest other text or the picture's edge.
fn fit_new(
    renderer: &Renderer,
    i: usize,
    r: &Replacement,
    found: BBox,
    others: &[BBox],
    size: (u32, u32),
) -> Result<(BBox, f32), PosterError> {
    // Checked here as well as by the renderer: a renderer may be set to skip such glyphs.
    for ch in r.new.chars().filter(|c| !c.is_whitespace()) {
        if renderer.font_for_char(ch, None)?.is_none() {
            return Err(bad(
                field(i, "new"),
                format!(
                    "no installed font has a glyph for {ch:?} (U+{:04X})",
                    ch as u32
                ),
            ));
        }
    }
    // The old text only sets the size to match: one the fonts cannot draw (it was read from
    // the picture) leaves the new text at its own size.
    let old_px = font_px(renderer, i, &r.old, found, size)
        .ok()
        .flatten()
        .unwrap_or(0.0);
    let new_px = font_px(renderer, i, &r.new, found, size)?
        .ok_or_else(|| bad(field(i, "new"), format!("{:?} has nothing to draw", r.new)))?;
    let mut drawn = found;
    let mut px = new_px;
    if new_px < old_px * 0.95 {
        let wanted = (found.width() as f32 * old_px / new_px).ceil() as i32;
        let (lo, hi) = free_span(found, others, size.0);
        let grow = wanted - found.width();
        let mut left = found.left - grow / 2;
        let mut right = found.right + (grow - grow / 2);
        // Shift into whichever side has room, then clamp to the free span.
        if left < lo {
            right += lo - left;
            left = lo;
        }
        if right > hi {
            left = (left - (right - hi)).max(lo);
            right = hi;
        }
        drawn = BBox::new(left, found.top, right, found.bottom);
        px = font_px(renderer, i, &r.new, drawn, size)?.unwrap_or(0.0);
    }
    if px < MIN_FONT_PX {
        return Err(bad(
            field(i, "new"),
            format!(
                "{:?} does not fit the {}x{} box of {:?} (widened to {} px of free space) at \
                 {MIN_FONT_PX} px or more",
                r.new,
                found.width(),
                found.height(),
                r.old,
                drawn.width()
            ),
        ));
    }
    Ok((drawn, px))
}

/// The horizontal span free of other text around `found`'s row: from the nearest text on the
/// left (or the edge) to the nearest on the right, with a 2-pixel gap.
fn free_span(found: BBox, others: &[BBox], width: u32) -> (i32, i32) {
    let same_row = |b: &&BBox| b.top < found.bottom && found.top < b.bottom;
    let lo = others
        .iter()
        .filter(same_row)
        .filter(|b| b.right <= found.left)
        .map(|b| b.right + 2)
        .max()
        .unwrap_or(0);
    let hi = others
        .iter()
        .filter(same_row)
        .filter(|b| b.left >= found.right)
        .map(|b| b.left - 2)
        .min()
        .unwrap_or(width as i32);
    (lo.min(found.left), hi.max(found.right))
}

/// Where pixels may change: each found and drawn box with a margin (anti-aliasing and the
/// old glyphs' overhang), less the boxes of other text, which is never touched.
pub fn edit_region(boxes: &[EditedBox], protected: &[BBox], (w, h): (u32, u32)) -> GrayImage {
    let mut mask = GrayImage::new(w, h);
    for b in boxes {
        for bbox in [b.found, b.drawn] {
            let margin = (bbox.height() / 6).max(3);
            let x0 = (bbox.left - margin).clamp(0, w as i32) as u32;
            let x1 = (bbox.right + margin).clamp(0, w as i32) as u32;
            let y0 = (bbox.top - margin).clamp(0, h as i32) as u32;
            let y1 = (bbox.bottom + margin).clamp(0, h as i32) as u32;
            for y in y0..y1 {
                for x in x0..x1 {
                    let (xi, yi) = (x as i32, y as i32);
                    let kept = protected
                        .iter()
                        .any(|p| xi >= p.left && xi < p.right && yi >= p.top && yi < p.bottom);
                    if !kept {
                        mask.put_pixel(x, y, Luma([255]));
                    }
                }
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_span_stops_at_neighbours_on_the_row_only() {
        let found = BBox::new(100, 50, 150, 70);
        let others = [
            BBox::new(40, 52, 80, 68),   // left, same row
            BBox::new(190, 48, 230, 72), // right, same row
            BBox::new(0, 100, 300, 120), // below: ignored
        ];
        assert_eq!(free_span(found, &others, 300), (82, 188));
        assert_eq!(free_span(found, &[], 300), (0, 300));
    }

    #[test]
    fn a_longer_word_widens_the_box_and_one_that_cannot_fit_is_refused() {
        let renderer = Renderer::with_default_font().unwrap();
        let size = (256, 128);
        let found = BBox::new(100, 40, 156, 64);
        let r = |old: &str, new: &str| Replacement {
            old: old.into(),
            new: new.into(),
        };
        let (same, px) = fit_new(&renderer, 0, &r("SALE", "SAL"), found, &[], size).unwrap();
        assert_eq!(same, found);
        assert!(px >= MIN_FONT_PX);
        let (wide, _) = fit_new(&renderer, 0, &r("SALE", "CLEARANCE"), found, &[], size).unwrap();
        assert!(wide.width() > found.width(), "{wide:?}");
        assert_eq!((wide.top, wide.bottom), (found.top, found.bottom));
        let walls = [BBox::new(90, 40, 99, 64), BBox::new(157, 40, 170, 64)];
        let long = "A MUCH MUCH LONGER REPLACEMENT TEXT";
        let err = fit_new(&renderer, 2, &r("SALE", long), found, &walls, size).unwrap_err();
        assert!(err.to_string().starts_with("replacements[2].new:"), "{err}");
        assert!(err.to_string().contains("8 px"), "{err}");
        let err = fit_new(&renderer, 1, &r("SALE", "\u{10FFFD}"), found, &[], size).unwrap_err();
        assert!(err.to_string().starts_with("replacements[1].new:"), "{err}");
    }

    #[test]
    fn an_unknown_old_text_lists_what_was_read() {
        let page = OcrPage {
            width: 10,
            height: 10,
            words: Vec::new(),
            lines: vec![letterpress_ocr::OcrLine {
                text: "BIG SALE".into(),
                bbox: BBox::new(0, 0, 5, 5),
                words: Vec::new(),
            }],
            chars: Vec::new(),
        };
        let err = find_old(0, "PARTY", &page, None, (200, 200))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("replacements[0].old:"), "{err}");
        assert!(err.contains("\"BIG SALE\""), "{err}");
        assert_eq!(
            find_old(0, "big sale!", &page, None, (200, 200)).unwrap().1,
            "ocr"
        );
        let known = Layout::new(10, 10, vec![TextLine::new("PARTY", BBox::new(1, 1, 9, 9))]);
        assert_eq!(
            find_old(0, "party", &page, Some(&known), (200, 200)).unwrap(),
            (BBox::new(1, 1, 9, 9), "layout")
        );
        let stacked = Layout::new(
            10,
            10,
            vec![TextLine::new("SUMMER\nSALE", BBox::new(0, 20, 100, 60))],
        );
        assert_eq!(
            find_old(0, "sale", &page, Some(&stacked), (200, 200)).unwrap(),
            (BBox::new(0, 40, 100, 60), "layout")
        );
    }

    #[test]
    fn old_texts_must_not_share_pixels_and_layout_boxes_are_clipped() {
        let reps = vec![
            Replacement {
                old: "SALE".into(),
                new: "DEAL".into(),
            },
            Replacement {
                old: "BIG SALE".into(),
                new: "HUGE DEAL".into(),
            },
        ];
        let same_place = [
            (BBox::new(30, 10, 60, 20), "ocr"),
            (BBox::new(0, 10, 60, 20), "ocr"),
        ];
        let err = refuse_overlaps(&reps, &same_place).unwrap_err().to_string();
        assert!(err.starts_with("replacements[1].old:"), "{err}");
        let apart = [
            (BBox::new(0, 0, 5, 5), "ocr"),
            (BBox::new(5, 0, 9, 5), "ocr"),
        ];
        assert!(refuse_overlaps(&reps, &apart).is_ok());

        let page = OcrPage {
            width: 64,
            height: 64,
            words: Vec::new(),
            lines: Vec::new(),
            chars: Vec::new(),
        };
        let huge = BBox::new(i32::MIN + 1, -5, i32::MAX - 1, 8);
        let known = Layout::new(64, 64, vec![TextLine::new("PARTY\nNIGHT", huge)]);
        let (b, by) = find_old(0, "party", &page, Some(&known), (64, 64)).unwrap();
        assert_eq!((b.left, b.right, by), (0, 64, "layout"));
        let outside = Layout::new(
            64,
            64,
            vec![TextLine::new("PARTY", BBox::new(70, 0, 90, 9))],
        );
        assert!(find_old(0, "party", &page, Some(&outside), (64, 64)).is_err());
    }
}

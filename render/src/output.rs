//! What a rendering yields: the glyph mask and the images derived from it.

use image::{GrayImage, Luma, Rgb as Pixel, RgbImage};
use imageproc::drawing::draw_hollow_rect_mut;
use imageproc::rect::Rect;
use letterpress_layout::{BBox, char_class};

use crate::renderer::{CharBox, LineRendering, PlacedGlyph};

/// The result of rendering a layout.
#[derive(Debug, Clone)]
pub struct Rendering {
    pub width: u32,
    pub height: u32,
    /// White text on black, canvas size (AnyText / glyph ControlNet convention).
    pub glyph_mask: GrayImage,
    /// Every drawn character's ink box, line by line in reading order.
    pub char_boxes: Vec<CharBox>,
    /// How each layout line was drawn, by line index.
    pub lines: Vec<LineRendering>,
    /// Things the renderer fixed or skipped (clipped boxes, removed characters).
    pub warnings: Vec<String>,
    pub(crate) glyphs: Vec<PlacedGlyph>,
}

/// Coverage at or above which a pixel counts as a character's in the segmentation map.
const SEGMENT_COVERAGE: u8 = 64;

impl Rendering {
    pub(crate) fn blank(width: u32, height: u32) -> Self {
        Rendering {
            width,
            height,
            glyph_mask: GrayImage::new(width, height),
            char_boxes: Vec::new(),
            lines: Vec::new(),
            warnings: Vec::new(),
            glyphs: Vec::new(),
        }
    }

    /// Draws `glyph` into the mask (max of coverages where glyphs overlap), clipped to its
    /// line's box; returns the box of the pixels it inked.
    pub(crate) fn blit(&mut self, glyph: &PlacedGlyph) -> Option<BBox> {
        let mut ink: Option<BBox> = None;
        self.for_each_pixel(glyph, |mask, x, y, c| {
            let p = &mut mask.get_pixel_mut(x, y).0[0];
            *p = (*p).max(c);
            let (x, y) = (x as i32, y as i32);
            ink = Some(match ink {
                None => BBox::new(x, y, x + 1, y + 1),
                Some(b) => BBox::new(
                    b.left.min(x),
                    b.top.min(y),
                    b.right.max(x + 1),
                    b.bottom.max(y + 1),
                ),
            });
        });
        ink
    }

    /// Calls `f(image, x, y, coverage)` for each inked pixel of `glyph` inside its clip box.
    fn for_each_pixel(
        &mut self,
        glyph: &PlacedGlyph,
        mut f: impl FnMut(&mut GrayImage, u32, u32, u8),
    ) {
        let bm = &glyph.bitmap;
        let x0 = glyph.clip.left.max(glyph.x);
        let y0 = glyph.clip.top.max(glyph.y);
        let x1 = glyph.clip.right.min(glyph.x + bm.width as i32);
        let y1 = glyph.clip.bottom.min(glyph.y + bm.height as i32);
        for y in y0..y1 {
            let row = (y - glyph.y) as usize * bm.width;
            for x in x0..x1 {
                let c = bm.coverage[row + (x - glyph.x) as usize];
                if c > 0 {
                    f(&mut self.glyph_mask, x as u32, y as u32, c);
                }
            }
        }
    }

    /// Black text on white (GlyphControl convention).
    pub fn inverse(&self) -> GrayImage {
        let mut img = self.glyph_mask.clone();
        img.pixels_mut().for_each(|p| p.0[0] = 255 - p.0[0]);
        img
    }

    /// TextDiffuser's character-segmentation map: each pixel holds 0 for background or the
    /// class 1..=95 of the character inked there (the alphabet of docs/architecture.md, "TextDiffuser-2's formats"). Characters outside the
    /// alphabet (CJK, accented letters) stay background, as TextDiffuser has no class for them.
    pub fn segmentation_map(&self) -> GrayImage {
        let mut classes = GrayImage::new(self.width, self.height);
        let mut best = GrayImage::new(self.width, self.height);
        for glyph in &self.glyphs {
            let Some(class) = char_class(glyph.ch) else {
                continue;
            };
            let bm = &glyph.bitmap;
            for by in 0..bm.height {
                for bx in 0..bm.width {
                    let (x, y) = (glyph.x + bx as i32, glyph.y + by as i32);
                    let c = bm.coverage[by * bm.width + bx];
                    let inside = x >= glyph.clip.left
                        && x < glyph.clip.right
                        && y >= glyph.clip.top
                        && y < glyph.clip.bottom;
                    if !inside || c < SEGMENT_COVERAGE {
                        continue;
                    }
                    let (x, y) = (x as u32, y as u32);
                    // Where glyphs overlap, the one covering the pixel most wins.
                    if c > best.get_pixel(x, y).0[0] {
                        best.put_pixel(x, y, Luma([c]));
                        classes.put_pixel(x, y, Luma([class]));
                    }
                }
            }
        }
        classes
    }

    /// A picture for people: the text in each line's colour over a neutral grey, line boxes
    /// outlined in distinct colours and character boxes in a faint one.
    pub fn preview(&self) -> RgbImage {
        const BACKGROUND: [u8; 3] = [200, 200, 196];
        const DEFAULT_TEXT: [u8; 3] = [24, 24, 24];
        const LINE_COLOURS: [[u8; 3]; 6] = [
            [220, 50, 47],
            [38, 139, 210],
            [133, 153, 0],
            [211, 54, 130],
            [181, 137, 0],
            [42, 161, 152],
        ];
        let mut img = RgbImage::from_pixel(self.width, self.height, Pixel(BACKGROUND));
        for glyph in &self.glyphs {
            let colour = self
                .lines
                .get(glyph.line)
                .and_then(|l| l.color)
                .map_or(DEFAULT_TEXT, |c| c.0);
            let bm = &glyph.bitmap;
            for by in 0..bm.height {
                for bx in 0..bm.width {
                    let (x, y) = (glyph.x + bx as i32, glyph.y + by as i32);
                    let inside = x >= glyph.clip.left
                        && x < glyph.clip.right
                        && y >= glyph.clip.top
                        && y < glyph.clip.bottom;
                    let a = u16::from(bm.coverage[by * bm.width + bx]);
                    if !inside || a == 0 {
                        continue;
                    }
                    let p = img.get_pixel_mut(x as u32, y as u32);
                    for (dst, src) in p.0.iter_mut().zip(colour) {
                        *dst = ((u16::from(*dst) * (255 - a) + u16::from(src) * a) / 255) as u8;
                    }
                }
            }
        }
        for cb in &self.char_boxes {
            draw_hollow_rect_mut(&mut img, rect(cb.bbox), Pixel([150, 150, 150]));
        }
        for (i, line) in self.lines.iter().enumerate() {
            draw_hollow_rect_mut(
                &mut img,
                rect(line.clipped_box),
                Pixel(LINE_COLOURS[i % LINE_COLOURS.len()]),
            );
        }
        img
    }
}

fn rect(b: BBox) -> Rect {
    Rect::at(b.left, b.top).of_size(b.width().max(1) as u32, b.height().max(1) as u32)
}

//! The renderer: validates a layout, fits each line into its box and draws the glyph mask.

use std::sync::Arc;

use letterpress_layout::{BBox, InkExtent, Layout, Rgb, TextMeasure};

use crate::cache::{BitmapKey, GlyphBitmap, GlyphCache, QUANTUM};
use crate::fonts::{DEFAULT_FONT, FaceId, FontBook};
use crate::shape::{ShapedText, shape};
use crate::{RenderError, Rendering};

/// Largest canvas side accepted, in pixels.
pub const MAX_CANVAS_SIDE: u32 = 4096;
/// Longest line accepted, in characters (after control characters are stripped).
pub const MAX_LINE_CHARS: usize = 1000;

/// What to do with a character that no installed font can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingGlyph {
    /// Fail with an error naming the character (default).
    #[default]
    Error,
    /// Leave it out and report it in the rendering's warnings.
    Skip,
}

/// Renderer settings.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Font for lines that name none: a family name or a font file (`PATH` or `PATH#INDEX`
    /// for a face of a `.ttc`). Default: DejaVu Sans Bold.
    pub font: String,
    /// Policy for characters no installed font has. Default: error.
    pub missing_glyph: MissingGlyph,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            font: DEFAULT_FONT.to_string(),
            missing_glyph: MissingGlyph::Error,
        }
    }
}

/// A character's ink box in canvas pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CharBox {
    #[serde(rename = "char")]
    pub ch: char,
    /// Ink box, clipped to the line's (clipped) box.
    pub bbox: BBox,
    /// Index of the layout line it belongs to.
    pub line: usize,
}

/// How one line was drawn.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LineRendering {
    /// The line's box clipped to the canvas (what was drawn into).
    pub clipped_box: BBox,
    /// Font size in pixels chosen to fill the box; `None` when nothing was drawn.
    pub font_px: Option<f32>,
    /// The face the line was set in (fallback faces may draw single characters).
    pub font: String,
    /// Union of the line's drawn ink.
    pub ink: Option<BBox>,
    #[serde(skip)]
    pub color: Option<Rgb>,
}

/// A glyph bitmap placed on the canvas, kept so that the segmentation map and the preview can
/// be drawn later without rasterising again.
#[derive(Debug, Clone)]
pub(crate) struct PlacedGlyph {
    pub bitmap: Arc<GlyphBitmap>,
    /// Canvas position of the bitmap's top-left pixel.
    pub x: i32,
    pub y: i32,
    pub clip: BBox,
    pub ch: char,
    pub line: usize,
}

/// Draws layouts as glyph masks. Fonts and rasterised glyphs are cached inside, so keep one
/// renderer for many layouts. It is `Send + Sync`; threads share its caches.
pub struct Renderer {
    book: FontBook,
    cache: GlyphCache,
    default_face: FaceId,
    options: RenderOptions,
}

impl Renderer {
    /// A renderer with the given options; fails when the default font cannot be found.
    pub fn new(options: RenderOptions) -> Result<Self, RenderError> {
        let book = FontBook::default();
        let default_face = book.resolve(&options.font)?;
        Ok(Renderer {
            book,
            cache: GlyphCache::default(),
            default_face,
            options,
        })
    }

    /// A renderer with DejaVu Sans Bold and the error policy for missing glyphs.
    pub fn with_default_font() -> Result<Self, RenderError> {
        Self::new(RenderOptions::default())
    }

    /// The face a font spec names, or the default face for `None`.
    fn face(&self, font: Option<&str>) -> Result<FaceId, RenderError> {
        font.map_or(Ok(self.default_face), |spec| self.book.resolve(spec))
    }

    /// Name (`path#index`) of the face that draws `ch` in a line set in `font` (`None`: the
    /// default), after fallback; `None` when no installed font has it.
    pub fn font_for_char(
        &self,
        ch: char,
        font: Option<&str>,
    ) -> Result<Option<String>, RenderError> {
        let face = self.face(font)?;
        Ok(self
            .cache
            .info(&self.book, face, ch)
            .map(|info| self.book.face(info.face).name.clone()))
    }

    /// The file and face index that `font` (a spec as in [`RenderOptions::font`], or `None`
    /// for the default) resolves to; `None` for fonts that live only in memory.
    pub fn font_file(
        &self,
        font: Option<&str>,
    ) -> Result<Option<(std::path::PathBuf, u32)>, RenderError> {
        let face = self.face(font)?;
        Ok(self.book.face(face).source.clone())
    }

    /// Glyph bitmaps rasterised so far (the rest came from the cache).
    pub fn glyphs_rasterised(&self) -> usize {
        self.cache.rasterised()
    }

    /// Renders `layout`: the glyph mask (white on black), character boxes and warnings.
    pub fn render(&self, layout: &Layout) -> Result<Rendering, RenderError> {
        let (width, height) = (layout.width, layout.height);
        if !(1..=MAX_CANVAS_SIDE).contains(&width) || !(1..=MAX_CANVAS_SIDE).contains(&height) {
            return Err(RenderError::CanvasSize {
                width,
                height,
                max: MAX_CANVAS_SIDE,
            });
        }
        let canvas = BBox::new(0, 0, width as i32, height as i32);
        let mut out = Rendering::blank(width, height);

        for (index, line) in layout.lines.iter().enumerate() {
            if line.bbox.is_empty() {
                return Err(RenderError::EmptyBox {
                    line: index,
                    bbox: line.bbox,
                });
            }
            let clipped = line
                .bbox
                .intersect(&canvas)
                .ok_or(RenderError::BoxOutsideCanvas {
                    line: index,
                    bbox: line.bbox,
                    width,
                    height,
                })?;
            if clipped != line.bbox {
                out.warnings.push(format!(
                    "line {index}: box [{}, {}, {}, {}] extends past the {width}x{height} canvas; clipped to [{}, {}, {}, {}]",
                    line.bbox.left, line.bbox.top, line.bbox.right, line.bbox.bottom,
                    clipped.left, clipped.top, clipped.right, clipped.bottom
                ));
            }
            let text = clean_text(&line.text);
            if text.len() != line.text.len() {
                out.warnings
                    .push(format!("line {index}: control characters removed"));
            }
            let chars = text.chars().count();
            if chars > MAX_LINE_CHARS {
                return Err(RenderError::LineTooLong {
                    line: index,
                    chars,
                    max: MAX_LINE_CHARS,
                });
            }
            let face = self.face(line.font.as_deref())?;
            let align = line.align.unwrap_or_default();
            let shaped = shape(&text, face, align, &self.book, &self.cache);
            if let Some(&ch) = shaped.missing.first() {
                match self.options.missing_glyph {
                    MissingGlyph::Error => {
                        return Err(RenderError::MissingGlyph { line: index, ch });
                    }
                    MissingGlyph::Skip => {
                        let list: String = shaped.missing.iter().collect();
                        out.warnings.push(format!(
                            "line {index}: skipped characters no installed font has: {list:?}"
                        ));
                    }
                }
            }
            let info = self.draw_line(&mut out, index, &shaped, clipped, align);
            if info.font_px.is_none() && !text.trim().is_empty() {
                out.warnings
                    .push(format!("line {index}: box too small to draw any text"));
            }
            out.lines.push(LineRendering {
                font: self.book.face(face).name.clone(),
                color: line.color,
                ..info
            });
        }
        Ok(out)
    }

    /// Fits the shaped text into `bbox` and draws it; returns what was drawn.
    fn draw_line(
        &self,
        out: &mut Rendering,
        line: usize,
        shaped: &ShapedText,
        bbox: BBox,
        align: letterpress_layout::Align,
    ) -> LineRendering {
        let mut info = LineRendering {
            clipped_box: bbox,
            font_px: None,
            font: String::new(),
            ink: None,
            color: None,
        };
        let Some([ix0, iy0, ix1, iy1]) = shaped.ink else {
            return info;
        };
        let (ink_w, ink_h) = (ix1 - ix0, iy1 - iy0);
        if ink_w <= 0.0 || ink_h <= 0.0 {
            return info;
        }
        let (bw, bh) = (bbox.width() as f32, bbox.height() as f32);
        // Fill the limiting dimension; round the size down to the cache quantum so the ink
        // still fits.
        let size_q = ((bw / ink_w).min(bh / ink_h) * QUANTUM).floor();
        if size_q < 1.0 {
            return info;
        }
        let px = size_q / QUANTUM;
        let slack_x = match align {
            letterpress_layout::Align::Left => 0.0,
            letterpress_layout::Align::Center => 0.5,
            letterpress_layout::Align::Right => 1.0,
        } * (bw - ink_w * px);
        let origin_x = bbox.left as f32 + slack_x - ix0 * px;
        let origin_y = bbox.top as f32 + (bh - ink_h * px) / 2.0 - iy0 * px;

        let mut line_ink: Option<BBox> = None;
        for g in &shaped.glyphs {
            if g.ink.is_none() {
                continue;
            }
            let (x, y) = (origin_x + g.x * px, origin_y + g.y * px);
            let (xi, fx) = split_quantum(x);
            let (yi, fy) = split_quantum(y);
            let key = BitmapKey {
                face: g.face,
                glyph: g.id.0,
                size_q: size_q as u32,
                fx,
                fy,
            };
            let bitmap = self.cache.bitmap(&self.book, key);
            let placed = PlacedGlyph {
                x: xi + bitmap.left,
                y: yi + bitmap.top,
                bitmap,
                clip: bbox,
                ch: g.ch,
                line,
            };
            if let Some(ink) = out.blit(&placed) {
                out.char_boxes.push(CharBox {
                    ch: g.ch,
                    bbox: ink,
                    line,
                });
                line_ink = Some(line_ink.map_or(ink, |b| union(b, ink)));
            }
            out.glyphs.push(placed);
        }
        info.font_px = Some(px);
        info.ink = line_ink;
        info
    }
}

impl TextMeasure for Renderer {
    fn ink_extent(
        &self,
        text: &str,
        font: Option<&str>,
    ) -> Result<InkExtent, Box<dyn std::error::Error + Send + Sync>> {
        let face = self.face(font)?;
        let shaped = shape(
            &clean_text(text),
            face,
            Default::default(),
            &self.book,
            &self.cache,
        );
        if let (Some(&ch), MissingGlyph::Error) =
            (shaped.missing.first(), self.options.missing_glyph)
        {
            return Err(Box::new(RenderError::MissingGlyph { line: 0, ch }));
        }
        Ok(shaped.ink.map_or(
            InkExtent {
                width: 0.0,
                height: 0.0,
            },
            |[x0, y0, x1, y1]| InkExtent {
                width: x1 - x0,
                height: y1 - y0,
            },
        ))
    }
}

/// Integer pixel and quantised fraction of a coordinate.
fn split_quantum(v: f32) -> (i32, u8) {
    let floor = v.floor();
    let q = ((v - floor) * QUANTUM).round();
    if q >= QUANTUM {
        (floor as i32 + 1, 0)
    } else {
        (floor as i32, q as u8)
    }
}

fn union(a: BBox, b: BBox) -> BBox {
    BBox::new(
        a.left.min(b.left),
        a.top.min(b.top),
        a.right.max(b.right),
        a.bottom.max(b.bottom),
    )
}

/// Removes control characters (keeping `\n`, which stacks sub-lines; `\r\n` counts as one)
/// and zero-width format characters that fonts draw as boxes.
fn clean_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter(|&c| {
            c == '\n'
                || !(c.is_control()
                    || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}' | '\u{FEFF}'))
        })
        .collect()
}

//! The glyph renderer: draws a [`Layout`](letterpress_layout::Layout) as the white-on-black
//! glyph mask a glyph ControlNet reads, with character boxes, TextDiffuser's
//! character-segmentation map, the inverse (GlyphControl style) and a preview for people.
//!
//! Each line's text is sized so that its ink fills the box along the limiting dimension
//! (centred unless the line says `left` or `right`); `\n` stacks sub-lines. Fonts come from the
//! system (fontdb) or from files; characters the line's font lacks fall back to DejaVu, Noto
//! and Noto CJK, then to any installed font that has them.
//!
//! ```no_run
//! use letterpress_layout::{BBox, Layout, TextLine};
//! use letterpress_render::Renderer;
//!
//! let renderer = Renderer::with_default_font()?;
//! let layout = Layout::new(512, 512, vec![TextLine::new("Summer Vibe", BBox::new(80, 80, 432, 160))]);
//! let rendering = renderer.render(&layout)?;
//! rendering.glyph_mask.save("mask.png")?;
//! for cb in &rendering.char_boxes {
//!     println!("{} {:?}", cb.ch, cb.bbox);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod error;
mod fonts;
mod output;
mod renderer;
mod shape;

pub use error::RenderError;
pub use fonts::DEFAULT_FONT;
pub use output::Rendering;
pub use renderer::{
    CharBox, LineRendering, MAX_CANVAS_SIDE, MAX_LINE_CHARS, MissingGlyph, RenderOptions, Renderer,
};

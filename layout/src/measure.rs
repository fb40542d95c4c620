//! How the planner asks the renderer how big text is, without depending on it
//! (docs/architecture.md, "Dependency rules": `render` depends on `layout`, never the reverse).

/// Ink extent of a piece of text set at a font size of 1 px. Outline fonts scale linearly, so
/// the extent at `px` is these numbers times `px`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InkExtent {
    /// Width of the inked area.
    pub width: f32,
    /// Height of the inked area (all sub-lines for text with `\n`).
    pub height: f32,
}

impl InkExtent {
    /// The extent at a font size of `px` pixels.
    pub fn at_px(self, px: f32) -> InkExtent {
        InkExtent {
            width: self.width * px,
            height: self.height * px,
        }
    }
}

/// Measures text with real font metrics. `letterpress-render`'s `Renderer` implements it.
pub trait TextMeasure {
    /// Ink extent of `text` (with `\n` for stacked sub-lines) in `font` (a family name, a font
    /// file, or `None` for the default), per pixel of font size.
    fn ink_extent(
        &self,
        text: &str,
        font: Option<&str>,
    ) -> Result<InkExtent, Box<dyn std::error::Error + Send + Sync>>;
}

//! Layout types for Letterpress: a canvas and the text lines placed on it.
//!
//! A [`Layout`] is what the planner produces, what designers edit and what the glyph renderer
//! draws. Boxes are in canvas pixels; [`GridBox`] converts them to and from TextDiffuser-2's
//! 0..128 grid (1 unit = 4 px at 512×512).
//!
//! ```
//! use letterpress_layout::{BBox, Layout, TextLine};
//!
//! let layout = Layout::new(512, 512, vec![TextLine::new("Summer Vibe", BBox::new(80, 80, 400, 160))]);
//! let json = serde_json::to_string(&layout).unwrap();
//! assert_eq!(Layout::from_json(&json).unwrap(), layout);
//!
//! // TextDiffuser-2's planner speaks in a 128×128 grid.
//! let grid = layout.lines[0].bbox.to_grid(512, 512);
//! assert_eq!((grid.l, grid.t, grid.r, grid.b), (20, 20, 100, 40));
//! ```

mod alphabet;
mod error;
mod grid;
mod measure;
mod types;

pub use alphabet::{ALPHABET, char_class};
pub use error::LayoutError;
pub use grid::{GRID_SIZE, GridBox};
pub use measure::{InkExtent, TextMeasure};
pub use types::{Align, BBox, Layout, Rgb, TextLine};

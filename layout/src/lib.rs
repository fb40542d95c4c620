//! Layouts for Letterpress: the types (a canvas and the text lines placed on it), keyword
//! extraction, the planners that decide what text goes where, and TextDiffuser-2's formats.
//!
//! A [`Layout`] is what the planner produces, what designers edit and what the glyph renderer
//! draws. Boxes are in canvas pixels; [`GridBox`] converts them to and from TextDiffuser-2's
//! 0..128 grid (1 unit = 4 px at 512×512). The typographic planner measures text through
//! [`TextMeasure`], which the renderer implements, so this crate never depends on it.
//!
//! ```
//! use letterpress_layout::{BBox, Layout, TextLine, td2};
//!
//! let layout = Layout::new(512, 512, vec![TextLine::new("Summer Vibe", BBox::new(80, 80, 400, 160))]);
//! assert_eq!(td2::serialize(&layout), "Summer Vibe 20,20,100,40");
//!
//! // What an LLM planner answers, parsed back onto a canvas.
//! let parsed = td2::parse("1. Summer Vibe 20, 20, 100, 40.", &[]);
//! assert_eq!(parsed.to_layout(512, 512), layout);
//! ```

mod alphabet;
mod error;
mod grid;
mod keywords;
mod measure;
pub mod planner;
pub mod td2;
mod tokens;
mod types;

pub use alphabet::{ALPHABET, char_class};
pub use error::LayoutError;
pub use grid::{GRID_SIZE, GridBox};
pub use keywords::{extract_keywords, is_visible, normalize_keywords, parse_keyword_list};
pub use measure::{InkExtent, TextMeasure};
pub use planner::{
    CONSTRAINT_NAMES, CanvasPlan, Constraint, LlmApi, LlmConfig, LlmPlanner, Plan, PlannerChoice,
    Template, TypographicPlanner, edit_deterministic, edit_layout, plan_on_canvas,
};
pub use tokens::{layout_tokens, line_tokens};
pub use types::{Align, BBox, Layout, Rgb, TextLine};

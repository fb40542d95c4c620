//! Layout planners: the typographic planner (default, no model) and the LLM planner
//! (any OpenAI-compatible server, TextDiffuser-2's own planner included, its answer
//! constrained per server), the tidying after parsing, and conversational edits.

mod canvas;
mod constrain;
mod edit;
#[cfg(test)]
mod fixed_measure;
mod gbnf;
mod llm;
pub mod tidy;
mod typographic;

pub use canvas::{CanvasPlan, PlannerChoice, plan_on_canvas};

pub use constrain::{CONSTRAINT_NAMES, Constraint};
pub use edit::{edit_deterministic, edit_layout};
pub use gbnf::layout_grammar;
pub use llm::{LlmApi, LlmConfig, LlmPlanner};
pub use typographic::{
    MAX_KEYWORD_CHARS, MAX_KEYWORDS, MAX_SIDE, MIN_SIDE, Template, TypographicPlanner,
    check_keywords,
};

use serde::Serialize;

use crate::Layout;

/// A planned layout with what the planner decided and had to fix.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    #[serde(flatten)]
    pub layout: Layout,
    /// Which planner produced it: `typographic`, `llm`, `llm+typographic` when keywords the
    /// LLM left out were placed by the typographic planner, or `edit` for an understood edit.
    pub planner: String,
    /// Composition template (typographic planner only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    pub seed: u64,
    /// Planned font size of each line in pixels (typographic placements only; empty for
    /// lines an LLM placed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub font_px: Vec<f32>,
    pub warnings: Vec<String>,
}

/// A small deterministic generator (SplitMix64): plans depend only on the seed, never on a
/// library's generator changing between versions.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

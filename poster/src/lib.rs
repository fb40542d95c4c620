//! The poster engine: the one place a poster is made. A [`PosterRequest`] (prompt, text,
//! canvas, diffusion settings) goes through the stages
//!
//! 1. **plan**: the text (quoted in the prompt, given as keywords, or a finished layout) is
//!    placed by the typographic or the LLM planner on the output canvas, whatever its size
//!    (`letterpress_layout::plan_on_canvas`); a given layout is fitted to the canvas;
//! 2. **render**: the glyph renderer draws the layout as a white-on-black mask;
//! 3. **generate**: the mask becomes a glyph ControlNet's control image and/or the layout
//!    becomes TextDiffuser-2 tokens, and the diffusion pipeline paints the images;
//!
//! with a [`PosterEvent`] after each stage and each denoising step, and a stop check between
//! them. The result carries its images, seeds, layout, mask and [`PosterMetadata`] (what a
//! PNG needs to be reproduced). The CLI's `generate` and `poster` commands and the service's
//! worker all call [`PosterEngine::make`]; `docs/architecture.md` shows where it sits.
//!
//! ```no_run
//! use letterpress_diffusion::LoadOptions;
//! use letterpress_diffusion::pipelines::ModelSource;
//! use letterpress_poster::{PosterEngine, PosterRequest, encode_png};
//!
//! let source = ModelSource { model: "my-glyph-controlnet-pipeline".into(), ..Default::default() };
//! let engine = PosterEngine::load(&source, &LoadOptions::default(), Default::default())?;
//! let mut request = PosterRequest::new("a jazz night poster that says 'BLUE NOTE'");
//! request.seed = Some(7);
//! let poster = engine.make(&request, &mut |_event| {}, &|| false)?;
//! let first = &poster.images[0];
//! let png = encode_png(&first.image, &poster.metadata.png_text(first.seed))?;
//! std::fs::write("poster.png", png)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod certificate;
mod edit;
mod engine;
mod error;
mod glyph_init;
mod metadata;
mod repair;
mod request;
mod stages;

pub use certificate::{Certificate, LineCheck, certify, check_line, read_box};
pub use edit::{
    EditPlan, EditRequest, Edited, EditedBox, MAX_EDIT_SIDE, MIN_EDIT_SIDE, MIN_FONT_PX,
    Replacement, edit_region, plan_edit,
};
pub use engine::{Poster, PosterEngine, PosterEvent, PosterImage};
pub use error::PosterError;
pub use glyph_init::{background_colour, glyph_init_image};
pub use metadata::{PosterMetadata, a1111_parameters, encode_png, read_png_text};
pub use repair::{RepairTools, line_region, paste, repair, repair_seed};
pub use request::{
    ControlOptions, LayoutTokens, PosterInit, PosterRequest, PosterText, RepaintRegion,
};
pub use stages::{
    PlannedLayout, generation_request, has_layout_tokens, line_mask, output_size, plan_layout,
};

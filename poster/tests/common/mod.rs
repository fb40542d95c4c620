//! What the poster crate's integration tests share: engines on the tiny fixture pipelines
//! (diffusion/tests/fixtures/pipeline, made with diffusers by tools/make_pipeline_fixtures.py).

use std::path::PathBuf;

use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::ModelSource;
use letterpress_poster::PosterEngine;
use letterpress_render::RenderOptions;

/// The fixture pipeline `kind` (`sd1-controlnet`, `td2`, `sd2-inpaint`, …) as an engine.
pub fn engine_of(kind: &str) -> PosterEngine {
    let source = ModelSource {
        model: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../diffusion/tests/fixtures/pipeline")
            .join(kind),
        ..Default::default()
    };
    PosterEngine::load(&source, &LoadOptions::default(), RenderOptions::default()).unwrap()
}

/// The glyph-ControlNet fixture.
pub fn engine() -> PosterEngine {
    engine_of("sd1-controlnet")
}

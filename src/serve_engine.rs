//! The service's diffusion engine: letterpress-diffusion behind letterpress-api's
//! `PosterEngine` boundary.

use std::path::PathBuf;

use anyhow::{Result, bail};
use letterpress_api::EngineLoader;

/// Checks the folder now (a clear error at start-up) and returns the loader the worker thread
/// runs.
pub fn loader(model_dir: PathBuf, _device: String) -> Result<EngineLoader> {
    if !model_dir.join("model_index.json").is_file() {
        bail!(
            "--model-dir {}: no model_index.json; expected a diffusers folder with unet/, \
             controlnet/, vae/, text_encoder/, tokenizer/ and scheduler/",
            model_dir.display()
        );
    }
    bail!(
        "this build has no diffusion pipeline yet (letterpress-diffusion pipelines are not merged)"
    )
}

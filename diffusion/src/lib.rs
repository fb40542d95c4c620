//! Stable Diffusion's models in tch, numerically equal to diffusers and transformers:
//! the CLIP text encoder and tokenizer (with TextDiffuser-2's layout and character tokens),
//! UNet2DConditionModel, ControlNetModel and AutoencoderKL, each built from its `config.json`
//! and loaded from the standard diffusers folder layout.
//!
//! ```no_run
//! use letterpress_diffusion::{ClipTextModel, ClipTokenizer, LoadOptions, load};
//! use std::path::Path;
//!
//! let root = Path::new("stable-diffusion-v1-5");
//! let tokenizer = ClipTokenizer::from_dir(&root.join("tokenizer"))?;
//! let text = load::<ClipTextModel>(&root.join("text_encoder"), &LoadOptions::default())?;
//! let ids = tokenizer.encode_padded("a poster that says hello");
//! let ids = tch::Tensor::from_slice(&ids).unsqueeze(0);
//! let hidden = text.model.forward(&ids, 0)?; // [1, 77, 768]
//! # Ok::<(), letterpress_diffusion::Error>(())
//! ```

mod attention;
/// The tch this crate is built on, so callers use the same version.
pub use tch;

mod clip;
mod controlnet;
mod embeddings;
mod error;
pub mod glyph_input;
mod layers;
mod mapped;
pub mod pipelines;
mod resnet;
pub mod schedulers;
mod single_file;
mod tokenizer;
pub mod training;
mod unet_2d;
mod unet_2d_blocks;
mod vae;
mod weights;

pub use clip::{ClipTextConfig, ClipTextModel};
pub use controlnet::{ControlNetConfig, ControlNetModel};
pub use error::{Error, Result};
pub use schedulers::{NoiseSource, Scheduler, SchedulerKind, load_scheduler};
pub use single_file::{
    SdVersion, SingleFile, SingleFileOptions, StableDiffusionModels, load_controlnet,
    load_stable_diffusion,
};
pub use tokenizer::ClipTokenizer;
pub use unet_2d::{
    ControlResiduals, PerBlock, PerBlockFlag, UNet2DConditionConfig, UNet2DConditionModel,
};
pub use vae::{AutoencoderKL, AutoencoderKLConfig, LatentDistribution};
pub use weights::{
    FromPretrained, Init, LoadOptions, Loaded, PipelineFolder, build_random, build_with,
    default_kind, fill, find_weights, load, load_with_config, read_json,
};

/// tch exposes only torch's process-wide generator. Every seed-and-draw sequence that must be
/// reproducible (`pipelines::noise::seeded_draws`), and every other draw the library makes
/// while a generation may run in another thread (the random initial values of a model built
/// with `Init::Random`), holds this one lock, so none lands between another's `manual_seed` and
/// its draws. Loading draws nothing, so it never waits here.
pub(crate) fn global_generator() -> std::sync::MutexGuard<'static, ()> {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

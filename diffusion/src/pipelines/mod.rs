//! Pipelines: from a [`GenerationRequest`] to images, with the same steps as diffusers'
//! `StableDiffusionControlNetPipeline` (glyph or canny ControlNet), `StableDiffusionPipeline`
//! fed TextDiffuser-2 ids, `StableDiffusionImg2ImgPipeline` and `StableDiffusionInpaintPipeline`
//! (masked-latent blending for any model, or a 9-channel inpainting UNet).
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use letterpress_diffusion::pipelines::{GenerationRequest, StableDiffusion};
//! use letterpress_diffusion::LoadOptions;
//!
//! let model = StableDiffusion::load("sd-v1-5".as_ref(), None, &LoadOptions::default())?;
//! let mut request = GenerationRequest::new("a poster for a jazz night");
//! request.seed = Some(42);
//! let out = model.generate(&request, &|e| eprintln!("step {}/{}", e.step, e.total), &AtomicBool::new(false))?;
//! out.images[0].to_rgb8()?.save("poster.png").ok();
//! # Ok::<(), letterpress_diffusion::Error>(())
//! ```

mod control_image;
mod denoise;
mod generate;
pub(crate) mod images;
mod init_latents;
mod model;
mod noise;
mod request;
mod text;

pub use control_image::{control_picture, control_tensor};
pub use generate::image_seeds;
pub use model::{ModelSource, StableDiffusion};
pub use noise::{PerImageNoise, seeded_draws};
pub use request::{
    ControlMode, ControlSettings, GeneratedImage, Generation, GenerationRequest, InitImage,
    StepEvent, TextConditioning,
};
pub use text::{negative_ids, prompt_ids};

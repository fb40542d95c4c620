//! A generation from request to images: text-to-image with optional ControlNet, TextDiffuser-2
//! ids, img2img and inpainting, following diffusers' `StableDiffusionControlNetPipeline`,
//! `StableDiffusionImg2ImgPipeline` and `StableDiffusionInpaintPipeline` step for step so that a
//! deterministic scheduler gives diffusers' output for the same seed. The loop itself is in
//! `denoise`, the img2img/inpainting start in `init_latents`.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Kind, Tensor};

use super::control_image::control_tensor;
use super::denoise::DenoiseInputs;
use super::init_latents::{initial_latents, inpaint_extra};
use super::model::StableDiffusion;
use super::request::{GeneratedImage, Generation, GenerationRequest, StepEvent};
use super::text::text_embeddings;
use crate::error::{Error, Result};
use crate::glyph_input::glyph_input;
use crate::schedulers::{Scheduler, build_scheduler};

/// The part of the schedule a generation runs: all of it, or for img2img/inpainting the last
/// `int(steps * strength)` steps (diffusers' `get_timesteps`).
fn schedule(scheduler: &mut dyn Scheduler, request: &GenerationRequest) -> Result<Vec<f64>> {
    scheduler.set_timesteps(request.steps)?;
    let all = scheduler.timesteps().to_vec();
    let Some(init) = &request.init else {
        return Ok(all);
    };
    let init_timestep = ((request.steps as f64 * init.strength) as usize).min(request.steps);
    let begin = (request.steps - init_timestep) * scheduler.order();
    scheduler.set_begin_index(begin);
    let rest = all.get(begin..).unwrap_or_default().to_vec();
    if rest.is_empty() {
        // int(steps × strength) must reach 1: the smallest such strength, rounded up to 4
        // decimals so that the value named passes.
        let min_strength = (1e4 / request.steps as f64).ceil() / 1e4;
        return Err(Error::Request(format!(
            "strength {} with {} steps leaves no step to run; strength must be at least \
             {min_strength} at {} steps (or use more steps)",
            init.strength, request.steps, request.steps
        )));
    }
    Ok(rest)
}

/// Checks the request against the loaded models.
fn check_request(model: &StableDiffusion, request: &GenerationRequest) -> Result<()> {
    request.validate()?;
    let vsf = model.vae_scale_factor() as u32;
    if request.width % vsf != 0 || request.height % vsf != 0 {
        return Err(Error::Request(format!(
            "size {}x{}: width and height must be multiples of {vsf}",
            request.width, request.height
        )));
    }
    if request.control.is_some() && !model.reads_glyph_mask() {
        return Err(Error::Request(
            "a control image needs a ControlNet or a UNet that reads the glyph mask, and this \
             model has neither"
                .into(),
        ));
    }
    if model.is_inpainting_unet()
        && request
            .init
            .as_ref()
            .and_then(|i| i.mask.as_ref())
            .is_none()
    {
        return Err(Error::Request(
            "this is a 9-channel inpainting UNet: it needs an init image and a mask".into(),
        ));
    }
    let layers = model.text_encoder.model.config().num_hidden_layers;
    if request.clip_skip >= layers {
        return Err(Error::Request(format!(
            "clip_skip {} but the text encoder has {layers} layers",
            request.clip_skip
        )));
    }
    Ok(())
}

/// The seeds of the n images: `seed, seed + 1, …`, from a random seed when none is given.
pub fn image_seeds(seed: Option<u64>, n: usize) -> Vec<u64> {
    let base = seed.unwrap_or_else(rand_seed);
    (0..n as u64).map(|i| base.wrapping_add(i)).collect()
}

/// A random seed below 2^53, so JSON clients (JavaScript numbers) echo it back exactly.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() >> 11
}

impl StableDiffusion {
    /// Runs one [`GenerationRequest`]. `on_step` hears about every step (from the worker thread);
    /// `cancel` is checked before each step and ends the run with [`Error::Canceled`].
    pub fn generate(
        &self,
        request: &GenerationRequest,
        on_step: &dyn Fn(StepEvent),
        cancel: &AtomicBool,
    ) -> Result<Generation> {
        check_request(self, request)?;
        let _no_grad = tch::no_grad_guard();
        let mut scheduler = build_scheduler(&self.scheduler_config, request.scheduler)?;
        let timesteps = schedule(scheduler.as_mut(), request)?;
        let seeds = image_seeds(request.seed, request.num_images);
        let guidance = request.guidance_scale > 1.0;
        let n = request.num_images as i64;
        let vsf = self.vae_scale_factor();
        let (h, w) = (request.height as i64 / vsf, request.width as i64 / vsf);
        let latent_channels = self.vae.model.config().latent_channels;
        let latent_shape = [1, latent_channels, h, w];

        let embeds = text_embeddings(self, request, guidance)?;
        let init = self.init_latents(request, &seeds, &latent_shape)?;
        let latents = initial_latents(
            scheduler.as_ref(),
            request,
            init.as_ref(),
            &seeds,
            &latent_shape,
            timesteps[0],
            self.device,
        )?;
        let inpaint_9ch = self.is_inpainting_unet();
        let unet_extra = if inpaint_9ch {
            inpaint_extra(init.as_ref(), n, guidance)
        } else {
            self.glyph_extra(request, n, guidance)?
        };
        let inputs = DenoiseInputs {
            request,
            seeds: &seeds,
            timesteps: &timesteps,
            embeds,
            control: self.active_control(request, guidance, n)?,
            unet_extra,
            init: init.as_ref(),
            blend_kept_area: !inpaint_9ch,
            guidance,
            n,
            preview: request.preview && latent_channels == 4,
        };
        let latents = self.denoise(scheduler.as_mut(), &inputs, latents, on_step, cancel)?;
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Canceled);
        }
        self.decode_generation(latents, seeds, scheduler.name(), timesteps.len())
    }

    /// A glyph-input UNet's extra channels: the request's glyph mask folded onto the latent
    /// grid, times the conditioning scale (0 switches the glyph input off, as it does a
    /// ControlNet); zeros, an empty mask, when the request has none. The same for every image
    /// and both guidance halves, as a ControlNet's hint is.
    fn glyph_extra(
        &self,
        request: &GenerationRequest,
        n: i64,
        guidance: bool,
    ) -> Result<Option<Tensor>> {
        let Some(factor) = self.glyph_input_factor() else {
            return Ok(None);
        };
        let (w, h) = (request.width, request.height);
        let mask = match &request.control {
            Some(c) => control_tensor(&c.mask, c.mode, w, h, 1) * c.conditioning_scale,
            None => Tensor::zeros([1, 1, h as i64, w as i64], (Kind::Float, Device::Cpu)),
        };
        let folded = glyph_input(&mask, factor)?.to_device(self.device);
        let copies = if guidance { 2 * n } else { n };
        Ok(Some(folded.repeat([copies, 1, 1, 1])))
    }

    /// Decodes the final latents into the [`Generation`].
    fn decode_generation(
        &self,
        latents: Tensor,
        seeds: Vec<u64>,
        scheduler: &'static str,
        steps_run: usize,
    ) -> Result<Generation> {
        let decoded = self
            .vae
            .model
            .decode_scaled(&latents)?
            .to_device(Device::Cpu)
            .to_kind(Kind::Float);
        let pixels = (decoded / 2.0 + 0.5).clamp(0.0, 1.0);
        let images = seeds
            .iter()
            .enumerate()
            .map(|(i, &seed)| GeneratedImage {
                pixels: pixels.get(i as i64),
                seed,
            })
            .collect();
        Ok(Generation {
            images,
            seeds,
            scheduler,
            steps_run,
            latents: latents.to_device(Device::Cpu).to_kind(Kind::Float),
        })
    }
}

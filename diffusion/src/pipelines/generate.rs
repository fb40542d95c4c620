//! The denoising loop: text-to-image with optional ControlNet, TextDiffuser-2 ids, img2img and
//! inpainting, following diffusers' `StableDiffusionControlNetPipeline`,
//! `StableDiffusionImg2ImgPipeline` and `StableDiffusionInpaintPipeline` step for step so that a
//! deterministic scheduler gives diffusers' output for the same seed.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Kind, Tensor};

use super::control_image::control_tensor;
use super::images::{binary_mask, latent_preview, rgb_to_tensor};
use super::model::StableDiffusion;
use super::noise::{PerImageNoise, seeded_draws};
use super::request::{GeneratedImage, Generation, GenerationRequest, StepEvent};
use super::text::text_embeddings;
use crate::error::{Error, Result};
use crate::schedulers::{Scheduler, build_scheduler};
use crate::unet_2d::ControlResiduals;

/// What img2img and inpainting start from, per image (batched over the n images).
struct InitLatents {
    /// Scaled VAE latents of the init image (for blending and add_noise).
    image_latents: Option<Tensor>,
    /// The initial noise, kept for re-noising the kept area at every step (4-channel inpainting).
    noise: Tensor,
    /// `[1, 1, h, w]` latent-resolution mask, 1 where the image is regenerated.
    mask: Option<Tensor>,
    /// Scaled latents of the masked image (9-channel inpainting UNets).
    masked_image_latents: Option<Tensor>,
}

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
        return Err(Error::Request(format!(
            "strength {} with {} steps leaves no step to run; raise --strength or --steps",
            init.strength, request.steps
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
    if request.control.is_some() && model.controlnet.is_none() {
        return Err(Error::Request(
            "a control image needs a ControlNet; load one (--controlnet DIR|FILE)".into(),
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
        let device = self.device;
        let n = request.num_images as i64;
        let vsf = self.vae_scale_factor();
        let (h, w) = (request.height as i64 / vsf, request.width as i64 / vsf);
        let latent_channels = self.vae.model.config().latent_channels;
        let latent_shape = [1, latent_channels, h, w];

        let embeds = text_embeddings(self, request, guidance)?;
        let init = self.init_latents(request, &seeds, &latent_shape)?;
        let mut latents = match (&init, &request.init) {
            // img2img, and inpainting below full strength: the init image noised to the first timestep.
            (Some(i), Some(r)) if !(r.mask.is_some() && r.strength == 1.0) => {
                let image_latents = i
                    .image_latents
                    .as_ref()
                    .ok_or_else(|| Error::Request("internal: init image latents missing".into()))?;
                scheduler.add_noise(image_latents, &i.noise, timesteps[0])
            }
            (Some(i), _) => &i.noise * scheduler.init_noise_sigma(),
            (None, _) => {
                let noise: Vec<Tensor> = seeds
                    .iter()
                    .map(|&s| seeded_draws(s, &[&latent_shape]).remove(0))
                    .collect();
                Tensor::cat(&noise, 0).to_device(device) * scheduler.init_noise_sigma()
            }
        };

        let control = match (&request.control, &self.controlnet) {
            (Some(c), Some(cn)) => {
                let config = cn.model.config();
                let guess_mode = c.guess_mode || config.global_pool_conditions;
                let image = control_tensor(
                    &c.mask,
                    c.mode,
                    request.width,
                    request.height,
                    config.conditioning_channels,
                )
                .to_device(device);
                // One control image for every image and both guidance halves, constant over
                // the steps: embedded once here, not per copy in every ControlNet call.
                let copies = if guidance && !guess_mode { 2 * n } else { n };
                let hint = cn.model.embed_condition(&image)?.repeat([copies, 1, 1, 1]);
                Some((c, cn, hint, guess_mode))
            }
            _ => None,
        };
        let inpaint_9ch = self.is_inpainting_unet();
        // The UNet-side extras of a 9-channel inpainting UNet, doubled for guidance.
        let inpaint_extra = match (&init, inpaint_9ch) {
            (Some(i), true) => {
                let mask = i.mask.as_ref().map(|m| m.repeat([n, 1, 1, 1]));
                match (mask, &i.masked_image_latents) {
                    (Some(m), Some(l)) => {
                        let extra = Tensor::cat(&[m, l.shallow_clone()], 1);
                        Some(if guidance {
                            Tensor::cat(&[&extra, &extra], 0)
                        } else {
                            extra
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let mut noise_source = PerImageNoise::new(&seeds);

        let total = timesteps.len();
        on_step(StepEvent {
            step: 0,
            total,
            timestep: timesteps[0],
            preview: None,
        });
        for (i, &t) in timesteps.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Canceled);
            }
            let doubled = if guidance {
                Tensor::cat(&[&latents, &latents], 0)
            } else {
                latents.shallow_clone()
            };
            let scaled = scheduler.scale_model_input(&doubled, t);
            let timestep = Tensor::from(t).to_device(device);
            let residuals = match &control {
                Some((settings, cn, hint, guess_mode)) => {
                    // diffusers' controlnet_keep: off before start and after end.
                    let before = (i as f64 / total as f64) < settings.guidance_start;
                    let after = ((i + 1) as f64 / total as f64) > settings.guidance_end;
                    let scale = if before || after {
                        0.0
                    } else {
                        settings.conditioning_scale
                    };
                    if scale == 0.0 {
                        None // adding residuals × 0 changes nothing; skip the ControlNet
                    } else if *guess_mode && guidance {
                        // Guess mode: the ControlNet sees the conditional half only; the
                        // unconditional half gets zero residuals.
                        let input = scheduler.scale_model_input(&latents, t);
                        let cond_embeds = embeds.narrow(0, n, n);
                        let r = cn.model.forward_embedded(
                            &input,
                            &timestep,
                            &cond_embeds,
                            hint,
                            scale,
                            true,
                        )?;
                        let pad = |x: &Tensor| Tensor::cat(&[x.zeros_like(), x.shallow_clone()], 0);
                        Some(ControlResiduals {
                            down: r.down.iter().map(pad).collect(),
                            mid: pad(&r.mid),
                        })
                    } else {
                        Some(cn.model.forward_embedded(
                            &scaled,
                            &timestep,
                            &embeds,
                            hint,
                            scale,
                            *guess_mode,
                        )?)
                    }
                }
                None => None,
            };
            let unet_input = match &inpaint_extra {
                Some(extra) => Tensor::cat(&[&scaled, &extra.to_kind(scaled.kind())], 1),
                None => scaled,
            };
            let prediction = self
                .unet
                .model
                .forward(&unet_input, &timestep, &embeds, residuals.as_ref())?
                .to_kind(Kind::Float);
            let prediction = if guidance {
                let uncond = prediction.narrow(0, 0, n);
                let cond = prediction.narrow(0, n, n);
                &uncond + (cond - &uncond) * request.guidance_scale
            } else {
                prediction
            };
            latents = scheduler.step(&prediction, t, &latents, &mut noise_source);
            // Inpainting with any model: put the kept area back, noised to the next timestep.
            if let Some(i_lat) = &init
                && !inpaint_9ch
                && let (Some(mask), Some(image_latents)) = (&i_lat.mask, &i_lat.image_latents)
            {
                let proper = match timesteps.get(i + 1) {
                    Some(&next) => scheduler.add_noise(image_latents, &i_lat.noise, next),
                    None => image_latents.shallow_clone(),
                };
                latents = (1.0 - mask) * proper + mask * &latents;
            }
            let preview = if request.preview && latent_channels == 4 {
                latent_preview(&latents.get(0)).ok()
            } else {
                None
            };
            on_step(StepEvent {
                step: i + 1,
                total,
                timestep: t,
                preview,
            });
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Canceled);
        }
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
            scheduler: scheduler.name(),
            steps_run: total,
            latents: latents.to_device(Device::Cpu).to_kind(Kind::Float),
        })
    }

    /// The seeded draws of img2img/inpainting in diffusers' order per image generator: the
    /// init image's VAE sample (when used), the noise, then the masked image's VAE sample
    /// (9-channel UNets).
    fn init_latents(
        &self,
        request: &GenerationRequest,
        seeds: &[u64],
        latent_shape: &[i64; 4],
    ) -> Result<Option<InitLatents>> {
        let Some(init) = &request.init else {
            return Ok(None);
        };
        let device = self.device;
        let (width, height) = (request.width, request.height);
        let vae = &self.vae.model;
        let scaling = vae.config().scaling_factor;
        let image = rgb_to_tensor(&init.image, width, height).to_device(device);
        let inpaint_9ch = self.is_inpainting_unet();
        let mask_pixels = init
            .mask
            .as_ref()
            .map(|m| binary_mask(m, width, height).to_device(device));
        let strength_max = init.strength == 1.0;
        // Inpainting at full strength on a 9-channel UNet never looks at the init image's latents.
        let needs_image_latents = !(inpaint_9ch && mask_pixels.is_some() && strength_max);
        let image_dist = if needs_image_latents {
            Some(vae.encode(&image)?)
        } else {
            None
        };
        let masked_dist = match (&mask_pixels, inpaint_9ch) {
            (Some(m), true) => Some(vae.encode(&(&image * m.lt(0.5).to_kind(Kind::Float)))?),
            _ => None,
        };
        let mut shapes: Vec<&[i64]> = Vec::new();
        if image_dist.is_some() {
            shapes.push(latent_shape);
        }
        shapes.push(latent_shape);
        if masked_dist.is_some() {
            shapes.push(latent_shape);
        }
        let (mut image_latents, mut noises, mut masked_latents) = (vec![], vec![], vec![]);
        for &seed in seeds {
            let mut draws = seeded_draws(seed, &shapes).into_iter();
            let mut next = || draws.next().map(|d| d.to_device(device));
            if let Some(dist) = &image_dist {
                let eps = next().ok_or_else(|| Error::Request("internal: draw".into()))?;
                image_latents
                    .push((&dist.mean + dist.std()? * eps.to_kind(dist.mean.kind())) * scaling);
            }
            noises.push(next().ok_or_else(|| Error::Request("internal: draw".into()))?);
            if let Some(dist) = &masked_dist {
                let eps = next().ok_or_else(|| Error::Request("internal: draw".into()))?;
                masked_latents
                    .push((&dist.mean + dist.std()? * eps.to_kind(dist.mean.kind())) * scaling);
            }
        }
        let cat = |v: Vec<Tensor>| (!v.is_empty()).then(|| Tensor::cat(&v, 0).to_kind(Kind::Float));
        let mask = mask_pixels.map(|m| {
            let [_, _, h, w] = *latent_shape;
            m.upsample_nearest2d([h, w], None, None)
        });
        Ok(Some(InitLatents {
            image_latents: cat(image_latents),
            noise: cat(noises)
                .unwrap_or_else(|| Tensor::zeros(latent_shape, (Kind::Float, device))),
            mask,
            masked_image_latents: cat(masked_latents),
        }))
    }
}

//! The denoising loop of a generation: per step the scaled latents, the ControlNet's residuals
//! (when it is on at that step), the guided UNet prediction, the scheduler step and, for
//! inpainting with any UNet, the kept area put back.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Kind, Tensor};

use super::control_image::control_tensor;
use super::images::latent_preview;
use super::init_latents::InitLatents;
use super::model::StableDiffusion;
use super::noise::PerImageNoise;
use super::request::{ControlSettings, GenerationRequest, StepEvent};
use crate::controlnet::ControlNetModel;
use crate::error::{Error, Result};
use crate::schedulers::Scheduler;
use crate::unet_2d::ControlResiduals;

/// A ControlNet with its request settings and embedded control image.
pub(super) struct ActiveControl<'a> {
    settings: &'a ControlSettings,
    model: &'a ControlNetModel,
    /// The embedded control image, repeated for every image (and guidance half).
    hint: Tensor,
    guess_mode: bool,
}

/// What every step reads, fixed before the first.
pub(super) struct DenoiseInputs<'a> {
    pub request: &'a GenerationRequest,
    /// One seed per image: the stochastic schedulers' noise comes from them.
    pub seeds: &'a [u64],
    /// The timesteps to run (img2img: the tail of the schedule).
    pub timesteps: &'a [f64],
    /// Text embeddings, the unconditional half first under guidance.
    pub embeds: Tensor,
    pub control: Option<ActiveControl<'a>>,
    /// Extra UNet input channels after the latents: a 9-channel inpainting UNet's mask and
    /// masked-image latents, or a glyph-input UNet's folded glyph mask.
    pub unet_extra: Option<Tensor>,
    /// img2img/inpainting start; with `blend_kept_area` (inpainting with a 4-channel UNet)
    /// the kept area is put back after each step.
    pub init: Option<&'a InitLatents>,
    pub blend_kept_area: bool,
    /// Classifier-free guidance (scale > 1): the batch is doubled.
    pub guidance: bool,
    /// Images in the batch.
    pub n: i64,
    /// Send a preview of image 0 with each step event.
    pub preview: bool,
}

impl StableDiffusion {
    /// The request's ControlNet settings with the loaded ControlNet and its embedded hint.
    pub(super) fn active_control<'a>(
        &'a self,
        request: &'a GenerationRequest,
        guidance: bool,
        n: i64,
    ) -> Result<Option<ActiveControl<'a>>> {
        let (Some(settings), Some(cn)) = (&request.control, &self.controlnet) else {
            return Ok(None);
        };
        let config = cn.model.config();
        let guess_mode = settings.guess_mode || config.global_pool_conditions;
        let image = control_tensor(
            &settings.mask,
            settings.mode,
            request.width,
            request.height,
            config.conditioning_channels,
        )
        .to_device(self.device);
        // One control image for every image and both guidance halves, constant over the
        // steps: embedded once here, not per copy in every ControlNet call.
        let copies = if guidance && !guess_mode { 2 * n } else { n };
        let hint = cn.model.embed_condition(&image)?.repeat([copies, 1, 1, 1]);
        Ok(Some(ActiveControl {
            settings,
            model: &cn.model,
            hint,
            guess_mode,
        }))
    }

    /// Runs every step from `latents`; returns the final latents.
    pub(super) fn denoise(
        &self,
        scheduler: &mut dyn Scheduler,
        inputs: &DenoiseInputs,
        mut latents: Tensor,
        on_step: &dyn Fn(StepEvent),
        cancel: &AtomicBool,
    ) -> Result<Tensor> {
        let timesteps = inputs.timesteps;
        let mut noise_source = PerImageNoise::new(inputs.seeds);
        on_step(StepEvent {
            step: 0,
            total: timesteps.len(),
            timestep: timesteps[0],
            preview: None,
        });
        for (i, &t) in timesteps.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Canceled);
            }
            let prediction = self.guided_prediction(scheduler, inputs, &latents, i, t)?;
            latents = scheduler.step(&prediction, t, &latents, &mut noise_source)?;
            if inputs.blend_kept_area {
                latents = blend_kept_area(scheduler, inputs, i, latents)?;
            }
            let preview = if inputs.preview {
                latent_preview(&latents.get(0)).ok()
            } else {
                None
            };
            on_step(StepEvent {
                step: i + 1,
                total: timesteps.len(),
                timestep: t,
                preview,
            });
        }
        Ok(latents)
    }

    /// Step `i`'s noise prediction at timestep `t`, with classifier-free guidance applied.
    fn guided_prediction(
        &self,
        scheduler: &mut dyn Scheduler,
        inputs: &DenoiseInputs,
        latents: &Tensor,
        i: usize,
        t: f64,
    ) -> Result<Tensor> {
        let n = inputs.n;
        let doubled = if inputs.guidance {
            Tensor::cat(&[latents, latents], 0)
        } else {
            latents.shallow_clone()
        };
        let scaled = scheduler.scale_model_input(&doubled, t)?;
        let timestep = Tensor::from(t).to_device(self.device);
        let residuals = control_residuals(scheduler, inputs, latents, &scaled, &timestep, i, t)?;
        let unet_input = match &inputs.unet_extra {
            Some(extra) => Tensor::cat(&[&scaled, &extra.to_kind(scaled.kind())], 1),
            None => scaled,
        };
        let prediction = self
            .unet
            .model
            .forward(&unet_input, &timestep, &inputs.embeds, residuals.as_ref())?
            .to_kind(Kind::Float);
        Ok(if inputs.guidance {
            let uncond = prediction.narrow(0, 0, n);
            let cond = prediction.narrow(0, n, n);
            &uncond + (cond - &uncond) * inputs.request.guidance_scale
        } else {
            prediction
        })
    }
}

/// The ControlNet's residuals at step `i`, or none without a ControlNet or while it is off
/// (before `guidance_start`, after `guidance_end`, or at scale 0: adding residuals × 0
/// changes nothing).
fn control_residuals(
    scheduler: &mut dyn Scheduler,
    inputs: &DenoiseInputs,
    latents: &Tensor,
    scaled: &Tensor,
    timestep: &Tensor,
    i: usize,
    t: f64,
) -> Result<Option<ControlResiduals>> {
    let Some(control) = &inputs.control else {
        return Ok(None);
    };
    let settings = control.settings;
    let total = inputs.timesteps.len() as f64;
    // diffusers' controlnet_keep: off before start and after end.
    let before = (i as f64 / total) < settings.guidance_start;
    let after = ((i + 1) as f64 / total) > settings.guidance_end;
    let scale = if before || after {
        0.0
    } else {
        settings.conditioning_scale
    };
    if scale == 0.0 {
        return Ok(None);
    }
    if control.guess_mode && inputs.guidance {
        // Guess mode: the ControlNet sees the conditional half only; the unconditional half
        // gets zero residuals.
        let n = inputs.n;
        let input = scheduler.scale_model_input(latents, t)?;
        let cond_embeds = inputs.embeds.narrow(0, n, n);
        let r = control.model.forward_embedded(
            &input,
            timestep,
            &cond_embeds,
            &control.hint,
            scale,
            true,
        )?;
        let pad = |x: &Tensor| Tensor::cat(&[x.zeros_like(), x.shallow_clone()], 0);
        return Ok(Some(ControlResiduals {
            down: r.down.iter().map(pad).collect(),
            mid: pad(&r.mid),
        }));
    }
    Ok(Some(control.model.forward_embedded(
        scaled,
        timestep,
        &inputs.embeds,
        &control.hint,
        scale,
        control.guess_mode,
    )?))
}

/// Inpainting with any model: the kept area (mask 0) put back, noised to the next timestep
/// (or clean after the last step).
fn blend_kept_area(
    scheduler: &dyn Scheduler,
    inputs: &DenoiseInputs,
    i: usize,
    latents: Tensor,
) -> Result<Tensor> {
    let Some(init) = inputs.init else {
        return Ok(latents);
    };
    let (Some(mask), Some(image_latents)) = (&init.mask, &init.image_latents) else {
        return Ok(latents);
    };
    let proper = match inputs.timesteps.get(i + 1) {
        Some(&next) => scheduler.add_noise(image_latents, &init.noise, next)?,
        None => image_latents.shallow_clone(),
    };
    Ok((1.0 - mask) * proper + mask * &latents)
}

//! What img2img and inpainting start from: the init image's latents, the initial noise, the
//! latent mask and (9-channel inpainting UNets) the masked image's latents, drawn per image
//! seed in diffusers' order.

use tch::{Device, Kind, Tensor};

use super::images::{binary_mask, rgb_to_tensor};
use super::model::StableDiffusion;
use super::noise::seeded_draws;
use super::request::GenerationRequest;
use crate::error::{Error, Result};
use crate::schedulers::Scheduler;

/// What img2img and inpainting start from, per image (batched over the n images).
pub(super) struct InitLatents {
    /// Scaled VAE latents of the init image (for blending and add_noise).
    pub image_latents: Option<Tensor>,
    /// The initial noise, kept for re-noising the kept area at every step (4-channel inpainting).
    pub noise: Tensor,
    /// `[1, 1, h, w]` latent-resolution mask, 1 where the image is regenerated.
    pub mask: Option<Tensor>,
    /// Scaled latents of the masked image (9-channel inpainting UNets).
    pub masked_image_latents: Option<Tensor>,
}

/// The draws are counted from the shapes asked for just before: one missing is a bug here.
fn missing_draw() -> Error {
    Error::Internal("a seeded draw of the init latents is missing".into())
}

/// The latents the loop starts from: img2img (and inpainting below full strength) noises the
/// init image's latents to the first timestep; inpainting at full strength and text-to-image
/// start from scaled noise (seeded per image for text-to-image).
pub(super) fn initial_latents(
    scheduler: &dyn Scheduler,
    request: &GenerationRequest,
    init: Option<&InitLatents>,
    seeds: &[u64],
    latent_shape: &[i64; 4],
    first_timestep: f64,
    device: Device,
) -> Result<Tensor> {
    match (init, &request.init) {
        (Some(i), Some(r)) if !(r.mask.is_some() && r.strength == 1.0) => {
            let image_latents = i.image_latents.as_ref().ok_or_else(|| {
                Error::Internal("the init image's latents were not encoded".into())
            })?;
            scheduler.add_noise(image_latents, &i.noise, first_timestep)
        }
        (Some(i), _) => Ok(&i.noise * scheduler.init_noise_sigma()),
        (None, _) => {
            let noise: Vec<Tensor> = seeds
                .iter()
                .map(|&s| seeded_draws(s, &[latent_shape]).remove(0))
                .collect();
            Ok(Tensor::cat(&noise, 0).to_device(device) * scheduler.init_noise_sigma())
        }
    }
}

/// The UNet-side extras of a 9-channel inpainting UNet (mask and masked-image latents),
/// repeated for the n images and doubled for guidance.
pub(super) fn inpaint_extra(init: Option<&InitLatents>, n: i64, guidance: bool) -> Option<Tensor> {
    let i = init?;
    let mask = i.mask.as_ref()?.repeat([n, 1, 1, 1]);
    let latents = i.masked_image_latents.as_ref()?;
    let extra = Tensor::cat(&[mask, latents.shallow_clone()], 1);
    Some(if guidance {
        Tensor::cat(&[&extra, &extra], 0)
    } else {
        extra
    })
}

impl StableDiffusion {
    /// The seeded draws of img2img/inpainting in diffusers' order per image generator: the
    /// init image's VAE sample (when used), the noise, then the masked image's VAE sample
    /// (9-channel UNets).
    pub(super) fn init_latents(
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
                let eps = next().ok_or_else(missing_draw)?;
                image_latents
                    .push((&dist.mean + dist.std()? * eps.to_kind(dist.mean.kind())) * scaling);
            }
            noises.push(next().ok_or_else(missing_draw)?);
            if let Some(dist) = &masked_dist {
                let eps = next().ok_or_else(missing_draw)?;
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

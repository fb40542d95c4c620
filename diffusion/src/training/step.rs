//! One training step's loss: noise the latents at random timesteps, predict with the UNet
//! (guided by a ControlNet when one is trained), regress onto the scheduler's target
//! (diffusers' `examples/controlnet/train_controlnet.py` and `examples/text_to_image`).

use tch::{Kind, Reduction, Tensor};

use super::noise::NoiseSchedule;
use crate::clip::ClipTextModel;
use crate::controlnet::ControlNetModel;
use crate::error::Result;
use crate::glyph_input::{glyph_input, glyph_input_factor};
use crate::unet_2d::UNet2DConditionModel;
use crate::vae::AutoencoderKL;

/// The random draws and inputs of one (micro-)batch.
#[derive(Debug)]
pub struct TrainBatch {
    /// Clean latents x₀, already multiplied by the VAE's `scaling_factor`: `[B, 4, h, w]`.
    pub latents: Tensor,
    /// ε, the same shape.
    pub noise: Tensor,
    /// Integer timesteps `[B]`.
    pub timesteps: Tensor,
    /// Token ids `[B, 77]` (captions, or the empty caption where dropped).
    pub input_ids: Tensor,
    /// The control image `[B, C, 8h, 8w]` in [0, 1]; ControlNet training only.
    pub control: Option<Tensor>,
}

/// The models a step runs; which of them have trainable variables decides what is trained.
pub struct StepModels<'a> {
    pub text_encoder: &'a ClipTextModel,
    pub unet: &'a UNet2DConditionModel,
    pub controlnet: Option<&'a ControlNetModel>,
    pub schedule: &'a NoiseSchedule,
}

/// Mean squared error between the prediction and the target, in fp32.
pub fn diffusion_loss(m: &StepModels, batch: &TrainBatch) -> Result<Tensor> {
    let noisy = m
        .schedule
        .add_noise(&batch.latents, &batch.noise, &batch.timesteps)?;
    let encoder_hidden_states = m.text_encoder.forward(&batch.input_ids, 0)?;
    let residuals = match (m.controlnet, &batch.control) {
        (Some(cn), Some(control)) => Some(cn.forward(
            &noisy,
            &batch.timesteps,
            &encoder_hidden_states,
            control,
            1.0,
            false,
        )?),
        (Some(_), None) => {
            return Err(crate::Error::Training(
                "ControlNet training needs a control image in every batch".into(),
            ));
        }
        _ => None,
    };
    let pred = m.unet.forward(
        &unet_input(m.unet, &noisy, batch.control.as_ref())?,
        &batch.timesteps,
        &encoder_hidden_states,
        residuals.as_ref(),
    )?;
    let target = m
        .schedule
        .target(&batch.latents, &batch.noise, &batch.timesteps)?;
    Ok(pred.f_to_kind(Kind::Float)?.f_mse_loss(
        &target.f_to_kind(Kind::Float)?.f_to_device(pred.device())?,
        Reduction::Mean,
    )?)
}

/// The UNet's input: the noisy latents, and for a glyph-input UNet (`crate::glyph_input`)
/// the batch's glyph masks folded onto the latent grid after them.
fn unet_input(
    unet: &UNet2DConditionModel,
    noisy: &Tensor,
    control: Option<&Tensor>,
) -> Result<Tensor> {
    let latent = noisy.size()[1];
    let wanted = unet.config().in_channels;
    if wanted == latent {
        return Ok(noisy.shallow_clone());
    }
    let Some(control) = control else {
        return Err(crate::Error::Training(format!(
            "the UNet takes {wanted} input channels for {latent} latent channels: a glyph-input \
             UNet needs the glyph mask in every batch"
        )));
    };
    let factor = control.size()[2] / noisy.size()[2];
    if glyph_input_factor(wanted, latent, factor) != Some(factor) {
        return Err(crate::Error::Training(format!(
            "UNet in_channels {wanted} fits neither {latent} latent channels nor latents and a \
             {factor}x-folded glyph mask ({}); inpainting UNets are not trained here",
            latent + factor * factor
        )));
    }
    let glyphs = glyph_input(&control.f_narrow(1, 0, 1)?, factor)?;
    Ok(Tensor::f_cat(
        &[noisy, &glyphs.f_to_kind(noisy.kind())?],
        1,
    )?)
}

/// The VAE's autoencoding loss: mean |x − decode(z)| with z drawn from the posterior
/// (reparameterised, so gradients reach the encoder), plus `kl_weight` × the posterior's KL
/// divergence from N(0, I) (diffusers' `DiagonalGaussianDistribution.kl`), both per pixel
/// value. LDM sums the reconstruction error over pixels and the KL over latents, each divided
/// by the batch; dividing both by the pixel values per image keeps that balance (so LDM's
/// weight of 1e-6 means what it means there) with a loss of the scale of a mean. `weights`
/// (`[B, 1, H, W]`, e.g. heavier on glyphs) turn the mean into a weighted mean.
pub fn vae_loss(
    vae: &AutoencoderKL,
    pixels: &Tensor,
    kl_weight: f64,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let posterior = vae.encode(pixels)?;
    let z = posterior.sample()?;
    let reconstruction = vae.decode(&z)?;
    let l1 = reconstruction
        .f_to_kind(Kind::Float)?
        .f_sub(
            &pixels
                .f_to_kind(Kind::Float)?
                .f_to_device(reconstruction.device())?,
        )?
        .f_abs()?;
    let l1 = match weights {
        None => l1.f_mean(Kind::Float)?,
        Some(w) => {
            let w = w.f_to_device(l1.device())?.f_expand_as(&l1)?;
            l1.f_mul(&w)?
                .f_sum(Kind::Float)?
                .f_div(&w.f_sum(Kind::Float)?)?
        }
    };
    let (mean, logvar) = (&posterior.mean, &posterior.logvar);
    let values_per_image = pixels.size()[1..].iter().product::<i64>() as f64;
    let kl = mean
        .f_square()?
        .f_add(&logvar.f_exp()?)?
        .f_sub_scalar(1.0)?
        .f_sub(logvar)?
        .f_sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float)?
        .f_mul_scalar(0.5)?
        .f_mean(Kind::Float)?
        .f_div_scalar(values_per_image)?;
    Ok(l1.f_add(&kl.f_mul_scalar(kl_weight)?)?)
}

//! One training step's loss: noise the latents at random timesteps, predict with the UNet
//! (guided by a ControlNet when one is trained), regress onto the scheduler's target
//! (diffusers' `examples/controlnet/train_controlnet.py` and `examples/text_to_image`).

use tch::{Kind, Reduction, Tensor};

use super::noise::NoiseSchedule;
use crate::clip::ClipTextModel;
use crate::controlnet::ControlNetModel;
use crate::error::Result;
use crate::unet_2d::UNet2DConditionModel;

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
        &noisy,
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

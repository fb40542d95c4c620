//! DDIM (Song et al., arXiv:2010.02502, eqs. 12 and 16), ported from diffusers
//! `scheduling_ddim.py` with η = 0: deterministic, so a seed fixes the image.

use tch::Tensor;

use super::config::{
    ClassDefaults, Common, SchedulerConfig, TimestepSpacing, add_noise_alpha, alpha_at,
    discrete_timesteps, predict_original_sample,
};
use super::{NoiseSource, Scheduler, check_steps, require_output_shape, scheduler_err};
use crate::error::Result;

const NAME: &str = "DDIMScheduler";

/// diffusers `DDIMScheduler` (η = 0, no thresholding).
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    common: Common,
    /// ᾱ used after the last step: 1 with `set_alpha_to_one` (default true), else ᾱ_0.
    final_alpha_cumprod: f32,
    /// `clip_sample` (default true) clamps x₀ to ±`clip_sample_range`.
    clip_sample: Option<f64>,
    timesteps: Vec<f64>,
    num_inference_steps: usize,
}

impl DdimScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let common = config.common(&ClassDefaults::standard(NAME, TimestepSpacing::Leading))?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            common.alphas_cumprod[0]
        };
        let clip_sample = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        Ok(Self {
            common,
            final_alpha_cumprod,
            clip_sample,
            timesteps: Vec::new(),
            num_inference_steps: 0,
        })
    }
}

impl Scheduler for DdimScheduler {
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        check_steps(NAME, num_inference_steps, self.common.num_train_timesteps)?;
        self.num_inference_steps = num_inference_steps;
        self.timesteps = discrete_timesteps(&self.common, num_inference_steps);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    // DDIM reads everything from the timestep itself.
    fn set_begin_index(&mut self, _index: usize) {}

    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        if self.num_inference_steps == 0 {
            return Err(scheduler_err(
                NAME,
                "set_timesteps must be called before the first step",
            ));
        }
        require_output_shape(NAME, model_output, sample)?;
        // diffusers steps back by T / steps whatever the spacing.
        let stride = (self.common.num_train_timesteps / self.num_inference_steps) as f64;
        let prev_timestep = timestep - stride;
        let alpha_prod_t = alpha_at(NAME, &self.common.alphas_cumprod, timestep)?;
        let alpha_prod_t_prev = if prev_timestep >= 0.0 {
            alpha_at(NAME, &self.common.alphas_cumprod, prev_timestep)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let pred_original_sample = predict_original_sample(
            self.common.prediction_type,
            model_output,
            sample,
            alpha_prod_t,
        );
        let pred_epsilon = match self.common.prediction_type {
            super::PredictionType::Epsilon => model_output.shallow_clone(),
            super::PredictionType::VPrediction => {
                model_output * alpha_prod_t.sqrt() as f64 + sample * beta_prod_t.sqrt() as f64
            }
            super::PredictionType::Sample => {
                (sample - &pred_original_sample * alpha_prod_t.sqrt() as f64)
                    / beta_prod_t.sqrt() as f64
            }
        };
        let pred_original_sample = match self.clip_sample {
            Some(range) => pred_original_sample.clamp(-range, range),
            None => pred_original_sample,
        };
        // η = 0: σ_t = 0, so the direction term is √(1 − ᾱ_prev − 0)·ε.
        let std_dev_t = 0.0f32;
        let direction_coeff = (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt();
        let pred_sample_direction = pred_epsilon * direction_coeff as f64;
        Ok(pred_original_sample * alpha_prod_t_prev.sqrt() as f64 + pred_sample_direction)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise_alpha(NAME, &self.common.alphas_cumprod, original, noise, timestep)
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

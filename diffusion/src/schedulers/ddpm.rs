//! DDPM ancestral sampling (Ho et al., arXiv:2006.11239, eqs. 6–7), ported from diffusers
//! `scheduling_ddpm.py`, over the inference timesteps as diffusers' `previous_timestep` does.

use tch::Tensor;

use super::config::{
    ClassDefaults, Common, SchedulerConfig, TimestepSpacing, add_noise_alpha, alpha_at,
    discrete_timesteps, predict_original_sample,
};
use super::{
    NoiseSource, Scheduler, check_steps, require_output_shape, require_schedule, torch_f32,
    unknown_timestep,
};
use crate::error::{Result, config_err};

const NAME: &str = "DDPMScheduler";

/// `variance_type`: the posterior variance β̃_t (small) or β_t (large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VarianceType {
    Small,
    SmallLog,
    Large,
}

/// diffusers `DDPMScheduler` (fixed variances; learned variances need a model we do not have).
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    common: Common,
    variance_type: VarianceType,
    clip_sample: Option<f64>,
    timesteps: Vec<f64>,
}

impl DdpmScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let common = config.common(&ClassDefaults::standard(NAME, TimestepSpacing::Leading))?;
        let variance_type = match config.variance_type.as_deref() {
            None | Some("fixed_small") => VarianceType::Small,
            Some("fixed_small_log") => VarianceType::SmallLog,
            Some("fixed_large") => VarianceType::Large,
            Some(other) => {
                return Err(config_err(
                    NAME,
                    format!(
                        "variance_type {other:?} is not supported: expected fixed_small, \
                         fixed_small_log or fixed_large"
                    ),
                ));
            }
        };
        let clip_sample = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        Ok(Self {
            common,
            variance_type,
            clip_sample,
            timesteps: Vec::new(),
        })
    }

    /// diffusers' `previous_timestep`: the next entry of the schedule, or −1 after the last.
    fn previous_timestep(&self, timestep: f64) -> Result<f64> {
        require_schedule(NAME, &self.timesteps)?;
        // The first match, as diffusers' `(self.timesteps == timestep).nonzero()[0]`.
        let index = self
            .timesteps
            .iter()
            .position(|&t| t == timestep)
            .ok_or_else(|| unknown_timestep(NAME, &self.timesteps, timestep))?;
        Ok(self.timesteps.get(index + 1).copied().unwrap_or(-1.0))
    }
}

impl Scheduler for DdpmScheduler {
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        check_steps(NAME, num_inference_steps, self.common.num_train_timesteps)?;
        self.timesteps = discrete_timesteps(&self.common, num_inference_steps);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    // DDPM reads everything from the timestep itself.
    fn set_begin_index(&mut self, _index: usize) {}

    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        require_output_shape(NAME, model_output, sample)?;
        let prev_t = self.previous_timestep(timestep)?;
        let alpha_prod_t = alpha_at(NAME, &self.common.alphas_cumprod, timestep)?;
        let alpha_prod_t_prev = if prev_t >= 0.0 {
            alpha_at(NAME, &self.common.alphas_cumprod, prev_t)?
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;
        let x0 = predict_original_sample(
            self.common.prediction_type,
            model_output,
            sample,
            alpha_prod_t,
        );
        let x0 = match self.clip_sample {
            Some(range) => x0.clamp(-range, range),
            None => x0,
        };
        // Eq. 7: the posterior mean's coefficients of x₀ and x_t.
        let x0_coeff = (alpha_prod_t_prev.sqrt() * current_beta_t) / beta_prod_t;
        let sample_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let prev_sample = x0 * x0_coeff as f64 + sample * sample_coeff as f64;
        if timestep <= 0.0 {
            return Ok(prev_sample);
        }
        let variance_noise = noise.randn(
            &model_output.size(),
            model_output.kind(),
            model_output.device(),
        );
        let variance =
            ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
        let std = match self.variance_type {
            VarianceType::Small => variance.sqrt(),
            VarianceType::SmallLog => torch_f32(variance, |v| v.log().g_mul_scalar(0.5).exp()),
            VarianceType::Large => current_beta_t.sqrt(),
        };
        Ok(prev_sample + variance_noise * std as f64)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise_alpha(NAME, &self.common.alphas_cumprod, original, noise, timestep)
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

//! Latent Consistency Model multistep sampling (Luo et al., arXiv:2310.04378, Alg. 3), ported
//! from diffusers `scheduling_lcm.py`: each step predicts the denoised sample through the
//! consistency boundary condition, then re-noises it to the next timestep.

use tch::Tensor;

use super::config::{
    ClassDefaults, Common, SchedulerConfig, TimestepSpacing, add_noise_alpha, alpha_at,
    np_linspace_open, predict_original_sample,
};
use super::{
    BetaSchedule, NoiseSource, Scheduler, check_steps, require_index, require_output_shape,
    require_step,
};
use crate::error::{Result, config_err};

const NAME: &str = "LCMScheduler";

/// diffusers `LCMScheduler` (strength 1; img2img goes through `set_begin_index`).
#[derive(Debug, Clone)]
pub struct LcmScheduler {
    common: Common,
    final_alpha_cumprod: f32,
    clip_sample: Option<f64>,
    /// The distillation schedule's length (`original_inference_steps`, default 50).
    original_inference_steps: usize,
    timestep_scaling: f32,
    timesteps: Vec<f64>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl LcmScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let defaults = ClassDefaults {
            name: NAME,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            timestep_spacing: TimestepSpacing::Leading,
        };
        let common = config.common(&defaults)?;
        let original_inference_steps = config.original_inference_steps.unwrap_or(50);
        if original_inference_steps == 0 || original_inference_steps > common.num_train_timesteps {
            return Err(config_err(
                NAME,
                format!(
                    "original_inference_steps {original_inference_steps} must be in 1..={}",
                    common.num_train_timesteps
                ),
            ));
        }
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            common.alphas_cumprod[0]
        };
        let clip_sample = config
            .clip_sample
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        Ok(Self {
            common,
            final_alpha_cumprod,
            clip_sample,
            original_inference_steps,
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0) as f32,
            timesteps: Vec::new(),
            step_index: None,
            begin_index: None,
        })
    }

    /// c_skip and c_out of the consistency parameterisation at `timestep` (σ_data = 0.5),
    /// in float32 as diffusers computes them from the timestep tensor.
    fn boundary_condition_scalings(&self, timestep: f64) -> (f32, f32) {
        let sigma_data_sq = 0.25f32;
        let scaled = timestep as f32 * self.timestep_scaling;
        let c_skip = sigma_data_sq / (scaled * scaled + sigma_data_sq);
        let c_out = scaled / (scaled * scaled + sigma_data_sq).sqrt();
        (c_skip, c_out)
    }
}

impl Scheduler for LcmScheduler {
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        // LCM can only pick steps from its distillation schedule.
        check_steps(NAME, num_inference_steps, self.original_inference_steps)?;
        let k = self.common.num_train_timesteps / self.original_inference_steps;
        let origin: Vec<f64> = (1..=self.original_inference_steps)
            .rev()
            .map(|i| (i * k) as f64 - 1.0)
            .collect();
        self.timesteps = np_linspace_open(0.0, origin.len() as f64, num_inference_steps)
            .into_iter()
            .map(|x| origin[x.floor() as usize])
            .collect();
        self.step_index = None;
        self.begin_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn set_begin_index(&mut self, index: usize) {
        self.begin_index = Some(index);
    }

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
        let i = match (self.step_index, self.begin_index) {
            (Some(i), _) => i,
            (None, Some(b)) => b,
            (None, None) => require_index(NAME, &self.timesteps, timestep)?,
        };
        require_step(NAME, i, self.timesteps.len())?;
        let prev_timestep = self.timesteps.get(i + 1).copied().unwrap_or(timestep);
        let alpha_prod_t = alpha_at(NAME, &self.common.alphas_cumprod, timestep)?;
        let alpha_prod_t_prev = if prev_timestep >= 0.0 {
            alpha_at(NAME, &self.common.alphas_cumprod, prev_timestep)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let (c_skip, c_out) = self.boundary_condition_scalings(timestep);
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
        let denoised = x0 * c_out as f64 + sample * c_skip as f64;
        self.step_index = Some(i + 1);
        if i + 1 == self.timesteps.len() {
            // The last step returns the denoised sample itself, as diffusers' prev_sample.
            return Ok(denoised);
        }
        let noise = noise.randn(&model_output.size(), denoised.kind(), model_output.device());
        Ok(denoised * alpha_prod_t_prev.sqrt() as f64 + noise * beta_prod_t_prev.sqrt() as f64)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        add_noise_alpha(NAME, &self.common.alphas_cumprod, original, noise, timestep)
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

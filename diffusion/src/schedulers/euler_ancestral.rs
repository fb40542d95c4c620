//! Ancestral sampling with Euler steps (k-diffusion's `sample_euler_ancestral`), ported from
//! diffusers `scheduling_euler_ancestral_discrete.py`: each step goes down to σ_down
//! deterministically and adds fresh noise of σ_up.

use tch::{Kind, Tensor};

use super::config::{ClassDefaults, PredictionType, SchedulerConfig, TimestepSpacing};
use super::euler::SigmaSchedule;
use super::sigmas::euler_timesteps;
use super::{NoiseSource, Scheduler, check_steps, require_output_shape};
use crate::error::{Result, config_err};

const NAME: &str = "EulerAncestralDiscreteScheduler";

/// diffusers `EulerAncestralDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    schedule: SigmaSchedule,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let common = config.common(&ClassDefaults::standard(NAME, TimestepSpacing::Linspace))?;
        if common.prediction_type == PredictionType::Sample {
            // diffusers raises NotImplementedError for it too.
            return Err(config_err(
                NAME,
                "prediction_type sample is not supported: expected epsilon or v_prediction",
            ));
        }
        Ok(Self {
            schedule: SigmaSchedule::new(common),
        })
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let s = &mut self.schedule;
        check_steps(NAME, num_inference_steps, s.common.num_train_timesteps)?;
        let timesteps = euler_timesteps(&s.common, num_inference_steps);
        let sigmas = s
            .interpolated(&timesteps)
            .into_iter()
            .chain([0.0])
            .map(|s| s as f32)
            .collect();
        s.set(timesteps, sigmas);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.schedule.sigmas_f64)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma()
    }

    fn set_begin_index(&mut self, index: usize) {
        self.schedule.begin_index = Some(index);
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        self.schedule.scale_model_input(NAME, sample, timestep)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        require_output_shape(NAME, model_output, sample)?;
        let s = &mut self.schedule;
        let i = s.step_index(NAME, timestep)?;
        let sigma = s.sigmas[i];
        let sample = sample.to_kind(Kind::Float);
        let pred_original_sample = s.predict_original_sample(model_output, &sample, sigma);
        let (sigma_from, sigma_to) = (sigma, s.sigmas[i + 1]);
        let sigma_up = (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let derivative = (&sample - pred_original_sample) / sigma as f64;
        let dt = sigma_down - sigma;
        let prev_sample = sample + derivative * dt as f64;
        let noise = noise.randn(
            &model_output.size(),
            model_output.kind(),
            model_output.device(),
        );
        let prev_sample = prev_sample + noise * sigma_up as f64;
        s.step_index = Some(i + 1);
        Ok(prev_sample.to_kind(model_output.kind()))
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.schedule.add_noise(NAME, original, noise, timestep)
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

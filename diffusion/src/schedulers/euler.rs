//! Euler's method on the probability-flow ODE in σ (Karras et al., arXiv:2206.00364, Alg. 2
//! without churn), ported from diffusers `scheduling_euler_discrete.py`.

use tch::{Kind, Tensor};

use super::config::{ClassDefaults, Common, PredictionType, SchedulerConfig, TimestepSpacing};
use super::sigmas::{euler_timesteps, karras_sigmas, np_interp, sigma_to_t, train_sigmas};
use super::{
    NoiseSource, Scheduler, check_steps, require_index, require_noise_shape, require_output_shape,
    require_step,
};
use crate::error::{Result, config_err};

const NAME: &str = "EulerDiscreteScheduler";

/// The σ schedule and step counter both Euler schedulers share.
#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    pub common: Common,
    pub train_sigmas: Vec<f32>,
    /// σ of each inference step, then the final σ (0).
    pub sigmas: Vec<f32>,
    pub sigmas_f64: Vec<f64>,
    pub timesteps: Vec<f64>,
    pub step_index: Option<usize>,
    pub begin_index: Option<usize>,
}

impl SigmaSchedule {
    pub(crate) fn new(common: Common) -> Self {
        let train_sigmas = train_sigmas(&common.alphas_cumprod);
        Self {
            common,
            train_sigmas,
            sigmas: Vec::new(),
            sigmas_f64: Vec::new(),
            timesteps: Vec::new(),
            step_index: None,
            begin_index: None,
        }
    }

    pub(crate) fn set(&mut self, timesteps: Vec<f32>, sigmas: Vec<f32>) {
        self.timesteps = timesteps.iter().map(|&t| t as f64).collect();
        self.sigmas_f64 = sigmas.iter().map(|&s| s as f64).collect();
        self.sigmas = sigmas;
        self.step_index = None;
        self.begin_index = None;
    }

    /// Interpolated σ at the (fractional) timesteps, as float64 before the final cast.
    pub(crate) fn interpolated(&self, timesteps: &[f32]) -> Vec<f64> {
        timesteps
            .iter()
            .map(|&t| np_interp(t as f64, &self.train_sigmas))
            .collect()
    }

    /// `init_noise_sigma`: σ_max, or √(σ_max²+1) for `leading` spacing.
    pub(crate) fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0f32, f32::max);
        match self.common.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    /// The current step index, found from the timestep on the first call (diffusers'
    /// `_init_step_index`); an error before `set_timesteps`, for a timestep off the schedule
    /// and after the last step. Below the schedule's length, so σ at it and after it exist.
    pub(crate) fn step_index(&mut self, name: &'static str, timestep: f64) -> Result<usize> {
        let i = match (self.step_index, self.begin_index) {
            (Some(i), _) => i,
            (None, Some(b)) => b,
            (None, None) => require_index(name, &self.timesteps, timestep)?,
        };
        require_step(name, i, self.timesteps.len())?;
        self.step_index = Some(i);
        Ok(i)
    }

    /// The forward process of the sigma schedulers: `original + noise × σ`, with σ from the
    /// timestep, or the begin / current index once set.
    pub(crate) fn add_noise(
        &self,
        name: &'static str,
        original: &Tensor,
        noise: &Tensor,
        timestep: f64,
    ) -> Result<Tensor> {
        require_noise_shape(name, original, noise)?;
        let sigma = self.sigma_for_add_noise(name, timestep)?;
        Ok(original + noise * sigma as f64)
    }

    fn sigma_for_add_noise(&self, name: &'static str, timestep: f64) -> Result<f32> {
        let index = match (self.begin_index, self.step_index) {
            (None, _) => require_index(name, &self.timesteps, timestep)?,
            (Some(_), Some(i)) => i,
            (Some(b), None) => b,
        };
        // σ has one entry more than the timesteps: noising to the final σ is allowed.
        self.sigmas
            .get(index)
            .copied()
            .ok_or_else(|| super::scheduler_err(name, format!("no σ at step {index}")))
    }

    /// x / √(σ²+1): the model sees unit-variance inputs.
    pub(crate) fn scale_model_input(
        &mut self,
        name: &'static str,
        sample: &Tensor,
        timestep: f64,
    ) -> Result<Tensor> {
        let i = self.step_index(name, timestep)?;
        let sigma = self.sigmas[i];
        Ok(sample / (sigma * sigma + 1.0).sqrt() as f64)
    }

    /// x₀ predicted at noise level σ (σ-parameterised: x = x₀ + σ·ε).
    pub(crate) fn predict_original_sample(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f32,
    ) -> Tensor {
        match self.common.prediction_type {
            PredictionType::Epsilon => sample - model_output * sigma as f64,
            PredictionType::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                model_output * (-sigma / s2.sqrt()) as f64 + sample / s2 as f64
            }
            PredictionType::Sample => model_output.shallow_clone(),
        }
    }
}

/// diffusers `EulerDiscreteScheduler` (no churn: s_churn = 0, as the pipelines call it).
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    schedule: SigmaSchedule,
    use_karras_sigmas: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    /// `final_sigmas_type`: `zero` (default) or `sigma_min`.
    final_sigma_min: bool,
}

impl EulerDiscreteScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let common = config.common(&ClassDefaults::standard(NAME, TimestepSpacing::Linspace))?;
        refuse_unsupported(NAME, config)?;
        if let Some(t) = config.timestep_type.as_deref().filter(|t| *t != "discrete") {
            return Err(config_err(
                NAME,
                format!("timestep_type {t:?} is not supported"),
            ));
        }
        let final_sigma_min = match config.final_sigmas_type.as_deref() {
            None | Some("zero") => false,
            Some("sigma_min") => true,
            Some(other) => {
                return Err(config_err(
                    NAME,
                    format!("final_sigmas_type {other:?}: expected zero or sigma_min"),
                ));
            }
        };
        Ok(Self {
            schedule: SigmaSchedule::new(common),
            use_karras_sigmas: config.use_karras_sigmas.unwrap_or(false),
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            final_sigma_min,
        })
    }
}

/// Options of the σ-based schedulers that this port does not implement.
pub(crate) fn refuse_unsupported(name: &'static str, config: &SchedulerConfig) -> Result<()> {
    for (field, set) in [
        ("use_exponential_sigmas", config.use_exponential_sigmas),
        ("use_beta_sigmas", config.use_beta_sigmas),
        ("use_flow_sigmas", config.use_flow_sigmas),
        ("use_dynamic_shifting", config.use_dynamic_shifting),
    ] {
        if set == Some(true) {
            return Err(config_err(name, format!("{field} is not supported")));
        }
    }
    if let Some(i) = config
        .interpolation_type
        .as_deref()
        .filter(|i| *i != "linear")
    {
        return Err(config_err(
            name,
            format!("interpolation_type {i:?} is not supported (only linear)"),
        ));
    }
    Ok(())
}

impl Scheduler for EulerDiscreteScheduler {
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let s = &mut self.schedule;
        check_steps(NAME, num_inference_steps, s.common.num_train_timesteps)?;
        let mut timesteps = euler_timesteps(&s.common, num_inference_steps);
        let mut sigmas = s.interpolated(&timesteps);
        if self.use_karras_sigmas {
            let sigma_min = self.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = self.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, num_inference_steps);
            let log_sigmas: Vec<f32> = s.train_sigmas.iter().map(|s| s.ln()).collect();
            timesteps = sigmas
                .iter()
                .map(|&sigma| sigma_to_t(sigma, &log_sigmas) as f32)
                .collect();
        }
        let last = if self.final_sigma_min {
            s.train_sigmas[0] as f64
        } else {
            0.0
        };
        let sigmas = sigmas.iter().chain([&last]).map(|&s| s as f32).collect();
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        require_output_shape(NAME, model_output, sample)?;
        let s = &mut self.schedule;
        let i = s.step_index(NAME, timestep)?;
        let sample = sample.to_kind(Kind::Float);
        // γ = 0 without churn, so σ̂ = σ and no noise is drawn.
        let sigma_hat = s.sigmas[i];
        let pred_original_sample = s.predict_original_sample(model_output, &sample, sigma_hat);
        let derivative = (&sample - pred_original_sample) / sigma_hat as f64;
        let dt = s.sigmas[i + 1] - sigma_hat;
        let prev_sample = sample + derivative * dt as f64;
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

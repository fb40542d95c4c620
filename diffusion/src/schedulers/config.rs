//! `scheduler_config.json` and what every scheduler derives from it: the β schedule and its
//! cumulative ᾱ, prediction type and timestep spacing (diffusers' `__init__` and
//! `set_timesteps`, shared by all `scheduling_*.py`).

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, config_err};

/// The union of the fields of diffusers' scheduler configs. A field is `None` when the file
/// lacks it, so each scheduler applies its own class's default (as `from_config` does).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<i64>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub set_alpha_to_one: Option<bool>,
    pub thresholding: Option<bool>,
    pub dynamic_thresholding_ratio: Option<f64>,
    pub sample_max_value: Option<f64>,
    /// DDPM: `fixed_small` (default), `fixed_small_log`, `fixed_large`, `fixed_large_log`.
    /// DPM-Solver: `null`.
    pub variance_type: Option<String>,
    // Euler / DPM-Solver / UniPC
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub lambda_min_clipped: Option<f64>,
    pub use_dynamic_shifting: Option<bool>,
    // UniPC
    pub predict_x0: Option<bool>,
    pub disable_corrector: Option<Vec<usize>>,
    // LCM
    pub original_inference_steps: Option<usize>,
    pub timestep_scaling: Option<f64>,
}

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    /// The clean sample x₀ itself (`sample`).
    Sample,
}

/// How inference timesteps are spread over the training range (`timestep_spacing`; Table 2 of
/// "Common Diffusion Noise Schedules and Sample Steps are Flawed", arXiv:2305.08891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    /// Linear in √β: Stable Diffusion's schedule.
    ScaledLinear,
    /// The cosine schedule of improved DDPM (GLIDE), capped at β = 0.999.
    SquaredcosCapV2,
}

/// The defaults a scheduler class gives the fields every class has.
pub(crate) struct ClassDefaults {
    pub name: &'static str,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub timestep_spacing: TimestepSpacing,
}

impl ClassDefaults {
    /// diffusers' defaults of DDIM, DDPM, Euler, DPM-Solver and UniPC (only the spacing differs).
    pub(crate) const fn standard(name: &'static str, timestep_spacing: TimestepSpacing) -> Self {
        Self {
            name,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            timestep_spacing,
        }
    }
}

/// The fields all schedulers share, resolved with the class defaults.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub num_train_timesteps: usize,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    /// ᾱ_t = ∏ (1 − β_s), float32 as diffusers keeps it.
    pub alphas_cumprod: Vec<f32>,
}

impl SchedulerConfig {
    pub(crate) fn common(&self, d: &ClassDefaults) -> Result<Common> {
        let num_train_timesteps = self.num_train_timesteps.unwrap_or(1000);
        if num_train_timesteps < 2 {
            return Err(config_err(d.name, "num_train_timesteps must be at least 2"));
        }
        if self.thresholding == Some(true) {
            return Err(config_err(
                d.name,
                "thresholding (dynamic thresholding for pixel-space models) is not supported",
            ));
        }
        Ok(Common {
            num_train_timesteps,
            prediction_type: self.prediction_type(d.name)?,
            timestep_spacing: self.timestep_spacing(d)?,
            steps_offset: self.steps_offset.unwrap_or(0),
            alphas_cumprod: self.alphas_cumprod(d, num_train_timesteps)?,
        })
    }

    fn prediction_type(&self, name: &'static str) -> Result<PredictionType> {
        Ok(match self.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => {
                return Err(config_err(
                    name,
                    format!(
                        "prediction_type {other:?} is not supported: expected epsilon, \
                         v_prediction or sample"
                    ),
                ));
            }
        })
    }

    fn timestep_spacing(&self, d: &ClassDefaults) -> Result<TimestepSpacing> {
        Ok(match self.timestep_spacing.as_deref() {
            None => d.timestep_spacing,
            Some("leading") => TimestepSpacing::Leading,
            Some("trailing") => TimestepSpacing::Trailing,
            Some("linspace") => TimestepSpacing::Linspace,
            Some(other) => {
                return Err(config_err(
                    d.name,
                    format!(
                        "timestep_spacing {other:?} is not supported: expected leading, trailing \
                         or linspace"
                    ),
                ));
            }
        })
    }

    fn beta_schedule(&self, d: &ClassDefaults) -> Result<BetaSchedule> {
        Ok(match self.beta_schedule.as_deref() {
            None => d.beta_schedule,
            Some("linear") => BetaSchedule::Linear,
            Some("scaled_linear") => BetaSchedule::ScaledLinear,
            Some("squaredcos_cap_v2") => BetaSchedule::SquaredcosCapV2,
            Some(other) => {
                return Err(config_err(
                    d.name,
                    format!(
                        "beta_schedule {other:?} is not supported: expected linear, \
                         scaled_linear or squaredcos_cap_v2"
                    ),
                ));
            }
        })
    }

    /// β and ᾱ computed with the same torch float32 operations as diffusers, so they are
    /// bit-equal (torch's `cumprod` accumulates in double, which a plain f32 loop would not).
    fn alphas_cumprod(&self, d: &ClassDefaults, n: usize) -> Result<Vec<f32>> {
        let cpu = (Kind::Float, Device::Cpu);
        let betas = if let Some(trained) = &self.trained_betas {
            if trained.len() != n {
                return Err(config_err(
                    d.name,
                    format!(
                        "trained_betas has {} values but num_train_timesteps is {n}",
                        trained.len()
                    ),
                ));
            }
            Tensor::from_slice(trained).to_kind(Kind::Float)
        } else {
            let start = self.beta_start.unwrap_or(d.beta_start);
            let end = self.beta_end.unwrap_or(d.beta_end);
            match self.beta_schedule(d)? {
                BetaSchedule::Linear => Tensor::linspace(start, end, n as i64, cpu),
                BetaSchedule::ScaledLinear => {
                    Tensor::linspace(start.sqrt(), end.sqrt(), n as i64, cpu).pow_tensor_scalar(2)
                }
                BetaSchedule::SquaredcosCapV2 => {
                    Tensor::from_slice(&betas_for_alpha_bar_cosine(n)).to_kind(Kind::Float)
                }
            }
        };
        let betas = if self.rescale_betas_zero_snr.unwrap_or(false) {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        };
        let alphas = betas.neg().g_add_scalar(1.0);
        let cumprod = alphas.cumprod(0, Kind::Float);
        Ok(Vec::<f32>::try_from(&cumprod)?)
    }
}

/// diffusers' `betas_for_alpha_bar` with the cosine ᾱ(t) of improved DDPM, in f64 as Python.
fn betas_for_alpha_bar_cosine(n: usize) -> Vec<f64> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
        })
        .collect()
}

/// Algorithm 1 of arXiv:2305.08891: shift and scale √ᾱ so the last step has zero SNR.
fn rescale_zero_terminal_snr(betas: &Tensor) -> Tensor {
    let alphas = betas.neg().g_add_scalar(1.0);
    let sqrt_ab = alphas.cumprod(0, Kind::Float).sqrt();
    let n = sqrt_ab.size()[0];
    let first = sqrt_ab.get(0);
    let last = sqrt_ab.get(n - 1);
    let scale = &first / (&first - &last);
    let sqrt_ab = (sqrt_ab - &last) * scale;
    let ab = sqrt_ab.pow_tensor_scalar(2);
    let alphas = Tensor::cat(
        &[
            ab.narrow(0, 0, 1),
            ab.narrow(0, 1, n - 1) / ab.narrow(0, 0, n - 1),
        ],
        0,
    );
    alphas.neg().g_add_scalar(1.0)
}

/// numpy's `np.arange(start, stop, step)` for floats, element for element: numpy fills
/// `start + i * (x₁ − start)` with x₁ = start + step, and the length is ⌈(stop − start)/step⌉.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// numpy's `np.linspace(start, stop, num)` (endpoint included), element for element.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut out: Vec<f64> = (0..num)
        .map(|i| {
            let y = i as f64;
            // numpy multiplies by `step` unless it underflows to 0.
            if step == 0.0 {
                y / div * delta + start
            } else {
                y * step + start
            }
        })
        .collect();
    out[num - 1] = stop;
    out
}

/// numpy's `np.linspace(start, stop, num, endpoint=False)`.
pub(crate) fn np_linspace_open(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / num as f64;
    (0..num).map(|i| i as f64 * step + start).collect()
}

/// The integer timesteps of DDIM, DDPM and (for `leading`) the Euler family, descending.
/// `round` is numpy's round-half-to-even.
pub(crate) fn discrete_timesteps(c: &Common, steps: usize) -> Vec<f64> {
    let n = c.num_train_timesteps;
    match c.timestep_spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (n - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(f64::round_ties_even)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (n / steps) as f64;
            (0..steps)
                .rev()
                .map(|i| (i as f64 * ratio).round_ties_even() + c.steps_offset as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = n as f64 / steps as f64;
            np_arange(n as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// The standard multiply-adds of x₀ prediction: returns x₀ from `model_output` and `sample`
/// with ᾱ_t (`(sample − √(1−ᾱ)·ε)/√ᾱ`, `√ᾱ·x − √(1−ᾱ)·v`, or x₀ itself).
pub(crate) fn predict_original_sample(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod_t: f32,
) -> Tensor {
    let beta_prod_t = 1.0 - alpha_prod_t;
    match prediction {
        PredictionType::Epsilon => {
            (sample - model_output * beta_prod_t.sqrt() as f64) / alpha_prod_t.sqrt() as f64
        }
        PredictionType::VPrediction => {
            sample * alpha_prod_t.sqrt() as f64 - model_output * beta_prod_t.sqrt() as f64
        }
        PredictionType::Sample => model_output.shallow_clone(),
    }
}

/// diffusers' `add_noise` of the ᾱ-based schedulers: √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, with ᾱ cast to
/// the sample's dtype first.
pub(crate) fn add_noise_alpha(
    name: &'static str,
    alphas_cumprod: &[f32],
    original: &Tensor,
    noise: &Tensor,
    timestep: f64,
) -> Result<Tensor> {
    super::require_noise_shape(name, original, noise)?;
    let a = alpha_at(name, alphas_cumprod, timestep)?;
    let (sqrt_a, sqrt_1ma) = match original.kind() {
        Kind::Half | Kind::BFloat16 => {
            // diffusers casts ᾱ to the half dtype before the square roots.
            let t = Tensor::from(a).to_kind(original.kind());
            let s = t.sqrt().to_kind(Kind::Float).double_value(&[]);
            let s1 = t
                .neg()
                .g_add_scalar(1.0)
                .sqrt()
                .to_kind(Kind::Float)
                .double_value(&[]);
            (s, s1)
        }
        _ => (a.sqrt() as f64, (1.0 - a).sqrt() as f64),
    };
    Ok(original * sqrt_a + noise * sqrt_1ma)
}

/// ᾱ at an integer timestep; a timestep off the training range (NaN included) is an error.
pub(crate) fn alpha_at(name: &'static str, alphas_cumprod: &[f32], timestep: f64) -> Result<f32> {
    let t = timestep.round();
    if !(t >= 0.0 && (t as usize) < alphas_cumprod.len()) {
        return Err(super::scheduler_err(
            name,
            format!(
                "timestep {timestep} is outside the training range 0..{}",
                alphas_cumprod.len()
            ),
        ));
    }
    Ok(alphas_cumprod[t as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_arange_length_and_values() {
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            [1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        assert_eq!(np_linspace(0.0, 999.0, 1), [0.0]);
        assert_eq!(np_linspace(0.0, 10.0, 3), [0.0, 5.0, 10.0]);
    }

    #[test]
    fn unknown_fields_values_are_errors() {
        let c = SchedulerConfig {
            prediction_type: Some("flow_prediction".into()),
            ..Default::default()
        };
        let d = ClassDefaults::standard("DDIMScheduler", TimestepSpacing::Leading);
        let err = c.common(&d).expect_err("flow prediction").to_string();
        assert!(
            err.contains("flow_prediction") && err.contains("v_prediction"),
            "{err}"
        );
        let c = SchedulerConfig {
            beta_schedule: Some("sigmoid".into()),
            ..Default::default()
        };
        assert!(c.common(&d).is_err());
    }
}

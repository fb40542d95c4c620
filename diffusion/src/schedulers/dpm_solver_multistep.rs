//! DPM-Solver++ (Lu et al., arXiv:2211.01095), multistep, ported from diffusers
//! `scheduling_dpmsolver_multistep.py`: the data-prediction solver of order 2 ("2M") with the
//! first-order step at the start and (for `final_sigmas_type` zero) at the end.

use tch::{Kind, Tensor};

use super::config::{ClassDefaults, PredictionType, SchedulerConfig, TimestepSpacing};
use super::euler::refuse_unsupported;
use super::sigmas::{
    alpha_sigma_t, karras_sigmas, multistep_timesteps, np_interp, sigma_to_t, train_sigmas,
};
use super::{
    NoiseSource, Scheduler, check_steps, index_for_timestep, require_noise_shape,
    require_output_shape, require_schedule, require_step, torch_f32,
};
use crate::error::{Result, config_err};

const NAME: &str = "DPMSolverMultistepScheduler";

/// The shared state of the multistep solvers (DPM-Solver++, UniPC): σ schedule, step counter and
/// the previous steps' x₀ predictions.
#[derive(Debug)]
pub(crate) struct Multistep {
    pub common: super::config::Common,
    pub train_sigmas: Vec<f32>,
    pub sigmas: Vec<f32>,
    pub sigmas_f64: Vec<f64>,
    pub timesteps: Vec<f64>,
    pub step_index: Option<usize>,
    pub begin_index: Option<usize>,
    /// The converted model outputs of the last `solver_order` steps, oldest first.
    pub model_outputs: Vec<Tensor>,
    pub lower_order_nums: usize,
    pub use_karras_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigma_min: bool,
}

impl Multistep {
    pub(crate) fn new(name: &'static str, config: &SchedulerConfig) -> Result<Self> {
        let common = config.common(&ClassDefaults::standard(name, TimestepSpacing::Linspace))?;
        refuse_unsupported(name, config)?;
        if config.use_lu_lambdas == Some(true) {
            return Err(config_err(name, "use_lu_lambdas is not supported"));
        }
        let final_sigma_min = match config.final_sigmas_type.as_deref() {
            None | Some("zero") => false,
            Some("sigma_min") => true,
            Some(other) => {
                return Err(config_err(
                    name,
                    format!("final_sigmas_type {other:?}: expected zero or sigma_min"),
                ));
            }
        };
        Ok(Self {
            train_sigmas: train_sigmas(&common.alphas_cumprod),
            common,
            sigmas: Vec::new(),
            sigmas_f64: Vec::new(),
            timesteps: Vec::new(),
            step_index: None,
            begin_index: None,
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            use_karras_sigmas: config.use_karras_sigmas.unwrap_or(false),
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            final_sigma_min,
        })
    }

    /// Timesteps and σ: interpolated at the integer timesteps, or Karras-spaced σ with their
    /// (rounded) timesteps. `round_karras` is false for DPM-Solver with the cosine schedule.
    /// `karras_last_sigma`: UniPC ends a Karras schedule with its own smallest σ.
    pub(crate) fn set(
        &mut self,
        steps: usize,
        last_timestep: usize,
        round_karras: bool,
        karras_last_sigma: bool,
    ) {
        let mut timesteps = multistep_timesteps(&self.common, steps, last_timestep);
        let (sigmas, last) = if self.use_karras_sigmas {
            let n = self.train_sigmas.len();
            let sigma_min = self.sigma_min.unwrap_or(self.train_sigmas[0] as f64);
            let sigma_max = self.sigma_max.unwrap_or(self.train_sigmas[n - 1] as f64);
            let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let log_sigmas: Vec<f32> = self.train_sigmas.iter().map(|s| s.ln()).collect();
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if round_karras { t.round_ties_even() } else { t }
                })
                .collect();
            let last = match (self.final_sigma_min, karras_last_sigma) {
                (false, _) => 0.0,
                (true, true) => sigmas[sigmas.len() - 1],
                (true, false) => self.train_sigmas[0] as f64,
            };
            (sigmas, last)
        } else {
            let sigmas = timesteps
                .iter()
                .map(|&t| np_interp(t, &self.train_sigmas))
                .collect();
            let last = if self.final_sigma_min {
                self.train_sigmas[0] as f64
            } else {
                0.0
            };
            (sigmas, last)
        };
        // diffusers stores the timesteps as int64: fractional cosine-schedule ones truncate.
        self.timesteps = timesteps.into_iter().map(f64::trunc).collect();
        self.sigmas = sigmas.iter().chain([&last]).map(|&s| s as f32).collect();
        self.sigmas_f64 = self.sigmas.iter().map(|&s| s as f64).collect();
        self.step_index = None;
        self.begin_index = None;
        self.model_outputs.clear();
        self.lower_order_nums = 0;
    }

    /// The current step index, found from the timestep on the first call; an error before
    /// `set_timesteps` and after the last step.
    pub(crate) fn step_index(&mut self, name: &'static str, timestep: f64) -> Result<usize> {
        require_schedule(name, &self.timesteps)?;
        let i = match (self.step_index, self.begin_index) {
            (Some(i), _) => i,
            (None, Some(b)) => b,
            (None, None) => self.index_or_last(timestep),
        };
        require_step(name, i, self.timesteps.len())?;
        self.step_index = Some(i);
        Ok(i)
    }

    /// The checks every multistep `step` starts with: the schedule is set and the model
    /// output has the sample's shape.
    pub(crate) fn check_step(
        &self,
        name: &'static str,
        model_output: &Tensor,
        sample: &Tensor,
    ) -> Result<()> {
        require_schedule(name, &self.timesteps)?;
        require_output_shape(name, model_output, sample)
    }

    /// diffusers' multistep `index_for_timestep`: an unknown timestep means the last step.
    fn index_or_last(&self, timestep: f64) -> usize {
        index_for_timestep(&self.timesteps, timestep)
            .unwrap_or(self.timesteps.len().saturating_sub(1))
    }

    /// (α, σ, λ = log α − log σ) at step `i` of the schedule.
    pub(crate) fn alpha_sigma_lambda(&self, i: usize) -> (f32, f32, f32) {
        let (alpha, sigma) = alpha_sigma_t(self.sigmas[i]);
        let lambda = torch_f32(alpha, Tensor::log) - torch_f32(sigma, Tensor::log);
        (alpha, sigma, lambda)
    }

    /// The data prediction x₀ from the model output at step `i`.
    pub(crate) fn convert_to_x0(&self, i: usize, model_output: &Tensor, sample: &Tensor) -> Tensor {
        let (alpha_t, sigma_t) = alpha_sigma_t(self.sigmas[i]);
        match self.common.prediction_type {
            PredictionType::Epsilon => (sample - model_output * sigma_t as f64) / alpha_t as f64,
            PredictionType::VPrediction => sample * alpha_t as f64 - model_output * sigma_t as f64,
            PredictionType::Sample => model_output.shallow_clone(),
        }
    }

    pub(crate) fn push_model_output(&mut self, x0: Tensor, order: usize) {
        if self.model_outputs.len() == order {
            drop(self.model_outputs.remove(0));
        }
        self.model_outputs.push(x0);
    }

    pub(crate) fn add_noise(
        &self,
        name: &'static str,
        original: &Tensor,
        noise: &Tensor,
        timestep: f64,
    ) -> Result<Tensor> {
        require_schedule(name, &self.timesteps)?;
        require_noise_shape(name, original, noise)?;
        let index = match (self.begin_index, self.step_index) {
            (None, _) => self.index_or_last(timestep),
            (Some(_), Some(i)) => i,
            (Some(b), None) => b,
        };
        // σ has one entry more than the timesteps: noising to the final σ is allowed.
        let sigma = self
            .sigmas
            .get(index)
            .copied()
            .ok_or_else(|| super::scheduler_err(name, format!("no σ at step {index}")))?;
        let (alpha_t, sigma_t) = alpha_sigma_t(sigma);
        Ok(original * alpha_t as f64 + noise * sigma_t as f64)
    }
}

/// `solver_type` of the second-order update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// diffusers `DPMSolverMultistepScheduler` with `algorithm_type` dpmsolver++ (the default),
/// `solver_order` 1 or 2.
#[derive(Debug)]
pub struct DpmSolverMultistepScheduler {
    state: Multistep,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    /// The last timestep kept when λ is clipped from below (`lambda_min_clipped`).
    last_timestep: usize,
    round_karras: bool,
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let state = Multistep::new(NAME, config)?;
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=2).contains(&solver_order) {
            return Err(config_err(
                NAME,
                format!("solver_order {solver_order} is not supported: expected 1 or 2"),
            ));
        }
        match config.algorithm_type.as_deref() {
            // diffusers maps the DEIS name onto dpmsolver++.
            None | Some("dpmsolver++") | Some("deis") => {}
            Some(other) => {
                return Err(config_err(
                    NAME,
                    format!("algorithm_type {other:?} is not supported: expected dpmsolver++"),
                ));
            }
        }
        let solver_type = match config.solver_type.as_deref() {
            None | Some("midpoint") | Some("logrho") | Some("bh1") | Some("bh2") => {
                SolverType::Midpoint
            }
            Some("heun") => SolverType::Heun,
            Some(other) => {
                return Err(config_err(
                    NAME,
                    format!("solver_type {other:?}: expected midpoint or heun"),
                ));
            }
        };
        if config.variance_type.is_some() {
            return Err(config_err(
                NAME,
                "learned variances (variance_type) are not supported",
            ));
        }
        let lambda_min = config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
        // λ_t = log √ᾱ − log √(1−ᾱ), float32; the clipped count is torch.searchsorted on the
        // flipped (ascending) λ.
        let lambdas = {
            let ac = Tensor::from_slice(&state.common.alphas_cumprod);
            let l = ac.sqrt().log() - ac.neg().g_add_scalar(1.0).sqrt().log();
            Vec::<f32>::try_from(&l).map_err(crate::Error::from)?
        };
        let clipped = lambdas.iter().filter(|&&l| (l as f64) < lambda_min).count();
        let last_timestep = state.common.num_train_timesteps - clipped;
        // diffusers rounds Karras timesteps except for the cosine schedule.
        let round_karras = config.beta_schedule.as_deref() != Some("squaredcos_cap_v2");
        Ok(Self {
            state,
            solver_order,
            solver_type,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            last_timestep,
            round_karras,
        })
    }

    /// DPM-Solver++ first-order step (= DDIM in λ): x_t = σ_t/σ_s·x − α_t(e^{−h} − 1)·x₀.
    fn first_order_update(&self, i: usize, x0: &Tensor, sample: &Tensor) -> Tensor {
        let (alpha_t, sigma_t, lambda_t) = self.state.alpha_sigma_lambda(i + 1);
        let (_, sigma_s, lambda_s) = self.state.alpha_sigma_lambda(i);
        let h = lambda_t - lambda_s;
        let exp_neg_h = torch_f32(-h, Tensor::exp);
        sample * (sigma_t / sigma_s) as f64 - x0 * (alpha_t * (exp_neg_h - 1.0)) as f64
    }

    /// DPM-Solver++(2M), eq. 4 of arXiv:2211.01095 (midpoint) or its Heun variant.
    fn second_order_update(&self, i: usize, sample: &Tensor) -> Tensor {
        let (alpha_t, sigma_t, lambda_t) = self.state.alpha_sigma_lambda(i + 1);
        let (_, sigma_s0, lambda_s0) = self.state.alpha_sigma_lambda(i);
        let (_, _, lambda_s1) = self.state.alpha_sigma_lambda(i - 1);
        let outputs = &self.state.model_outputs;
        let (m0, m1) = (&outputs[outputs.len() - 1], &outputs[outputs.len() - 2]);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let d1 = (m0 - m1) * (1.0 / r0) as f64;
        let exp_neg_h = torch_f32(-h, Tensor::exp);
        let base = sample * (sigma_t / sigma_s0) as f64 - m0 * (alpha_t * (exp_neg_h - 1.0)) as f64;
        match self.solver_type {
            SolverType::Midpoint => base - d1 * (0.5 * (alpha_t * (exp_neg_h - 1.0))) as f64,
            SolverType::Heun => base + d1 * (alpha_t * ((exp_neg_h - 1.0) / h + 1.0)) as f64,
        }
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        check_steps(NAME, num_inference_steps, self.last_timestep)?;
        self.state.set(
            num_inference_steps,
            self.last_timestep,
            self.round_karras,
            false,
        );
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.state.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.state.sigmas_f64)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.state.begin_index = Some(index);
    }

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
        self.state.check_step(NAME, model_output, sample)?;
        let i = self.state.step_index(NAME, timestep)?;
        let n = self.state.timesteps.len();
        let lower_order_final = i + 1 == n
            && (self.euler_at_final
                || (self.lower_order_final && n < 15)
                || !self.state.final_sigma_min);
        let x0 = self.state.convert_to_x0(i, model_output, sample);
        self.state.push_model_output(x0, self.solver_order);
        let sample = sample.to_kind(Kind::Float);
        let prev_sample =
            if self.solver_order == 1 || self.state.lower_order_nums < 1 || lower_order_final {
                let x0 = self.state.model_outputs.last().ok_or_else(|| {
                    crate::Error::Internal(format!("{NAME}: no model output after pushing one"))
                })?;
                self.first_order_update(i, x0, &sample)
            } else {
                self.second_order_update(i, &sample)
            };
        if self.state.lower_order_nums < self.solver_order {
            self.state.lower_order_nums += 1;
        }
        self.state.step_index = Some(i + 1);
        Ok(prev_sample.to_kind(model_output.kind()))
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.state.add_noise(NAME, original, noise, timestep)
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

//! UniPC (Zhao et al., arXiv:2302.04867), ported from diffusers `scheduling_unipc_multistep.py`:
//! the UniP predictor and UniC corrector with the B(h) variants bh1/bh2, in data prediction
//! (`predict_x0`), order 1 or 2 with lower-order warm-up and final steps.

use tch::Tensor;

use super::config::{PredictionType, SchedulerConfig};
use super::dpm_solver_multistep::Multistep;
use super::sigmas::alpha_sigma_t;
use super::{NoiseSource, Scheduler, check_steps, torch_f32};
use crate::error::{Result, config_err};

const NAME: &str = "UniPCMultistepScheduler";

/// `solver_type`: B(h) = h (bh1) or e^h − 1 (bh2, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BhVariant {
    Bh1,
    Bh2,
}

/// diffusers `UniPCMultistepScheduler` (diffusers defaults: bh2, order 2, predict_x0).
#[derive(Debug)]
pub struct UniPcMultistepScheduler {
    state: Multistep,
    solver_order: usize,
    solver_type: BhVariant,
    predict_x0: bool,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    /// The sample the last predictor started from, which the next corrector refines.
    last_sample: Option<Tensor>,
    /// The order the last predictor used.
    this_order: usize,
}

impl UniPcMultistepScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let state = Multistep::new(NAME, config)?;
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=2).contains(&solver_order) {
            return Err(config_err(
                NAME,
                format!("solver_order {solver_order} is not supported: expected 1 or 2"),
            ));
        }
        let solver_type = match config.solver_type.as_deref() {
            None | Some("bh2") => BhVariant::Bh2,
            Some("bh1") => BhVariant::Bh1,
            Some(other) => {
                return Err(config_err(
                    NAME,
                    format!("solver_type {other:?}: expected bh1 or bh2"),
                ));
            }
        };
        Ok(Self {
            state,
            solver_order,
            solver_type,
            predict_x0: config.predict_x0.unwrap_or(true),
            lower_order_final: config.lower_order_final.unwrap_or(true),
            disable_corrector: config.disable_corrector.clone().unwrap_or_default(),
            last_sample: None,
            this_order: 0,
        })
    }

    /// The model output in the solver's parameterisation: x₀ (predict_x0) or ε.
    fn convert_model_output(&self, i: usize, model_output: &Tensor, sample: &Tensor) -> Tensor {
        if self.predict_x0 {
            return self.state.convert_to_x0(i, model_output, sample);
        }
        let (alpha_t, sigma_t) = alpha_sigma_t(self.state.sigmas[i]);
        match self.state.common.prediction_type {
            PredictionType::Epsilon => model_output.shallow_clone(),
            PredictionType::Sample => (sample - model_output * alpha_t as f64) / sigma_t as f64,
            PredictionType::VPrediction => model_output * alpha_t as f64 + sample * sigma_t as f64,
        }
    }

    /// hh = ∓h, h·φ₁(hh) = e^{hh} − 1 and B(h).
    fn phi(&self, h: f32) -> (f32, f32, f32) {
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = torch_f32(hh, Tensor::expm1);
        let b_h = match self.solver_type {
            BhVariant::Bh1 => hh,
            BhVariant::Bh2 => h_phi_1,
        };
        (hh, h_phi_1, b_h)
    }

    /// The order-independent part: σ_t/σ_s·x − α_t·hφ₁·m₀ (x₀) or α_t/α_s·x − σ_t·hφ₁·m₀ (ε).
    fn base_update(
        &self,
        x: &Tensor,
        m0: &Tensor,
        (alpha_t, sigma_t): (f32, f32),
        (alpha_s0, sigma_s0): (f32, f32),
        h_phi_1: f32,
    ) -> (Tensor, f32) {
        if self.predict_x0 {
            (
                x * (sigma_t / sigma_s0) as f64 - m0 * (alpha_t * h_phi_1) as f64,
                alpha_t,
            )
        } else {
            (
                x * (alpha_t / alpha_s0) as f64 - m0 * (sigma_t * h_phi_1) as f64,
                sigma_t,
            )
        }
    }

    /// UniP (bh) predictor from step i to i + 1.
    fn predictor(&self, i: usize, sample: &Tensor, order: usize) -> Tensor {
        let outputs = &self.state.model_outputs;
        let m0 = &outputs[outputs.len() - 1];
        let (alpha_t, sigma_t, lambda_t) = self.state.alpha_sigma_lambda(i + 1);
        let (alpha_s0, sigma_s0, lambda_s0) = self.state.alpha_sigma_lambda(i);
        let h = lambda_t - lambda_s0;
        let (_, h_phi_1, b_h) = self.phi(h);
        let (x_t, scale) = self.base_update(
            sample,
            m0,
            (alpha_t, sigma_t),
            (alpha_s0, sigma_s0),
            h_phi_1,
        );
        if order == 1 {
            return x_t;
        }
        // Order 2: ρ = 1/2 on D₁ = (m₁ − m₀)/r₁.
        let (_, _, lambda_s1) = self.state.alpha_sigma_lambda(i - 1);
        let rk = (lambda_s1 - lambda_s0) / h;
        let d1 = (&outputs[outputs.len() - 2] - m0) / rk as f64;
        let pred_res = d1 * 0.5;
        x_t - pred_res * (scale * b_h) as f64
    }

    /// UniC (bh) corrector of the sample at step i, using this step's converted output.
    fn corrector(
        &self,
        i: usize,
        model_t: &Tensor,
        last_sample: &Tensor,
        order: usize,
    ) -> Result<Tensor> {
        let outputs = &self.state.model_outputs;
        let m0 = &outputs[outputs.len() - 1];
        let (alpha_t, sigma_t, lambda_t) = self.state.alpha_sigma_lambda(i);
        let (alpha_s0, sigma_s0, lambda_s0) = self.state.alpha_sigma_lambda(i - 1);
        let h = lambda_t - lambda_s0;
        let (hh, h_phi_1, b_h) = self.phi(h);
        let (x_t, scale) = self.base_update(
            last_sample,
            m0,
            (alpha_t, sigma_t),
            (alpha_s0, sigma_s0),
            h_phi_1,
        );
        let d1_t = model_t - m0;
        let correction = if order == 1 {
            d1_t * 0.5
        } else {
            let (_, _, lambda_s1) = self.state.alpha_sigma_lambda(i - 2);
            let rk = (lambda_s1 - lambda_s0) / h;
            let d1 = (&outputs[outputs.len() - 2] - m0) / rk as f64;
            // ρ solves R ρ = b with R = [[1, 1], [r₁, 1]] and b_k = hφ_k·k!/B(h), in float32
            // through libtorch's solver as diffusers does.
            let mut b = Vec::with_capacity(2);
            let mut h_phi_k = h_phi_1 / hh - 1.0;
            let mut factorial = 1.0f32;
            for k in 1..=2 {
                b.push(h_phi_k * factorial / b_h);
                factorial *= (k + 1) as f32;
                h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
            }
            let r = Tensor::from_slice(&[1.0f32, 1.0, rk, 1.0]).view([2, 2]);
            let rhos = Tensor::f_linalg_solve(&r, &Tensor::from_slice(&b), true)?;
            let rhos = Vec::<f32>::try_from(&rhos)?;
            d1 * rhos[0] as f64 + d1_t * rhos[1] as f64
        };
        Ok(x_t - correction * (scale * b_h) as f64)
    }
}

impl Scheduler for UniPcMultistepScheduler {
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let n = self.state.common.num_train_timesteps;
        check_steps(NAME, num_inference_steps, n)?;
        self.state.set(num_inference_steps, n, true, true);
        self.last_sample = None;
        self.this_order = 0;
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
        let converted = self.convert_model_output(i, model_output, sample);
        let use_corrector = i > 0 && !self.disable_corrector.contains(&(i - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(i, &converted, last, self.this_order)?,
            _ => sample.shallow_clone(),
        };
        self.state.push_model_output(converted, self.solver_order);
        let n = self.state.timesteps.len();
        let this_order = if self.lower_order_final {
            self.solver_order.min(n - i)
        } else {
            self.solver_order
        };
        self.this_order = this_order.min(self.state.lower_order_nums + 1);
        let prev_sample = self.predictor(i, &sample, self.this_order);
        self.last_sample = Some(sample);
        if self.state.lower_order_nums < self.solver_order {
            self.state.lower_order_nums += 1;
        }
        self.state.step_index = Some(i + 1);
        Ok(prev_sample)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.state.add_noise(NAME, original, noise, timestep)
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

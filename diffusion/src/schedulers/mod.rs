//! Noise schedulers behind one trait, read from a diffusers `scheduler/scheduler_config.json`
//! and numerically equal to diffusers' implementations (`diffusers/schedulers/scheduling_*.py`):
//! DDIM, DDPM, Euler, Euler ancestral, DPM-Solver++ 2M, UniPC and LCM.
//!
//! Scalars (alphas, sigmas, coefficients) are computed in `f32` in diffusers' operation order,
//! because diffusers keeps them in float32 tensors; tensors are only touched by the final
//! multiply-adds. Every random draw goes through [`NoiseSource`], with the shapes and in the order
//! of diffusers' `randn_tensor` calls.

mod config;
#[cfg(test)]
mod contract_tests;
mod ddim;
mod ddpm;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
mod lcm;
mod sigmas;
mod unipc;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, config_err};

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use dpm_solver_multistep::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;
pub use lcm::LcmScheduler;
pub use unipc::UniPcMultistepScheduler;

/// Where a stochastic scheduler's noise comes from. A pipeline that seeds torch's CPU generator
/// and draws `randn(shape)` here reproduces diffusers' result for the same seed.
pub trait NoiseSource {
    fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Tensor;
}

/// Noise from libtorch's global generator (seed it with `tch::manual_seed`).
#[derive(Debug, Default, Clone, Copy)]
pub struct GlobalNoise;

impl NoiseSource for GlobalNoise {
    fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Tensor {
        // Drawn on the CPU, as diffusers' `randn_tensor` does with a CPU generator.
        Tensor::randn(shape, (kind, Device::Cpu)).to_device(device)
    }
}

/// One denoising loop's scheduler, as diffusers' `SchedulerMixin`: call
/// [`set_timesteps`](Scheduler::set_timesteps), then for each of [`timesteps`](Scheduler::timesteps)
/// `scale_model_input` → model → `step`.
pub trait Scheduler: Send + std::fmt::Debug {
    /// Fixes the inference timesteps; errors for 0 steps or more than the schedule allows.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;
    /// diffusers' `scheduler.timesteps`, in order (integers for the discrete-time schedulers,
    /// fractional for the sigma-based ones).
    fn timesteps(&self) -> &[f64];
    /// The standard deviation of the initial noise: latents = noise × this.
    /// 1 for the DDPM family; the sigma (Euler-type) schedulers override it.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// How many timesteps one solver step uses (diffusers' `order`: 1 for all of ours).
    fn order(&self) -> usize {
        1
    }
    /// img2img: the index into `timesteps` the loop starts at (diffusers' `set_begin_index`).
    fn set_begin_index(&mut self, index: usize);
    /// Scales the latents before the model call (Euler-type schedulers divide by √(σ²+1)).
    /// Errors for a timestep the schedule does not hold (Euler-type schedulers) or a call
    /// before [`set_timesteps`](Scheduler::set_timesteps).
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor>;
    /// One denoising step: the previous (less noisy) sample. For LCM the last step returns the
    /// denoised sample, as diffusers' `prev_sample` does. Errors ([`Error::Scheduler`]) for a
    /// step before [`set_timesteps`](Scheduler::set_timesteps), a timestep off the schedule,
    /// a step after the last, or a model output whose shape is not the sample's.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;
    /// The forward process: `original` noised to the level of `timestep` (img2img, inpainting).
    /// Errors like [`step`](Scheduler::step) for a timestep it cannot place.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor>;
    /// diffusers' class name, e.g. `DDIMScheduler`.
    fn name(&self) -> &'static str;
    /// The noise levels σ of the schedule (with the final 0), for the sigma-based schedulers.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }
}

/// The schedulers a user can pick by name (`--scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Ddim,
    Ddpm,
    Euler,
    EulerAncestral,
    /// DPM-Solver++ 2M; `karras` uses Karras et al.'s σ spacing (`use_karras_sigmas`).
    DpmSolverMultistep {
        karras: bool,
    },
    UniPc,
    Lcm,
}

impl SchedulerKind {
    /// Every CLI name, for help texts and error messages.
    pub const NAMES: [&'static str; 8] = [
        "ddim",
        "ddpm",
        "euler",
        "euler-a",
        "dpm++2m",
        "dpm++2m-karras",
        "unipc",
        "lcm",
    ];

    /// The diffusers class a `_class_name` names, if we implement it.
    pub fn from_class_name(class: &str) -> Option<Self> {
        Some(match class {
            "DDIMScheduler" => Self::Ddim,
            "DDPMScheduler" => Self::Ddpm,
            "EulerDiscreteScheduler" => Self::Euler,
            "EulerAncestralDiscreteScheduler" => Self::EulerAncestral,
            // Karras spacing of a loaded config comes from its `use_karras_sigmas`.
            "DPMSolverMultistepScheduler" => Self::DpmSolverMultistep { karras: false },
            "UniPCMultistepScheduler" => Self::UniPc,
            "LCMScheduler" => Self::Lcm,
            // PNDM is SD 1.x's default in model_index.json; LMS is also common. Neither is
            // implemented: fall back to DDIM with the same betas (what most UIs default to).
            _ => return None,
        })
    }
}

impl FromStr for SchedulerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "ddim" => Self::Ddim,
            "ddpm" => Self::Ddpm,
            "euler" => Self::Euler,
            "euler-a" | "euler_a" | "euler-ancestral" => Self::EulerAncestral,
            "dpm++2m" | "dpmpp2m" | "dpm++" => Self::DpmSolverMultistep { karras: false },
            "dpm++2m-karras" | "dpm++2m_karras" | "dpmpp2m-karras" => {
                Self::DpmSolverMultistep { karras: true }
            }
            "unipc" => Self::UniPc,
            "lcm" => Self::Lcm,
            _ => {
                return Err(config_err(
                    "scheduler",
                    format!(
                        "unknown scheduler {s:?}: expected one of {}",
                        Self::NAMES.join(", ")
                    ),
                ));
            }
        })
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-a",
            Self::DpmSolverMultistep { karras: false } => "dpm++2m",
            Self::DpmSolverMultistep { karras: true } => "dpm++2m-karras",
            Self::UniPc => "unipc",
            Self::Lcm => "lcm",
        })
    }
}

/// Reads `scheduler_config.json` and builds the scheduler its `_class_name` names, or `kind`
/// when given: like diffusers' `from_config`, the file's betas, prediction type, spacing etc.
/// carry over and the fields the file lacks take the chosen class's defaults.
pub fn load_scheduler(
    config_json: &Path,
    kind: Option<SchedulerKind>,
) -> Result<Box<dyn Scheduler>> {
    let config: SchedulerConfig = crate::weights::read_json(config_json)?;
    build_scheduler(&config, kind)
}

/// [`load_scheduler`] for a config already read.
pub fn build_scheduler(
    config: &SchedulerConfig,
    kind: Option<SchedulerKind>,
) -> Result<Box<dyn Scheduler>> {
    let kind = match kind {
        Some(k) => k,
        None => {
            let class = config.class_name.as_deref().unwrap_or("DDIMScheduler");
            SchedulerKind::from_class_name(class).unwrap_or_else(|| {
                tracing::warn!(
                    "scheduler class {class} is not implemented; using DDIM with its betas \
                     (another can be picked by name: {})",
                    SchedulerKind::NAMES.join(", ")
                );
                SchedulerKind::Ddim
            })
        }
    };
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config)?),
        SchedulerKind::Ddpm => Box::new(DdpmScheduler::new(config)?),
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestralDiscreteScheduler::new(config)?),
        SchedulerKind::DpmSolverMultistep { karras } => {
            let mut config = config.clone();
            if karras {
                config.use_karras_sigmas = Some(true);
            }
            Box::new(DpmSolverMultistepScheduler::new(&config)?)
        }
        SchedulerKind::UniPc => Box::new(UniPcMultistepScheduler::new(config)?),
        SchedulerKind::Lcm => Box::new(LcmScheduler::new(config)?),
    })
}

/// The shared check of `set_timesteps`: at least one step, at most `max`.
pub(crate) fn check_steps(name: &'static str, steps: usize, max: usize) -> Result<()> {
    if steps == 0 {
        return Err(config_err(name, "num_inference_steps must be at least 1"));
    }
    if steps > max {
        return Err(config_err(
            name,
            format!("num_inference_steps {steps} is larger than the {max} this schedule allows"),
        ));
    }
    Ok(())
}

/// The error of a scheduler used against its contract.
pub(crate) fn scheduler_err(scheduler: &'static str, message: impl Into<String>) -> Error {
    Error::Scheduler {
        scheduler,
        message: message.into(),
    }
}

/// Errors unless `set_timesteps` has run (its schedule is never empty).
pub(crate) fn require_schedule(name: &'static str, timesteps: &[f64]) -> Result<()> {
    if timesteps.is_empty() {
        return Err(scheduler_err(
            name,
            "set_timesteps must be called before the first step",
        ));
    }
    Ok(())
}

/// [`index_for_timestep`], or an error naming the schedule when `timestep` is not in it.
pub(crate) fn require_index(name: &'static str, timesteps: &[f64], timestep: f64) -> Result<usize> {
    require_schedule(name, timesteps)?;
    index_for_timestep(timesteps, timestep)
        .ok_or_else(|| unknown_timestep(name, timesteps, timestep))
}

/// The error for a timestep that is not in the schedule.
pub(crate) fn unknown_timestep(name: &'static str, timesteps: &[f64], timestep: f64) -> Error {
    scheduler_err(
        name,
        format!(
            "timestep {timestep} is not one of the schedule's {}",
            schedule_preview(timesteps)
        ),
    )
}

/// Errors when step `index` lies past the schedule's `steps` (a step after the last, or a
/// begin index beyond the end).
pub(crate) fn require_step(name: &'static str, index: usize, steps: usize) -> Result<()> {
    if steps == 0 {
        return Err(scheduler_err(
            name,
            "set_timesteps must be called before the first step",
        ));
    }
    if index >= steps {
        return Err(scheduler_err(
            name,
            format!("step {index} is past the end of the {steps}-step schedule"),
        ));
    }
    Ok(())
}

/// Errors unless a step's model output has the sample's shape.
pub(crate) fn require_output_shape(
    name: &'static str,
    model_output: &Tensor,
    sample: &Tensor,
) -> Result<()> {
    require_same_shape(
        name,
        ("the model output", model_output),
        ("the sample", sample),
    )
}

/// Errors unless `add_noise`'s noise has the original sample's shape.
pub(crate) fn require_noise_shape(
    name: &'static str,
    original: &Tensor,
    noise: &Tensor,
) -> Result<()> {
    require_same_shape(
        name,
        ("the original sample", original),
        ("the noise", noise),
    )
}

/// Errors unless `a` and `b` have one shape: the step's arithmetic is elementwise.
fn require_same_shape(
    name: &'static str,
    (what_a, a): (&str, &Tensor),
    (what_b, b): (&str, &Tensor),
) -> Result<()> {
    if a.size() != b.size() {
        return Err(scheduler_err(
            name,
            format!(
                "{what_a} has shape {:?} but {what_b} has {:?}; they must be equal",
                a.size(),
                b.size()
            ),
        ));
    }
    Ok(())
}

/// A schedule for an error message: every timestep of a short one, the ends of a long one.
fn schedule_preview(timesteps: &[f64]) -> String {
    let n = timesteps.len();
    if n <= 8 {
        return format!("{timesteps:?}");
    }
    format!(
        "{} timesteps [{}, {}, {}, …, {}]",
        n,
        timesteps[0],
        timesteps[1],
        timesteps[2],
        timesteps[n - 1]
    )
}

/// Index of `timestep` in `timesteps` as diffusers' `index_for_timestep` picks it: the second
/// match when there are two (so img2img starting mid-schedule does not skip a σ).
pub(crate) fn index_for_timestep(timesteps: &[f64], timestep: f64) -> Option<usize> {
    let mut matches = timesteps
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == timestep)
        .map(|(i, _)| i);
    let first = matches.next()?;
    Some(matches.next().unwrap_or(first))
}

/// A scalar op through libtorch on a 0-dim float32 tensor, so transcendental functions
/// (log, exp, expm1) round exactly as diffusers' 0-dim tensor arithmetic does.
pub(crate) fn torch_f32(x: f32, op: impl Fn(&Tensor) -> Tensor) -> f32 {
    op(&Tensor::from(x)).double_value(&[]) as f32
}

/// The training-time forward process of a scheduler config, read as diffusers'
/// `DDPMScheduler.from_config` reads it (its class defaults): ᾱ over the training timesteps and
/// what the model predicts.
pub(crate) fn training_schedule(config: &SchedulerConfig) -> Result<(Vec<f32>, PredictionType)> {
    let common = config.common(&config::ClassDefaults::standard(
        "DDPMScheduler",
        TimestepSpacing::Leading,
    ))?;
    Ok((common.alphas_cumprod, common.prediction_type))
}

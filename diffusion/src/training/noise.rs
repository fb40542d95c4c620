//! The forward process during training, as diffusers' `DDPMScheduler.add_noise` and
//! `get_velocity` compute it for a batch of per-sample timesteps, and the regression target of
//! each `prediction_type`.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::schedulers::{PredictionType, SchedulerConfig, training_schedule};
use crate::weights::read_json;

/// ᾱ over the training timesteps and the prediction type of a base model's scheduler.
#[derive(Debug)]
pub struct NoiseSchedule {
    /// float32 `[num_train_timesteps]`, as diffusers keeps `alphas_cumprod`.
    alphas_cumprod: Tensor,
    pub prediction_type: PredictionType,
}

impl NoiseSchedule {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let (alphas, prediction_type) = training_schedule(config)?;
        Ok(Self {
            alphas_cumprod: Tensor::from_slice(&alphas),
            prediction_type,
        })
    }

    /// From `scheduler/scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::new(&read_json(path)?)
    }

    pub fn num_train_timesteps(&self) -> i64 {
        self.alphas_cumprod.size()[0]
    }

    /// Uniform integer timesteps in `0..num_train_timesteps` from the global generator
    /// (diffusers' training scripts: `torch.randint(0, T, (bsz,))`).
    pub fn sample_timesteps(&self, batch: i64, device: Device) -> Tensor {
        Tensor::randint(
            self.num_train_timesteps(),
            [batch],
            (Kind::Int64, Device::Cpu),
        )
        .to_device(device)
    }

    /// √ᾱ_t and √(1−ᾱ_t) per sample, shaped `[batch, 1, 1, 1]` in `like`'s dtype and device.
    fn coefficients(&self, timesteps: &Tensor, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = timesteps.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?;
        let (min, max) = (
            t.f_min()?.f_int64_value(&[])?,
            t.f_max()?.f_int64_value(&[])?,
        );
        if min < 0 || max >= self.num_train_timesteps() {
            return Err(Error::Shape {
                what: "training timesteps",
                message: format!("{min}..={max} is outside 0..{}", self.num_train_timesteps()),
            });
        }
        let a = self
            .alphas_cumprod
            .f_to_kind(like.kind())?
            .f_index_select(0, &t)?;
        let shape = [-1, 1, 1, 1];
        let sqrt_a = a.f_pow_tensor_scalar(0.5)?.f_reshape(shape)?;
        let sqrt_1ma = a
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_pow_tensor_scalar(0.5)?
            .f_reshape(shape)?;
        Ok((
            sqrt_a.f_to_device(like.device())?,
            sqrt_1ma.f_to_device(like.device())?,
        ))
    }

    /// x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let (sqrt_a, sqrt_1ma) = self.coefficients(timesteps, x0)?;
        Ok(sqrt_a.f_mul(x0)?.f_add(&sqrt_1ma.f_mul(noise)?)?)
    }

    /// v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (Salimans & Ho, arXiv:2202.00512, section 4).
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let (sqrt_a, sqrt_1ma) = self.coefficients(timesteps, x0)?;
        Ok(sqrt_a.f_mul(noise)?.f_sub(&sqrt_1ma.f_mul(x0)?)?)
    }

    /// What the model is trained to predict.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        match self.prediction_type {
            PredictionType::Epsilon => Ok(noise.shallow_clone()),
            PredictionType::VPrediction => self.velocity(x0, noise, timesteps),
            PredictionType::Sample => Ok(x0.shallow_clone()),
        }
    }
}

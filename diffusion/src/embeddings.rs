//! Sinusoidal timestep features and the timestep MLP, ported from diffusers
//! `models/embeddings.py` (`get_timestep_embedding`, `Timesteps`, `TimestepEmbedding`).

use tch::{Kind, Tensor, nn};

use crate::error::Result;
use crate::layers::Linear;

/// diffusers `Timesteps`: `[batch]` timesteps → `[batch, dim]` sinusoidal features, computed
/// in fp32 (the caller casts to the model dtype, as diffusers does).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timesteps {
    pub dim: i64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
}

impl Timesteps {
    pub(crate) fn forward(&self, timesteps: &Tensor) -> Result<Tensor> {
        let half = self.dim / 2;
        // Same operation order as diffusers so fp32 rounding matches.
        let exponent = Tensor::f_arange(half, (Kind::Float, timesteps.device()))?
            .f_mul_scalar(-(10000f64.ln()))?
            .f_div_scalar(half as f64 - self.freq_shift)?;
        let freqs = exponent.f_exp()?;
        let args = timesteps
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(1)?
            .f_mul(&freqs.f_unsqueeze(0)?)?;
        let (sin, cos) = (args.f_sin()?, args.f_cos()?);
        let emb = if self.flip_sin_to_cos {
            Tensor::f_cat(&[cos, sin], -1)?
        } else {
            Tensor::f_cat(&[sin, cos], -1)?
        };
        if self.dim % 2 == 1 {
            Ok(emb.f_constant_pad_nd([0, 1])?)
        } else {
            Ok(emb)
        }
    }
}

/// diffusers `TimestepEmbedding`: `linear_1` → SiLU → `linear_2`.
#[derive(Debug)]
pub(crate) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub(crate) fn new(p: nn::Path, in_channels: i64, time_embed_dim: i64) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(&p / "linear_1", in_channels, time_embed_dim, true)?,
            linear_2: Linear::new(&p / "linear_2", time_embed_dim, time_embed_dim, true)?,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(xs)?.f_silu()?)
    }
}

//! ControlNetModel, ported from diffusers `models/controlnets/controlnet.py`: the UNet's down
//! path and mid block (a trainable copy), a small conditioning-image encoder, and zero
//! convolutions that turn every skip connection and the mid-block output into residuals for
//! the UNet.

use serde::Deserialize;
use tch::{Kind, Tensor, nn};

use crate::error::{Error, Result, config_err};
use crate::layers::Conv2d;
use crate::unet_2d::{ControlResiduals, Trunk, UNet2DConditionConfig};
use crate::weights::FromPretrained;

/// `controlnet/config.json`: the UNet fields plus the conditioning encoder's.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlNetConfig {
    #[serde(flatten)]
    pub unet: UNet2DConditionConfig,
    /// Channels of the control image: 3 (RGB hints) or 1 (a glyph mask). Default 3.
    #[serde(default = "three")]
    pub conditioning_channels: i64,
    /// Default (16, 32, 96, 256): three stride-2 stages, so the control image is 8× the latent.
    #[serde(default = "embedding_channels")]
    pub conditioning_embedding_out_channels: Vec<i64>,
    /// Default false; true is not supported.
    #[serde(default)]
    pub global_pool_conditions: bool,
    /// `rgb` (default) or `bgr` (flips the control image's channels).
    #[serde(default = "rgb")]
    pub controlnet_conditioning_channel_order: String,
}

fn three() -> i64 {
    3
}
fn embedding_channels() -> Vec<i64> {
    vec![16, 32, 96, 256]
}
fn rgb() -> String {
    "rgb".into()
}

impl ControlNetConfig {
    /// `lllyasviel/sd-controlnet-canny/config.json` (the SD 1.5 UNet trunk, RGB hint).
    pub fn sd15() -> Self {
        Self {
            unet: UNet2DConditionConfig::sd15(),
            conditioning_channels: 3,
            conditioning_embedding_out_channels: embedding_channels(),
            global_pool_conditions: false,
            controlnet_conditioning_channel_order: rgb(),
        }
    }
}

/// diffusers `ControlNetConditioningEmbedding`.
#[derive(Debug)]
struct ConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditioningEmbedding {
    fn new(
        p: nn::Path,
        conditioning_channels: i64,
        channels: &[i64],
        out_channels: i64,
    ) -> Result<Self> {
        let Some((&first, _)) = channels.split_first() else {
            return Err(config_err(
                "ControlNetModel",
                "conditioning_embedding_out_channels is empty",
            ));
        };
        let mut blocks = Vec::new();
        for (i, pair) in channels.windows(2).enumerate() {
            blocks.push(Conv2d::new(
                &p / "blocks" / (2 * i),
                pair[0],
                pair[0],
                3,
                1,
                1,
            )?);
            blocks.push(Conv2d::new(
                &p / "blocks" / (2 * i + 1),
                pair[0],
                pair[1],
                3,
                2,
                1,
            )?);
        }
        let last = channels[channels.len() - 1];
        Ok(Self {
            conv_in: Conv2d::new(&p / "conv_in", conditioning_channels, first, 3, 1, 1)?,
            blocks,
            conv_out: Conv2d::new(&p / "conv_out", last, out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?.f_silu()?;
        for block in &self.blocks {
            xs = block.forward(&xs)?.f_silu()?;
        }
        self.conv_out.forward(&xs)
    }
}

/// diffusers `ControlNetModel`.
#[derive(Debug)]
pub struct ControlNetModel {
    trunk: Trunk,
    controlnet_cond_embedding: ConditioningEmbedding,
    controlnet_down_blocks: Vec<Conv2d>,
    controlnet_mid_block: Conv2d,
    config: ControlNetConfig,
}

impl ControlNetModel {
    pub fn new(p: nn::Path, config: &ControlNetConfig) -> Result<Self> {
        if config.global_pool_conditions {
            return Err(config_err(
                "ControlNetModel",
                "global_pool_conditions = true is not supported",
            ));
        }
        if !matches!(
            config.controlnet_conditioning_channel_order.as_str(),
            "rgb" | "bgr"
        ) {
            return Err(config_err(
                "ControlNetModel",
                format!(
                    "controlnet_conditioning_channel_order {:?} (allowed: rgb, bgr)",
                    config.controlnet_conditioning_channel_order
                ),
            ));
        }
        let c = &config.unet;
        let r = c.resolve(false)?;
        let trunk = Trunk::new(&p, c, &r)?;
        let boc = &c.block_out_channels;
        // One zero convolution per skip connection: conv_in's output, then each resnet (and
        // downsampler) output of each down block.
        let mut zero_channels = vec![boc[0]];
        for (i, &ch) in boc.iter().enumerate() {
            zero_channels.extend(std::iter::repeat_n(ch, r.layers[i]));
            if i + 1 < boc.len() {
                zero_channels.push(ch);
            }
        }
        let controlnet_down_blocks = zero_channels
            .iter()
            .enumerate()
            .map(|(i, &ch)| Conv2d::new(&p / "controlnet_down_blocks" / i, ch, ch, 1, 1, 0))
            .collect::<Result<Vec<_>>>()?;
        let last = boc[boc.len() - 1];
        Ok(Self {
            trunk,
            controlnet_cond_embedding: ConditioningEmbedding::new(
                &p / "controlnet_cond_embedding",
                config.conditioning_channels,
                &config.conditioning_embedding_out_channels,
                boc[0],
            )?,
            controlnet_down_blocks,
            controlnet_mid_block: Conv2d::new(&p / "controlnet_mid_block", last, last, 1, 1, 0)?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// Residuals for the UNet. `controlnet_cond` is the control image
    /// `[batch, conditioning_channels, 8h, 8w]` in [0, 1]; every residual is multiplied by
    /// `conditioning_scale`, and in `guess_mode` additionally by 10^-1 … 10^0 from the
    /// shallowest to the mid block (diffusers' logspace weighting).
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
        conditioning_scale: f64,
        guess_mode: bool,
    ) -> Result<ControlResiduals> {
        let hint = self.embed_condition(controlnet_cond)?;
        self.forward_embedded(
            sample,
            timestep,
            encoder_hidden_states,
            &hint,
            conditioning_scale,
            guess_mode,
        )
    }

    /// The control image through the conditioning embedding: the `hint` that is added to the
    /// trunk's `conv_in` output. It depends on neither the latents nor the timestep, so a
    /// sampler computes it once per generation instead of at every step (diffusers recomputes
    /// it inside every ControlNet call).
    pub fn embed_condition(&self, controlnet_cond: &Tensor) -> Result<Tensor> {
        let cond_size = controlnet_cond.size();
        if cond_size.len() != 4 || cond_size[1] != self.config.conditioning_channels {
            return Err(Error::Shape {
                what: "ControlNetModel controlnet_cond",
                message: format!(
                    "{cond_size:?}: expected [batch, {}, H, W]",
                    self.config.conditioning_channels
                ),
            });
        }
        let cond = if self.config.controlnet_conditioning_channel_order == "bgr" {
            controlnet_cond.f_flip([1])?
        } else {
            controlnet_cond.shallow_clone()
        };
        let cond = self.trunk.conv_in.cast_input(&cond)?;
        self.controlnet_cond_embedding.forward(&cond)
    }

    /// [`Self::forward`] with the control image already through [`Self::embed_condition`].
    pub fn forward_embedded(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        hint: &Tensor,
        conditioning_scale: f64,
        guess_mode: bool,
    ) -> Result<ControlResiduals> {
        let batch = self
            .trunk
            .check_sample(sample, encoder_hidden_states, "ControlNetModel")?;
        let sample = self.trunk.conv_in.cast_input(sample)?;
        let encoder_hidden_states = &self.trunk.conv_in.cast_input(encoder_hidden_states)?;
        let temb = self.trunk.time_embedding(timestep, batch, sample.kind())?;
        let xs = self.trunk.conv_in.forward(&sample)?;
        let hint_size = hint.size();
        if hint_size.len() != 4 || hint_size[0] != batch || hint_size[1..] != xs.size()[1..] {
            return Err(Error::Shape {
                what: "ControlNetModel controlnet_cond",
                message: format!(
                    "the control image embeds to {hint_size:?}, the latents need {:?}",
                    xs.size()
                ),
            });
        }
        let hint = self.trunk.conv_in.cast_input(hint)?;
        let mut xs = xs.f_add(&hint)?;
        let mut skips = vec![xs.shallow_clone()];
        for block in &self.trunk.down_blocks {
            let (out, states) = block.forward(&xs, &temb, encoder_hidden_states)?;
            xs = out;
            skips.extend(states);
        }
        let xs = self
            .trunk
            .mid_block
            .forward(&xs, &temb, encoder_hidden_states)?;
        let mut down = skips
            .iter()
            .zip(&self.controlnet_down_blocks)
            .map(|(s, conv)| conv.forward(s))
            .collect::<Result<Vec<_>>>()?;
        let mut mid = self.controlnet_mid_block.forward(&xs)?;
        if guess_mode {
            // torch.logspace(-1, 0, n + 1) in fp32, times conditioning_scale, as diffusers.
            let n = down.len() as i64;
            let scales =
                Tensor::f_logspace(-1.0, 0.0, n + 1, 10.0, (Kind::Float, sample.device()))?
                    .f_mul_scalar(conditioning_scale)?;
            down = down
                .iter()
                .enumerate()
                .map(|(i, d)| d.f_mul(&scales.f_get(i as i64)?))
                .collect::<Result<Vec<_>, _>>()?;
            mid = mid.f_mul(&scales.f_get(n)?)?;
        } else {
            down = down
                .iter()
                .map(|d| d.f_mul_scalar(conditioning_scale))
                .collect::<Result<Vec<_>, _>>()?;
            mid = mid.f_mul_scalar(conditioning_scale)?;
        }
        Ok(ControlResiduals { down, mid })
    }
}

impl FromPretrained for ControlNetModel {
    type Config = ControlNetConfig;
    const WEIGHTS_STEM: &'static str = "diffusion_pytorch_model";

    fn build(p: nn::Path, config: &Self::Config) -> Result<Self> {
        Self::new(p, config)
    }
}

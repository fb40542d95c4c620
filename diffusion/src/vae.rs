//! AutoencoderKL, ported from diffusers `models/autoencoders/autoencoder_kl.py` and `vae.py`
//! (Encoder, Decoder, DiagonalGaussianDistribution) with the `DownEncoderBlock2D`,
//! `UpDecoderBlock2D` and `UNetMidBlock2D` of `models/unets/unet_2d_blocks.py`.

use serde::Deserialize;
use tch::{Tensor, nn};

use crate::attention::Attention;
use crate::error::{Result, config_err};
use crate::layers::{Conv2d, GroupNorm};
use crate::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::weights::FromPretrained;

/// `vae/config.json` of diffusers' AutoencoderKL.
#[derive(Debug, Clone, Deserialize)]
pub struct AutoencoderKLConfig {
    /// Default 3.
    #[serde(default = "three")]
    pub in_channels: i64,
    /// Default 3.
    #[serde(default = "three")]
    pub out_channels: i64,
    #[serde(default = "down_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "up_types")]
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<i64>,
    /// Default 1.
    #[serde(default = "one")]
    pub layers_per_block: usize,
    /// Default 4.
    #[serde(default = "four")]
    pub latent_channels: i64,
    /// Default 32.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: i64,
    /// Latents are multiplied by this after encoding and divided before decoding. Default 0.18215.
    #[serde(default = "sd_scaling")]
    pub scaling_factor: f64,
    /// Default true.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// Default true.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Default true.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// Default "silu", the only one supported.
    #[serde(default = "silu")]
    pub act_fn: String,
}

fn three() -> i64 {
    3
}
fn four() -> i64 {
    4
}
fn one() -> usize {
    1
}
fn thirty_two() -> i64 {
    32
}
fn sd_scaling() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}
fn silu() -> String {
    "silu".into()
}
fn down_types() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn up_types() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}

impl AutoencoderKLConfig {
    /// `stable-diffusion-v1-5/vae/config.json`.
    pub fn sd15() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            act_fn: "silu".into(),
        }
    }

    fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let err = |m: String| Err(config_err("AutoencoderKL", m));
        if n == 0 {
            return err("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return err(format!(
                "{} down and {} up block types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return err(format!("down block {t:?} (allowed: DownEncoderBlock2D)"));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return err(format!("up block {t:?} (allowed: UpDecoderBlock2D)"));
        }
        if self.act_fn != "silu" {
            return err(format!("act_fn {:?} (allowed: silu)", self.act_fn));
        }
        Ok(())
    }
}

/// diffusers `UNetMidBlock2D` as the VAE uses it: resnet, one-head attention, resnet.
#[derive(Debug)]
struct VaeMidBlock {
    resnet0: ResnetBlock2D,
    attention: Option<Attention>,
    resnet1: ResnetBlock2D,
}

impl VaeMidBlock {
    fn new(p: nn::Path, channels: i64, groups: i64, add_attention: bool) -> Result<Self> {
        let resnets = &p / "resnets";
        let attention = if add_attention {
            // attention_head_dim = channels, so a single head.
            Some(Attention::new_spatial(
                &p / "attentions" / 0,
                channels,
                1,
                groups,
                1e-6,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnet0: ResnetBlock2D::new(&resnets / 0, channels, channels, None, groups, 1e-6)?,
            attention,
            resnet1: ResnetBlock2D::new(&resnets / 1, channels, channels, None, groups, 1e-6)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.resnet0.forward(xs, None)?;
        if let Some(attn) = &self.attention {
            xs = attn.forward(&xs, None)?;
        }
        self.resnet1.forward(&xs, None)
    }
}

#[derive(Debug)]
struct EncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsample: Option<Downsample2D>,
}

#[derive(Debug)]
struct DecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsample: Option<Upsample2D>,
}

#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<EncoderBlock>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(p: nn::Path, c: &AutoencoderKLConfig) -> Result<Self> {
        let boc = &c.block_out_channels;
        let g = c.norm_num_groups;
        let mut down_blocks = Vec::new();
        let mut output_channel = boc[0];
        for (i, &channels) in boc.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = channels;
            let bp = &p / "down_blocks" / i;
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let c_in = if j == 0 {
                        input_channel
                    } else {
                        output_channel
                    };
                    ResnetBlock2D::new(&bp / "resnets" / j, c_in, output_channel, None, g, 1e-6)
                })
                .collect::<Result<Vec<_>>>()?;
            let downsample = if i + 1 < boc.len() {
                Some(Downsample2D::new(
                    &bp / "downsamplers" / 0,
                    output_channel,
                    0,
                )?)
            } else {
                None
            };
            down_blocks.push(EncoderBlock {
                resnets,
                downsample,
            });
        }
        let last = output_channel;
        Ok(Self {
            conv_in: Conv2d::new(&p / "conv_in", c.in_channels, boc[0], 3, 1, 1)?,
            down_blocks,
            mid_block: VaeMidBlock::new(&p / "mid_block", last, g, c.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", g, last, 1e-6)?,
            conv_out: Conv2d::new(&p / "conv_out", last, 2 * c.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                xs = resnet.forward(&xs, None)?;
            }
            if let Some(down) = &block.downsample {
                xs = down.forward(&xs)?;
            }
        }
        let xs = self.mid_block.forward(&xs)?;
        self.conv_out
            .forward(&self.conv_norm_out.forward(&xs)?.f_silu()?)
    }
}

#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<DecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(p: nn::Path, c: &AutoencoderKLConfig) -> Result<Self> {
        let reversed: Vec<i64> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let mut up_blocks = Vec::new();
        let mut output_channel = reversed[0];
        for (i, &channels) in reversed.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = channels;
            let bp = &p / "up_blocks" / i;
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let c_in = if j == 0 {
                        prev_output_channel
                    } else {
                        output_channel
                    };
                    ResnetBlock2D::new(&bp / "resnets" / j, c_in, output_channel, None, g, 1e-6)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsample = if i + 1 < reversed.len() {
                Some(Upsample2D::new(&bp / "upsamplers" / 0, output_channel)?)
            } else {
                None
            };
            up_blocks.push(DecoderBlock { resnets, upsample });
        }
        Ok(Self {
            conv_in: Conv2d::new(&p / "conv_in", c.latent_channels, reversed[0], 3, 1, 1)?,
            mid_block: VaeMidBlock::new(
                &p / "mid_block",
                reversed[0],
                g,
                c.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", g, output_channel, 1e-6)?,
            conv_out: Conv2d::new(&p / "conv_out", output_channel, c.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut xs = self.mid_block.forward(&self.conv_in.forward(z)?)?;
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                xs = resnet.forward(&xs, None)?;
            }
            if let Some(up) = &block.upsample {
                xs = up.forward(&xs, None)?;
            }
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&xs)?.f_silu()?)
    }
}

/// The posterior of an image: a diagonal Gaussian over latents.
#[derive(Debug)]
pub struct LatentDistribution {
    pub mean: Tensor,
    /// Clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution does.
    pub logvar: Tensor,
}

impl LatentDistribution {
    pub fn std(&self) -> Result<Tensor> {
        Ok(self.logvar.f_mul_scalar(0.5)?.f_exp()?)
    }

    /// `mean + std * noise`, the noise drawn from torch's generator (seed with `tch::manual_seed`).
    pub fn sample(&self) -> Result<Tensor> {
        let noise = self.mean.f_randn_like()?;
        Ok(&self.mean + self.std()? * noise)
    }
}

/// diffusers `AutoencoderKL`.
#[derive(Debug)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: AutoencoderKLConfig,
}

impl AutoencoderKL {
    pub fn new(p: nn::Path, config: &AutoencoderKLConfig) -> Result<Self> {
        config.validate()?;
        let l = config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            Some(Conv2d::new(&p / "quant_conv", 2 * l, 2 * l, 1, 1, 0)?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(Conv2d::new(&p / "post_quant_conv", l, l, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(&p / "encoder", config)?,
            decoder: Decoder::new(&p / "decoder", config)?,
            quant_conv,
            post_quant_conv,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// `[batch, in_channels, H, W]` images in [-1, 1] → the latent distribution (unscaled).
    pub fn encode(&self, images: &Tensor) -> Result<LatentDistribution> {
        let images = self.encoder.conv_in.cast_input(images)?;
        let mut moments = self.encoder.forward(&images)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        let parts = moments.f_chunk(2, 1)?;
        let [mean, logvar] = parts.as_slice() else {
            unreachable!("chunk(2) of 2 * latent_channels channels gives two tensors")
        };
        Ok(LatentDistribution {
            mean: mean.shallow_clone(),
            logvar: logvar.f_clamp(-30.0, 20.0)?,
        })
    }

    /// Unscaled latents `[batch, latent_channels, h, w]` → images (diffusers `vae.decode`).
    /// Pipelines divide by [`AutoencoderKLConfig::scaling_factor`] first; see [`Self::decode_scaled`].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let latents = self.decoder.conv_in.cast_input(latents)?;
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(&latents)?,
            None => latents,
        };
        self.decoder.forward(&z)
    }

    /// Decodes latents as the denoising loop produces them (multiplied by `scaling_factor`).
    pub fn decode_scaled(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode(&latents.f_div_scalar(self.config.scaling_factor)?)
    }
}

impl FromPretrained for AutoencoderKL {
    type Config = AutoencoderKLConfig;
    const WEIGHTS_STEM: &'static str = "diffusion_pytorch_model";

    fn build(p: nn::Path, config: &Self::Config) -> Result<Self> {
        Self::new(p, config)
    }

    /// diffusers before 0.14 named the mid-block attention `query/key/value/proj_attn`; many
    /// SD 1.x VAEs still carry those keys (diffusers converts them on load, so do we).
    fn rename_key(key: &str) -> Option<String> {
        let parts: Vec<&str> = key.split('.').collect();
        if let Some(i) = parts.iter().position(|s| *s == "attentions")
            && let Some(&name) = parts.get(i + 2)
        {
            let new = match name {
                "query" => "to_q",
                "key" => "to_k",
                "value" => "to_v",
                "proj_attn" => "to_out.0",
                _ => return Some(key.to_string()),
            };
            let mut out: Vec<&str> = parts[..i + 2].to_vec();
            out.push(new);
            out.extend(&parts[i + 3..]);
            return Some(out.join("."));
        }
        Some(key.to_string())
    }
}

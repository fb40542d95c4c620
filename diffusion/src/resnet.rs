//! ResnetBlock2D, Downsample2D and Upsample2D, ported from diffusers `models/resnet.py`,
//! `models/downsampling.py` and `models/upsampling.py` (the `default` time-embedding norm,
//! SiLU, output_scale_factor 1, as every SD 1.x/2.x UNet and VAE uses them).

use tch::{Tensor, nn};

use crate::error::Result;
use crate::layers::{Conv2d, GroupNorm, Linear};

/// diffusers `ResnetBlock2D`.
#[derive(Debug)]
pub(crate) struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `temb_channels` is `None` in the VAE, which has no time embedding.
    pub(crate) fn new(
        p: nn::Path,
        in_channels: i64,
        out_channels: i64,
        temb_channels: Option<i64>,
        groups: i64,
        eps: f64,
    ) -> Result<Self> {
        let time_emb_proj = match temb_channels {
            Some(t) => Some(Linear::new(&p / "time_emb_proj", t, out_channels, true)?),
            None => None,
        };
        let conv_shortcut = if in_channels != out_channels {
            Some(Conv2d::new(
                &p / "conv_shortcut",
                in_channels,
                out_channels,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::new(&p / "norm1", groups, in_channels, eps)?,
            conv1: Conv2d::new(&p / "conv1", in_channels, out_channels, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::new(&p / "norm2", groups, out_channels, eps)?,
            conv2: Conv2d::new(&p / "conv2", out_channels, out_channels, 3, 1, 1)?,
            conv_shortcut,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(xs)?.f_silu()?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&temb.f_silu()?)?;
            h = h.f_add(&t.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h)?.f_silu()?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.shallow_clone(),
        };
        Ok(shortcut + h)
    }
}

/// diffusers `Downsample2D` with a convolution (`downsamplers.0.conv`). The UNet pads by 1
/// inside the convolution; the VAE encoder pads (0, 1, 0, 1) first and convolves with padding 0.
#[derive(Debug)]
pub(crate) struct Downsample2D {
    conv: Conv2d,
    asymmetric_pad: bool,
}

impl Downsample2D {
    pub(crate) fn new(p: nn::Path, channels: i64, padding: i64) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&p / "conv", channels, channels, 3, 2, padding)?,
            asymmetric_pad: padding == 0,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.asymmetric_pad {
            self.conv.forward(&xs.f_constant_pad_nd([0, 1, 0, 1])?)
        } else {
            self.conv.forward(xs)
        }
    }
}

/// diffusers `Upsample2D` with a convolution (`upsamplers.0.conv`): nearest-neighbour ×2 (or to
/// the skip connection's size when the latent side is odd), then a 3×3 convolution.
#[derive(Debug)]
pub(crate) struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub(crate) fn new(p: nn::Path, channels: i64) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&p / "conv", channels, channels, 3, 1, 1)?,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, size: Option<(i64, i64)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.size4()?;
        let up = match size {
            Some((sh, sw)) if (sh, sw) != (2 * h, 2 * w) => {
                xs.f_upsample_nearest2d([sh, sw], None, None)?
            }
            _ => xs.f_upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0)?,
        };
        self.conv.forward(&up)
    }
}

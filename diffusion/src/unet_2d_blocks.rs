//! The UNet's blocks, ported from diffusers `models/unets/unet_2d_blocks.py`:
//! `CrossAttnDownBlock2D` / `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` /
//! `UpBlock2D`. A block with cross-attention is the same block with a transformer after each
//! resnet, so each pair shares one struct with optional `attentions`.

use tch::{Tensor, nn};

use crate::attention::{Transformer2DModel, TransformerOptions};
use crate::error::{Error, Result};
use crate::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// What every block takes from the UNet config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockOptions {
    pub temb_channels: i64,
    pub groups: i64,
    pub eps: f64,
    /// `Some` for the cross-attention variants.
    pub transformer: Option<TransformerOptions>,
}

fn transformers(
    p: &nn::Path,
    n: usize,
    channels: i64,
    o: &BlockOptions,
) -> Result<Option<Vec<Transformer2DModel>>> {
    match o.transformer {
        Some(t) => Ok(Some(
            (0..n)
                .map(|i| Transformer2DModel::new(p / "attentions" / i, channels, t))
                .collect::<Result<_>>()?,
        )),
        None => Ok(None),
    }
}

/// `CrossAttnDownBlock2D` (with `attentions`) or `DownBlock2D`.
#[derive(Debug)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Option<Vec<Transformer2DModel>>,
    downsample: Option<Downsample2D>,
}

impl DownBlock {
    pub(crate) fn new(
        p: nn::Path,
        layers: usize,
        in_channels: i64,
        out_channels: i64,
        add_downsample: bool,
        o: &BlockOptions,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let c_in = if i == 0 { in_channels } else { out_channels };
                ResnetBlock2D::new(
                    &p / "resnets" / i,
                    c_in,
                    out_channels,
                    Some(o.temb_channels),
                    o.groups,
                    o.eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if add_downsample {
            Some(Downsample2D::new(&p / "downsamplers" / 0, out_channels, 1)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions: transformers(&p, layers, out_channels, o)?,
            downsample,
        })
    }

    /// Number of skip connections this block produces.
    pub(crate) fn outputs(&self) -> usize {
        self.resnets.len() + usize::from(self.downsample.is_some())
    }

    /// Returns the block output and the states kept for the skip connections.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut xs = xs.shallow_clone();
        let mut states = Vec::with_capacity(self.outputs());
        for (i, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attentions) = &self.attentions {
                xs = attentions[i].forward(&xs, context)?;
            }
            states.push(xs.shallow_clone());
        }
        if let Some(down) = &self.downsample {
            xs = down.forward(&xs)?;
            states.push(xs.shallow_clone());
        }
        Ok((xs, states))
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) per layer.
#[derive(Debug)]
pub(crate) struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub(crate) fn new(p: nn::Path, channels: i64, o: &BlockOptions) -> Result<Self> {
        let t = o.transformer.ok_or_else(|| Error::Config {
            model: "UNet2DConditionModel",
            message: "UNetMidBlock2DCrossAttn needs cross-attention options".into(),
        })?;
        let resnets = (0..2)
            .map(|i| {
                ResnetBlock2D::new(
                    &p / "resnets" / i,
                    channels,
                    channels,
                    Some(o.temb_channels),
                    o.groups,
                    o.eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = vec![Transformer2DModel::new(&p / "attentions" / 0, channels, t)?];
        Ok(Self {
            resnets,
            attentions,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut xs = self.resnets[0].forward(xs, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            xs = attn.forward(&xs, context)?;
            xs = resnet.forward(&xs, Some(temb))?;
        }
        Ok(xs)
    }
}

/// `CrossAttnUpBlock2D` (with `attentions`) or `UpBlock2D`.
#[derive(Debug)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Option<Vec<Transformer2DModel>>,
    upsample: Option<Upsample2D>,
}

impl UpBlock {
    /// `layers` resnets (diffusers passes `layers_per_block + 1`); resnet `i` sees the previous
    /// output concatenated with one skip connection.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors diffusers' get_up_block arguments"
    )]
    pub(crate) fn new(
        p: nn::Path,
        layers: usize,
        in_channels: i64,
        prev_output_channels: i64,
        out_channels: i64,
        add_upsample: bool,
        o: &BlockOptions,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let skip = if i + 1 == layers {
                    in_channels
                } else {
                    out_channels
                };
                let c_in = if i == 0 {
                    prev_output_channels
                } else {
                    out_channels
                };
                ResnetBlock2D::new(
                    &p / "resnets" / i,
                    c_in + skip,
                    out_channels,
                    Some(o.temb_channels),
                    o.groups,
                    o.eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let upsample = if add_upsample {
            Some(Upsample2D::new(&p / "upsamplers" / 0, out_channels)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions: transformers(&p, layers, out_channels, o)?,
            upsample,
        })
    }

    pub(crate) fn inputs(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are this block's skip connections in the order the down path made them; they
    /// are consumed last first.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        upsample_size: Option<(i64, i64)>,
    ) -> Result<Tensor> {
        let mut xs = xs.shallow_clone();
        for (i, (resnet, skip)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            xs = Tensor::f_cat(&[&xs, skip], 1)?;
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attentions) = &self.attentions {
                xs = attentions[i].forward(&xs, context)?;
            }
        }
        if let Some(up) = &self.upsample {
            xs = up.forward(&xs, upsample_size)?;
        }
        Ok(xs)
    }
}

//! UNet2DConditionModel for the SD 1.x/2.x families, ported from diffusers
//! `models/unets/unet_2d_condition.py`. ControlNetModel (controlnet.rs) shares its input
//! stem, time embedding, down path and mid block through [`Trunk`].

use serde::Deserialize;
use tch::{Kind, Tensor, nn};

use crate::attention::TransformerOptions;
use crate::embeddings::{TimestepEmbedding, Timesteps};
use crate::error::{Error, Result, config_err};
use crate::layers::{Conv2d, GroupNorm};
use crate::unet_2d_blocks::{BlockOptions, DownBlock, MidBlock, UpBlock};
use crate::weights::FromPretrained;

/// A config value given once for all blocks or once per block (`attention_head_dim: 8` or
/// `[5, 10, 20, 20]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    All(T),
    Each(Vec<T>),
}

impl<T: Clone + std::fmt::Debug> PerBlock<T> {
    fn resolve(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            Self::All(v) => Ok(vec![v.clone(); n]),
            Self::Each(v) if v.len() == n => Ok(v.clone()),
            Self::Each(v) => Err(config_err(
                "UNet2DConditionModel",
                format!("{field} has {} entries for {n} blocks: {v:?}", v.len()),
            )),
        }
    }
}

/// `unet/config.json` (and, flattened into [`crate::ControlNetConfig`], `controlnet/config.json`).
/// Fields SD 1.x/2.x never set (class/addition embeddings, SDXL's text-time input, …) must be
/// absent or null; a config that sets them is refused rather than silently run wrong.
#[derive(Debug, Clone, Deserialize)]
pub struct UNet2DConditionConfig {
    /// Default 4; 9 for inpainting models.
    #[serde(default = "four")]
    pub in_channels: i64,
    /// Default 4.
    #[serde(default = "four")]
    pub out_channels: i64,
    /// Default true.
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    /// Default 0.
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    /// Default `UNetMidBlock2DCrossAttn`, the only one supported.
    #[serde(default)]
    pub mid_block_type: Option<String>,
    /// Absent in ControlNet configs.
    #[serde(default)]
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<i64>,
    /// Default 2.
    #[serde(default = "two")]
    pub layers_per_block: PerBlock<usize>,
    /// Default 1.
    #[serde(default = "one_f")]
    pub downsample_padding: i64,
    /// Default 1.
    #[serde(default = "one_f64")]
    pub mid_block_scale_factor: f64,
    /// Default "silu", the only one supported.
    #[serde(default = "silu")]
    pub act_fn: String,
    /// Default 32.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: i64,
    /// Default 1e-5.
    #[serde(default = "eps")]
    pub norm_eps: f64,
    /// Default 1280.
    #[serde(default = "cross")]
    pub cross_attention_dim: PerBlock<i64>,
    /// Default 1.
    #[serde(default = "one_layer")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Despite the name, diffusers uses this as the number of heads when `num_attention_heads`
    /// is unset (every SD 1.x/2.x config). Default 8.
    #[serde(default = "eight")]
    pub attention_head_dim: PerBlock<i64>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<i64>>,
    /// Default false (SD 1.x); true in SD 2.x.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Default false; true in SD 2.1 (attention in fp32 under half precision).
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub only_cross_attention: PerBlockFlag,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub class_embed_type: Option<serde_json::Value>,
    #[serde(default)]
    pub num_class_embeds: Option<serde_json::Value>,
    #[serde(default)]
    pub addition_embed_type: Option<serde_json::Value>,
    #[serde(default)]
    pub encoder_hid_dim: Option<serde_json::Value>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<serde_json::Value>,
    #[serde(default)]
    pub time_embedding_dim: Option<serde_json::Value>,
    #[serde(default)]
    pub timestep_post_act: Option<serde_json::Value>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default = "three")]
    pub conv_in_kernel: i64,
    #[serde(default = "three")]
    pub conv_out_kernel: i64,
}

/// `only_cross_attention`: a bool or a per-block list; must be all false here.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlockFlag {
    All(bool),
    Each(Vec<bool>),
}

impl Default for PerBlockFlag {
    fn default() -> Self {
        Self::All(false)
    }
}

fn four() -> i64 {
    4
}
fn three() -> i64 {
    3
}
fn yes() -> bool {
    true
}
fn two() -> PerBlock<usize> {
    PerBlock::All(2)
}
fn one_f() -> i64 {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn silu() -> String {
    "silu".into()
}
fn thirty_two() -> i64 {
    32
}
fn eps() -> f64 {
    1e-5
}
fn cross() -> PerBlock<i64> {
    PerBlock::All(1280)
}
fn one_layer() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn eight() -> PerBlock<i64> {
    PerBlock::All(8)
}
fn default_shift() -> String {
    "default".into()
}
fn positional() -> String {
    "positional".into()
}

impl UNet2DConditionConfig {
    /// `stable-diffusion-v1-5/unet/config.json`.
    pub fn sd15() -> Self {
        serde_json::from_value(serde_json::json!({
            "in_channels": 4, "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
            "norm_num_groups": 32, "norm_eps": 1e-5, "sample_size": 64
        }))
        .unwrap_or_else(|e| unreachable!("the SD 1.5 preset is valid: {e}"))
    }
}

/// The config with every per-block value resolved, in down-block order.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub layers: Vec<usize>,
    pub transformer_layers: Vec<usize>,
    pub heads: Vec<i64>,
    pub cross_attention_dims: Vec<i64>,
    pub cross_attention: Vec<bool>,
}

fn unsupported(field: &str, v: &Option<serde_json::Value>) -> Result<()> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(v) => Err(config_err(
            "UNet2DConditionModel",
            format!("{field} = {v} is not supported (SD 1.x/2.x only)"),
        )),
    }
}

impl UNet2DConditionConfig {
    pub(crate) fn resolve(&self, with_up_blocks: bool) -> Result<Resolved> {
        let n = self.block_out_channels.len();
        let err = |m: String| Err(config_err("UNet2DConditionModel", m));
        if n == 0 {
            return err("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n {
            return err(format!(
                "{} down_block_types for {n} block_out_channels",
                self.down_block_types.len()
            ));
        }
        if with_up_blocks && self.up_block_types.len() != n {
            return err(format!(
                "{} up_block_types for {n} block_out_channels",
                self.up_block_types.len()
            ));
        }
        for (field, v) in [
            ("class_embed_type", &self.class_embed_type),
            ("num_class_embeds", &self.num_class_embeds),
            ("addition_embed_type", &self.addition_embed_type),
            ("encoder_hid_dim", &self.encoder_hid_dim),
            ("time_cond_proj_dim", &self.time_cond_proj_dim),
            ("time_embedding_dim", &self.time_embedding_dim),
            ("timestep_post_act", &self.timestep_post_act),
            (
                "reverse_transformer_layers_per_block",
                &self.reverse_transformer_layers_per_block,
            ),
        ] {
            unsupported(field, v)?;
        }
        let only_cross = match &self.only_cross_attention {
            PerBlockFlag::All(b) => *b,
            PerBlockFlag::Each(v) => v.iter().any(|b| *b),
        };
        if only_cross || self.dual_cross_attention {
            return err("only_cross_attention / dual_cross_attention are not supported".into());
        }
        if self.resnet_time_scale_shift != "default"
            || self.time_embedding_type != "positional"
            || self.act_fn != "silu"
        {
            return err(format!(
                "resnet_time_scale_shift {:?}, time_embedding_type {:?}, act_fn {:?} (supported: default, positional, silu)",
                self.resnet_time_scale_shift, self.time_embedding_type, self.act_fn
            ));
        }
        if self.conv_in_kernel != 3
            || self.conv_out_kernel != 3
            || self.mid_block_scale_factor != 1.0
        {
            return err(
                "conv_in_kernel/conv_out_kernel must be 3 and mid_block_scale_factor 1".into(),
            );
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(other) => {
                return err(format!(
                    "mid_block_type {other:?} (allowed: UNetMidBlock2DCrossAttn)"
                ));
            }
        }
        let cross_attention = self
            .down_block_types
            .iter()
            .map(|t| match t.as_str() {
                "CrossAttnDownBlock2D" => Ok(true),
                "DownBlock2D" => Ok(false),
                other => Err(config_err(
                    "UNet2DConditionModel",
                    format!("down block {other:?} (allowed: CrossAttnDownBlock2D, DownBlock2D)"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        if with_up_blocks
            && let Some(t) = self
                .up_block_types
                .iter()
                .find(|t| !matches!(t.as_str(), "CrossAttnUpBlock2D" | "UpBlock2D"))
        {
            return err(format!(
                "up block {t:?} (allowed: CrossAttnUpBlock2D, UpBlock2D)"
            ));
        }
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .resolve(n, "attention_head_dim")?;
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if h <= 0 || c % h != 0 {
                return err(format!(
                    "block {i}: {c} channels do not split into {h} attention heads"
                ));
            }
        }
        Ok(Resolved {
            layers: self.layers_per_block.resolve(n, "layers_per_block")?,
            transformer_layers: self
                .transformer_layers_per_block
                .resolve(n, "transformer_layers_per_block")?,
            heads,
            cross_attention_dims: self.cross_attention_dim.resolve(n, "cross_attention_dim")?,
            cross_attention,
        })
    }

    pub(crate) fn block_options(&self, r: &Resolved, i: usize, cross: bool) -> BlockOptions {
        BlockOptions {
            temb_channels: self.block_out_channels[0] * 4,
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            transformer: cross.then_some(TransformerOptions {
                heads: r.heads[i],
                layers: r.transformer_layers[i],
                cross_attention_dim: r.cross_attention_dims[i],
                groups: self.norm_num_groups,
                use_linear_projection: self.use_linear_projection,
                upcast_attention: self.upcast_attention,
            }),
        }
    }
}

/// Input stem, time embedding, down path and mid block: the part UNet and ControlNet share.
#[derive(Debug)]
pub(crate) struct Trunk {
    pub conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub in_channels: i64,
}

impl Trunk {
    pub(crate) fn new(p: &nn::Path, c: &UNet2DConditionConfig, r: &Resolved) -> Result<Self> {
        let boc = &c.block_out_channels;
        if c.downsample_padding != 1 {
            return Err(config_err(
                "UNet2DConditionModel",
                "downsample_padding must be 1",
            ));
        }
        let mut down_blocks = Vec::with_capacity(boc.len());
        let mut output_channel = boc[0];
        for (i, &channels) in boc.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = channels;
            let o = c.block_options(r, i, r.cross_attention[i]);
            let is_final = i + 1 == boc.len();
            down_blocks.push(DownBlock::new(
                p / "down_blocks" / i,
                r.layers[i],
                input_channel,
                output_channel,
                !is_final,
                &o,
            )?);
        }
        let last = boc.len() - 1;
        let mid = c.block_options(r, last, true);
        Ok(Self {
            conv_in: Conv2d::new(p / "conv_in", c.in_channels, boc[0], 3, 1, 1)?,
            time_proj: Timesteps {
                dim: boc[0],
                flip_sin_to_cos: c.flip_sin_to_cos,
                freq_shift: c.freq_shift,
            },
            time_embedding: TimestepEmbedding::new(p / "time_embedding", boc[0], boc[0] * 4)?,
            down_blocks,
            mid_block: MidBlock::new(p / "mid_block", boc[last], &mid)?,
            in_channels: c.in_channels,
        })
    }

    /// diffusers broadcasts a scalar or one-element timestep to the batch.
    pub(crate) fn time_embedding(
        &self,
        timestep: &Tensor,
        batch: i64,
        kind: Kind,
    ) -> Result<Tensor> {
        let t = match timestep.size().as_slice() {
            [] | [1] => timestep.f_reshape([1])?.f_expand([batch], false)?,
            [b] if *b == batch => timestep.shallow_clone(),
            other => {
                return Err(Error::Shape {
                    what: "timestep",
                    message: format!("shape {other:?}: expected a scalar, [1] or [{batch}]"),
                });
            }
        };
        let t_emb = self.time_proj.forward(&t)?.f_to_kind(kind)?;
        self.time_embedding.forward(&t_emb)
    }

    pub(crate) fn check_sample(
        &self,
        sample: &Tensor,
        context: &Tensor,
        what: &'static str,
    ) -> Result<i64> {
        let size = sample.size();
        let ok = size.len() == 4 && size[1] == self.in_channels;
        if !ok {
            return Err(Error::Shape {
                what,
                message: format!(
                    "sample {size:?}: expected [batch, {}, h, w]",
                    self.in_channels
                ),
            });
        }
        let csize = context.size();
        if csize.len() != 3 || csize[0] != size[0] {
            return Err(Error::Shape {
                what,
                message: format!(
                    "encoder_hidden_states {csize:?}: expected [{}, tokens, cross_attention_dim]",
                    size[0]
                ),
            });
        }
        Ok(size[0])
    }
}

/// Residuals a ControlNet adds to the UNet's skip connections and mid block.
#[derive(Debug)]
pub struct ControlResiduals {
    pub down: Vec<Tensor>,
    pub mid: Tensor,
}

/// diffusers `UNet2DConditionModel` (SD 1.x/2.x configurations).
#[derive(Debug)]
pub struct UNet2DConditionModel {
    trunk: Trunk,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNet2DConditionConfig,
}

impl UNet2DConditionModel {
    pub fn new(p: nn::Path, config: &UNet2DConditionConfig) -> Result<Self> {
        let r = config.resolve(true)?;
        let trunk = Trunk::new(&p, config, &r)?;
        let boc = &config.block_out_channels;
        let n = boc.len();
        let rev = |v: &[i64]| v.iter().rev().copied().collect::<Vec<_>>();
        let rev_channels = rev(boc);
        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channel = rev_channels[0];
        for (i, t) in config.up_block_types.iter().enumerate() {
            let j = n - 1 - i; // the down block this up block mirrors
            let prev_output_channel = output_channel;
            output_channel = rev_channels[i];
            let input_channel = rev_channels[(i + 1).min(n - 1)];
            let o = config.block_options(&r, j, t == "CrossAttnUpBlock2D");
            up_blocks.push(UpBlock::new(
                &p / "up_blocks" / i,
                r.layers[j] + 1,
                input_channel,
                prev_output_channel,
                output_channel,
                i + 1 < n,
                &o,
            )?);
        }
        Ok(Self {
            trunk,
            up_blocks,
            conv_norm_out: GroupNorm::new(
                &p / "conv_norm_out",
                config.norm_num_groups,
                boc[0],
                config.norm_eps,
            )?,
            conv_out: Conv2d::new(&p / "conv_out", boc[0], config.out_channels, 3, 1, 1)?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// The noise (or v) prediction for `sample` `[batch, in_channels, h, w]` at `timestep`
    /// (scalar, `[1]` or `[batch]`), conditioned on `encoder_hidden_states`
    /// `[batch, tokens, cross_attention_dim]`, optionally with ControlNet residuals.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        control: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        let batch =
            self.trunk
                .check_sample(sample, encoder_hidden_states, "UNet2DConditionModel")?;
        let sample = self.trunk.conv_in.cast_input(sample)?;
        let encoder_hidden_states = &self.trunk.conv_in.cast_input(encoder_hidden_states)?;
        let temb = self.trunk.time_embedding(timestep, batch, sample.kind())?;
        let mut xs = self.trunk.conv_in.forward(&sample)?;
        let mut skips = vec![xs.shallow_clone()];
        for block in &self.trunk.down_blocks {
            let (out, states) = block.forward(&xs, &temb, encoder_hidden_states)?;
            xs = out;
            skips.extend(states);
        }
        if let Some(control) = control {
            if control.down.len() != skips.len() {
                return Err(Error::Shape {
                    what: "ControlNet residuals",
                    message: format!(
                        "{} down residuals for {} skip connections",
                        control.down.len(),
                        skips.len()
                    ),
                });
            }
            skips = skips
                .iter()
                .zip(&control.down)
                .map(|(s, r)| s.f_add(&r.f_to_kind(s.kind())?))
                .collect::<Result<_, _>>()?;
        }
        xs = self
            .trunk
            .mid_block
            .forward(&xs, &temb, encoder_hidden_states)?;
        if let Some(control) = control {
            xs = xs.f_add(&control.mid.f_to_kind(xs.kind())?)?;
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            let take = block.inputs();
            let rest = skips.len().checked_sub(take).ok_or_else(|| Error::Shape {
                what: "UNet2DConditionModel",
                message: "up path needs more skip connections than the down path made".into(),
            })?;
            let mine = skips.split_off(rest);
            // Upsample to the next skip's size so odd latent sides work (diffusers'
            // forward_upsample_size).
            let size = if i + 1 < self.up_blocks.len() {
                skips.last().map(|s| {
                    let z = s.size();
                    (z[2], z[3])
                })
            } else {
                None
            };
            xs = block.forward(&xs, &mine, &temb, encoder_hidden_states, size)?;
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&xs)?.f_silu()?)
    }
}

impl FromPretrained for UNet2DConditionModel {
    type Config = UNet2DConditionConfig;
    const WEIGHTS_STEM: &'static str = "diffusion_pytorch_model";

    fn build(p: nn::Path, config: &Self::Config) -> Result<Self> {
        Self::new(p, config)
    }
}

//! Single-file checkpoints: the `.safetensors` files most users download, in the original
//! CompVis/Stability key scheme rather than diffusers' folders.
//!
//! - Stable Diffusion 1.x/2.x (`ldm`): `model.diffusion_model.*` (UNet), `first_stage_model.*`
//!   (VAE, 1×1-conv attention), `cond_stage_model.transformer.*` (SD 1.x CLIP) or
//!   `cond_stage_model.model.*` (SD 2.x OpenCLIP, fused q/k/v `in_proj`).
//! - ControlNets (`cldm`): `control_model.*` with `input_hint_block`, `zero_convs` and
//!   `middle_block_out` (lllyasviel's releases, GlyphControl after conversion to safetensors).
//!
//! Keys are mapped to the diffusers names the models load (the mapping diffusers'
//! `single_file_utils.py` performs, written here from the two layouts), and configs are inferred
//! from tensor shapes: SD 1.x vs 2.x from the text encoder and cross-attention width, inpainting
//! from the UNet's input channels. What shapes cannot tell (v-prediction, group-norm groups of
//! non-standard models, …) comes from [`SingleFileOptions`]: an explicit prediction type or a
//! diffusers folder whose configs to use. Pickled `.ckpt` files are refused as in `weights.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::json;
use tch::Tensor;

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::controlnet::{ControlNetConfig, ControlNetModel};
use crate::error::{Error, Result, config_err};
use crate::schedulers::{PredictionType, SchedulerConfig};
use crate::unet_2d::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::weights::{
    FromPretrained, LoadOptions, Loaded, PipelineFolder, load_tensors, read_json, refuse_pickle,
};

const UNET_PREFIX: &str = "model.diffusion_model.";
const CONTROLNET_PREFIX: &str = "control_model.";
const VAE_PREFIXES: [&str; 2] = ["first_stage_model.", "vae."];
const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// Which Stable Diffusion generation a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdVersion {
    /// CLIP ViT-L/14 text encoder, 768-wide cross-attention.
    Sd1,
    /// OpenCLIP ViT-H/14 text encoder, 1024-wide cross-attention, linear projections.
    Sd2,
}

/// How to read a single-file checkpoint.
#[derive(Debug, Clone, Default)]
pub struct SingleFileOptions {
    /// A diffusers folder whose configs replace inference: a pipeline folder (`unet/config.json`,
    /// `vae/…`, `text_encoder/…`, `scheduler/scheduler_config.json`) for SD checkpoints, or a
    /// ControlNet folder (`config.json`). Default: none, configs are inferred.
    pub config_dir: Option<PathBuf>,
    /// The model's `prediction_type`, which weights cannot reveal. Default: epsilon for SD 1.x
    /// and SD 2.x inpainting, v_prediction for other SD 2.x (as diffusers assumes SD 2.1-768).
    pub prediction_type: Option<PredictionType>,
    /// Device and dtype of the loaded models.
    pub load: LoadOptions,
}

/// A single `.safetensors` checkpoint in the original key scheme.
pub struct SingleFile {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl std::fmt::Debug for SingleFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SingleFile {
    /// Maps every tensor of `path` (a `.safetensors` file; pickles are refused): nothing is
    /// copied, the models loaded from it take over views of the mapping.
    pub fn open(path: &Path) -> Result<Self> {
        refuse_pickle(path)?;
        if !path.is_file() {
            return Err(Error::WeightsNotFound {
                dir: path.to_path_buf(),
                expected: "a .safetensors checkpoint file".into(),
            });
        }
        let tensors = crate::mapped::read(path)?.into_iter().collect();
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// A checkpoint already in memory (`path` only names it in errors).
    pub fn from_tensors(path: &Path, tensors: BTreeMap<String, Tensor>) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A full SD checkpoint (`model.diffusion_model.*`).
    pub fn is_stable_diffusion(&self) -> bool {
        self.tensors
            .contains_key(&format!("{UNET_PREFIX}input_blocks.0.0.weight"))
    }

    /// A ControlNet: in the cldm scheme (`control_model.*`, or the same keys unprefixed), or a
    /// diffusers `diffusion_pytorch_model.safetensors` of a ControlNet.
    pub fn is_controlnet(&self) -> bool {
        self.controlnet_prefix().is_some() || self.is_diffusers_controlnet()
    }

    fn is_diffusers_controlnet(&self) -> bool {
        self.tensors
            .contains_key("controlnet_cond_embedding.conv_in.weight")
    }

    fn controlnet_prefix(&self) -> Option<&'static str> {
        [CONTROLNET_PREFIX, ""].into_iter().find(|p| {
            self.tensors
                .contains_key(&format!("{p}input_hint_block.0.weight"))
        })
    }

    fn layout_error(&self, message: impl Into<String>) -> Error {
        let sample: Vec<&str> = self.tensors.keys().take(5).map(String::as_str).collect();
        config_err(
            "single-file checkpoint",
            format!(
                "{}: {} (first keys: {})",
                self.path.display(),
                message.into(),
                sample.join(", ")
            ),
        )
    }

    /// The tensors under `prefix`, with the prefix removed.
    fn with_prefix(&self, prefix: &str) -> BTreeMap<&str, &Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k, v)))
            .collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<i64>> {
        self.tensors.get(key).map(Tensor::size)
    }

    /// SD 1.x or 2.x: from the text encoder's layout, else the cross-attention width.
    pub fn version(&self) -> Result<SdVersion> {
        if self.tensors.keys().any(|k| k.starts_with(OPEN_CLIP_PREFIX)) {
            return Ok(SdVersion::Sd2);
        }
        if self.tensors.keys().any(|k| k.starts_with(CLIP_PREFIX)) {
            return Ok(SdVersion::Sd1);
        }
        let prefix = if self.is_stable_diffusion() {
            UNET_PREFIX
        } else {
            self.controlnet_prefix().unwrap_or("")
        };
        match self.cross_attention_dim(prefix) {
            Some(768) => Ok(SdVersion::Sd1),
            Some(1024) => Ok(SdVersion::Sd2),
            Some(_) => {
                // A non-standard width (e.g. a ControlNet alone): SD 2.x projects in and out of
                // attention with linear layers, SD 1.x with 1×1 convolutions.
                let linear = self
                    .tensors
                    .iter()
                    .find(|(k, _)| k.starts_with(prefix) && k.ends_with(".proj_in.weight"))
                    .is_some_and(|(_, v)| v.dim() == 2);
                Ok(if linear {
                    SdVersion::Sd2
                } else {
                    SdVersion::Sd1
                })
            }
            None => Err(self.layout_error(
                "cannot tell SD 1.x from 2.x: no text encoder and no cross-attention",
            )),
        }
    }

    fn cross_attention_dim(&self, prefix: &str) -> Option<i64> {
        self.tensors
            .iter()
            .find(|(k, _)| k.starts_with(prefix) && k.ends_with("attn2.to_k.weight"))
            .map(|(_, v)| v.size()[1])
    }

    /// The UNet (or ControlNet trunk) tensors under diffusers names.
    fn trunk_state(&self, prefix: &str, controlnet: bool) -> Result<HashMap<String, Tensor>> {
        let ldm = self.with_prefix(prefix);
        if ldm.is_empty() {
            return Err(self.layout_error(format!("no tensors under {prefix:?}")));
        }
        let layout = TrunkLayout::read(&ldm).map_err(|m| self.layout_error(m))?;
        let hint_convs = ldm
            .keys()
            .filter_map(|k| k.strip_prefix("input_hint_block."))
            .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
            .max();
        let mut out = HashMap::new();
        for (key, tensor) in &ldm {
            let name = if controlnet {
                map_controlnet_key(key, &layout, hint_convs.unwrap_or(0))
            } else {
                map_trunk_key(key, &layout)
            };
            let name = name.ok_or_else(|| {
                self.layout_error(format!(
                    "unexpected key {prefix}{key} in the ldm UNet layout"
                ))
            })?;
            out.insert(name, tensor.shallow_clone());
        }
        Ok(out)
    }

    /// UNet tensors under diffusers names.
    pub fn unet_state(&self) -> Result<HashMap<String, Tensor>> {
        self.trunk_state(UNET_PREFIX, false)
    }

    /// ControlNet tensors under diffusers names.
    pub fn controlnet_state(&self) -> Result<HashMap<String, Tensor>> {
        if self.is_diffusers_controlnet() {
            let state = self
                .tensors
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect();
            return Ok(state);
        }
        let prefix = self
            .controlnet_prefix()
            .ok_or_else(|| self.layout_error("no ControlNet (control_model.input_hint_block)"))?;
        // Unprefixed cldm files hold only the ControlNet; prefixed ones may hold a UNet too.
        self.trunk_state(prefix, true)
    }

    /// VAE tensors under diffusers names.
    pub fn vae_state(&self) -> Result<HashMap<String, Tensor>> {
        let prefix = VAE_PREFIXES
            .into_iter()
            .find(|p| self.tensors.keys().any(|k| k.starts_with(p)))
            .ok_or_else(|| self.layout_error("no VAE (first_stage_model.*)"))?;
        let ldm = self.with_prefix(prefix);
        let up_levels = ldm
            .keys()
            .filter_map(|k| k.strip_prefix("decoder.up."))
            .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        let mut out = HashMap::new();
        for (key, tensor) in &ldm {
            let name = map_vae_key(key, up_levels).ok_or_else(|| {
                self.layout_error(format!(
                    "unexpected key {prefix}{key} in the ldm VAE layout"
                ))
            })?;
            // The original attention projections are 1×1 convolutions; diffusers' are linear.
            let size = tensor.size();
            let tensor = if name.contains(".attentions.") && size.len() == 4 && size[2..] == [1, 1]
            {
                tensor.reshape(&size[..2])
            } else {
                tensor.shallow_clone()
            };
            out.insert(name, tensor);
        }
        Ok(out)
    }

    /// Text-encoder tensors under the names [`ClipTextModel`] loads, keeping `num_layers`
    /// layers (SD 2.x checkpoints carry OpenCLIP-H's 24th layer, which SD 2.x never reads).
    pub fn text_encoder_state(&self, num_layers: usize) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        match self.version()? {
            SdVersion::Sd1 => {
                for (key, tensor) in self.with_prefix(CLIP_PREFIX) {
                    if let Some(name) = ClipTextModel::rename_key(key)
                        && layer_index(&name, "encoder.layers.").is_none_or(|i| i < num_layers)
                    {
                        out.insert(name, tensor.shallow_clone());
                    }
                }
            }
            SdVersion::Sd2 => {
                for (key, tensor) in self.with_prefix(OPEN_CLIP_PREFIX) {
                    if layer_index(key, "transformer.resblocks.").is_some_and(|i| i >= num_layers) {
                        continue;
                    }
                    for (name, t) in
                        map_open_clip_key(key, tensor).map_err(|m| self.layout_error(m))?
                    {
                        out.insert(name, t);
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(self.layout_error("no text encoder (cond_stage_model.*)"));
        }
        Ok(out)
    }

    /// `prediction_type` of this checkpoint: the option, else SD 2.x non-inpainting → v.
    fn prediction_type(&self, options: &SingleFileOptions) -> Result<PredictionType> {
        if let Some(p) = options.prediction_type {
            return Ok(p);
        }
        let in_channels = self
            .shape(&format!("{UNET_PREFIX}input_blocks.0.0.weight"))
            .map_or(4, |s| s[1]);
        Ok(match (self.version()?, in_channels) {
            (SdVersion::Sd2, 4) => PredictionType::VPrediction,
            _ => PredictionType::Epsilon,
        })
    }

    /// The UNet config from tensor shapes and the SD 1.x/2.x conventions (32 norm groups;
    /// 8 heads in SD 1.x, 64-wide heads in SD 2.x).
    pub fn infer_unet_config(&self, options: &SingleFileOptions) -> Result<UNet2DConditionConfig> {
        let state = self.unet_state()?;
        let trunk = self.infer_trunk(&state, UNET_PREFIX, options)?;
        let mut value = trunk.value;
        let up: Vec<String> = trunk
            .down_types
            .iter()
            .rev()
            .map(|t| t.replace("Down", "Up"))
            .collect();
        value["up_block_types"] = json!(up);
        value["out_channels"] = json!(dim(&state, "conv_out.weight", 0));
        serde_json::from_value(value).map_err(|e| self.layout_error(format!("UNet config: {e}")))
    }

    /// The ControlNet config from tensor shapes (the UNet trunk plus the hint encoder).
    pub fn infer_controlnet_config(&self, options: &SingleFileOptions) -> Result<ControlNetConfig> {
        let state = self.controlnet_state()?;
        let prefix = self.controlnet_prefix().unwrap_or("");
        let trunk = self.infer_trunk(&state, prefix, options)?;
        let mut value = trunk.value;
        let hint_in = dim(&state, "controlnet_cond_embedding.conv_in.weight", 1);
        let mut embedding = vec![dim(&state, "controlnet_cond_embedding.conv_in.weight", 0)];
        let blocks = (0..)
            .take_while(|i| {
                state.contains_key(&format!("controlnet_cond_embedding.blocks.{i}.weight"))
            })
            .count();
        for i in (1..blocks).step_by(2) {
            embedding.push(dim(
                &state,
                &format!("controlnet_cond_embedding.blocks.{i}.weight"),
                0,
            ));
        }
        value["conditioning_channels"] = json!(hint_in);
        value["conditioning_embedding_out_channels"] = json!(embedding);
        serde_json::from_value(value)
            .map_err(|e| self.layout_error(format!("ControlNet config: {e}")))
    }

    fn infer_trunk(
        &self,
        state: &HashMap<String, Tensor>,
        prefix: &str,
        options: &SingleFileOptions,
    ) -> Result<TrunkConfig> {
        let version = self.version()?;
        let levels = (0..)
            .take_while(|i| state.contains_key(&format!("down_blocks.{i}.resnets.0.conv1.weight")))
            .count();
        if levels == 0 {
            return Err(self.layout_error("no down blocks in the UNet"));
        }
        let layers_per_block = (0..)
            .take_while(|j| state.contains_key(&format!("down_blocks.0.resnets.{j}.conv1.weight")))
            .count();
        let mut block_out_channels = Vec::new();
        let mut down_types = Vec::new();
        let mut transformer_layers = Vec::new();
        for i in 0..levels {
            block_out_channels.push(dim(
                state,
                &format!("down_blocks.{i}.resnets.0.conv1.weight"),
                0,
            ));
            let attention = format!("down_blocks.{i}.attentions.0.");
            let depth = (0..)
                .take_while(|b| {
                    state.contains_key(&format!("{attention}transformer_blocks.{b}.norm1.weight"))
                })
                .count();
            down_types.push(
                if depth > 0 {
                    "CrossAttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
                .to_string(),
            );
            transformer_layers.push(depth.max(1));
        }
        let use_linear_projection = state
            .iter()
            .find(|(k, _)| k.ends_with(".proj_in.weight"))
            .is_some_and(|(_, v)| v.dim() == 2);
        let cross_attention_dim = self
            .cross_attention_dim(prefix)
            .ok_or_else(|| self.layout_error("no cross-attention (attn2.to_k) in the UNet"))?;
        let attention_head_dim: Vec<i64> = match version {
            SdVersion::Sd1 => vec![8; levels],
            SdVersion::Sd2 => block_out_channels.iter().map(|c| c / 64).collect(),
        };
        let prediction = self.prediction_type(options)?;
        let value = json!({
            "in_channels": dim(state, "conv_in.weight", 1),
            "down_block_types": down_types,
            "block_out_channels": block_out_channels,
            "layers_per_block": layers_per_block,
            "cross_attention_dim": cross_attention_dim,
            "attention_head_dim": if version == SdVersion::Sd1 { json!(8) } else { json!(attention_head_dim) },
            "transformer_layers_per_block": transformer_layers,
            "use_linear_projection": use_linear_projection,
            // SD 2.1-768 computes attention in fp32 (its v-prediction UNet overflows in fp16).
            "upcast_attention": version == SdVersion::Sd2 && prediction == PredictionType::VPrediction,
        });
        Ok(TrunkConfig { value, down_types })
    }

    /// The VAE config: shapes for widths and depth, SD's conventions for the rest.
    pub fn infer_vae_config(&self) -> Result<AutoencoderKLConfig> {
        let state = self.vae_state()?;
        let levels = (0..)
            .take_while(|i| {
                state.contains_key(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"))
            })
            .count();
        let mut config = AutoencoderKLConfig::sd15();
        config.block_out_channels = (0..levels)
            .map(|i| {
                dim(
                    &state,
                    &format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"),
                    0,
                )
            })
            .collect();
        config.layers_per_block = (0..)
            .take_while(|j| {
                state.contains_key(&format!("encoder.down_blocks.0.resnets.{j}.conv1.weight"))
            })
            .count();
        config.down_block_types = vec!["DownEncoderBlock2D".into(); levels];
        config.up_block_types = vec!["UpDecoderBlock2D".into(); levels];
        config.latent_channels = dim(&state, "post_quant_conv.weight", 0);
        Ok(config)
    }

    /// The text encoder config: CLIP ViT-L/14 (SD 1.x) or OpenCLIP ViT-H/14 minus its last
    /// layer (SD 2.x), with widths and depth read from the shapes.
    pub fn infer_text_encoder_config(&self) -> Result<ClipTextConfig> {
        let mut config = ClipTextConfig::sd15();
        match self.version()? {
            SdVersion::Sd1 => {
                let emb = self
                    .shape(&format!(
                        "{CLIP_PREFIX}text_model.embeddings.token_embedding.weight"
                    ))
                    .or_else(|| {
                        self.shape(&format!("{CLIP_PREFIX}embeddings.token_embedding.weight"))
                    })
                    .ok_or_else(|| self.layout_error("no CLIP token embedding"))?;
                config.vocab_size = emb[0];
                config.hidden_size = emb[1];
                config.num_hidden_layers = self.count_layers(CLIP_PREFIX, "encoder.layers.");
                config.num_attention_heads = emb[1] / 64;
                config.intermediate_size = emb[1] * 4;
            }
            SdVersion::Sd2 => {
                let emb = self
                    .shape(&format!("{OPEN_CLIP_PREFIX}token_embedding.weight"))
                    .ok_or_else(|| self.layout_error("no OpenCLIP token embedding"))?;
                config.vocab_size = emb[0];
                config.hidden_size = emb[1];
                // diffusers' SD 2.x text encoder stops one layer short of OpenCLIP's 24.
                config.num_hidden_layers = self
                    .count_layers(OPEN_CLIP_PREFIX, "transformer.resblocks.")
                    .saturating_sub(1);
                config.num_attention_heads = emb[1] / 64;
                config.intermediate_size = emb[1] * 4;
                config.hidden_act = "gelu".into();
            }
        }
        Ok(config)
    }

    fn count_layers(&self, prefix: &str, layers: &str) -> usize {
        self.with_prefix(prefix)
            .keys()
            .filter_map(|k| layer_index(k, layers))
            .max()
            .map_or(0, |m| m + 1)
    }

    /// The scheduler config an SD checkpoint implies: SD's DDIM betas with its prediction type.
    pub fn scheduler_config(&self, options: &SingleFileOptions) -> Result<SchedulerConfig> {
        let prediction = match self.prediction_type(options)? {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        };
        serde_json::from_value(json!({
            "_class_name": "DDIMScheduler",
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "num_train_timesteps": 1000,
            "clip_sample": false,
            "set_alpha_to_one": false,
            "steps_offset": 1,
            "timestep_spacing": "leading",
            "prediction_type": prediction,
        }))
        .map_err(|e| self.layout_error(format!("scheduler config: {e}")))
    }
}

struct TrunkConfig {
    value: serde_json::Value,
    down_types: Vec<String>,
}

fn dim(state: &HashMap<String, Tensor>, key: &str, d: usize) -> i64 {
    state.get(key).map_or(0, |t| t.size()[d])
}

/// The layer number after `marker` in `key`, e.g. 3 in `encoder.layers.3.mlp.fc1.weight`.
fn layer_index(key: &str, marker: &str) -> Option<usize> {
    let rest = &key[key.find(marker)? + marker.len()..];
    rest.split('.').next()?.parse().ok()
}

/// How an ldm UNet numbers its blocks: `input_blocks` run conv_in, then per level
/// `layers_per_block` (resnet, attention) pairs and a downsampler; `output_blocks` run per level
/// `layers_per_block + 1` pairs, the last with the upsampler.
struct TrunkLayout {
    layers_per_block: usize,
}

impl TrunkLayout {
    fn read(ldm: &BTreeMap<&str, &Tensor>) -> std::result::Result<Self, String> {
        let blocks: Vec<usize> = ldm
            .keys()
            .filter_map(|k| layer_index(k, "input_blocks."))
            .collect();
        let input_blocks = blocks.iter().max().map_or(0, |m| m + 1);
        let downsamplers = ldm
            .keys()
            .filter(|k| k.starts_with("input_blocks.") && k.contains(".0.op."))
            .filter(|k| k.ends_with("weight"))
            .count();
        let levels = downsamplers + 1;
        // input_blocks = 1 + levels · layers_per_block + downsamplers
        let per_level = (input_blocks.saturating_sub(1 + downsamplers)) / levels;
        if input_blocks < 2 || 1 + levels * per_level + downsamplers != input_blocks {
            return Err(format!(
                "{input_blocks} input blocks and {downsamplers} downsamplers do not form an ldm UNet"
            ));
        }
        Ok(Self {
            layers_per_block: per_level,
        })
    }
}

/// ldm ResBlock → diffusers ResnetBlock2D parameter names.
fn map_resnet(rest: &str) -> Option<String> {
    const NAMES: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    NAMES
        .iter()
        .find_map(|(old, new)| rest.strip_prefix(old).map(|r| format!("{new}{r}")))
}

/// Splits `a.b.rest` into (a, b, rest) with a and b numbers.
fn two_indices(key: &str) -> Option<(usize, usize, &str)> {
    let mut parts = key.splitn(3, '.');
    let a = parts.next()?.parse().ok()?;
    let b = parts.next()?.parse().ok()?;
    Some((a, b, parts.next()?))
}

/// One ldm UNet key (without `model.diffusion_model.`) → its diffusers name.
fn map_trunk_key(key: &str, layout: &TrunkLayout) -> Option<String> {
    const DIRECT: [(&str, &str); 5] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    if let Some(name) = DIRECT
        .iter()
        .find_map(|(old, new)| key.strip_prefix(old).map(|r| format!("{new}{r}")))
    {
        return Some(name);
    }
    let per = layout.layers_per_block + 1;
    if let Some(rest) = key.strip_prefix("input_blocks.") {
        let (k, slot, rest) = two_indices(rest)?;
        if let Some(param) = rest.strip_prefix("op.") {
            return Some(format!(
                "down_blocks.{}.downsamplers.0.conv.{param}",
                k / per - 1
            ));
        }
        let (level, layer) = ((k - 1) / per, (k - 1) % per);
        return match slot {
            0 => Some(format!(
                "down_blocks.{level}.resnets.{layer}.{}",
                map_resnet(rest)?
            )),
            1 => Some(format!("down_blocks.{level}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (slot, rest) = rest.split_once('.')?;
        return match slot {
            "0" => Some(format!("mid_block.resnets.0.{}", map_resnet(rest)?)),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", map_resnet(rest)?)),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("output_blocks.") {
        let (k, slot, rest) = two_indices(rest)?;
        let (level, layer) = (k / per, k % per);
        if let Some(param) = rest.strip_prefix("conv.") {
            // The upsampler sits after the attention (slot 2) or right after the resnet (slot 1).
            return Some(format!("up_blocks.{level}.upsamplers.0.conv.{param}"));
        }
        return match slot {
            0 => Some(format!(
                "up_blocks.{level}.resnets.{layer}.{}",
                map_resnet(rest)?
            )),
            1 => Some(format!("up_blocks.{level}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    None
}

/// One cldm ControlNet key → its diffusers name: the UNet trunk's down half plus the hint
/// encoder (`input_hint_block`: convolutions at even indices, SiLUs between them), the zero
/// convolutions and the middle-block output.
fn map_controlnet_key(key: &str, layout: &TrunkLayout, last_hint_conv: usize) -> Option<String> {
    if let Some(rest) = key.strip_prefix("input_hint_block.") {
        let (index, param) = rest.split_once('.')?;
        let index: usize = index.parse().ok()?;
        return Some(match index {
            0 => format!("controlnet_cond_embedding.conv_in.{param}"),
            i if i == last_hint_conv => format!("controlnet_cond_embedding.conv_out.{param}"),
            i if i % 2 == 0 => format!("controlnet_cond_embedding.blocks.{}.{param}", i / 2 - 1),
            _ => return None,
        });
    }
    if let Some(rest) = key.strip_prefix("zero_convs.") {
        let (k, slot, param) = two_indices(rest)?;
        return (slot == 0).then(|| format!("controlnet_down_blocks.{k}.{param}"));
    }
    if let Some(param) = key.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{param}"));
    }
    if key.starts_with("output_blocks.") || key.starts_with("out.") {
        return None;
    }
    map_trunk_key(key, layout)
}

/// One ldm VAE key (without `first_stage_model.`) → its diffusers name. The decoder's `up`
/// levels run in the opposite order to diffusers' `up_blocks`.
fn map_vae_key(key: &str, up_levels: usize) -> Option<String> {
    const DIRECT: [&str; 6] = [
        "encoder.conv_in.",
        "encoder.conv_out.",
        "decoder.conv_in.",
        "decoder.conv_out.",
        "quant_conv.",
        "post_quant_conv.",
    ];
    if DIRECT.iter().any(|d| key.starts_with(d)) {
        return Some(key.to_string());
    }
    let (coder, rest) = key.split_once('.')?;
    if coder != "encoder" && coder != "decoder" {
        return None;
    }
    let resnet = |r: &str| r.replace("nin_shortcut.", "conv_shortcut.");
    if let Some(param) = rest.strip_prefix("norm_out.") {
        return Some(format!("{coder}.conv_norm_out.{param}"));
    }
    if let Some(r) = rest.strip_prefix("down.") {
        let (i, r) = r.split_once('.')?;
        if let Some(param) = r.strip_prefix("downsample.conv.") {
            return Some(format!(
                "{coder}.down_blocks.{i}.downsamplers.0.conv.{param}"
            ));
        }
        let (j, r) = r.strip_prefix("block.")?.split_once('.')?;
        return Some(format!("{coder}.down_blocks.{i}.resnets.{j}.{}", resnet(r)));
    }
    if let Some(r) = rest.strip_prefix("up.") {
        let (i, r) = r.split_once('.')?;
        let block = up_levels.checked_sub(1 + i.parse::<usize>().ok()?)?;
        if let Some(param) = r.strip_prefix("upsample.conv.") {
            return Some(format!(
                "{coder}.up_blocks.{block}.upsamplers.0.conv.{param}"
            ));
        }
        let (j, r) = r.strip_prefix("block.")?.split_once('.')?;
        return Some(format!(
            "{coder}.up_blocks.{block}.resnets.{j}.{}",
            resnet(r)
        ));
    }
    if let Some(r) = rest.strip_prefix("mid.") {
        if let Some(r) = r.strip_prefix("block_1.") {
            return Some(format!("{coder}.mid_block.resnets.0.{}", resnet(r)));
        }
        if let Some(r) = r.strip_prefix("block_2.") {
            return Some(format!("{coder}.mid_block.resnets.1.{}", resnet(r)));
        }
        let r = r.strip_prefix("attn_1.")?;
        const ATTENTION: [(&str, &str); 5] = [
            ("norm.", "group_norm."),
            ("q.", "to_q."),
            ("k.", "to_k."),
            ("v.", "to_v."),
            ("proj_out.", "to_out.0."),
        ];
        let r = ATTENTION
            .iter()
            .find_map(|(old, new)| r.strip_prefix(old).map(|p| format!("{new}{p}")))?;
        return Some(format!("{coder}.mid_block.attentions.0.{r}"));
    }
    None
}

/// One OpenCLIP key (without `cond_stage_model.model.`) → the [`ClipTextModel`] names, splitting
/// the fused `in_proj` into q, k, v. The contrastive head (`text_projection`, `logit_scale`)
/// is not part of the text encoder SD uses.
fn map_open_clip_key(
    key: &str,
    tensor: &Tensor,
) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let one = |name: String| Ok(vec![(name, tensor.shallow_clone())]);
    match key {
        "token_embedding.weight" => return one("embeddings.token_embedding.weight".into()),
        "positional_embedding" => return one("embeddings.position_embedding.weight".into()),
        "text_projection" | "logit_scale" | "attn_mask" => return Ok(Vec::new()),
        _ => {}
    }
    if let Some(param) = key.strip_prefix("ln_final.") {
        return one(format!("final_layer_norm.{param}"));
    }
    let rest = key
        .strip_prefix("transformer.resblocks.")
        .ok_or_else(|| format!("unexpected OpenCLIP key {key}"))?;
    let (layer, rest) = rest
        .split_once('.')
        .ok_or_else(|| format!("unexpected OpenCLIP key {key}"))?;
    let base = format!("encoder.layers.{layer}.");
    if let Some(what) = rest.strip_prefix("attn.in_proj_") {
        let parts = tensor.chunk(3, 0);
        if parts.len() != 3 || tensor.size()[0] % 3 != 0 {
            return Err(format!(
                "{key}: shape {:?} is not a fused q/k/v",
                tensor.size()
            ));
        }
        return Ok(["q", "k", "v"]
            .iter()
            .zip(parts)
            .map(|(x, t)| (format!("{base}self_attn.{x}_proj.{what}"), t))
            .collect());
    }
    const NAMES: [(&str, &str); 5] = [
        ("attn.out_proj.", "self_attn.out_proj."),
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    NAMES
        .iter()
        .find_map(|(old, new)| rest.strip_prefix(old).map(|p| format!("{base}{new}{p}")))
        .map_or_else(|| Err(format!("unexpected OpenCLIP key {key}")), one)
}

/// A component config from the options' folder when it has one, else `infer`.
fn config_or<C: serde::de::DeserializeOwned>(
    options: &SingleFileOptions,
    candidates: &[&str],
    infer: impl FnOnce() -> Result<C>,
) -> Result<C> {
    if let Some(dir) = &options.config_dir {
        for c in candidates {
            let path = dir.join(c);
            if path.is_file() {
                return read_json(&path);
            }
        }
    }
    infer()
}

/// The models of a Stable Diffusion checkpoint, however it was stored.
#[derive(Debug)]
pub struct StableDiffusionModels {
    pub unet: Loaded<UNet2DConditionModel>,
    pub vae: Loaded<AutoencoderKL>,
    pub text_encoder: Loaded<ClipTextModel>,
    /// The folder's `scheduler/scheduler_config.json`, or SD's DDIM config with the checkpoint's
    /// prediction type.
    pub scheduler: SchedulerConfig,
    /// Known for single files; `None` for diffusers folders.
    pub version: Option<SdVersion>,
}

/// Loads SD's UNet, VAE and text encoder from a diffusers pipeline folder or a single-file
/// checkpoint (the tokenizer always comes from a folder: single files do not carry one).
pub fn load_stable_diffusion(
    path: &Path,
    options: &SingleFileOptions,
) -> Result<StableDiffusionModels> {
    if path.is_dir() {
        let folder = PipelineFolder::open(path)?;
        return Ok(StableDiffusionModels {
            unet: folder.load("unet", &options.load)?,
            vae: folder.load("vae", &options.load)?,
            text_encoder: folder.load("text_encoder", &options.load)?,
            scheduler: read_json(&folder.component("scheduler")?.join("scheduler_config.json"))?,
            version: None,
        });
    }
    let file = SingleFile::open(path)?;
    if !file.is_stable_diffusion() {
        let what = if file.is_controlnet() {
            "a ControlNet, not a Stable Diffusion checkpoint (pass it as the ControlNet)"
        } else {
            "not a Stable Diffusion checkpoint in the ldm layout (no model.diffusion_model.*)"
        };
        return Err(file.layout_error(what));
    }
    let unet_config: UNet2DConditionConfig = config_or(options, &["unet/config.json"], || {
        file.infer_unet_config(options)
    })?;
    let vae_config: AutoencoderKLConfig =
        config_or(options, &["vae/config.json"], || file.infer_vae_config())?;
    let text_config: ClipTextConfig = config_or(options, &["text_encoder/config.json"], || {
        file.infer_text_encoder_config()
    })?;
    let scheduler = config_or(options, &["scheduler/scheduler_config.json"], || {
        file.scheduler_config(options)
    })?;
    let text_state = file.text_encoder_state(text_config.num_hidden_layers)?;
    Ok(StableDiffusionModels {
        unet: load_tensors(&unet_config, file.unet_state()?, path, &options.load)?,
        vae: load_tensors(&vae_config, file.vae_state()?, path, &options.load)?,
        text_encoder: load_tensors(&text_config, text_state, path, &options.load)?,
        scheduler,
        version: Some(file.version()?),
    })
}

/// Loads a ControlNet from a diffusers folder or a single file: a cldm checkpoint, or a
/// diffusers-scheme `.safetensors`. The config is, in order: `options.config_dir`, a
/// `config.json` beside a diffusers-scheme file, else inferred from the shapes.
pub fn load_controlnet(
    path: &Path,
    options: &SingleFileOptions,
) -> Result<Loaded<ControlNetModel>> {
    if path.is_dir() {
        return crate::weights::load(path, &options.load);
    }
    let file = SingleFile::open(path)?;
    if !file.is_controlnet() {
        return Err(file.layout_error(
            "not a ControlNet (no control_model.input_hint_block, no controlnet_cond_embedding)",
        ));
    }
    let beside = path.parent().map(|d| d.join("config.json"));
    let config: ControlNetConfig = config_or(
        options,
        &["config.json", "controlnet/config.json"],
        || match beside.filter(|c| file.is_diffusers_controlnet() && c.is_file()) {
            Some(config) => read_json(&config),
            None => file.infer_controlnet_config(options),
        },
    )?;
    load_tensors(&config, file.controlnet_state()?, path, &options.load)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> TrunkLayout {
        TrunkLayout {
            layers_per_block: 2,
        }
    }

    #[test]
    fn sd15_unet_keys_map_to_diffusers() {
        let cases = [
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.bias",
                "down_blocks.0.downsamplers.0.conv.bias",
            ),
            (
                "input_blocks.11.0.skip_connection.weight",
                "down_blocks.3.resnets.1.conv_shortcut.weight",
            ),
            (
                "middle_block.2.emb_layers.1.weight",
                "mid_block.resnets.1.time_emb_proj.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.8.0.out_layers.3.weight",
                "up_blocks.2.resnets.2.conv2.weight",
            ),
            (
                "output_blocks.9.1.transformer_blocks.0.attn2.to_k.weight",
                "up_blocks.3.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(
                map_trunk_key(ldm, &layout()).as_deref(),
                Some(diffusers),
                "{ldm}"
            );
        }
        assert_eq!(map_trunk_key("input_blocks.1.7.x", &layout()), None);
    }

    #[test]
    fn controlnet_and_vae_and_open_clip_keys() {
        assert_eq!(
            map_controlnet_key("input_hint_block.14.weight", &layout(), 14).as_deref(),
            Some("controlnet_cond_embedding.conv_out.weight")
        );
        assert_eq!(
            map_controlnet_key("input_hint_block.6.bias", &layout(), 14).as_deref(),
            Some("controlnet_cond_embedding.blocks.2.bias")
        );
        assert_eq!(
            map_controlnet_key("zero_convs.11.0.weight", &layout(), 14).as_deref(),
            Some("controlnet_down_blocks.11.weight")
        );
        assert_eq!(
            map_vae_key("decoder.up.3.block.2.nin_shortcut.weight", 4).as_deref(),
            Some("decoder.up_blocks.0.resnets.2.conv_shortcut.weight")
        );
        assert_eq!(
            map_vae_key("encoder.mid.attn_1.proj_out.bias", 4).as_deref(),
            Some("encoder.mid_block.attentions.0.to_out.0.bias")
        );
        let qkv = Tensor::arange(6, (tch::Kind::Float, tch::Device::Cpu));
        let split =
            map_open_clip_key("transformer.resblocks.4.attn.in_proj_bias", &qkv).expect("split");
        assert_eq!(split[1].0, "encoder.layers.4.self_attn.k_proj.bias");
        assert_eq!(
            Vec::<f32>::try_from(&split[1].1).expect("values"),
            [2.0, 3.0]
        );
        assert!(map_open_clip_key("visual.proj", &qkv).is_err());
    }
}

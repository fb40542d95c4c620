//! Starting points of training runs and how trained models are written.
//!
//! A ControlNet starts as diffusers' `ControlNetModel.from_unet` builds it (Zhang et al.,
//! arXiv:2302.05543, section 3.1): the UNet's encoder (conv_in, time embedding, down blocks,
//! mid block) copied, the zero convolutions and the conditioning encoder's last layer zeroed,
//! so the untrained ControlNet leaves the UNet's output unchanged.

use std::path::Path;

use serde_json::{Value, json};
use tch::{Device, Kind, Tensor, nn};

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::controlnet::{ControlNetConfig, ControlNetModel};
use crate::error::{Error, Result, TorchContext};
use crate::unet_2d::UNet2DConditionModel;
use crate::weights::{FromPretrained, Init, Loaded, build_with};

/// Prefixes of the variables `from_unet` zeroes.
const ZEROED: [&str; 3] = [
    "controlnet_down_blocks.",
    "controlnet_mid_block.",
    "controlnet_cond_embedding.conv_out.",
];

/// UNet config fields a ControlNet config does not have (diffusers would warn about them).
const UNET_ONLY: [&str; 9] = [
    "out_channels",
    "up_block_types",
    "center_input_sample",
    "conv_out_kernel",
    "sample_size",
    "dropout",
    "reverse_transformer_layers_per_block",
    "time_cond_proj_dim",
    "mid_block_only_cross_attention",
];

/// `controlnet/config.json` for a ControlNet made from a UNet with `unet_config` (the UNet's
/// `config.json` as read).
pub fn controlnet_config_json(
    unet_config: &Value,
    conditioning_channels: i64,
    conditioning_embedding_out_channels: &[i64],
) -> Value {
    let mut c = unet_config.clone();
    if let Some(map) = c.as_object_mut() {
        for k in UNET_ONLY {
            map.remove(k);
        }
        map.insert("_class_name".into(), json!("ControlNetModel"));
        map.insert("conditioning_channels".into(), json!(conditioning_channels));
        map.insert(
            "conditioning_embedding_out_channels".into(),
            json!(conditioning_embedding_out_channels),
        );
        map.insert("controlnet_conditioning_channel_order".into(), json!("rgb"));
        map.insert("global_pool_conditions".into(), json!(false));
    }
    c
}

/// A new ControlNet from `unet` (see the module docs), fp32 on `device`, trainable.
pub fn controlnet_from_unet(
    unet: &Loaded<UNet2DConditionModel>,
    config_json: &Value,
    device: Device,
) -> Result<Loaded<ControlNetModel>> {
    let config: ControlNetConfig = serde_json::from_value(config_json.clone())
        .map_err(|e| Error::Training(format!("ControlNet config: {e}")))?;
    let var_store = nn::VarStore::new(device);
    let model = ControlNetModel::build(var_store.root(), &config)?;
    let unet_vars = unet.var_store.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in var_store.variables() {
            if ZEROED.iter().any(|p| name.starts_with(p)) {
                let _ = var.f_zero_()?;
            } else if let Some(src) = unet_vars.get(&name) {
                var.f_copy_(&src.f_to_kind(Kind::Float)?)
                    .ctx(format!("copying {name} from the UNet"))?;
            } else if !name.starts_with("controlnet_cond_embedding.") {
                return Err(Error::Training(format!(
                    "ControlNet variable {name} has no UNet counterpart"
                )));
            }
        }
        Ok(())
    })?;
    Ok(Loaded { model, var_store })
}

/// Writes a model folder in the diffusers layout: `config.json` and
/// `<stem>.safetensors` with the variables of `tensors` (fp32), through temporary names, so a
/// kill leaves either the old folder or the new one.
pub fn save_model_folder(
    dir: &Path,
    config_json: &Value,
    stem: &str,
    tensors: &[(String, Tensor)],
) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut sorted: Vec<(String, Tensor)> = tch::no_grad(|| {
        tensors
            .iter()
            .map(|(n, t)| {
                Ok((
                    n.clone(),
                    t.f_detach()?
                        .f_to_kind(Kind::Float)?
                        .f_to_device(Device::Cpu)?
                        .f_contiguous()?,
                ))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let refs: Vec<(&str, &Tensor)> = sorted.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let file = dir.join(format!("{stem}.safetensors"));
    let tmp = dir.join(format!(".{stem}.safetensors.partial"));
    Tensor::write_safetensors(&refs, &tmp).ctx(format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).map_err(|e| io(&file, e))?;
    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(config_json).expect("JSON values serialise");
    std::fs::write(&config, text + "\n").map_err(|e| io(&config, e))
}

/// The variables of a store as `(name, tensor)` pairs, sorted by name.
pub fn named_variables(var_store: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = var_store.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The text encoder with its token table grown to `vocab_size` rows for TextDiffuser-2's
/// added tokens (`resize_token_embeddings`): the old rows are kept and every new row starts
/// at the mean of the old ones (transformers' mean resizing, without its 1e-9-scaled noise),
/// so the new tokens begin as an "average word". Everything else is copied.
pub fn resize_token_embeddings(
    text_encoder: &Loaded<ClipTextModel>,
    vocab_size: i64,
    device: Device,
) -> Result<Loaded<ClipTextModel>> {
    let old_config: &ClipTextConfig = text_encoder.model.config();
    let old_vocab = old_config.vocab_size;
    if vocab_size < old_vocab {
        return Err(Error::Training(format!(
            "cannot shrink the token table from {old_vocab} to {vocab_size} rows"
        )));
    }
    let mut config = old_config.clone();
    config.vocab_size = vocab_size;
    let var_store = nn::VarStore::new(device);
    // Every variable is written below (a missing one is an error), so nothing is drawn.
    let model = build_with::<ClipTextModel>(var_store.root(), &config, Init::Empty)?;
    let old = text_encoder.var_store.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in var_store.variables() {
            let src = old
                .get(&name)
                .ok_or_else(|| Error::Training(format!("text encoder variable {name} missing")))?;
            let src = src.f_to_kind(Kind::Float)?;
            if name == "embeddings.token_embedding.weight" {
                var.f_narrow(0, 0, old_vocab)?.f_copy_(&src)?;
                let mean = src.f_mean_dim([0i64].as_slice(), true, Kind::Float)?;
                var.f_narrow(0, old_vocab, vocab_size - old_vocab)?
                    .f_copy_(&mean.f_expand([vocab_size - old_vocab, -1], false)?)?;
            } else {
                var.f_copy_(&src)?;
            }
        }
        Ok(())
    })?;
    Ok(Loaded { model, var_store })
}

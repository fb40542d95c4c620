//! The end of a run: the final model written to the output folder (EMA weights when kept), a
//! new VAE's latent scaling factor measured, and a trained UNet or VAE completed into a
//! pipeline folder with the base's other components.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tch::Kind;

use super::batches::{TrainingData, epoch_order, image_batch};
use super::checkpoints::{Trained, io_err};
use super::config::{TrainConfig, TrainTarget};
use super::ema::Ema;
use super::trainer::TrainProgress;
use crate::AutoencoderKL;
use crate::error::{Error, Result};
use crate::pipelines::StableDiffusion;
use crate::weights::{PipelineFolder, read_json};

/// Writes the final model into the output folder and returns that folder.
pub(super) fn write_final_model(
    sd: &StableDiffusion,
    config: &TrainConfig,
    data: &dyn TrainingData,
    trained: &mut Trained,
    ema: Option<&Ema>,
    progress: &dyn TrainProgress,
) -> Result<PathBuf> {
    let dir = config.output.clone();
    if matches!(config.target, TrainTarget::Vae { .. }) {
        if let Some(ema) = ema {
            ema.copy_to_live()?;
        }
        let factor = latent_scaling_factor(&sd.vae.model, config, data)?;
        progress.message(&format!(
            "latent scaling factor: {factor:.5} (1 / latent std)"
        ));
        trained.components[0].1["scaling_factor"] = json!(factor);
    }
    trained.save(&dir, ema)?;
    // A trained UNet or VAE makes a new base (with its ControlNet when trained jointly):
    // complete the folder with the base's other components so it loads (and trains
    // further) as a pipeline. A ControlNet alone stays a ControlNet folder.
    let (is_pipeline, with_controlnet) = match config.target {
        TrainTarget::ControlNet { train_base, .. } => (train_base, true),
        _ => (true, false),
    };
    if is_pipeline {
        complete_pipeline(&config.base, &dir, trained, with_controlnet)?;
    }
    Ok(dir)
}

/// Latents scaled to unit variance, as Stable Diffusion's VAE scaling factor was chosen
/// (0.18215 = 1 / the std of its latents): 1 / the std of posterior samples of up to 256
/// training images, taken in a seeded order. A newly trained VAE's latents have no preset
/// scale, and the diffusion model's noise schedule assumes unit variance.
pub(super) fn latent_scaling_factor(
    vae: &AutoencoderKL,
    config: &TrainConfig,
    data: &dyn TrainingData,
) -> Result<f64> {
    let order = epoch_order(data.len(), config.seed, u64::MAX);
    let n = order.len().min(256);
    tch::manual_seed(config.seed as i64);
    let (mut sum, mut sum_sq, mut count) = (0.0, 0.0, 0.0);
    tch::no_grad(|| -> Result<()> {
        for chunk in order[..n].chunks(config.batch_size.max(1)) {
            let samples = chunk
                .iter()
                .map(|&i| data.get(i))
                .collect::<Result<Vec<_>>>()?;
            let (pixels, _) = image_batch(&samples, config, None)?;
            let z = vae.encode(&pixels)?.sample()?.f_to_kind(Kind::Double)?;
            sum += z.f_sum(Kind::Double)?.f_double_value(&[])?;
            sum_sq += z.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            count += z.numel() as f64;
        }
        Ok(())
    })?;
    let mean = sum / count;
    let std = (sum_sq / count - mean * mean).max(0.0).sqrt();
    if !std.is_finite() || std == 0.0 {
        return Err(Error::Training(format!(
            "the trained VAE's latents have std {std}: no scaling factor"
        )));
    }
    Ok(1.0 / std)
}

/// Copies `model_index.json` and every component folder of `base` that was not trained (but
/// its ControlNet) into `output` (files are copied, symlinks followed), so `output` is a
/// pipeline folder. `with_controlnet`: the ControlNet was trained with the base and is listed.
pub(super) fn complete_pipeline(
    base: &Path,
    output: &Path,
    trained: &Trained,
    with_controlnet: bool,
) -> Result<()> {
    fn copy_dir(from: &Path, to: &Path) -> Result<()> {
        std::fs::create_dir_all(to).map_err(|e| io_err(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| io_err(from, e))? {
            let entry = entry.map_err(|e| io_err(from, e))?;
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            if src.is_dir() {
                copy_dir(&src, &dst)?;
            } else {
                std::fs::copy(&src, &dst).map_err(|e| io_err(&src, e))?;
            }
        }
        Ok(())
    }
    // The base's ControlNet was trained against the old UNet: the new folder lists none
    // (`[null, null]`, as diffusers saves an absent component).
    let mut index: Value = read_json(&base.join("model_index.json"))?;
    if with_controlnet {
        index["controlnet"] = json!(["diffusers", "ControlNetModel"]);
        if let Some(class) = index["_class_name"].as_str()
            && !class.contains("ControlNet")
        {
            index["_class_name"] = json!("StableDiffusionControlNetPipeline");
        }
    } else if index.get("controlnet").is_some() {
        index["controlnet"] = json!([null, null]);
    }
    let index_path = output.join("model_index.json");
    let index_json = serde_json::to_vec_pretty(&index)
        .map_err(|e| Error::Internal(format!("model_index.json: {e}")))?;
    std::fs::write(&index_path, index_json).map_err(|e| io_err(&index_path, e))?;
    let folder = PipelineFolder::open(base)?;
    for name in ["tokenizer", "text_encoder", "unet", "vae", "scheduler"] {
        let is_trained = trained.components.iter().any(|(c, _, _)| *c == name);
        if is_trained || folder.class(name).is_none() {
            continue;
        }
        copy_dir(&folder.component(name)?, &output.join(name))?;
    }
    Ok(())
}

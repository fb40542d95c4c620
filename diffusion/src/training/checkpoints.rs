//! Checkpoints: the trained components and how their weights are saved and loaded, a
//! checkpoint's files (weights, AdamW's moments, EMA shadows, `trainer_state.json` with the
//! run's fingerprint), finding the newest, and resuming from it exactly.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tch::Tensor;

use super::adamw::AdamW;
use super::config::TrainConfig;
use super::ema::Ema;
use super::init::save_model_folder;
use crate::error::{Error, Result, TorchContext};
use crate::pipelines::StableDiffusion;
use crate::weights::{fill, find_weights, read_json};

pub(super) const STATE_FILE: &str = "trainer_state.json";

/// The newest complete checkpoint in `output` and its step.
pub fn latest_checkpoint(output: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(output)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
}

/// An I/O error of `path` as the crate reports it.
pub(super) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A trained component: its folder name, `config.json` and named variables.
pub(super) type Component = (&'static str, Value, Vec<(String, Tensor)>);

/// The trained components and how to save them.
pub(super) struct Trained {
    pub(super) components: Vec<Component>,
}

impl Trained {
    pub(super) fn params(&self) -> Vec<(String, Tensor)> {
        self.components
            .iter()
            .flat_map(|(c, _, vars)| {
                vars.iter()
                    .map(move |(n, t)| (format!("{c}.{n}"), t.shallow_clone()))
            })
            .collect()
    }

    fn stem(component: &str) -> &'static str {
        if component == "text_encoder" {
            "model"
        } else {
            "diffusion_pytorch_model"
        }
    }

    /// Writes every component under `dir`, with `ema` shadows instead of the live weights.
    pub(super) fn save(&self, dir: &Path, ema: Option<&Ema>) -> Result<()> {
        for (component, config, vars) in &self.components {
            let tensors: Vec<(String, Tensor)> = match ema {
                Some(ema) => {
                    let prefix = format!("{component}.");
                    ema.shadows()
                        .filter_map(|(n, t)| {
                            n.strip_prefix(&prefix)
                                .map(|n| (n.to_string(), t.shallow_clone()))
                        })
                        .collect()
                }
                None => vars
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
            };
            save_model_folder(
                &dir.join(component),
                config,
                Self::stem(component),
                &tensors,
            )?;
        }
        Ok(())
    }

    /// Loads the weights a checkpoint saved for every component into `sd`'s models.
    pub(super) fn load(&self, dir: &Path, sd: &StableDiffusion) -> Result<()> {
        for (component, _, _) in &self.components {
            // The components are the ones this module built from the loaded models.
            let store = match *component {
                "controlnet" => match &sd.controlnet {
                    Some(cn) => &cn.var_store,
                    None => {
                        return Err(Error::Internal(
                            "ControlNet training without a loaded ControlNet".into(),
                        ));
                    }
                },
                "unet" => &sd.unet.var_store,
                "text_encoder" => &sd.text_encoder.var_store,
                "vae" => &sd.vae.var_store,
                other => {
                    return Err(Error::Internal(format!("no trained component {other}")));
                }
            };
            let folder = dir.join(component);
            let file = find_weights(&folder, Self::stem(component), None)?;
            fill(store, &file, |k| Some(k.to_string()))?;
        }
        Ok(())
    }
}

/// The checkpoint a run resumes from (the newest in the output folder), after checking that
/// it was written with this run's settings.
pub(super) fn resume_point(config: &TrainConfig) -> Result<Option<(u64, PathBuf)>> {
    let Some((step, dir)) = latest_checkpoint(&config.output) else {
        return Ok(None);
    };
    let state: Value = read_json(&dir.join(STATE_FILE))?;
    if state["run"] != config.fingerprint() {
        return Err(Error::Training(format!(
            "{} was written by a run with other settings ({} there, {} now); resume with the \
             same settings or write to another output folder",
            dir.display(),
            state["run"],
            config.fingerprint()
        )));
    }
    Ok(Some((step, dir)))
}

/// What a checkpoint restores besides the weights: the optimizer, the EMA shadows and the
/// fp16 loss scale.
pub(super) struct OptimizerState {
    pub(super) optimizer: AdamW,
    pub(super) ema: Option<Ema>,
    pub(super) loss_scale: f64,
}

impl OptimizerState {
    /// Loads checkpoint `dir` of optimizer step `step`: weights into `sd`'s trained models,
    /// AdamW's moments and step count, the loss scale and the EMA shadows.
    pub(super) fn restore(
        &mut self,
        dir: &Path,
        step: u64,
        trained: &Trained,
        sd: &StableDiffusion,
    ) -> Result<()> {
        trained.load(dir, sd)?;
        let state: Value = read_json(&dir.join(STATE_FILE))?;
        self.optimizer.load(
            &dir.join("optimizer.safetensors"),
            state["optimizer_steps"].as_i64().unwrap_or(step as i64),
        )?;
        self.loss_scale = state["loss_scale"].as_f64().unwrap_or(self.loss_scale);
        if let Some(ema) = &mut self.ema {
            let saved: std::collections::HashMap<String, Tensor> =
                Tensor::read_safetensors(dir.join("ema.safetensors"))
                    .ctx("reading ema.safetensors")?
                    .into_iter()
                    .collect();
            ema.restore(&saved)?;
        }
        Ok(())
    }
}

/// Writes checkpoint `step` (atomically: a partial folder renamed when complete) and deletes
/// all but the newest `keep_checkpoints`.
pub(super) fn save_checkpoint(
    config: &TrainConfig,
    trained: &Trained,
    optimizer: &AdamW,
    ema: Option<&Ema>,
    step: u64,
    loss_scale: f64,
) -> Result<()> {
    let out = &config.output;
    let dir = out.join(format!("checkpoint-{step}"));
    let tmp = out.join(format!(".checkpoint-{step}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    trained.save(&tmp, None)?;
    optimizer.save(&tmp.join("optimizer.safetensors"))?;
    if let Some(ema) = ema {
        let shadows: Vec<(&str, &Tensor)> = ema.shadows().collect();
        Tensor::write_safetensors(&shadows, tmp.join("ema.safetensors"))
            .ctx("writing ema.safetensors")?;
    }
    let state = json!({
        "step": step,
        "optimizer_steps": optimizer.steps,
        "loss_scale": loss_scale,
        "run": config.fingerprint(),
    });
    let state_path = tmp.join(STATE_FILE);
    let state_json = serde_json::to_vec_pretty(&state)
        .map_err(|e| Error::Internal(format!("trainer state as JSON: {e}")))?;
    std::fs::write(&state_path, state_json).map_err(|e| io_err(&state_path, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
    // Keep the newest `keep_checkpoints`.
    let mut old: Vec<(u64, PathBuf)> = std::fs::read_dir(out)
        .map_err(|e| io_err(out, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix("checkpoint-")?.parse().ok()?, e.path()))
        })
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(config.keep_checkpoints.max(1));
    for (_, path) in old.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
    Ok(())
}

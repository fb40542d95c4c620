//! The training loop: ControlNet training on a frozen base model, or TextDiffuser-2-style UNet +
//! text-encoder fine-tuning, with gradient accumulation, warm-up and schedule, clipping,
//! caption dropout, EMA, half-precision frozen models on CUDA, checkpoints that resume
//! exactly, and validation images.
//!
//! Exact resume: every random draw of micro-batch `m` (VAE sampling, noise, timesteps, caption
//! dropout) comes from the global generator seeded with `seed + m`, and the sample order is a
//! permutation per epoch from `(seed, epoch)`. A checkpoint holds the weights, AdamW's moments,
//! the EMA shadows and the step, so a run killed after checkpoint `k` and resumed computes the
//! same steps `k+1…` as a run that never stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use image::{GrayImage, RgbImage};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::adamw::{AdamW, AdamWConfig};
use super::ema::Ema;
use super::init::{
    controlnet_config_json, controlnet_from_unet, named_variables, resize_token_embeddings,
    save_model_folder,
};
use super::lr_schedule::LrSchedule;
use super::noise::NoiseSchedule;
use super::step::{StepModels, TrainBatch, diffusion_loss, vae_loss};
use crate::controlnet::ControlNetModel;
use crate::error::{Error, Result, TorchContext};
use crate::pipelines::images::rgb_to_tensor;
use crate::pipelines::{
    ControlMode, ControlSettings, GenerationRequest, StableDiffusion, TextConditioning,
    control_tensor,
};
use crate::weights::{LoadOptions, Loaded, PipelineFolder, fill, find_weights, read_json};
use crate::{AutoencoderKL, ClipTextModel, ClipTokenizer, UNet2DConditionModel};

/// What is trained.
#[derive(Debug, Clone)]
pub enum TrainTarget {
    /// A glyph ControlNet; the base's VAE stays frozen, and its UNet and text encoder too
    /// unless `train_base`.
    ControlNet {
        /// Start from this ControlNet folder instead of a copy of the UNet's encoder.
        init: Option<PathBuf>,
        /// Channels of the control image for a new ControlNet: 1 (the mask) or 3. Default 3.
        conditioning_channels: i64,
        /// The conditioning encoder's channels for a new ControlNet. Default (16, 32, 96, 256).
        conditioning_embedding_out_channels: Vec<i64>,
        /// Train the base UNet and text encoder together with the ControlNet (on plain
        /// captions). For a model trained from scratch: a frozen, barely trained UNet gives
        /// the ControlNet little to steer, and joint training learns the glyph condition in
        /// a fraction of the steps. The output is then a whole pipeline with its ControlNet.
        train_base: bool,
    },
    /// The UNet and the text encoder, on TextDiffuser-2 input ids (caption + layout tokens).
    UNet,
    /// The VAE as an autoencoder: L1 reconstruction plus `kl_weight` × the KL divergence of
    /// the posterior from N(0, I) (the LDM recipe without its perceptual and GAN terms, which
    /// a from-scratch model of a few MB on 2 cores cannot afford). Default weight 1e-6.
    Vae {
        kl_weight: f64,
        /// Extra weight of the reconstruction error on and around the glyphs (the sample's
        /// mask, dilated by 2 pixels): a pixel there counts `1 + text_weight` times. 0 is
        /// plain L1. Glyph strokes are a small share of a poster's pixels, and a small VAE
        /// trained on the plain mean blurs them first.
        text_weight: f64,
    },
}

/// Half-precision frozen models (CUDA only): the trained weights and optimizer stay fp32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixedPrecision {
    No,
    /// fp16 frozen models and dynamic loss scaling.
    Fp16,
    Bf16,
}

/// A prompt and glyph mask rendered every `validation_every` steps.
#[derive(Debug, Clone)]
pub struct Validation {
    pub prompt: String,
    pub mask: GrayImage,
    /// TextDiffuser-2 layout tokens (UNet training).
    pub layout_tokens: Vec<Vec<String>>,
    /// Default 20.
    pub steps: usize,
    pub seed: u64,
}

/// Settings of a training run; defaults follow diffusers' `train_controlnet.py`.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The base pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, …).
    pub base: PathBuf,
    /// Checkpoints, validation images and the final model go here; rerunning resumes.
    pub output: PathBuf,
    pub target: TrainTarget,
    /// Square training resolution in pixels. Default 512.
    pub resolution: u32,
    /// Samples per micro-batch. Default 4.
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default 1.
    pub gradient_accumulation: usize,
    /// Optimizer steps in all. Default 1000.
    pub max_steps: u64,
    /// Default 1e-5 (diffusers' ControlNet default).
    pub learning_rate: f64,
    pub lr_schedule: LrSchedule,
    /// Default 0.
    pub warmup_steps: u64,
    pub adam: AdamWConfig,
    /// Default 1.0.
    pub max_grad_norm: f64,
    /// Share of captions replaced by the empty caption (classifier-free guidance). Default 0.05.
    pub caption_dropout: f64,
    /// Train on random `resolution`² crops of the images (and their glyph masks) at their own
    /// size instead of the images resized to `resolution`²: text keeps the scale it has at
    /// inference, and a model sampled at 256² can train at 128² for a quarter of the work.
    /// VAE and ControlNet targets only: TextDiffuser-2's layout tokens describe the whole
    /// image. A caption may name words a crop cut away; the glyph mask is cropped with the
    /// image, so the control condition always matches. Default false.
    pub random_crop: bool,
    /// EMA decay of the trained weights; `None` (default) keeps no average.
    pub ema_decay: Option<f64>,
    pub mixed_precision: MixedPrecision,
    /// Default 500.
    pub checkpoint_every: u64,
    /// Checkpoints kept; older ones are deleted. Default 3.
    pub keep_checkpoints: usize,
    /// Default 0 (off).
    pub validation_every: u64,
    pub validation: Option<Validation>,
    /// Default 0.
    pub seed: u64,
    pub device: Device,
    /// Stop after this many steps of this invocation (a clean stand-in for a kill at a
    /// checkpoint, for tests and time-boxed sessions). Default none.
    pub stop_after: Option<u64>,
}

impl TrainConfig {
    pub fn new(base: impl Into<PathBuf>, output: impl Into<PathBuf>, target: TrainTarget) -> Self {
        Self {
            base: base.into(),
            output: output.into(),
            target,
            resolution: 512,
            batch_size: 4,
            gradient_accumulation: 1,
            max_steps: 1000,
            learning_rate: 1e-5,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 0,
            adam: AdamWConfig::default(),
            max_grad_norm: 1.0,
            caption_dropout: 0.05,
            random_crop: false,
            ema_decay: None,
            mixed_precision: MixedPrecision::No,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            validation_every: 0,
            validation: None,
            seed: 0,
            device: Device::Cpu,
            stop_after: None,
        }
    }

    /// The settings a resumed run must share with the run that wrote the checkpoint.
    fn fingerprint(&self) -> Value {
        json!({
            // "-crops" only when cropping, so checkpoints written before crops existed resume.
            "target": format!(
                "{}{}",
                match self.target {
                    TrainTarget::ControlNet { train_base: false, .. } => "controlnet",
                    TrainTarget::ControlNet { train_base: true, .. } => "controlnet+base",
                    TrainTarget::UNet => "unet",
                    TrainTarget::Vae { .. } => "vae",
                },
                if self.random_crop { "-crops" } else { "" }
            ),
            "resolution": self.resolution,
            "batch_size": self.batch_size,
            "gradient_accumulation": self.gradient_accumulation,
            "seed": self.seed,
            "ema": self.ema_decay.is_some(),
        })
    }
}

/// One training sample as decoded by the caller's dataset.
#[derive(Debug, Clone)]
pub struct TrainingSample {
    pub image: RgbImage,
    /// The glyph mask, white on black.
    pub mask: GrayImage,
    pub caption: String,
    /// TextDiffuser-2 layout tokens per text line (UNet training; may be empty otherwise).
    pub layout_tokens: Vec<Vec<String>>,
}

/// Random access to the training set (dataset shards in the CLI).
pub trait TrainingData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get(&self, index: usize) -> Result<TrainingSample>;
}

/// Receives progress (the CLI draws a bar with loss and it/s).
pub trait TrainProgress {
    fn start(&self, _first_step: u64, _max_steps: u64) {}
    fn step(&self, _step: u64, _loss: f64, _lr: f64) {}
    fn message(&self, _message: &str) {}
}

/// No progress output.
pub struct NoTrainProgress;
impl TrainProgress for NoTrainProgress {}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The step the run started from (0, or the resumed checkpoint's).
    pub resumed_from: u64,
    /// Optimizer steps completed in all.
    pub steps: u64,
    /// Loss of each step of this invocation.
    pub losses: Vec<f64>,
    /// Where the final model was written, when `max_steps` was reached.
    pub model_dir: Option<PathBuf>,
}

const STATE_FILE: &str = "trainer_state.json";

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

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A permutation of `0..n` from `(seed, epoch)` (Fisher–Yates over SplitMix64).
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut state = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// A trained component: its folder name, `config.json` and named variables.
type Component = (&'static str, Value, Vec<(String, Tensor)>);

/// The trained components and how to save them.
struct Trained {
    components: Vec<Component>,
}

impl Trained {
    fn params(&self) -> Vec<(String, Tensor)> {
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
    fn save(&self, dir: &Path, ema: Option<&Ema>) -> Result<()> {
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
    fn load(&self, dir: &Path, sd: &StableDiffusion) -> Result<()> {
        for (component, _, _) in &self.components {
            let store = match *component {
                "controlnet" => {
                    &sd.controlnet
                        .as_ref()
                        .expect("ControlNet training has a ControlNet")
                        .var_store
                }
                "unet" => &sd.unet.var_store,
                "text_encoder" => &sd.text_encoder.var_store,
                "vae" => &sd.vae.var_store,
                other => unreachable!("no trained component {other}"),
            };
            let folder = dir.join(component);
            let file = find_weights(&folder, Self::stem(component), None)?;
            fill(store, &file, |k| Some(k.to_string()))?;
        }
        Ok(())
    }
}

/// The base pipeline's components, without its ControlNet and without the tokenizer/text
/// encoder agreement check of inference: `train unet` grows the token table itself.
fn load_base(dir: &Path, options: &LoadOptions) -> Result<StableDiffusion> {
    let folder = PipelineFolder::open(dir)?;
    Ok(StableDiffusion {
        tokenizer: ClipTokenizer::from_dir(&folder.component("tokenizer")?)?,
        text_encoder: folder.load::<ClipTextModel>("text_encoder", options)?,
        unet: folder.load::<UNet2DConditionModel>("unet", options)?,
        vae: folder.load::<AutoencoderKL>("vae", options)?,
        controlnet: None,
        scheduler_config: read_json(&folder.component("scheduler")?.join("scheduler_config.json"))?,
        model_name: dir
            .file_name()
            .map_or_else(|| "base".into(), |n| n.to_string_lossy().into_owned()),
        device: options.device,
        kind: options.kind(),
    })
}

/// Trains (or resumes training) as `config` says, on `data`.
pub fn train(
    config: &TrainConfig,
    data: &dyn TrainingData,
    progress: &dyn TrainProgress,
) -> Result<TrainReport> {
    check(config, data)?;
    std::fs::create_dir_all(&config.output).map_err(|e| io_err(&config.output, e))?;
    let options = LoadOptions {
        device: config.device,
        kind: Some(Kind::Float),
        variant: None,
    };
    let mut sd = load_base(&config.base, &options)?;
    let schedule = NoiseSchedule::new(&sd.scheduler_config)?;
    let resume = latest_checkpoint(&config.output);
    if let Some((step, dir)) = &resume {
        let state: Value = read_json(&dir.join(STATE_FILE))?;
        if state["run"] != config.fingerprint() {
            return Err(Error::Training(format!(
                "{} was written by a run with other settings ({} there, {} now); use the same \
                 options or another --out",
                dir.display(),
                state["run"],
                config.fingerprint()
            )));
        }
        progress.message(&format!("resuming from checkpoint-{step}"));
    }

    // The trained components.
    let unet_config: Value = read_json(&config.base.join("unet").join("config.json"))?;
    let mut trained = match &config.target {
        TrainTarget::ControlNet {
            init,
            conditioning_channels,
            conditioning_embedding_out_channels,
            train_base,
        } => {
            let (cn, cn_config) = match init {
                Some(dir) => {
                    let cn_config: Value = read_json(&dir.join("config.json"))?;
                    (
                        crate::weights::load::<ControlNetModel>(dir, &options)?,
                        cn_config,
                    )
                }
                None => {
                    let c = controlnet_config_json(
                        &unet_config,
                        *conditioning_channels,
                        conditioning_embedding_out_channels,
                    );
                    // The conditioning encoder's first layers are random: seeded, so a run
                    // and its resumed twin start alike.
                    tch::manual_seed(config.seed as i64);
                    (controlnet_from_unet(&sd.unet, &c, config.device)?, c)
                }
            };
            let vars = named_variables(&cn.var_store);
            sd.controlnet = Some(cn);
            let mut components = vec![("controlnet", cn_config, vars)];
            if *train_base {
                let te_config: Value =
                    read_json(&config.base.join("text_encoder").join("config.json"))?;
                components.push((
                    "unet",
                    unet_config.clone(),
                    named_variables(&sd.unet.var_store),
                ));
                components.push((
                    "text_encoder",
                    te_config,
                    named_variables(&sd.text_encoder.var_store),
                ));
            }
            Trained { components }
        }
        TrainTarget::UNet => {
            let mut te_config: Value =
                read_json(&config.base.join("text_encoder").join("config.json"))?;
            let vocab = sd.text_encoder.model.config().vocab_size;
            let tokens = sd.tokenizer.len() as i64;
            if tokens > vocab {
                // A plain SD base with TextDiffuser-2's tokenizer: grow the token table, as
                // TextDiffuser-2's training script does before it starts.
                sd.text_encoder = resize_token_embeddings(&sd.text_encoder, tokens, config.device)?;
                te_config["vocab_size"] = json!(tokens);
                progress.message(&format!(
                    "text encoder token table resized from {vocab} to {tokens} rows"
                ));
            }
            Trained {
                components: vec![
                    (
                        "unet",
                        unet_config.clone(),
                        named_variables(&sd.unet.var_store),
                    ),
                    (
                        "text_encoder",
                        te_config,
                        named_variables(&sd.text_encoder.var_store),
                    ),
                ],
            }
        }
        TrainTarget::Vae { .. } => {
            let vae_config: Value = read_json(&config.base.join("vae").join("config.json"))?;
            Trained {
                components: vec![("vae", vae_config, named_variables(&sd.vae.var_store))],
            }
        }
    };
    set_trainable(&mut sd, &config.target, config.mixed_precision)?;
    let params = trained.params();
    let mut optimizer = AdamW::new(
        params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        config.adam,
    )?;
    let mut ema = match config.ema_decay {
        Some(decay) => Some(Ema::new(decay, &params)?),
        None => None,
    };
    let mut loss_scale = if config.mixed_precision == MixedPrecision::Fp16 {
        65536.0
    } else {
        1.0
    };
    let mut step = 0;
    if let Some((s, dir)) = &resume {
        trained.load(dir, &sd)?;
        let state: Value = read_json(&dir.join(STATE_FILE))?;
        optimizer.load(
            &dir.join("optimizer.safetensors"),
            state["optimizer_steps"].as_i64().unwrap_or(*s as i64),
        )?;
        loss_scale = state["loss_scale"].as_f64().unwrap_or(loss_scale);
        if let Some(ema) = &mut ema {
            let saved: std::collections::HashMap<String, Tensor> =
                Tensor::read_safetensors(dir.join("ema.safetensors"))
                    .ctx("reading ema.safetensors")?
                    .into_iter()
                    .collect();
            ema.restore(&saved)?;
        }
        step = *s;
    }
    let resumed_from = step;
    progress.start(step, config.max_steps);

    let mut losses = Vec::new();
    let mut order_epoch = u64::MAX;
    let mut order = Vec::new();
    let accum = config.gradient_accumulation as u64;
    let bs = config.batch_size as u64;
    while step < config.max_steps {
        if config.stop_after.is_some_and(|n| step - resumed_from >= n) {
            break;
        }
        let lr = config.learning_rate
            * config
                .lr_schedule
                .factor(step, config.warmup_steps, config.max_steps);
        let mut step_loss = 0.0;
        for micro in 0..accum {
            let m = step * accum + micro;
            tch::manual_seed((config.seed.wrapping_add(m)) as i64);
            let mut samples = Vec::with_capacity(config.batch_size);
            for j in 0..bs {
                let i = m * bs + j;
                let (epoch, pos) = (i / data.len() as u64, (i % data.len() as u64) as usize);
                if epoch != order_epoch {
                    order = epoch_order(data.len(), config.seed, epoch);
                    order_epoch = epoch;
                }
                samples.push(data.get(order[pos])?);
            }
            let loss = if let TrainTarget::Vae {
                kl_weight,
                text_weight,
            } = config.target
            {
                // Masks only where they weigh the loss (plain L1 at text weight 0).
                let (pixels, text) =
                    image_batch(&samples, config, (text_weight != 0.0).then_some(1))?;
                let weights = text.map(|m| text_weights(&m, text_weight)).transpose()?;
                vae_loss(&sd.vae.model, &pixels, kl_weight, weights.as_ref())?
            } else {
                let batch = make_batch(&sd, config, &schedule, &samples)?;
                let models = StepModels {
                    text_encoder: &sd.text_encoder.model,
                    unet: &sd.unet.model,
                    controlnet: sd.controlnet.as_ref().map(|c| &c.model),
                    schedule: &schedule,
                };
                diffusion_loss(&models, &batch)?
            };
            step_loss += loss.f_double_value(&[])? / accum as f64;
            loss.f_div_scalar(accum as f64 / loss_scale)?
                .f_backward()
                .ctx("backward pass")?;
        }
        if loss_scale != 1.0 {
            if !optimizer.grads_finite()? {
                // fp16 overflow: skip the step with a smaller scale (torch's GradScaler).
                loss_scale /= 2.0;
                optimizer.zero_grad();
                progress.message(&format!("fp16 overflow: loss scale now {loss_scale}"));
                continue;
            }
            optimizer.scale_grads(1.0 / loss_scale)?;
        }
        optimizer.clip_grad_norm(config.max_grad_norm)?;
        optimizer.step(lr)?;
        optimizer.zero_grad();
        if let Some(ema) = &mut ema {
            ema.update()?;
        }
        step += 1;
        losses.push(step_loss);
        progress.step(step, step_loss, lr);
        if step % config.checkpoint_every == 0 || step == config.max_steps {
            save_checkpoint(config, &trained, &optimizer, ema.as_ref(), step, loss_scale)?;
        }
        if config.validation_every > 0
            && step % config.validation_every == 0
            && !matches!(config.target, TrainTarget::Vae { .. })
            && let Some(v) = &config.validation
        {
            validate(&sd, config, v, step)?;
        }
    }
    let model_dir = if step >= config.max_steps {
        let dir = config.output.clone();
        if matches!(config.target, TrainTarget::Vae { .. }) {
            if let Some(ema) = &ema {
                ema.copy_to_live()?;
            }
            let factor = latent_scaling_factor(&sd.vae.model, config, data)?;
            progress.message(&format!(
                "latent scaling factor: {factor:.5} (1 / latent std)"
            ));
            trained.components[0].1["scaling_factor"] = json!(factor);
        }
        trained.save(&dir, ema.as_ref())?;
        // A trained UNet or VAE makes a new base (with its ControlNet when trained jointly):
        // complete the folder with the base's other components so it loads (and trains
        // further) as a pipeline. A ControlNet alone stays a ControlNet folder.
        let (is_pipeline, with_controlnet) = match config.target {
            TrainTarget::ControlNet { train_base, .. } => (train_base, true),
            _ => (true, false),
        };
        if is_pipeline {
            complete_pipeline(&config.base, &dir, &trained, with_controlnet)?;
        }
        Some(dir)
    } else {
        None
    };
    Ok(TrainReport {
        resumed_from,
        steps: step,
        losses,
        model_dir,
    })
}

/// Latents scaled to unit variance, as Stable Diffusion's VAE scaling factor was chosen
/// (0.18215 = 1 / the std of its latents): 1 / the std of posterior samples of up to 256
/// training images, taken in a seeded order. A newly trained VAE's latents have no preset
/// scale, and the diffusion model's noise schedule assumes unit variance.
fn latent_scaling_factor(
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
fn complete_pipeline(
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
    std::fs::write(
        &index_path,
        serde_json::to_vec_pretty(&index).expect("JSON values serialise"),
    )
    .map_err(|e| io_err(&index_path, e))?;
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

fn check(config: &TrainConfig, data: &dyn TrainingData) -> Result<()> {
    let bad = |m: String| Err(Error::Training(m));
    if data.is_empty() {
        return bad("the training set is empty".into());
    }
    if config.batch_size == 0 || config.gradient_accumulation == 0 {
        return bad("batch size and gradient accumulation must be at least 1".into());
    }
    if config.max_steps == 0 || config.checkpoint_every == 0 {
        return bad("max steps and checkpoint interval must be at least 1".into());
    }
    if config.resolution == 0 || config.resolution % 64 != 0 {
        return bad(format!(
            "resolution {} must be a positive multiple of 64",
            config.resolution
        ));
    }
    if !(0.0..=1.0).contains(&config.caption_dropout) {
        return bad(format!(
            "caption dropout {} is outside 0..=1",
            config.caption_dropout
        ));
    }
    if let TrainTarget::Vae {
        kl_weight,
        text_weight,
        ..
    } = config.target
        && !(kl_weight >= 0.0 && text_weight >= 0.0)
    {
        return bad(format!(
            "KL weight {kl_weight} and text weight {text_weight} must be at least 0"
        ));
    }
    if config.random_crop && matches!(config.target, TrainTarget::UNet) {
        return bad(
            "random crops are for VAE and ControlNet training: TextDiffuser-2's layout tokens \
             describe the whole image"
                .into(),
        );
    }
    if let Some(d) = config.ema_decay
        && !(0.0..1.0).contains(&d)
    {
        return bad(format!("EMA decay {d} is outside 0..1"));
    }
    if config.mixed_precision != MixedPrecision::No && !config.device.is_cuda() {
        return bad("mixed precision needs a CUDA device (on CPU, training runs in fp32)".into());
    }
    Ok(())
}

/// Freezes what is not trained, unfreezes what is, and casts frozen models to half precision
/// when asked.
fn set_trainable(
    sd: &mut StableDiffusion,
    target: &TrainTarget,
    mixed: MixedPrecision,
) -> Result<()> {
    let half = match mixed {
        MixedPrecision::No => None,
        MixedPrecision::Fp16 => Some(Kind::Half),
        MixedPrecision::Bf16 => Some(Kind::BFloat16),
    };
    let freeze = |l: &mut tch::nn::VarStore| {
        l.freeze();
        if let Some(k) = half {
            l.set_kind(k);
        }
    };
    match target {
        TrainTarget::Vae { .. } => {
            freeze(&mut sd.unet.var_store);
            freeze(&mut sd.text_encoder.var_store);
            sd.vae.var_store.unfreeze();
            return Ok(());
        }
        _ => freeze(&mut sd.vae.var_store),
    }
    match target {
        TrainTarget::ControlNet { train_base, .. } => {
            if *train_base {
                sd.unet.var_store.unfreeze();
                sd.text_encoder.var_store.unfreeze();
            } else {
                freeze(&mut sd.unet.var_store);
                freeze(&mut sd.text_encoder.var_store);
            }
            let cn: &mut Loaded<ControlNetModel> = sd
                .controlnet
                .as_mut()
                .expect("ControlNet training has a ControlNet");
            cn.var_store.unfreeze();
        }
        TrainTarget::UNet => {
            sd.unet.var_store.unfreeze();
            sd.text_encoder.var_store.unfreeze();
        }
        TrainTarget::Vae { .. } => {}
    }
    Ok(())
}

/// The images of a micro-batch (`[B, 3, r, r]` in [-1, 1]) and, for `Some(mask_channels)`,
/// their glyph masks as control images (`[B, mask_channels, r, r]` in [0, 1]): resized to `r`², or, with
/// `config.random_crop`, the same random `r`² crop of both at the images' own size (an image
/// smaller than `r` is resized up first). Crop offsets come from torch's generator, seeded per
/// micro-batch, so a resumed run crops as the uninterrupted one did.
fn image_batch(
    samples: &[TrainingSample],
    config: &TrainConfig,
    mask_channels: Option<i64>,
) -> Result<(Tensor, Option<Tensor>)> {
    let r = config.resolution;
    let mut pixels = Vec::with_capacity(samples.len());
    let mut masks = Vec::with_capacity(samples.len());
    for s in samples {
        let (w, h) = if config.random_crop {
            (s.image.width().max(r), s.image.height().max(r))
        } else {
            (r, r)
        };
        let image = rgb_to_tensor(&s.image, w, h);
        let (x, y) = if config.random_crop {
            let draw = |n: u32| -> Result<i64> {
                Ok(
                    Tensor::f_randint(i64::from(n - r + 1), [1], (Kind::Int64, Device::Cpu))?
                        .f_int64_value(&[0])?,
                )
            };
            (draw(w)?, draw(h)?)
        } else {
            (0, 0)
        };
        let crop = |t: &Tensor| -> Result<Tensor> {
            Ok(t.f_narrow(3, x, i64::from(r))?
                .f_narrow(2, y, i64::from(r))?)
        };
        pixels.push(crop(&image)?);
        if let Some(channels) = mask_channels {
            masks.push(crop(&control_tensor(
                &s.mask,
                ControlMode::Mask,
                w,
                h,
                channels,
            ))?);
        }
    }
    let masks = match mask_channels {
        Some(_) => Some(Tensor::f_cat(&masks, 0)?.f_to_device(config.device)?),
        None => None,
    };
    Ok((
        Tensor::f_cat(&pixels, 0)?.f_to_device(config.device)?,
        masks,
    ))
}

/// Per-pixel loss weights `1 + text_weight × (mask dilated by 2 px)`.
fn text_weights(mask: &Tensor, text_weight: f64) -> Result<Tensor> {
    let near_text = mask.f_max_pool2d([5, 5], [1, 1], [2, 2], [1, 1], false)?;
    Ok(near_text.f_mul_scalar(text_weight)?.f_add_scalar(1.0)?)
}

/// Decodes a micro-batch into tensors and draws its noise, timesteps and caption dropout.
fn make_batch(
    sd: &StableDiffusion,
    config: &TrainConfig,
    schedule: &NoiseSchedule,
    samples: &[TrainingSample],
) -> Result<TrainBatch> {
    let device = config.device;
    let unet_training = matches!(config.target, TrainTarget::UNet);
    let control_channels = sd
        .controlnet
        .as_ref()
        .map(|cn| cn.model.config().conditioning_channels);
    let (pixels, control) = image_batch(samples, config, control_channels)?;
    let latents = tch::no_grad(|| -> Result<Tensor> {
        let dist = sd.vae.model.encode(&pixels)?;
        Ok(dist
            .sample()?
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(sd.vae.model.config().scaling_factor)?)
    })?;
    let noise = Tensor::f_randn(latents.size(), (Kind::Float, Device::Cpu))?.f_to_device(device)?;
    let timesteps = schedule.sample_timesteps(samples.len() as i64, device);
    let drop = Tensor::f_rand([samples.len() as i64], (Kind::Float, Device::Cpu))?;
    let mut ids = Vec::with_capacity(samples.len() * 77);
    for (i, s) in samples.iter().enumerate() {
        let dropped = drop.f_double_value(&[i as i64])? < config.caption_dropout;
        let row = match (unet_training, dropped) {
            // TextDiffuser-2's unconditional input: all eos.
            (true, true) => vec![sd.tokenizer.eos_id(); sd.tokenizer.max_length()],
            (true, false) => sd
                .tokenizer
                .textdiffuser2_input_ids(&s.caption, &s.layout_tokens),
            (false, true) => sd.tokenizer.encode_padded(""),
            (false, false) => sd.tokenizer.encode_padded(&s.caption),
        };
        ids.extend(row);
    }
    let input_ids = Tensor::from_slice(&ids)
        .f_reshape([samples.len() as i64, -1])?
        .f_to_device(device)?;
    Ok(TrainBatch {
        latents,
        noise,
        timesteps,
        input_ids,
        control,
    })
}

fn save_checkpoint(
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
    std::fs::write(
        &state_path,
        serde_json::to_vec_pretty(&state).expect("JSON"),
    )
    .map_err(|e| io_err(&state_path, e))?;
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

/// Renders the validation prompt with the current weights into `validation/step-N.png`.
fn validate(sd: &StableDiffusion, config: &TrainConfig, v: &Validation, step: u64) -> Result<()> {
    let mut request = GenerationRequest::new(v.prompt.clone());
    request.width = config.resolution;
    request.height = config.resolution;
    request.steps = v.steps;
    request.seed = Some(v.seed);
    if sd.controlnet.is_some() {
        request.control = Some(ControlSettings::new(v.mask.clone()));
    }
    if matches!(config.target, TrainTarget::UNet) {
        request.conditioning = TextConditioning::TextDiffuser2 {
            layout_tokens: v.layout_tokens.clone(),
        };
    }
    let generation = sd.generate(&request, &|_| {}, &AtomicBool::new(false))?;
    let dir = config.output.join("validation");
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    for (i, image) in generation.images.iter().enumerate() {
        let path = dir.join(format!("step-{step:06}-{i}.png"));
        image
            .to_rgb8()?
            .save(&path)
            .map_err(|e| io_err(&path, std::io::Error::other(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random crop takes the same window of the image and of its glyph mask, inside the
    /// image, at offsets that vary; without cropping the batch is the image resized.
    #[test]
    fn random_crops_cut_image_and_mask_alike() {
        // Seeds and draws: held so that no seeded draw of another test lands in between.
        let _turn = crate::global_generator();
        // Red encodes x and green y; the mask is on where (x + y) % 3 == 0.
        let (w, h) = (200u32, 150u32);
        let image = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let mask = GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if (x + y) % 3 == 0 { 255 } else { 0 }])
        });
        let sample = TrainingSample {
            image,
            mask,
            caption: "a poster".into(),
            layout_tokens: Vec::new(),
        };
        let mut config = TrainConfig::new("base", "out", TrainTarget::UNet);
        config.resolution = 64;
        config.random_crop = true;
        tch::manual_seed(3);
        let samples = vec![
            sample.clone(),
            sample.clone(),
            sample.clone(),
            sample.clone(),
        ];
        let (pixels, masks) = image_batch(&samples, &config, Some(3)).unwrap();
        let masks = masks.expect("masks asked for");
        assert_eq!(pixels.size(), [4, 3, 64, 64]);
        assert_eq!(masks.size(), [4, 3, 64, 64]);
        let value = |t: &Tensor| ((t + 1.0) * 127.5).round();
        let xs = value(&pixels.narrow(1, 0, 1));
        let ys = value(&pixels.narrow(1, 1, 1));
        // Each crop is a window of the original at the image's own scale …
        let dx = xs.narrow(3, 1, 63) - xs.narrow(3, 0, 63);
        let dy = ys.narrow(2, 1, 63) - ys.narrow(2, 0, 63);
        for d in [dx, dy] {
            assert_eq!(d.min().double_value(&[]), 1.0);
            assert_eq!(d.max().double_value(&[]), 1.0);
        }
        let x0 = xs.amin([1, 2, 3], false);
        let y0 = ys.amin([1, 2, 3], false);
        assert!(x0.max().double_value(&[]) <= f64::from(w - 64));
        assert!(y0.max().double_value(&[]) <= f64::from(h - 64));
        assert!(
            x0.max().double_value(&[]) > x0.min().double_value(&[]),
            "crop offsets vary"
        );
        // … and its mask is the same window of the mask, in every channel.
        let expected = (xs + ys).fmod(3.0).eq(0.0).to_kind(Kind::Float);
        for c in 0..3 {
            assert!(masks.narrow(1, c, 1).equal(&expected), "mask channel {c}");
        }
        // Without random crops: the whole image, resized, and no draw from the generator.
        config.random_crop = false;
        tch::manual_seed(9);
        let (resized, _) = image_batch(&samples[..1], &config, Some(1)).unwrap();
        assert!(resized.allclose(&rgb_to_tensor(&sample.image, 64, 64), 0.0, 0.0, false));
        let after = Tensor::randint(1000, [4], (Kind::Int64, Device::Cpu));
        tch::manual_seed(9);
        assert!(after.equal(&Tensor::randint(1000, [4], (Kind::Int64, Device::Cpu))));
    }

    #[test]
    fn random_crops_are_refused_for_textdiffuser2_training() {
        struct One;
        impl TrainingData for One {
            fn len(&self) -> usize {
                1
            }
            fn get(&self, _: usize) -> Result<TrainingSample> {
                unreachable!("refused before reading")
            }
        }
        let mut config = TrainConfig::new("base", "out", TrainTarget::UNet);
        config.resolution = 64;
        config.random_crop = true;
        let err = check(&config, &One).unwrap_err();
        assert!(err.to_string().contains("layout tokens"), "{err}");
    }

    #[test]
    fn epoch_orders_are_permutations_that_differ_by_epoch() {
        let a = epoch_order(50, 3, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 3, 0));
        assert_ne!(a, epoch_order(50, 3, 1));
    }
}

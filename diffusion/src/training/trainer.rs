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

use serde_json::{Value, json};
use tch::Kind;

use super::adamw::AdamW;
use super::batches::{
    Sampler, TrainingData, TrainingSample, image_batch, make_batch, text_weights,
};
use super::checkpoints::{OptimizerState, Trained, io_err, resume_point, save_checkpoint};
use super::config::{MixedPrecision, TrainConfig, TrainTarget, Validation, check, check_crops};
use super::ema::Ema;
use super::finish::write_final_model;
use super::init::{
    controlnet_config_json, controlnet_from_unet, named_variables, resize_token_embeddings,
};
use super::noise::NoiseSchedule;
use super::step::{StepModels, diffusion_loss, vae_loss};
use crate::controlnet::ControlNetModel;
use crate::error::{Error, Result, TorchContext};
use crate::pipelines::{ControlSettings, GenerationRequest, StableDiffusion, TextConditioning};
use crate::weights::{LoadOptions, Loaded, PipelineFolder, read_json};
use crate::{AutoencoderKL, ClipTextModel, ClipTokenizer, UNet2DConditionModel};

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
    check_crops(config, sd.tokenizer.has_layout_tokens())?;
    let schedule = NoiseSchedule::new(&sd.scheduler_config)?;
    let resume = resume_point(config)?;
    if let Some((step, _)) = &resume {
        progress.message(&format!("resuming from checkpoint-{step}"));
    }
    let mut trained = trained_components(&mut sd, config, &options, progress)?;
    set_trainable(&mut sd, &config.target, config.mixed_precision)?;
    let mut state = optimizer_state(&trained, config)?;
    let mut step = 0;
    if let Some((s, dir)) = &resume {
        state.restore(dir, *s, &trained, &sd)?;
        step = *s;
    }
    let resumed_from = step;
    progress.start(step, config.max_steps);

    let mut losses = Vec::new();
    let mut sampler = Sampler::new();
    let accum = config.gradient_accumulation as u64;
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
            let samples = sampler.micro_batch(data, config, m)?;
            let loss = micro_batch_loss(&sd, config, &schedule, &samples)?;
            step_loss += loss.f_double_value(&[])? / accum as f64;
            loss.f_div_scalar(accum as f64 / state.loss_scale)?
                .f_backward()
                .ctx("backward pass")?;
        }
        if !apply_gradients(&mut state, config, lr, progress)? {
            continue;
        }
        step += 1;
        losses.push(step_loss);
        progress.step(step, step_loss, lr);
        after_step(&sd, config, &trained, &state, step)?;
    }
    let model_dir = if step >= config.max_steps {
        Some(write_final_model(
            &sd,
            config,
            data,
            &mut trained,
            state.ema.as_ref(),
            progress,
        )?)
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

/// The trained components of `config.target`: a ControlNet (see [`controlnet_components`]),
/// the UNet and text encoder (the token table grown for TextDiffuser-2's tokenizer when
/// needed), or the VAE.
fn trained_components(
    sd: &mut StableDiffusion,
    config: &TrainConfig,
    options: &LoadOptions,
    progress: &dyn TrainProgress,
) -> Result<Trained> {
    let unet_config: Value = read_json(&config.base.join("unet").join("config.json"))?;
    let component_config =
        |name: &str| -> Result<Value> { read_json(&config.base.join(name).join("config.json")) };
    Ok(match &config.target {
        TrainTarget::ControlNet { .. } => controlnet_components(sd, config, options, unet_config)?,
        TrainTarget::UNet => {
            let mut te_config = component_config("text_encoder")?;
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
        TrainTarget::Vae { .. } => Trained {
            components: vec![(
                "vae",
                component_config("vae")?,
                named_variables(&sd.vae.var_store),
            )],
        },
    })
}

/// A ControlNet target's components: the ControlNet (from its folder, or a new one copied
/// from the UNet's encoder) and, when trained jointly, the base UNet and text encoder.
fn controlnet_components(
    sd: &mut StableDiffusion,
    config: &TrainConfig,
    options: &LoadOptions,
    unet_config: Value,
) -> Result<Trained> {
    let TrainTarget::ControlNet {
        init,
        conditioning_channels,
        conditioning_embedding_out_channels,
        train_base,
    } = &config.target
    else {
        return Err(Error::Internal(
            "ControlNet components of another target".into(),
        ));
    };
    if sd.glyph_input_factor().is_some() {
        return Err(Error::Training(
            "this UNet reads the glyph mask as input channels itself: train it with `train \
             unet`, without a ControlNet"
                .into(),
        ));
    }
    let (cn, cn_config) = match init {
        Some(dir) => {
            let cn_config: Value = read_json(&dir.join("config.json"))?;
            (
                crate::weights::load::<ControlNetModel>(dir, options)?,
                cn_config,
            )
        }
        None => {
            let c = controlnet_config_json(
                &unet_config,
                *conditioning_channels,
                conditioning_embedding_out_channels,
            );
            // The conditioning encoder's first layers are random: seeded, so a run and its
            // resumed twin start alike.
            tch::manual_seed(config.seed as i64);
            (controlnet_from_unet(&sd.unet, &c, config.device)?, c)
        }
    };
    let vars = named_variables(&cn.var_store);
    sd.controlnet = Some(cn);
    let mut components = vec![("controlnet", cn_config, vars)];
    if *train_base {
        let te_config = read_json(&config.base.join("text_encoder").join("config.json"))?;
        components.push(("unet", unet_config, named_variables(&sd.unet.var_store)));
        components.push((
            "text_encoder",
            te_config,
            named_variables(&sd.text_encoder.var_store),
        ));
    }
    Ok(Trained { components })
}

/// A fresh AdamW over the trained parameters, the EMA shadows when kept, and the initial
/// loss scale (65536 for fp16, as torch's GradScaler starts).
fn optimizer_state(trained: &Trained, config: &TrainConfig) -> Result<OptimizerState> {
    let params = trained.params();
    let optimizer = AdamW::new(
        params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        config.adam,
    )?;
    let ema = match config.ema_decay {
        Some(decay) => Some(Ema::new(decay, &params)?),
        None => None,
    };
    let loss_scale = if config.mixed_precision == MixedPrecision::Fp16 {
        65536.0
    } else {
        1.0
    };
    Ok(OptimizerState {
        optimizer,
        ema,
        loss_scale,
    })
}

/// The loss of one micro-batch: the VAE's reconstruction loss, or the diffusion loss.
fn micro_batch_loss(
    sd: &StableDiffusion,
    config: &TrainConfig,
    schedule: &NoiseSchedule,
    samples: &[TrainingSample],
) -> Result<tch::Tensor> {
    if let TrainTarget::Vae {
        kl_weight,
        text_weight,
    } = config.target
    {
        // Masks only where they weigh the loss (plain L1 at text weight 0).
        let (pixels, text) = image_batch(samples, config, (text_weight != 0.0).then_some(1))?;
        let weights = text.map(|m| text_weights(&m, text_weight)).transpose()?;
        return vae_loss(&sd.vae.model, &pixels, kl_weight, weights.as_ref());
    }
    let batch = make_batch(sd, config, schedule, samples)?;
    let models = StepModels {
        text_encoder: &sd.text_encoder.model,
        unet: &sd.unet.model,
        controlnet: sd.controlnet.as_ref().map(|c| &c.model),
        schedule,
    };
    diffusion_loss(&models, &batch)
}

/// Unscales, clips and applies the accumulated gradients, then updates the EMA. Returns
/// false for an fp16 overflow: the step is skipped with a halved loss scale (torch's
/// GradScaler).
fn apply_gradients(
    state: &mut OptimizerState,
    config: &TrainConfig,
    lr: f64,
    progress: &dyn TrainProgress,
) -> Result<bool> {
    let optimizer = &mut state.optimizer;
    if state.loss_scale != 1.0 {
        if !optimizer.grads_finite()? {
            state.loss_scale /= 2.0;
            optimizer.zero_grad();
            progress.message(&format!(
                "fp16 overflow: loss scale now {}",
                state.loss_scale
            ));
            return Ok(false);
        }
        optimizer.scale_grads(1.0 / state.loss_scale)?;
    }
    optimizer.clip_grad_norm(config.max_grad_norm)?;
    optimizer.step(lr)?;
    optimizer.zero_grad();
    if let Some(ema) = &mut state.ema {
        ema.update()?;
    }
    Ok(true)
}

/// The checkpoint and validation images due after optimizer step `step`.
fn after_step(
    sd: &StableDiffusion,
    config: &TrainConfig,
    trained: &Trained,
    state: &OptimizerState,
    step: u64,
) -> Result<()> {
    if step % config.checkpoint_every == 0 || step == config.max_steps {
        save_checkpoint(
            config,
            trained,
            &state.optimizer,
            state.ema.as_ref(),
            step,
            state.loss_scale,
        )?;
    }
    if config.validation_every > 0
        && step % config.validation_every == 0
        && !matches!(config.target, TrainTarget::Vae { .. })
        && let Some(v) = &config.validation
    {
        validate(sd, config, v, step)?;
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
            let cn: &mut Loaded<ControlNetModel> = sd.controlnet.as_mut().ok_or_else(|| {
                Error::Internal("ControlNet training without a loaded ControlNet".into())
            })?;
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

/// Renders the validation prompt with the current weights into `validation/step-N.png`.
fn validate(sd: &StableDiffusion, config: &TrainConfig, v: &Validation, step: u64) -> Result<()> {
    let mut request = GenerationRequest::new(v.prompt.clone());
    request.width = config.resolution;
    request.height = config.resolution;
    request.steps = v.steps;
    request.seed = Some(v.seed);
    if sd.reads_glyph_mask() {
        request.control = Some(ControlSettings::new(v.mask.clone()));
    }
    if matches!(config.target, TrainTarget::UNet) && sd.tokenizer.has_layout_tokens() {
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

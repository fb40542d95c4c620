//! `letterpress train controlnet|unet`: the CLI over `letterpress_diffusion::training`, reading
//! the shards `letterpress dataset build|synth` write.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_diffusion::training::{
    self, AdamWConfig, LrSchedule, MixedPrecision, TrainConfig, TrainProgress, TrainTarget,
    TrainingData, TrainingSample, Validation,
};
use letterpress_layout::{layout_tokens, td2};
use letterpress_ocr::dataset::{ShardSample, read_samples};

use crate::device::parse_device;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train a glyph ControlNet on dataset shards; the base UNet, VAE and text encoder stay
    /// frozen (or, with --train-base, the UNet and text encoder train with it). The ControlNet
    /// starts as a copy of the UNet's encoder with zeroed zero convolutions (or from --init).
    Controlnet(ControlNetArgs),
    /// Fine-tune the UNet and the text encoder on TextDiffuser-2 input ids (caption + layout
    /// tokens), as TextDiffuser-2 was trained; a text encoder with fewer token rows than
    /// TextDiffuser-2's tokenizer is grown to match. With a plain CLIP tokenizer the captions
    /// alone (a UNet that reads the glyph mask as input channels: models/README.md).
    Unet(CommonArgs),
    /// Train the VAE as an autoencoder (L1 reconstruction + a small KL term), e.g. from the
    /// random initialisation of a small model (models/README.md).
    Vae(VaeArgs),
}

#[derive(Args)]
pub struct VaeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Weight of the KL divergence from N(0, I) (LDM's default).
    #[arg(long, default_value_t = 1e-6)]
    kl_weight: f64,
    /// Extra weight of the reconstruction error on and around the glyphs (the shard's glyph
    /// mask): a pixel there counts 1 + W times. 0: plain L1.
    #[arg(long, default_value_t = 0.0)]
    text_weight: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    No,
    Fp16,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum Schedule {
    Constant,
    Linear,
    Cosine,
}

#[derive(Args)]
pub struct CommonArgs {
    /// Base pipeline folder (diffusers layout).
    #[arg(long)]
    base: PathBuf,
    /// Dataset shards: a folder written by `dataset build|synth`, or a `.tar`.
    #[arg(long)]
    data: PathBuf,
    /// Output folder: checkpoints, validation images, the final model. Rerun to resume.
    #[arg(long)]
    out: PathBuf,
    /// Square training resolution (multiple of 64).
    #[arg(long, default_value_t = 512)]
    resolution: u32,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    gradient_accumulation: usize,
    /// Optimizer steps in all.
    #[arg(long, default_value_t = 1000)]
    max_steps: u64,
    #[arg(long, default_value_t = 1e-5)]
    learning_rate: f64,
    #[arg(long, value_enum, default_value = "constant")]
    lr_schedule: Schedule,
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    #[arg(long, default_value_t = 1e-2)]
    adam_weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Share of captions replaced by the empty caption (0–1).
    #[arg(long, default_value_t = 0.05)]
    caption_dropout: f64,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999); the
    /// final model is the average.
    #[arg(long)]
    ema_decay: Option<f64>,
    /// Half-precision frozen models (CUDA only).
    #[arg(long, value_enum, default_value = "no")]
    mixed_precision: Precision,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 3)]
    keep_checkpoints: usize,
    /// Render the first sample's caption and mask every N steps into OUT/validation (0: off).
    #[arg(long, default_value_t = 0)]
    validation_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop after this many steps of this invocation (rerun to continue from the last
    /// checkpoint).
    #[arg(long)]
    stop_after: Option<u64>,
    /// Train on random crops of --resolution (image and glyph mask alike) at the images' own
    /// size instead of resizing them: text keeps its scale, e.g. 128² crops for a model
    /// sampled at 256². Not with TextDiffuser-2's layout tokens (they describe the whole
    /// image); a UNet that reads the glyph mask as input channels crops.
    #[arg(long)]
    random_crop: bool,
}

#[derive(Args)]
pub struct ControlNetArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Start from this ControlNet folder instead of the UNet's encoder.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Channels of the control image of a new ControlNet: 1 (the mask) or 3 (RGB, as released
    /// ControlNets).
    #[arg(long, default_value_t = 3)]
    conditioning_channels: i64,
    /// Conditioning-encoder channels of a new ControlNet, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,96,256")]
    conditioning_embedding_channels: Vec<i64>,
    /// Also train the base UNet and text encoder (joint training, for a model trained from
    /// scratch); OUT is then a whole pipeline with its ControlNet.
    #[arg(long)]
    train_base: bool,
}

/// Shards decoded on demand.
struct ShardData {
    samples: Vec<ShardSample>,
}

impl TrainingData for ShardData {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize) -> letterpress_diffusion::Result<TrainingSample> {
        let s = &self.samples[index];
        let bad = |what: &str, e: image::ImageError| {
            letterpress_diffusion::Error::Training(format!("sample {}: {what}: {e}", s.key))
        };
        let image = image::load_from_memory(&s.image)
            .map_err(|e| bad("image", e))?
            .to_rgb8();
        let mask = image::load_from_memory(&s.mask_png)
            .map_err(|e| bad("glyph mask", e))?
            .to_luma8();
        let layout = td2::parse(s.json["layout_td2"].as_str().unwrap_or(""), &[])
            .to_layout(image.width(), image.height());
        Ok(TrainingSample {
            image,
            mask,
            caption: s.caption().to_string(),
            layout_tokens: layout_tokens(&layout),
        })
    }
}

/// A bar with step, loss, learning rate and it/s.
struct Bar(ProgressBar);

impl TrainProgress for Bar {
    fn start(&self, first: u64, max: u64) {
        self.0.set_length(max);
        self.0.set_position(first);
        self.0.reset_eta();
    }
    fn step(&self, step: u64, loss: f64, lr: f64) {
        self.0.set_position(step);
        self.0.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        tracing::info!(step, loss, lr, "train step");
    }
    fn message(&self, message: &str) {
        self.0.println(message);
    }
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    let (common, target) = match cmd {
        TrainCommand::Controlnet(a) => {
            if !matches!(a.conditioning_channels, 1 | 3) {
                bail!(
                    "--conditioning-channels {}: allowed 1 or 3",
                    a.conditioning_channels
                );
            }
            (
                a.common,
                TrainTarget::ControlNet {
                    init: a.init,
                    conditioning_channels: a.conditioning_channels,
                    conditioning_embedding_out_channels: a.conditioning_embedding_channels,
                    train_base: a.train_base,
                },
            )
        }
        TrainCommand::Unet(a) => (a, TrainTarget::UNet),
        TrainCommand::Vae(a) => (
            a.common,
            TrainTarget::Vae {
                kl_weight: a.kl_weight,
                text_weight: a.text_weight,
            },
        ),
    };
    let samples = read_samples(&common.data)
        .with_context(|| format!("reading shards from {}", common.data.display()))?;
    let data = ShardData { samples };
    if data.is_empty() {
        bail!("{} holds no complete samples", common.data.display());
    }
    let mut config = TrainConfig::new(&common.base, &common.out, target);
    config.resolution = common.resolution;
    config.random_crop = common.random_crop;
    config.batch_size = common.batch_size;
    config.gradient_accumulation = common.gradient_accumulation;
    config.max_steps = common.max_steps;
    config.learning_rate = common.learning_rate;
    config.lr_schedule = match common.lr_schedule {
        Schedule::Constant => LrSchedule::Constant,
        Schedule::Linear => LrSchedule::Linear,
        Schedule::Cosine => LrSchedule::Cosine,
    };
    config.warmup_steps = common.warmup_steps;
    config.adam = AdamWConfig {
        weight_decay: common.adam_weight_decay,
        ..AdamWConfig::default()
    };
    config.max_grad_norm = common.max_grad_norm;
    config.caption_dropout = common.caption_dropout;
    config.ema_decay = common.ema_decay;
    config.mixed_precision = match common.mixed_precision {
        Precision::No => MixedPrecision::No,
        Precision::Fp16 => MixedPrecision::Fp16,
        Precision::Bf16 => MixedPrecision::Bf16,
    };
    config.checkpoint_every = common.checkpoint_every;
    config.keep_checkpoints = common.keep_checkpoints;
    config.validation_every = common.validation_every;
    config.seed = common.seed;
    config.device = parse_device(&common.device)?;
    config.stop_after = common.stop_after;
    if common.validation_every > 0 {
        let first = data.get(0)?;
        config.validation = Some(Validation {
            prompt: first.caption,
            mask: first.mask,
            layout_tokens: first.layout_tokens,
            steps: 20,
            seed: common.seed,
        });
    }
    println!(
        "training on {} samples from {}",
        data.len(),
        common.data.display()
    );
    let bar = Bar(
        ProgressBar::new(config.max_steps).with_style(ProgressStyle::with_template(
            "{bar:40} step {pos}/{len} {per_sec} eta {eta} {msg}",
        )?),
    );
    let report = training::train(&config, &data, &bar)?;
    bar.0.finish_and_clear();
    let last = report.losses.last().copied().unwrap_or(f64::NAN);
    println!(
        "steps: {} (resumed from {}), last loss {last:.5}",
        report.steps, report.resumed_from
    );
    match report.model_dir {
        Some(dir) => println!("model: {}", dir.display()),
        None => println!(
            "stopped before --max-steps; rerun the same command to continue from {}",
            training::latest_checkpoint(&common.out)
                .map(|(s, _)| format!("checkpoint-{s}"))
                .unwrap_or_else(|| "the start (no checkpoint yet)".into())
        ),
    }
    Ok(())
}

//! A training run's settings: what is trained, the options with diffusers' defaults, their
//! validation, and the fingerprint a resumed run must share with the checkpoint it resumes.

use std::path::PathBuf;

use image::GrayImage;
use serde_json::{Value, json};
use tch::Device;

use super::adamw::AdamWConfig;
use super::batches::TrainingData;
use super::lr_schedule::LrSchedule;
use crate::error::{Error, Result};

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
    pub(super) fn fingerprint(&self) -> Value {
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

/// Refuses settings no run can use, before anything is loaded.
pub(super) fn check(config: &TrainConfig, data: &dyn TrainingData) -> Result<()> {
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

/// Random crops would cut TextDiffuser-2's layout tokens loose from the picture they describe:
/// refused for UNet training with a tokenizer that has them (a glyph-input UNet reads plain
/// captions and its mask is cropped with the image).
pub(super) fn check_crops(config: &TrainConfig, layout_tokens: bool) -> Result<()> {
    if config.random_crop && layout_tokens && matches!(config.target, TrainTarget::UNet) {
        return Err(Error::Training(
            "random crops are for VAE, ControlNet and glyph-input UNet training: \
             TextDiffuser-2's layout tokens describe the whole image"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_crops_are_refused_for_textdiffuser2_training() {
        let mut config = TrainConfig::new("base", "out", TrainTarget::UNet);
        config.resolution = 64;
        config.random_crop = true;
        let err = check_crops(&config, true).unwrap_err();
        assert!(err.to_string().contains("layout tokens"), "{err}");
        // A plain tokenizer (a glyph-input UNet) crops.
        assert!(check_crops(&config, false).is_ok());
    }
}

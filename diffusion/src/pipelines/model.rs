//! The loaded models of one Stable Diffusion checkpoint (a diffusers folder or a single
//! `.safetensors` file), optionally with a ControlNet.

use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use crate::error::{Error, Result};
use crate::schedulers::SchedulerConfig;
use crate::single_file::{SingleFileOptions, load_controlnet, load_stable_diffusion};
use crate::weights::{LoadOptions, Loaded, PipelineFolder};
use crate::{AutoencoderKL, ClipTextModel, ClipTokenizer, ControlNetModel, UNet2DConditionModel};

/// Everything a generation needs, owned by one worker thread (`Tensor` is `Send`, not `Sync`).
#[derive(Debug)]
pub struct StableDiffusion {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: Loaded<ClipTextModel>,
    pub unet: Loaded<UNet2DConditionModel>,
    pub vae: Loaded<AutoencoderKL>,
    pub controlnet: Option<Loaded<ControlNetModel>>,
    /// The folder's `scheduler/scheduler_config.json` (SD's DDIM config for single files).
    pub scheduler_config: SchedulerConfig,
    /// What to write into image metadata: the folder's or file's name.
    pub model_name: String,
    pub device: Device,
    pub kind: Kind,
}

/// Where the parts of a model come from.
#[derive(Debug, Clone, Default)]
pub struct ModelSource {
    /// A diffusers pipeline folder, or a single SD 1.x/2.x `.safetensors` checkpoint.
    pub model: PathBuf,
    /// A ControlNet folder or single file (diffusers or cldm keys). Default: the folder's own
    /// `controlnet/` when `model_index.json` lists one.
    pub controlnet: Option<PathBuf>,
    /// A tokenizer folder; required for single files, which carry none. Default: `tokenizer/`
    /// of the model folder.
    pub tokenizer: Option<PathBuf>,
    /// For single files: a diffusers folder whose `unet/`, `vae/`, `text_encoder/` and
    /// `scheduler/` configs replace inference from shapes (non-standard models). Default: none.
    pub config_dir: Option<PathBuf>,
}

impl StableDiffusion {
    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`), with `controlnet` (a folder, or a single file) or else the
    /// folder's own `controlnet/` component when it lists one.
    pub fn load(
        model_dir: &Path,
        controlnet: Option<&Path>,
        options: &LoadOptions,
    ) -> Result<Self> {
        Self::load_from(
            &ModelSource {
                model: model_dir.to_path_buf(),
                controlnet: controlnet.map(Path::to_path_buf),
                ..Default::default()
            },
            options,
        )
    }

    /// Loads from a folder or a single-file checkpoint (see [`ModelSource`]).
    pub fn load_from(source: &ModelSource, options: &LoadOptions) -> Result<Self> {
        let path = &source.model;
        if !path.exists() {
            return Err(Error::WeightsNotFound {
                dir: path.clone(),
                expected: "a diffusers pipeline folder (model_index.json, unet/, vae/, …) or a \
                           single .safetensors checkpoint"
                    .into(),
            });
        }
        let single = SingleFileOptions {
            config_dir: source.config_dir.clone(),
            prediction_type: None,
            load: options.clone(),
        };
        let tokenizer_dir = match (&source.tokenizer, path.is_dir()) {
            (Some(dir), _) => dir.clone(),
            (None, true) => PipelineFolder::open(path)?.component("tokenizer")?,
            (None, false) => {
                return Err(Error::Request(format!(
                    "{} is a single checkpoint, which carries no tokenizer: also give a \
                     tokenizer folder (vocab.json, merges.txt, tokenizer_config.json), e.g. \
                     the tokenizer/ of stable-diffusion-v1-5",
                    path.display()
                )));
            }
        };
        let tokenizer = ClipTokenizer::from_dir(&tokenizer_dir)?;
        let models = load_stable_diffusion(path, &single)?;
        let controlnet = match &source.controlnet {
            Some(cn) => Some(load_controlnet(cn, &single)?),
            None if path.is_dir() && PipelineFolder::open(path)?.class("controlnet").is_some() => {
                Some(PipelineFolder::open(path)?.load::<ControlNetModel>("controlnet", options)?)
            }
            None => None,
        };
        let model = Self {
            tokenizer,
            text_encoder: models.text_encoder,
            unet: models.unet,
            vae: models.vae,
            controlnet,
            scheduler_config: models.scheduler,
            model_name: model_name(path),
            device: options.device,
            kind: options.kind(),
        };
        model.check_compatible()?;
        Ok(model)
    }

    /// `2 ** (len(vae.block_out_channels) - 1)`: 8 for every SD VAE.
    pub fn vae_scale_factor(&self) -> i64 {
        1 << (self
            .vae
            .model
            .config()
            .block_out_channels
            .len()
            .saturating_sub(1))
    }

    /// Components that load but cannot work together get an error now, not a shape error mid-run.
    fn check_compatible(&self) -> Result<()> {
        let unet = self.unet.model.config();
        let hidden = self.text_encoder.model.config().hidden_size;
        // SD 1.x/2.x give one value for all blocks; the first block's is the encoder's width.
        let first = |c: &crate::PerBlock<i64>| match c {
            crate::PerBlock::All(v) => *v,
            crate::PerBlock::Each(v) => v.first().copied().unwrap_or(0),
        };
        let cross = first(&unet.cross_attention_dim);
        let config_err = |message: String| Error::Config {
            model: "pipeline",
            message,
        };
        if hidden != cross {
            return Err(config_err(format!(
                "the text encoder's hidden size {hidden} is not the UNet's cross_attention_dim {cross}"
            )));
        }
        let vocab = self.text_encoder.model.config().vocab_size;
        if (self.tokenizer.len() as i64) > vocab {
            return Err(config_err(format!(
                "the tokenizer has {} tokens but the text encoder only {vocab} embeddings \
                 (a TextDiffuser-2 tokenizer needs its fine-tuned text encoder)",
                self.tokenizer.len()
            )));
        }
        let latent = self.vae.model.config().latent_channels;
        let vsf = self.vae_scale_factor();
        if unet.in_channels != latent
            && unet.in_channels != 2 * latent + 1
            && self.glyph_input_factor().is_none()
        {
            return Err(config_err(format!(
                "UNet in_channels {} fits neither {latent} latent channels, nor an inpainting \
                 UNet ({}), nor latents and a {vsf}x-folded glyph mask ({})",
                unet.in_channels,
                2 * latent + 1,
                latent + vsf * vsf
            )));
        }
        if let Some(cn) = &self.controlnet {
            let c = cn.model.config();
            if first(&c.unet.cross_attention_dim) != cross {
                return Err(config_err(format!(
                    "the ControlNet's cross_attention_dim {} is not the UNet's {cross} (an SD 2.x \
                     ControlNet on an SD 1.x model, or the reverse?)",
                    first(&c.unet.cross_attention_dim)
                )));
            }
            if c.unet.block_out_channels != unet.block_out_channels {
                return Err(config_err(format!(
                    "the ControlNet's block_out_channels {:?} are not the UNet's {:?}",
                    c.unet.block_out_channels, unet.block_out_channels
                )));
            }
            // The hint encoder halves the control image once per block after the first; its
            // output must land on the latent grid, which the VAE sets.
            let hint_factor = 1i64
                << c.conditioning_embedding_out_channels
                    .len()
                    .saturating_sub(1);
            if hint_factor != self.vae_scale_factor() {
                return Err(config_err(format!(
                    "the ControlNet's control-image encoder downsamples {hint_factor}x \
                     ({} conditioning_embedding_out_channels) but the VAE {}x: they cannot share \
                     a latent grid (a ControlNet from another model family?)",
                    c.conditioning_embedding_out_channels.len(),
                    self.vae_scale_factor()
                )));
            }
        }
        Ok(())
    }

    /// True for 9-channel inpainting UNets (latents, mask, masked-image latents).
    pub fn is_inpainting_unet(&self) -> bool {
        self.unet.model.config().in_channels == 2 * self.vae.model.config().latent_channels + 1
    }

    /// For a UNet that reads the glyph mask as input channels (`crate::glyph_input`), the
    /// factor the mask is folded by; `None` for any other UNet.
    pub fn glyph_input_factor(&self) -> Option<i64> {
        crate::glyph_input::glyph_input_factor(
            self.unet.model.config().in_channels,
            self.vae.model.config().latent_channels,
            self.vae_scale_factor(),
        )
    }

    /// Whether the model is conditioned on a glyph mask: through a ControlNet, or as UNet
    /// input channels.
    pub fn reads_glyph_mask(&self) -> bool {
        self.controlnet.is_some() || self.glyph_input_factor().is_some()
    }
}

fn model_name(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let name = if path.is_file() {
        path.file_stem()
    } else {
        path.file_name()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

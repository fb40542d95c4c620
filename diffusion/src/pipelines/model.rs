//! The loaded models of one Stable Diffusion pipeline folder (optionally with a ControlNet).

use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use crate::error::{Error, Result};
use crate::weights::{FromPretrained, LoadOptions, Loaded, PipelineFolder, fill, load, read_json};
use crate::{AutoencoderKL, ClipTextModel, ClipTokenizer, ControlNetModel, UNet2DConditionModel};

/// Everything a generation needs, owned by one worker thread (`Tensor` is `Send`, not `Sync`).
#[derive(Debug)]
pub struct StableDiffusion {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: Loaded<ClipTextModel>,
    pub unet: Loaded<UNet2DConditionModel>,
    pub vae: Loaded<AutoencoderKL>,
    pub controlnet: Option<Loaded<ControlNetModel>>,
    /// `scheduler/scheduler_config.json` of the folder.
    pub scheduler_config: PathBuf,
    /// What to write into image metadata: the folder's name.
    pub model_name: String,
    pub device: Device,
    pub kind: Kind,
}

impl StableDiffusion {
    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`). The ControlNet is, in order of preference: `controlnet`
    /// (a folder with `config.json` and weights, or a `.safetensors` file with a `config.json`
    /// beside it), else the folder's own `controlnet/` component when it lists one.
    pub fn load(
        model_dir: &Path,
        controlnet: Option<&Path>,
        options: &LoadOptions,
    ) -> Result<Self> {
        let folder = PipelineFolder::open(model_dir)?;
        let tokenizer = ClipTokenizer::from_dir(&folder.component("tokenizer")?)?;
        let text_encoder = folder.load::<ClipTextModel>("text_encoder", options)?;
        let unet = folder.load::<UNet2DConditionModel>("unet", options)?;
        let vae = folder.load::<AutoencoderKL>("vae", options)?;
        let controlnet = match controlnet {
            Some(path) => Some(load_controlnet(path, options)?),
            None if folder.class("controlnet").is_some() => {
                Some(folder.load::<ControlNetModel>("controlnet", options)?)
            }
            None => None,
        };
        let scheduler_config = folder.component("scheduler")?.join("scheduler_config.json");
        if !scheduler_config.is_file() {
            return Err(Error::WeightsNotFound {
                dir: model_dir.join("scheduler"),
                expected: "scheduler_config.json".into(),
            });
        }
        let model = Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            controlnet,
            scheduler_config,
            model_name: model_name(model_dir),
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
        if unet.in_channels != latent && unet.in_channels != 2 * latent + 1 {
            return Err(config_err(format!(
                "UNet in_channels {} fits neither {latent} latent channels nor an inpainting UNet ({})",
                unet.in_channels,
                2 * latent + 1
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
        }
        Ok(())
    }

    /// True for 9-channel inpainting UNets (latents, mask, masked-image latents).
    pub fn is_inpainting_unet(&self) -> bool {
        self.unet.model.config().in_channels == 2 * self.vae.model.config().latent_channels + 1
    }
}

fn model_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// A ControlNet folder, or a `.safetensors` file in diffusers' key scheme with `config.json` in
/// the same folder.
fn load_controlnet(path: &Path, options: &LoadOptions) -> Result<Loaded<ControlNetModel>> {
    if path.is_dir() {
        return load::<ControlNetModel>(path, options);
    }
    if !path.is_file() {
        return Err(Error::WeightsNotFound {
            dir: path.to_path_buf(),
            expected: "a ControlNet folder (config.json + diffusion_pytorch_model.safetensors) or a .safetensors file".into(),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::WeightsNotFound {
            dir: dir.to_path_buf(),
            expected: format!(
                "config.json beside {} (a single ControlNet file needs its diffusers config; \
                 download the ControlNet's config.json into the same folder)",
                path.display()
            ),
        });
    }
    let config = read_json(&config_path)?;
    let mut var_store = tch::nn::VarStore::new(options.device);
    let model = <ControlNetModel as FromPretrained>::build(var_store.root(), &config)?;
    fill(
        &var_store,
        path,
        <ControlNetModel as FromPretrained>::rename_key,
    )?;
    let kind = options.kind();
    if kind != Kind::Float {
        var_store.set_kind(kind);
    }
    var_store.freeze();
    Ok(Loaded { model, var_store })
}

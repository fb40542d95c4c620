//! The model and generation flags that `generate`, `poster` and `edit` share, the engine they
//! load and the `PosterRequest` they describe.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::{ControlMode, ModelSource};
use letterpress_diffusion::schedulers::SchedulerKind;
use letterpress_poster::{
    LayoutTokens, PosterEngine, PosterInit, PosterRequest, PosterText, RepaintRegion,
};
use letterpress_render::RenderOptions;

use crate::device::{Dtype, load_options};

#[derive(Clone, Copy, ValueEnum)]
enum ControlImage {
    /// The glyph mask, white text on black (glyph ControlNets).
    Mask,
    /// Black text on white (GlyphControl).
    Inverse,
    /// Canny edges of the mask (canny ControlNets).
    Canny,
}

/// Options shared by `generate`, `poster` and `edit`.
#[derive(Args)]
pub struct ModelOptions {
    /// A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/), or a single SD 1.x/2.x .safetensors checkpoint (then give --tokenizer).
    /// See the README for what each supported model needs. Default: the embedded demo model
    /// (models/README.md), at 256×256.
    #[arg(long, env = "LETTERPRESS_MODEL_DIR")]
    pub(crate) model_dir: Option<PathBuf>,
    /// A ControlNet folder, or a single .safetensors (diffusers keys with config.json beside it,
    /// or the original cldm keys). Default: the model folder's own controlnet/ when it has one.
    #[arg(long)]
    pub(crate) controlnet: Option<PathBuf>,
    /// Tokenizer folder, for a single-file --model-dir. Default: the model folder's tokenizer/.
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    /// For a single-file --model-dir of a non-standard model: a diffusers folder whose configs
    /// to use instead of inferring them from the tensor shapes.
    #[arg(long)]
    pub(crate) config_dir: Option<PathBuf>,
    /// Negative prompt. Default: none.
    #[arg(long, default_value = "")]
    pub(crate) negative_prompt: String,
    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    pub(crate) steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off).
    #[arg(long, default_value_t = 7.5)]
    pub(crate) guidance: f64,
    /// ddim, ddpm, euler, euler-a, dpm++2m, dpm++2m-karras, unipc or lcm. Default: the class in
    /// the model's scheduler/scheduler_config.json.
    #[arg(long)]
    pub(crate) scheduler: Option<String>,
    /// Seed of the first image (image i uses seed + i). Default: random, and reported.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Number of images; more than one writes out-1.png, out-2.png, ….
    #[arg(long, default_value_t = 1)]
    pub(crate) n: usize,
    /// Output width in pixels (a multiple of 8). Default: the layout's canvas, else 512.
    #[arg(long)]
    pub(crate) width: Option<u32>,
    /// Output height in pixels (a multiple of 8). Default: the layout's canvas, else 512.
    #[arg(long)]
    pub(crate) height: Option<u32>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Weight dtype. Default: fp32 on CPU, fp16 on CUDA.
    #[arg(long, value_enum)]
    pub(crate) dtype: Option<Dtype>,
    /// controlnet_conditioning_scale.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) control_scale: f64,
    /// Fraction of the steps before which the ControlNet is off.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) control_start: f64,
    /// Fraction of the steps after which the ControlNet is off.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) control_end: f64,
    /// ControlNet guess mode (the ControlNet sees only the conditional half).
    #[arg(long)]
    pub(crate) guess_mode: bool,
    /// What the ControlNet sees.
    #[arg(long, value_enum, default_value = "mask")]
    control_image: ControlImage,
    /// TextDiffuser-2 conditioning: the prompt's ids followed by the layout's tokens (needs a
    /// TextDiffuser-2 model: its tokenizer with added tokens and fine-tuned text encoder).
    #[arg(long)]
    td2: bool,
    /// img2img / inpainting: start from this image.
    #[arg(long)]
    pub(crate) init_image: Option<PathBuf>,
    /// With --init-image: how much is repainted, (0, 1].
    #[arg(long, default_value_t = 0.75)]
    pub(crate) strength: f64,
    /// With --init-image: inpaint where this mask is white.
    #[arg(long, conflicts_with = "inpaint_line")]
    pub(crate) mask: Option<PathBuf>,
    /// With --init-image: regenerate only the layout's text line N (1-based), in place.
    #[arg(long)]
    pub(crate) inpaint_line: Option<usize>,
    /// Glyph initialisation: start from the layout's text drawn over the prompt's colour,
    /// noised to this strength in (0, 1] (lower keeps more of the drawing), instead of pure
    /// noise; 0 switches it off. Default: 0.6 with the embedded demo model, off with others
    /// (docs/architecture.md, "Glyph initialisation").
    #[arg(long, value_name = "STRENGTH")]
    pub(crate) glyph_init: Option<f64>,
    /// Also write the glyph mask the ControlNet saw (PNG).
    #[arg(long)]
    pub(crate) save_mask: Option<PathBuf>,
    /// Also write the layout (JSON).
    #[arg(long)]
    pub(crate) save_layout: Option<PathBuf>,
    /// Font to measure and render with. Default: DejaVu Sans Bold.
    #[arg(long)]
    pub(crate) font: Option<String>,
    /// Read each line back with OCR and print how many read right; the PNG gets the
    /// certificate in its `certificate` text chunk (implied by the three options below).
    #[arg(long)]
    pub(crate) verify: bool,
    /// Also write the certificate as JSON: an object for one image, an array for several.
    #[arg(long)]
    pub(crate) certificate: Option<PathBuf>,
    /// Repaint lines that read wrong, in place, at most this many rounds (0–5), each with a
    /// new seed; pixels outside the repaired lines stay the first image's.
    #[arg(long, default_value_t = 0)]
    pub(crate) repair: usize,
    /// With --n 2 or more: rank the images by their certificates and write only the best.
    #[arg(long)]
    pub(crate) best_of: bool,
}

impl ModelOptions {
    /// Whether the images are read back with OCR (verify, certificate, repair or best-of).
    pub(crate) fn verifies(&self) -> bool {
        self.verify || self.certificate.is_some() || self.repair > 0 || self.best_of
    }

    /// The first flag `edit` does not take (it paints one picture, from its IMAGE), if given.
    pub(crate) fn edit_conflict(&self) -> Option<&'static str> {
        [
            (
                self.init_image.is_some(),
                "--init-image (the picture to edit is IMAGE)",
            ),
            (self.mask.is_some(), "--mask"),
            (self.inpaint_line.is_some(), "--inpaint-line"),
            (self.n != 1, "--n"),
            (self.repair != 0, "--repair"),
            (self.best_of, "--best-of"),
            (
                self.verify,
                "--verify (edit always reads the new text back)",
            ),
            (
                self.width.is_some(),
                "--width (the result keeps IMAGE's size)",
            ),
            (
                self.height.is_some(),
                "--height (the result keeps IMAGE's size)",
            ),
            (self.save_mask.is_some(), "--save-mask"),
            (self.save_layout.is_some(), "--save-layout"),
            (
                self.glyph_init.is_some(),
                "--glyph-init (the edit starts from IMAGE)",
            ),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

/// The model the flags name, or the embedded demo model, as a poster engine.
pub(crate) fn load_engine(o: &ModelOptions) -> Result<PosterEngine> {
    let embedded;
    let (dir, default_side) = match &o.model_dir {
        Some(dir) => (dir, 512),
        None => {
            if o.controlnet.is_some() || o.tokenizer.is_some() || o.config_dir.is_some() {
                bail!(
                    "--controlnet, --tokenizer and --config-dir go with a --model-dir; without one \
                     letterpress uses {}",
                    crate::embedded_model::DESCRIPTION
                );
            }
            embedded = crate::embedded_model::folder()?;
            eprintln!("model: {}", crate::embedded_model::DESCRIPTION);
            // The embedded model was trained at 256×256.
            (&embedded, 256)
        }
    };
    let options: LoadOptions = load_options(&o.device, o.dtype)?;
    let spinner = ProgressBar::new_spinner().with_message(format!("loading {}", dir.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let source = ModelSource {
        model: dir.clone(),
        controlnet: o.controlnet.clone(),
        tokenizer: o.tokenizer.clone(),
        config_dir: o.config_dir.clone(),
    };
    let mut render = RenderOptions::default();
    if let Some(font) = &o.font {
        render.font = font.clone();
    }
    let engine = PosterEngine::load(&source, &options, render)
        .with_context(|| format!("loading the model from {}", dir.display()));
    spinner.finish_and_clear();
    let glyph_init = o
        .model_dir
        .is_none()
        .then_some(crate::embedded_model::GLYPH_INIT);
    Ok(engine?
        .with_default_side(default_side)
        .with_default_glyph_init(glyph_init))
}

/// The poster request the flags describe.
pub(crate) fn poster_request(
    prompt: &str,
    text: PosterText,
    o: &ModelOptions,
) -> Result<PosterRequest> {
    let mut r = PosterRequest::new(prompt);
    r.negative_prompt = o.negative_prompt.clone();
    r.text = text;
    r.font = o.font.clone();
    (r.width, r.height) = (o.width, o.height);
    r.n = o.n;
    r.seed = o.seed;
    r.steps = o.steps;
    r.guidance_scale = o.guidance;
    r.scheduler = o
        .scheduler
        .as_deref()
        .map(|s| {
            s.parse::<SchedulerKind>()
                .map_err(|e| anyhow!("--scheduler: {e}"))
        })
        .transpose()?;
    r.control.mode = match o.control_image {
        ControlImage::Mask => ControlMode::Mask,
        ControlImage::Inverse => ControlMode::Inverse,
        ControlImage::Canny => ControlMode::Canny,
    };
    r.control.conditioning_scale = o.control_scale;
    r.control.guidance_start = o.control_start;
    r.control.guidance_end = o.control_end;
    r.control.guess_mode = o.guess_mode;
    r.layout_tokens = if o.td2 {
        LayoutTokens::Always
    } else {
        LayoutTokens::Never
    };
    r.init = init_image(o)?;
    r.glyph_init = o.glyph_init;
    r.verify = o.verify || o.certificate.is_some();
    r.repair = o.repair;
    r.best_of = o.best_of;
    Ok(r)
}

fn init_image(o: &ModelOptions) -> Result<Option<PosterInit>> {
    let Some(path) = &o.init_image else {
        if o.mask.is_some() || o.inpaint_line.is_some() {
            bail!("--mask and --inpaint-line need --init-image (the picture to repaint)");
        }
        return Ok(None);
    };
    let image = image::open(path)
        .with_context(|| format!("reading --init-image {}", path.display()))?
        .to_rgb8();
    let region = match (&o.mask, o.inpaint_line) {
        (Some(m), _) => Some(RepaintRegion::Mask(
            image::open(m)
                .with_context(|| format!("reading --mask {}", m.display()))?
                .to_luma8(),
        )),
        (None, Some(0)) => bail!("--inpaint-line 0: lines are numbered from 1"),
        (None, Some(n)) => Some(RepaintRegion::Line(n - 1)),
        (None, None) => None,
    };
    Ok(Some(PosterInit {
        image,
        strength: o.strength,
        region,
    }))
}

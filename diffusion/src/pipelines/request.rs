//! What a caller asks for and what it gets back: the pipeline's library interface, shared by
//! the CLI and the HTTP service.

use image::{GrayImage, RgbImage};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::schedulers::SchedulerKind;

/// How the text encoder is conditioned.
#[derive(Debug, Clone, Default)]
pub enum TextConditioning {
    /// The prompt alone, as Stable Diffusion reads it.
    #[default]
    Prompt,
    /// TextDiffuser-2: the caption's ids followed by each line's layout and character tokens
    /// (`["l25", "t89", "r100", "b120", "[H]", "[i]"]`, from `letterpress_layout::layout_tokens`);
    /// the unconditional input is `[49407] * 77` unless a negative prompt is given.
    TextDiffuser2 { layout_tokens: Vec<Vec<String>> },
}

/// Which picture of the glyph mask the ControlNet sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlMode {
    /// The renderer's mask as it is: white text on black (glyph ControlNets, AnyText style).
    #[default]
    Mask,
    /// Black text on white (GlyphControl style).
    Inverse,
    /// Canny edges of the mask, for canny ControlNets.
    Canny,
}

/// The ControlNet's input and settings (diffusers `StableDiffusionControlNetPipeline`).
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The glyph mask, white on black, 8-bit grey. Resized to the output size when it differs.
    pub mask: GrayImage,
    /// Default: [`ControlMode::Mask`].
    pub mode: ControlMode,
    /// `controlnet_conditioning_scale`. Default 1.0.
    pub conditioning_scale: f64,
    /// `control_guidance_start`: the fraction of steps before which the ControlNet is off. Default 0.
    pub guidance_start: f64,
    /// `control_guidance_end`: the fraction of steps after which it is off. Default 1.
    pub guidance_end: f64,
    /// Guess mode: the ControlNet sees only the conditional half and its residuals are weighted
    /// 0.1 … 1 from shallow to deep. Default false.
    pub guess_mode: bool,
}

impl ControlSettings {
    pub fn new(mask: GrayImage) -> Self {
        Self {
            mask,
            mode: ControlMode::Mask,
            conditioning_scale: 1.0,
            guidance_start: 0.0,
            guidance_end: 1.0,
            guess_mode: false,
        }
    }
}

/// img2img and inpainting input (diffusers `StableDiffusionImg2ImgPipeline`,
/// `StableDiffusionInpaintPipeline`).
#[derive(Debug, Clone)]
pub struct InitImage {
    /// The starting picture; resized to the output size when it differs.
    pub image: RgbImage,
    /// How much is repainted, in (0, 1]: 1 starts from pure noise. Default 0.75 in the CLI.
    pub strength: f64,
    /// White where the picture is regenerated (one text line, say), black where it is kept.
    /// With a 9-channel inpainting UNet it is fed to the UNet; with any other model the kept
    /// area is blended back into the latents after every step.
    pub mask: Option<GrayImage>,
}

/// One generation: n images of one prompt.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: String,
    /// Default: empty.
    pub negative_prompt: String,
    pub conditioning: TextConditioning,
    /// Output size in pixels; multiples of the VAE's scale factor (8 for SD). Default 512.
    pub width: u32,
    pub height: u32,
    /// Denoising steps. Default 20 (TextDiffuser-2's setting).
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 turns guidance off. Default 7.5.
    pub guidance_scale: f64,
    /// Default: the model folder's `scheduler/scheduler_config.json` class.
    pub scheduler: Option<SchedulerKind>,
    /// Images to make. Default 1.
    pub num_images: usize,
    /// Image i uses seed `seed + i`. `None`: a random seed, reported in [`Generation::seeds`].
    pub seed: Option<u64>,
    /// Requires a ControlNet loaded with the model.
    pub control: Option<ControlSettings>,
    pub init: Option<InitImage>,
    /// `clip_skip` (0: last layer). Default 0.
    pub clip_skip: usize,
    /// Attach a cheap latent preview (an RGB approximation at latent resolution) to step events.
    pub preview: bool,
}

impl GenerationRequest {
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            conditioning: TextConditioning::Prompt,
            width: 512,
            height: 512,
            steps: 20,
            guidance_scale: 7.5,
            scheduler: None,
            num_images: 1,
            seed: None,
            control: None,
            init: None,
            clip_skip: 0,
            preview: false,
        }
    }

    /// Checks what does not need the model; the model-dependent checks come in `generate`.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Request(m));
        if self.steps == 0 || self.steps > 1000 {
            return bad(format!("steps {}: allowed 1..=1000", self.steps));
        }
        if self.num_images == 0 || self.num_images > 64 {
            return bad(format!("n {}: allowed 1..=64", self.num_images));
        }
        if self.width == 0 || self.height == 0 || self.width > 4096 || self.height > 4096 {
            return bad(format!(
                "size {}x{}: each side must be 1..=4096",
                self.width, self.height
            ));
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return bad(format!(
                "guidance scale {}: must be a finite number ≥ 0",
                self.guidance_scale
            ));
        }
        if let Some(c) = &self.control {
            if !c.conditioning_scale.is_finite() {
                return bad("controlnet conditioning scale must be finite".into());
            }
            let ok = |x: f64| (0.0..=1.0).contains(&x);
            if !ok(c.guidance_start) || !ok(c.guidance_end) || c.guidance_start >= c.guidance_end {
                return bad(format!(
                    "control guidance start {} / end {}: need 0 ≤ start < end ≤ 1",
                    c.guidance_start, c.guidance_end
                ));
            }
            if c.mask.width() == 0 || c.mask.height() == 0 {
                return bad("the control image is empty".into());
            }
        }
        if let Some(init) = &self.init
            && !(init.strength > 0.0 && init.strength <= 1.0)
        {
            return bad(format!("strength {}: allowed (0, 1]", init.strength));
        }
        Ok(())
    }
}

/// Progress, sent before the first step and after every step.
#[derive(Debug)]
pub struct StepEvent {
    /// Steps done so far (0 before the first).
    pub step: usize,
    pub total: usize,
    /// The timestep just denoised (or about to be, at step 0).
    pub timestep: f64,
    /// With [`GenerationRequest::preview`]: image 0's latents as an RGB approximation, at latent
    /// resolution (width / 8).
    pub preview: Option<RgbImage>,
}

/// One image with the seed that made it.
#[derive(Debug)]
pub struct GeneratedImage {
    /// `[3, height, width]` float in [0, 1] on the CPU, before 8-bit quantisation (diffusers'
    /// `output_type="pt"`).
    pub pixels: Tensor,
    pub seed: u64,
}

impl GeneratedImage {
    /// 8-bit RGB as diffusers' `numpy_to_pil` quantises: `round(x * 255)`.
    pub fn to_rgb8(&self) -> Result<RgbImage> {
        crate::pipelines::images::tensor_to_rgb8(&self.pixels)
    }
}

/// The result of a [`GenerationRequest`].
#[derive(Debug)]
pub struct Generation {
    pub images: Vec<GeneratedImage>,
    /// The seed of each image (random ones included).
    pub seeds: Vec<u64>,
    /// The scheduler that ran, by its diffusers class name (`DDIMScheduler`, …).
    pub scheduler: &'static str,
    /// The timesteps actually run (img2img starts part-way).
    pub steps_run: usize,
    /// The final latents `[n, 4, h/8, w/8]`, fp32 CPU (for tests and previews).
    pub latents: Tensor,
}

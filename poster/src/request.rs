//! What a caller asks the poster engine for. Every front end (the CLI's `generate` and
//! `poster`, the service's worker) fills one [`PosterRequest`]; defaults are TextDiffuser-2's
//! reference settings.

use image::{GrayImage, RgbImage};
use letterpress_diffusion::pipelines::ControlMode;
use letterpress_diffusion::schedulers::SchedulerKind;
use letterpress_layout::{Layout, PlannerChoice};

/// Where the poster's text comes from.
#[derive(Debug, Clone, Default)]
pub enum PosterText {
    /// The text quoted in the prompt (`'…'`, `"…"`, `「…」`, …), planned by the planner.
    #[default]
    Quoted,
    /// These lines, planned by the planner (an empty list: the quoted text).
    Keywords(Vec<String>),
    /// A finished layout; fitted to the output size when its canvas differs.
    Layout(Layout),
}

/// Whether the text encoder reads TextDiffuser-2's layout tokens after the caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutTokens {
    /// When the model can read them (its tokenizer has the layout and character tokens) and
    /// has no ControlNet to see the glyph mask instead.
    #[default]
    Auto,
    /// Always (an error when the model's tokenizer lacks the tokens or there is no text).
    Always,
    /// Never: the caption alone, as Stable Diffusion reads it.
    Never,
}

/// How a glyph ControlNet sees the rendered layout (diffusers'
/// `StableDiffusionControlNetPipeline` arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlOptions {
    /// Which picture of the glyph mask it sees. Default: the mask, white text on black.
    pub mode: ControlMode,
    /// `controlnet_conditioning_scale`. Default 1.
    pub conditioning_scale: f64,
    /// Fraction of the steps before which the ControlNet is off. Default 0.
    pub guidance_start: f64,
    /// Fraction of the steps after which it is off. Default 1.
    pub guidance_end: f64,
    /// Guess mode: the ControlNet sees only the conditional half. Default off.
    pub guess_mode: bool,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            mode: ControlMode::Mask,
            conditioning_scale: 1.0,
            guidance_start: 0.0,
            guidance_end: 1.0,
            guess_mode: false,
        }
    }
}

/// Which part of an init image is repainted.
#[derive(Debug, Clone)]
pub enum RepaintRegion {
    /// White where the picture is regenerated, black where it is kept; resized to the output.
    Mask(GrayImage),
    /// Text line `index` (0-based) of the layout, its box scaled to the output size.
    Line(usize),
}

/// img2img and inpainting: start from a picture instead of pure noise.
#[derive(Debug, Clone)]
pub struct PosterInit {
    /// Resized to the output size when it differs.
    pub image: RgbImage,
    /// How much is repainted, in (0, 1]; 1 starts from pure noise.
    pub strength: f64,
    /// Default (`None`): the whole picture.
    pub region: Option<RepaintRegion>,
}

/// One poster request: prompt, text, canvas and the diffusion settings.
#[derive(Debug, Clone)]
pub struct PosterRequest {
    pub prompt: String,
    /// Default: empty.
    pub negative_prompt: String,
    /// Default: the prompt's quoted text.
    pub text: PosterText,
    /// Default: the typographic planner.
    pub planner: PlannerChoice,
    /// Font to measure and draw with. Default: the renderer's (DejaVu Sans Bold).
    pub font: Option<String>,
    /// Output size in pixels. Default: a given layout's canvas, else the engine's default side.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Images to make; image `i` uses seed `seed + i`. Default 1.
    pub n: usize,
    /// Seed of the first image. Default: random, and reported in the result.
    pub seed: Option<u64>,
    /// Denoising steps. Default 20.
    pub steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off). Default 7.5.
    pub guidance_scale: f64,
    /// Default: the class named by the model's scheduler config.
    pub scheduler: Option<SchedulerKind>,
    /// Used when the model has a ControlNet.
    pub control: ControlOptions,
    /// Default: [`LayoutTokens::Auto`].
    pub layout_tokens: LayoutTokens,
    pub init: Option<PosterInit>,
    /// Glyph initialisation (`glyph_init` module): start from the layout's text drawn over the
    /// prompt's background colour, noised to this strength in (0, 1], instead of pure noise.
    /// `None` (default): the engine's default (on for the embedded model, off otherwise);
    /// `Some(0.0)`: off. Not with `init`, which gives its own starting picture.
    pub glyph_init: Option<f64>,
    /// Attach a decoded preview to step events every this many steps; 0 (default) never.
    pub preview_every: usize,
    /// Read each image's lines back with OCR and attach a [`Certificate`](crate::Certificate).
    /// Default off (it costs one tesseract read per line).
    pub verify: bool,
    /// Repair rounds for lines that read wrong (implies `verify`). Default 0.
    pub repair: usize,
    /// Order the images best certificate first (implies `verify`). Default off: seed order.
    pub best_of: bool,
}

impl PosterRequest {
    /// Whether the images get a certificate: asked for, or needed by repair or ranking.
    pub fn verifies(&self) -> bool {
        self.verify || self.repair > 0 || self.best_of
    }

    pub fn new(prompt: impl Into<String>) -> Self {
        PosterRequest {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            text: PosterText::Quoted,
            planner: PlannerChoice::Typographic,
            font: None,
            width: None,
            height: None,
            n: 1,
            seed: None,
            steps: 20,
            guidance_scale: 7.5,
            scheduler: None,
            control: ControlOptions::default(),
            layout_tokens: LayoutTokens::Auto,
            init: None,
            glyph_init: None,
            preview_every: 0,
            verify: false,
            repair: 0,
            best_of: false,
        }
    }
}

//! The boundary to the diffusion model. This crate never touches tensors: the binary
//! implements [`PosterEngine`] with letterpress-diffusion and hands the service a loader that
//! runs on the worker thread, which then owns the model for its whole life.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use letterpress_layout::Layout;

/// One job's diffusion inputs, already planned and rendered.
#[derive(Debug, Clone)]
pub struct EngineJob {
    pub prompt: String,
    pub negative_prompt: String,
    /// The layout the glyph mask was drawn from (TextDiffuser-2 models read its tokens).
    pub layout: Layout,
    /// White text on black at `width`×`height`: the glyph ControlNet's control image.
    pub glyph_mask: GrayImage,
    pub width: u32,
    pub height: u32,
    /// Images to paint, 1–8.
    pub n: u32,
    /// Seed of the first image; image `i` uses `seed + i`.
    pub seed: u64,
    pub steps: u32,
    pub guidance_scale: f32,
    /// One of [`EngineInfo::schedulers`].
    pub scheduler: String,
    pub controlnet_conditioning_scale: f32,
    /// Decode a preview every this many steps; 0 = never.
    pub preview_every: u32,
    /// Start from a picture instead of noise (regenerating a line of an earlier result).
    pub init: Option<EngineInit>,
}

/// img2img inputs: the picture, how much of it is repainted, and optionally the one layout
/// line to repaint in place (the rest is kept by the pipeline's masked-latent blending).
#[derive(Debug, Clone)]
pub struct EngineInit {
    /// `width`×`height`.
    pub image: RgbImage,
    /// (0, 1].
    pub strength: f32,
    /// 0-based index into `layout.lines`, already checked to be in range.
    pub inpaint_line: Option<usize>,
}

/// Progress reported after each denoising step.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// 1-based step just finished.
    pub step: u32,
    pub steps: u32,
    /// The current estimate decoded, when the job asked for previews at this step.
    pub preview: Option<RgbImage>,
}

/// What a loaded engine can do; the service validates requests against it.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// Shown in `/readyz` and job answers.
    pub model: String,
    /// Scheduler names accepted in `scheduler`; the first is the default.
    pub schedulers: Vec<String>,
}

/// Why a generation did not produce images.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The cancel token fired between steps.
    #[error("stopped between denoising steps")]
    Stopped,
    /// The job asks for something this model cannot do; reported to the client.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else; logged, and the client sees a generic failure.
    #[error("{0}")]
    Failed(String),
}

/// A text-to-poster model owned by the worker thread.
pub trait PosterEngine {
    fn info(&self) -> EngineInfo;

    /// Paints `job.n` images. Calls `progress` after every step and checks `stop` between
    /// steps, answering [`EngineError::Stopped`] once it is set.
    fn generate(
        &mut self,
        job: &EngineJob,
        progress: &mut dyn FnMut(StepProgress),
        stop: &StopToken,
    ) -> Result<Vec<RgbImage>, EngineError>;
}

/// Builds the engine on the worker thread (models are not `Sync`; the thread that loads them
/// owns them).
pub type EngineLoader = Box<dyn FnOnce() -> Result<Box<dyn PosterEngine>, String> + Send>;

/// Why a running job should stop between steps: the client canceled it, it ran past its
/// timeout, or the server is shutting down.
#[derive(Debug, Clone)]
pub struct StopToken {
    canceled: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

/// Which of the reasons fired, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Canceled,
    Interrupted,
    TimedOut,
}

impl StopToken {
    pub fn new(
        canceled: Arc<AtomicBool>,
        interrupted: Arc<AtomicBool>,
        deadline: Option<Instant>,
    ) -> Self {
        StopToken {
            canceled,
            interrupted,
            deadline,
        }
    }

    /// A token that never fires (tools, tests).
    pub fn never() -> Self {
        StopToken::new(Arc::default(), Arc::default(), None)
    }

    pub fn reason(&self) -> Option<StopReason> {
        if self.canceled.load(Ordering::Relaxed) {
            Some(StopReason::Canceled)
        } else if self.interrupted.load(Ordering::Relaxed) {
            Some(StopReason::Interrupted)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(StopReason::TimedOut)
        } else {
            None
        }
    }

    pub fn should_stop(&self) -> bool {
        self.reason().is_some()
    }
}

//! The boundary to the poster engine. This crate never touches tensors: the binary
//! implements [`PosterEngine`] with letterpress-poster (which plans, renders and paints) and
//! hands the service a loader that runs on the worker thread, which then owns the model for
//! its whole life (docs/architecture.md, "Dependency rules").

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use letterpress_layout::Layout;

/// One job's poster request: what the client asked for, with defaults filled in.
#[derive(Debug, Clone)]
pub struct EngineJob {
    pub prompt: String,
    pub negative_prompt: String,
    /// The client's layout, fitted to `width`×`height` when its canvas differs; `None`: the
    /// engine plans `keywords`.
    pub layout: Option<Layout>,
    /// The text lines to plan; empty: the text quoted in the prompt.
    pub keywords: Vec<String>,
    pub width: u32,
    pub height: u32,
    /// Images to paint, 1–8.
    pub n: u32,
    /// Seed of the first image; image `i` uses `seed + i`. The planner uses it too.
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
    /// Glyph initialisation strength; `None`: the engine's default; 0: off.
    pub glyph_init: Option<f64>,
    /// Read each image's lines back and report a [`EngineEvent::Verified`] per image.
    pub verify: bool,
    /// Repair rounds for lines that read wrong (implies `verify`).
    pub repair: u32,
    /// Replace text in a picture instead of painting a poster (`POST /v1/edits`): the engine
    /// reports the new lines' layout and the edited region as the job's layout and mask, then
    /// one `Verified` and returns the one edited picture.
    pub edit: Option<EngineEdit>,
}

/// A picture and the texts to replace in it, `(old, new)`.
#[derive(Debug, Clone)]
pub struct EngineEdit {
    /// Any size; `EngineJob::width`×`height` is it rounded up to multiples of 8.
    pub image: RgbImage,
    pub replacements: Vec<(String, String)>,
}

/// img2img inputs: the picture, how much of it is repainted, and optionally the one layout
/// line to repaint in place (the rest is kept by the pipeline's masked-latent blending).
#[derive(Debug, Clone)]
pub struct EngineInit {
    /// `width`×`height`.
    pub image: RgbImage,
    /// (0, 1].
    pub strength: f32,
    /// 0-based index into the layout's lines, already checked to be in range.
    pub inpaint_line: Option<usize>,
}

/// What the engine reports while it makes a poster, in stage order.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// The layout drawn, at the job's size, with the planner's warnings.
    Planned {
        layout: Layout,
        warnings: Vec<String>,
    },
    /// The glyph mask, white text on black at the job's size, with the renderer's warnings.
    Rendered {
        glyph_mask: GrayImage,
        warnings: Vec<String>,
    },
    /// A denoising step finished.
    Step(StepProgress),
    /// Image `image` (0-based, in the order returned) was read back with OCR and, when the
    /// job asked, repaired.
    Verified {
        image: u32,
        certificate: crate::schema::Certificate,
    },
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
    /// The stop token fired, or the event handler asked to stop, between stages or steps.
    #[error("stopped between stages or denoising steps")]
    Stopped,
    /// The layout could not be planned or drawn; reported to the client.
    #[error("{0}")]
    InvalidLayout(String),
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

    /// Plans, renders and paints `job.n` images. Calls `events` after each stage and step
    /// and checks `stop` between them, answering [`EngineError::Stopped`] once it is set or
    /// once `events` answers [`ControlFlow::Break`].
    fn generate(
        &mut self,
        job: &EngineJob,
        events: &mut dyn FnMut(EngineEvent) -> ControlFlow<()>,
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

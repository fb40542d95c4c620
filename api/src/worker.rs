//! The worker: one thread that owns the engine and runs jobs from the store's queue, one at a
//! time. The engine makes the poster (plan → render → denoise); the worker stores what each
//! stage produced as files of the job, turns the stages into events and the job's status, and
//! records how the job ended.

use std::io::Cursor;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use letterpress_layout::Layout;
use serde_json::{Value, json};

use crate::engine::{
    EngineEdit, EngineError, EngineEvent, EngineInit, EngineJob, EngineLoader, PosterEngine,
    StepProgress, StopReason, StopToken,
};
use crate::ids;
use crate::input::{DEFAULT_STRENGTH, GenerationInput, OutputFormat};
use crate::job_error::JobErrorCode;
use crate::job_events::{emit, emit_end};
use crate::schema::{Certificate, GenerationMetrics, GenerationOutput};
use crate::state::{AppState, ModelState};
use crate::store::{FileRecord, Job, Status, now_ms};

/// Starts the worker thread. `loader` (when a model is configured) runs on it first.
pub fn spawn(state: AppState, loader: Option<EngineLoader>) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    *state.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    state.set_model_state(if loader.is_some() {
        ModelState::Loading
    } else {
        ModelState::Absent
    });
    std::thread::Builder::new()
        .name("letterpress-worker".into())
        .spawn(move || run(state, loader, rx))
        .expect("spawning the worker thread")
}

fn run(state: AppState, loader: Option<EngineLoader>, wake: Receiver<()>) {
    let mut engine: Option<Box<dyn PosterEngine>> = None;
    if let Some(loader) = loader {
        let started = Instant::now();
        match loader() {
            Ok(e) => {
                let info = e.info();
                tracing::info!(model = %info.model, seconds = started.elapsed().as_secs_f32(), "model loaded");
                if !serve_queue(&state, &info) {
                    return;
                }
                state.set_model_state(ModelState::Ready(info));
                engine = Some(e);
            }
            Err(message) => {
                tracing::error!(%message, "loading the model failed");
                state.set_model_state(ModelState::Failed(message));
                // A scaled-out worker without its model has nothing to take: it exits.
                if state.store.nats().is_some() {
                    return;
                }
            }
        }
    }
    loop {
        if state.is_shutting_down() {
            break;
        }
        match state.store.claim_next() {
            Ok(Some(job)) => run_job(&state, engine.as_deref_mut(), job),
            // JetStream's pull waited for a job already.
            Ok(None) if state.store.claim_waits() => {}
            Ok(None) => match wake.recv_timeout(Duration::from_millis(500)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            },
            Err(e) => {
                tracing::error!(error = %e, "reading the queue");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    tracing::info!("worker stopped");
}

/// A scaled-out worker registers its model and opens that model's queue (retrying while NATS
/// is away); false when it is shutting down first. The single-process store has nothing to do.
fn serve_queue(state: &AppState, info: &crate::engine::EngineInfo) -> bool {
    let Some(nats) = state.store.nats() else {
        return true;
    };
    let model = crate::store::nats::ModelInfo {
        model: state
            .settings
            .queue_model
            .clone()
            .unwrap_or_else(|| info.model.clone()),
        schedulers: info.schedulers.clone(),
        workers: 0,
    };
    let worker_id = ids::new_id("worker_");
    loop {
        match nats.serve_model(&model, &worker_id) {
            Ok(()) => {
                tracing::info!(model = %model.model, "taking jobs");
                return true;
            }
            Err(e) => tracing::error!(error = %e, "opening the model's queue; retrying"),
        }
        if state.is_shutting_down() {
            return false;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// How a job ended, before it is recorded.
enum Outcome {
    Succeeded(GenerationOutput),
    Failed { code: JobErrorCode, message: String },
    Canceled,
    Requeue,
}

fn run_job(state: &AppState, engine: Option<&mut (dyn PosterEngine + 'static)>, job: Job) {
    let span = tracing::info_span!("job", id = %job.id, attempt = job.attempts);
    let _enter = span.enter();
    let started = Instant::now();
    let canceled = Arc::new(AtomicBool::new(false));
    state
        .cancel_flags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.id.clone(), canceled.clone());
    // A cancel that arrived between the claim and the flag above found no flag to set; it
    // is in the store (the cancel handler writes the store first, then looks for the flag).
    if state.store.is_cancel_requested(&job.id).unwrap_or(false) {
        canceled.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let deadline = Instant::now() + Duration::from_secs(state.settings.job_timeout_secs);
    let stop = StopToken::new(canceled, state.interrupt.clone(), Some(deadline));
    let outcome = match serde_json::from_value::<GenerationInput>(job.input.clone()) {
        // A panic inside the model must not take the worker (and every later job) with it.
        Ok(input) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            execute(state, engine, &job, &input, &stop)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("the job panicked");
            Outcome::Failed {
                code: JobErrorCode::GenerationFailed,
                message: "the model failed to generate; the server log has the details".into(),
            }
        }),
        // The server wrote that input itself: failing to read it back is its own fault.
        Err(e) => Outcome::Failed {
            code: JobErrorCode::InternalError,
            message: format!("stored input unreadable: {e}"),
        },
    };
    state
        .cancel_flags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&job.id);
    let elapsed = started.elapsed().as_secs_f64();
    record_end(state, &job.id, outcome, elapsed);
}

/// Records how the job ended and emits its last event. The store has the last word: a cancel
/// requested while the job ran turns any outcome into `canceled`.
fn record_end(state: &AppState, id: &str, outcome: Outcome, elapsed: f64) {
    let canceled = (JobErrorCode::Canceled.as_str(), "canceled by the client");
    let recorded = match outcome {
        Outcome::Succeeded(mut output) => {
            output.metrics = Some(GenerationMetrics {
                predict_time: elapsed,
            });
            let output = serde_json::to_value(&output).unwrap_or_default();
            state
                .store
                .finish(id, Status::Succeeded, Some(&output), None)
        }
        Outcome::Failed { code, message } => {
            tracing::warn!(%code, %message, "job failed");
            let error = Some((code.as_str(), message.as_str()));
            state.store.finish(id, Status::Failed, None, error)
        }
        Outcome::Canceled => state
            .store
            .finish(id, Status::Canceled, None, Some(canceled)),
        Outcome::Requeue => state.store.requeue(id),
    };
    match recorded {
        Ok(Status::Queued) => {
            tracing::info!("shutting down: job requeued");
            let reason = "the server is shutting down; the job runs again after restart";
            emit(state, id, "requeued", json!({ "reason": reason }), None);
        }
        Ok(status) => {
            tracing::info!(seconds = elapsed, status = status.as_str(), "job ended");
            emit_end(state, id);
        }
        Err(e) => tracing::error!(error = %e, "recording the job's end"),
    }
}

fn stopped(stop: &StopToken, timeout_secs: u64) -> Option<Outcome> {
    Some(match stop.reason()? {
        StopReason::Canceled => Outcome::Canceled,
        StopReason::Interrupted => Outcome::Requeue,
        StopReason::TimedOut => Outcome::Failed {
            code: JobErrorCode::Timeout,
            message: format!(
                "the job ran longer than the server's job_timeout_secs ({timeout_secs} s)"
            ),
        },
    })
}

fn execute(
    state: &AppState,
    engine: Option<&mut (dyn PosterEngine + 'static)>,
    job: &Job,
    input: &GenerationInput,
    stop: &StopToken,
) -> Outcome {
    let timeout = state.settings.job_timeout_secs;
    let Some(engine) = engine else {
        return Outcome::Failed {
            code: JobErrorCode::NoModel,
            message: "this server has no diffusion model loaded (its model_dir setting is empty)"
                .into(),
        };
    };
    let engine_job = match engine_job(state, job, input) {
        Ok(j) => j,
        Err(outcome) => return outcome,
    };
    let mut stages = Stages {
        state,
        job,
        layout_file: None,
        mask_file: None,
        certificates: Vec::new(),
        failure: None,
        last_step: Instant::now(),
    };
    let result = engine.generate(&engine_job, &mut |e| stages.on_event(e), stop);
    if let Some(outcome) = stages.failure.take() {
        return outcome;
    }
    let fail = |code, message: String| Outcome::Failed { code, message };
    let images = match result {
        Ok(images) => images,
        Err(EngineError::Stopped) => {
            return stopped(stop, timeout).unwrap_or(Outcome::Canceled);
        }
        Err(EngineError::InvalidLayout(m)) => return fail(JobErrorCode::InvalidLayout, m),
        Err(EngineError::Unsupported(m)) => return fail(JobErrorCode::Unsupported, m),
        Err(EngineError::Failed(m)) => {
            tracing::error!(error = %m, "the engine failed");
            return fail(
                JobErrorCode::GenerationFailed,
                "the model failed to generate; the server log has the details".into(),
            );
        }
    };
    let image_files = match store_images(state, job, input.output_format, images) {
        Ok(ids) => ids,
        Err(outcome) => return outcome,
    };
    let (Some(layout), Some(mask)) = (stages.layout_file, stages.mask_file) else {
        tracing::error!("the engine finished without reporting its layout and mask");
        return fail(
            JobErrorCode::InternalError,
            "the engine finished without its layout and mask".into(),
        );
    };
    Outcome::Succeeded(GenerationOutput {
        images: image_files,
        mask,
        layout,
        seed: input.seed,
        metrics: None,
        // An engine that verified reported every image; one that did not, none.
        certificates: Some(stages.certificates)
            .filter(|c| !c.is_empty())
            .and_then(|c| c.into_iter().collect()),
    })
}

/// The engine's request for a stored job; the init image (checked at submit) is loaded now,
/// as the file may have expired since.
fn engine_job(state: &AppState, job: &Job, input: &GenerationInput) -> Result<EngineJob, Outcome> {
    let init = match &input.init_image {
        None => None,
        Some(r) => {
            match crate::init_image::load(&state.store, &job.owner, r, (input.width, input.height))
            {
                Ok(image) => Some(EngineInit {
                    image,
                    strength: input.strength.unwrap_or(DEFAULT_STRENGTH) as f32,
                    inpaint_line: input.inpaint_line.map(|i| i as usize),
                }),
                Err(e) => {
                    return Err(Outcome::Failed {
                        code: JobErrorCode::InvalidInput,
                        message: e.message,
                    });
                }
            }
        }
    };
    let edit = engine_edit(state, job, input)?;
    Ok(EngineJob {
        prompt: input.prompt.clone(),
        negative_prompt: input.negative_prompt.clone(),
        layout: input.layout.clone(),
        keywords: input.keywords.clone(),
        width: input.width,
        height: input.height,
        n: input.n,
        seed: input.seed,
        steps: input.steps,
        guidance_scale: input.guidance_scale as f32,
        // "default": the API node that queued it knew no scheduler of this model yet.
        scheduler: match (input.scheduler.as_str(), state.schedulers().first()) {
            ("default", Some(own)) => own.clone(),
            _ => input.scheduler.clone(),
        },
        controlnet_conditioning_scale: input.controlnet_conditioning_scale as f32,
        preview_every: input.preview_every,
        init,
        glyph_init: input.glyph_init,
        verify: input.verify,
        repair: input.repair,
        edit,
    })
}

/// An edit job's picture (loaded again, as the file may have expired) and replacements.
fn engine_edit(
    state: &AppState,
    job: &Job,
    input: &GenerationInput,
) -> Result<Option<EngineEdit>, Outcome> {
    Ok(match &input.edit {
        None => None,
        Some(spec) => {
            match crate::init_image::decode(&state.store, &job.owner, &spec.image, "image") {
                Ok(image) => Some(EngineEdit {
                    image,
                    replacements: spec
                        .replacements
                        .iter()
                        .map(|r| (r.old.clone(), r.new.clone()))
                        .collect(),
                }),
                Err(e) => {
                    return Err(Outcome::Failed {
                        code: JobErrorCode::InvalidInput,
                        message: e.message,
                    });
                }
            }
        }
    })
}

/// A running job's side of the engine's events: each stage's output becomes a file of the
/// job and an event for its watchers, and the job's status follows the stages.
struct Stages<'a> {
    state: &'a AppState,
    job: &'a Job,
    layout_file: Option<String>,
    mask_file: Option<String>,
    /// The certificates of the `verified` events, by image.
    certificates: Vec<Option<Certificate>>,
    /// Set when storing a stage's output failed; the engine is then told to stop.
    failure: Option<Outcome>,
    last_step: Instant,
}

impl Stages<'_> {
    fn on_event(&mut self, event: EngineEvent) -> ControlFlow<()> {
        let stored = match event {
            EngineEvent::Planned { layout, warnings } => self.planned(&layout, &warnings),
            EngineEvent::Rendered {
                glyph_mask,
                warnings,
            } => self.rendered(glyph_mask, &warnings),
            EngineEvent::Step(p) => {
                self.step(p);
                Ok(())
            }
            EngineEvent::Verified { image, certificate } => {
                self.verified(image, certificate);
                Ok(())
            }
        };
        match stored {
            Ok(()) => ControlFlow::Continue(()),
            Err(outcome) => {
                self.failure = Some(outcome);
                ControlFlow::Break(())
            }
        }
    }

    fn planned(&mut self, layout: &Layout, warnings: &[String]) -> Result<(), Outcome> {
        let json = serde_json::to_vec_pretty(layout).unwrap_or_default();
        let file = save_file(
            self.state,
            self.job,
            "layout",
            "application/json",
            "json",
            &json,
        )
        .map_err(store_failure)?;
        emit(
            self.state,
            &self.job.id,
            "layout",
            json!({ "layout": layout, "file": file, "warnings": warnings }),
            None,
        );
        self.layout_file = Some(file);
        let _ = self.state.store.set_status(&self.job.id, Status::Rendering);
        Ok(())
    }

    fn rendered(&mut self, glyph_mask: GrayImage, warnings: &[String]) -> Result<(), Outcome> {
        let png =
            encode(&DynamicImage::ImageLuma8(glyph_mask), OutputFormat::Png).map_err(|e| {
                Outcome::Failed {
                    code: JobErrorCode::InternalError,
                    message: format!("encoding the mask: {e}"),
                }
            })?;
        let file = save_file(self.state, self.job, "mask", "image/png", "png", &png)
            .map_err(store_failure)?;
        emit(
            self.state,
            &self.job.id,
            "rendering",
            json!({ "file": file, "warnings": warnings }),
            None,
        );
        self.mask_file = Some(file);
        let _ = self.state.store.set_status(&self.job.id, Status::Running);
        Ok(())
    }

    fn verified(&mut self, image: u32, certificate: Certificate) {
        emit(
            self.state,
            &self.job.id,
            "verified",
            json!({ "image": image, "certificate": certificate }),
            None,
        );
        let i = image as usize;
        if self.certificates.len() <= i {
            self.certificates.resize(i + 1, None);
        }
        self.certificates[i] = Some(certificate);
    }

    fn step(&mut self, p: StepProgress) {
        self.state
            .metrics
            .observe_step(self.last_step.elapsed().as_secs_f64());
        self.last_step = Instant::now();
        let preview = p
            .preview
            .and_then(|img| preview_data_url(img, self.state.settings.preview_side));
        emit(
            self.state,
            &self.job.id,
            "step",
            json!({ "step": p.step, "steps": p.steps }),
            preview.map(|p| ("preview", Value::String(p))),
        );
    }
}

fn store_failure(e: crate::store::StoreError) -> Outcome {
    tracing::error!(error = %e, "storing a file");
    Outcome::Failed {
        code: JobErrorCode::InternalError,
        message: "the server could not store a file".into(),
    }
}

/// Encodes and stores the images; their file ids in order.
fn store_images(
    state: &AppState,
    job: &Job,
    format: OutputFormat,
    images: Vec<RgbImage>,
) -> Result<Vec<String>, Outcome> {
    let mut ids = Vec::with_capacity(images.len());
    for img in images {
        let bytes = encode(&DynamicImage::ImageRgb8(img), format).map_err(|e| Outcome::Failed {
            code: JobErrorCode::InternalError,
            message: format!("encoding an image: {e}"),
        })?;
        let id = save_file(
            state,
            job,
            "image",
            format.content_type(),
            format.extension(),
            &bytes,
        )
        .map_err(store_failure)?;
        ids.push(id);
    }
    Ok(ids)
}

fn save_file(
    state: &AppState,
    job: &Job,
    kind: &str,
    content_type: &str,
    ext: &str,
    bytes: &[u8],
) -> Result<String, crate::store::StoreError> {
    let id = ids::new_id(ids::FILE_PREFIX);
    let created = now_ms();
    let record = FileRecord {
        id: id.clone(),
        job_id: job.id.clone(),
        owner: job.owner.clone(),
        kind: kind.to_string(),
        content_type: content_type.to_string(),
        name: format!("{id}.{ext}"),
        bytes: bytes.len() as i64,
        created_ms: created,
        expires_ms: created
            .saturating_add((state.settings.file_ttl_secs as i64).saturating_mul(1000)),
    };
    state.store.put_file(&record, bytes)?;
    Ok(id)
}

/// Encodes in the requested format (WebP is lossless, the only WebP the `image` crate writes).
pub fn encode(img: &DynamicImage, format: OutputFormat) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Cursor::new(Vec::new());
    match format {
        OutputFormat::Png => img.write_to(&mut out, ImageFormat::Png)?,
        OutputFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92);
            img.to_rgb8().write_with_encoder(enc)?;
        }
        OutputFormat::Webp => img.to_rgb8().write_to(&mut out, ImageFormat::WebP)?,
    }
    Ok(out.into_inner())
}

/// A small PNG preview as a `data:` URL for the step event.
fn preview_data_url(img: RgbImage, side: u32) -> Option<String> {
    use base64::Engine as _;
    let img = DynamicImage::ImageRgb8(img);
    let img = if img.width().max(img.height()) > side {
        img.thumbnail(side, side)
    } else {
        img
    };
    let png = encode(&img, OutputFormat::Png).ok()?;
    Some(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

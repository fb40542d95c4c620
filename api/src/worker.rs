//! The worker: one thread that owns the model and runs jobs from the store's queue, one at a
//! time: plan → render → denoise (with step events and previews) → encode → store.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, RgbImage};
use serde_json::{Value, json};

use crate::engine::{
    EngineError, EngineInit, EngineJob, EngineLoader, PosterEngine, StepProgress, StopReason,
    StopToken,
};
use crate::hub::LiveEvent;
use crate::ids;
use crate::input::{DEFAULT_STRENGTH, GenerationInput, OutputFormat};
use crate::poster::{self, PlannerChoice};
use crate::state::{AppState, ModelState};
use crate::store::{FileRecord, Job, Status, now_ms};

/// Stores an event and broadcasts it (with `live_extra` merged in, e.g. a preview too large
/// to store).
pub fn emit(
    state: &AppState,
    job_id: &str,
    kind: &str,
    data: Value,
    live_extra: Option<(&str, Value)>,
) {
    let seq = match state.store.add_event(job_id, kind, &data) {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(job = job_id, error = %e, "storing an event");
            return;
        }
    };
    let mut data = data;
    if let (Some((k, v)), Value::Object(map)) = (live_extra, &mut data) {
        map.insert(k.to_string(), v);
    }
    state.hub.publish(
        job_id,
        LiveEvent {
            seq,
            kind: kind.to_string(),
            data,
        },
    );
}

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
                state.set_model_state(ModelState::Ready(info));
                engine = Some(e);
            }
            Err(message) => {
                tracing::error!(%message, "loading the model failed");
                state.set_model_state(ModelState::Failed(message));
            }
        }
    }
    loop {
        if state.is_shutting_down() {
            break;
        }
        match state.store.claim_next() {
            Ok(Some(job)) => run_job(&state, engine.as_deref_mut(), job),
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

/// How a job ended, before it is recorded.
enum Outcome {
    Succeeded(Value),
    Failed { code: &'static str, message: String },
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
                code: "generation_failed",
                message: "the model failed to generate; the server log has the details".into(),
            }
        }),
        Err(e) => Outcome::Failed {
            code: "invalid_input",
            message: format!("stored input unreadable: {e}"),
        },
    };
    state
        .cancel_flags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&job.id);
    let elapsed = started.elapsed().as_secs_f64();
    let result = match outcome {
        Outcome::Succeeded(mut output) => {
            output["metrics"] = json!({ "predict_time": elapsed });
            tracing::info!(seconds = elapsed, "job succeeded");
            state
                .store
                .finish(&job.id, Status::Succeeded, Some(&output), None)
                .map(|_| {
                    emit(
                        state,
                        &job.id,
                        "succeeded",
                        json!({ "output": output }),
                        None,
                    )
                })
        }
        Outcome::Failed { code, message } => {
            tracing::warn!(code, %message, "job failed");
            state
                .store
                .finish(&job.id, Status::Failed, None, Some((code, &message)))
                .map(|_| {
                    emit(
                        state,
                        &job.id,
                        "failed",
                        json!({ "error": { "code": code, "message": message } }),
                        None,
                    )
                })
        }
        Outcome::Canceled => state
            .store
            .finish(
                &job.id,
                Status::Canceled,
                None,
                Some(("canceled", "canceled by the client")),
            )
            .map(|_| emit(state, &job.id, "canceled", json!({}), None)),
        Outcome::Requeue => {
            tracing::info!("shutting down: job requeued");
            state
                .store
                .requeue(&job.id)
                .map(|_| emit(state, &job.id, "requeued", json!({ "reason": "the server is shutting down; the job runs again after restart" }), None))
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "recording the job's end");
    }
}

fn stopped(stop: &StopToken, timeout_secs: u64) -> Option<Outcome> {
    Some(match stop.reason()? {
        StopReason::Canceled => Outcome::Canceled,
        StopReason::Interrupted => Outcome::Requeue,
        StopReason::TimedOut => Outcome::Failed {
            code: "timeout",
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
            code: "no_model",
            message: "this server has no diffusion model loaded (start it with --model-dir DIR)"
                .into(),
        };
    };
    let fail = |code, message: String| Outcome::Failed { code, message };
    let store_err = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "storing a file");
        Outcome::Failed {
            code: "internal_error",
            message: "the server could not store a file".into(),
        }
    };

    // 1. Layout: the client's (fitted to the canvas) or planned.
    let (layout, warnings) = match &input.layout {
        Some(l) if (l.width, l.height) == (input.width, input.height) => (l.clone(), Vec::new()),
        Some(l) => (
            poster::fit(
                l,
                input.width,
                input.height,
                (0, 0),
                input.width,
                input.height,
            ),
            Vec::new(),
        ),
        None => {
            let keywords = if input.keywords.is_empty() {
                letterpress_layout::extract_keywords(&input.prompt)
            } else {
                input.keywords.clone()
            };
            match poster::plan(
                &state.renderer,
                None,
                PlannerChoice::Typographic,
                &input.prompt,
                &keywords,
                (input.width, input.height),
                input.seed,
            ) {
                Ok(plan) => (plan.layout, plan.warnings),
                Err(e) => return fail("invalid_layout", e.to_string()),
            }
        }
    };
    let layout_json = serde_json::to_vec_pretty(&layout).unwrap_or_default();
    let layout_file = match save_file(
        state,
        job,
        "layout",
        "application/json",
        "json",
        &layout_json,
    ) {
        Ok(id) => id,
        Err(e) => return store_err(e),
    };
    emit(
        state,
        &job.id,
        "layout",
        json!({ "layout": layout, "file": layout_file, "warnings": warnings }),
        None,
    );
    if let Some(o) = stopped(stop, timeout) {
        return o;
    }

    // 2. Glyph mask.
    let _ = state.store.set_status(&job.id, Status::Rendering);
    let rendering = match state.renderer.render(&layout) {
        Ok(r) => r,
        Err(e) => return fail("invalid_layout", e.to_string()),
    };
    let mask_png = match encode(
        &DynamicImage::ImageLuma8(rendering.glyph_mask.clone()),
        OutputFormat::Png,
    ) {
        Ok(b) => b,
        Err(e) => return fail("internal_error", format!("encoding the mask: {e}")),
    };
    let mask_file = match save_file(state, job, "mask", "image/png", "png", &mask_png) {
        Ok(id) => id,
        Err(e) => return store_err(e),
    };
    emit(
        state,
        &job.id,
        "rendering",
        json!({ "file": mask_file, "warnings": rendering.warnings }),
        None,
    );
    if let Some(o) = stopped(stop, timeout) {
        return o;
    }

    // 3. Denoising.
    let _ = state.store.set_status(&job.id, Status::Running);
    let init = match &input.init_image {
        None => None,
        // Checked at submit; the file may have expired since.
        Some(r) => {
            match crate::init_image::load(&state.store, &job.owner, r, (input.width, input.height))
            {
                Ok(image) => Some(EngineInit {
                    image,
                    strength: input.strength.unwrap_or(DEFAULT_STRENGTH) as f32,
                    inpaint_line: input.inpaint_line.map(|i| i as usize),
                }),
                Err(e) => return fail("invalid_input", e.message),
            }
        }
    };
    let engine_job = EngineJob {
        prompt: input.prompt.clone(),
        negative_prompt: input.negative_prompt.clone(),
        layout: layout.clone(),
        glyph_mask: rendering.glyph_mask,
        width: input.width,
        height: input.height,
        n: input.n,
        seed: input.seed,
        steps: input.steps,
        guidance_scale: input.guidance_scale as f32,
        scheduler: input.scheduler.clone(),
        controlnet_conditioning_scale: input.controlnet_conditioning_scale as f32,
        preview_every: input.preview_every,
        init,
    };
    let mut last_step = Instant::now();
    let preview_side = state.settings.preview_side;
    let mut progress = |p: StepProgress| {
        state
            .metrics
            .observe_step(last_step.elapsed().as_secs_f64());
        last_step = Instant::now();
        let preview = p
            .preview
            .and_then(|img| preview_data_url(img, preview_side));
        emit(
            state,
            &job.id,
            "step",
            json!({ "step": p.step, "steps": p.steps }),
            preview.map(|p| ("preview", Value::String(p))),
        );
    };
    let images = match engine.generate(&engine_job, &mut progress, stop) {
        Ok(images) => images,
        Err(EngineError::Stopped) => {
            return stopped(stop, timeout).unwrap_or(Outcome::Canceled);
        }
        Err(EngineError::Unsupported(m)) => return fail("unsupported", m),
        Err(EngineError::Failed(m)) => {
            tracing::error!(error = %m, "the engine failed");
            return fail(
                "generation_failed",
                "the model failed to generate; the server log has the details".into(),
            );
        }
    };

    // 4. Images.
    let mut image_files = Vec::with_capacity(images.len());
    for img in images {
        let bytes = match encode(&DynamicImage::ImageRgb8(img), input.output_format) {
            Ok(b) => b,
            Err(e) => return fail("internal_error", format!("encoding an image: {e}")),
        };
        let f = input.output_format;
        match save_file(state, job, "image", f.content_type(), f.extension(), &bytes) {
            Ok(id) => image_files.push(id),
            Err(e) => return store_err(e),
        }
    }
    Outcome::Succeeded(json!({
        "images": image_files,
        "mask": mask_file,
        "layout": layout_file,
        "seed": input.seed,
    }))
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

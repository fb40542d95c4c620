//! Replicate-style generation jobs: create, read, follow (server-sent events), cancel.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;

use super::{JsonBody, base_url, queue_retry_after, with_header};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::hub::is_terminal_kind;
use crate::ids;
use crate::input::{GenerationInput, MAX_IDEMPOTENCY_KEY};
use crate::job_error::JobErrorCode;
use crate::job_events::{add_missing_end, emit, emit_end};
use crate::schema::{
    FileRef, Generation, GenerationEvent, GenerationFiles, GenerationId, GenerationOutput,
    GenerationRequest, GenerationUrls, JobError,
};
use crate::state::{AppState, ModelState};
use crate::store::{CancelRequest, Insert, Job, Status};

/// 503 unless a model is loaded; otherwise the model's schedulers.
pub(crate) fn require_model(state: &AppState) -> Result<Vec<String>, ApiError> {
    let unavailable =
        |code, message: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
    if state.is_shutting_down() {
        return Err(unavailable(
            "shutting_down",
            "the server is shutting down; retry shortly",
        )
        .with_retry_after(10));
    }
    match state.model_state() {
        ModelState::Ready(info) => Ok(info.schedulers),
        ModelState::Absent => Err(unavailable(
            "model_not_loaded",
            "this server has no diffusion model, so it can plan layouts (POST /v1/layouts) and render \
             glyph masks (POST /v1/render) but not generate images. Give it one: restart it with \
             its model_dir setting (LETTERPRESS_MODEL_DIR=DIR, or model_dir in letterpress.toml) \
             naming a diffusers-layout folder with unet/, controlnet/, vae/, text_encoder/, \
             tokenizer/ and scheduler/",
        )),
        ModelState::AwaitingWorker => Err(unavailable(
            "no_worker",
            "no worker has registered a model with this service's queue yet, so the model to \
             queue for is unknown; start `letterpress worker`, or give this node queue_model",
        )
        .with_retry_after(5)),
        ModelState::Loading => Err(unavailable(
            "model_loading",
            "the model is still loading; retry shortly",
        )
        .with_retry_after(10)),
        ModelState::Failed(_) => Err(unavailable(
            "model_failed",
            "the model failed to load; the server log says why (fix model_dir and restart)",
        )),
    }
}

/// The `Prefer: wait=N` seconds, capped by `max_wait_secs`.
fn prefer_wait(headers: &HeaderMap, max: u64) -> Option<u64> {
    let prefer = headers.get("prefer")?.to_str().ok()?;
    prefer
        .split([',', ';'])
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .find_map(|v| v.trim().parse::<u64>().ok())
        .map(|w| w.min(max))
}

/// Validates `Idempotency-Key`: 1–255 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k)
            if (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k.to_string()))
        }
        _ => Err(ApiError::invalid(
            "Idempotency-Key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )),
    }
}

/// Creates a job. Shared with the OpenAI shim. Answers the job and whether it is new.
pub(crate) fn submit(
    state: &AppState,
    caller: &Caller,
    input: &GenerationInput,
    key: Option<&str>,
    raw: &Value,
) -> Result<(Job, bool), ApiError> {
    let mut job = Job::queued(
        ids::new_id(ids::JOB_PREFIX),
        caller.owner.clone(),
        serde_json::to_value(input).map_err(ApiError::internal)?,
    );
    // A scaled-out node queues for the model it validated against (require_model).
    job.model = state.store.nats().and(match state.model_state() {
        ModelState::Ready(info) => Some(info.model),
        _ => None,
    });
    let hash = crate::auth::sha256_hex(&raw.to_string());
    match state.store.insert_job(
        &job,
        key.map(|k| (k, hash.as_str())),
        state.settings.queue_capacity,
    )? {
        Insert::Created => {
            // JetStream's insert wrote `queued` itself, before a worker could take the job.
            if state.store.nats().is_none() {
                emit(state, &job.id, "queued", json!({}), None);
            }
            state.wake_worker();
            Ok((job, true))
        }
        Insert::Existing { id, request_hash } if request_hash == hash => {
            let existing = state
                .store
                .job(&id)?
                .ok_or_else(|| ApiError::internal("idempotent job vanished"))?;
            Ok((existing, false))
        }
        Insert::Existing { .. } => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body; use a new key",
        )
        .with_param("Idempotency-Key")),
        Insert::QueueFull { queued } => {
            state
                .metrics
                .rejected_queue_full
                .fetch_add(1, Ordering::Relaxed);
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!("the queue is full ({queued} jobs waiting); retry later"),
            )
            .with_retry_after(queue_retry_after(queued)))
        }
    }
}

/// Waits until the job ends, `seconds` pass, or the server shuts down; answers the job then.
pub(crate) async fn wait_for(state: &AppState, id: &str, seconds: u64) -> Result<Job, ApiError> {
    let mut rx = state.hub.subscribe(id);
    let mut shutdown = state.shutdown.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let job = state
            .store
            .job(id)?
            .ok_or_else(|| ApiError::not_found("generation"))?;
        if job.status.is_terminal() || *shutdown.borrow() {
            return Ok(job);
        }
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if !e.is_terminal() => continue,
                Err(RecvError::Lagged(_)) => continue,
                // Terminal, or the channel closed after the terminal event: read the job.
                _ => { rx = state.hub.subscribe(id); }
            },
            _ = tokio::time::sleep_until(deadline) => return state.store.job(id)?.ok_or_else(|| ApiError::not_found("generation")),
            _ = shutdown.changed() => {}
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/generations",
    operation_id = "createGeneration",
    summary = "Create a generation",
    description = "Queues a poster generation and answers {id, status, urls}. `Prefer: wait=N` (N ≤ the server's max_wait_secs) answers when the job ends or N seconds pass. `Idempotency-Key` makes retries safe: the same key and body answer the same job.",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body = GenerationRequest,
    responses(
        (status = 201, description = "Created.", body = Generation, links(
            ("GetGeneration" = (operation_id = "getGeneration", parameters(("id" = "$response.body#/id")))),
            ("GenerationEvents" = (operation_id = "generationEvents", parameters(("id" = "$response.body#/id")))),
            ("CancelGeneration" = (operation_id = "cancelGeneration", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 200, description = "Replayed: an earlier request with this Idempotency-Key.", body = Generation),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let schedulers = state.schedulers();
    let input = GenerationInput::from_json(body.clone(), &schedulers, &state.settings.limits())?;
    if let Some(reference) = &input.init_image {
        crate::init_image::load(
            &state.store,
            &caller.owner,
            reference,
            (input.width, input.height),
        )?;
    }
    crate::admission::check_generation(&state, &input).await?;
    require_model(&state)?;
    answer_submitted(&state, &caller, &headers, &input, key.as_deref(), &body).await
}

/// Queues `input` (or finds the job an earlier request with the same key made) and answers
/// as `POST /v1/generations` does: the job, after `Prefer: wait` when asked.
pub(crate) async fn answer_submitted(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    input: &GenerationInput,
    key: Option<&str>,
    body: &Value,
) -> Result<Response, ApiError> {
    let (mut job, created) = submit(state, caller, input, key, body)?;
    let wait = prefer_wait(headers, state.settings.max_wait_secs);
    if let Some(seconds) = wait.filter(|s| *s > 0) {
        job = wait_for(state, &job.id, seconds).await?;
    }
    let base = base_url(state, headers);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, axum::Json(job_view(state, &job, &base).await?)).into_response();
    response = with_header(
        response,
        "location",
        &format!("{base}/v1/generations/{}", job.id),
    );
    if let Some(w) = wait {
        response = with_header(response, "preference-applied", &format!("wait={w}"));
    }
    if !created {
        response = with_header(response, "idempotent-replayed", "true");
    }
    Ok(response)
}

/// The job if it exists and belongs to the caller; otherwise 404 (never 403, which would
/// confirm that someone else's id exists).
fn owned_job(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    if !ids::is_valid(id, ids::JOB_PREFIX) {
        return Err(ApiError::not_found("generation"));
    }
    match state.store.job(id)? {
        Some(job) if job.owner == caller.owner => Ok(job),
        _ => Err(ApiError::not_found("generation")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/generations/{id}",
    operation_id = "getGeneration",
    summary = "Read a generation",
    params(GenerationId),
    responses((status = 200, description = "The generation.", body = Generation, links(
        ("GetMask" = (operation_id = "getFile", parameters(("id" = "$response.body#/output/mask/id")))),
        ("GetLayout" = (operation_id = "getFile", parameters(("id" = "$response.body#/output/layout/id")))),
        ("GetImage" = (operation_id = "getFile", parameters(("id" = "$response.body#/output/images/0/id")))),
    )))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(GenerationId { id }): Path<GenerationId>,
) -> Result<Response, ApiError> {
    let job = owned_job(&state, &caller, &id)?;
    let base = base_url(&state, &headers);
    Ok(axum::Json(job_view(&state, &job, &base).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/generations/{id}/cancel",
    operation_id = "cancelGeneration",
    summary = "Cancel a generation",
    description = "A queued job is canceled at once; a running one stops at its next denoising step and ends `canceled` whatever it was about to produce. The answer's `status` is the one the job ends in: `canceled`, or the status it had already ended in when the cancel came too late.",
    params(GenerationId),
    responses((status = 200, description = "The generation, with the status it ends in.", body = Generation))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(GenerationId { id }): Path<GenerationId>,
) -> Result<Response, ApiError> {
    owned_job(&state, &caller, &id)?;
    let mut job = match cancel_job(&state, &id)? {
        // The worker stops at its next step; the answer waits a little for that.
        Some(CancelRequest::WillStop) => wait_for(&state, &id, CANCEL_WAIT_SECS).await?,
        _ => state
            .store
            .job(&id)?
            .ok_or_else(|| ApiError::not_found("generation"))?,
    };
    if !job.status.is_terminal() {
        // Still stopping after the wait: the store guarantees it ends canceled.
        job.status = Status::Canceled;
    }
    let base = base_url(&state, &headers);
    Ok(axum::Json(job_view(&state, &job, &base).await?).into_response())
}

/// How long a cancel answer waits for a running job to stop (one denoising step, usually).
const CANCEL_WAIT_SECS: u64 = 10;

/// Cancels a job: a queued one now, a running one at its next step (it then ends canceled,
/// whatever its outcome). `None` for an unknown job.
pub(crate) fn cancel_job(state: &AppState, id: &str) -> Result<Option<CancelRequest>, ApiError> {
    let request = state.store.request_cancel(id)?;
    match request {
        Some(CancelRequest::CanceledQueued) => emit_end(state, id),
        Some(CancelRequest::WillStop) => {
            // The store is written first: a worker that registers its flag after this look
            // finds the request there (worker::run_job).
            if let Some(flag) = state
                .cancel_flags
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
            {
                flag.store(true, Ordering::Relaxed);
            }
        }
        Some(CancelRequest::AlreadyEnded(_)) | None => {}
    }
    Ok(request)
}

#[utoipa::path(
    get,
    path = "/v1/generations/{id}/events",
    operation_id = "generationEvents",
    summary = "Follow a generation",
    params(GenerationId),
    responses((status = 200, description = "Server-sent events until the job ends: `queued`, `layout`, `rendering`, `step` ({step, steps, preview?}), `requeued`, then `succeeded`, `failed` or `canceled`. Each has an `id`; send `Last-Event-ID` to resume.",
        content((GenerationEvent = "text/event-stream"))))
)]
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(GenerationId { id }): Path<GenerationId>,
) -> Result<Response, ApiError> {
    owned_job(&state, &caller, &id)?;
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(stream_events(state, id, after, tx));
    let mut response = Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

fn sse_event(seq: i64, kind: &str, data: &Value) -> Result<Event, Infallible> {
    Ok(Event::default()
        .id(seq.to_string())
        .event(kind)
        .data(data.to_string()))
}

/// How often a stream waiting for live events looks at the job itself, so that a job which
/// ended without a broadcast (its event failed to store) still ends the stream.
const STREAM_RECHECK: Duration = Duration::from_secs(5);

/// Replays stored events after `after`, then forwards live ones, until the terminal event.
async fn stream_events(
    state: AppState,
    id: String,
    mut after: i64,
    tx: tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut rx = state.hub.subscribe(&id);
    let mut shutdown = state.shutdown.subscribe();
    let mut recheck = tokio::time::interval(STREAM_RECHECK);
    recheck.tick().await;
    loop {
        // Stored events first: they cover everything published before we subscribed.
        let stored = match state.store.events_after(&id, after) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading events");
                return;
            }
        };
        for ev in stored {
            after = ev.seq;
            if tx
                .send(sse_event(ev.seq, &ev.kind, &ev.data))
                .await
                .is_err()
                || is_terminal_kind(&ev.kind)
            {
                return;
            }
        }
        // Every stored event is sent and none ended the stream: if the job has ended all the
        // same, its terminal event is written now and the replay above sends it.
        match state.store.job(&id) {
            // Written now, or stored by the worker between the replay's read and this one:
            // the replay sends it. Otherwise the client resumed past it.
            Ok(Some(job)) if job.status.is_terminal() => {
                let stored_since = state
                    .store
                    .events_after(&id, after)
                    .is_ok_and(|events| !events.is_empty());
                if add_missing_end(&state, &job) || stored_since {
                    continue;
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "reading a job");
                return;
            }
        }
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) if ev.seq <= after => {}
                    Ok(ev) if ev.seq == after + 1 => {
                        after = ev.seq;
                        if tx.send(sse_event(ev.seq, &ev.kind, &ev.data)).await.is_err() || ev.is_terminal() {
                            return;
                        }
                    }
                    // A gap (lagged, or published between our replay and subscription): replay.
                    Ok(_) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => { rx = state.hub.subscribe(&id); break; }
                },
                _ = recheck.tick() => break,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    }
}

/// RFC 3339 UTC from Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// A job as clients see it.
pub(crate) async fn job_view(
    state: &AppState,
    job: &Job,
    base: &str,
) -> Result<Generation, ApiError> {
    let file = |id: &str| FileRef {
        id: id.to_string(),
        url: format!("{base}/v1/files/{id}"),
        b64_json: None,
        certificate: None,
    };
    let b64 = job.input.get("response_format").and_then(Value::as_str) == Some("b64_json");
    let output = match &job.output {
        Some(stored) => {
            let stored: GenerationOutput =
                serde_json::from_value(stored.clone()).map_err(ApiError::internal)?;
            let mut images = Vec::with_capacity(stored.images.len());
            for (i, id) in stored.images.iter().enumerate() {
                let mut entry = file(id);
                if b64 {
                    entry.b64_json = Some(read_file_b64(state, id).await);
                }
                entry.certificate = stored.certificates.as_ref().and_then(|c| c.get(i).cloned());
                images.push(entry);
            }
            Some(GenerationFiles {
                images,
                mask: file(&stored.mask),
                layout: file(&stored.layout),
                seed: stored.seed,
                metrics: stored.metrics,
                certificates: stored.certificates,
            })
        }
        None => None,
    };
    let error = match &job.error_code {
        Some(code) if job.status == Status::Failed => Some(JobError {
            code: JobErrorCode::parse(code),
            message: job.error_message.clone(),
        }),
        _ => None,
    };
    let url = |tail: &str| format!("{base}/v1/generations/{}{tail}", job.id);
    Ok(Generation {
        id: job.id.clone(),
        object: "generation",
        status: job.status,
        created_at: rfc3339(job.created_ms),
        started_at: job.started_ms.map(rfc3339),
        completed_at: job.completed_ms.map(rfc3339),
        input: job.input.clone(),
        output,
        error,
        urls: GenerationUrls {
            get: url(""),
            cancel: url("/cancel"),
            events: url("/events"),
        },
    })
}

/// A stored file as base64, or None when it has expired.
pub(crate) async fn read_file_b64(state: &AppState, id: &str) -> Option<String> {
    let record = state.store.file(id).ok()??;
    let bytes = state.store.read_file(&record).ok()??;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_111_235_123), "2026-12-01T07:47:15.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn prefer_wait_is_parsed_and_capped() {
        let mut h = HeaderMap::new();
        h.insert("prefer", "respond-async, wait=90".parse().unwrap());
        assert_eq!(prefer_wait(&h, 60), Some(60));
        h.insert("prefer", "wait=5".parse().unwrap());
        assert_eq!(prefer_wait(&h, 60), Some(5));
        h.insert("prefer", "handling=lenient".parse().unwrap());
        assert_eq!(prefer_wait(&h, 60), None);
    }
}

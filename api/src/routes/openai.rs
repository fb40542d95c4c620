//! `POST /v1/images/generations`, shaped like OpenAI's so existing clients work: it creates a
//! generation job, waits for it and answers `{created, data: [{url} | {b64_json}]}`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::generations::{cancel_job, read_file_b64, require_model, submit, wait_for};
use super::{JsonBody, base_url, job_view};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{
    Fields, GenerationInput, Limits, MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SEED, OUTPUT_FORMATS,
    RESPONSE_FORMATS,
};
use crate::job_error::JobErrorCode;
use crate::schema::{OpenAIImage, OpenAIImageRequest, OpenAIImages};
use crate::state::AppState;
use crate::store::{CancelRequest, Job, Status};

pub const OPENAI_FIELDS: &[&str] = &[
    "prompt",
    "model",
    "n",
    "size",
    "response_format",
    "output_format",
    "quality",
    "style",
    "user",
    "seed",
    "negative_prompt",
    "steps",
    "guidance_scale",
];

#[utoipa::path(
    post,
    path = "/v1/images/generations",
    operation_id = "openaiImages",
    summary = "OpenAI-compatible image generation",
    request_body = OpenAIImageRequest,
    responses((status = 200, description = "The images.", body = OpenAIImages))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let schedulers = state.schedulers();
    let (input, b64) = translate(body.clone(), &schedulers, &state.settings.limits())?;
    crate::admission::check_generation(&state, &input).await?;
    require_model(&state)?;
    let (job, _) = submit(&state, &caller, &input, None, &body)?;
    // Nobody but this caller waits for the job: when it goes away (the connection closes and
    // this future is dropped) or its wait runs out, the job is canceled, not left holding the
    // worker.
    let mut abandon = CancelOnDrop(Some((state.clone(), job.id.clone())));
    let job = wait_for(&state, &job.id, state.settings.openai_wait_secs).await?;
    if job.status.is_terminal() {
        abandon.disarm();
    } else if state.is_shutting_down() {
        drop(abandon);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            format!(
                "the server is shutting down, so generation {} was canceled; retry shortly",
                job.id
            ),
        )
        .with_retry_after(10));
    } else {
        drop(abandon);
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the images were not ready within {} s (openai_wait_secs), so generation {} \
                 was canceled; ask for fewer steps or a smaller size, or use POST \
                 /v1/generations, which does not hold the connection",
                state.settings.openai_wait_secs, job.id
            ),
        ));
    }
    unsuccessful(&job)?;
    let base = base_url(&state, &headers);
    let view = job_view(&state, &job, &base).await?;
    let prompt = input.prompt;
    let mut data = Vec::new();
    for file in view.output.map(|o| o.images).unwrap_or_default() {
        data.push(if b64 {
            // job_view embeds base64 only for jobs created with b64_json; read the files here.
            OpenAIImage {
                url: None,
                b64_json: Some(read_file_b64(&state, &file.id).await),
                revised_prompt: prompt.clone(),
            }
        } else {
            OpenAIImage {
                url: Some(file.url),
                b64_json: None,
                revised_prompt: prompt.clone(),
            }
        });
    }
    Ok(axum::Json(OpenAIImages {
        created: job.created_ms / 1000,
        data,
        output_format: input.output_format,
        id: job.id,
    })
    .into_response())
}

/// Cancels its job when dropped, unless disarmed once the job has ended.
struct CancelOnDrop(Option<(AppState, String)>);

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some((state, id)) = &self.0 else {
            return;
        };
        match cancel_job(state, id) {
            Ok(Some(CancelRequest::CanceledQueued | CancelRequest::WillStop)) => {
                tracing::info!(job = %id, "the caller is gone: job canceled");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(job = %id, error = %e, "canceling an abandoned job"),
        }
    }
}

/// Reads OpenAI's request as a generation request (its own fields either map or are accepted
/// and unused); also whether the images are wanted as base64.
fn translate(
    body: Value,
    schedulers: &[String],
    limits: &Limits,
) -> Result<(GenerationInput, bool), ApiError> {
    let mut f = Fields::new(body, OPENAI_FIELDS, "")?;
    let mut g = Map::new();
    g.insert(
        "prompt".into(),
        json!(f.required_string("prompt", 1, MAX_PROMPT_CHARS)?),
    );
    f.string("model", 0, 256)?;
    f.string("quality", 0, 64)?;
    f.string("style", 0, 64)?;
    f.string("user", 0, 256)?;
    if let Some(n) = f.uint("n", 1, limits.max_n.into(), 1)? {
        g.insert("n".into(), json!(n));
    }
    if let Some(size) = f.string("size", 1, 16)? {
        let (w, h) = parse_size(&size, limits.max_side)?;
        g.insert("width".into(), json!(w));
        g.insert("height".into(), json!(h));
    }
    let b64 = f.choice("response_format", RESPONSE_FORMATS)?.as_deref() == Some("b64_json");
    if let Some(o) = f.choice("output_format", OUTPUT_FORMATS)? {
        g.insert("output_format".into(), json!(o));
    }
    if let Some(seed) = f.nullable_uint("seed", 0, MAX_SEED)? {
        g.insert("seed".into(), json!(seed));
    }
    if let Some(neg) = f.string("negative_prompt", 0, MAX_PROMPT_CHARS)? {
        g.insert("negative_prompt".into(), json!(neg));
    }
    if let Some(steps) = f.uint("steps", 1, limits.max_steps.into(), 1)? {
        g.insert("steps".into(), json!(steps));
    }
    if let Some(gs) = f.number("guidance_scale", 0.0, MAX_GUIDANCE)? {
        g.insert("guidance_scale".into(), json!(gs));
    }
    let input =
        GenerationInput::from_json(Value::Object(g), schedulers, limits).map_err(|mut e| {
            // width/height came from `size`.
            if matches!(e.param.as_deref(), Some("width" | "height")) {
                e.message = format!("size: {}", e.message);
                e.param = Some("size".into());
            }
            e
        })?;
    Ok((input, b64))
}

/// `WxH` with both sides among the offered ones.
fn parse_size(size: &str, max_side: u32) -> Result<(u32, u32), ApiError> {
    let parsed = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    let sizes = crate::openapi::openai_sizes(max_side);
    parsed.filter(|_| sizes.iter().any(|s| s == size)).ok_or_else(|| {
        let list = crate::openapi::OPENAI_SIDES
            .iter()
            .filter(|s| **s <= max_side)
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        ApiError::invalid(
            "size",
            format!(
                "size must be WIDTHxHEIGHT with each side one of {list} (e.g. \"512x512\"); got {size:?}"
            ),
        )
    })
}

/// OpenAI's clients get images or an error: a job that did not succeed in time is answered
/// as the error its outcome maps to.
fn unsuccessful(job: &Job) -> Result<(), ApiError> {
    match job.status {
        Status::Succeeded => Ok(()),
        Status::Failed => {
            let code = job
                .error_code
                .as_deref()
                .map_or(JobErrorCode::GenerationFailed, JobErrorCode::parse);
            let message = job.error_message.clone().unwrap_or_default();
            Err(match code {
                JobErrorCode::InvalidLayout | JobErrorCode::Unsupported => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
                }
                JobErrorCode::Timeout => {
                    ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
                }
                _ => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation_failed",
                    format!("generation {} failed", job.id),
                ),
            })
        }
        Status::Canceled => Err(ApiError::new(
            StatusCode::CONFLICT,
            "canceled",
            format!("generation {} was canceled", job.id),
        )),
        _ => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the images of generation {} were not ready in time", job.id),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: Status, code: Option<&str>) -> Job {
        Job {
            id: "gen_x".into(),
            owner: "anonymous".into(),
            status,
            input: Value::Null,
            output: None,
            error_code: code.map(Into::into),
            error_message: Some("why".into()),
            created_ms: 0,
            started_ms: None,
            completed_ms: None,
            attempts: 1,
            model: None,
        }
    }

    #[test]
    fn job_outcomes_map_to_openai_errors() {
        let cases = [
            (
                Status::Failed,
                Some("invalid_layout"),
                400,
                "invalid_request",
            ),
            (Status::Failed, Some("unsupported"), 400, "invalid_request"),
            (Status::Failed, Some("timeout"), 504, "timeout"),
            (Status::Failed, Some("no_model"), 500, "generation_failed"),
            (Status::Failed, None, 500, "generation_failed"),
            (Status::Canceled, Some("canceled"), 409, "canceled"),
            (Status::Running, None, 504, "timeout"),
        ];
        for (status, code, http, api_code) in cases {
            let e = unsuccessful(&ended(status, code)).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (http, api_code),
                "{status:?} {code:?}"
            );
        }
        assert!(unsuccessful(&ended(Status::Succeeded, None)).is_ok());
    }
}

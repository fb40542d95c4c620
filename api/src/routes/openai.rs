//! `POST /v1/images/generations`, shaped like OpenAI's so existing clients work: it creates a
//! generation job, waits for it and answers `{created, data: [{url} | {b64_json}]}`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::generations::{require_model, submit, wait_for};
use super::{JsonBody, base_url, job_json};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{
    Fields, GenerationInput, MAX_PROMPT_CHARS, MAX_SEED, OUTPUT_FORMATS, RESPONSE_FORMATS,
};
use crate::state::{AppState, ModelState};
use crate::store::Status;

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

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let schedulers = match state.model_state() {
        ModelState::Ready(info) => info.schedulers,
        _ => Vec::new(),
    };
    let limits = state.settings.limits();
    // Translate to a generation request; OpenAI's own fields either map or are accepted and unused.
    let mut f = Fields::new(body.clone(), OPENAI_FIELDS, "")?;
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
        let parsed = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
        let sizes = crate::openapi::openai_sizes(limits.max_side);
        let Some((w, h)) = parsed.filter(|_| sizes.contains(&size)) else {
            let list = crate::openapi::OPENAI_SIDES
                .iter()
                .filter(|s| **s <= limits.max_side)
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::invalid(
                "size",
                format!(
                    "size must be WIDTHxHEIGHT with each side one of {list} (e.g. \"512x512\"); got {size:?}"
                ),
            ));
        };
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
    if let Some(gs) = f.number("guidance_scale", 0.0, crate::input::MAX_GUIDANCE)? {
        g.insert("guidance_scale".into(), json!(gs));
    }
    let input =
        GenerationInput::from_json(Value::Object(g), &schedulers, &limits).map_err(|mut e| {
            // width/height came from `size`.
            if matches!(e.param.as_deref(), Some("width" | "height")) {
                e.message = format!("size: {}", e.message);
                e.param = Some("size".into());
            }
            e
        })?;
    require_model(&state)?;
    let (job, _) = submit(&state, &caller, &input, None, &body)?;
    let job = wait_for(&state, &job.id, state.settings.openai_wait_secs).await?;
    match job.status {
        Status::Succeeded => {}
        Status::Failed => {
            let code = job.error_code.as_deref().unwrap_or("generation_failed");
            let message = job.error_message.clone().unwrap_or_default();
            return Err(match code {
                "invalid_layout" | "unsupported" => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
                }
                "timeout" => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
                _ => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation_failed",
                    format!("generation {} failed", job.id),
                ),
            });
        }
        Status::Canceled => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "canceled",
                format!("generation {} was canceled", job.id),
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the images were not ready in time; generation {} continues: GET /v1/generations/{}",
                    job.id, job.id
                ),
            ));
        }
    }
    let base = base_url(&state, &headers);
    let mut view = job_json(&state, &job, &base).await;
    if b64 {
        // job_json embeds base64 only for jobs created with b64_json; read the files here.
        for img in view["output"]["images"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let id = img["id"].as_str().unwrap_or_default().to_string();
            let bytes = match state.store.file(&id)? {
                Some(r) => tokio::fs::read(state.store.files_dir().join(&r.name))
                    .await
                    .ok(),
                None => None,
            };
            use base64::Engine as _;
            img["b64_json"] = bytes.map_or(Value::Null, |b| {
                json!(base64::engine::general_purpose::STANDARD.encode(b))
            });
        }
    }
    let data: Vec<Value> = view["output"]["images"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|img| {
            if b64 {
                json!({ "b64_json": img["b64_json"], "revised_prompt": job.input["prompt"] })
            } else {
                json!({ "url": img["url"], "revised_prompt": job.input["prompt"] })
            }
        })
        .collect();
    Ok(axum::Json(json!({
        "created": job.created_ms / 1000,
        "data": data,
        "output_format": job.input["output_format"],
        "id": job.id,
    }))
    .into_response())
}

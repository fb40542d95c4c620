//! `POST /v1/layouts` (plan) and `POST /v1/render` (glyph mask), on the blocking pool so that
//! font work never stalls the async runtime.

use super::JsonBody;
use crate::admission::{layout_error, public_font_name, render_error};
use crate::error::ApiError;
use crate::input::{
    Fields, MAX_PROMPT_CHARS, MAX_RENDER_SIDE, MAX_SEED, MAX_SIDE, MIN_SIDE, OutputFormat,
    RANDOM_SEED_MASK, parse_layout,
};
use crate::schema::{LayoutRequest, PlanResponse, RenderRequest, Rendering};
use crate::state::AppState;
use crate::worker::encode;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use image::DynamicImage;
use letterpress_layout::{
    CONSTRAINT_NAMES, CanvasPlan, Layout, PlannerChoice, edit_layout, plan_on_canvas, td2,
};
use serde_json::Value;

pub const LAYOUT_FIELDS: &[&str] = &[
    "prompt",
    "keywords",
    "width",
    "height",
    "seed",
    "planner",
    "llm_constrain",
    "messages",
];
pub const RENDER_FIELDS: &[&str] = &["layout", "format", "inverse", "segmentation", "preview"];

#[utoipa::path(
    post,
    path = "/v1/layouts",
    operation_id = "planLayout",
    summary = "Plan a layout",
    description = "Places the keywords (default: the quoted parts of the prompt) on the canvas with the typographic planner, or an LLM when the server has one. With messages, edits the previous layout as the last message says (by the LLM, or a small set of understood edits with the typographic planner).",
    request_body = LayoutRequest,
    responses((status = 200, description = "The planned layout.", body = PlanResponse))
)]
pub async fn layouts(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(body, LAYOUT_FIELDS, "")?;
    let prompt = f.required_string("prompt", 1, MAX_PROMPT_CHARS)?;
    let keywords = f.keywords("keywords")?;
    let width = f
        .uint("width", MIN_SIDE.into(), MAX_SIDE.into(), 1)?
        .unwrap_or(512) as u32;
    let height = f
        .uint("height", MIN_SIDE.into(), MAX_SIDE.into(), 1)?
        .unwrap_or(512) as u32;
    let seed = f
        .nullable_uint("seed", 0, MAX_SEED)?
        .unwrap_or_else(|| rand::random::<u64>() & RANDOM_SEED_MASK);
    let choice = planner_choice(&mut f, &state)?;
    if let Some(messages) = f.raw("messages") {
        let edit = read_messages(messages, width, height)?;
        if keywords.is_some() {
            return Err(ApiError::invalid(
                "keywords",
                "keywords cannot be given with messages: an edit keeps the previous layout's lines",
            ));
        }
        return edit_response(state, choice, prompt, edit, seed).await;
    }
    let field = if keywords.is_some() {
        "keywords"
    } else {
        "prompt"
    };
    let keywords = keywords.unwrap_or_else(|| letterpress_layout::extract_keywords(&prompt));
    let plan = tokio::task::spawn_blocking(move || {
        let request = CanvasPlan {
            prompt: &prompt,
            keywords: &keywords,
            width,
            height,
            seed,
            font: None,
        };
        plan_on_canvas(&state.renderer, &choice, &request).map(|plan| (plan, prompt, keywords))
    })
    .await
    .map_err(ApiError::internal)?;
    let (plan, prompt, keywords) = plan.map_err(|e| layout_error(e, field))?;
    Ok(axum::Json(PlanResponse::new(plan, prompt, keywords)).into_response())
}

/// The planner the request asks for, with its `llm_constrain` applied.
fn planner_choice(f: &mut Fields, state: &AppState) -> Result<PlannerChoice, ApiError> {
    let planner = f.choice("planner", &["typographic", "llm"])?;
    let constrain = f.choice("llm_constrain", &CONSTRAINT_NAMES)?;
    match (planner.as_deref(), &state.llm) {
        (Some("llm"), None) => Err(ApiError::invalid(
            "planner",
            "planner \"llm\" is not configured on this server (set llm_url); use \"typographic\"",
        )),
        (Some("llm"), Some(config)) => {
            let mut config = config.clone();
            if let Some(c) = constrain {
                config.constrain = c
                    .parse()
                    .map_err(|e| ApiError::invalid("llm_constrain", e))?;
            }
            Ok(PlannerChoice::Llm(config))
        }
        _ => Ok(PlannerChoice::Typographic),
    }
}

/// What `messages` holds: the previous layout and the instruction.
struct Edit {
    layout: Layout,
    instruction: String,
}

/// Reads `messages`: objects with a `role` and a `content`; the last is the user's
/// instruction, and the latest `assistant` message before it holds the previous layout.
fn read_messages(value: Value, width: u32, height: u32) -> Result<Edit, ApiError> {
    let Value::Array(list) = value else {
        return Err(ApiError::invalid(
            "messages",
            "messages must be a list of {role, content} objects",
        ));
    };
    if !(2..=16).contains(&list.len()) {
        return Err(ApiError::invalid(
            "messages",
            "messages must hold 2 to 16 messages: the previous layout (assistant), then the instruction (user)",
        ));
    }
    let mut turns = Vec::with_capacity(list.len());
    for (i, message) in list.into_iter().enumerate() {
        let mut m = Fields::new(message, &["role", "content"], &format!("messages[{i}]."))?;
        let role = m
            .choice("role", &["system", "user", "assistant"])?
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!("messages[{i}].role is required"),
                )
            })?;
        let content = m.raw("content").ok_or_else(|| {
            ApiError::invalid(
                format!("messages[{i}].content"),
                format!("messages[{i}].content is required"),
            )
        })?;
        turns.push((role, content));
    }
    let last = turns.len() - 1;
    let instruction = match &turns[last] {
        (role, Value::String(s))
            if role == "user" && (1..=MAX_PROMPT_CHARS).contains(&s.chars().count()) =>
        {
            s.clone()
        }
        _ => {
            return Err(ApiError::invalid(
                format!("messages[{last}]"),
                format!(
                    "the last message must be the user's instruction: role \"user\", content a string of 1 to {MAX_PROMPT_CHARS} characters"
                ),
            ));
        }
    };
    let Some(at) = turns[..last]
        .iter()
        .rposition(|(role, _)| role == "assistant")
    else {
        return Err(ApiError::invalid(
            "messages",
            "messages needs the previous layout as an \"assistant\" message before the instruction",
        ));
    };
    let layout = previous_layout(
        turns.swap_remove(at).1,
        &format!("messages[{at}].content"),
        width,
        height,
    )?;
    Ok(Edit {
        layout,
        instruction,
    })
}

/// The previous layout: a Layout object, its JSON, or TextDiffuser-2 lines on the request's
/// canvas.
fn previous_layout(
    content: Value,
    name: &str,
    width: u32,
    height: u32,
) -> Result<Layout, ApiError> {
    let content = match content {
        Value::String(s) if s.trim_start().starts_with('{') => {
            serde_json::from_str(&s).map_err(|e| {
                ApiError::invalid(name, format!("{name} is not valid layout JSON: {e}"))
            })?
        }
        Value::String(s) => {
            let parsed = td2::parse(&s, &[]);
            if parsed.lines.is_empty() {
                return Err(ApiError::invalid(
                    name,
                    format!(
                        "{name} holds no layout: expected a layout object or TextDiffuser-2 lines `text l,t,r,b`"
                    ),
                ));
            }
            return Ok(parsed.to_layout(width, height));
        }
        other => other,
    };
    let layout = parse_layout(content, name, MAX_SIDE)?;
    if layout.lines.is_empty() {
        return Err(ApiError::invalid(
            name,
            format!("{name} has no lines to edit"),
        ));
    }
    Ok(layout)
}

async fn edit_response(
    state: AppState,
    choice: PlannerChoice,
    prompt: String,
    edit: Edit,
    seed: u64,
) -> Result<Response, ApiError> {
    let plan = tokio::task::spawn_blocking(move || {
        edit_layout(
            &state.renderer,
            &choice,
            &prompt,
            &edit.layout,
            &edit.instruction,
            seed,
        )
        .map(|plan| (plan, prompt))
    })
    .await
    .map_err(ApiError::internal)?;
    let (plan, prompt) = plan.map_err(|e| layout_error(e, "messages"))?;
    let keywords = plan.layout.lines.iter().map(|l| l.text.clone()).collect();
    Ok(axum::Json(PlanResponse::new(plan, prompt, keywords)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/render",
    operation_id = "renderMask",
    summary = "Render a glyph mask",
    description = "Draws the layout white on black (the glyph ControlNet's input). format png answers the PNG; json answers base64 PNGs and character boxes.",
    request_body = RenderRequest,
    responses((status = 200, description = "The mask.", content(
        (crate::schema::Binary = "image/png"),
        (Rendering = "application/json"),
    )))
)]
pub async fn render(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(body, RENDER_FIELDS, "")?;
    let layout = f
        .layout("layout", MAX_RENDER_SIDE)?
        .ok_or_else(|| ApiError::invalid("layout", "layout is required"))?;
    let as_json = f.choice("format", &["png", "json"])?.as_deref() == Some("json");
    let inverse = f.boolean("inverse")?.unwrap_or(false);
    let segmentation = f.boolean("segmentation")?.unwrap_or(false);
    let preview = f.boolean("preview")?.unwrap_or(false);
    // With format png the body is the mask alone; segmentation and preview need json.
    tokio::task::spawn_blocking(move || -> Result<Response, ApiError> {
        let mut rendering = state
            .renderer
            .render(&layout)
            .map_err(|e| render_error(&e, &layout, &layout))?;
        for line in &mut rendering.lines {
            line.font = public_font_name(&line.font);
        }
        let mask = if inverse {
            rendering.inverse()
        } else {
            rendering.glyph_mask.clone()
        };
        let png = |img: DynamicImage| encode(&img, OutputFormat::Png).map_err(ApiError::internal);
        let mask_png = png(DynamicImage::ImageLuma8(mask))?;
        if !as_json {
            return Ok(([(header::CONTENT_TYPE, "image/png")], mask_png).into_response());
        }
        let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
        let segmentation_png_b64 = if segmentation {
            let map = DynamicImage::ImageLuma8(rendering.segmentation_map());
            Some(b64(png(map)?))
        } else {
            None
        };
        let preview_png_b64 = if preview {
            Some(b64(png(DynamicImage::ImageRgb8(rendering.preview()))?))
        } else {
            None
        };
        let body = Rendering {
            width: rendering.width,
            height: rendering.height,
            mask_png_b64: b64(mask_png),
            char_boxes: rendering.char_boxes,
            lines: rendering.lines,
            warnings: rendering.warnings,
            segmentation_png_b64,
            preview_png_b64,
        };
        Ok(axum::Json(body).into_response())
    })
    .await
    .map_err(ApiError::internal)?
}

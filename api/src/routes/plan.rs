//! `POST /v1/layouts` (plan) and `POST /v1/render` (glyph mask), on the blocking pool so that
//! font work never stalls the async runtime.

use super::JsonBody;
use crate::admission::{layout_error, public_font_name, render_error};
use crate::error::ApiError;
use crate::input::{
    Fields, MAX_PROMPT_CHARS, MAX_RENDER_SIDE, MAX_SEED, MAX_SIDE, MIN_SIDE, OutputFormat,
    RANDOM_SEED_MASK,
};
use crate::schema::{LayoutRequest, PlanResponse, RenderRequest, Rendering};
use crate::state::AppState;
use crate::worker::encode;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use image::DynamicImage;
use letterpress_layout::{CanvasPlan, PlannerChoice, plan_on_canvas};

pub const LAYOUT_FIELDS: &[&str] = &["prompt", "keywords", "width", "height", "seed", "planner"];
pub const RENDER_FIELDS: &[&str] = &["layout", "format", "inverse", "segmentation", "preview"];

#[utoipa::path(
    post,
    path = "/v1/layouts",
    operation_id = "planLayout",
    summary = "Plan a layout",
    description = "Places the keywords (default: the quoted parts of the prompt) on the canvas with the typographic planner, or an LLM when the server has one.",
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
    let choice = match (
        f.choice("planner", &["typographic", "llm"])?.as_deref(),
        &state.llm,
    ) {
        (Some("llm"), None) => {
            return Err(ApiError::invalid(
                "planner",
                "planner \"llm\" is not configured on this server (set llm_url); use \"typographic\"",
            ));
        }
        (Some("llm"), Some(config)) => PlannerChoice::Llm(config.clone()),
        _ => PlannerChoice::Typographic,
    };
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

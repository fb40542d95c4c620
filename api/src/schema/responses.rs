//! Response bodies other than a generation's: plans, renderings, the OpenAI shim's answer and
//! the operational endpoints'. Types from the layout and render crates are carried as they
//! serialize and described as plain objects here, so those crates need no OpenAPI support.

use letterpress_layout::{Plan, Template, TextLine};
use letterpress_render::{CharBox, LineRendering};
use serde::Serialize;
use utoipa::ToSchema;

use crate::input::OutputFormat;

/// `POST /v1/layouts`: the planned layout, with the prompt and keywords it was planned from.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Plan)]
pub struct PlanResponse {
    pub width: u32,
    pub height: u32,
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<TextLine>,
    /// `typographic`, `llm`, or `llm+typographic`.
    pub planner: String,
    /// Composition template (typographic planner only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub template: Option<Template>,
    pub seed: u64,
    /// Planned font size of each line in pixels (typographic placements only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub font_px: Vec<f32>,
    pub warnings: Vec<String>,
    pub prompt: String,
    pub keywords: Vec<String>,
}

impl PlanResponse {
    pub fn new(plan: Plan, prompt: String, keywords: Vec<String>) -> PlanResponse {
        // Taken apart whole: a field added to Plan fails here until it is answered or dropped.
        let Plan {
            layout,
            planner,
            template,
            seed,
            font_px,
            warnings,
        } = plan;
        PlanResponse {
            width: layout.width,
            height: layout.height,
            lines: layout.lines,
            planner,
            template,
            seed,
            font_px,
            warnings,
            prompt,
            keywords,
        }
    }
}

/// One drawn character's ink box.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CharBox)]
pub struct CharBoxSchema {
    pub char: String,
    pub bbox: Vec<i32>,
    pub line: u32,
}

/// `POST /v1/render` with format json: the mask as base64 PNG and where each character went.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rendering {
    pub width: u32,
    pub height: u32,
    pub mask_png_b64: String,
    #[schema(value_type = Vec<CharBoxSchema>)]
    pub char_boxes: Vec<CharBox>,
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<LineRendering>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub segmentation_png_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub preview_png_b64: Option<String>,
}

/// One image of the OpenAI shim's answer: `url`, or `b64_json` when that was asked for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenAIImage {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub url: Option<String>,
    /// Null when the file expired before it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub b64_json: Option<Option<String>>,
    /// The prompt as used (unchanged: no prompt rewriting here).
    pub revised_prompt: String,
}

/// `POST /v1/images/generations`, OpenAI's images response plus the generation's id.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = OpenAIImagesResponse)]
pub struct OpenAIImages {
    /// Unix seconds the generation was created.
    pub created: i64,
    pub data: Vec<OpenAIImage>,
    #[schema(inline)]
    pub output_format: OutputFormat,
    /// The generation behind the images (`GET /v1/generations/{id}`).
    pub id: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// Whether this server can generate images, and with what.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GenerationAvailability {
    pub available: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub schedulers: Option<Vec<String>>,
}

/// `GET /readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub generation: GenerationAvailability,
    /// A scaled-out service (`queue_url`) only: jobs in the queue and live workers, per model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<Vec<ModelQueue>>,
}

/// One model's queue in a scaled-out service.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelQueue {
    pub model: String,
    /// Jobs waiting, or held by a worker and not yet finished.
    pub jobs: u64,
    /// Workers holding the model now.
    pub workers: usize,
}

/// `GET /` without the designer page: where the documentation is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceIndex {
    #[schema(value_type = String)]
    pub service: &'static str,
    #[schema(value_type = String)]
    pub docs: &'static str,
    #[schema(value_type = String)]
    pub openapi: &'static str,
}

/// File bytes as they are (PNG, JPEG, WebP): how binary answers appear in the document.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(
    dead_code,
    reason = "described in the document only; the bytes are sent as they are"
)]
pub struct Binary(Vec<u8>);

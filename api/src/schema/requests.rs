//! The request bodies as the OpenAPI document states them. Bodies are read field by field by
//! [`crate::input::Fields`] (so every error names its field and range); these types carry the
//! same fields and limits for the document, and tests hold the two together: the field lists
//! the readers accept are these types' properties, and each limit here is the reader's constant.
//!
//! Limits an operator may lower (`max_side`, `max_steps`, `max_n`), the loaded model's
//! schedulers and the configured planners are set per server by `openapi::limits`; the values
//! written here are the hard limits.
// Described, never read: the handlers read the bodies with `Fields`.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::input::{MAX_KEYWORD_CHARS, MAX_KEYWORDS, OUTPUT_FORMATS, RESPONSE_FORMATS};

/// Text to place. Default: the quoted parts of the prompt.
#[derive(Deserialize)]
pub struct Keywords(pub Vec<String>);

impl PartialSchema for Keywords {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_KEYWORD_CHARS)),
            )
            .max_items(Some(MAX_KEYWORDS))
            .description(Some(
                "Text to place. Default: the quoted parts of the prompt.",
            ))
            .into()
    }
}

impl ToSchema for Keywords {}

/// A string property that takes one of `values`. Written out rather than derived from a
/// Rust enum: a derived enum with a default comes out as an `allOf` that no string matches.
fn one_of(values: &[&str], default: Option<&str>, description: Option<&str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .default(default.map(|d| json!(d)))
        .description(description)
        .build()
}

fn align_schema() -> Object {
    one_of(&["left", "center", "right"], None, None)
}

fn planner_schema() -> Object {
    one_of(
        &["typographic", "llm"],
        Some("typographic"),
        Some("\"llm\" only when the server has llm_url."),
    )
}

fn render_format_schema() -> Object {
    one_of(&["png", "json"], Some("png"), None)
}

fn output_format_schema() -> Object {
    one_of(OUTPUT_FORMATS, Some("png"), None)
}

fn response_format_schema() -> Object {
    one_of(RESPONSE_FORMATS, Some("url"), None)
}

fn generation_response_format_schema() -> Object {
    one_of(
        RESPONSE_FORMATS,
        Some("url"),
        Some("b64_json also embeds the images in output.images[].b64_json."),
    )
}

/// One text line of a layout.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayoutLine {
    /// `\n` stacks sub-lines.
    #[schema(max_length = 1000)]
    pub text: String,
    /// [left, top, right, bottom] in canvas pixels
    #[schema(min_items = 4, max_items = 4, minimum = -16384, maximum = 16384)]
    pub bbox: Vec<i32>,
    /// An installed font family, e.g. "Noto Sans Bold".
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^/\\#.]+$")]
    pub font: String,
    #[serde(default)]
    #[schema(pattern = "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")]
    pub color: String,
    #[serde(default)]
    #[schema(schema_with = align_schema)]
    pub align: String,
}

/// A canvas and the lines placed on it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Layout)]
pub struct LayoutBody {
    #[schema(minimum = 1, maximum = 2048)]
    pub width: u32,
    #[schema(minimum = 1, maximum = 2048)]
    pub height: u32,
    #[serde(default)]
    #[schema(max_items = 64)]
    pub lines: Vec<LayoutLine>,
}

/// `POST /v1/layouts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayoutRequest {
    #[schema(min_length = 1, max_length = 1000)]
    pub prompt: String,
    #[schema(nullable = false)]
    pub keywords: Option<Keywords>,
    #[serde(default)]
    #[schema(minimum = 64, maximum = 2048, default = 512)]
    pub width: u32,
    #[serde(default)]
    #[schema(minimum = 64, maximum = 2048, default = 512)]
    pub height: u32,
    /// null or absent: random (echoed).
    #[schema(minimum = 0, maximum = 9223372036854775807_u64)]
    pub seed: Option<u64>,
    #[serde(default)]
    #[schema(schema_with = planner_schema)]
    pub planner: String,
    /// How the LLM's answer is constrained (planner "llm" only; ignored otherwise). Default:
    /// the server's `llm_constrain` setting.
    #[serde(default)]
    #[schema(schema_with = constrain_schema)]
    pub llm_constrain: String,
    /// An edit, as TextDiffuser-2's demo converses: the previous layout as an `assistant`
    /// message, then the instruction as the last `user` message ("make the title larger and
    /// move the date to the bottom"). The answer is the edited layout.
    #[schema(min_items = 2, max_items = 16, nullable = false)]
    pub messages: Option<Vec<ChatMessage>>,
}

/// One message of an edit conversation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    #[schema(schema_with = role_schema)]
    pub role: String,
    /// `user`: text. `assistant`: the previous layout, as a Layout object, its JSON, or
    /// TextDiffuser-2 lines (`text l,t,r,b` on the 0..128 grid of width x height).
    pub content: serde_json::Value,
}

fn constrain_schema() -> Object {
    one_of(&letterpress_layout::CONSTRAINT_NAMES, None, None)
}

fn role_schema() -> Object {
    one_of(&["system", "user", "assistant"], None, None)
}

/// `POST /v1/render`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    pub layout: LayoutBody,
    #[serde(default)]
    #[schema(schema_with = render_format_schema)]
    pub format: String,
    /// Black text on white (GlyphControl).
    #[serde(default)]
    #[schema(default = false)]
    pub inverse: bool,
    /// Add TextDiffuser's character-segmentation map (format json; ignored with png).
    #[serde(default)]
    #[schema(default = false)]
    pub segmentation: bool,
    /// Add a preview for people (format json; ignored with png).
    #[serde(default)]
    #[schema(default = false)]
    pub preview: bool,
}

/// `POST /v1/generations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationRequest {
    #[schema(min_length = 1, max_length = 1000)]
    pub prompt: String,
    #[serde(default)]
    #[schema(max_length = 1000, default = "")]
    pub negative_prompt: String,
    #[schema(nullable = false)]
    pub keywords: Option<Keywords>,
    #[schema(nullable = false)]
    pub layout: Option<LayoutBody>,
    /// Default 512 or max_side when lower (or the layout's width rounded up to 8).
    #[serde(default)]
    #[schema(minimum = 64, maximum = 2048, multiple_of = 8)]
    pub width: u32,
    /// Default 512 or max_side when lower (or the layout's height rounded up to 8).
    #[serde(default)]
    #[schema(minimum = 64, maximum = 2048, multiple_of = 8)]
    pub height: u32,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 8, default = 1)]
    pub n: u32,
    /// null or absent: random; always echoed in input.seed. Image i uses seed + i.
    #[schema(minimum = 0, maximum = 9223372036854775807_u64)]
    pub seed: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 150, default = 20)]
    pub steps: u32,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30, default = 7.5)]
    pub guidance_scale: f64,
    /// A scheduler of the loaded model (see /readyz).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub scheduler: String,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2, default = 1.0)]
    pub controlnet_conditioning_scale: f64,
    #[serde(default)]
    #[schema(schema_with = output_format_schema)]
    pub output_format: String,
    #[serde(default)]
    #[schema(schema_with = generation_response_format_schema)]
    pub response_format: String,
    /// Attach a preview image to every k-th step event; 0 = none.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 150, default = 0)]
    pub preview_every: u32,
    /// Start from this PNG instead of noise: the file id of one of your earlier generations'
    /// images (file_…) or a base64 PNG, width×height of this request.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub init_image: String,
    /// With init_image and layout: repaint only this line (0-based index into layout.lines)
    /// in place; the rest of the image is kept.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 63)]
    pub inpaint_line: u32,
    /// With init_image: how much is repainted.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1, default = 0.75)]
    pub strength: f64,
    /// Glyph initialisation: start from the text drawn over the prompt's colour (the first
    /// colour word; grey otherwise), noised to this strength, instead of pure noise. Lower
    /// keeps more of the drawing; 0 is off. Needs text and no init_image. Default: the
    /// server's (on at 0.6 for the embedded demo model, off for others).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub glyph_init: f64,
    /// Read each image's lines back with OCR: the output gets a certificate per image and
    /// the job a `verified` event per image. Off by default (one OCR read per line).
    #[serde(default)]
    #[schema(default = false)]
    pub verify: bool,
    /// Repaint lines that read wrong, in place, at most this many rounds, each with a new
    /// seed; pixels outside the repaired lines stay the first image's. Implies verify.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 5, default = 0)]
    pub repair: u32,
}

/// One text to replace in `POST /v1/edits`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The word or line to replace, as OCR reads it (case and surrounding punctuation ignored).
    #[schema(min_length = 1, max_length = 200)]
    pub old: String,
    /// Its replacement, drawn at the same height (its box widened into free space if longer).
    #[schema(min_length = 1, max_length = 200)]
    pub new: String,
}

/// `POST /v1/edits`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The picture: the file id of one of your earlier PNG results (file_…) or a base64 PNG;
    /// each side 64 to the server's max_side.
    #[schema(min_length = 1)]
    pub image: String,
    #[schema(min_items = 1, max_items = 8)]
    pub replacements: Vec<Replacement>,
    /// What the picture shows, for the model.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1000, default = "a poster")]
    pub prompt: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub negative_prompt: String,
    /// null or absent: random.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9223372036854775807_u64)]
    pub seed: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 150, default = 20)]
    pub steps: u32,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30, default = 7.5)]
    pub guidance_scale: f64,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub scheduler: String,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2, default = 1.0)]
    pub controlnet_conditioning_scale: f64,
    #[serde(default)]
    #[schema(schema_with = output_format_schema)]
    pub output_format: String,
    #[serde(default)]
    #[schema(schema_with = generation_response_format_schema)]
    pub response_format: String,
}

/// `POST /v1/images/generations`, OpenAI's image request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAIImageRequest {
    #[schema(min_length = 1, max_length = 1000)]
    pub prompt: String,
    /// Accepted and ignored: the server's model paints.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub model: String,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 8, default = 1)]
    pub n: u32,
    /// `WIDTHxHEIGHT`, each side one of the offered sides.
    #[serde(default)]
    #[schema(default = "512x512")]
    pub size: String,
    #[serde(default)]
    #[schema(schema_with = response_format_schema)]
    pub response_format: String,
    #[serde(default)]
    #[schema(schema_with = output_format_schema)]
    pub output_format: String,
    #[serde(default)]
    #[schema(max_length = 64)]
    pub quality: String,
    #[serde(default)]
    #[schema(max_length = 64)]
    pub style: String,
    #[serde(default)]
    #[schema(max_length = 256)]
    pub user: String,
    #[schema(minimum = 0, maximum = 9223372036854775807_u64)]
    pub seed: Option<u64>,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub negative_prompt: String,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 150)]
    pub steps: u32,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30)]
    pub guidance_scale: f64,
}

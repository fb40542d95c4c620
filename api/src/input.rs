//! Request bodies: read field by field so that every error names the field and the allowed
//! range, unknown fields are refused (a typo never passes silently), and the limits here are
//! the ones `/openapi.json` publishes.

use letterpress_layout::Layout;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

pub const MAX_PROMPT_CHARS: usize = 1000;
pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 2048;
pub const SIDE_MULTIPLE: u32 = 8;
pub const MAX_STEPS: u32 = 150;
pub const MAX_N: u32 = 8;
pub const MAX_GUIDANCE: f64 = 30.0;
pub const MAX_CONTROLNET_SCALE: f64 = 2.0;
pub const MAX_KEYWORDS: usize = letterpress_layout::planner::MAX_KEYWORDS;
pub const MAX_KEYWORD_CHARS: usize = letterpress_layout::planner::MAX_KEYWORD_CHARS;
pub const MAX_LINES: usize = 64;
pub const MAX_LINE_CHARS: usize = letterpress_render::MAX_LINE_CHARS;
pub const MAX_RENDER_SIDE: u32 = 2048;
/// Box coordinates may reach a little off the canvas (the renderer clips), not arbitrarily far.
pub const MAX_COORD: i64 = 16384;
/// Seeds are stored as i64 by torch; `null` picks one at random.
pub const MAX_SEED: u64 = i64::MAX as u64;
/// Random seeds stay below 2^53 so JavaScript clients echo them back exactly.
pub const RANDOM_SEED_MASK: u64 = (1 << 53) - 1;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// A file id or a base64 PNG; the server's `max_body_bytes` is the real cap.
pub const MAX_INIT_IMAGE_CHARS: usize = 64 << 20;
/// How much of the init image is repainted when the request does not say.
pub const DEFAULT_STRENGTH: f64 = 0.75;

/// A JSON object being read; what is left at the end is an unknown field.
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

impl Fields {
    /// `body` must be an object whose keys are all in `allowed`.
    pub fn new(body: Value, allowed: &[&str], prefix: &str) -> Result<Fields, ApiError> {
        let Value::Object(map) = body else {
            // `prefix` is the object's place followed by a dot (`layout.`).
            let param = match prefix.trim_end_matches('.') {
                "" => "body",
                place => place,
            };
            return Err(ApiError::invalid(
                param,
                format!("{param} must be a JSON object"),
            ));
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "unknown_field",
                format!("unknown field {k:?}; allowed: {}", allowed.join(", ")),
            )
            .with_param(format!("{prefix}{k}")));
        }
        Ok(Fields {
            map,
            prefix: prefix.to_string(),
        })
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// A field as sent, for readers of structured values (`messages`).
    pub fn raw(&mut self, key: &str) -> Option<Value> {
        self.take(key)
    }

    pub fn string(
        &mut self,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<String>, ApiError> {
        let name = self.name(key);
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                let chars = s.chars().count();
                if chars < min || chars > max {
                    Err(ApiError::invalid(
                        &name,
                        format!("{name} must have {min} to {max} characters; it has {chars}"),
                    ))
                } else {
                    Ok(Some(s))
                }
            }
            Some(_) => Err(ApiError::invalid(&name, format!("{name} must be a string"))),
        }
    }

    pub fn required_string(
        &mut self,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<String, ApiError> {
        let name = self.name(key);
        self.string(key, min, max)?
            .ok_or_else(|| ApiError::invalid(&name, format!("{name} is required")))
    }

    /// A whole number in `min..=max`, a multiple of `multiple` (1 for any).
    pub fn uint(
        &mut self,
        key: &str,
        min: u64,
        max: u64,
        multiple: u64,
    ) -> Result<Option<u64>, ApiError> {
        let name = self.name(key);
        let allowed = if multiple > 1 {
            format!(
                "{name} must be a whole number from {min} to {max} and a multiple of {multiple}"
            )
        } else {
            format!("{name} must be a whole number from {min} to {max}")
        };
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let n = match &value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match n {
            Some(n) if n >= min && n <= max && n % multiple == 0 => Ok(Some(n)),
            _ => Err(ApiError::invalid(&name, format!("{allowed}; got {value}"))),
        }
    }

    /// Like [`Fields::uint`] but `null` is allowed and means "absent".
    pub fn nullable_uint(
        &mut self,
        key: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ApiError> {
        if matches!(self.map.get(key), Some(Value::Null)) {
            self.take(key);
            return Ok(None);
        }
        self.uint(key, min, max, 1)
    }

    pub fn number(&mut self, key: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
        let name = self.name(key);
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= min && f <= max) => {
                Ok(n.as_f64())
            }
            Some(v) => Err(ApiError::invalid(
                &name,
                format!("{name} must be a number from {min} to {max}; got {v}"),
            )),
        }
    }

    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        let name = self.name(key);
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(ApiError::invalid(
                &name,
                format!("{name} must be true or false; got {v}"),
            )),
        }
    }

    /// One of `allowed`.
    pub fn choice(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        let name = self.name(key);
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s)),
            Some(v) => Err(ApiError::invalid(
                &name,
                format!("{name} must be one of {}; got {v}", allowed.join(", ")),
            )),
        }
    }

    /// Up to [`MAX_KEYWORDS`] non-empty strings of at most [`MAX_KEYWORD_CHARS`] characters.
    pub fn keywords(&mut self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        let name = self.name(key);
        let bad = || {
            ApiError::invalid(
                &name,
                format!(
                    "{name} must be a list of at most {MAX_KEYWORDS} strings of 1 to \
                     {MAX_KEYWORD_CHARS} characters"
                ),
            )
        };
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() <= MAX_KEYWORDS => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) if (1..=MAX_KEYWORD_CHARS).contains(&s.chars().count()) => {
                        Ok(s)
                    }
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad()),
        }
    }

    /// A layout (canvas, lines) within the published limits.
    pub fn layout(&mut self, key: &str, max_side: u32) -> Result<Option<Layout>, ApiError> {
        let name = self.name(key);
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse_layout(v, &name, max_side).map(Some),
        }
    }
}

/// Reads and checks a layout value; `name` is its place in the request.
pub fn parse_layout(value: Value, name: &str, max_side: u32) -> Result<Layout, ApiError> {
    let mut f = Fields::new(value, &["width", "height", "lines"], &format!("{name}."))?;
    let width = f.uint("width", 1, max_side.into(), 1)?;
    let height = f.uint("height", 1, max_side.into(), 1)?;
    let (Some(width), Some(height)) = (width, height) else {
        return Err(ApiError::invalid(
            name,
            format!("{name}.width and {name}.height are required (1 to {max_side} pixels)"),
        ));
    };
    let lines = match f.take("lines") {
        None => Vec::new(),
        Some(Value::Array(lines)) if lines.len() <= MAX_LINES => lines,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{name}.lines"),
                format!("{name}.lines must be a list of at most {MAX_LINES} lines"),
            ));
        }
    };
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        let lname = format!("{name}.lines[{i}]");
        let mut lf = Fields::new(
            line,
            &["text", "bbox", "font", "color", "align"],
            &format!("{lname}."),
        )?;
        let text = lf.required_string("text", 0, MAX_LINE_CHARS)?;
        let bbox = match lf.take("bbox") {
            Some(Value::Array(c))
                if c.len() == 4
                    && c.iter()
                        .all(|v| v.as_i64().is_some_and(|x| x.abs() <= MAX_COORD)) =>
            {
                let c: Vec<i32> = c
                    .iter()
                    .filter_map(|v| v.as_i64())
                    .map(|x| x as i32)
                    .collect();
                letterpress_layout::BBox::new(c[0], c[1], c[2], c[3])
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{lname}.bbox"),
                    format!(
                        "{lname}.bbox must be [left, top, right, bottom], whole numbers from \
                         -{MAX_COORD} to {MAX_COORD}"
                    ),
                ));
            }
        };
        let font = lf.string("font", 1, 200)?;
        if let Some(font) = &font
            && (font.contains(['/', '\\', '#', '.']))
        {
            // Fonts are installed families; a path would let clients probe the server's files.
            return Err(ApiError::invalid(
                format!("{lname}.font"),
                format!(
                    "{lname}.font must be an installed font family name (e.g. \"DejaVu Sans Bold\"), not a file path"
                ),
            ));
        }
        let color = match lf.string("color", 4, 7)? {
            None => None,
            Some(c) => Some(c.parse().map_err(|e: String| {
                ApiError::invalid(format!("{lname}.color"), format!("{lname}.color: {e}"))
            })?),
        };
        let align = match lf.choice("align", &["left", "center", "right"])? {
            None => None,
            Some(a) => serde_json::from_value(Value::String(a)).ok(),
        };
        out.push(letterpress_layout::TextLine {
            text,
            bbox,
            font,
            color,
            align,
        });
    }
    Ok(Layout::new(width as u32, height as u32, out))
}

/// The images' file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    Png,
    Jpeg,
    Webp,
}

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Webp => "webp",
        }
    }
}

/// How answers carry the images: URLs, or base64 inline too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    Url,
    B64Json,
}

/// A generation request with defaults filled in and the seed chosen: what is stored and
/// echoed as `input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationInput {
    pub prompt: String,
    pub negative_prompt: String,
    pub keywords: Vec<String>,
    pub layout: Option<Layout>,
    pub width: u32,
    pub height: u32,
    pub n: u32,
    pub seed: u64,
    pub steps: u32,
    pub guidance_scale: f64,
    pub scheduler: String,
    pub controlnet_conditioning_scale: f64,
    pub output_format: OutputFormat,
    pub response_format: ResponseFormat,
    pub preview_every: u32,
    /// Start from this picture: a file id of an earlier result, or a base64 PNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_image: Option<String>,
    /// Repaint only this line (0-based index into `layout.lines`) of `init_image`, in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inpaint_line: Option<u32>,
    /// With `init_image`: how much is repainted, (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Glyph initialisation strength, (0, 1]; `None`: the server's default; 0: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glyph_init: Option<f64>,
    /// Read each image's lines back with OCR (a certificate per image); implied by `repair`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
    /// Repair rounds for lines that read wrong, 0 to [`MAX_REPAIR`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repair: u32,
    /// A `POST /v1/edits` job: the picture and the texts to replace in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<crate::edit_input::EditSpec>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The most repair rounds a job may ask for (each can cost about one more generation).
pub const MAX_REPAIR: u32 = 5;

pub const GENERATION_FIELDS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "keywords",
    "layout",
    "width",
    "height",
    "n",
    "seed",
    "steps",
    "guidance_scale",
    "scheduler",
    "controlnet_conditioning_scale",
    "output_format",
    "response_format",
    "preview_every",
    "init_image",
    "inpaint_line",
    "strength",
    "glyph_init",
    "verify",
    "repair",
];

pub const OUTPUT_FORMATS: &[&str] = &["png", "jpeg", "webp"];
pub const RESPONSE_FORMATS: &[&str] = &["url", "b64_json"];

/// The generation limits a server publishes: the hard limits above, or lower ones an operator
/// sets to cap the cost of a job (`max_side`, `max_steps`, `max_n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_side: u32,
    pub max_steps: u32,
    pub max_n: u32,
    /// Most width × height × steps × images one job may cost.
    pub max_pixel_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_side: MAX_SIDE,
            max_steps: MAX_STEPS,
            max_n: MAX_N,
            max_pixel_steps: u64::MAX,
        }
    }
}

impl Limits {
    /// Refuses a job over the pixel-steps budget, with the arithmetic and the limit. With an
    /// init image only `strength × steps` steps run, as the pipelines do.
    pub fn check_cost(
        &self,
        (width, height): (u32, u32),
        steps: u32,
        strength: Option<f64>,
        n: u32,
    ) -> Result<(), ApiError> {
        let run = strength.map_or(u64::from(steps), |s| {
            (f64::from(steps) * s).ceil().max(1.0) as u64
        });
        let cost = u64::from(width) * u64::from(height) * run * u64::from(n);
        if cost <= self.max_pixel_steps {
            return Ok(());
        }
        let at_512 = self.max_pixel_steps / (512 * 512);
        let example = if at_512 >= 1 {
            format!(" (e.g. one 512x512 image at {at_512} steps)")
        } else {
            String::new()
        };
        Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "job_too_large",
            format!(
                "this job costs {width}x{height} pixels × {run} steps × {n} image(s) = {cost} \
                 pixel-steps; this server allows at most {} per job{example}: lower the size, \
                 steps or n",
                self.max_pixel_steps
            ),
        ))
    }
}

impl GenerationInput {
    /// Reads a `POST /v1/generations` body. `schedulers` are the model's (first = default);
    /// with none loaded any name passes here and the 503 comes later.
    pub fn from_json(
        body: Value,
        schedulers: &[String],
        limits: &Limits,
    ) -> Result<GenerationInput, ApiError> {
        let mut f = Fields::new(body, GENERATION_FIELDS, "")?;
        let prompt = f.required_string("prompt", 1, MAX_PROMPT_CHARS)?;
        let negative_prompt = f
            .string("negative_prompt", 0, MAX_PROMPT_CHARS)?
            .unwrap_or_default();
        let keywords = f.keywords("keywords")?;
        let layout = f.layout("layout", MAX_SIDE)?;
        let side = |f: &mut Fields, k: &str| {
            f.uint(
                k,
                MIN_SIDE.into(),
                limits.max_side.into(),
                SIDE_MULTIPLE.into(),
            )
            .map(|v| v.map(|v| v as u32))
        };
        let width = side(&mut f, "width")?;
        let height = side(&mut f, "height")?;
        // Without explicit sides a given layout's canvas is the size (rounded to 8).
        let round8 =
            |v: u32| (v.div_ceil(SIDE_MULTIPLE) * SIDE_MULTIPLE).clamp(MIN_SIDE, limits.max_side);
        // The default side is 512, or the server's max_side when that is lower.
        let default_side = 512.min(limits.max_side);
        let width = width
            .or(layout.as_ref().map(|l| round8(l.width)))
            .unwrap_or(default_side);
        let height = height
            .or(layout.as_ref().map(|l| round8(l.height)))
            .unwrap_or(default_side);
        let n = f.uint("n", 1, limits.max_n.into(), 1)?.unwrap_or(1) as u32;
        let seed = f
            .nullable_uint("seed", 0, MAX_SEED)?
            .unwrap_or_else(|| rand::random::<u64>() & RANDOM_SEED_MASK);
        let steps = f
            .uint("steps", 1, limits.max_steps.into(), 1)?
            .unwrap_or(20.min(limits.max_steps.into())) as u32;
        let guidance_scale = f
            .number("guidance_scale", 0.0, MAX_GUIDANCE)?
            .unwrap_or(7.5);
        let scheduler = f.string("scheduler", 1, 64)?;
        let scheduler = match (scheduler, schedulers.first()) {
            (Some(s), _) if schedulers.is_empty() || schedulers.contains(&s) => s,
            (Some(s), _) => {
                return Err(ApiError::invalid(
                    "scheduler",
                    format!(
                        "scheduler {s:?} is not available; this model offers {}",
                        schedulers.join(", ")
                    ),
                ));
            }
            (None, Some(default)) => default.clone(),
            (None, None) => "default".into(),
        };
        let controlnet_conditioning_scale = f
            .number("controlnet_conditioning_scale", 0.0, MAX_CONTROLNET_SCALE)?
            .unwrap_or(1.0);
        let output_format = match f.choice("output_format", OUTPUT_FORMATS)?.as_deref() {
            Some("jpeg") => OutputFormat::Jpeg,
            Some("webp") => OutputFormat::Webp,
            _ => OutputFormat::Png,
        };
        let response_format = match f.choice("response_format", RESPONSE_FORMATS)?.as_deref() {
            Some("b64_json") => ResponseFormat::B64Json,
            _ => ResponseFormat::Url,
        };
        let preview_every = f
            .uint("preview_every", 0, MAX_STEPS.into(), 1)?
            .unwrap_or(0) as u32;
        let init_image = f.string("init_image", 1, MAX_INIT_IMAGE_CHARS)?;
        let inpaint_line = f
            .uint("inpaint_line", 0, (MAX_LINES - 1) as u64, 1)?
            .map(|i| i as u32);
        let strength = f.number("strength", 0.0, 1.0)?;
        check_inpainting(
            init_image.is_some(),
            inpaint_line,
            strength,
            layout.as_ref(),
        )?;
        let glyph_init = f.number("glyph_init", 0.0, 1.0)?;
        if glyph_init.is_some_and(|s| s > 0.0) {
            check_glyph_init(
                &prompt,
                keywords.as_deref(),
                layout.as_ref(),
                init_image.is_some(),
            )?;
        }
        let repair = f.uint("repair", 0, MAX_REPAIR.into(), 1)?.unwrap_or(0) as u32;
        if repair > 0 && inpaint_line.is_some() {
            return Err(ApiError::invalid(
                "repair",
                "repair repaints any line that reads wrong, but inpaint_line keeps every other \
                 line: send one or the other",
            ));
        }
        let verify = f.boolean("verify")?.unwrap_or(false) || repair > 0;
        let runs = init_image
            .as_ref()
            .map(|_| strength.unwrap_or(DEFAULT_STRENGTH));
        // A repair round can repaint every image once more.
        limits.check_cost((width, height), steps, runs, n * (1 + repair))?;
        Ok(GenerationInput {
            prompt,
            negative_prompt,
            keywords: keywords.unwrap_or_default(),
            layout,
            width,
            height,
            n,
            seed,
            steps,
            guidance_scale,
            scheduler,
            controlnet_conditioning_scale,
            output_format,
            response_format,
            preview_every,
            init_image,
            inpaint_line,
            strength,
            glyph_init,
            verify,
            repair,
            edit: None,
        })
    }
}

/// Glyph initialisation starts from the request's text, so it needs some, and an init image
/// would be a second starting picture.
fn check_glyph_init(
    prompt: &str,
    keywords: Option<&[String]>,
    layout: Option<&Layout>,
    has_init: bool,
) -> Result<(), ApiError> {
    if has_init {
        return Err(ApiError::invalid(
            "glyph_init",
            "glyph_init starts from the text's glyphs; init_image gives another starting \
             picture: send one or the other",
        ));
    }
    let has_text = match (layout, keywords) {
        (Some(layout), _) => !layout.lines.is_empty(),
        (None, Some(k)) if !k.is_empty() => true,
        _ => !letterpress_layout::extract_keywords(prompt).is_empty(),
    };
    if !has_text {
        return Err(ApiError::invalid(
            "glyph_init",
            "glyph_init needs text to start from: quote it in the prompt, or send keywords or \
             a layout",
        ));
    }
    Ok(())
}

/// The img2img fields go together: a line needs a picture and the layout it indexes.
fn check_inpainting(
    has_init: bool,
    inpaint_line: Option<u32>,
    strength: Option<f64>,
    layout: Option<&Layout>,
) -> Result<(), ApiError> {
    if strength == Some(0.0) {
        return Err(ApiError::invalid(
            "strength",
            "strength must be above 0 (0 repaints nothing) and at most 1",
        ));
    }
    if !has_init && (inpaint_line.is_some() || strength.is_some()) {
        let field = if inpaint_line.is_some() {
            "inpaint_line"
        } else {
            "strength"
        };
        return Err(ApiError::invalid(
            field,
            format!("{field} needs init_image (the picture to repaint)"),
        ));
    }
    if let Some(i) = inpaint_line {
        let Some(layout) = layout else {
            return Err(ApiError::invalid(
                "inpaint_line",
                "inpaint_line needs the layout whose line it names (send the result's layout)",
            ));
        };
        if i as usize >= layout.lines.len() {
            return Err(ApiError::invalid(
                "inpaint_line",
                format!(
                    "inpaint_line {i} is out of range: the layout has {} line(s), numbered from 0",
                    layout.lines.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(body: Value) -> Result<GenerationInput, ApiError> {
        GenerationInput::from_json(body, &["ddim".into(), "euler".into()], &Limits::default())
    }

    #[test]
    fn defaults_and_seed_are_filled_in() {
        let g = read(json!({"prompt": "a 'SALE' poster", "seed": null})).unwrap();
        assert_eq!((g.width, g.height, g.n, g.steps), (512, 512, 1, 20));
        assert_eq!(g.scheduler, "ddim");
        assert!(g.seed <= MAX_SEED);
        let g = read(json!({"prompt": "p", "layout": {"width": 300, "height": 200, "lines": []}}))
            .unwrap();
        assert_eq!((g.width, g.height), (304, 200));
    }

    #[test]
    fn jobs_over_the_pixel_steps_budget_are_refused_with_the_limit() {
        let limits = Limits {
            max_pixel_steps: 512 * 512 * 30,
            ..Limits::default()
        };
        let read = |body| GenerationInput::from_json(body, &[], &limits);
        assert!(read(json!({"prompt": "p", "steps": 30})).is_ok());
        let e = read(json!({"prompt": "p", "width": 2048, "height": 2048})).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "job_too_large"));
        assert!(
            e.message
                .contains("2048x2048 pixels × 20 steps × 1 image(s) = 83886080")
                && e.message.contains("at most 7864320")
                && e.message.contains("512x512 image at 30 steps"),
            "{e}"
        );
        assert!(read(json!({"prompt": "p", "steps": 30, "n": 2})).is_err());
        // An init image runs strength × steps: 60 steps at 0.5 cost 30.
        let img2img = json!({"prompt": "p", "steps": 60, "init_image": "file_x", "strength": 0.5});
        assert!(read(img2img).is_ok());
    }

    #[test]
    fn errors_name_the_field_and_the_range() {
        let cases = [
            (
                json!({"prompt": "p", "width": 100}),
                "width",
                "multiple of 8",
            ),
            (json!({"prompt": "p", "steps": 0}), "steps", "1 to 150"),
            (json!({"prompt": "p", "n": 9}), "n", "1 to 8"),
            (
                json!({"prompt": "p", "guidance_scale": 31}),
                "guidance_scale",
                "0 to 30",
            ),
            (
                json!({"prompt": "x".repeat(1001)}),
                "prompt",
                "1 to 1000 characters",
            ),
            (
                json!({"prompt": "p", "scheduler": "magic"}),
                "scheduler",
                "ddim, euler",
            ),
            (
                json!({"prompt": "p", "stepz": 3}),
                "stepz",
                "allowed: prompt",
            ),
            (json!({"steps": 3}), "prompt", "required"),
            (
                json!({"prompt": "p", "layout": {"width": 64, "height": 64, "lines": [{"text": "a", "bbox": [0, 0, 9, 9], "font": "../../etc/passwd"}]}}),
                "layout.lines[0].font",
                "not a file path",
            ),
            (
                json!({"prompt": "p", "inpaint_line": 0}),
                "inpaint_line",
                "needs init_image",
            ),
            (
                json!({"prompt": "p", "init_image": "file_x", "inpaint_line": 0}),
                "inpaint_line",
                "needs the layout",
            ),
            (
                json!({"prompt": "p", "init_image": "file_x", "inpaint_line": 1, "layout": {"width": 64, "height": 64, "lines": [{"text": "a", "bbox": [0, 0, 9, 9]}]}}),
                "inpaint_line",
                "out of range: the layout has 1 line(s)",
            ),
            (
                json!({"prompt": "p", "init_image": "file_x", "strength": 0}),
                "strength",
                "above 0",
            ),
            (json!({"prompt": "p", "repair": 6}), "repair", "0 to 5"),
            (
                json!({"prompt": "p", "init_image": "file_x", "inpaint_line": 0, "repair": 1, "layout": {"width": 64, "height": 64, "lines": [{"text": "a", "bbox": [0, 0, 9, 9]}]}}),
                "repair",
                "inpaint_line keeps",
            ),
            (
                json!({"prompt": "p 'SALE'", "glyph_init": 1.5}),
                "glyph_init",
                "1",
            ),
            (
                json!({"prompt": "no quoted text", "glyph_init": 0.6}),
                "glyph_init",
                "needs text",
            ),
            (
                json!({"prompt": "p", "keywords": ["SALE"], "init_image": "file_x", "glyph_init": 0.6}),
                "glyph_init",
                "one or the other",
            ),
            (
                json!({"prompt": "p", "verify": "yes"}),
                "verify",
                "true or false",
            ),
        ];
        for (body, param, words) in cases {
            let e = read(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{e}");
            assert!(e.message.contains(words), "{e}");
        }
    }

    #[test]
    fn glyph_init_is_read_and_zero_is_off_even_without_text() {
        let on = read(json!({"prompt": "a poster 'SALE'", "glyph_init": 0.6})).unwrap();
        assert_eq!(on.glyph_init, Some(0.6));
        let off = read(json!({"prompt": "no text", "glyph_init": 0})).unwrap();
        assert_eq!(off.glyph_init, Some(0.0));
        assert_eq!(read(json!({"prompt": "p"})).unwrap().glyph_init, None);
    }
}

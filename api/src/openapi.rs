//! The OpenAPI 3.0 document, built from the same limits the handlers enforce (and the loaded
//! model's schedulers), and a self-contained HTML page that reads it.

use serde_json::{Value, json};

use crate::input::*;
use crate::state::{AppState, ModelState};

/// Sides offered through the OpenAI shim's `size` (`WxH` from any two of these).
pub const OPENAI_SIDES: &[u32] = &[64, 128, 256, 512, 768, 1024, 1536, 1792, 2048];

/// `WxH` for every pair of [`OPENAI_SIDES`] up to `max_side`.
pub fn openai_sizes(max_side: u32) -> Vec<String> {
    let sides: Vec<u32> = OPENAI_SIDES
        .iter()
        .copied()
        .filter(|s| *s <= max_side)
        .collect();
    sides
        .iter()
        .flat_map(|w| sides.iter().map(move |h| format!("{w}x{h}")))
        .collect()
}

fn error_responses(codes: &[(&str, &str)]) -> Value {
    let mut map = serde_json::Map::new();
    for (code, description) in codes {
        map.insert(code.to_string(), json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        }));
    }
    Value::Object(map)
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

fn json_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn ok_json(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// OpenAPI links from a created job to the operations that take its id (stateful testing,
/// generated clients).
fn with_links(mut response: Value) -> Value {
    let id = json!({ "id": "$response.body#/id" });
    response["links"] = json!({
        "GetGeneration": { "operationId": "getGeneration", "parameters": id },
        "GenerationEvents": { "operationId": "generationEvents", "parameters": id },
        "CancelGeneration": { "operationId": "cancelGeneration", "parameters": id },
    });
    response
}

/// Links from a finished job to its files.
fn with_file_links(mut response: Value) -> Value {
    response["links"] = json!({
        "GetMask": { "operationId": "getFile", "parameters": { "id": "$response.body#/output/mask/id" } },
        "GetLayout": { "operationId": "getFile", "parameters": { "id": "$response.body#/output/layout/id" } },
        "GetImage": { "operationId": "getFile", "parameters": { "id": "$response.body#/output/images/0/id" } },
    });
    response
}

fn id_param(prefix: &str) -> Value {
    json!([{ "name": "id", "in": "path", "required": true,
             "description": format!("`{prefix}` and 32 hex digits"),
             "schema": { "type": "string" } }])
}

/// The document; `servers` is left out so clients use the address they called.
pub fn document(state: &AppState) -> Value {
    let schedulers: Vec<String> = match state.model_state() {
        ModelState::Ready(info) => info.schedulers,
        _ => Vec::new(),
    };
    let planners: Vec<&str> = if state.llm.is_some() {
        vec!["typographic", "llm"]
    } else {
        vec!["typographic"]
    };
    let scheduler_schema = if schedulers.is_empty() {
        json!({ "type": "string", "minLength": 1, "maxLength": 64, "description": "A scheduler of the loaded model (see /readyz)." })
    } else {
        json!({ "type": "string", "enum": schedulers, "description": "Default: the first." })
    };
    let common_errors = [
        (
            "400",
            "Invalid request: the message names the field and the allowed range.",
        ),
        (
            "401",
            "Missing or invalid API key (when the server has keys).",
        ),
        ("413", "Body over the size limit."),
        ("415", "Body is not JSON."),
        ("429", "Rate limit or full queue; see Retry-After."),
    ];
    let mut gen_errors = common_errors.to_vec();
    gen_errors.extend([
        ("422", "Idempotency-Key reused with a different body."),
        (
            "503",
            "No model loaded (the message says how to give one), loading, or shutting down.",
        ),
    ]);
    let mut openai_errors = gen_errors.clone();
    openai_errors.extend([
        ("409", "The generation was canceled."),
        ("500", "The model failed."),
        ("504", "The images were not ready in time."),
    ]);
    let read_errors = [
        ("401", "Missing or invalid API key."),
        ("404", "No such generation (or not yours)."),
        ("429", "Rate limited."),
    ];
    let limits = state.settings.limits();
    let side = |desc: &str| json!({ "type": "integer", "minimum": MIN_SIDE, "maximum": limits.max_side, "multipleOf": SIDE_MULTIPLE, "description": desc });
    let sse = json!({ "description": "Server-sent events until the job ends: `queued`, `layout`, `rendering`, `step` ({step, steps, preview?}), `requeued`, then `succeeded`, `failed` or `canceled`. Each has an `id`; send `Last-Event-ID` to resume.",
                      "content": { "text/event-stream": { "schema": {
                          "type": "object", "description": "One event; `data` is a JSON object.",
                          "properties": {
                              "id": { "type": "string" },
                              "event": { "type": "string", "enum": ["queued", "layout", "rendering", "step", "requeued", "succeeded", "failed", "canceled"] },
                              "data": { "type": "string" } } } } } });
    // Built apart: one json! literal this deep reaches the macro recursion limit.
    let init_image_schema = json!({ "type": "string", "minLength": 1, "description": "Start from this PNG instead of noise: the file id of one of your earlier generations' images (file_…) or a base64 PNG, width×height of this request." });
    let inpaint_line_schema = json!({ "type": "integer", "minimum": 0, "maximum": MAX_LINES - 1, "description": "With init_image and layout: repaint only this line (0-based index into layout.lines) in place; the rest of the image is kept." });
    let strength_schema = json!({ "type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1, "default": DEFAULT_STRENGTH, "description": "With init_image: how much is repainted." });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Letterpress",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Text-in-image poster generation: plan a layout, render its glyph mask, generate posters with a glyph ControlNet. Jobs follow Replicate's conventions; errors and /v1/images/generations follow OpenAI's.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "Only when the server is configured with api_key_hashes." } },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message", "param", "type"],
                        "properties": { "code": { "type": "string" }, "message": { "type": "string" },
                                        "param": { "type": "string", "nullable": true }, "type": { "type": "string" } } } }
                },
                "LayoutLine": {
                    "type": "object", "additionalProperties": false, "required": ["text", "bbox"],
                    "properties": {
                        "text": { "type": "string", "maxLength": MAX_LINE_CHARS, "description": "`\\n` stacks sub-lines." },
                        "bbox": { "type": "array", "minItems": 4, "maxItems": 4, "description": "[left, top, right, bottom] in canvas pixels",
                                  "items": { "type": "integer", "minimum": -MAX_COORD, "maximum": MAX_COORD } },
                        "font": { "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^/\\\\#.]+$", "description": "An installed font family, e.g. \"Noto Sans Bold\"." },
                        "color": { "type": "string", "pattern": "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$" },
                        "align": { "type": "string", "enum": ["left", "center", "right"] }
                    }
                },
                "Layout": {
                    "type": "object", "additionalProperties": false, "required": ["width", "height"],
                    "properties": {
                        "width": { "type": "integer", "minimum": 1, "maximum": MAX_RENDER_SIDE },
                        "height": { "type": "integer", "minimum": 1, "maximum": MAX_RENDER_SIDE },
                        "lines": { "type": "array", "maxItems": MAX_LINES, "items": { "$ref": "#/components/schemas/LayoutLine" } }
                    }
                },
                "Keywords": { "type": "array", "maxItems": MAX_KEYWORDS, "items": { "type": "string", "minLength": 1, "maxLength": MAX_KEYWORD_CHARS },
                              "description": "Text to place. Default: the quoted parts of the prompt." },
                "LayoutRequest": {
                    "type": "object", "additionalProperties": false, "required": ["prompt"],
                    "properties": {
                        "prompt": { "type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS },
                        "keywords": { "$ref": "#/components/schemas/Keywords" },
                        "width": { "type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE, "default": 512 },
                        "height": { "type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE, "default": 512 },
                        "seed": { "type": "integer", "minimum": 0, "maximum": MAX_SEED, "nullable": true, "description": "null or absent: random (echoed)." },
                        "planner": { "type": "string", "enum": planners, "default": "typographic", "description": "\"llm\" only when the server has llm_url." }
                    }
                },
                "Plan": {
                    "type": "object", "required": ["width", "height", "lines", "planner", "seed", "warnings", "prompt", "keywords"],
                    "properties": {
                        "width": { "type": "integer" }, "height": { "type": "integer" },
                        "lines": { "type": "array", "items": { "type": "object" } },
                        "planner": { "type": "string" }, "template": { "type": "string" },
                        "seed": { "type": "integer" }, "font_px": { "type": "array", "items": { "type": "number" } },
                        "warnings": { "type": "array", "items": { "type": "string" } },
                        "prompt": { "type": "string" }, "keywords": { "type": "array", "items": { "type": "string" } }
                    }
                },
                "RenderRequest": {
                    "type": "object", "additionalProperties": false, "required": ["layout"],
                    "properties": {
                        "layout": { "$ref": "#/components/schemas/Layout" },
                        "format": { "type": "string", "enum": ["png", "json"], "default": "png" },
                        "inverse": { "type": "boolean", "default": false, "description": "Black text on white (GlyphControl)." },
                        "segmentation": { "type": "boolean", "default": false, "description": "Add TextDiffuser's character-segmentation map (format json; ignored with png)." },
                        "preview": { "type": "boolean", "default": false, "description": "Add a preview for people (format json; ignored with png)." }
                    }
                },
                "Rendering": {
                    "type": "object", "required": ["width", "height", "mask_png_b64", "char_boxes", "lines", "warnings"],
                    "properties": {
                        "width": { "type": "integer" }, "height": { "type": "integer" },
                        "mask_png_b64": { "type": "string" },
                        "char_boxes": { "type": "array", "items": { "type": "object", "required": ["char", "bbox", "line"],
                            "properties": { "char": { "type": "string" }, "bbox": { "type": "array", "items": { "type": "integer" } }, "line": { "type": "integer" } } } },
                        "lines": { "type": "array", "items": { "type": "object" } },
                        "warnings": { "type": "array", "items": { "type": "string" } },
                        "segmentation_png_b64": { "type": "string" }, "preview_png_b64": { "type": "string" }
                    }
                },
                "GenerationRequest": {
                    "type": "object", "additionalProperties": false, "required": ["prompt"],
                    "properties": {
                        "prompt": { "type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS },
                        "negative_prompt": { "type": "string", "maxLength": MAX_PROMPT_CHARS, "default": "" },
                        "keywords": { "$ref": "#/components/schemas/Keywords" },
                        "layout": { "$ref": "#/components/schemas/Layout" },
                        "width": side("Default 512 or max_side when lower (or the layout's width rounded up to 8)."),
                        "height": side("Default 512 or max_side when lower (or the layout's height rounded up to 8)."),
                        "n": { "type": "integer", "minimum": 1, "maximum": limits.max_n, "default": 1 },
                        "seed": { "type": "integer", "minimum": 0, "maximum": MAX_SEED, "nullable": true, "description": "null or absent: random; always echoed in input.seed. Image i uses seed + i." },
                        "steps": { "type": "integer", "minimum": 1, "maximum": limits.max_steps, "default": 20.min(limits.max_steps) },
                        "guidance_scale": { "type": "number", "minimum": 0, "maximum": MAX_GUIDANCE, "default": 7.5 },
                        "scheduler": scheduler_schema,
                        "controlnet_conditioning_scale": { "type": "number", "minimum": 0, "maximum": MAX_CONTROLNET_SCALE, "default": 1.0 },
                        "output_format": { "type": "string", "enum": OUTPUT_FORMATS, "default": "png" },
                        "response_format": { "type": "string", "enum": RESPONSE_FORMATS, "default": "url", "description": "b64_json also embeds the images in output.images[].b64_json." },
                        "preview_every": { "type": "integer", "minimum": 0, "maximum": MAX_STEPS, "default": 0, "description": "Attach a preview image to every k-th step event; 0 = none." },
                        "init_image": init_image_schema,
                        "inpaint_line": inpaint_line_schema,
                        "strength": strength_schema
                    }
                },
                "FileRef": { "type": "object", "required": ["id", "url"], "properties": { "id": { "type": "string" }, "url": { "type": "string" }, "b64_json": { "type": "string", "nullable": true } } },
                "Generation": {
                    "type": "object", "required": ["id", "status", "created_at", "input", "output", "error", "urls"],
                    "properties": {
                        "id": { "type": "string" },
                        "object": { "type": "string" },
                        "status": { "type": "string", "enum": ["queued", "planning", "rendering", "running", "succeeded", "failed", "canceled"] },
                        "created_at": { "type": "string" },
                        "started_at": { "type": "string", "nullable": true },
                        "completed_at": { "type": "string", "nullable": true },
                        "input": { "type": "object" },
                        "output": { "type": "object", "nullable": true, "properties": {
                            "images": { "type": "array", "items": { "$ref": "#/components/schemas/FileRef" } },
                            "mask": { "$ref": "#/components/schemas/FileRef" },
                            "layout": { "$ref": "#/components/schemas/FileRef" },
                            "seed": { "type": "integer" }, "metrics": { "type": "object" } } },
                        "error": { "type": "object", "nullable": true, "properties": { "code": { "type": "string" }, "message": { "type": "string", "nullable": true } } },
                        "urls": { "type": "object", "required": ["get", "cancel", "events"], "properties": {
                            "get": { "type": "string" }, "cancel": { "type": "string" }, "events": { "type": "string" } } }
                    }
                },
                "OpenAIImageRequest": {
                    "type": "object", "additionalProperties": false, "required": ["prompt"],
                    "properties": {
                        "prompt": { "type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS },
                        "model": { "type": "string", "maxLength": 256, "description": "Accepted and ignored: the server's model paints." },
                        "n": { "type": "integer", "minimum": 1, "maximum": limits.max_n, "default": 1 },
                        "size": { "type": "string", "enum": openai_sizes(limits.max_side), "default": format!("{0}x{0}", 512.min(limits.max_side)) },
                        "response_format": { "type": "string", "enum": RESPONSE_FORMATS, "default": "url" },
                        "output_format": { "type": "string", "enum": OUTPUT_FORMATS, "default": "png" },
                        "quality": { "type": "string", "maxLength": 64 },
                        "style": { "type": "string", "maxLength": 64 },
                        "user": { "type": "string", "maxLength": 256 },
                        "seed": { "type": "integer", "minimum": 0, "maximum": MAX_SEED, "nullable": true },
                        "negative_prompt": { "type": "string", "maxLength": MAX_PROMPT_CHARS },
                        "steps": { "type": "integer", "minimum": 1, "maximum": limits.max_steps },
                        "guidance_scale": { "type": "number", "minimum": 0, "maximum": MAX_GUIDANCE }
                    }
                },
                "OpenAIImagesResponse": {
                    "type": "object", "required": ["created", "data"],
                    "properties": { "created": { "type": "integer" }, "id": { "type": "string" }, "output_format": { "type": "string" },
                        "data": { "type": "array", "items": { "type": "object", "properties": {
                            "url": { "type": "string" }, "b64_json": { "type": "string", "nullable": true }, "revised_prompt": { "type": "string" } } } } }
                }
            }
        },
        "security": [ {}, { "bearer": [] } ],
        "paths": {
            "/v1/layouts": { "post": {
                "summary": "Plan a layout", "operationId": "planLayout",
                "description": "Places the keywords (default: the quoted parts of the prompt) on the canvas with the typographic planner, or an LLM when the server has one.",
                "requestBody": json_body("LayoutRequest"),
                "responses": merge(json!({ "200": ok_json("The planned layout.", "Plan") }), error_responses(&common_errors))
            } },
            "/v1/render": { "post": {
                "summary": "Render a glyph mask", "operationId": "renderMask",
                "description": "Draws the layout white on black (the glyph ControlNet's input). format png answers the PNG; json answers base64 PNGs and character boxes.",
                "requestBody": json_body("RenderRequest"),
                "responses": merge(json!({ "200": { "description": "The mask.", "content": {
                    "image/png": { "schema": { "type": "string", "format": "binary" } },
                    "application/json": { "schema": { "$ref": "#/components/schemas/Rendering" } } } } }), error_responses(&common_errors))
            } },
            "/v1/generations": { "post": {
                "summary": "Create a generation", "operationId": "createGeneration",
                "description": "Queues a poster generation and answers {id, status, urls}. `Prefer: wait=N` (N ≤ the server's max_wait_secs) answers when the job ends or N seconds pass. `Idempotency-Key` makes retries safe: the same key and body answer the same job.",
                "parameters": [ { "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": "^[!-~]+$" } } ],
                "requestBody": json_body("GenerationRequest"),
                "responses": merge(json!({
                    "201": with_links(ok_json("Created.", "Generation")),
                    "200": ok_json("Replayed: an earlier request with this Idempotency-Key.", "Generation") }), error_responses(&gen_errors))
            } },
            "/v1/generations/{id}": { "get": {
                "summary": "Read a generation", "operationId": "getGeneration", "parameters": id_param("gen_"),
                "responses": merge(json!({ "200": with_file_links(ok_json("The generation.", "Generation")) }), error_responses(&read_errors))
            } },
            "/v1/generations/{id}/events": { "get": {
                "summary": "Follow a generation", "operationId": "generationEvents", "parameters": id_param("gen_"),
                "responses": merge(json!({ "200": sse }), error_responses(&read_errors))
            } },
            "/v1/generations/{id}/cancel": { "post": {
                "summary": "Cancel a generation", "operationId": "cancelGeneration", "parameters": id_param("gen_"),
                "description": "A queued job is canceled at once; a running one stops between denoising steps.",
                "responses": merge(json!({ "200": ok_json("The generation as it is now.", "Generation") }), error_responses(&read_errors))
            } },
            "/v1/files/{id}": { "get": {
                "summary": "Download a file", "operationId": "getFile", "parameters": id_param("file_"),
                "responses": merge(json!({ "200": { "description": "Image, mask or layout.", "content": {
                    "image/png": { "schema": { "type": "string", "format": "binary" } },
                    "image/jpeg": { "schema": { "type": "string", "format": "binary" } },
                    "image/webp": { "schema": { "type": "string", "format": "binary" } },
                    "application/json": { "schema": { "type": "object" } } } } }),
                    error_responses(&[("401", "Missing or invalid API key."), ("404", "No such file."), ("410", "The file expired."), ("429", "Rate limited.")]))
            } },
            "/v1/images/generations": { "post": {
                "summary": "OpenAI-compatible image generation", "operationId": "openaiImages",
                "requestBody": json_body("OpenAIImageRequest"),
                "responses": merge(json!({ "200": ok_json("The images.", "OpenAIImagesResponse") }), error_responses(&openai_errors))
            } },
            "/healthz": { "get": { "summary": "Liveness", "operationId": "healthz", "security": [],
                "responses": { "200": { "description": "Alive.", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
            "/readyz": { "get": { "summary": "Readiness", "operationId": "readyz", "security": [],
                "responses": {
                    "200": { "description": "Ready.", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "503": { "description": "Loading or shutting down.", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "operationId": "metrics", "security": [],
                "responses": { "200": { "description": "Text exposition format.", "content": { "text/plain": { "schema": { "type": "string" } } } } } } }
        }
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A plain page listing every operation, its parameters and its body schema.
pub fn docs_page(doc: &Value) -> String {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>Letterpress API</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}\
         code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow:auto}\
         h2{border-top:1px solid #ddd;padding-top:.8em}.m{font-weight:bold;color:#268bd2}</style>",
    );
    html += &format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. \
         Errors: <code>{{\"error\": {{\"code\", \"message\", \"param\", \"type\"}}}}</code>.</p>",
        escape(doc["info"]["title"].as_str().unwrap_or_default()),
        escape(doc["info"]["description"].as_str().unwrap_or_default())
    );
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            html += &format!(
                "<h2><span class=m>{}</span> <code>{}</code></h2><p>{}</p>",
                method.to_uppercase(),
                escape(path),
                escape(op["summary"].as_str().unwrap_or_default())
            );
            if let Some(d) = op["description"].as_str() {
                html += &format!("<p>{}</p>", escape(d));
            }
            if let Some(schema) =
                op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
            {
                let name = schema.rsplit('/').next().unwrap_or_default();
                let body = &doc["components"]["schemas"][name];
                html += &format!(
                    "<p>Body <code>{name}</code>:</p><pre>{}</pre>",
                    escape(&serde_json::to_string_pretty(body).unwrap_or_default())
                );
            }
            let codes: Vec<&String> = op["responses"]
                .as_object()
                .map(|r| r.keys().collect())
                .unwrap_or_default();
            html += &format!(
                "<p>Responses: {}</p>",
                codes
                    .iter()
                    .map(|c| format!("<code>{c}</code>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    html
}

//! The derived document against what the handlers read: the same fields, the same limits.

use serde_json::{Value, json};
use utoipa::OpenApi;

use super::ApiDoc;
use crate::input::*;
use crate::routes::openai::OPENAI_FIELDS;
use crate::routes::plan::{LAYOUT_FIELDS, RENDER_FIELDS};

fn doc() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap()
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

#[test]
fn request_schemas_have_exactly_the_fields_the_readers_accept() {
    let doc = doc();
    // Each reader's fields, the required ones first, and how many are required.
    let cases: [(&str, &[&str], usize); 6] = [
        ("GenerationRequest", GENERATION_FIELDS, 1),
        ("EditRequest", crate::edit_input::EDIT_FIELDS, 2),
        ("Replacement", &["old", "new"], 2),
        ("OpenAIImageRequest", OPENAI_FIELDS, 1),
        ("LayoutRequest", LAYOUT_FIELDS, 1),
        ("RenderRequest", RENDER_FIELDS, 1),
    ];
    for (name, fields, required) in cases {
        let s = schema(&doc, name);
        let mut documented: Vec<&str> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut read = fields.to_vec();
        documented.sort_unstable();
        read.sort_unstable();
        assert_eq!(documented, read, "{name}");
        assert_eq!(s["additionalProperties"], json!(false), "{name}");
        assert_eq!(s["required"], json!(fields[..required]), "{name}");
    }
    let line = schema(&doc, "LayoutLine");
    let mut keys: Vec<&String> = line["properties"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["align", "bbox", "color", "font", "text"]);
}

/// (schema, property, keyword, the reader's constant)
fn limits() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let mut cases = Vec::new();
    for request in ["GenerationRequest", "OpenAIImageRequest", "LayoutRequest"] {
        cases.push((request, "prompt", "maxLength", json!(MAX_PROMPT_CHARS)));
        cases.push((request, "seed", "maximum", json!(MAX_SEED)));
    }
    for request in ["GenerationRequest", "OpenAIImageRequest"] {
        cases.push((request, "guidance_scale", "maximum", json!(MAX_GUIDANCE)));
        cases.push((
            request,
            "negative_prompt",
            "maxLength",
            json!(MAX_PROMPT_CHARS),
        ));
        cases.push((request, "n", "maximum", json!(MAX_N)));
        cases.push((request, "steps", "maximum", json!(MAX_STEPS)));
    }
    cases.extend([
        ("GenerationRequest", "width", "minimum", json!(MIN_SIDE)),
        ("GenerationRequest", "width", "maximum", json!(MAX_SIDE)),
        (
            "GenerationRequest",
            "height",
            "multipleOf",
            json!(SIDE_MULTIPLE),
        ),
        (
            "GenerationRequest",
            "controlnet_conditioning_scale",
            "maximum",
            json!(MAX_CONTROLNET_SCALE),
        ),
        (
            "GenerationRequest",
            "preview_every",
            "maximum",
            json!(MAX_STEPS),
        ),
        (
            "GenerationRequest",
            "inpaint_line",
            "maximum",
            json!(MAX_LINES - 1),
        ),
        (
            "GenerationRequest",
            "strength",
            "default",
            json!(DEFAULT_STRENGTH),
        ),
        (
            "GenerationRequest",
            "repair",
            "maximum",
            json!(crate::input::MAX_REPAIR),
        ),
        ("LayoutRequest", "width", "minimum", json!(MIN_SIDE)),
        ("LayoutRequest", "height", "maximum", json!(MAX_SIDE)),
        ("Layout", "width", "maximum", json!(MAX_RENDER_SIDE)),
        ("Layout", "lines", "maxItems", json!(MAX_LINES)),
        ("LayoutLine", "text", "maxLength", json!(MAX_LINE_CHARS)),
    ]);
    cases
}

#[test]
fn documented_limits_are_the_readers_constants() {
    let doc = doc();
    for (name, property, keyword, expected) in limits() {
        let value = &schema(&doc, name)["properties"][property][keyword];
        assert_eq!(
            value.as_f64(),
            expected.as_f64(),
            "{name}.{property}.{keyword}: {value}"
        );
    }
    let keywords = schema(&doc, "Keywords");
    assert_eq!(keywords["maxItems"], json!(MAX_KEYWORDS));
    assert_eq!(keywords["items"]["maxLength"], json!(MAX_KEYWORD_CHARS));
    let bbox = &schema(&doc, "LayoutLine")["properties"]["bbox"];
    assert_eq!(bbox["items"]["maximum"], json!(MAX_COORD));
    assert_eq!(bbox["items"]["minimum"], json!(-MAX_COORD));
    let key = &doc["paths"]["/v1/generations"]["post"]["parameters"][0];
    assert_eq!(key["name"], "Idempotency-Key");
    assert_eq!(key["schema"]["maxLength"], json!(MAX_IDEMPOTENCY_KEY));
}

#[test]
fn every_operation_documents_its_errors_in_the_error_shape() {
    let doc = doc();
    let error = schema(&doc, "Error");
    assert_eq!(
        error["properties"]["error"]["required"],
        json!(["code", "message", "param", "type"])
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let open = ["/healthz", "/readyz"].contains(&path.as_str());
            assert_eq!(responses.contains_key("429"), !open, "{method} {path}");
            for (status, r) in responses.iter().filter(|(s, _)| s.starts_with('4')) {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

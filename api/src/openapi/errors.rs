//! The error answers each operation may give, all in the `Error` shape. Kept as one table
//! rather than repeated in every handler's attribute, since most operations share most of
//! them.

use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

const COMMON: &[(&str, &str)] = &[
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

const GENERATION: &[(&str, &str)] = &[
    ("422", "Idempotency-Key reused with a different body."),
    (
        "503",
        "No model loaded (the message says how to give one), loading, or shutting down.",
    ),
];

const OPENAI: &[(&str, &str)] = &[
    ("409", "The generation was canceled."),
    ("500", "The model failed."),
    (
        "504",
        "The images were not ready within openai_wait_secs; the job was canceled.",
    ),
];

const READ: &[(&str, &str)] = &[
    ("401", "Missing or invalid API key."),
    ("404", "No such generation (or not yours)."),
    ("429", "Rate limited."),
];

const METRICS: &[(&str, &str)] = &[
    (
        "401",
        "Missing or invalid API key (when the server has keys).",
    ),
    ("429", "Rate limited."),
];

const FILE: &[(&str, &str)] = &[
    ("401", "Missing or invalid API key."),
    ("404", "No such file."),
    ("410", "The file expired."),
    ("429", "Rate limited."),
];

/// The error answers of an operation, by its id.
fn errors_of(operation_id: &str) -> Vec<(&'static str, &'static str)> {
    let tables: &[&[(&str, &str)]] = match operation_id {
        "planLayout" | "renderMask" => &[COMMON],
        "createGeneration" | "createEdit" => &[COMMON, GENERATION],
        "openaiImages" => &[COMMON, GENERATION, OPENAI],
        "getGeneration" | "generationEvents" | "cancelGeneration" => &[READ],
        "getFile" => &[FILE],
        "metrics" => &[METRICS],
        _ => &[],
    };
    tables.iter().flat_map(|t| t.iter().copied()).collect()
}

fn add_errors(operation: &mut Operation) {
    let Some(id) = operation.operation_id.clone() else {
        return;
    };
    for (status, description) in errors_of(&id) {
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(Ref::from_schema_name("Error"))))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_string(), RefOr::T(response));
    }
}

/// Adds the error answers to every operation.
pub struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                add_errors(operation);
            }
        }
    }
}

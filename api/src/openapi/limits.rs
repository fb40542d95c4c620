//! What differs between servers: an operator may lower `max_side`, `max_steps` and `max_n`,
//! the loaded model names its schedulers, and the LLM planner exists only with `llm_url`. The
//! derived document states the hard limits; this writes this server's over them, so that every
//! request the document calls valid is one the handlers accept (schemathesis holds us to it).

use serde_json::{Value, json};

use super::openai_sizes;
use crate::state::{AppState, ModelState};

/// Sets the value at a JSON pointer whose parent exists; a missing parent means the derived
/// document changed shape, which the tests of this module catch.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(Value::Object(map)) = doc.pointer_mut(parent) {
        map.insert(key.to_string(), value);
    } else {
        tracing::warn!(pointer, "OpenAPI document: no such place to set a limit");
    }
}

const GENERATION: &str = "/components/schemas/GenerationRequest/properties";
const OPENAI: &str = "/components/schemas/OpenAIImageRequest/properties";
const LAYOUT: &str = "/components/schemas/LayoutRequest/properties";

/// Writes this server's limits, schedulers and planners into the document.
pub fn fit(doc: &mut Value, state: &AppState) {
    let limits = state.settings.limits();
    for side in ["width", "height"] {
        set(
            doc,
            &format!("{GENERATION}/{side}/maximum"),
            json!(limits.max_side),
        );
    }
    // JSON Schema cannot state a product of fields; the budget is published beside them.
    for request in ["GenerationRequest", "OpenAIImageRequest"] {
        set(
            doc,
            &format!("/components/schemas/{request}/x-max-pixel-steps"),
            json!(limits.max_pixel_steps),
        );
    }
    for props in [GENERATION, OPENAI] {
        set(doc, &format!("{props}/n/maximum"), json!(limits.max_n));
        set(
            doc,
            &format!("{props}/steps/maximum"),
            json!(limits.max_steps),
        );
    }
    set(
        doc,
        &format!("{GENERATION}/steps/default"),
        json!(20.min(limits.max_steps)),
    );
    set(
        doc,
        &format!("{OPENAI}/size/enum"),
        json!(openai_sizes(limits.max_side)),
    );
    set(
        doc,
        &format!("{OPENAI}/size/default"),
        json!(format!("{0}x{0}", 512.min(limits.max_side))),
    );
    if let ModelState::Ready(info) = state.model_state()
        && !info.schedulers.is_empty()
    {
        set(
            doc,
            &format!("{GENERATION}/scheduler"),
            json!({ "type": "string", "enum": info.schedulers, "description": "Default: the first." }),
        );
    }
    if state.llm.is_none() {
        set(
            doc,
            &format!("{LAYOUT}/planner/enum"),
            json!(["typographic"]),
        );
    }
}

//! Constrained decoding for the LLM planner: which field of the request constrains the answer
//! on which server, what `auto` tries and remembers, and how a structured answer is read back
//! as TextDiffuser-2 text (docs/llm-planner.md).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use super::gbnf::layout_grammar;
use crate::GRID_SIZE;

/// How the LLM's answer is constrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Constraint {
    /// Try `grammar`, then `json-schema`, then `json-object`, then nothing; remember per
    /// server what worked (default).
    #[default]
    Auto,
    /// A GBNF `grammar` field (llama-server, llama-cpp-python): TextDiffuser-2 text.
    Grammar,
    /// `response_format` `json_schema`, strict (OpenAI, vLLM, llama-server).
    JsonSchema,
    /// `response_format` `json_object` with a `schema` (llama-cpp-python's JSON mode).
    JsonObject,
    /// No constraint: the prompt alone.
    None,
}

/// The names [`Constraint`] parses from, in `auto`'s order after `auto` itself.
pub const CONSTRAINT_NAMES: [&str; 5] = ["auto", "grammar", "json-schema", "json-object", "none"];

/// `auto`'s order.
const AUTO_ORDER: [Constraint; 4] = [
    Constraint::Grammar,
    Constraint::JsonSchema,
    Constraint::JsonObject,
    Constraint::None,
];

impl std::str::FromStr for Constraint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Constraint::Auto),
            "grammar" => Ok(Constraint::Grammar),
            "json-schema" | "json_schema" => Ok(Constraint::JsonSchema),
            "json-object" | "json_object" => Ok(Constraint::JsonObject),
            "none" => Ok(Constraint::None),
            _ => Err(format!(
                "unknown constraint {s:?}: expected one of {}",
                CONSTRAINT_NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = match self {
            Constraint::Auto => 0,
            Constraint::Grammar => 1,
            Constraint::JsonSchema => 2,
            Constraint::JsonObject => 3,
            Constraint::None => 4,
        };
        f.write_str(CONSTRAINT_NAMES[i])
    }
}

impl Constraint {
    /// The modes to try, in order: `auto` from what last worked on this endpoint.
    pub fn candidates(self, endpoint: &str) -> Vec<Constraint> {
        if self != Constraint::Auto {
            return vec![self];
        }
        let start = remembered(endpoint)
            .and_then(|m| AUTO_ORDER.iter().position(|&c| c == m))
            .unwrap_or(0);
        AUTO_ORDER[start..].to_vec()
    }

    /// Whether the JSON answer format (and the prompt's JSON instruction) applies.
    pub fn is_json(self) -> bool {
        matches!(self, Constraint::JsonSchema | Constraint::JsonObject)
    }

    /// Adds this mode's field to a request `body` for `keywords` (unique, in order). Exactly
    /// one field is sent: llama-server refuses `grammar` with `json_schema`, and
    /// llama-cpp-python lets `response_format` silently replace `grammar`.
    pub fn apply(self, body: &mut Value, keywords: &[String]) {
        match self {
            Constraint::Grammar => body["grammar"] = json!(layout_grammar(keywords)),
            Constraint::JsonSchema => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {
                        "name": "layout",
                        "strict": true,
                        "schema": layout_schema(keywords, Bounds::MinMax),
                    },
                })
            }
            // llama-cpp-python's schema converter ignores minimum/maximum: an enum it honours.
            // It also writes a key holding `"` or `\` into a grammar it cannot parse (and the
            // server dies), so those characters are replaced in the keys.
            Constraint::JsonObject => {
                let keys: Vec<String> = keywords.iter().map(|k| json_object_key(k)).collect();
                body["response_format"] = json!({
                    "type": "json_object",
                    "schema": layout_schema(&keys, Bounds::Enum),
                })
            }
            Constraint::Auto | Constraint::None => {}
        }
    }

    /// Whether an error answer refuses this mode's field: it names the field. `auto` then
    /// tries the next mode instead of failing (or retrying a 5xx such as llama-cpp-python's
    /// 500 to `json_schema`).
    pub fn refused_by(self, status: u16, body: &str) -> bool {
        let body = body.to_ascii_lowercase();
        let names: &[&str] = match self {
            Constraint::Grammar => &["grammar"],
            Constraint::JsonSchema => &["response_format", "json_schema"],
            Constraint::JsonObject => &["response_format", "json_object"],
            Constraint::Auto | Constraint::None => &[],
        };
        status >= 400 && names.iter().any(|n| body.contains(n))
    }
}

/// What worked last on each endpoint, for the life of the process.
fn memory() -> &'static Mutex<HashMap<String, Constraint>> {
    static MEMORY: OnceLock<Mutex<HashMap<String, Constraint>>> = OnceLock::new();
    MEMORY.get_or_init(Default::default)
}

fn remembered(endpoint: &str) -> Option<Constraint> {
    memory().lock().ok()?.get(endpoint).copied()
}

/// Records that `mode` worked on `endpoint`.
pub fn remember(endpoint: &str, mode: Constraint) {
    if let Ok(mut m) = memory().lock() {
        m.insert(endpoint.to_string(), mode);
    }
}

#[derive(Clone, Copy)]
enum Bounds {
    MinMax,
    Enum,
}

/// An object keyed by keyword, each an object of four integers 0..=128, all required.
fn layout_schema(keywords: &[String], bounds: Bounds) -> Value {
    let coordinate = match bounds {
        Bounds::MinMax => json!({"type": "integer", "minimum": 0, "maximum": GRID_SIZE}),
        Bounds::Enum => json!({"type": "integer", "enum": (0..=GRID_SIZE).collect::<Vec<_>>()}),
    };
    let sides = ["left", "top", "right", "bottom"];
    let one_box = json!({
        "type": "object",
        "properties": sides.iter().map(|s| (s.to_string(), coordinate.clone())).collect::<serde_json::Map<_, _>>(),
        "required": sides,
        "additionalProperties": false,
    });
    let properties: serde_json::Map<String, Value> = keywords
        .iter()
        .map(|k| (k.clone(), one_box.clone()))
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": keywords,
        "additionalProperties": false,
    })
}

/// The sentence added to the planner prompt in the JSON modes (OpenAI's `json_object` also
/// requires the word "JSON" in the messages).
pub const JSON_INSTRUCTION: &str = " Answer in JSON: an object with each keyword as a key and its box as {\"left\": l, \"top\": t, \"right\": r, \"bottom\": b}.";

/// A JSON answer (`{"KEYWORD": {"left": …}}` or `{"KEYWORD": [l, t, r, b]}`) as
/// TextDiffuser-2 text in keyword order, for the one parser that validates and repairs every
/// answer; `None` when the answer is not such JSON.
pub fn json_answer_as_td2(answer: &str, keywords: &[String]) -> Option<String> {
    let trimmed = answer
        .trim()
        .trim_start_matches("```json")
        .trim_matches('`')
        .trim();
    let Value::Object(map) = serde_json::from_str::<Value>(trimmed).ok()? else {
        return None;
    };
    // (text to write, key in the answer): keywords in order, then any other key.
    let mut keys: Vec<(&str, &String)> = keywords
        .iter()
        .filter_map(|k| Some((k.as_str(), find_key(&map, k)?)))
        .collect();
    let known: Vec<&String> = keys.iter().map(|(_, key)| *key).collect();
    keys.extend(
        map.keys()
            .filter(|k| !known.contains(k))
            .map(|k| (k.as_str(), k)),
    );
    let lines: Vec<String> = keys
        .into_iter()
        .filter_map(|(text, key)| {
            let [l, t, r, b] = coordinates(&map[key])?;
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            Some(format!("{text} {l},{t},{r},{b}"))
        })
        .collect();
    Some(lines.join("\n"))
}

/// A keyword as a `json_object` schema key: `"` → `'`, `\` → `/`.
fn json_object_key(keyword: &str) -> String {
    keyword.replace('"', "'").replace('\\', "/")
}

/// The answer's key for `keyword`: itself, its `json_object` key, or either in another case.
fn find_key<'a>(map: &'a serde_json::Map<String, Value>, keyword: &str) -> Option<&'a String> {
    let safe = json_object_key(keyword);
    let same = |k: &str, w: &str| k == w || k.to_lowercase() == w.to_lowercase();
    map.keys()
        .find(|k| same(k, keyword))
        .or_else(|| map.keys().find(|k| same(k, &safe)))
}

fn coordinates(v: &Value) -> Option<[f64; 4]> {
    let get = |i: usize, names: [&str; 2]| match v {
        Value::Array(a) => a.get(i)?.as_f64(),
        Value::Object(o) => names.iter().find_map(|n| o.get(*n)?.as_f64()),
        _ => None,
    };
    Some([
        get(0, ["left", "l"])?,
        get(1, ["top", "t"])?,
        get(2, ["right", "r"])?,
        get(3, ["bottom", "b"])?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in CONSTRAINT_NAMES {
            let c: Constraint = name.parse().unwrap();
            assert_eq!(c.to_string(), name);
        }
        assert!(
            "regex"
                .parse::<Constraint>()
                .unwrap_err()
                .contains("json-schema")
        );
    }

    #[test]
    fn auto_starts_where_it_last_succeeded() {
        let e = "http://test-memory/v1/chat/completions";
        assert_eq!(Constraint::Auto.candidates(e), AUTO_ORDER);
        remember(e, Constraint::JsonObject);
        assert_eq!(
            Constraint::Auto.candidates(e),
            [Constraint::JsonObject, Constraint::None]
        );
        assert_eq!(Constraint::Grammar.candidates(e), [Constraint::Grammar]);
    }

    #[test]
    fn one_field_per_mode() {
        let k = vec!["SALE".to_string()];
        for (mode, field) in [
            (Constraint::Grammar, "grammar"),
            (Constraint::JsonSchema, "response_format"),
            (Constraint::JsonObject, "response_format"),
        ] {
            let mut body = json!({});
            mode.apply(&mut body, &k);
            assert_eq!(
                body.as_object().unwrap().keys().collect::<Vec<_>>(),
                [field]
            );
        }
        let mut body = json!({});
        Constraint::JsonObject.apply(&mut body, &k);
        let sale = &body["response_format"]["schema"]["properties"]["SALE"];
        assert_eq!(
            sale["properties"]["left"]["enum"].as_array().unwrap().len(),
            129
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let openai = r#"{"error":{"message":"Unrecognized request argument supplied: grammar"}}"#;
        assert!(Constraint::Grammar.refused_by(400, openai));
        assert!(!Constraint::Grammar.refused_by(400, r#"{"error":"unknown model"}"#));
        assert!(Constraint::JsonSchema.refused_by(500, "response_format: json_schema"));
        assert!(!Constraint::JsonSchema.refused_by(200, "json_schema"));
    }

    #[test]
    fn json_answers_read_as_td2_in_keyword_order() {
        let k = vec!["SALE".to_string(), "today only".to_string()];
        let a = r#"{"today only": [1, 50, 30, 60], "SALE": {"left": 1, "top": 2, "right": 30, "bottom": 40}}"#;
        assert_eq!(
            json_answer_as_td2(a, &k).unwrap(),
            "SALE 1,2,30,40\ntoday only 1,50,30,60"
        );
        assert_eq!(json_answer_as_td2("SALE 1,2,3,4", &k), None);
        let quoted = vec!["say \"hi\"".to_string()];
        assert_eq!(
            json_answer_as_td2(r#"{"say 'hi'": [1, 2, 3, 4]}"#, &quoted).unwrap(),
            "say \"hi\" 1,2,3,4"
        );
        assert_eq!(json_answer_as_td2(r#"{"SALE": "x"}"#, &k).unwrap(), "");
    }
}

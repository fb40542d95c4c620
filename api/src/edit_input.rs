//! `POST /v1/edits`: replace text in a picture. The body is read as a generation's is (the same
//! settings, limits and errors) plus the picture and the replacements; the job is a generation
//! job whose input carries them (`GenerationInput::edit`), so it is followed, canceled and
//! answered like any other.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::input::{
    Fields, GenerationInput, Limits, MAX_INIT_IMAGE_CHARS, MIN_SIDE, OutputFormat, SIDE_MULTIPLE,
};

pub const EDIT_FIELDS: &[&str] = &[
    "image",
    "replacements",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "scheduler",
    "controlnet_conditioning_scale",
    "output_format",
    "response_format",
];
pub const MAX_REPLACEMENTS: usize = 8;
pub const MAX_REPLACEMENT_CHARS: usize = 200;
/// What the model is told the picture shows when the request does not say.
pub const DEFAULT_EDIT_PROMPT: &str = "a poster";

/// One text to replace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextReplacement {
    pub old: String,
    pub new: String,
}

/// The picture (a file id or a base64 PNG, as given) and what to replace in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditSpec {
    pub image: String,
    pub replacements: Vec<TextReplacement>,
}

/// Reads an edit body's own fields; returns them and the rest as a generation body.
pub fn split(body: Value) -> Result<(EditSpec, Value), ApiError> {
    let mut f = Fields::new(body.clone(), EDIT_FIELDS, "")?;
    let image = f.required_string("image", 1, MAX_INIT_IMAGE_CHARS)?;
    let shape = format!(
        "replacements must be a list of 1 to {MAX_REPLACEMENTS} {{\"old\": …, \"new\": …}} objects"
    );
    let items = match f.raw("replacements") {
        Some(Value::Array(items)) if (1..=MAX_REPLACEMENTS).contains(&items.len()) => items,
        _ => return Err(ApiError::invalid("replacements", shape)),
    };
    let mut replacements = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut r = Fields::new(item, &["old", "new"], &format!("replacements[{i}]."))?;
        replacements.push(TextReplacement {
            old: r.required_string("old", 1, MAX_REPLACEMENT_CHARS)?,
            new: r.required_string("new", 1, MAX_REPLACEMENT_CHARS)?,
        });
    }
    let mut rest = body;
    if let Value::Object(map) = &mut rest {
        map.remove("image");
        map.remove("replacements");
        map.entry("prompt")
            .or_insert_with(|| Value::String(DEFAULT_EDIT_PROMPT.into()));
    }
    Ok((
        EditSpec {
            image,
            replacements,
        },
        rest,
    ))
}

/// The job input of `spec` on its decoded picture of `size`: the generation settings of
/// `rest`, on the picture's size rounded up to a multiple of 8 (the engine pads it), always
/// verified (the answer says whether the new text reads right).
pub fn edit_input(
    spec: EditSpec,
    rest: Value,
    (width, height): (u32, u32),
    schedulers: &[String],
    limits: &Limits,
) -> Result<GenerationInput, ApiError> {
    let sides = MIN_SIDE..=limits.max_side;
    if !sides.contains(&width) || !sides.contains(&height) {
        return Err(ApiError::invalid(
            "image",
            format!(
                "image is {width}×{height}; each side must be {MIN_SIDE} to {}",
                limits.max_side
            ),
        ));
    }
    let mut rest = rest;
    let padded = |v: u32| Value::from(v.div_ceil(SIDE_MULTIPLE) * SIDE_MULTIPLE);
    rest["width"] = padded(width);
    rest["height"] = padded(height);
    let mut input = GenerationInput::from_json(rest, schedulers, limits)?;
    if input.output_format != OutputFormat::Png {
        return Err(ApiError::invalid(
            "output_format",
            "an edit keeps every pixel outside the edited boxes exactly, which only png \
             (lossless) does",
        ));
    }
    input.verify = true;
    input.edit = Some(spec);
    Ok(input)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn edit_bodies_name_the_field_at_fault() {
        let cases = [
            (json!({"replacements": [{"old": "a", "new": "b"}]}), "image"),
            (json!({"image": "x"}), "replacements"),
            (json!({"image": "x", "replacements": []}), "replacements"),
            (
                json!({"image": "x", "replacements": [{"old": "a"}]}),
                "replacements[0].new",
            ),
            (
                json!({"image": "x", "replacements": [{"old": "a", "new": "b", "x": 1}]}),
                "replacements[0].x",
            ),
            (json!({"image": "x", "replacements": [], "n": 2}), "n"),
        ];
        for (body, param) in cases {
            let e = split(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{e}");
        }
        let (spec, rest) =
            split(json!({"image": "x", "replacements": [{"old": "a", "new": "b"}], "steps": 3}))
                .unwrap();
        assert_eq!(spec.replacements[0].new, "b");
        let input = edit_input(spec, rest, (203, 98), &[], &Limits::default()).unwrap();
        assert_eq!((input.width, input.height, input.steps), (208, 104, 3));
        assert_eq!(input.prompt, DEFAULT_EDIT_PROMPT);
        assert!(input.verify && input.edit.is_some());
        let (spec, rest) =
            split(json!({"image": "x", "replacements": [{"old": "a", "new": "b"}]})).unwrap();
        let e = edit_input(spec, rest, (4000, 64), &[], &Limits::default()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("image"));
        let (spec, rest) = split(
            json!({"image": "x", "replacements": [{"old": "a", "new": "b"}], "output_format": "jpeg"}),
        )
        .unwrap();
        let e = edit_input(spec, rest, (64, 64), &[], &Limits::default()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("output_format"));
    }
}

//! Validate at the door: a generation is checked as the worker will run it (the layout fitted
//! to the output and drawn, or the keywords planned and drawn) before a job is created, so a
//! request that cannot work is answered 400 naming the field, not accepted and failed later.
//! The same error mapping serves `/v1/layouts` and `/v1/render`, so one input gets one answer
//! everywhere.

use axum::http::StatusCode;
use letterpress_layout::{
    BBox, CanvasPlan, Layout, LayoutError, PlannerChoice, extract_keywords, plan_on_canvas,
};
use letterpress_render::RenderError;

use crate::error::ApiError;
use crate::input::GenerationInput;
use crate::state::AppState;

/// Plans (typographic, as the service's engine does) and renders what `input` asks for, on
/// the blocking pool; the first problem as a 400 naming the field.
pub async fn check_generation(state: &AppState, input: &GenerationInput) -> Result<(), ApiError> {
    let state = state.clone();
    let input = TextRequest::of(input);
    tokio::task::spawn_blocking(move || dry_run(&state, &input))
        .await
        .map_err(ApiError::internal)?
}

/// What planning and drawing read of a generation: not its init image, which may be tens of
/// megabytes of base64 that the blocking task need not copy.
struct TextRequest {
    prompt: String,
    keywords: Vec<String>,
    layout: Option<Layout>,
    width: u32,
    height: u32,
    seed: u64,
}

impl TextRequest {
    fn of(input: &GenerationInput) -> Self {
        TextRequest {
            prompt: input.prompt.clone(),
            keywords: input.keywords.clone(),
            layout: input.layout.clone(),
            width: input.width,
            height: input.height,
            seed: input.seed,
        }
    }
}

fn dry_run(state: &AppState, input: &TextRequest) -> Result<(), ApiError> {
    let (width, height) = (input.width, input.height);
    if let Some(layout) = &input.layout {
        let fitted = layout.fitted_to(width, height);
        return match state.renderer.render(&fitted) {
            Ok(_) => Ok(()),
            Err(e) => Err(render_error(&e, layout, &fitted)),
        };
    }
    let (keywords, field) = if input.keywords.is_empty() {
        (extract_keywords(&input.prompt), "prompt")
    } else {
        (input.keywords.clone(), "keywords")
    };
    if keywords.is_empty() {
        return Ok(());
    }
    let request = CanvasPlan {
        prompt: &input.prompt,
        keywords: &keywords,
        width,
        height,
        seed: input.seed,
        font: None,
    };
    let plan = plan_on_canvas(&state.renderer, &PlannerChoice::Typographic, &request)
        .map_err(|e| layout_error(e, field))?;
    state.renderer.render(&plan.layout).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_layout",
            format!("the layout planned for the {field} cannot be drawn: {e}"),
        )
        .with_param(field)
    })?;
    Ok(())
}

/// A planning failure as an answer. `field` is where the keywords came from: `keywords`, or
/// `prompt` for its quoted text.
pub fn layout_error(e: LayoutError, field: &str) -> ApiError {
    let message = match &e {
        LayoutError::Llm { .. } => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "planner_unavailable",
                "the LLM planner could not be reached",
            );
        }
        LayoutError::KeywordTooLong { .. }
        | LayoutError::InvisibleKeyword { .. }
        | LayoutError::TooManyKeywords { .. }
            if field == "prompt" =>
        {
            format!("the prompt's quoted text is what gets drawn: {e}")
        }
        _ => e.to_string(),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_layout", message).with_param(field)
}

/// A rendering failure of `fitted` (the request's `layout` fitted to the output) as an
/// answer naming the line's field; a box that fitting broke is shown as it was sent too.
pub fn render_error(e: &RenderError, layout: &Layout, fitted: &Layout) -> ApiError {
    let field = |line: &usize, part: &str| format!("layout.lines[{line}].{part}");
    let (param, message) = match e {
        RenderError::EmptyBox { line, .. } | RenderError::BoxOutsideCanvas { line, .. } => {
            let mut message = e.to_string();
            if let (Some(sent), true) = (layout.lines.get(*line), fitted != layout) {
                message = format!(
                    "{message}; that is the box sent, {}, on the layout's {}x{} canvas, fitted \
                     to the {}x{} output",
                    coords(sent.bbox),
                    layout.width,
                    layout.height,
                    fitted.width,
                    fitted.height
                );
            }
            (field(line, "bbox"), message)
        }
        RenderError::LineTooLong { line, .. } | RenderError::MissingGlyph { line, .. } => {
            (field(line, "text"), e.to_string())
        }
        RenderError::FontNotFound { spec, hint } => font_not_found(layout, spec, hint),
        RenderError::CanvasSize { .. } => ("layout".to_string(), e.to_string()),
        // The server's own fonts are broken: not the client's doing.
        RenderError::FontIo { .. } | RenderError::InvalidFont { .. } => {
            return ApiError::internal(e);
        }
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_layout", message).with_param(param)
}

/// Clients name fonts by installed family only (a path would let them probe the server's
/// files), so the message offers families, never a file path.
fn font_not_found(layout: &Layout, spec: &str, hint: &str) -> (String, String) {
    let line = layout
        .lines
        .iter()
        .position(|l| l.font.as_deref() == Some(spec));
    let param = line.map_or("layout".to_string(), |i| format!("layout.lines[{i}].font"));
    let similar = hint
        .strip_prefix("; installed families like it: ")
        .map(|families| format!("; installed families like it: {families}"))
        .unwrap_or_else(|| {
            format!(
                "; give an installed font family name such as {:?}",
                letterpress_render::DEFAULT_FONT
            )
        });
    (
        param,
        format!("font {spec:?} is not installed on this server{similar}"),
    )
}

fn coords(b: BBox) -> String {
    format!("[{}, {}, {}, {}]", b.left, b.top, b.right, b.bottom)
}

/// A face's name fit to show a client: `path#index` names become the file's stem, so answers
/// never show where the server keeps its fonts.
pub fn public_font_name(name: &str) -> String {
    let path = name.split('#').next().unwrap_or(name);
    if !path.contains(['/', '\\']) {
        return name.to_string();
    }
    std::path::Path::new(path)
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_paths_are_not_shown() {
        assert_eq!(
            public_font_name("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf#0"),
            "DejaVuSans-Bold"
        );
        assert_eq!(public_font_name("DejaVuSans-Bold"), "DejaVuSans-Bold");
    }
}

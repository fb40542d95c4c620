//! The poster pipeline's first two stages, shared by `/v1/layouts` and the worker: plan a
//! layout for any canvas the API accepts, and fit a given layout to a generation's size.

use std::time::Duration;

use letterpress_layout::planner::{MAX_SIDE as PLAN_MAX, MIN_SIDE as PLAN_MIN};
use letterpress_layout::{
    BBox, Layout, LayoutError, LlmConfig, LlmPlanner, Plan, TypographicPlanner,
};
use letterpress_render::Renderer;

/// Which planner places the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannerChoice {
    Typographic,
    Llm,
}

/// The typographic planner needs sides of 256–2048 and an aspect within 1:4–4:1, while the
/// API accepts 64–2048 at any aspect. So plan on the largest 4:1-or-squarer region centred on
/// the canvas, scaled into the planner's range, and map the boxes back.
pub fn plan(
    renderer: &Renderer,
    llm: Option<&LlmConfig>,
    choice: PlannerChoice,
    prompt: &str,
    keywords: &[String],
    (width, height): (u32, u32),
    seed: u64,
) -> Result<Plan, LayoutError> {
    let region_w = width.min(height.saturating_mul(4));
    let region_h = height.min(width.saturating_mul(4));
    let short = region_w.min(region_h) as f64;
    let long = region_w.max(region_h) as f64;
    let scale = (f64::from(PLAN_MIN) / short)
        .max(1.0)
        .min(f64::from(PLAN_MAX) / long);
    let plan_w = ((f64::from(region_w) * scale).round() as u32).clamp(PLAN_MIN, PLAN_MAX);
    let plan_h = ((f64::from(region_h) * scale).round() as u32).clamp(PLAN_MIN, PLAN_MAX);
    let mut plan = match (choice, llm) {
        (PlannerChoice::Llm, Some(config)) => LlmPlanner::new(config.clone(), renderer)
            .plan(prompt, keywords, plan_w, plan_h, seed)?,
        _ => TypographicPlanner::new(renderer).plan(plan_w, plan_h, keywords, seed)?,
    };
    if (plan_w, plan_h) != (width, height) {
        let offset = ((width - region_w) / 2, (height - region_h) / 2);
        plan.layout = fit(&plan.layout, region_w, region_h, offset, width, height);
        plan.font_px
            .iter_mut()
            .for_each(|px| *px *= region_w as f32 / plan_w as f32);
    }
    Ok(plan)
}

/// `layout` scaled to `region_w`×`region_h`, moved by `offset`, on a `width`×`height` canvas.
pub fn fit(
    layout: &Layout,
    region_w: u32,
    region_h: u32,
    offset: (u32, u32),
    width: u32,
    height: u32,
) -> Layout {
    let sx = f64::from(region_w) / f64::from(layout.width.max(1));
    let sy = f64::from(region_h) / f64::from(layout.height.max(1));
    let (ox, oy) = (i64::from(offset.0), i64::from(offset.1));
    let map = |v: i32, s: f64, o: i64| {
        ((f64::from(v) * s).round() as i64 + o).clamp(i32::MIN.into(), i32::MAX.into()) as i32
    };
    let mut out = layout.clone();
    out.width = width;
    out.height = height;
    for line in &mut out.lines {
        let b = line.bbox;
        line.bbox = BBox::new(
            map(b.left, sx, ox),
            map(b.top, sy, oy),
            map(b.right, sx, ox),
            map(b.bottom, sy, oy),
        );
    }
    out
}

/// An LLM planner configuration from the service settings.
pub fn llm_config(url: &str, model: &str) -> LlmConfig {
    let mut config = LlmConfig::new(url, model);
    config.timeout = Duration::from_secs(60);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fit_any_accepted_canvas() {
        let renderer = Renderer::with_default_font().unwrap();
        let keywords = vec!["GRAND OPENING".to_string(), "Saturday".to_string()];
        for (w, h) in [(64, 64), (512, 512), (2048, 64), (64, 2048), (1024, 256)] {
            let plan = plan(
                &renderer,
                None,
                PlannerChoice::Typographic,
                "p",
                &keywords,
                (w, h),
                7,
            )
            .unwrap();
            assert_eq!((plan.layout.width, plan.layout.height), (w, h));
            assert_eq!(plan.layout.lines.len(), 2);
            let canvas = BBox::new(0, 0, w as i32, h as i32);
            for line in &plan.layout.lines {
                assert!(canvas.contains(&line.bbox), "{w}x{h}: {:?}", line.bbox);
                assert!(!line.bbox.is_empty(), "{w}x{h}: {:?}", line.bbox);
            }
            // The renderer draws every planned line.
            let r = renderer.render(&plan.layout).unwrap();
            assert!(r.char_boxes.len() >= 10, "{w}x{h}");
        }
    }
}

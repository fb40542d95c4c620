//! Planning for any output canvas, and fitting a layout to one.
//!
//! The planners work on sides of 256–2048 at an aspect within 1:4–4:1 (their templates and
//! font sizes are tuned for that range), while generations are made at any size a model
//! takes: 64×64 thumbnails, 2048×64 banners. So a plan is made on the largest region of the
//! canvas with a usable aspect, scaled into the planners' range, and its boxes are mapped back.
//! Every caller (the CLI, the service, the poster engine) plans through here, so a canvas gets
//! the same layout wherever it is asked for.

use super::{LlmConfig, LlmPlanner, MAX_SIDE, MIN_SIDE, Plan, TypographicPlanner};
use crate::{BBox, Layout, LayoutError, TextMeasure};

/// Which planner places the text.
#[derive(Debug, Clone, Default)]
pub enum PlannerChoice {
    /// The typographic planner: no model, deterministic for a seed.
    #[default]
    Typographic,
    /// An LLM behind an OpenAI-compatible endpoint (keywords it leaves out are placed by the
    /// typographic planner).
    Llm(LlmConfig),
}

/// What to plan: the text, the canvas and the planner's settings.
#[derive(Debug, Clone)]
pub struct CanvasPlan<'a> {
    /// The image prompt (the LLM planner reads it).
    pub prompt: &'a str,
    /// The text lines to place, in order.
    pub keywords: &'a [String],
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Font to measure and name in the layout (typographic placements). Default: the
    /// measure's own default font.
    pub font: Option<&'a str>,
}

/// Plans `request.keywords` on a `width`×`height` canvas of any size ≥ 1 and any aspect: the
/// planner runs on the largest 4:1-or-squarer region centred on the canvas, scaled into its
/// 256–2048 range, and the boxes (and font sizes) are mapped back onto the canvas.
pub fn plan_on_canvas(
    measure: &dyn TextMeasure,
    planner: &PlannerChoice,
    request: &CanvasPlan<'_>,
) -> Result<Plan, LayoutError> {
    let (width, height) = (request.width, request.height);
    if width == 0 || height == 0 {
        return Err(LayoutError::CanvasSize {
            width,
            height,
            min: 1,
            max: u32::MAX,
        });
    }
    let region_w = width.min(height.saturating_mul(4));
    let region_h = height.min(width.saturating_mul(4));
    let short = f64::from(region_w.min(region_h));
    let long = f64::from(region_w.max(region_h));
    let scale = (f64::from(MIN_SIDE) / short)
        .max(1.0)
        .min(f64::from(MAX_SIDE) / long);
    let plan_w = ((f64::from(region_w) * scale).round() as u32).clamp(MIN_SIDE, MAX_SIDE);
    let plan_h = ((f64::from(region_h) * scale).round() as u32).clamp(MIN_SIDE, MAX_SIDE);
    let mut plan = match planner {
        PlannerChoice::Llm(config) => LlmPlanner::new(config.clone(), measure).plan(
            request.prompt,
            request.keywords,
            plan_w,
            plan_h,
            request.seed,
        )?,
        PlannerChoice::Typographic => {
            let mut typographic = TypographicPlanner::new(measure);
            if let Some(font) = request.font {
                typographic = typographic.with_font(font);
            }
            typographic.plan(plan_w, plan_h, request.keywords, request.seed)?
        }
    };
    if (plan_w, plan_h) != (width, height) {
        let offset = ((width - region_w) / 2, (height - region_h) / 2);
        plan.layout = fit_region(&plan.layout, (region_w, region_h), offset, (width, height));
        plan.font_px
            .iter_mut()
            .for_each(|px| *px *= region_w as f32 / plan_w as f32);
    }
    Ok(plan)
}

impl Layout {
    /// This layout scaled onto a `width`×`height` canvas (each axis by its own factor), as a
    /// layout drawn for one size is reused for a generation of another.
    pub fn fitted_to(&self, width: u32, height: u32) -> Layout {
        if (self.width, self.height) == (width, height) {
            return self.clone();
        }
        fit_region(self, (width, height), (0, 0), (width, height))
    }
}

/// `layout` scaled to a `region` (width, height), moved by `offset`, on a `canvas`.
fn fit_region(
    layout: &Layout,
    region: (u32, u32),
    offset: (u32, u32),
    canvas: (u32, u32),
) -> Layout {
    let sx = f64::from(region.0) / f64::from(layout.width.max(1));
    let sy = f64::from(region.1) / f64::from(layout.height.max(1));
    let (ox, oy) = (i64::from(offset.0), i64::from(offset.1));
    let map = |v: i32, s: f64, o: i64| {
        ((f64::from(v) * s).round() as i64 + o).clamp(i32::MIN.into(), i32::MAX.into()) as i32
    };
    let mut out = layout.clone();
    (out.width, out.height) = canvas;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TextLine;
    use crate::planner::fixed_measure::FixedMeasure;

    fn plan(w: u32, h: u32) -> Result<Plan, LayoutError> {
        let keywords = vec!["GRAND OPENING".to_string(), "Saturday".to_string()];
        let request = CanvasPlan {
            prompt: "p",
            keywords: &keywords,
            width: w,
            height: h,
            seed: 7,
            font: None,
        };
        plan_on_canvas(&FixedMeasure, &PlannerChoice::Typographic, &request)
    }

    #[test]
    fn plans_fit_any_canvas() {
        for (w, h) in [
            (64, 64),
            (512, 512),
            (2048, 64),
            (64, 2048),
            (1024, 256),
            (1, 1),
        ] {
            let plan = plan(w, h).unwrap();
            assert_eq!((plan.layout.width, plan.layout.height), (w, h));
            assert_eq!(plan.layout.lines.len(), 2);
            let canvas = BBox::new(0, 0, w as i32, h as i32);
            for line in &plan.layout.lines {
                assert!(canvas.contains(&line.bbox), "{w}x{h}: {:?}", line.bbox);
            }
        }
    }

    #[test]
    fn a_canvas_in_range_is_planned_as_it_is() {
        let keywords = vec!["GRAND OPENING".to_string()];
        let direct = TypographicPlanner::new(&FixedMeasure)
            .plan(512, 384, &keywords, 3)
            .unwrap();
        let request = CanvasPlan {
            prompt: "p",
            keywords: &keywords,
            width: 512,
            height: 384,
            seed: 3,
            font: None,
        };
        let fitted = plan_on_canvas(&FixedMeasure, &PlannerChoice::Typographic, &request).unwrap();
        assert_eq!(fitted.layout, direct.layout);
        assert_eq!(fitted.font_px, direct.font_px);
    }

    #[test]
    fn an_empty_canvas_is_refused() {
        assert!(matches!(plan(0, 512), Err(LayoutError::CanvasSize { .. })));
    }

    #[test]
    fn fitting_scales_each_axis() {
        let layout = Layout::new(
            256,
            128,
            vec![TextLine::new("A", BBox::new(10, 20, 100, 60))],
        );
        let fitted = layout.fitted_to(512, 512);
        assert_eq!((fitted.width, fitted.height), (512, 512));
        assert_eq!(fitted.lines[0].bbox, BBox::new(20, 80, 200, 240));
        assert_eq!(layout.fitted_to(256, 128), layout);
    }
}

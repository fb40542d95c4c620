//! The stages before denoising, each a plain function of its inputs: the text to place, the
//! layout (planned or given, fitted to the canvas), the glyph mask, and the diffusion request
//! that carries them to the model.

use image::GrayImage;
use letterpress_diffusion::pipelines::{
    ControlSettings, GenerationRequest, InitImage, StableDiffusion, TextConditioning,
};
use letterpress_layout::{CanvasPlan, Layout, extract_keywords, layout_tokens, plan_on_canvas};
use letterpress_render::Renderer;

use crate::glyph_init::glyph_init_image;
use crate::{LayoutTokens, PosterError, PosterRequest, PosterText, RepaintRegion};

/// A layout ready to draw, with what the planner had to say.
#[derive(Debug, Clone)]
pub struct PlannedLayout {
    pub layout: Layout,
    pub warnings: Vec<String>,
}

/// The output size: the request's, else a given layout's canvas, else `default_side`.
pub fn output_size(request: &PosterRequest, default_side: u32) -> (u32, u32) {
    let canvas = match &request.text {
        PosterText::Layout(l) => Some((l.width, l.height)),
        _ => None,
    };
    (
        request
            .width
            .or(canvas.map(|c| c.0))
            .unwrap_or(default_side),
        request
            .height
            .or(canvas.map(|c| c.1))
            .unwrap_or(default_side),
    )
}

/// Plans (or fits) the layout on a `size` canvas; `None` when the request has no text at all.
/// The planner's seed is the first image's.
pub fn plan_layout(
    renderer: &Renderer,
    request: &PosterRequest,
    size: (u32, u32),
    seed: u64,
) -> Result<Option<PlannedLayout>, PosterError> {
    let keywords = match &request.text {
        PosterText::Layout(layout) => {
            return Ok(Some(PlannedLayout {
                layout: layout.fitted_to(size.0, size.1),
                warnings: Vec::new(),
            }));
        }
        PosterText::Keywords(k) if !k.is_empty() => k.clone(),
        PosterText::Keywords(_) | PosterText::Quoted => extract_keywords(&request.prompt),
    };
    if keywords.is_empty() {
        return Ok(None);
    }
    let canvas = CanvasPlan {
        prompt: &request.prompt,
        keywords: &keywords,
        width: size.0,
        height: size.1,
        seed,
        font: request.font.as_deref(),
    };
    let plan = plan_on_canvas(renderer, &request.planner, &canvas)?;
    Ok(Some(PlannedLayout {
        layout: plan.layout,
        warnings: plan.warnings,
    }))
}

/// Whether the model's tokenizer has TextDiffuser-2's layout and character tokens (the last
/// of each kind stands for all).
pub fn has_layout_tokens(model: &StableDiffusion) -> bool {
    model.tokenizer.has_layout_tokens()
}

/// Whether the model reads TextDiffuser-2's layout tokens for this request.
fn reads_layout_tokens(
    model: &StableDiffusion,
    wanted: LayoutTokens,
    layout: Option<&Layout>,
) -> Result<bool, PosterError> {
    let has_tokens = has_layout_tokens(model);
    match wanted {
        LayoutTokens::Never => Ok(false),
        LayoutTokens::Auto => Ok(has_tokens && model.controlnet.is_none() && layout.is_some()),
        LayoutTokens::Always if layout.is_none() => Err(PosterError::request(
            "layout_tokens",
            "TextDiffuser-2 conditioning needs text to place: quote it in the prompt, or give \
             keywords or a layout",
        )),
        LayoutTokens::Always if !has_tokens => Err(PosterError::request(
            "layout_tokens",
            "the model's tokenizer has no TextDiffuser-2 layout tokens (l0…l519, [a]…): it \
             needs a TextDiffuser-2 tokenizer and text encoder",
        )),
        LayoutTokens::Always => Ok(true),
    }
}

/// The diffusion request for a poster of `size` whose first image uses `seed`.
pub fn generation_request(
    model: &StableDiffusion,
    request: &PosterRequest,
    size: (u32, u32),
    seed: u64,
    layout: Option<&Layout>,
    glyph_mask: Option<&GrayImage>,
) -> Result<GenerationRequest, PosterError> {
    let mut g = GenerationRequest::new(request.prompt.clone());
    g.negative_prompt = request.negative_prompt.clone();
    (g.width, g.height) = size;
    g.steps = request.steps;
    g.guidance_scale = request.guidance_scale;
    g.scheduler = request.scheduler;
    g.num_images = request.n;
    g.seed = Some(seed);
    g.preview = request.preview_every > 0;
    if reads_layout_tokens(model, request.layout_tokens, layout)? {
        if let Some(layout) = layout {
            g.conditioning = TextConditioning::TextDiffuser2 {
                layout_tokens: layout_tokens(layout),
            };
        }
    }
    if model.reads_glyph_mask() {
        let Some(mask) = glyph_mask else {
            return Err(PosterError::request(
                "text",
                "the model is conditioned on a glyph mask but there is no text to draw: quote \
                 it in the prompt, or give keywords or a layout",
            ));
        };
        let o = &request.control;
        let mut c = ControlSettings::new(mask.clone());
        c.mode = o.mode;
        c.conditioning_scale = o.conditioning_scale;
        c.guidance_start = o.guidance_start;
        c.guidance_end = o.guidance_end;
        c.guess_mode = o.guess_mode;
        g.control = Some(c);
    }
    if let Some(strength) = request.glyph_init.filter(|s| *s != 0.0) {
        g.init = Some(glyph_init(request, strength, glyph_mask)?);
    }
    if let Some(init) = &request.init {
        let mask = match &init.region {
            None => None,
            Some(RepaintRegion::Mask(m)) => Some(m.clone()),
            Some(RepaintRegion::Line(i)) => Some(line_mask(layout, *i, size)?),
        };
        g.init = Some(InitImage {
            image: init.image.clone(),
            strength: init.strength,
            mask,
        });
    }
    Ok(g)
}

/// The starting picture of glyph initialisation at `strength`.
fn glyph_init(
    request: &PosterRequest,
    strength: f64,
    glyph_mask: Option<&GrayImage>,
) -> Result<InitImage, PosterError> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(PosterError::request(
            "glyph_init",
            format!("strength {strength}: it must be in (0, 1], or 0 for off"),
        ));
    }
    if request.init.is_some() {
        return Err(PosterError::request(
            "glyph_init",
            "an init image gives its own starting picture: ask for one or the other",
        ));
    }
    let Some(mask) = glyph_mask else {
        return Err(PosterError::request(
            "glyph_init",
            "there is no text to start from: quote it in the prompt, or give keywords or a layout",
        ));
    };
    Ok(InitImage {
        image: glyph_init_image(&request.prompt, mask),
        strength,
        mask: None,
    })
}

/// A mask that is white inside text line `index` (0-based) of `layout`, scaled to `size`.
pub fn line_mask(
    layout: Option<&Layout>,
    index: usize,
    (width, height): (u32, u32),
) -> Result<GrayImage, PosterError> {
    let Some(layout) = layout else {
        return Err(PosterError::request(
            "init.region",
            "repainting a text line needs a layout (text to place)",
        ));
    };
    let Some(line) = layout.lines.get(index) else {
        return Err(PosterError::request(
            "init.region",
            format!(
                "line {index} (0-based): the layout has {} line(s)",
                layout.lines.len()
            ),
        ));
    };
    let (sx, sy) = (
        f64::from(width) / f64::from(layout.width.max(1)),
        f64::from(height) / f64::from(layout.height.max(1)),
    );
    let b = &line.bbox;
    let (l, t) = (
        (f64::from(b.left) * sx).floor() as i64,
        (f64::from(b.top) * sy).floor() as i64,
    );
    let (r, bo) = (
        (f64::from(b.right) * sx).ceil() as i64,
        (f64::from(b.bottom) * sy).ceil() as i64,
    );
    Ok(GrayImage::from_fn(width, height, |x, y| {
        let inside = (l..r).contains(&i64::from(x)) && (t..bo).contains(&i64::from(y));
        image::Luma([if inside { 255 } else { 0 }])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use letterpress_layout::{BBox, TextLine};

    #[test]
    fn line_mask_covers_the_scaled_box() {
        let layout = Layout::new(
            100,
            100,
            vec![TextLine::new("A", BBox::new(10, 20, 30, 40))],
        );
        let mask = line_mask(Some(&layout), 0, (200, 100)).unwrap();
        assert_eq!(mask.get_pixel(20, 20).0[0], 255);
        assert_eq!(mask.get_pixel(59, 39).0[0], 255);
        assert_eq!(mask.get_pixel(60, 39).0[0], 0);
        assert_eq!(mask.get_pixel(19, 20).0[0], 0);
        let err = line_mask(Some(&layout), 1, (200, 100)).unwrap_err();
        assert!(err.to_string().contains("1 line(s)"), "{err}");
        assert!(line_mask(None, 0, (8, 8)).is_err());
    }

    #[test]
    fn output_size_prefers_the_request_then_the_layout() {
        let mut r = PosterRequest::new("p");
        assert_eq!(output_size(&r, 256), (256, 256));
        r.text = PosterText::Layout(Layout::new(320, 200, Vec::new()));
        assert_eq!(output_size(&r, 256), (320, 200));
        r.width = Some(512);
        assert_eq!(output_size(&r, 256), (512, 200));
    }
}

//! [`PosterEngine::make`]: the one place a poster is made, stage after stage, with an event
//! after each and a stop check between them and between denoising steps.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use image::{GrayImage, RgbImage};
use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::{ModelSource, StableDiffusion, StepEvent, image_seeds};
use letterpress_layout::Layout;
use letterpress_render::{RenderOptions, Renderer};

use crate::stages::{PlannedLayout, generation_request, output_size, plan_layout};
use crate::{PosterError, PosterMetadata, PosterRequest};

/// Progress of one poster, in the order the stages run.
#[derive(Debug)]
pub enum PosterEvent<'a> {
    /// The layout is planned (or a given one fitted to the canvas).
    Planned {
        layout: &'a Layout,
        warnings: &'a [String],
    },
    /// The glyph mask is drawn, at the output size.
    Rendered {
        glyph_mask: &'a GrayImage,
        warnings: &'a [String],
    },
    /// A denoising step finished (1-based).
    Step {
        step: usize,
        steps: usize,
        /// Image 0's current estimate, on the steps the request asked previews for.
        preview: Option<RgbImage>,
    },
}

/// One finished image and the seed that made it.
#[derive(Debug, Clone)]
pub struct PosterImage {
    pub image: RgbImage,
    pub seed: u64,
}

/// A finished poster: its images and everything needed to reproduce them.
#[derive(Debug, Clone)]
pub struct Poster {
    pub images: Vec<PosterImage>,
    /// The layout drawn, at the output size; `None` when the request had no text.
    pub layout: Option<Layout>,
    /// The rendered layout, white text on black, at the output size.
    pub glyph_mask: Option<GrayImage>,
    /// What the ControlNet saw (the mask, its inverse or its edges), when one did.
    pub control_image: Option<GrayImage>,
    /// What the planner and the renderer had to fix or report.
    pub warnings: Vec<String>,
    pub metadata: PosterMetadata,
}

/// A loaded model and a renderer: makes posters from [`PosterRequest`]s. Models are not
/// `Sync`: the thread that loads an engine owns it.
pub struct PosterEngine {
    model: StableDiffusion,
    renderer: Renderer,
    /// What `renderer` was built with; a request's own font gets a renderer with these.
    render_options: RenderOptions,
    default_side: u32,
}

impl PosterEngine {
    /// An engine around a loaded model that draws with `render` (default font, missing-glyph
    /// policy); posters are 512×512 unless a request or its layout says otherwise.
    pub fn new(model: StableDiffusion, render: RenderOptions) -> Result<Self, PosterError> {
        Ok(PosterEngine {
            model,
            renderer: Renderer::new(render.clone())?,
            render_options: render,
            default_side: 512,
        })
    }

    /// Loads the model from `source` (see [`StableDiffusion::load_from`]).
    pub fn load(
        source: &ModelSource,
        options: &LoadOptions,
        render: RenderOptions,
    ) -> Result<Self, PosterError> {
        Self::new(StableDiffusion::load_from(source, options)?, render)
    }

    /// The side of a poster whose request and layout give no size (a model's training size).
    pub fn with_default_side(mut self, side: u32) -> Self {
        self.default_side = side;
        self
    }

    pub fn model(&self) -> &StableDiffusion {
        &self.model
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// Makes `request.n` images: plan → fit → render → denoise. `events` hears each stage;
    /// `stop` is checked between stages and after every denoising step, and a `true` ends the
    /// poster with [`PosterError::Stopped`].
    pub fn make(
        &self,
        request: &PosterRequest,
        events: &mut dyn FnMut(PosterEvent<'_>),
        stop: &dyn Fn() -> bool,
    ) -> Result<Poster, PosterError> {
        if request.n == 0 {
            return Err(PosterError::request("n", "at least one image is needed"));
        }
        check(stop)?;
        let size = output_size(request, self.default_side);
        let seed = image_seeds(request.seed, 1)[0];
        let own_renderer;
        let renderer = match &request.font {
            Some(font) if *font != self.render_options.font => {
                own_renderer = Renderer::new(RenderOptions {
                    font: font.clone(),
                    ..self.render_options.clone()
                })?;
                &own_renderer
            }
            _ => &self.renderer,
        };

        let planned = plan_layout(renderer, request, size, seed)?;
        let mut warnings = Vec::new();
        if let Some(p) = &planned {
            events(PosterEvent::Planned {
                layout: &p.layout,
                warnings: &p.warnings,
            });
            warnings.extend(p.warnings.iter().cloned());
        }
        check(stop)?;
        let glyph_mask = match &planned {
            Some(PlannedLayout { layout, .. }) => {
                let rendering = renderer.render(layout)?;
                events(PosterEvent::Rendered {
                    glyph_mask: &rendering.glyph_mask,
                    warnings: &rendering.warnings,
                });
                warnings.extend(rendering.warnings);
                Some(rendering.glyph_mask)
            }
            None => None,
        };
        check(stop)?;

        let layout = planned.map(|p| p.layout);
        let g = generation_request(
            &self.model,
            request,
            size,
            seed,
            layout.as_ref(),
            glyph_mask.as_ref(),
        )?;
        let images = self.denoise(&g, request.preview_every, events, stop)?;
        let control_image = g.control.as_ref().map(|c| {
            letterpress_diffusion::pipelines::control_picture(&c.mask, c.mode, size.0, size.1)
        });
        let metadata = PosterMetadata {
            prompt: request.prompt.clone(),
            negative_prompt: request.negative_prompt.clone(),
            width: size.0,
            height: size.1,
            steps: request.steps,
            scheduler: images.1,
            guidance_scale: request.guidance_scale,
            model: self.model.model_name.clone(),
            control: g.control.as_ref().map(|_| request.control),
            strength: request.init.as_ref().map(|i| i.strength),
            layout: layout.clone(),
        };
        Ok(Poster {
            images: images.0,
            layout,
            glyph_mask,
            control_image,
            warnings,
            metadata,
        })
    }

    /// The denoising loop, with step events; returns the images and the scheduler's name.
    fn denoise(
        &self,
        g: &letterpress_diffusion::pipelines::GenerationRequest,
        preview_every: usize,
        events: &mut dyn FnMut(PosterEvent<'_>),
        stop: &dyn Fn() -> bool,
    ) -> Result<(Vec<PosterImage>, &'static str), PosterError> {
        // The pipeline checks one flag between steps; `stop` is folded into it after each.
        let cancel = AtomicBool::new(stop());
        let events = RefCell::new(events);
        let every = preview_every.max(1);
        let on_step = |e: StepEvent| {
            if e.step > 0 {
                let preview = e.preview.filter(|_| e.step % every == 0);
                (events.borrow_mut())(PosterEvent::Step {
                    step: e.step,
                    steps: e.total,
                    preview,
                });
            }
            if stop() {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let generation = self.model.generate(g, &on_step, &cancel)?;
        let images = generation
            .images
            .iter()
            .map(|img| {
                Ok(PosterImage {
                    image: img.to_rgb8()?,
                    seed: img.seed,
                })
            })
            .collect::<Result<Vec<_>, letterpress_diffusion::Error>>()?;
        Ok((images, generation.scheduler))
    }
}

fn check(stop: &dyn Fn() -> bool) -> Result<(), PosterError> {
    if stop() {
        Err(PosterError::Stopped)
    } else {
        Ok(())
    }
}

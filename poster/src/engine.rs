//! [`PosterEngine::make`]: the one place a poster is made, stage after stage, with an event
//! after each and a stop check between them and between denoising steps.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use image::{GrayImage, RgbImage};
use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::{ModelSource, StableDiffusion, StepEvent, image_seeds};
use letterpress_layout::Layout;
use letterpress_render::{RenderOptions, Renderer};

use crate::certificate::{Certificate, certify, check_line};
use crate::repair::{MAX_REPAIR_ROUNDS, RepairTools, repair};
use crate::stages::{PlannedLayout, generation_request, output_size, plan_layout};
use crate::{PosterError, PosterInit, PosterMetadata, PosterRequest, RepaintRegion};

/// Repair rounds repaint the failing lines from pure noise (under the glyph control): a
/// lower strength would keep the wrong letters' shapes.
const REPAIR_STRENGTH: f64 = 1.0;

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
    /// Image `image` (0-based, seed order) was read back and, when asked, repaired.
    Verified {
        image: usize,
        certificate: &'a Certificate,
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
    /// How its lines read back, when the request asked for verification.
    pub certificate: Option<Certificate>,
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

impl Poster {
    /// The PNG text chunks of `image` (one of this poster's): the metadata, and its
    /// certificate as JSON in a `certificate` chunk when it was verified.
    pub fn png_text(&self, image: &PosterImage) -> Vec<(String, String)> {
        let mut text = self.metadata.png_text(image.seed);
        if let Some(c) = &image.certificate {
            text.push(("certificate".to_string(), c.to_json()));
        }
        text
    }
}

/// A loaded model and a renderer: makes posters from [`PosterRequest`]s. Models are not
/// `Sync`: the thread that loads an engine owns it.
pub struct PosterEngine {
    model: StableDiffusion,
    renderer: Renderer,
    /// What `renderer` was built with; a request's own font gets a renderer with these.
    render_options: RenderOptions,
    default_side: u32,
    /// Glyph initialisation strength for requests that leave it unset; `None`: off.
    default_glyph_init: Option<f64>,
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
            default_glyph_init: None,
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

    /// Starts requests that leave `glyph_init` unset (and give no init image) from their
    /// glyphs at `strength` (a model too small to draw letters from noise, like the embedded
    /// one); `None` leaves it off.
    pub fn with_default_glyph_init(mut self, strength: Option<f64>) -> Self {
        self.default_glyph_init = strength;
        self
    }

    pub fn default_glyph_init(&self) -> Option<f64> {
        self.default_glyph_init
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
        if request.repair > MAX_REPAIR_ROUNDS {
            return Err(PosterError::request(
                "repair",
                format!("{} rounds: at most {MAX_REPAIR_ROUNDS}", request.repair),
            ));
        }
        if request.repair > 0 && request.init.as_ref().is_some_and(keeps_some_pixels) {
            // Repair repaints whichever lines read wrong; a repaint region promises that
            // nothing outside it changes. (A mask that repaints everything, as an inpainting
            // UNet painting a whole picture takes, promises nothing.)
            return Err(PosterError::request(
                "repair",
                "repair repaints any line that reads wrong, but init.region keeps everything \
                 outside it: ask for one or the other",
            ));
        }
        check(stop)?;
        let defaulted;
        let request = match self.default_glyph_init {
            Some(strength) if request.glyph_init.is_none() && request.init.is_none() => {
                defaulted = PosterRequest {
                    glyph_init: Some(strength),
                    ..request.clone()
                };
                &defaulted
            }
            _ => request,
        };
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
        let mut images = self.denoise(&g, request.preview_every, events, stop)?;
        if request.verifies() {
            self.verify_all(
                &mut images.0,
                request,
                layout.as_ref(),
                glyph_mask.as_ref(),
                events,
                stop,
            )?;
        }
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
            glyph_init: request.glyph_init.filter(|s| *s != 0.0),
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
                    certificate: None,
                })
            })
            .collect::<Result<Vec<_>, letterpress_diffusion::Error>>()?;
        Ok((images, generation.scheduler))
    }
}

impl PosterEngine {
    /// Certifies (and repairs, when asked) each image, with a `Verified` event after each;
    /// ranks them when the request asks for the best first.
    fn verify_all(
        &self,
        images: &mut [PosterImage],
        request: &PosterRequest,
        layout: Option<&Layout>,
        glyph_mask: Option<&GrayImage>,
        events: &mut dyn FnMut(PosterEvent<'_>),
        stop: &dyn Fn() -> bool,
    ) -> Result<(), PosterError> {
        let Some(first) = images.first() else {
            return Ok(());
        };
        let (width, height) = first.image.dimensions();
        let empty = Layout::new(width, height, Vec::new());
        let layout = layout.unwrap_or(&empty);
        for (i, image) in images.iter_mut().enumerate() {
            check(stop)?;
            let certificate = self.verify(image, request, layout, glyph_mask, stop)?;
            events(PosterEvent::Verified {
                image: i,
                certificate: &certificate,
            });
            image.certificate = Some(certificate);
        }
        if request.best_of {
            rank(images);
        }
        Ok(())
    }

    /// Certifies `image` against `layout` and, when the request asks, repairs its wrong lines
    /// in place (`image.image` becomes the repaired picture).
    fn verify(
        &self,
        image: &mut PosterImage,
        request: &PosterRequest,
        layout: &Layout,
        glyph_mask: Option<&GrayImage>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Certificate, PosterError> {
        let certificate = certify(&image.image, layout)?;
        if request.repair == 0 || certificate.lines_ok == certificate.line_count {
            return Ok(certificate);
        }
        let size = image.image.dimensions();
        let mut paint = |current: &RgbImage, mask: &GrayImage, seed: u64| {
            let mut round = request.clone();
            (round.n, round.seed, round.preview_every) = (1, Some(seed), 0);
            // The round's own picture is its start: the request's glyph initialisation is off.
            round.glyph_init = Some(0.0);
            round.init = Some(PosterInit {
                image: current.clone(),
                strength: REPAIR_STRENGTH,
                region: Some(RepaintRegion::Mask(mask.clone())),
            });
            let g = generation_request(&self.model, &round, size, seed, Some(layout), glyph_mask)?;
            let (painted, _) = self.denoise(&g, 0, &mut |_| {}, stop)?;
            painted
                .into_iter()
                .next()
                .map(|p| p.image)
                .ok_or_else(|| PosterError::request("repair", "the model painted no image"))
        };
        let mut read = |img: &RgbImage, line: usize| check_line(img, layout, line);
        let tools = RepairTools {
            paint: &mut paint,
            read: &mut read,
        };
        let (repaired, certificate) = repair(
            &image.image,
            layout,
            certificate,
            request.repair,
            image.seed,
            tools,
        )?;
        image.image = repaired;
        Ok(certificate)
    }
}

/// Best certificate first (more lines right, then a higher score); ties keep seed order.
fn rank(images: &mut [PosterImage]) {
    let key = |i: &PosterImage| {
        i.certificate
            .as_ref()
            .map_or((0, 0.0), |c| (c.lines_ok, c.score))
    };
    images.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// Whether `init`'s repaint region keeps part of the picture: a layout line always does, a
/// mask where any pixel is darker than mid-grey does.
fn keeps_some_pixels(init: &PosterInit) -> bool {
    match &init.region {
        None => false,
        Some(RepaintRegion::Line(_)) => true,
        Some(RepaintRegion::Mask(m)) => m.pixels().any(|p| p.0[0] < 128),
    }
}

fn check(stop: &dyn Fn() -> bool) -> Result<(), PosterError> {
    if stop() {
        Err(PosterError::Stopped)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LineCheck;

    fn image(seed: u64, ok: &[bool]) -> PosterImage {
        let lines = ok
            .iter()
            .enumerate()
            .map(|(index, &ok)| LineCheck {
                index,
                text: "A".into(),
                read: String::new(),
                edit_distance: if ok { 0.0 } else { 1.0 },
                confidence: 0.0,
                ok,
                round: 0,
            })
            .collect();
        PosterImage {
            image: RgbImage::new(1, 1),
            seed,
            certificate: Some(Certificate::from_lines(lines, Vec::new())),
        }
    }

    #[test]
    fn best_of_ranks_by_lines_right_and_keeps_seed_order_on_ties() {
        let mut images = vec![
            image(1, &[false, false]),
            image(2, &[true, true]),
            image(3, &[false, false]),
            image(4, &[true, false]),
        ];
        rank(&mut images);
        let seeds: Vec<u64> = images.iter().map(|i| i.seed).collect();
        assert_eq!(seeds, [2, 4, 1, 3]);
    }
}

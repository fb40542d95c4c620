//! The service's engine: letterpress-poster's `PosterEngine` behind letterpress-api's
//! `PosterEngine` trait. This adapter only translates: the API's job into a `PosterRequest`,
//! the poster's events and errors into the API's. The loader runs on the API's worker thread,
//! which then owns the model (tensors are not `Sync`).

use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use image::RgbImage;
use letterpress_api::{
    EditCheck, EditRefusal, EngineEdit, EngineError, EngineEvent, EngineInfo, EngineJob,
    EngineLoader, LineCertificate, PosterEngine, StepProgress, StopToken,
};
use letterpress_diffusion::pipelines::ModelSource;
use letterpress_diffusion::schedulers::{SchedulerConfig, build_scheduler};
use letterpress_diffusion::{LoadOptions, SchedulerKind};
use letterpress_layout::{Layout, TextLine};
use letterpress_poster::{
    Certificate, EditRequest, PosterError, PosterEvent, PosterInit, PosterRequest, PosterText,
    RepaintRegion, Replacement, plan_edit,
};
use letterpress_render::{MissingGlyph, RenderOptions, Renderer};

pub struct DiffusionEngine {
    poster: letterpress_poster::PosterEngine,
    /// Scheduler names that load with this model's config; the model's own first.
    schedulers: Vec<String>,
}

/// The service's edit check: the poster crate's `plan_edit` (OCR finds each old text, the
/// renderer fits the new one) with the service's renderer settings, so `POST /v1/edits`
/// refuses an edit the worker could not make before a job exists. Failures that are not the
/// request's (tesseract not starting) pass here and surface in the job.
pub fn edit_check(font: Option<String>) -> Result<EditCheck> {
    let renderer = std::sync::Arc::new(Renderer::new(service_render_options(font))?);
    Ok(std::sync::Arc::new(
        move |image: &RgbImage, pairs: &[(String, String)]| {
            let replacements: Vec<Replacement> = pairs
                .iter()
                .map(|(old, new)| Replacement {
                    old: old.clone(),
                    new: new.clone(),
                })
                .collect();
            match plan_edit(&renderer, image, &replacements, None) {
                Err(PosterError::Edit { field, message }) => Err(EditRefusal { field, message }),
                Err(PosterError::Request { field, message }) => Err(EditRefusal {
                    field: field.to_string(),
                    message,
                }),
                _ => Ok(()),
            }
        },
    ))
}

/// How the service draws: glyphs no font has are reported as warnings rather than failing
/// the request, as `/v1/render` does.
fn service_render_options(font: Option<String>) -> RenderOptions {
    let mut render = RenderOptions {
        missing_glyph: MissingGlyph::Skip,
        ..Default::default()
    };
    if let Some(font) = font {
        render.font = font;
    }
    render
}

/// Checks the device and folder now (a clear error at start-up) and returns the loader.
/// `font` is the service's default font (default: the renderer's); `glyph_init` the glyph
/// initialisation strength of requests that leave it unset (the embedded model's).
pub fn loader(
    model_dir: PathBuf,
    device: String,
    font: Option<String>,
    glyph_init: Option<f64>,
) -> Result<EngineLoader> {
    if !model_dir.exists() {
        bail!(
            "--model-dir {}: not found; expected a diffusers folder with unet/, controlnet/, \
             vae/, text_encoder/, tokenizer/ and scheduler/ (or a TextDiffuser-2 folder)",
            model_dir.display()
        );
    }
    let options = crate::device::load_options(&device, None)?;
    let render = service_render_options(font);
    Ok(Box::new(move || {
        DiffusionEngine::load(&model_dir, &options, render)
            .map(|mut e| {
                e.poster = e.poster.with_default_glyph_init(glyph_init);
                Box::new(e) as Box<dyn PosterEngine>
            })
            .map_err(|e| format!("{e:#}"))
    }))
}

impl DiffusionEngine {
    pub fn load(model_dir: &Path, options: &LoadOptions, render: RenderOptions) -> Result<Self> {
        let source = ModelSource {
            model: model_dir.to_path_buf(),
            ..Default::default()
        };
        let poster = letterpress_poster::PosterEngine::load(&source, options, render)?;
        let model = poster.model();
        if !model.reads_glyph_mask() && !letterpress_poster::has_layout_tokens(model) {
            bail!(
                "{}: neither a glyph ControlNet, a glyph-input UNet nor a TextDiffuser-2 \
                 tokenizer; the service needs a model that reads the layout",
                model_dir.display()
            );
        }
        let own = own_scheduler(&model.scheduler_config);
        let mut schedulers = vec![own.clone()];
        for name in SchedulerKind::NAMES {
            let loads = name
                .parse::<SchedulerKind>()
                .is_ok_and(|k| build_scheduler(&model.scheduler_config, Some(k)).is_ok());
            if loads && name != own {
                schedulers.push(name.to_string());
            }
        }
        Ok(DiffusionEngine { poster, schedulers })
    }
}

/// The scheduler the folder names, as the API spells it (DDIM when it names one we lack).
fn own_scheduler(config: &SchedulerConfig) -> String {
    config
        .class_name
        .as_deref()
        .and_then(SchedulerKind::from_class_name)
        .unwrap_or(SchedulerKind::Ddim)
        .to_string()
}

/// The poster request an API job describes.
fn poster_request(job: &EngineJob) -> Result<PosterRequest, EngineError> {
    let mut r = PosterRequest::new(job.prompt.clone());
    r.negative_prompt = job.negative_prompt.clone();
    r.text = match &job.layout {
        Some(layout) => PosterText::Layout(layout.clone()),
        None if !job.keywords.is_empty() => PosterText::Keywords(job.keywords.clone()),
        // The API paints prompts without text too: an empty layout is a blank glyph mask,
        // which tells a glyph ControlNet "no text here".
        None if letterpress_layout::extract_keywords(&job.prompt).is_empty() => {
            PosterText::Layout(Layout::new(job.width, job.height, Vec::new()))
        }
        None => PosterText::Quoted,
    };
    (r.width, r.height) = (Some(job.width), Some(job.height));
    r.n = job.n as usize;
    r.seed = Some(job.seed);
    r.steps = job.steps as usize;
    r.guidance_scale = f64::from(job.guidance_scale);
    r.scheduler = Some(
        job.scheduler
            .parse::<SchedulerKind>()
            .map_err(|e| EngineError::Unsupported(e.to_string()))?,
    );
    r.control.conditioning_scale = f64::from(job.controlnet_conditioning_scale);
    r.preview_every = job.preview_every as usize;
    r.init = job.init.as_ref().map(|init| PosterInit {
        image: init.image.clone(),
        strength: f64::from(init.strength),
        region: init.inpaint_line.map(RepaintRegion::Line),
    });
    r.glyph_init = job.glyph_init;
    r.verify = job.verify;
    r.repair = job.repair as usize;
    Ok(r)
}

impl PosterEngine for DiffusionEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            model: self.poster.model().model_name.clone(),
            schedulers: self.schedulers.clone(),
        }
    }

    fn generate(
        &mut self,
        job: &EngineJob,
        events: &mut dyn FnMut(EngineEvent) -> ControlFlow<()>,
        stop: &StopToken,
    ) -> Result<Vec<RgbImage>, EngineError> {
        if let Some(edit) = &job.edit {
            return self.edit(job, edit, events, stop);
        }
        let request = poster_request(job)?;
        // The handler's Break stops the poster like the stop token does.
        let broken = Cell::new(false);
        let mut on_event = |event: PosterEvent<'_>| {
            let event = match event {
                PosterEvent::Planned { layout, warnings } => EngineEvent::Planned {
                    layout: layout.clone(),
                    warnings: warnings.to_vec(),
                },
                PosterEvent::Rendered {
                    glyph_mask,
                    warnings,
                } => EngineEvent::Rendered {
                    glyph_mask: glyph_mask.clone(),
                    warnings: warnings.to_vec(),
                },
                PosterEvent::Step {
                    step,
                    steps,
                    preview,
                } => EngineEvent::Step(StepProgress {
                    step: step as u32,
                    steps: steps as u32,
                    preview,
                }),
                PosterEvent::Verified { image, certificate } => EngineEvent::Verified {
                    image: image as u32,
                    certificate: api_certificate(certificate),
                },
            };
            if events(event).is_break() {
                broken.set(true);
            }
        };
        let poster = self
            .poster
            .make(&request, &mut on_event, &|| {
                broken.get() || stop.should_stop()
            })
            .map_err(engine_error)?;
        Ok(poster.images.into_iter().map(|i| i.image).collect())
    }
}

impl DiffusionEngine {
    /// An edit job: the poster engine's edit, reported as a poster's stages (the new lines as
    /// the layout, the edited region as the mask) and one `Verified`.
    fn edit(
        &mut self,
        job: &EngineJob,
        edit: &EngineEdit,
        events: &mut dyn FnMut(EngineEvent) -> ControlFlow<()>,
        stop: &StopToken,
    ) -> Result<Vec<RgbImage>, EngineError> {
        let request = EditRequest {
            image: edit.image.clone(),
            replacements: edit
                .replacements
                .iter()
                .map(|(old, new)| Replacement {
                    old: old.clone(),
                    new: new.clone(),
                })
                .collect(),
            known_layout: None,
            base: poster_request(job)?,
        };
        let edited = self
            .poster
            .edit(&request, &|| stop.should_stop())
            .map_err(engine_error)?;
        let (width, height) = edited.image.dimensions();
        let lines = request
            .replacements
            .iter()
            .zip(&edited.boxes)
            .map(|(r, b)| TextLine::new(r.new.clone(), b.drawn))
            .collect();
        let stages = [
            EngineEvent::Planned {
                layout: Layout::new(width, height, lines),
                warnings: Vec::new(),
            },
            EngineEvent::Rendered {
                glyph_mask: edited.region.clone(),
                warnings: Vec::new(),
            },
            EngineEvent::Verified {
                image: 0,
                certificate: api_certificate(&edited.certificate),
            },
        ];
        for event in stages {
            if events(event).is_break() {
                return Err(EngineError::Stopped);
            }
        }
        Ok(vec![edited.image])
    }
}

/// The poster engine's certificate in the API's types.
fn api_certificate(c: &Certificate) -> letterpress_api::Certificate {
    letterpress_api::Certificate {
        lines_ok: c.lines_ok as u32,
        line_count: c.line_count as u32,
        score: c.score,
        rounds: c.rounds as u32,
        repair_seeds: c.repair_seeds.clone(),
        lines: c
            .lines
            .iter()
            .map(|l| LineCertificate {
                index: l.index as u32,
                text: l.text.clone(),
                read: l.read.clone(),
                edit_distance: l.edit_distance,
                confidence: l.confidence,
                ok: l.ok,
                round: l.round as u32,
            })
            .collect(),
    }
}

fn engine_error(e: PosterError) -> EngineError {
    match e {
        PosterError::Stopped => EngineError::Stopped,
        e @ (PosterError::Layout(_) | PosterError::Render(_)) if e.is_request_error() => {
            EngineError::InvalidLayout(e.to_string())
        }
        e if e.is_request_error() => EngineError::Unsupported(e.to_string()),
        e => EngineError::Failed(format!("{e:#}")),
    }
}

//! The service's diffusion engine: letterpress-diffusion's pipelines behind letterpress-api's
//! `PosterEngine` boundary. The loader runs on the API's worker thread, which then owns the
//! model (tensors are not `Sync`).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};
use image::RgbImage;
use letterpress_api::{
    EngineError, EngineInfo, EngineJob, EngineLoader, PosterEngine, StepProgress, StopToken,
};
use letterpress_diffusion::pipelines::{
    ControlSettings, GenerationRequest, InitImage, ModelSource, StableDiffusion, TextConditioning,
};
use letterpress_diffusion::schedulers::{SchedulerConfig, build_scheduler};
use letterpress_diffusion::{Error, LoadOptions, SchedulerKind};
use letterpress_layout::layout_tokens;

/// How the model reads the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conditioning {
    /// A glyph ControlNet sees the mask.
    ControlNet,
    /// TextDiffuser-2: layout tokens after the caption.
    TextDiffuser2,
}

pub struct DiffusionEngine {
    model: StableDiffusion,
    conditioning: Conditioning,
    /// Scheduler names that load with this model's config; the model's own first.
    schedulers: Vec<String>,
}

/// Checks the device and folder now (a clear error at start-up) and returns the loader.
pub fn loader(model_dir: PathBuf, device: String) -> Result<EngineLoader> {
    if !model_dir.exists() {
        bail!(
            "--model-dir {}: not found; expected a diffusers folder with unet/, controlnet/, \
             vae/, text_encoder/, tokenizer/ and scheduler/ (or a TextDiffuser-2 folder)",
            model_dir.display()
        );
    }
    let device = crate::generate_cmd::parse_device(&device)?;
    Ok(Box::new(move || {
        DiffusionEngine::load(&model_dir, device)
            .map(|e| Box::new(e) as Box<dyn PosterEngine>)
            .map_err(|e| format!("{e:#}"))
    }))
}

impl DiffusionEngine {
    pub fn load(model_dir: &Path, device: letterpress_diffusion::tch::Device) -> Result<Self> {
        let source = ModelSource {
            model: model_dir.to_path_buf(),
            controlnet: None,
            tokenizer: None,
            config_dir: None,
        };
        let options = LoadOptions {
            device,
            ..Default::default()
        };
        let model = StableDiffusion::load_from(&source, &options)?;
        let td2_tokens = ["l519", "[a]"]
            .iter()
            .all(|t| model.tokenizer.token_to_id(t).is_some());
        let conditioning = match (model.controlnet.is_some(), td2_tokens) {
            (true, _) => Conditioning::ControlNet,
            (false, true) => Conditioning::TextDiffuser2,
            (false, false) => bail!(
                "{}: neither a ControlNet nor a TextDiffuser-2 tokenizer; the service needs a \
                 model that reads the layout",
                model_dir.display()
            ),
        };
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
        Ok(DiffusionEngine {
            model,
            conditioning,
            schedulers,
        })
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

impl PosterEngine for DiffusionEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            model: self.model.model_name.clone(),
            schedulers: self.schedulers.clone(),
        }
    }

    fn generate(
        &mut self,
        job: &EngineJob,
        progress: &mut dyn FnMut(StepProgress),
        stop: &StopToken,
    ) -> Result<Vec<RgbImage>, EngineError> {
        let mut request = GenerationRequest::new(job.prompt.clone());
        request.negative_prompt = job.negative_prompt.clone();
        request.width = job.width;
        request.height = job.height;
        request.steps = job.steps as usize;
        request.guidance_scale = f64::from(job.guidance_scale);
        request.scheduler = Some(
            job.scheduler
                .parse::<SchedulerKind>()
                .map_err(|e| EngineError::Unsupported(e.to_string()))?,
        );
        request.num_images = job.n as usize;
        request.seed = Some(job.seed);
        request.preview = job.preview_every > 0;
        match self.conditioning {
            Conditioning::ControlNet => {
                let mut control = ControlSettings::new(job.glyph_mask.clone());
                control.conditioning_scale = f64::from(job.controlnet_conditioning_scale);
                request.control = Some(control);
            }
            Conditioning::TextDiffuser2 => {
                request.conditioning = TextConditioning::TextDiffuser2 {
                    layout_tokens: layout_tokens(&job.layout),
                };
            }
        }
        if let Some(init) = &job.init {
            // The same line mask `letterpress generate --inpaint-line` uses (1-based there).
            let mask = init
                .inpaint_line
                .map(|i| {
                    crate::generate_cmd::line_mask(Some(&job.layout), i + 1, job.width, job.height)
                })
                .transpose()
                .map_err(|e| EngineError::Unsupported(format!("{e:#}")))?;
            request.init = Some(InitImage {
                image: init.image.clone(),
                strength: f64::from(init.strength),
                mask,
            });
        }
        // The pipeline checks one flag between steps; the stop token (cancel, timeout,
        // shutdown) is folded into it after every step.
        let cancel = AtomicBool::new(stop.should_stop());
        let progress = RefCell::new(progress);
        let every = job.preview_every.max(1) as usize;
        let on_step = |e: letterpress_diffusion::pipelines::StepEvent| {
            if e.step > 0 {
                let preview = e.preview.filter(|_| e.step % every == 0);
                (progress.borrow_mut())(StepProgress {
                    step: e.step as u32,
                    steps: e.total as u32,
                    preview,
                });
            }
            if stop.should_stop() {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let generation = match self.model.generate(&request, &on_step, &cancel) {
            Ok(g) => g,
            Err(Error::Canceled) => return Err(EngineError::Stopped),
            Err(Error::Request(m)) => return Err(EngineError::Unsupported(m)),
            Err(e) => return Err(EngineError::Failed(format!("{e:#}"))),
        };
        generation
            .images
            .iter()
            .map(|img| {
                img.to_rgb8()
                    .map_err(|e| EngineError::Failed(format!("{e:#}")))
            })
            .collect()
    }
}

//! `letterpress serve`: the HTTP poster-generation API (letterpress-api), one process with
//! its model, or with `--queue nats://…` an API node of a scaled-out service whose workers
//! (`letterpress worker`, src/worker_cmd.rs) run elsewhere (docs/scaling-out.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use letterpress_api::{EngineLoader, Settings};

#[derive(Args)]
pub struct ServeArgs {
    /// Settings file (TOML); `LETTERPRESS_*` variables override it, these flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Diffusers-layout model folder (unet/, controlnet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/). Default: the embedded demo model (models/README.md), which paints no
    /// legible letters yet but lets every endpoint and the designer page work. An API node
    /// (--queue) loads none: its workers do (`letterpress worker --model-dir`).
    #[arg(long, conflicts_with = "queue")]
    model_dir: Option<PathBuf>,
    /// Address to listen on (`127.0.0.1:0` picks a free port; the first line printed names it).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Where jobs (SQLite) and generated files are kept.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device for the model: cpu, cuda, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// NATS JetStream server (nats://host:port): serve as an API node that loads no model and
    /// queues jobs there for `letterpress worker` processes.
    #[arg(long, value_name = "URL")]
    queue: Option<String>,
    /// With --queue: the model name jobs are queued for (default: the one workers registered).
    #[arg(long, value_name = "NAME", requires = "queue")]
    queue_model: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = args.model_dir {
        settings.model_dir = Some(dir);
    }
    if let Some(bind) = args.bind {
        settings.bind = bind;
    }
    if let Some(dir) = args.data_dir {
        settings.data_dir = dir;
    }
    if let Some(device) = args.device {
        settings.device = device;
    }
    if let Some(url) = args.queue {
        settings.queue_url = Some(url);
    }
    if let Some(model) = args.queue_model {
        settings.queue_model = Some(model);
    }
    // An API node's jobs run on workers; it loads no model.
    let loader = match settings.queue_url {
        Some(_) => None,
        None => Some(engine_loader(&settings)?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let edit_check = crate::serve_engine::edit_check(settings.font.clone())?;
    runtime.block_on(letterpress_api::serve_checked(
        settings,
        loader,
        Some(edit_check),
    ))?;
    Ok(())
}

/// The engine of `model_dir`, or without one the embedded demo model (as the CLI paints
/// with), so a fresh clone's service generates.
pub fn engine_loader(settings: &Settings) -> Result<EngineLoader> {
    let (dir, glyph_init) = match &settings.model_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            eprintln!("model: {}", crate::embedded_model::DESCRIPTION);
            (
                crate::embedded_model::folder()?,
                Some(crate::embedded_model::GLYPH_INIT),
            )
        }
    };
    crate::serve_engine::loader(
        dir,
        settings.device.clone(),
        settings.font.clone(),
        glyph_init,
    )
}

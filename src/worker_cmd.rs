//! `letterpress worker --queue nats://…`: a worker of a scaled-out service. It loads one model
//! (the embedded one when no folder is given), takes that model's jobs from NATS JetStream
//! and runs them until SIGTERM (docs/scaling-out.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use letterpress_api::Settings;

#[derive(Args)]
pub struct WorkerArgs {
    /// NATS JetStream server (nats://host:port) the API nodes queue jobs on.
    #[arg(long, value_name = "URL")]
    queue: String,
    /// Settings file (TOML); `LETTERPRESS_*` variables override it, these flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Diffusers-layout model folder. Default: the embedded demo model.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// The model name this worker takes jobs for. Default: the folder's name, or `embedded`.
    #[arg(long, value_name = "NAME")]
    model_name: Option<String>,
    /// Device for the model: cpu, cuda, cuda:N.
    #[arg(long)]
    device: Option<String>,
}

pub fn run(args: WorkerArgs) -> Result<()> {
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars())?;
    settings.queue_url = Some(args.queue);
    if let Some(dir) = args.model_dir {
        settings.model_dir = Some(dir);
    }
    if let Some(device) = args.device {
        settings.device = device;
    }
    // The embedded model's folder is named after its weights; its queue is `embedded`.
    settings.queue_model = args.model_name.or(settings.queue_model).or_else(|| {
        settings
            .model_dir
            .is_none()
            .then(|| letterpress_api::EMBEDDED_MODEL.to_string())
    });
    let loader = crate::serve_cmd::engine_loader(&settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(letterpress_api::work(settings, loader))?;
    Ok(())
}

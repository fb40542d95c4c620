//! `letterpress serve`: the HTTP poster-generation API (letterpress-api).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use letterpress_api::Settings;

#[derive(Args)]
pub struct ServeArgs {
    /// Settings file (TOML); `LETTERPRESS_*` variables override it, these flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Diffusers-layout model folder (unet/, controlnet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/). Without one, generations answer 503 and planning and rendering still work.
    #[arg(long)]
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
    let loader = match &settings.model_dir {
        Some(dir) => Some(crate::serve_engine::loader(
            dir.clone(),
            settings.device.clone(),
            settings.font.clone(),
        )?),
        None => None,
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

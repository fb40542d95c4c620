//! `letterpress bench unet`: one ControlNet + UNet forward, ours against diffusers
//! (tools/bench_unet_diffusers.py) in the same run. Both build the full SD 1.5 UNet
//! configuration with random weights and a ControlNet of the same trunk, and run batch 2
//! (classifier-free guidance) at 32×32 latents: a warm-up, then the median of `--runs`.
//!
//! The two sides alternate single forwards (ours, theirs, ours, …) with diffusers held in a
//! child process, so load changes on a shared machine hit both alike. Peak RSS is per process:
//! ours from `VmHWM`, theirs from `ru_maxrss`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use letterpress_diffusion::tch::{self, Device, Kind, Tensor};
use letterpress_diffusion::{
    ControlNetConfig, ControlNetModel, UNet2DConditionConfig, UNet2DConditionModel, build_random,
};

use crate::bench_reference::Reference;
use crate::bench_support::{default_python, median, peak_rss_mb};

#[derive(Args)]
pub struct UnetBenchArgs {
    /// Timed forwards on each side, after one warm-up.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Latent side (the control image is 8× larger).
    #[arg(long, default_value_t = 32)]
    latent: i64,
    /// Python with diffusers for the reference (`scripts/setup --oracle`).
    /// Default: .venv/bin/python, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
}

const BATCH: i64 = 2;

pub fn run(args: UnetBenchArgs) -> Result<()> {
    if args.runs == 0 || args.latent < 8 || args.latent % 8 != 0 {
        bail!("--runs must be at least 1 and --latent a multiple of 8 (at least 8)");
    }
    let latent = args.latent;
    println!(
        "ControlNet + UNet forward, SD 1.5 configuration, random weights, batch {BATCH}, {latent}x{latent} latents, fp32 CPU, {} threads; median of {} after a warm-up, the two sides alternating",
        tch::get_num_threads(),
        args.runs
    );
    // diffusers builds first, alone, then waits while we build.
    let python = args.python.unwrap_or_else(default_python);
    let (mut reference, their_build_s) = Reference::start(
        &python,
        "tools/bench_unet_diffusers.py",
        &["--interleave".into(), "--latent".into(), latent.to_string()],
    )?;

    let device = Device::Cpu;
    tch::manual_seed(0);
    let t0 = Instant::now();
    let unet =
        build_random::<UNet2DConditionModel>(&UNet2DConditionConfig::sd15(), device, Kind::Float)?;
    let controlnet =
        build_random::<ControlNetModel>(&ControlNetConfig::sd15(), device, Kind::Float)?;
    let our_build_s = t0.elapsed().as_secs_f64();
    let opts = (Kind::Float, device);
    let sample = Tensor::randn([BATCH, 4, latent, latent], opts);
    let states = Tensor::randn([BATCH, 77, 768], opts);
    let hint = Tensor::rand([BATCH, 3, 8 * latent, 8 * latent], opts);
    let t = Tensor::from(999i64);
    let step = || -> Result<Tensor> {
        let residuals = controlnet
            .model
            .forward(&sample, &t, &states, &hint, 1.0, false)?;
        Ok(unet.model.forward(&sample, &t, &states, Some(&residuals))?)
    };
    let _guard = tch::no_grad_guard();

    let warm = step()?;
    if warm.size() != [BATCH, 4, latent, latent] || warm.isfinite().all().int64_value(&[]) == 0 {
        bail!(
            "our forward gave shape {:?} or non-finite values",
            warm.size()
        );
    }
    reference.run_once()?; // their warm-up
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let t1 = Instant::now();
        drop(step()?);
        ours.push(t1.elapsed().as_secs_f64());
        theirs.push(reference.run_once()?);
    }
    let our_rss = peak_rss_mb()?;
    let summary = reference.finish()?;
    let their_rss = summary["peak_rss_mb"]
        .as_f64()
        .context("no peak_rss_mb from the reference")?;
    let fmt = |xs: &[f64]| {
        xs.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (our_median, their_median) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "letterpress (tch): {our_median:.3} s per forward [{}], peak RSS {our_rss:.0} MB, build {our_build_s:.1} s",
        fmt(&ours)
    );
    println!(
        "diffusers:         {their_median:.3} s per forward [{}], peak RSS {their_rss:.0} MB, build {their_build_s:.1} s",
        fmt(&theirs)
    );
    println!("speedup: {:.2}", their_median / our_median);
    Ok(())
}

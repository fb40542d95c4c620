//! `letterpress bench pipeline`: one whole ControlNet generation, ours against diffusers'
//! `StableDiffusionControlNetPipeline` (tools/bench_pipeline_diffusers.py) in the same run.
//!
//! Both sides build the full SD 1.5 configurations with random weights (UNet, a ControlNet of the
//! same trunk, CLIP ViT-L/14 text encoder, VAE), read the sd1 fixture's CLIP tokenizer and DDIM
//! scheduler config, and generate at 256×256 with 20 DDIM steps and classifier-free guidance from
//! the same rendered glyph mask: prompt encoding, denoising and VAE decode, fp32 CPU. The sides
//! alternate whole generations (ours, theirs, …) with diffusers held in a child process, so load
//! changes on a shared machine hit both alike. Peak RSS is per process (`VmHWM`, `ru_maxrss`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use letterpress_diffusion::pipelines::{ControlSettings, GenerationRequest, StableDiffusion};
use letterpress_diffusion::schedulers::SchedulerKind;
use letterpress_diffusion::tch::{self, Device, Kind};
use letterpress_diffusion::{
    AutoencoderKL, AutoencoderKLConfig, ClipTextConfig, ClipTextModel, ClipTokenizer,
    ControlNetConfig, ControlNetModel, UNet2DConditionConfig, UNet2DConditionModel, build_random,
};
use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_render::Renderer;

use crate::bench_reference::Reference;
use crate::bench_support::{default_python, median, peak_rss_mb};

#[derive(Args)]
pub struct PipelineBenchArgs {
    /// Whole generations on each side; the median counts (one run alone is at the mercy of a
    /// noisy machine).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Denoising steps per generation.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Image side in pixels (a multiple of 64).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// cpu, cuda or cuda:N (both sides).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// fp32, fp16 or bf16 (both sides). Default: fp32 on CPU, fp16 on CUDA.
    #[arg(long)]
    dtype: Option<String>,
    /// Python with diffusers for the reference (`scripts/setup --oracle`).
    /// Default: .venv/bin/python, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
}

const PROMPT: &str = "a poster that says SUMMER SALE";
const FIXTURE: &str = "diffusion/tests/fixtures/sd1";

/// The full SD 1.5 pipeline with random weights, as the reference builds it.
fn build_ours(device: Device, kind: Kind) -> Result<StableDiffusion> {
    tch::manual_seed(0);
    let fixture = Path::new(FIXTURE);
    Ok(StableDiffusion {
        tokenizer: ClipTokenizer::from_dir(&fixture.join("tokenizer"))?,
        text_encoder: build_random::<ClipTextModel>(&ClipTextConfig::sd15(), device, kind)?,
        unet: build_random::<UNet2DConditionModel>(&UNet2DConditionConfig::sd15(), device, kind)?,
        vae: build_random::<AutoencoderKL>(&AutoencoderKLConfig::sd15(), device, kind)?,
        controlnet: Some(build_random::<ControlNetModel>(
            &ControlNetConfig::sd15(),
            device,
            kind,
        )?),
        scheduler_config: letterpress_diffusion::read_json(
            &fixture.join("scheduler").join("scheduler_config.json"),
        )?,
        model_name: "sd15-random".into(),
        device,
        kind,
    })
}

fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "fp16",
        Kind::BFloat16 => "bf16",
        _ => "fp32",
    }
}

pub fn run(args: PipelineBenchArgs) -> Result<()> {
    if args.runs == 0 || args.steps == 0 || args.size < 64 || args.size % 64 != 0 {
        bail!("--runs and --steps must be at least 1 and --size a multiple of 64");
    }
    let device = crate::device::parse_device(&args.device)?;
    let kind = match args.dtype.as_deref() {
        None => letterpress_diffusion::default_kind(device),
        Some("fp32") => Kind::Float,
        Some("fp16") => Kind::Half,
        Some("bf16") => Kind::BFloat16,
        Some(other) => bail!("--dtype {other:?}: allowed fp32, fp16, bf16"),
    };
    println!(
        "ControlNet pipeline end to end, SD 1.5 configurations with random weights, {0}x{0}, {1} DDIM steps, CFG 7.5, {2} on {3:?}, {4} CPU threads; {5} generation(s) a side, alternating",
        args.size,
        args.steps,
        dtype_name(kind),
        device,
        tch::get_num_threads(),
        args.runs
    );
    // The same glyph mask for both sides, from our renderer.
    let s = args.size as i32;
    let layout = Layout::new(
        args.size,
        args.size,
        vec![
            TextLine::new("SUMMER", BBox::new(s / 8, s / 8, s * 7 / 8, s * 3 / 8)),
            TextLine::new("SALE", BBox::new(s / 4, s / 2, s * 3 / 4, s * 3 / 4)),
        ],
    );
    let mask = Renderer::with_default_font()?.render(&layout)?.glyph_mask;
    let control_path =
        std::env::temp_dir().join(format!("letterpress-bench-mask-{}.png", std::process::id()));
    mask.save(&control_path)
        .with_context(|| format!("writing {}", control_path.display()))?;

    // diffusers builds first, alone, then waits while we build.
    let python = args.python.clone().unwrap_or_else(default_python);
    let (mut reference, their_build_s) = Reference::start(
        &python,
        "tools/bench_pipeline_diffusers.py",
        &[
            "--control".into(),
            control_path.display().to_string(),
            "--prompt".into(),
            PROMPT.into(),
            "--steps".into(),
            args.steps.to_string(),
            "--size".into(),
            args.size.to_string(),
            "--device".into(),
            args.device.clone(),
            "--dtype".into(),
            dtype_name(kind).into(),
        ],
    )?;
    let t0 = Instant::now();
    let model = build_ours(device, kind)?;
    let our_build_s = t0.elapsed().as_secs_f64();

    let mut request = GenerationRequest::new(PROMPT);
    request.width = args.size;
    request.height = args.size;
    request.steps = args.steps;
    request.guidance_scale = 7.5;
    request.scheduler = Some(SchedulerKind::Ddim);
    request.seed = Some(42);
    request.control = Some(ControlSettings::new(mask));
    let cancel = AtomicBool::new(false);

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let t1 = Instant::now();
        let out = model.generate(&request, &|_| {}, &cancel)?;
        ours.push(t1.elapsed().as_secs_f64());
        if out.images[0].pixels.isfinite().all().int64_value(&[]) == 0 {
            bail!("our generation gave non-finite pixels");
        }
        theirs.push(reference.run_once()?);
    }
    let our_rss = peak_rss_mb()?;
    let summary = reference.finish()?;
    std::fs::remove_file(&control_path).ok();
    let their_rss = summary["peak_rss_mb"]
        .as_f64()
        .context("no peak_rss_mb from the reference")?;
    let fmt = |xs: &[f64]| {
        xs.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (our_median, their_median) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "letterpress (tch): {our_median:.2} s per generation [{}], peak RSS {our_rss:.0} MB, build {our_build_s:.1} s",
        fmt(&ours)
    );
    println!(
        "diffusers:         {their_median:.2} s per generation [{}], peak RSS {their_rss:.0} MB, build {their_build_s:.1} s",
        fmt(&theirs)
    );
    println!("speedup: {:.2}", their_median / our_median);
    Ok(())
}

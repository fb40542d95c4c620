//! `letterpress bench unet`: one ControlNet + UNet forward, ours against diffusers
//! (tools/bench_unet_diffusers.py) in the same run. Both build the full SD 1.5 UNet
//! configuration with random weights and a ControlNet of the same trunk, and run batch 2
//! (classifier-free guidance) at 32×32 latents: a warm-up, then the median of `--runs`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use letterpress_diffusion::tch::{self, Device, Kind, Tensor};
use letterpress_diffusion::{
    ControlNetConfig, ControlNetModel, UNet2DConditionConfig, UNet2DConditionModel, build_random,
};

#[derive(Args)]
pub struct UnetBenchArgs {
    /// Timed forwards on each side, after one warm-up.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Latent side (the image is 8× larger).
    #[arg(long, default_value_t = 32)]
    latent: i64,
    /// Python with diffusers for the reference (`scripts/setup --oracle`).
    /// Default: .venv/bin/python, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
}

const BATCH: i64 = 2;

struct Side {
    build_s: f64,
    median_s: f64,
    peak_rss_mb: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("parsing VmHWM")?;
    Ok(kb / 1024.0)
}

fn ours(runs: usize, latent: i64) -> Result<Side> {
    let device = Device::Cpu;
    tch::manual_seed(0);
    let t0 = Instant::now();
    let unet =
        build_random::<UNet2DConditionModel>(&UNet2DConditionConfig::sd15(), device, Kind::Float)?;
    let controlnet =
        build_random::<ControlNetModel>(&ControlNetConfig::sd15(), device, Kind::Float)?;
    let build_s = t0.elapsed().as_secs_f64();
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
    let warm = step()?; // warm-up
    if warm.isfinite().all().int64_value(&[]) == 0 {
        bail!("our forward produced non-finite values");
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t1 = Instant::now();
        let out = step()?;
        times.push(t1.elapsed().as_secs_f64());
        if out.size() != [BATCH, 4, latent, latent] {
            bail!("unexpected UNet output shape {:?}", out.size());
        }
    }
    Ok(Side {
        build_s,
        median_s: median(times),
        peak_rss_mb: peak_rss_mb()?,
    })
}

fn diffusers(runs: usize, latent: i64, python: &PathBuf) -> Result<Side> {
    let output = Command::new(python)
        .arg("tools/bench_unet_diffusers.py")
        .args(["--runs", &runs.to_string(), "--latent", &latent.to_string()])
        .output()
        .with_context(|| {
            format!(
                "running {} tools/bench_unet_diffusers.py (run scripts/setup --oracle first)",
                python.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "the diffusers reference failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line from the diffusers reference")?;
    let v: serde_json::Value =
        serde_json::from_str(line).context("parsing the diffusers reference's JSON")?;
    let field = |k: &str| v[k].as_f64().with_context(|| format!("no `{k}` in {line}"));
    Ok(Side {
        build_s: field("build_s")?,
        median_s: field("median_s")?,
        peak_rss_mb: field("peak_rss_mb")?,
    })
}

pub fn run(args: UnetBenchArgs) -> Result<()> {
    if args.runs == 0 || args.latent < 8 || args.latent % 8 != 0 {
        bail!("--runs must be at least 1 and --latent a multiple of 8 (at least 8)");
    }
    println!(
        "ControlNet + UNet forward, SD 1.5 configuration, random weights, batch {BATCH}, {0}x{0} latents, fp32 CPU, {1} threads; median of {2} after a warm-up",
        args.latent,
        tch::get_num_threads(),
        args.runs
    );
    // Ours first, in this process, so its peak RSS is ours alone; diffusers in a child process.
    let ours = ours(args.runs, args.latent)?;
    println!(
        "letterpress (tch): {:.3} s per forward, peak RSS {:.0} MB, build {:.1} s",
        ours.median_s, ours.peak_rss_mb, ours.build_s
    );
    let python = args.python.unwrap_or_else(crate::bench::default_python);
    let reference = diffusers(args.runs, args.latent, &python)?;
    println!(
        "diffusers:         {:.3} s per forward, peak RSS {:.0} MB, build {:.1} s",
        reference.median_s, reference.peak_rss_mb, reference.build_s
    );
    println!("speedup: {:.2}", reference.median_s / ours.median_s);
    Ok(())
}

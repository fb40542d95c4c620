//! `letterpress bench load`: a cold load of a whole ControlNet pipeline (CLIP text encoder,
//! UNet, VAE, ControlNet, tokenizer, scheduler config), ours (`StableDiffusion::load_from`)
//! against diffusers' and transformers' `from_pretrained` (tools/bench_load_diffusers.py).
//!
//! The folder holds the full SD 1.5 configurations with random weights in safetensors, written
//! once by the reference script (the recipe of `bench pipeline`) and kept under target/. Every
//! load runs in a fresh process, ours a child `letterpress`, so each side's peak RSS is its own;
//! the sides alternate (and alternate who goes first). The files are read once before the runs,
//! so both sides find them in the page cache. Each child also reads every weight once after the
//! load (a float64 sum): that shows what a lazily mapped load leaves for the first use, and the
//! two sums agreeing shows both sides loaded the same weights.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::{ModelSource, StableDiffusion};
use letterpress_diffusion::tch::{self, Kind};
use serde_json::{Value, json};

use crate::bench_support::{default_python, median, peak_rss_mb};

#[derive(Args)]
pub struct LoadBenchArgs {
    /// Loads on each side, each in a fresh process, the sides alternating.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A diffusers pipeline folder with a ControlNet to load instead of the random SD 1.5 one.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Python with diffusers for the reference (`scripts/setup --oracle`).
    /// Default: .venv/bin/python, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Load --model once in this process and print one JSON line (what the child processes
    /// of this benchmark run).
    #[arg(long, hide = true)]
    child: bool,
}

const REFERENCE: &str = "tools/bench_load_diffusers.py";
/// Where the random SD 1.5 pipeline is kept between runs (relative to the repository root).
const CACHE: &str = "target/bench-load/sd15-random";
/// Written after the reference saved the whole folder, so an interrupted write is redone.
const COMPLETE: &str = ".complete";

/// One load in a fresh process, as the child reports it.
struct Sample {
    load_s: f64,
    read_s: f64,
    process_s: f64,
    peak_rss_mb: f64,
    params: i64,
    sum: f64,
}

pub fn run(args: LoadBenchArgs) -> Result<()> {
    if args.child {
        let model = args.model.context("--child needs --model")?;
        println!("{}", load_once(&model)?);
        return Ok(());
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let python = args.python.clone().unwrap_or_else(default_python);
    let model = match &args.model {
        Some(dir) => dir.clone(),
        None => random_sd15(&python)?,
    };
    let bytes = warm_page_cache(&model)?;
    println!(
        "cold load of {} ({:.2} GB of files): CLIP text encoder, UNet, VAE, ControlNet, \
         tokenizer and scheduler config, fp32 CPU; each load in a fresh process, {} a side, the \
         sides alternating; the files are warm in the page cache for both sides (read once \
         before the runs)",
        model.display(),
        bytes as f64 / 1e9,
        args.runs
    );
    let exe = std::env::current_exe().context("locating the letterpress binary")?;
    let ours_cmd = || {
        let mut c = Command::new(&exe);
        c.args(["bench", "load", "--child", "--model"]).arg(&model);
        c
    };
    let theirs_cmd = || {
        let mut c = Command::new(&python);
        c.arg(REFERENCE).arg("--model").arg(&model);
        c
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        if i % 2 == 0 {
            ours.push(sample("letterpress", ours_cmd())?);
            theirs.push(sample("diffusers", theirs_cmd())?);
        } else {
            theirs.push(sample("diffusers", theirs_cmd())?);
            ours.push(sample("letterpress", ours_cmd())?);
        }
    }
    check_same_weights(&ours[0], &theirs[0])?;
    report(&ours, &theirs);
    Ok(())
}

/// The child's side: loads the pipeline, reads every weight once, prints the figures.
fn load_once(model: &Path) -> Result<Value> {
    let start = Instant::now();
    let source = ModelSource {
        model: model.to_path_buf(),
        ..Default::default()
    };
    let sd = StableDiffusion::load_from(&source, &LoadOptions::default())?;
    let load_s = start.elapsed().as_secs_f64();
    let controlnet = sd
        .controlnet
        .as_ref()
        .with_context(|| format!("{} has no ControlNet", model.display()))?;
    let start = Instant::now();
    let stores = [
        &sd.text_encoder.var_store,
        &sd.unet.var_store,
        &sd.vae.var_store,
        &controlnet.var_store,
    ];
    let (mut params, mut sum) = (0i64, 0.0);
    tch::no_grad(|| -> Result<()> {
        for store in stores {
            for var in store.variables().values() {
                params += var.numel() as i64;
                sum += var.f_sum(Kind::Double)?.f_double_value(&[])?;
            }
        }
        Ok(())
    })?;
    let read_s = start.elapsed().as_secs_f64();
    Ok(json!({
        "load_s": load_s,
        "read_s": read_s,
        "params": params,
        "sum": sum,
        "peak_rss_mb": peak_rss_mb()?,
    }))
}

/// The random SD 1.5 pipeline folder, written by the reference script on first use.
fn random_sd15(python: &Path) -> Result<PathBuf> {
    let dir = PathBuf::from(CACHE);
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    println!(
        "writing the SD 1.5 configurations with random weights to {} (once; about 6 GB)",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new(python)
        .arg(REFERENCE)
        .arg("--write")
        .arg(&dir)
        .status()
        .with_context(|| {
            format!(
                "running {} {REFERENCE} (run scripts/setup --oracle first)",
                python.display()
            )
        })?;
    if !status.success() {
        bail!("{REFERENCE} --write failed ({status}); see its output above");
    }
    std::fs::write(dir.join(COMPLETE), b"")?;
    Ok(dir)
}

/// Reads every file under `dir` once (into the page cache) and returns their total size.
fn warm_page_cache(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            total += warm_page_cache(&path)?;
        } else {
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            total += std::io::copy(&mut file, &mut std::io::sink())?;
        }
    }
    Ok(total)
}

/// Runs one child and parses the JSON line it prints last.
fn sample(side: &str, mut command: Command) -> Result<Sample> {
    let start = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("starting the {side} load ({command:?})"))?;
    let process_s = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "the {side} load failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("bad last line from the {side} load: {line:?}"))?;
    let field = |name: &str| {
        v[name]
            .as_f64()
            .with_context(|| format!("no {name} in the {side} load's line {line:?}"))
    };
    Ok(Sample {
        load_s: field("load_s")?,
        read_s: field("read_s")?,
        process_s,
        peak_rss_mb: field("peak_rss_mb")?,
        params: v["params"].as_i64().context("no params")?,
        sum: field("sum")?,
    })
}

/// Both sides must have loaded the same weights: same parameter count, same sum (to the
/// rounding of summing in another order).
fn check_same_weights(ours: &Sample, theirs: &Sample) -> Result<()> {
    let scale = ours.sum.abs().max(theirs.sum.abs()).max(1.0);
    if ours.params != theirs.params || (ours.sum - theirs.sum).abs() > 1e-6 * scale {
        bail!(
            "the sides loaded different weights: {} parameters summing to {} here, {} summing \
             to {} in diffusers",
            ours.params,
            ours.sum,
            theirs.params,
            theirs.sum
        );
    }
    Ok(())
}

fn report(ours: &[Sample], theirs: &[Sample]) {
    println!(
        "{:<12} {:>9} {:>11} {:>20} {:>17} {:>14}",
        "side", "load best", "load median", "read weights median", "process median", "peak RSS max"
    );
    for (side, samples) in [("letterpress", ours), ("diffusers", theirs)] {
        let pick = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
        let best = pick(|s| s.load_s).into_iter().fold(f64::INFINITY, f64::min);
        let rss = pick(|s| s.peak_rss_mb).into_iter().fold(0.0, f64::max);
        println!(
            "{side:<12} {best:>8.3}s {:>10.3}s {:>19.3}s {:>16.3}s {rss:>11.0} MB",
            median(pick(|s| s.load_s)),
            median(pick(|s| s.read_s)),
            median(pick(|s| s.process_s)),
        );
    }
    println!(
        "load: until every component is ready; read weights: a float64 sum of every weight \
         after the load (what a lazily mapped load leaves to the first use); process: start to \
         exit, with interpreter or library start-up and the read"
    );
    let load = |s: &[Sample]| median(s.iter().map(|x| x.load_s).collect());
    println!("load_speedup: {:.2}", load(theirs) / load(ours));
}

//! `letterpress bench ocr`: 200 images (the committed real set and rendered posters) through
//! `dataset build` against the same OCR with pytesseract (tools/bench_ocr_pytesseract.py),
//! both on the same number of workers, alternating rounds in one run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use letterpress_ocr::dataset::{self, BuildConfig, NoProgress};
use letterpress_render::Renderer;

use crate::bench_support::{bench_layouts, default_python};

/// Folder of the committed real images with text.
const REAL_IMAGES: &str = "ocr/tests/real";

#[derive(Args)]
pub struct OcrBenchArgs {
    /// Images in all: the real set plus rendered posters to make up the number.
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Worker threads for ours and worker processes for pytesseract.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Rounds, alternating ours and pytesseract; the best time of each side counts.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Python with pytesseract. Default: .venv/bin/python, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Copies the real images and renders posters (black on white) until there are `n`.
fn prepare_images(dir: &Path, n: usize) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut real: Vec<PathBuf> = std::fs::read_dir(REAL_IMAGES)
        .with_context(|| format!("reading {REAL_IMAGES} (run from the repository root)"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    real.sort();
    real.truncate(n);
    for p in &real {
        std::fs::copy(p, dir.join(p.file_name().context("file name")?))?;
    }
    let layouts = bench_layouts();
    let renderer = Renderer::with_default_font()?;
    for i in 0..n - real.len() {
        let mask = renderer.render(&layouts[i % layouts.len()])?.inverse();
        mask.save(dir.join(format!("rendered-{i:04}.png")))?;
    }
    Ok(real.len())
}

pub fn run(args: OcrBenchArgs) -> Result<()> {
    if args.n == 0 || args.jobs == 0 || args.rounds == 0 {
        bail!("--n, --jobs and --rounds must be at least 1");
    }
    let work = std::env::temp_dir().join(format!("letterpress-bench-ocr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let images = work.join("images");
    let real = prepare_images(&images, args.n)?;
    println!(
        "images: {} ({real} real from {REAL_IMAGES}, {} rendered 512x512 posters); {} workers each side; best of {} rounds",
        args.n,
        args.n - real,
        args.jobs,
        args.rounds
    );
    let python = args.python.clone().unwrap_or_else(default_python);
    let (mut ours, mut theirs) = (f64::INFINITY, f64::INFINITY);
    for round in 0..args.rounds {
        let mut config = BuildConfig::new(&images, work.join(format!("out-{round}")));
        config.jobs = args.jobs;
        let start = Instant::now();
        let report = dataset::build(&config, &NoProgress)?;
        let secs = start.elapsed().as_secs_f64();
        let s = &report.stats;
        println!(
            "round {round}: letterpress dataset build {secs:.2} s ({:.2} images/s; kept {}, rejected {}, errors {})",
            args.n as f64 / secs,
            s.kept,
            s.rejected_total(),
            s.errors
        );
        ours = ours.min(secs);

        let output = Command::new(&python)
            .arg("tools/bench_ocr_pytesseract.py")
            .arg("--images")
            .arg(&images)
            .arg("--jobs")
            .arg(args.jobs.to_string())
            .env("OMP_THREAD_LIMIT", "1")
            .output()
            .with_context(|| {
                format!(
                    "running {} tools/bench_ocr_pytesseract.py (run scripts/setup first)",
                    python.display()
                )
            })?;
        if !output.status.success() {
            bail!(
                "the pytesseract reference failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let secs: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("seconds:"))
            .with_context(|| format!("no `seconds:` in the reference's output:\n{stdout}"))?
            .trim()
            .parse()
            .context("bad `seconds:` in the reference's output")?;
        println!(
            "round {round}: pytesseract {secs:.2} s ({:.2} images/s)",
            args.n as f64 / secs
        );
        theirs = theirs.min(secs);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("letterpress: {:.2} images/s", args.n as f64 / ours);
    println!("pytesseract: {:.2} images/s", args.n as f64 / theirs);
    println!("speedup: {:.2}", theirs / ours);
    Ok(())
}

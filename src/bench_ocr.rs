//! `letterpress bench ocr`: images through `dataset build` against the same OCR with
//! pytesseract (tools/bench_ocr_pytesseract.py, one process per worker, the same filters after
//! OCR), both on the same number of workers, alternating rounds in one run.
//!
//! `--mix current`: the committed real set and rendered posters, nearly all with text.
//! `--mix web`: a web crawl's share of photographs without text (procedural, 85 % by default)
//! plus the current set. Each round's shards are compared with a build with the first stage
//! off: the kept samples must be the same bytes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use image::ImageEncoder;
use indicatif::ProgressBar;
use letterpress_ocr::dataset::{self, BuildConfig, NoProgress, Stats, textless_photo};
use letterpress_render::Renderer;

use crate::bench_support::{bench_layouts, default_python};

/// Folder of the committed real images with text.
const REAL_IMAGES: &str = "ocr/tests/real";

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Mix {
    /// The real set and rendered posters.
    Current,
    /// Mostly photographs without text, as a web crawl is, plus the current set.
    Web,
}

#[derive(Args)]
pub struct OcrBenchArgs {
    /// Images in all.
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Which inputs.
    #[arg(long, value_enum, default_value_t = Mix::Current)]
    mix: Mix,
    /// Share of photographs without text in the web mix (0.8–1).
    #[arg(long, default_value_t = 0.85)]
    photo_share: f64,
    /// Worker threads for ours and worker processes for pytesseract.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Rounds, alternating ours and pytesseract; the best time of each side counts.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Python with pytesseract. Default: .venv/bin/python, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Copies the real images and renders posters (black on white) until there are `n`; returns
/// how many are real.
fn prepare_current(dir: &Path, n: usize) -> Result<usize> {
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

/// Size of photograph `i`: web-like aspect ratios and long sides from thumbnails (240 px,
/// rejected on size alone) to 1200 px.
fn photo_size(i: usize) -> (u32, u32) {
    const LONG: [u32; 6] = [240, 480, 640, 800, 1024, 1200];
    const ASPECT: [(u32, u32); 5] = [(4, 3), (3, 2), (16, 9), (1, 1), (5, 4)];
    let long = LONG[(i / 6) % LONG.len()];
    let (a, b) = ASPECT[(i * 7 + i / 5) % ASPECT.len()];
    let short = long * b / a;
    if i % 2 == 0 {
        (long, short)
    } else {
        (short, long)
    }
}

/// Writes `n` photographs without text as JPEG (quality 85, as crawled images mostly are).
fn prepare_photos(dir: &Path, n: usize) -> Result<()> {
    let bar = ProgressBar::new(n as u64).with_message("photographs");
    for i in 0..n {
        let (w, h) = photo_size(i);
        let photo = textless_photo(21, i as u64, w, h);
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).write_image(
            photo.as_raw(),
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )?;
        std::fs::write(dir.join(format!("photo-{i:04}.jpg")), bytes)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Prepares the inputs and says what they are.
fn prepare(args: &OcrBenchArgs, dir: &Path) -> Result<String> {
    let photos = match args.mix {
        Mix::Current => 0,
        Mix::Web => (args.n as f64 * args.photo_share).round() as usize,
    };
    let text = args.n - photos;
    let real = prepare_current(dir, text)?;
    prepare_photos(dir, photos)?;
    Ok(format!(
        "{photos} photographs without text, {real} real from {REAL_IMAGES}, {} rendered 512x512 posters",
        text - real
    ))
}

/// One `dataset build` of `images` into `out`: seconds and stats.
fn ours(images: &Path, out: &Path, jobs: usize, first_stage: bool) -> Result<(f64, Stats)> {
    let mut config = BuildConfig::new(images, out);
    config.jobs = jobs;
    config.first_stage = first_stage;
    let start = Instant::now();
    let report = dataset::build(&config, &NoProgress)?;
    Ok((start.elapsed().as_secs_f64(), report.stats))
}

fn describe(s: &Stats) -> String {
    let layout = s.rejected.get("layout_word_count").copied().unwrap_or(0)
        + s.rejected.get("layout_text_area").copied().unwrap_or(0);
    format!(
        "kept {}, rejected {} ({layout} on layout alone), errors {}",
        s.kept,
        s.rejected_total(),
        s.errors
    )
}

/// The output's shards, concatenated: the kept samples (image, record, glyph mask) in order.
fn shard_bytes(out: &Path) -> Result<Vec<u8>> {
    let mut tars: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    tars.sort();
    let mut bytes = Vec::new();
    for t in tars {
        std::fs::File::open(&t)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", t.display()))?;
    }
    Ok(bytes)
}

/// The pytesseract reference on `images`: seconds and the number it kept.
fn reference(python: &Path, images: &Path, jobs: usize) -> Result<(f64, u64)> {
    let output = Command::new(python)
        .arg("tools/bench_ocr_pytesseract.py")
        .arg("--images")
        .arg(images)
        .arg("--jobs")
        .arg(jobs.to_string())
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
    let field = |name: &str| -> Result<f64> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no `{name}` in the reference's output:\n{stdout}"))?
            .trim()
            .parse()
            .with_context(|| format!("bad `{name}` in the reference's output"))
    };
    Ok((field("seconds:")?, field("kept:")? as u64))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn run(args: OcrBenchArgs) -> Result<()> {
    if args.n == 0 || args.jobs == 0 || args.rounds == 0 {
        bail!("--n, --jobs and --rounds must be at least 1");
    }
    if args.mix == Mix::Web && !(0.8..=1.0).contains(&args.photo_share) {
        bail!("--photo-share must be between 0.8 and 1 (a web crawl is mostly photographs)");
    }
    let work = std::env::temp_dir().join(format!("letterpress-bench-ocr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let images = work.join("images");
    let what = prepare(&args, &images)?;
    let n = args.n as f64;
    println!(
        "images: {} ({what}); {} workers each side; best of {} rounds; load average {}",
        args.n,
        args.jobs,
        args.rounds,
        load_average()
    );
    let (secs, off) = ours(&images, &work.join("out-off"), args.jobs, false)?;
    println!(
        "letterpress, first stage off: {secs:.2} s ({:.2} images/s; {})",
        n / secs,
        describe(&off)
    );
    let expected = shard_bytes(&work.join("out-off"))?;
    let python = args.python.clone().unwrap_or_else(default_python);
    let (mut best_ours, mut best_theirs) = (f64::INFINITY, f64::INFINITY);
    for round in 0..args.rounds {
        let out = work.join(format!("out-{round}"));
        let (secs, stats) = ours(&images, &out, args.jobs, true)?;
        if stats.kept != off.kept || shard_bytes(&out)? != expected {
            bail!(
                "round {round}: the first stage changed the kept samples ({})",
                describe(&stats)
            );
        }
        println!(
            "round {round}: letterpress dataset build {secs:.2} s ({:.2} images/s; {}; kept samples identical to the first stage off)",
            n / secs,
            describe(&stats)
        );
        best_ours = best_ours.min(secs);
        let (secs, kept) = reference(&python, &images, args.jobs)?;
        println!(
            "round {round}: pytesseract {secs:.2} s ({:.2} images/s; kept {kept})",
            n / secs
        );
        best_theirs = best_theirs.min(secs);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("load average after: {}", load_average());
    println!("letterpress: {:.2} images/s", n / best_ours);
    println!("pytesseract: {:.2} images/s", n / best_theirs);
    println!("speedup: {:.2}", best_theirs / best_ours);
    Ok(())
}

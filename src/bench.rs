//! `letterpress bench …`: speed against a reference measured in the same run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_render::Renderer;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Glyph masks per second against PIL `ImageDraw.text` (tools/bench_render_pil.py).
    Render {
        /// Masks to render on each side.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// Python with Pillow for the reference. Default: .venv/bin/python, else python3.
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Layouts planned per second by the typographic planner, on one thread.
    Layout {
        #[arg(long, default_value_t = 20000)]
        n: usize,
    },
    /// One ControlNet + UNet forward (SD 1.5 configuration) against diffusers
    /// (tools/bench_unet_diffusers.py).
    Unet(crate::bench_unet::UnetBenchArgs),
    /// A whole ControlNet generation (20 DDIM steps, 256×256, SD 1.5 configurations) against
    /// diffusers' pipeline (tools/bench_pipeline_diffusers.py).
    Pipeline(crate::bench_pipeline::PipelineBenchArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Render { n, python } => bench_render(n, python),
        BenchCommand::Layout { n } => bench_layout(n),
        BenchCommand::Unet(args) => crate::bench_unet::run(args),
        BenchCommand::Pipeline(args) => crate::bench_pipeline::run(args),
    }
}

/// Keyword sets for the layout benchmark: one to five poster phrases of one to four words.
fn bench_keyword_sets(count: usize) -> Vec<(u32, u32, Vec<String>)> {
    const WORDS: [&str; 24] = [
        "summer", "sale", "grand", "opening", "jazz", "night", "coffee", "house", "fresh",
        "market", "today", "only", "free", "entry", "live", "music", "book", "fair", "open",
        "studio", "winter", "festival", "tickets", "weekend",
    ];
    const SIZES: [(u32, u32); 5] = [
        (512, 512),
        (768, 512),
        (512, 768),
        (1024, 1024),
        (1024, 256),
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    };
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let (w, h) = SIZES[next(SIZES.len())];
        let mut keywords = Vec::new();
        for _ in 0..1 + next(5) {
            let words: Vec<&str> = (0..1 + next(4)).map(|_| WORDS[next(WORDS.len())]).collect();
            keywords.push(words.join(" "));
        }
        sets.push((w, h, letterpress_layout::normalize_keywords(keywords)));
    }
    sets
}

fn bench_layout(n: usize) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let renderer = Renderer::with_default_font()?;
    let planner = letterpress_layout::TypographicPlanner::new(&renderer);
    let sets = bench_keyword_sets(256);
    // Warm-up: glyph metrics for every word are cached, as in a running service.
    for (i, (w, h, k)) in sets.iter().enumerate() {
        planner.plan(*w, *h, k, i as u64)?;
    }
    let start = Instant::now();
    for i in 0..n {
        let (w, h, k) = &sets[i % sets.len()];
        std::hint::black_box(planner.plan(*w, *h, k, i as u64)?);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("typographic planner: {n} layouts of 1-5 keywords in {secs:.3} s on one thread");
    println!("layouts_per_s: {:.0}", n as f64 / secs);
    Ok(())
}

/// Sixteen 512×512 poster layouts of three lines and about 40 characters: a headline and two
/// smaller lines, the shape of a TextDiffuser-2 layout.
pub fn bench_layouts() -> Vec<Layout> {
    const HEADLINES: [&str; 8] = [
        "Summer Sale",
        "Grand Opening",
        "Jazz Night",
        "Coffee House",
        "Winter Market",
        "Book Fair",
        "Open Studio",
        "Film Club",
    ];
    const SUBLINES: [&str; 8] = [
        "fresh deals every day",
        "live music and dancing",
        "handmade gifts for all",
        "doors open at seven",
        "free entry for students",
        "join us this weekend",
        "the best of the season",
        "tickets at the door",
    ];
    const FOOTERS: [&str; 4] = ["June 21", "Main Street 12", "since 1998", "all welcome"];
    (0..16)
        .map(|i| {
            let shift = (i as i32 % 4) * 12;
            Layout::new(
                512,
                512,
                vec![
                    TextLine::new(
                        HEADLINES[i % 8],
                        BBox::new(40 + shift, 48, 472 - shift, 148),
                    ),
                    TextLine::new(
                        SUBLINES[(i * 3) % 8],
                        BBox::new(64, 200 + shift, 448, 248 + shift),
                    ),
                    TextLine::new(FOOTERS[i % 4], BBox::new(136, 380, 376, 420)),
                ],
            )
        })
        .collect()
}

fn bench_render(n: usize, python: Option<PathBuf>) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let layouts = bench_layouts();
    let renderer = Renderer::with_default_font()?;
    let chars: usize = layouts[0]
        .lines
        .iter()
        .map(|l| l.text.chars().count())
        .sum();
    println!(
        "layouts: {} of 512x512, 3 lines, ~{chars} characters; {n} masks each side",
        layouts.len()
    );

    // Warm-up: one pass fills the glyph cache, as a running service would have it.
    for layout in &layouts {
        renderer.render(layout)?;
    }
    let bar = ProgressBar::new(n as u64)
        .with_style(ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} {per_sec}",
        )?)
        .with_message("letterpress");
    let start = Instant::now();
    for i in 0..n {
        let r = renderer.render(&layouts[i % layouts.len()])?;
        std::hint::black_box(&r.glyph_mask);
        if i % 64 == 0 {
            bar.set_position(i as u64);
        }
    }
    let ours_ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    bar.finish_and_clear();
    println!("letterpress: {ours_ms:.4} ms per mask");

    let (font_path, font_index) = renderer
        .font_file(None)?
        .context("the default font has no file for PIL to read")?;
    let layouts_file =
        std::env::temp_dir().join(format!("letterpress-bench-{}.json", std::process::id()));
    std::fs::write(&layouts_file, serde_json::to_string(&layouts)?)?;
    let python = python.unwrap_or_else(default_python);
    let output = Command::new(&python)
        .arg("tools/bench_render_pil.py")
        .arg("--layouts")
        .arg(&layouts_file)
        .arg("--font")
        .arg(&font_path)
        .arg("--font-index")
        .arg(font_index.to_string())
        .arg("--n")
        .arg(n.to_string())
        .output()
        .with_context(|| {
            format!(
                "running {} tools/bench_render_pil.py (run scripts/setup first)",
                python.display()
            )
        })?;
    let _ = std::fs::remove_file(&layouts_file);
    if !output.status.success() {
        bail!(
            "the PIL reference failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> Result<f64> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .with_context(|| format!("no `{name}` in the PIL reference's output:\n{stdout}"))?
            .parse()
            .with_context(|| format!("bad `{name}` in the PIL reference's output"))
    };
    let pil_search = field("per_mask_ms_size_search:")?;
    let pil_known = field("per_mask_ms_known_size:")?;
    println!("pil (size search, as TextDiffuser fits text): {pil_search:.4} ms per mask");
    println!("pil (font sizes already known): {pil_known:.4} ms per mask");
    println!(
        "speedup vs pil with sizes known: {:.2}",
        pil_known / ours_ms
    );
    println!("speedup: {:.2}", pil_search / ours_ms);
    Ok(())
}

pub(crate) fn default_python() -> PathBuf {
    let venv = PathBuf::from(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

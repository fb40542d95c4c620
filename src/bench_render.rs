//! `letterpress bench render`: glyph masks per second against PIL `ImageDraw.text`
//! (tools/bench_render_pil.py).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_render::Renderer;

use crate::bench_support::{bench_layouts, default_python};

pub fn run(n: usize, python: Option<PathBuf>) -> Result<()> {
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

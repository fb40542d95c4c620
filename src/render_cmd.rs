//! `letterpress render`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use letterpress_layout::Layout;
use letterpress_render::{MissingGlyph, RenderOptions, Renderer};

#[derive(Args)]
pub struct RenderArgs {
    /// Layout JSON file, or `-` for standard input.
    layout: String,
    /// Where to write the glyph mask (PNG).
    #[arg(short, long)]
    output: PathBuf,
    /// Write the inverse (black text on white, GlyphControl style) instead of the mask.
    #[arg(long)]
    inverse: bool,
    /// Also write TextDiffuser's character-segmentation map (classes 0..=95 as L8 PNG).
    #[arg(long)]
    seg: Option<PathBuf>,
    /// Also write a preview for people (text and boxes over grey).
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Also write character boxes, per-line sizes and warnings as JSON.
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// Font for lines that name none: family name or file. Default: DejaVu Sans Bold.
    #[arg(long)]
    font: Option<String>,
    /// Leave out characters no installed font has (reported) instead of failing.
    #[arg(long)]
    skip_missing_glyphs: bool,
}

pub fn run(args: RenderArgs) -> Result<()> {
    let json = if args.layout == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the layout from standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.layout).with_context(|| format!("reading {}", args.layout))?
    };
    let layout = Layout::from_json(&json).with_context(|| format!("parsing {}", args.layout))?;
    let mut options = RenderOptions::default();
    if let Some(font) = args.font {
        options.font = font;
    }
    if args.skip_missing_glyphs {
        options.missing_glyph = MissingGlyph::Skip;
    }
    let renderer = Renderer::new(options)?;
    let rendering = renderer.render(&layout)?;
    for w in &rendering.warnings {
        eprintln!("warning: {w}");
    }

    let mask = if args.inverse {
        rendering.inverse()
    } else {
        rendering.glyph_mask.clone()
    };
    save(&args.output, || mask.save(&args.output))?;
    if let Some(path) = &args.seg {
        save(path, || rendering.segmentation_map().save(path))?;
    }
    if let Some(path) = &args.preview {
        save(path, || rendering.preview().save(path))?;
    }
    if let Some(path) = &args.boxes {
        let report = serde_json::json!({
            "width": rendering.width,
            "height": rendering.height,
            "char_boxes": rendering.char_boxes,
            "lines": rendering.lines,
            "warnings": rendering.warnings,
            "layout": layout,
        });
        let text = serde_json::to_string_pretty(&report)?;
        save(path, || std::fs::write(path, text))?;
    }
    Ok(())
}

/// Creates the parent folder, writes, and prints the path (scripts read the paths back).
fn save<E: Into<anyhow::Error>>(path: &Path, write: impl FnOnce() -> Result<(), E>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write()
        .map_err(Into::into)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

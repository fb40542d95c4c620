//! `letterpress generate` and `letterpress poster`: the flags become a `PosterRequest`, the
//! poster engine makes it (letterpress-poster), and the images are written as PNGs with their
//! generation metadata.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_layout::{Layout, extract_keywords, parse_keyword_list};
use letterpress_poster::{Certificate, Poster, PosterError, PosterEvent, PosterText, encode_png};

use crate::model_options::{ModelOptions, load_engine, poster_request};

#[derive(Args)]
pub struct GenerateArgs {
    /// The image prompt.
    #[arg(long)]
    prompt: String,
    /// Layout JSON to draw (letterpress layout's output or hand-written).
    #[arg(long, conflicts_with = "keywords")]
    layout: Option<PathBuf>,
    /// Text to place, `/`-separated; planned by the typographic planner. Default: the quoted
    /// text of the prompt, if any.
    #[arg(long)]
    keywords: Option<String>,
    #[command(flatten)]
    options: ModelOptions,
    /// Output PNG.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
pub struct PosterArgs {
    /// The poster prompt; the text in quotes is what the poster says
    /// ("a poster for 'SUMMER SALE' on a beach").
    prompt: String,
    /// Text to place, `/`-separated, instead of the quoted text.
    #[arg(long)]
    keywords: Option<String>,
    #[command(flatten)]
    options: ModelOptions,
    /// Output PNG.
    #[arg(short, long)]
    output: PathBuf,
}

/// The engine's error in the CLI's words: a request field becomes the flag that sets it.
fn in_flags(e: PosterError) -> anyhow::Error {
    let PosterError::Request { field, message } = &e else {
        return anyhow::Error::new(e);
    };
    let flag = match *field {
        "n" => "--n",
        "layout_tokens" => "--td2",
        "init.region" => "--inpaint-line",
        "repair" => "--repair",
        "glyph_init" => "--glyph-init",
        "text" => "the text (--layout, --keywords or quoted text in the prompt)",
        other => other,
    };
    anyhow!("{flag}: {message}")
}

impl GenerateArgs {
    /// Whether the images are read back with OCR (verify, certificate, repair or best-of).
    pub fn verifies(&self) -> bool {
        self.options.verifies()
    }
}

impl PosterArgs {
    /// Whether the images are read back with OCR (verify, certificate, repair or best-of).
    pub fn verifies(&self) -> bool {
        self.options.verifies()
    }
}

/// Everything `generate` and `poster` share after parsing.
fn run_generation(prompt: &str, text: PosterText, o: &ModelOptions, output: &Path) -> Result<()> {
    if o.n == 0 {
        bail!("--n must be at least 1");
    }
    if o.best_of && o.n < 2 {
        bail!("--best-of ranks several images: give --n 2 or more");
    }
    let is_png = output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        bail!(
            "-o {}: the output must be a .png file (it carries the metadata)",
            output.display()
        );
    }
    let request = poster_request(prompt, text, o)?;
    let engine = load_engine(o)?;
    let bar = ProgressBar::new(o.steps as u64).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps {elapsed_precise} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let poster = engine
        .make(
            &request,
            &mut |event| match event {
                PosterEvent::Planned { warnings, .. } | PosterEvent::Rendered { warnings, .. } => {
                    warnings
                        .iter()
                        .for_each(|w| bar.println(format!("warning: {w}")));
                }
                PosterEvent::Step { step, steps, .. } => {
                    bar.set_length(steps as u64);
                    bar.set_position(step as u64);
                }
                PosterEvent::Verified { image, certificate } => {
                    // Printed even when stderr is not a terminal (the bar hides then).
                    bar.suspend(|| eprintln!("{}", certificate_summary(image, certificate)));
                }
            },
            &|| false,
        )
        .map_err(in_flags);
    bar.finish_and_clear();
    let mut poster = poster?;
    if o.best_of {
        // The engine ranked them best first.
        poster.images.truncate(1);
    }
    save_extras(&poster, o)?;
    write_outputs(&poster, output)?;
    match &o.certificate {
        Some(path) => write_certificate(&poster, output, path),
        None => Ok(()),
    }
}

/// `image 1: 2/3 lines read right (…)` for the terminal.
fn certificate_summary(image: usize, c: &Certificate) -> String {
    let wrong: Vec<String> = c
        .lines
        .iter()
        .filter(|l| !l.ok)
        .map(|l| format!("{:?} read as {:?}", l.text, l.read))
        .collect();
    let rounds = if c.rounds > 0 {
        format!(" after {} repair round(s)", c.rounds)
    } else {
        String::new()
    };
    let mut s = format!(
        "image {}: {}/{} lines read right{rounds}",
        image + 1,
        c.lines_ok,
        c.line_count
    );
    if !wrong.is_empty() {
        s.push_str(&format!(" ({})", wrong.join("; ")));
    }
    s
}

/// `--certificate`: each written image's file, seed and certificate.
fn write_certificate(poster: &Poster, output: &Path, path: &Path) -> Result<()> {
    let n = poster.images.len();
    let entries: Vec<serde_json::Value> = poster
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            serde_json::json!({
                "file": numbered(output, i, n).display().to_string(),
                "seed": image.seed,
                "certificate": image.certificate,
            })
        })
        .collect();
    let json = match entries.as_slice() {
        [one] => serde_json::to_string_pretty(one)?,
        _ => serde_json::to_string_pretty(&entries)?,
    };
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

/// `--save-mask` (what the ControlNet saw, else the glyph mask) and `--save-layout`.
fn save_extras(poster: &Poster, o: &ModelOptions) -> Result<()> {
    if let (Some(path), Some(mask)) = (
        &o.save_mask,
        poster.control_image.as_ref().or(poster.glyph_mask.as_ref()),
    ) {
        mask.save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let (Some(path), Some(layout)) = (&o.save_layout, &poster.layout) {
        std::fs::write(path, serde_json::to_string_pretty(layout)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `out.png`, or `out-1.png`, `out-2.png`, … for several images.
fn numbered(output: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return output.to_path_buf();
    }
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}-{}.png", i + 1))
}

fn write_outputs(poster: &Poster, output: &Path) -> Result<()> {
    let n = poster.images.len();
    for (i, image) in poster.images.iter().enumerate() {
        let path = numbered(output, i, n);
        let png = encode_png(&image.image, &poster.png_text(image))
            .with_context(|| format!("encoding {}", path.display()))?;
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        println!("{} (seed {})", path.display(), image.seed);
    }
    Ok(())
}

fn read_layout(path: &Path) -> Result<Layout> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Layout::from_json(&json).with_context(|| format!("parsing {}", path.display()))
}

pub fn run_generate(args: GenerateArgs) -> Result<()> {
    let text = match (&args.layout, &args.keywords) {
        (Some(path), _) => PosterText::Layout(read_layout(path)?),
        (None, Some(k)) => PosterText::Keywords(parse_keyword_list(k)),
        (None, None) => PosterText::Quoted,
    };
    run_generation(&args.prompt, text, &args.options, &args.output)
}

pub fn run_poster(args: PosterArgs) -> Result<()> {
    let text = match &args.keywords {
        Some(k) => PosterText::Keywords(parse_keyword_list(k)),
        None if extract_keywords(&args.prompt).is_empty() => bail!(
            "the prompt has no quoted text for the poster to say: put it in quotes (\"a poster for 'SUMMER SALE'\") or give --keywords"
        ),
        None => PosterText::Quoted,
    };
    run_generation(&args.prompt, text, &args.options, &args.output)
}

//! `letterpress generate` and `letterpress poster`: the flags become a `PosterRequest`, the
//! poster engine makes it (letterpress-poster), and the images are written as PNGs with their
//! generation metadata.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::{ControlMode, ModelSource};
use letterpress_diffusion::schedulers::SchedulerKind;
use letterpress_layout::{Layout, extract_keywords, parse_keyword_list};
use letterpress_poster::{
    Certificate, LayoutTokens, Poster, PosterEngine, PosterError, PosterEvent, PosterInit,
    PosterRequest, PosterText, RepaintRegion, encode_png,
};
use letterpress_render::RenderOptions;

use crate::device::{Dtype, load_options};

#[derive(Clone, Copy, ValueEnum)]
enum ControlImage {
    /// The glyph mask, white text on black (glyph ControlNets).
    Mask,
    /// Black text on white (GlyphControl).
    Inverse,
    /// Canny edges of the mask (canny ControlNets).
    Canny,
}

/// Options shared by `generate` and `poster`.
#[derive(Args)]
pub struct ModelOptions {
    /// A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/), or a single SD 1.x/2.x .safetensors checkpoint (then give --tokenizer).
    /// See the README for what each supported model needs. Default: the embedded demo model
    /// (models/README.md), at 256×256.
    #[arg(long, env = "LETTERPRESS_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// A ControlNet folder, or a single .safetensors (diffusers keys with config.json beside it,
    /// or the original cldm keys). Default: the model folder's own controlnet/ when it has one.
    #[arg(long)]
    controlnet: Option<PathBuf>,
    /// Tokenizer folder, for a single-file --model-dir. Default: the model folder's tokenizer/.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// For a single-file --model-dir of a non-standard model: a diffusers folder whose configs
    /// to use instead of inferring them from the tensor shapes.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Negative prompt. Default: none.
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Classifier-free guidance scale (≤ 1 turns guidance off).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// ddim, ddpm, euler, euler-a, dpm++2m, dpm++2m-karras, unipc or lcm. Default: the class in
    /// the model's scheduler/scheduler_config.json.
    #[arg(long)]
    scheduler: Option<String>,
    /// Seed of the first image (image i uses seed + i). Default: random, and reported.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of images; more than one writes out-1.png, out-2.png, ….
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Output width in pixels (a multiple of 8). Default: the layout's canvas, else 512.
    #[arg(long)]
    width: Option<u32>,
    /// Output height in pixels (a multiple of 8). Default: the layout's canvas, else 512.
    #[arg(long)]
    height: Option<u32>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weight dtype. Default: fp32 on CPU, fp16 on CUDA.
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// controlnet_conditioning_scale.
    #[arg(long, default_value_t = 1.0)]
    control_scale: f64,
    /// Fraction of the steps before which the ControlNet is off.
    #[arg(long, default_value_t = 0.0)]
    control_start: f64,
    /// Fraction of the steps after which the ControlNet is off.
    #[arg(long, default_value_t = 1.0)]
    control_end: f64,
    /// ControlNet guess mode (the ControlNet sees only the conditional half).
    #[arg(long)]
    guess_mode: bool,
    /// What the ControlNet sees.
    #[arg(long, value_enum, default_value = "mask")]
    control_image: ControlImage,
    /// TextDiffuser-2 conditioning: the prompt's ids followed by the layout's tokens (needs a
    /// TextDiffuser-2 model: its tokenizer with added tokens and fine-tuned text encoder).
    #[arg(long)]
    td2: bool,
    /// img2img / inpainting: start from this image.
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// With --init-image: how much is repainted, (0, 1].
    #[arg(long, default_value_t = 0.75)]
    strength: f64,
    /// With --init-image: inpaint where this mask is white.
    #[arg(long, conflicts_with = "inpaint_line")]
    mask: Option<PathBuf>,
    /// With --init-image: regenerate only the layout's text line N (1-based), in place.
    #[arg(long)]
    inpaint_line: Option<usize>,
    /// Also write the glyph mask the ControlNet saw (PNG).
    #[arg(long)]
    save_mask: Option<PathBuf>,
    /// Also write the layout (JSON).
    #[arg(long)]
    save_layout: Option<PathBuf>,
    /// Font to measure and render with. Default: DejaVu Sans Bold.
    #[arg(long)]
    font: Option<String>,
    /// Read each line back with OCR and print how many read right; the PNG gets the
    /// certificate in its `certificate` text chunk (implied by the three options below).
    #[arg(long)]
    verify: bool,
    /// Also write the certificate as JSON: an object for one image, an array for several.
    #[arg(long)]
    certificate: Option<PathBuf>,
    /// Repaint lines that read wrong, in place, at most this many rounds (0–5), each with a
    /// new seed; pixels outside the repaired lines stay the first image's.
    #[arg(long, default_value_t = 0)]
    repair: usize,
    /// With --n 2 or more: rank the images by their certificates and write only the best.
    #[arg(long)]
    best_of: bool,
}

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

impl ModelOptions {
    /// The first flag `edit` does not take (it paints one picture, from its IMAGE), if given.
    pub(crate) fn edit_conflict(&self) -> Option<&'static str> {
        [
            (
                self.init_image.is_some(),
                "--init-image (the picture to edit is IMAGE)",
            ),
            (self.mask.is_some(), "--mask"),
            (self.inpaint_line.is_some(), "--inpaint-line"),
            (self.n != 1, "--n"),
            (self.repair != 0, "--repair"),
            (self.best_of, "--best-of"),
            (self.td2, "--td2"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

/// The model the flags name, or the embedded demo model, as a poster engine.
pub(crate) fn load_engine(o: &ModelOptions) -> Result<PosterEngine> {
    let embedded;
    let (dir, default_side) = match &o.model_dir {
        Some(dir) => (dir, 512),
        None => {
            if o.controlnet.is_some() || o.tokenizer.is_some() || o.config_dir.is_some() {
                bail!(
                    "--controlnet, --tokenizer and --config-dir go with a --model-dir; without one \
                     letterpress uses {}",
                    crate::embedded_model::DESCRIPTION
                );
            }
            embedded = crate::embedded_model::folder()?;
            eprintln!("model: {}", crate::embedded_model::DESCRIPTION);
            // The embedded model was trained at 256×256.
            (&embedded, 256)
        }
    };
    let options: LoadOptions = load_options(&o.device, o.dtype)?;
    let spinner = ProgressBar::new_spinner().with_message(format!("loading {}", dir.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let source = ModelSource {
        model: dir.clone(),
        controlnet: o.controlnet.clone(),
        tokenizer: o.tokenizer.clone(),
        config_dir: o.config_dir.clone(),
    };
    let mut render = RenderOptions::default();
    if let Some(font) = &o.font {
        render.font = font.clone();
    }
    let engine = PosterEngine::load(&source, &options, render)
        .with_context(|| format!("loading the model from {}", dir.display()));
    spinner.finish_and_clear();
    Ok(engine?.with_default_side(default_side))
}

/// The poster request the flags describe.
pub(crate) fn poster_request(
    prompt: &str,
    text: PosterText,
    o: &ModelOptions,
) -> Result<PosterRequest> {
    let mut r = PosterRequest::new(prompt);
    r.negative_prompt = o.negative_prompt.clone();
    r.text = text;
    r.font = o.font.clone();
    (r.width, r.height) = (o.width, o.height);
    r.n = o.n;
    r.seed = o.seed;
    r.steps = o.steps;
    r.guidance_scale = o.guidance;
    r.scheduler = o
        .scheduler
        .as_deref()
        .map(|s| {
            s.parse::<SchedulerKind>()
                .map_err(|e| anyhow!("--scheduler: {e}"))
        })
        .transpose()?;
    r.control.mode = match o.control_image {
        ControlImage::Mask => ControlMode::Mask,
        ControlImage::Inverse => ControlMode::Inverse,
        ControlImage::Canny => ControlMode::Canny,
    };
    r.control.conditioning_scale = o.control_scale;
    r.control.guidance_start = o.control_start;
    r.control.guidance_end = o.control_end;
    r.control.guess_mode = o.guess_mode;
    r.layout_tokens = if o.td2 {
        LayoutTokens::Always
    } else {
        LayoutTokens::Never
    };
    r.init = init_image(o)?;
    r.verify = o.verify || o.certificate.is_some();
    r.repair = o.repair;
    r.best_of = o.best_of;
    Ok(r)
}

fn init_image(o: &ModelOptions) -> Result<Option<PosterInit>> {
    let Some(path) = &o.init_image else {
        if o.mask.is_some() || o.inpaint_line.is_some() {
            bail!("--mask and --inpaint-line need --init-image (the picture to repaint)");
        }
        return Ok(None);
    };
    let image = image::open(path)
        .with_context(|| format!("reading --init-image {}", path.display()))?
        .to_rgb8();
    let region = match (&o.mask, o.inpaint_line) {
        (Some(m), _) => Some(RepaintRegion::Mask(
            image::open(m)
                .with_context(|| format!("reading --mask {}", m.display()))?
                .to_luma8(),
        )),
        (None, Some(0)) => bail!("--inpaint-line 0: lines are numbered from 1"),
        (None, Some(n)) => Some(RepaintRegion::Line(n - 1)),
        (None, None) => None,
    };
    Ok(Some(PosterInit {
        image,
        strength: o.strength,
        region,
    }))
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
        "text" => "the text (--layout, --keywords or quoted text in the prompt)",
        other => other,
    };
    anyhow!("{flag}: {message}")
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
                    bar.println(certificate_summary(image, certificate));
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

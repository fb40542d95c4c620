//! `letterpress generate` and `letterpress poster`: layout → glyph mask → diffusion → PNGs
//! with their generation metadata.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::{
    ControlMode, ControlSettings, Generation, GenerationRequest, InitImage, ModelSource,
    StableDiffusion, TextConditioning,
};
use letterpress_diffusion::schedulers::SchedulerKind;
use letterpress_diffusion::tch::{self, Device, Kind};
use letterpress_layout::{
    Layout, TypographicPlanner, extract_keywords, layout_tokens, parse_keyword_list,
};
use letterpress_render::Renderer;

use crate::png_meta::{a1111_parameters, write_png};

#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    Fp32,
    Fp16,
    Bf16,
}

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

pub(crate) fn parse_device(s: &str) -> Result<Device> {
    let device = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("--device {s:?}: allowed cpu, cuda, cuda:N"),
        },
    };
    if let Device::Cuda(i) = device {
        let count = tch::Cuda::device_count();
        if count <= i as i64 {
            bail!(
                "--device {s}: libtorch sees {count} CUDA device(s) (a CUDA build of libtorch and a GPU are needed)"
            );
        }
    }
    Ok(device)
}

fn load_model(o: &ModelOptions) -> Result<StableDiffusion> {
    let embedded;
    let dir = match &o.model_dir {
        Some(dir) => dir,
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
            &embedded
        }
    };
    let device = parse_device(&o.device)?;
    let kind = o.dtype.map(|d| match d {
        Dtype::Fp32 => Kind::Float,
        Dtype::Fp16 => Kind::Half,
        Dtype::Bf16 => Kind::BFloat16,
    });
    if device == Device::Cpu && kind == Some(Kind::Half) {
        tracing::warn!(
            "fp16 on the CPU is slow and not what the parity tests check; fp32 is the default there"
        );
    }
    let options = LoadOptions {
        device,
        kind,
        variant: None,
    };
    let spinner = ProgressBar::new_spinner().with_message(format!("loading {}", dir.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let source = ModelSource {
        model: dir.clone(),
        controlnet: o.controlnet.clone(),
        tokenizer: o.tokenizer.clone(),
        config_dir: o.config_dir.clone(),
    };
    let model = StableDiffusion::load_from(&source, &options)
        .with_context(|| format!("loading the model from {}", dir.display()));
    spinner.finish_and_clear();
    model
}

fn renderer(font: &Option<String>) -> Result<Renderer> {
    Ok(match font {
        Some(font) => Renderer::new(letterpress_render::RenderOptions {
            font: font.clone(),
            ..Default::default()
        })?,
        None => Renderer::with_default_font()?,
    })
}

/// The layout to draw: a file, or planned from the keywords (given or quoted in the prompt).
/// `None` when there is no text at all.
fn layout_for(
    prompt: &str,
    layout: Option<&Path>,
    keywords: Option<&str>,
    size: (u32, u32),
    seed: u64,
    renderer: &Renderer,
    font: &Option<String>,
) -> Result<Option<Layout>> {
    if let Some(path) = layout {
        let json =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Some(
            Layout::from_json(&json).with_context(|| format!("parsing {}", path.display()))?,
        ));
    }
    let keywords = match keywords {
        Some(k) => parse_keyword_list(k),
        None => extract_keywords(prompt),
    };
    if keywords.is_empty() {
        return Ok(None);
    }
    let mut planner = TypographicPlanner::new(renderer);
    if let Some(font) = font {
        planner = planner.with_font(font.clone());
    }
    let plan = planner
        .plan(size.0, size.1, &keywords, seed)
        .context("planning the layout")?;
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Some(plan.layout))
}

/// Everything `generate` and `poster` share after parsing.
fn run_generation(
    prompt: &str,
    layout_file: Option<&Path>,
    keywords: Option<&str>,
    o: &ModelOptions,
    output: &Path,
) -> Result<()> {
    if o.n == 0 {
        bail!("--n must be at least 1");
    }
    if output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
        != Some("png")
    {
        bail!(
            "-o {}: the output must be a .png file (it carries the metadata)",
            output.display()
        );
    }
    let scheduler = o
        .scheduler
        .as_deref()
        .map(|s| {
            s.parse::<SchedulerKind>()
                .map_err(|e| anyhow::anyhow!("--scheduler: {e}"))
        })
        .transpose()?;
    let seeds = letterpress_diffusion::pipelines::image_seeds(o.seed, o.n);
    let model = load_model(o)?;

    let renderer = renderer(&o.font)?;
    // The embedded model was trained at 256×256; real SD models at 512 and up.
    let default_side = if o.model_dir.is_none() { 256 } else { 512 };
    let layout_size = (
        o.width.unwrap_or(default_side),
        o.height.unwrap_or(default_side),
    );
    let layout = layout_for(
        prompt,
        layout_file,
        keywords,
        layout_size,
        seeds[0],
        &renderer,
        &o.font,
    )?;
    let width = o
        .width
        .or(layout.as_ref().map(|l| l.width))
        .unwrap_or(default_side);
    let height = o
        .height
        .or(layout.as_ref().map(|l| l.height))
        .unwrap_or(default_side);
    let rendering = layout.as_ref().map(|l| renderer.render(l)).transpose()?;
    if let Some(r) = &rendering {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }

    let mut request = GenerationRequest::new(prompt);
    request.negative_prompt = o.negative_prompt.clone();
    request.width = width;
    request.height = height;
    request.steps = o.steps;
    request.guidance_scale = o.guidance;
    request.scheduler = scheduler;
    request.num_images = o.n;
    request.seed = Some(seeds[0]);
    if o.td2 {
        let Some(layout) = &layout else {
            bail!(
                "--td2 needs text to place: give --layout, --keywords or quoted text in the prompt"
            );
        };
        request.conditioning = TextConditioning::TextDiffuser2 {
            layout_tokens: layout_tokens(layout),
        };
    }
    if model.controlnet.is_some() {
        let Some(r) = &rendering else {
            bail!(
                "a ControlNet is loaded but there is no text to draw: give --layout, --keywords or quoted text in the prompt"
            );
        };
        let mut c = ControlSettings::new(r.glyph_mask.clone());
        c.mode = match o.control_image {
            ControlImage::Mask => ControlMode::Mask,
            ControlImage::Inverse => ControlMode::Inverse,
            ControlImage::Canny => ControlMode::Canny,
        };
        c.conditioning_scale = o.control_scale;
        c.guidance_start = o.control_start;
        c.guidance_end = o.control_end;
        c.guess_mode = o.guess_mode;
        if let Some(path) = &o.save_mask {
            letterpress_diffusion::pipelines::control_picture(&c.mask, c.mode, width, height)
                .save(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        request.control = Some(c);
    } else if let (Some(path), Some(r)) = (&o.save_mask, &rendering) {
        r.glyph_mask
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &o.init_image {
        let image = image::open(path)
            .with_context(|| format!("reading --init-image {}", path.display()))?
            .to_rgb8();
        let mask = match (&o.mask, o.inpaint_line) {
            (Some(m), _) => Some(
                image::open(m)
                    .with_context(|| format!("reading --mask {}", m.display()))?
                    .to_luma8(),
            ),
            (None, Some(n)) => Some(line_mask(layout.as_ref(), n, width, height)?),
            (None, None) => None,
        };
        request.init = Some(InitImage {
            image,
            strength: o.strength,
            mask,
        });
    } else if o.mask.is_some() || o.inpaint_line.is_some() {
        bail!("--mask and --inpaint-line need --init-image (the picture to repaint)");
    }
    if let (Some(path), Some(l)) = (&o.save_layout, &layout) {
        std::fs::write(path, serde_json::to_string_pretty(l)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let bar = ProgressBar::new(o.steps as u64).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps {elapsed_precise} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("seed {}", seeds[0]));
    let cancel = AtomicBool::new(false);
    let generation = model.generate(
        &request,
        &|e| {
            bar.set_length(e.total as u64);
            bar.set_position(e.step as u64);
        },
        &cancel,
    )?;
    bar.finish_and_clear();
    write_outputs(&generation, &request, &model, layout.as_ref(), output)
}

/// A mask that is white inside text line `n` (1-based) of the layout, scaled to the output size.
pub(crate) fn line_mask(
    layout: Option<&Layout>,
    n: usize,
    width: u32,
    height: u32,
) -> Result<image::GrayImage> {
    let Some(layout) = layout else {
        bail!("--inpaint-line needs a layout (--layout or --keywords)");
    };
    let Some(line) = n.checked_sub(1).and_then(|i| layout.lines.get(i)) else {
        bail!(
            "--inpaint-line {n}: the layout has {} line(s), numbered from 1",
            layout.lines.len()
        );
    };
    let (sx, sy) = (
        width as f64 / layout.width as f64,
        height as f64 / layout.height as f64,
    );
    let b = &line.bbox;
    let (l, t) = (
        (b.left as f64 * sx).floor() as i64,
        (b.top as f64 * sy).floor() as i64,
    );
    let (r, bo) = (
        (b.right as f64 * sx).ceil() as i64,
        (b.bottom as f64 * sy).ceil() as i64,
    );
    Ok(image::GrayImage::from_fn(width, height, |x, y| {
        let inside = (l..r).contains(&(x as i64)) && (t..bo).contains(&(y as i64));
        image::Luma([if inside { 255 } else { 0 }])
    }))
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

fn write_outputs(
    generation: &Generation,
    request: &GenerationRequest,
    model: &StableDiffusion,
    layout: Option<&Layout>,
    output: &Path,
) -> Result<()> {
    let layout_json = layout.map(serde_json::to_string).transpose()?;
    let n = generation.images.len();
    for (i, image) in generation.images.iter().enumerate() {
        let path = numbered(output, i, n);
        let mut pairs: Vec<(&str, String)> = vec![
            ("Steps", request.steps.to_string()),
            ("Sampler", generation.scheduler.to_string()),
            ("CFG scale", request.guidance_scale.to_string()),
            ("Seed", image.seed.to_string()),
            ("Size", format!("{}x{}", request.width, request.height)),
            ("Model", model.model_name.clone()),
        ];
        if let Some(c) = &request.control {
            pairs.push((
                "ControlNet",
                format!(
                    "\"weight: {}, guidance start: {}, guidance end: {}, guess mode: {}\"",
                    c.conditioning_scale, c.guidance_start, c.guidance_end, c.guess_mode
                ),
            ));
        }
        if let Some(init) = &request.init {
            pairs.push(("Denoising strength", init.strength.to_string()));
        }
        pairs.push((
            "Version",
            format!("letterpress {}", env!("CARGO_PKG_VERSION")),
        ));
        let mut text = vec![
            (
                "parameters".to_string(),
                a1111_parameters(&request.prompt, &request.negative_prompt, &pairs),
            ),
            ("prompt".to_string(), request.prompt.clone()),
            (
                "negative_prompt".to_string(),
                request.negative_prompt.clone(),
            ),
            ("seed".to_string(), image.seed.to_string()),
            ("steps".to_string(), request.steps.to_string()),
            ("scheduler".to_string(), generation.scheduler.to_string()),
            (
                "guidance_scale".to_string(),
                request.guidance_scale.to_string(),
            ),
            ("model".to_string(), model.model_name.clone()),
        ];
        if let Some(json) = &layout_json {
            text.push(("layout".to_string(), json.clone()));
        }
        write_png(&path, &image.to_rgb8()?, &text)?;
        println!("{} (seed {})", path.display(), image.seed);
    }
    Ok(())
}

pub fn run_generate(args: GenerateArgs) -> Result<()> {
    run_generation(
        &args.prompt,
        args.layout.as_deref(),
        args.keywords.as_deref(),
        &args.options,
        &args.output,
    )
}

pub fn run_poster(args: PosterArgs) -> Result<()> {
    if args.keywords.is_none() && extract_keywords(&args.prompt).is_empty() {
        bail!(
            "the prompt has no quoted text for the poster to say: put it in quotes (\"a poster for 'SUMMER SALE'\") or give --keywords"
        );
    }
    run_generation(
        &args.prompt,
        None,
        args.keywords.as_deref(),
        &args.options,
        &args.output,
    )
}

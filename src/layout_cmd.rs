//! `letterpress layout`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use letterpress_layout::{
    LlmApi, LlmConfig, LlmPlanner, TypographicPlanner, extract_keywords, parse_keyword_list, td2,
};
use letterpress_render::Renderer;

#[derive(Clone, Copy, ValueEnum)]
enum PlannerKind {
    Typographic,
    Llm,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Td2,
}

#[derive(Clone, Copy, ValueEnum)]
enum Api {
    Chat,
    Completions,
}

#[derive(Args)]
pub struct LayoutArgs {
    /// The poster prompt; text in quotes becomes the keywords unless --keywords is given.
    prompt: String,
    /// Keywords, `/`-separated (`'SALE/today only'`).
    #[arg(long)]
    keywords: Option<String>,
    /// Canvas size WIDTHxHEIGHT.
    #[arg(long, default_value = "512x512")]
    size: String,
    #[arg(long, value_enum, default_value = "typographic")]
    planner: PlannerKind,
    /// OpenAI-compatible server for --planner llm (e.g. http://127.0.0.1:8000).
    #[arg(long, env = "LETTERPRESS_LLM_URL")]
    llm_url: Option<String>,
    /// Model name sent to the server.
    #[arg(
        long,
        env = "LETTERPRESS_LLM_MODEL",
        default_value = "textdiffuser-2-planner"
    )]
    llm_model: String,
    /// `chat` for chat models, `completions` (vicuna template) for base models.
    #[arg(long, value_enum, default_value = "chat")]
    llm_api: Api,
    /// Sampling temperature for the LLM.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60.0)]
    llm_timeout: f64,
    /// Fail instead of falling back to the typographic planner when the LLM's answer is unusable.
    #[arg(long)]
    strict: bool,
    /// Seed; random (and reported) when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Output format: the layout as JSON (with warnings), or TextDiffuser-2's `text l,t,r,b` lines.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Also render the layout's glyph mask to this PNG.
    #[arg(long)]
    render: Option<PathBuf>,
    /// Font to measure and render with (family name or file). Default: DejaVu Sans Bold.
    #[arg(long)]
    font: Option<String>,
}

/// `WIDTHxHEIGHT` → (width, height).
pub fn parse_size(size: &str) -> Result<(u32, u32)> {
    let (w, h) = size
        .split_once(['x', 'X'])
        .with_context(|| format!("--size {size:?}: expected WIDTHxHEIGHT, e.g. 512x512"))?;
    let side = |s: &str| {
        s.trim()
            .parse::<u32>()
            .with_context(|| format!("--size {size:?}: {s:?} is not a whole number"))
    };
    Ok((side(w)?, side(h)?))
}

pub fn run(args: LayoutArgs) -> Result<()> {
    let (width, height) = parse_size(&args.size)?;
    let keywords = match &args.keywords {
        Some(list) => parse_keyword_list(list),
        None => extract_keywords(&args.prompt),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let renderer = match &args.font {
        Some(font) => Renderer::new(letterpress_render::RenderOptions {
            font: font.clone(),
            ..Default::default()
        })?,
        None => Renderer::with_default_font()?,
    };
    let plan = match args.planner {
        PlannerKind::Typographic => {
            let mut planner = TypographicPlanner::new(&renderer);
            if let Some(font) = &args.font {
                planner = planner.with_font(font.clone());
            }
            planner.plan(width, height, &keywords, seed)?
        }
        PlannerKind::Llm => {
            let Some(url) = &args.llm_url else {
                bail!("--planner llm needs --llm-url (or LETTERPRESS_LLM_URL)")
            };
            let mut config = LlmConfig::new(url.clone(), args.llm_model.clone());
            config.api = match args.llm_api {
                Api::Chat => LlmApi::Chat,
                Api::Completions => LlmApi::Completions,
            };
            config.temperature = args.temperature;
            config.timeout = Duration::from_secs_f64(args.llm_timeout.max(0.1));
            config.strict = args.strict;
            LlmPlanner::new(config, &renderer).plan(&args.prompt, &keywords, width, height, seed)?
        }
    };
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    match args.format {
        Format::Json => {
            let mut value = serde_json::to_value(&plan)?;
            value["prompt"] = serde_json::json!(args.prompt);
            value["keywords"] = serde_json::json!(keywords);
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Td2 => println!("{}", td2::serialize(&plan.layout)),
    }
    if let Some(path) = &args.render {
        let rendering = renderer.render(&plan.layout)?;
        rendering
            .glyph_mask
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("mask: {}", path.display());
    }
    Ok(())
}

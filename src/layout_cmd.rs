//! `letterpress layout`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use letterpress_layout::{
    Constraint, Layout, LlmApi, LlmConfig, LlmPlanner, Plan, PlannerChoice, TypographicPlanner,
    edit_layout, extract_keywords, parse_keyword_list, td2,
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

#[derive(Clone, Copy, ValueEnum)]
enum Constrain {
    Auto,
    Grammar,
    JsonSchema,
    JsonObject,
    None,
}

#[derive(Args)]
pub struct LayoutArgs {
    /// The poster prompt; text in quotes becomes the keywords unless --keywords is given.
    /// With --from, default: the prompt recorded in that file.
    #[arg(required_unless_present = "from")]
    prompt: Option<String>,
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
    /// How the LLM's answer is constrained: `auto` tries a GBNF grammar (llama.cpp), then a
    /// strict JSON schema (OpenAI, vLLM), then llama-cpp-python's JSON mode, then none, and
    /// remembers per server what worked.
    #[arg(long, value_enum, default_value = "auto")]
    llm_constrain: Constrain,
    /// Fail instead of falling back to the typographic planner when the LLM's answer is unusable.
    #[arg(long)]
    strict: bool,
    /// Edit the layout given with --from as this instruction says ("make the title larger and
    /// move the date to the bottom"): by the LLM with --planner llm, else the understood edits.
    #[arg(long, requires = "from")]
    edit: Option<String>,
    /// A layout JSON (as this command writes it) to edit.
    #[arg(long, requires = "edit")]
    from: Option<PathBuf>,
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
    let seed = args.seed.unwrap_or_else(rand::random);
    let renderer = match &args.font {
        Some(font) => Renderer::new(letterpress_render::RenderOptions {
            font: font.clone(),
            ..Default::default()
        })?,
        None => Renderer::with_default_font()?,
    };
    let (plan, prompt, keywords) = match (&args.edit, &args.from) {
        (Some(instruction), Some(from)) => edit(&args, &renderer, instruction, from, seed)?,
        _ => plan(&args, &renderer, seed)?,
    };
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    match args.format {
        Format::Json => {
            let mut value = serde_json::to_value(&plan)?;
            value["prompt"] = serde_json::json!(prompt);
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

/// The LLM planner's settings from the flags, `None` for the typographic planner.
fn llm_config(args: &LayoutArgs) -> Result<Option<LlmConfig>> {
    if matches!(args.planner, PlannerKind::Typographic) {
        return Ok(None);
    }
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
    config.constrain = match args.llm_constrain {
        Constrain::Auto => Constraint::Auto,
        Constrain::Grammar => Constraint::Grammar,
        Constrain::JsonSchema => Constraint::JsonSchema,
        Constrain::JsonObject => Constraint::JsonObject,
        Constrain::None => Constraint::None,
    };
    Ok(Some(config))
}

/// A new plan: (plan, prompt, keywords).
fn plan(args: &LayoutArgs, renderer: &Renderer, seed: u64) -> Result<(Plan, String, Vec<String>)> {
    let prompt = args.prompt.clone().unwrap_or_default();
    let (width, height) = parse_size(&args.size)?;
    let keywords = match &args.keywords {
        Some(list) => parse_keyword_list(list),
        None => extract_keywords(&prompt),
    };
    let plan = match llm_config(args)? {
        None => {
            let mut planner = TypographicPlanner::new(renderer);
            if let Some(font) = &args.font {
                planner = planner.with_font(font.clone());
            }
            planner.plan(width, height, &keywords, seed)?
        }
        Some(config) => {
            LlmPlanner::new(config, renderer).plan(&prompt, &keywords, width, height, seed)?
        }
    };
    Ok((plan, prompt, keywords))
}

/// An edit of the layout in `from`: (plan, prompt, keywords).
fn edit(
    args: &LayoutArgs,
    renderer: &Renderer,
    instruction: &str,
    from: &std::path::Path,
    seed: u64,
) -> Result<(Plan, String, Vec<String>)> {
    let json = std::fs::read_to_string(from)
        .with_context(|| format!("reading --from {}", from.display()))?;
    let layout = Layout::from_json(&json).with_context(|| format!("--from {}", from.display()))?;
    let recorded: serde_json::Value = serde_json::from_str(&json)?;
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => recorded["prompt"].as_str().unwrap_or_default().to_string(),
    };
    let choice = match llm_config(args)? {
        Some(config) => PlannerChoice::Llm(config),
        None => PlannerChoice::Typographic,
    };
    let plan = edit_layout(renderer, &choice, &prompt, &layout, instruction, seed)
        .map_err(|e| anyhow::anyhow!("--edit: {e}"))?;
    let keywords = plan.layout.lines.iter().map(|l| l.text.clone()).collect();
    Ok((plan, prompt, keywords))
}

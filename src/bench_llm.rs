//! `letterpress bench llm`: the LLM planner against a running server, with each constraint
//! mode asked for: how many answers were usable without the typographic fallback, whether
//! every layout was valid after tidying, overlaps before and after, and the time per plan.
//! `tools/bench_llm_planner.sh` starts SmolLM2-135M-Instruct on llama-cpp-python as the tests
//! do and runs it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use letterpress_layout::planner::tidy::{is_tidy, overlap_count};
use letterpress_layout::{Constraint, LlmConfig, LlmPlanner, Plan};
use letterpress_render::Renderer;

#[derive(Args)]
pub struct LlmBenchArgs {
    /// OpenAI-compatible server (e.g. http://127.0.0.1:8000).
    #[arg(long)]
    llm_url: String,
    /// Model name sent to the server.
    #[arg(long, default_value = "smollm2")]
    llm_model: String,
    /// Prompts per mode (1–5 keywords each, at 1:1, 3:2 and 2:3).
    #[arg(long, default_value_t = 50)]
    prompts: usize,
    /// Constraint modes to compare, comma-separated.
    #[arg(long, default_value = "auto,none")]
    modes: String,
    /// Most tokens per answer (the SmolLM2 test's 128).
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
}

const SUBJECTS: [&str; 10] = [
    "a coffee shop poster",
    "a summer festival flyer",
    "a book cover",
    "a jazz concert poster",
    "a bakery sign",
    "a sale banner",
    "a movie poster",
    "a conference badge",
    "a travel poster",
    "a garden shop ad",
];
const PHRASES: [&str; 20] = [
    "Fresh Coffee",
    "open daily",
    "Summer Fest",
    "The Quiet Sea",
    "Jazz Night",
    "Friday 9pm",
    "Sweet Crumbs",
    "SALE",
    "up to 50% off",
    "this weekend only",
    "Galaxy Run",
    "coming soon",
    "RustConf",
    "Speaker",
    "Visit Lisbon",
    "free entry",
    "Spring Plants",
    "new arrivals",
    "Late Talks",
    "since 1987",
];
const SIZES: [(u32, u32); 3] = [(512, 512), (768, 512), (512, 768)];

/// Prompt i: a subject and 1–5 keywords, at one of three aspect ratios.
fn case(i: usize) -> (String, Vec<String>, (u32, u32)) {
    let n = 1 + i % 5;
    let keywords: Vec<String> = (0..n)
        .map(|k| PHRASES[(i * 7 + k * 3) % PHRASES.len()].to_string())
        .collect();
    let quoted: Vec<String> = keywords.iter().map(|k| format!("'{k}'")).collect();
    let prompt = format!(
        "{} with the words {}",
        SUBJECTS[i % SUBJECTS.len()],
        quoted.join(", ")
    );
    (
        prompt,
        letterpress_layout::normalize_keywords(keywords),
        SIZES[i % SIZES.len()],
    )
}

#[derive(Default)]
struct Tally {
    usable: usize,
    whole: usize,
    valid: usize,
    overlapping_before: usize,
    overlaps_after: usize,
    time: Duration,
}

impl Tally {
    fn add(&mut self, plan: &Plan, keywords: &[String], renderer: &Renderer, time: Duration) {
        self.time += time;
        self.usable += usize::from(plan.planner != "typographic");
        self.whole += usize::from(plan.planner == "llm");
        // Lines the tidying moved, shrank or cut off an earlier line's box.
        self.overlapping_before += plan
            .warnings
            .iter()
            .filter(|w| w.contains("off an earlier line's box"))
            .count();
        self.overlaps_after += overlap_count(&plan.layout);
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        let each_once = keywords.iter().all(|k| {
            plan.layout
                .lines
                .iter()
                .filter(|l| squash(&l.text) == squash(k))
                .count()
                == 1
        });
        let renders = renderer.render(&plan.layout).is_ok();
        self.valid += usize::from(is_tidy(&plan.layout) && each_once && renders);
    }
}

pub fn run(args: LlmBenchArgs) -> Result<()> {
    if args.prompts == 0 {
        bail!("--prompts must be at least 1");
    }
    let renderer = Renderer::with_default_font()?;
    let modes: Vec<Constraint> = args
        .modes
        .split(',')
        .map(|m| m.trim().parse().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    println!(
        "LLM planner, {} prompts of 1-5 keywords at 512x512, 768x512, 512x768; {} at {}",
        args.prompts, args.llm_model, args.llm_url
    );
    println!(
        "| constrain | usable without fallback | all keywords from the LLM | valid after tidying | lines overlapping before | overlapping pairs after | mean s per plan |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for mode in modes {
        let mut config = LlmConfig::new(args.llm_url.clone(), args.llm_model.clone());
        config.api_key = None;
        config.max_tokens = args.max_tokens;
        config.timeout = Duration::from_secs(300);
        config.retries = 1;
        config.constrain = mode;
        let planner = LlmPlanner::new(config, &renderer);
        let mut tally = Tally::default();
        for i in 0..args.prompts {
            let (prompt, keywords, (w, h)) = case(i);
            let start = Instant::now();
            let plan = planner.plan(&prompt, &keywords, w, h, i as u64)?;
            let took = start.elapsed();
            eprintln!(
                "{mode} {i:2} {:16} {:5.1} s {w}x{h} {keywords:?}",
                plan.planner,
                took.as_secs_f64()
            );
            if plan.planner != "llm" {
                eprintln!("   {:?}", plan.warnings);
            }
            tally.add(&plan, &keywords, &renderer, took);
        }
        let n = args.prompts;
        let pct = |k: usize| format!("{k}/{n} ({:.0} %)", 100.0 * k as f64 / n as f64);
        println!(
            "| {mode} | {} | {} | {} | {} | {} | {:.2} |",
            pct(tally.usable),
            pct(tally.whole),
            pct(tally.valid),
            tally.overlapping_before,
            tally.overlaps_after,
            tally.time.as_secs_f64() / n as f64
        );
    }
    Ok(())
}

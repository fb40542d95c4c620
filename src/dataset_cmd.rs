//! `letterpress dataset build`: the CLI over `letterpress_ocr::dataset`.

mod queue;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_ocr::OcrConfig;
use letterpress_ocr::dataset::{
    self, BuildConfig, BuildProgress, BuildReport, DecodeLimits, Filters,
};
use serde::{Deserialize, Serialize};

#[derive(Subcommand)]
pub enum DatasetCommand {
    /// OCR images into WebDataset shards for ControlNet and layout-planner training.
    Build(BuildArgs),
    /// A synthetic poster corpus (procedural backgrounds, planned text, glyph masks,
    /// captions) in the same shard format.
    Synth(SynthArgs),
    /// Take shards of `dataset build --queue` builds from NATS and write them (to the build's
    /// output folder, which must be at the same path on every machine).
    Worker(queue::WorkerArgs),
}

#[derive(Clone, Copy, ValueEnum, Serialize, Deserialize)]
enum Export {
    /// Layout-planner fine-tuning data: FastChat/vicuna conversations in `planner.json`.
    Planner,
}

/// The build's settings; a queued build sends them to the workers in each task (serde).
#[derive(Args, Clone, Serialize, Deserialize)]
pub struct BuildArgs {
    /// A folder of images (sidecar captions `name.txt` / `name.json`), a file list (one path
    /// per line, optionally `path<TAB>caption`), or WebDataset `.tar` shard(s).
    input: PathBuf,
    /// Output folder; rerunning with the same one resumes.
    #[arg(short, long)]
    output: PathBuf,
    /// Inputs per output shard.
    #[arg(long, default_value_t = 10_000)]
    shard_size: usize,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Resize so the short side has this many pixels before OCR (512 when given no value).
    #[arg(long, num_args = 0..=1, default_missing_value = "512")]
    resize: Option<u32>,
    /// Largest image accepted, in pixels (decompression bombs are rejected from the header).
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    max_pixels: u64,
    /// Largest file accepted, in bytes.
    #[arg(long, default_value_t = DecodeLimits::default().max_bytes)]
    max_bytes: u64,
    /// Filter: shortest side of the original, pixels (0 keeps all).
    #[arg(long, default_value_t = Filters::default().min_side)]
    min_side: u32,
    /// Filter: fewest recognised words.
    #[arg(long, default_value_t = Filters::default().min_words)]
    min_words: usize,
    /// Filter: most recognised words.
    #[arg(long, default_value_t = Filters::default().max_words)]
    max_words: usize,
    /// Filter: smallest share of the image covered by word boxes (0–1).
    #[arg(long, default_value_t = Filters::default().min_text_area)]
    min_text_area: f32,
    /// Filter: lowest mean word confidence (0–100).
    #[arg(long, default_value_t = Filters::default().min_mean_confidence)]
    min_confidence: f32,
    /// Filter: smallest share of recognised words found in the caption, when there is one
    /// (0 switches it off).
    #[arg(long, default_value_t = Filters::default().min_caption_match)]
    min_caption_match: f32,
    /// Words below this tesseract confidence (0–100) are dropped before filtering.
    #[arg(long, default_value_t = 30.0)]
    word_min_confidence: f32,
    /// Tesseract languages.
    #[arg(long, default_value = "eng")]
    lang: String,
    /// Tesseract page segmentation mode (11: sparse text).
    #[arg(long, default_value_t = 11)]
    psm: u32,
    /// Extra training data to write.
    #[arg(long, value_enum)]
    export: Option<Export>,
    /// Recognise every input: skip the first stage, which rejects inputs on tesseract's
    /// layout analysis alone when no recognition could make them pass the word-count or
    /// text-area filter. Kept samples are the same either way; the first stage is on by default.
    #[arg(long)]
    no_first_stage: bool,
    /// Build across machines: publish one task per shard to this NATS server
    /// (`nats://host:4222`, JetStream enabled), show the whole job's progress and print the
    /// summary once `letterpress dataset worker --queue` processes have built every shard.
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
    queue: Option<String>,
}

pub fn run(cmd: DatasetCommand) -> Result<()> {
    match cmd {
        DatasetCommand::Build(args) => match args.queue.clone() {
            Some(url) => queue::publish(&args, &url),
            None => build(args),
        },
        DatasetCommand::Synth(args) => synth(args),
        DatasetCommand::Worker(args) => queue::work(&args),
    }
}

#[derive(Args)]
pub struct SynthArgs {
    /// Number of samples.
    #[arg(long)]
    n: usize,
    /// Output folder; rerunning with the same one (and options) resumes.
    #[arg(short, long)]
    output: PathBuf,
    /// Square image side in pixels (256–2048).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Seed: sample i depends only on (seed, i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples per shard.
    #[arg(long, default_value_t = 10_000)]
    shard_size: usize,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
}

fn synth(args: SynthArgs) -> Result<()> {
    let mut config = dataset::SynthConfig::new(&args.output, args.n);
    config.size = args.size;
    config.seed = args.seed;
    config.shard_size = args.shard_size;
    config.jobs = args.jobs;
    let bar = progress_bar()?;
    let report = dataset::synth(&config, &bar)?;
    bar.0.finish_and_clear();
    println!(
        "samples: {}, shards: {} ({} resumed), errors: {}",
        report.stats.kept, report.shards, report.shards_resumed, report.stats.errors
    );
    Ok(())
}

impl BuildArgs {
    pub(crate) fn config(&self) -> BuildConfig {
        let mut c = BuildConfig::new(&self.input, &self.output);
        c.shard_size = self.shard_size;
        c.jobs = self.jobs;
        c.resize = self.resize;
        c.limits = DecodeLimits {
            max_pixels: self.max_pixels,
            max_bytes: self.max_bytes,
        };
        c.filters = Filters {
            min_side: self.min_side,
            min_words: self.min_words,
            max_words: self.max_words,
            min_text_area: self.min_text_area,
            min_mean_confidence: self.min_confidence,
            min_caption_match: self.min_caption_match,
        };
        c.ocr = OcrConfig {
            languages: self.lang.clone(),
            psm: self.psm,
            min_confidence: self.word_min_confidence,
            ..OcrConfig::default()
        };
        c.export_planner = matches!(self.export, Some(Export::Planner));
        c.first_stage = !self.no_first_stage;
        c
    }
}

/// Progress bar with images/s and ETA over the inputs still to do.
pub(crate) struct Bar(pub ProgressBar);

impl BuildProgress for Bar {
    fn start(&self, to_do: u64, done_before: u64) {
        self.0.set_length(to_do);
        if done_before > 0 {
            self.0
                .set_message(format!("(resumed: {done_before} inputs already done)"));
        }
    }
    fn advance(&self) {
        self.0.inc(1);
    }
}

pub(crate) fn progress_bar() -> Result<Bar> {
    Ok(Bar(ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")?,
    )))
}

fn build(args: BuildArgs) -> Result<()> {
    let config = args.config();
    let bar = progress_bar()?;
    let report = dataset::build(&config, &bar)?;
    bar.0.finish_and_clear();
    print_summary(&report, &config.output);
    Ok(())
}

/// The build's summary on stdout, the same for a local and a queued build.
fn print_summary(report: &BuildReport, output: &Path) {
    let s = &report.stats;
    println!(
        "inputs: {} ({:?}), shards: {} ({} resumed)",
        report.inputs, report.input_kind, report.shards, report.shards_resumed
    );
    println!("kept: {}", s.kept);
    let rejected: Vec<String> = dataset::FILTER_NAMES
        .iter()
        .map(|f| format!("{f} {}", s.rejected.get(*f).copied().unwrap_or(0)))
        .collect();
    println!("rejected: {} ({})", s.rejected_total(), rejected.join(", "));
    println!(
        "errors: {} (see {})",
        s.errors,
        output.join("errors.jsonl").display()
    );
}

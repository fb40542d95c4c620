//! `letterpress`: the command-line front end. It parses arguments and calls the library crates.

mod bench;
mod bench_layout;
mod bench_llm;
mod bench_load;
mod bench_ocr;
mod bench_pipeline;
mod bench_reference;
mod bench_render;
mod bench_support;
mod bench_unet;
mod dataset_cmd;
mod device;
mod edit_cmd;
mod embedded_model;
mod eval_cmd;
mod generate_cmd;
mod layout_cmd;
mod model_options;
mod render_cmd;
mod serve_cmd;
mod serve_engine;
mod train_cmd;
mod worker_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "letterpress",
    version,
    about = "Text-in-image poster generation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plan a layout for a prompt: which text goes where.
    Layout(layout_cmd::LayoutArgs),
    /// Render a layout as a glyph mask (white on black), with optional extras.
    Render(render_cmd::RenderArgs),
    /// Measure generated images: OCR legibility (MARIO-Eval metrics).
    #[command(subcommand)]
    Eval(eval_cmd::EvalCommand),
    /// Build training data: OCR images into WebDataset shards.
    #[command(subcommand)]
    Dataset(dataset_cmd::DatasetCommand),
    /// Generate images with a diffusion model, the text drawn from a layout.
    Generate(generate_cmd::GenerateArgs),
    /// Plan, render and generate a poster from one prompt.
    Poster(generate_cmd::PosterArgs),
    /// Replace text in an existing picture, in place: OCR finds the old text, the new text is
    /// inpainted into its box; every other pixel stays the input's.
    Edit(edit_cmd::EditArgs),
    /// Benchmarks that print a ratio against a reference measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Train a glyph ControlNet, or fine-tune UNet + text encoder, on dataset shards.
    #[command(subcommand)]
    Train(train_cmd::TrainCommand),
    /// Serve the HTTP poster-generation API.
    Serve(serve_cmd::ServeArgs),
    /// Take poster jobs from a NATS JetStream queue and run them (a scaled-out service's
    /// worker; `serve --queue` runs its API nodes).
    Worker(worker_cmd::WorkerArgs),
}

/// Commands that run tesseract in bulk, one engine per worker: its OpenMP threads would fight
/// the workers for the cores, so they run with `OMP_THREAD_LIMIT=1`. Only these pay for the
/// re-execution; libtorch's commands must not get the limit (their intra-op parallelism is
/// OpenMP too), and the rest use no OpenMP.
fn runs_ocr(command: &Command) -> bool {
    matches!(
        command,
        Command::Eval(_) | Command::Dataset(_) | Command::Bench(bench::BenchCommand::Ocr(_))
    )
}

/// Commands that run tesseract in the same process as libtorch (reading lines back, repairing,
/// editing): the OpenMP threads of both, spinning while idle, starve each other on a busy
/// machine (a `poster --repair 2` took 2 min 56 s against 16 s), so idle threads sleep
/// instead: `OMP_WAIT_POLICY=passive`, which keeps libtorch's thread count.
fn mixes_ocr_and_torch(command: &Command) -> bool {
    match command {
        Command::Generate(args) => args.verifies(),
        Command::Poster(args) => args.verifies(),
        // The service's jobs may ask for `verify` or `repair`.
        Command::Edit(_) | Command::Serve(_) | Command::Worker(_) => true,
        _ => false,
    }
}

/// Replaces this process by itself with `key=value` in its environment; returns only on
/// failure. libgomp reads its variables once, when it is loaded, before `main` runs, so setting
/// them in this process would come too late (docs/architecture.md, "OCR threads").
fn exec_with_env(key: &str, value: &str) -> std::io::Error {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        match std::env::current_exe() {
            Ok(exe) => std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(key, value)
                .exec(),
            Err(e) => e,
        }
    }
    #[cfg(not(unix))]
    {
        std::io::Error::other("re-executing is only done on Unix")
    }
}

fn main() {
    let cli = Cli::parse();
    if std::env::var_os("OMP_THREAD_LIMIT").is_none() && runs_ocr(&cli.command) {
        // Tesseract's OpenMP threads fight our own workers for the cores (docs/architecture.md,
        // "OCR threads"); one thread per engine is faster in bulk.
        let e = exec_with_env("OMP_THREAD_LIMIT", "1");
        eprintln!(
            "warning: running with tesseract's OpenMP threads (re-executing with OMP_THREAD_LIMIT=1 failed: {e})"
        );
    }
    if std::env::var_os("OMP_WAIT_POLICY").is_none() && mixes_ocr_and_torch(&cli.command) {
        let e = exec_with_env("OMP_WAIT_POLICY", "passive");
        eprintln!(
            "warning: OpenMP threads spin while idle (re-executing with OMP_WAIT_POLICY=passive failed: {e})"
        );
    }
    // The service logs each request (with its request id) by default; the CLI only warnings.
    // So do the workers, which run unattended.
    let default_log = if matches!(
        cli.command,
        Command::Serve(_)
            | Command::Worker(_)
            | Command::Dataset(dataset_cmd::DatasetCommand::Worker(_))
    ) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LETTERPRESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Layout(args) => layout_cmd::run(args),
        Command::Render(args) => render_cmd::run(args),
        Command::Eval(cmd) => eval_cmd::run(cmd),
        Command::Dataset(cmd) => dataset_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Worker(args) => worker_cmd::run(args),
        Command::Generate(args) => generate_cmd::run_generate(args),
        Command::Poster(args) => generate_cmd::run_poster(args),
        Command::Edit(args) => edit_cmd::run(args),
        Command::Train(cmd) => train_cmd::run(cmd),
    }
}

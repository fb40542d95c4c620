//! `letterpress`: the command-line front end. It parses arguments and calls the library crates.

mod bench;
mod bench_unet;
mod render_cmd;

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
    /// Render a layout as a glyph mask (white on black), with optional extras.
    Render(render_cmd::RenderArgs),
    /// Benchmarks that print a ratio against a reference measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LETTERPRESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Render(args) => render_cmd::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

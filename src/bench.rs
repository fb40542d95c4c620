//! `letterpress bench …`: speed against a reference measured in the same run.
//!
//! Each benchmark lives in its own module and shares helpers only through bench_support.rs;
//! this module only dispatches.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Glyph masks per second against PIL `ImageDraw.text` (tools/bench_render_pil.py).
    Render {
        /// Masks to render on each side.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// Python with Pillow for the reference. Default: .venv/bin/python, else python3.
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Layouts planned per second by the typographic planner, on one thread.
    Layout {
        #[arg(long, default_value_t = 20000)]
        n: usize,
    },
    /// The LLM planner against a running server, per constraint mode: usable answers, valid
    /// layouts after tidying, overlaps, time per plan (tools/bench_llm_planner.sh).
    Llm(crate::bench_llm::LlmBenchArgs),
    /// One ControlNet + UNet forward (SD 1.5 configuration) against diffusers
    /// (tools/bench_unet_diffusers.py).
    Unet(crate::bench_unet::UnetBenchArgs),
    /// Images per second through `dataset build` against pytesseract
    /// (tools/bench_ocr_pytesseract.py).
    Ocr(crate::bench_ocr::OcrBenchArgs),
    /// A whole ControlNet generation (20 DDIM steps, 256×256, SD 1.5 configurations) against
    /// diffusers' pipeline (tools/bench_pipeline_diffusers.py).
    Pipeline(crate::bench_pipeline::PipelineBenchArgs),
    /// A cold load of a whole ControlNet pipeline (SD 1.5 configurations) against diffusers'
    /// `from_pretrained` (tools/bench_load_diffusers.py), each load in a fresh process.
    Load(crate::bench_load::LoadBenchArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Render { n, python } => crate::bench_render::run(n, python),
        BenchCommand::Layout { n } => crate::bench_layout::run(n),
        BenchCommand::Llm(args) => crate::bench_llm::run(args),
        BenchCommand::Unet(args) => crate::bench_unet::run(args),
        BenchCommand::Ocr(args) => crate::bench_ocr::run(args),
        BenchCommand::Pipeline(args) => crate::bench_pipeline::run(args),
        BenchCommand::Load(args) => crate::bench_load::run(args),
    }
}

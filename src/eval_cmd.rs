//! `letterpress eval ocr`: MARIO-Eval legibility of a folder of generated images.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use letterpress_layout::extract_keywords;
use letterpress_ocr::{OcrConfig, OcrEngine, score_image, summarize};
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// OCR each image and score its words against the intended ones.
    Ocr(OcrArgs),
}

#[derive(Args)]
pub struct OcrArgs {
    /// Folder of images (png, jpg, webp).
    #[arg(long)]
    images: PathBuf,
    /// JSONL with `{"image": "name.png", "words": [...]}` (or `"text": "..."`) per image.
    #[arg(long, conflicts_with = "prompts", required_unless_present = "prompts")]
    expected: Option<PathBuf>,
    /// Prompts whose quoted keywords are the expected words: JSONL with
    /// `{"image": "name.png", "prompt": "..."}`, or plain text with one prompt per line for
    /// the images in file-name order (MARIO-Eval's prompt lists).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Write per-image scores here as JSONL (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Tesseract languages.
    #[arg(long, default_value = "eng")]
    lang: String,
    /// Tesseract page segmentation mode.
    #[arg(long, default_value_t = 11)]
    psm: u32,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Ocr(args) => eval_ocr(args),
    }
}

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e.to_ascii_lowercase().as_str(),
                    "png" | "jpg" | "jpeg" | "webp"
                )
            })
        })
        .collect();
    images.sort();
    Ok(images)
}

/// Expected words by image file name.
fn expected_words(args: &OcrArgs, images: &[PathBuf]) -> Result<HashMap<String, Vec<String>>> {
    let (path, from_prompts) = match (&args.expected, &args.prompts) {
        (Some(p), _) => (p, false),
        (None, Some(p)) => (p, true),
        (None, None) => bail!("give --expected FILE or --prompts FILE"),
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, line) in lines.iter().enumerate() {
        let record: Option<Value> = serde_json::from_str::<Value>(line)
            .ok()
            .filter(Value::is_object);
        let (image, words) = match record {
            Some(r) => {
                let image = r["image"]
                    .as_str()
                    .with_context(|| format!("{}:{}: no \"image\"", path.display(), i + 1))?
                    .to_string();
                let words = if from_prompts {
                    let prompt = r["prompt"]
                        .as_str()
                        .with_context(|| format!("{}:{}: no \"prompt\"", path.display(), i + 1))?;
                    extract_keywords(prompt)
                } else if let Some(list) = r["words"].as_array() {
                    list.iter()
                        .filter_map(|w| w.as_str().map(str::to_string))
                        .collect()
                } else {
                    let t = r["text"].as_str().with_context(|| {
                        format!("{}:{}: no \"words\" or \"text\"", path.display(), i + 1)
                    })?;
                    vec![t.to_string()]
                };
                (image, words)
            }
            None if from_prompts => {
                let image = images.get(i).with_context(|| {
                    format!(
                        "{}: {} prompts but only {} images",
                        path.display(),
                        lines.len(),
                        images.len()
                    )
                })?;
                (file_name(image), extract_keywords(line))
            }
            None => bail!(
                "{}:{}: expected a JSON object per line",
                path.display(),
                i + 1
            ),
        };
        out.insert(image, words);
    }
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn eval_ocr(args: OcrArgs) -> Result<()> {
    let images = list_images(&args.images)?;
    if images.is_empty() {
        bail!("no png, jpg or webp images in {}", args.images.display());
    }
    let expected = expected_words(&args, &images)?;
    let mut engine = OcrEngine::new(OcrConfig {
        languages: args.lang.clone(),
        psm: args.psm,
        ..Default::default()
    })?;
    let mut sink: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let bar = ProgressBar::new(images.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} {per_sec} eta {eta}",
    )?);
    let mut scores = Vec::new();
    let mut skipped = 0;
    for path in &images {
        bar.inc(1);
        let name = file_name(path);
        let Some(words) = expected.get(&name) else {
            skipped += 1;
            continue;
        };
        let image = match image::open(path) {
            Ok(i) => i.to_luma8(),
            Err(e) => {
                bar.suspend(|| eprintln!("warning: {name}: {e}; skipped"));
                skipped += 1;
                continue;
            }
        };
        let page = engine.recognize(&image).with_context(|| name.clone())?;
        let predicted: Vec<String> = page.words.iter().map(|w| w.text.clone()).collect();
        let score = score_image(words, &predicted);
        writeln!(sink, "{}", json!({"image": name, "score": score}))?;
        scores.push(score);
    }
    bar.finish_and_clear();
    sink.flush()?;
    drop(sink);
    if scores.is_empty() {
        bail!("none of the {} images has expected words", images.len());
    }
    if skipped > 0 {
        eprintln!("warning: {skipped} images had no expected words or could not be read");
    }
    let s = summarize(&scores);
    println!("images: {}", s.images);
    println!("precision: {:.4}", s.precision);
    println!("recall: {:.4}", s.recall);
    println!("f: {:.4}", s.f);
    println!("accuracy: {:.4}", s.accuracy);
    println!(
        "normalized_edit_distance: {:.4}",
        s.normalized_edit_distance
    );
    println!("word_accuracy: {:.4}", s.word_accuracy);
    Ok(())
}

//! The build: enumerate inputs, assign them to shards, process the shards not yet complete on
//! worker threads (one tesseract engine each), write shards in input order, merge the
//! per-shard errors, stats and planner data.
//!
//! Resuming: input `i` (in the deterministic input order) always belongs to shard
//! `i / shard_size`, and a shard becomes visible only when complete, so a rerun after a kill
//! redoes exactly the incomplete shards and every input ends up exactly once in the output.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use letterpress_render::{MissingGlyph, RenderOptions, Renderer};
use serde_json::{Value, json};

use super::decode::DecodeLimits;
use super::filters::Filters;
use super::input::{self, Input, InputKind};
use super::sample::{self, Outcome, SampleContext};
use super::shard::{self, ShardFiles, ShardWriter, Stats};
use crate::{DatasetError, OcrConfig, OcrEngine, tesseract_version};

/// Settings of a dataset build.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// Folder of images, file list, or WebDataset `.tar` shard(s).
    pub input: PathBuf,
    /// Output folder (created when missing).
    pub output: PathBuf,
    /// Inputs per output shard. Default 10,000 (img2dataset's default).
    pub shard_size: usize,
    /// Worker threads. Default 0: one per core.
    pub jobs: usize,
    pub limits: DecodeLimits,
    /// Resize so the short side has this many pixels before OCR. Default none.
    pub resize: Option<u32>,
    pub filters: Filters,
    /// OCR settings; `min_confidence` drops low-confidence words before filtering.
    pub ocr: OcrConfig,
    /// Also write planner fine-tuning data (`planner.json`, FastChat conversations).
    pub export_planner: bool,
    /// Run tesseract's layout analysis alone first and reject, unrecognised, the inputs whose
    /// layout cannot pass the word-count or text-area filter (counted as `layout_word_count`
    /// and `layout_text_area`). Kept samples are the same with it on or off; only the time
    /// and the names of some rejections change. Default true.
    pub first_stage: bool,
}

impl BuildConfig {
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        BuildConfig {
            input: input.into(),
            output: output.into(),
            shard_size: 10_000,
            jobs: 0,
            limits: DecodeLimits::default(),
            resize: None,
            filters: Filters::default(),
            ocr: OcrConfig {
                // Tesseract's sparse-text mode reports many low-confidence specks on photos.
                min_confidence: 30.0,
                ..OcrConfig::default()
            },
            export_planner: false,
            first_stage: true,
        }
    }
}

/// Receives progress from a build (the CLI draws a bar).
pub trait BuildProgress: Sync {
    /// `to_do` inputs will be processed now; `done_before` were in shards completed earlier.
    fn start(&self, _to_do: u64, _done_before: u64) {}
    /// One more input processed.
    fn advance(&self) {}
    /// Polled between inputs: true stops the build, which then fails with
    /// [`DatasetError::Cancelled`] and leaves the shard it was writing incomplete.
    fn cancelled(&self) -> bool {
        false
    }
}

/// No progress output.
pub struct NoProgress;
impl BuildProgress for NoProgress {}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub input_kind: InputKind,
    pub inputs: usize,
    pub shards: usize,
    /// Shards found complete from an earlier run and skipped.
    pub shards_resumed: usize,
    pub stats: Stats,
}

/// Name of the run manifest: the settings and input fingerprint a resumed run must match.
pub const RUN_FILE: &str = "run.json";

fn key_for(index: usize, shard_size: usize) -> String {
    let digits = (shard_size.saturating_sub(1)).to_string().len();
    format!("{:05}{:0digits$}", index / shard_size, index % shard_size)
}

/// A stable fingerprint of the input order.
fn fingerprint(inputs: &[Input]) -> String {
    fnv1a(inputs.iter().map(|i| i.source.as_str()))
}

/// FNV-1a over strings, each ended by a zero byte, as 16 hex digits.
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn ocr_meta(config: &OcrConfig) -> Value {
    json!({
        "engine": "tesseract",
        "version": tesseract_version(),
        "languages": config.languages,
        "psm": config.psm,
        "word_min_confidence": config.min_confidence,
    })
}

/// Writes the run manifest, or checks that an existing one matches: resuming with other
/// settings or other inputs would mix two datasets.
pub(crate) fn check_manifest(path: &Path, manifest: &Value) -> Result<(), DatasetError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let old: Value = serde_json::from_str(&text).map_err(|e| DatasetError::BadOutput {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            let differing: Vec<String> = manifest
                .as_object()
                .expect("manifest is an object")
                .iter()
                .filter(|(k, v)| old.get(k.as_str()) != Some(v))
                .map(|(k, _)| k.clone())
                .collect();
            if differing.is_empty() {
                Ok(())
            } else {
                Err(DatasetError::DifferentRun {
                    path: path.to_path_buf(),
                    fields: differing.join(", "),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => shard::write_atomic(
            path,
            &serde_json::to_vec_pretty(manifest).expect("manifest serialises"),
        ),
        Err(e) => Err(DatasetError::io(path, e)),
    }
}

/// Refuses settings no build can use, before any input is read.
fn check_build_config(config: &BuildConfig) -> Result<(), DatasetError> {
    if config.shard_size == 0 {
        return Err(DatasetError::Config(
            "shard size 0: it must be at least 1".into(),
        ));
    }
    if config.filters.min_words > config.filters.max_words {
        return Err(DatasetError::Config(format!(
            "minimum word count {} is more than the maximum word count {}; the minimum must \
             not exceed the maximum",
            config.filters.min_words, config.filters.max_words
        )));
    }
    if config.resize == Some(0) {
        return Err(DatasetError::Config(
            "resize side 0: it must be at least 1 pixel".into(),
        ));
    }
    Ok(())
}

/// A build's inputs and settings, checked against the output folder's run manifest (written
/// when missing): what a whole build, or one shard of it built alone, works from.
pub struct BuildPlan {
    config: BuildConfig,
    kind: InputKind,
    inputs: Vec<Input>,
    ocr: Value,
    run_id: String,
}

impl BuildPlan {
    /// Checks the settings, enumerates the inputs, creates the output folder and writes or
    /// checks its run manifest.
    pub fn new(config: &BuildConfig) -> Result<Self, DatasetError> {
        check_build_config(config)?;
        let kind = input::detect_kind(&config.input)?;
        let inputs = input::enumerate(&config.input, kind)?;
        std::fs::create_dir_all(&config.output).map_err(|e| DatasetError::io(&config.output, e))?;
        let ocr = ocr_meta(&config.ocr);
        let manifest = json!({
            "letterpress_version": env!("CARGO_PKG_VERSION"),
            "input": std::fs::canonicalize(&config.input).unwrap_or(config.input.clone()),
            "input_kind": kind,
            "inputs": inputs.len(),
            "inputs_fingerprint": fingerprint(&inputs),
            "shard_size": config.shard_size,
            "limits": config.limits,
            "resize_short_side": config.resize,
            "filters": config.filters,
            "ocr": ocr,
            "export_planner": config.export_planner,
            "first_stage": config.first_stage,
        });
        check_manifest(&config.output.join(RUN_FILE), &manifest)?;
        // The output folder and the manifest name the run: two builds share an id only when
        // they would write the same shards to the same place.
        let output = std::fs::canonicalize(&config.output).unwrap_or(config.output.clone());
        let run_id = fnv1a([output.to_string_lossy().as_ref(), &manifest.to_string()]);
        Ok(BuildPlan {
            config: config.clone(),
            kind,
            inputs,
            ocr,
            run_id,
        })
    }

    pub fn input_kind(&self) -> InputKind {
        self.kind
    }

    pub fn inputs(&self) -> usize {
        self.inputs.len()
    }

    pub fn shards(&self) -> usize {
        self.inputs.len().div_ceil(self.config.shard_size)
    }

    /// A stable name of the run (16 hex digits), the same for every process planning the same
    /// build into the same output folder.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether shard `shard` was completed (its files renamed into place).
    pub fn is_complete(&self, shard: usize) -> bool {
        ShardFiles::new(&self.config.output, shard).is_complete()
    }

    /// Builds shard `shard` alone, exactly as a whole build would (same keys, same bytes),
    /// unless it is complete already. Leftover partial files of the shard are replaced.
    pub fn build_shard(
        &self,
        shard: usize,
        progress: &dyn BuildProgress,
    ) -> Result<ShardBuild, DatasetError> {
        if shard >= self.shards() {
            return Err(DatasetError::Config(format!(
                "shard {shard} does not exist: the run has {} shards",
                self.shards()
            )));
        }
        let files = ShardFiles::new(&self.config.output, shard);
        if files.is_complete() {
            return Ok(ShardBuild {
                stats: shard::read_stats(&files)?,
                already_complete: true,
            });
        }
        let size = self.config.shard_size;
        let work: Vec<usize> =
            (shard * size..((shard + 1) * size).min(self.inputs.len())).collect();
        progress.start(work.len() as u64, 0);
        self.process(&work, progress)?;
        Ok(ShardBuild {
            stats: shard::read_stats(&files)?,
            already_complete: false,
        })
    }

    /// Merges the shards into the output folder's totals (`stats.json`, `errors.jsonl`,
    /// `planner.json`); every shard must be complete. `resumed` is reported as given.
    pub fn finish(&self, resumed: usize) -> Result<BuildReport, DatasetError> {
        let stats = merge_shards(&self.config, self.shards(), self.inputs.len())?;
        Ok(BuildReport {
            input_kind: self.kind,
            inputs: self.inputs.len(),
            shards: self.shards(),
            shards_resumed: resumed,
            stats,
        })
    }

    fn process(&self, work: &[usize], progress: &dyn BuildProgress) -> Result<(), DatasetError> {
        let renderer = Renderer::new(RenderOptions {
            missing_glyph: MissingGlyph::Skip,
            ..RenderOptions::default()
        })?;
        let cx = SampleContext {
            limits: &self.config.limits,
            resize: self.config.resize,
            filters: &self.config.filters,
            renderer: &renderer,
            ocr_meta: &self.ocr,
            export_planner: self.config.export_planner,
            first_stage: self.config.first_stage,
        };
        process_work(&self.config, &self.inputs, work, &cx, progress)
    }
}

/// One shard built alone.
#[derive(Debug, Clone)]
pub struct ShardBuild {
    pub stats: Stats,
    /// The shard was complete before: nothing was built.
    pub already_complete: bool,
}

/// Builds (or resumes building) a dataset.
pub fn build(
    config: &BuildConfig,
    progress: &dyn BuildProgress,
) -> Result<BuildReport, DatasetError> {
    let plan = BuildPlan::new(config)?;
    let shards = plan.shards();
    let complete: Vec<bool> = (0..shards).map(|s| plan.is_complete(s)).collect();
    let work: Vec<usize> = (0..plan.inputs())
        .filter(|i| !complete[i / config.shard_size])
        .collect();
    let resumed = complete.iter().filter(|c| **c).count();
    progress.start(work.len() as u64, (plan.inputs() - work.len()) as u64);
    if resumed > 0 {
        tracing::info!("resuming: {resumed} of {shards} shards already complete");
    }
    if !work.is_empty() {
        plan.process(&work, progress)?;
    }
    plan.finish(resumed)
}

/// Merges the complete shards' statistics, errors and planner conversations into the
/// output folder's `stats.json`, `errors.jsonl` and `planner.json`.
fn merge_shards(config: &BuildConfig, shards: usize, inputs: usize) -> Result<Stats, DatasetError> {
    let out = config.output.as_path();
    let mut stats = Stats::default();
    let mut errors = Vec::new();
    let mut planner = Vec::new();
    for s in 0..shards {
        let files = ShardFiles::new(out, s);
        stats.add(&shard::read_stats(&files)?);
        errors
            .extend(std::fs::read(&files.errors).map_err(|e| DatasetError::io(&files.errors, e))?);
        if config.export_planner {
            let text = std::fs::read_to_string(&files.planner)
                .map_err(|e| DatasetError::io(&files.planner, e))?;
            planner.extend(text.lines().map(str::to_string));
        }
    }
    shard::write_atomic(&out.join("errors.jsonl"), &errors)?;
    if config.export_planner {
        // FastChat reads one JSON array of conversations.
        let mut bytes = Vec::new();
        if planner.is_empty() {
            bytes.extend(b"[]\n");
        } else {
            write!(bytes, "[\n{}\n]\n", planner.join(",\n")).expect("writing to memory");
        }
        shard::write_atomic(&out.join("planner.json"), &bytes)?;
    }
    let mut total = serde_json::to_value(&stats).expect("stats serialise");
    total["inputs"] = json!(inputs);
    total["shards"] = json!(shards);
    shard::write_atomic(
        &out.join("stats.json"),
        &serde_json::to_vec_pretty(&total).expect("stats serialise"),
    )?;
    Ok(stats)
}

type Message = Result<(usize, Outcome), DatasetError>;

/// Processes `work` (input indices of incomplete shards, ascending) and writes the shards.
fn process_work(
    config: &BuildConfig,
    inputs: &[Input],
    work: &[usize],
    cx: &SampleContext,
    progress: &dyn BuildProgress,
) -> Result<(), DatasetError> {
    let jobs = match config.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(work.len())
    .max(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<Message>(jobs * 4);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                let mut engine = match OcrEngine::new(config.ocr.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) && !progress.cancelled() {
                    let pos = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = work.get(pos) else { break };
                    let key = key_for(index, config.shard_size);
                    // A panic on one image (a bug, not bad input) is that image's error; the
                    // engine is restarted in case it was left mid-call.
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        sample::process(&inputs[index], &key, &mut engine, cx)
                    }))
                    .unwrap_or_else(|panic| {
                        if let Ok(fresh) = OcrEngine::new(config.ocr.clone()) {
                            engine = fresh;
                        }
                        Outcome::Error {
                            kind: "panic",
                            reason: format!(
                                "internal error: {}",
                                panic
                                    .downcast_ref::<String>()
                                    .map(String::as_str)
                                    .or_else(|| panic.downcast_ref::<&str>().copied())
                                    .unwrap_or("panic")
                            ),
                        }
                    });
                    if tx.send(Ok((pos, outcome))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = collect(config, inputs, work, rx, progress);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        result
    })
}

/// Writes outcomes in work order (so shards are byte-for-byte reproducible), opening and
/// finishing shards as their inputs arrive.
fn collect(
    config: &BuildConfig,
    inputs: &[Input],
    work: &[usize],
    rx: mpsc::Receiver<Message>,
    progress: &dyn BuildProgress,
) -> Result<(), DatasetError> {
    let mut pending: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut next = 0;
    let mut writer: Option<ShardWriter> = None;
    for message in rx {
        if progress.cancelled() {
            return Err(DatasetError::Cancelled);
        }
        let (pos, outcome) = message?;
        pending.insert(pos, outcome);
        while let Some(outcome) = pending.remove(&next) {
            let index = work[next];
            let shard = index / config.shard_size;
            let w = match &mut writer {
                Some(w) if w.shard == shard => w,
                _ => {
                    let start = shard * config.shard_size;
                    let expected = (inputs.len() - start).min(config.shard_size) as u64;
                    writer.insert(ShardWriter::create(
                        &config.output,
                        shard,
                        expected,
                        config.export_planner,
                    )?)
                }
            };
            w.write(
                &key_for(index, config.shard_size),
                &inputs[index].source,
                outcome,
            )?;
            if w.is_full() {
                writer.take().expect("just written").finish()?;
            }
            next += 1;
            progress.advance();
        }
    }
    if next < work.len() && progress.cancelled() {
        return Err(DatasetError::Cancelled);
    }
    if next < work.len() {
        return Err(DatasetError::Config(format!(
            "workers stopped after {next} of {} inputs",
            work.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shard_then_index_within_shard() {
        assert_eq!(key_for(0, 10_000), "000000000");
        assert_eq!(key_for(10_001, 10_000), "000010001");
        assert_eq!(key_for(25, 20), "0000105");
        assert_eq!(key_for(3, 1), "000030");
    }
}

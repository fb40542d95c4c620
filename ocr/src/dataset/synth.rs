//! `letterpress dataset synth`: a synthetic poster corpus in the shard format of
//! `dataset build` (the same [`ShardWriter`], keys, index, stats and resume rule), for training
//! a glyph ControlNet where no real posters are at hand.
//!
//! Each sample: a procedural background (flat, gradient, shapes, stripes or noise texture),
//! 1–3 keywords from a committed word list, a layout from the typographic planner, a sampled
//! font and text colour, the text composited through the renderer's glyph mask (so image and
//! mask agree to the pixel), and a caption that says style, colour and text. Sample `i`
//! depends only on `(seed, i)`, so any subset of shards can be redone bit for bit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use super::rng::Rng;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{GrayImage, ImageEncoder, RgbImage};
use letterpress_layout::{BBox, Layout, Rgb, TypographicPlanner, td2};
use letterpress_render::{MissingGlyph, RenderOptions, Renderer, Rendering};
use serde_json::{Value, json};

use super::run::{BuildProgress, RUN_FILE, check_manifest};
use super::sample::{KeptSample, Outcome};
use super::shard::{self, ShardFiles, ShardWriter, Stats};
use crate::DatasetError;

/// The committed word list (common English poster words, one per line).
const WORDS: &str = include_str!("poster_words.txt");

/// Fonts tried for the text; those not installed are skipped.
const FONTS: [&str; 8] = [
    "DejaVu Sans Bold",
    "DejaVu Sans",
    "DejaVu Serif Bold",
    "DejaVu Serif",
    "DejaVu Sans Mono Bold",
    "Noto Sans Bold",
    "Noto Serif Bold",
    "Noto Sans",
];

/// Named colours for backgrounds and text; the caption uses the names (and glyph
/// initialisation reads them back from prompts).
pub const COLOURS: [(&str, [u8; 3]); 14] = [
    ("red", [200, 40, 40]),
    ("orange", [240, 130, 30]),
    ("yellow", [245, 210, 60]),
    ("green", [50, 150, 70]),
    ("teal", [30, 140, 140]),
    ("blue", [40, 80, 190]),
    ("navy", [20, 30, 80]),
    ("purple", [120, 50, 160]),
    ("pink", [235, 120, 170]),
    ("brown", [120, 80, 40]),
    ("black", [20, 20, 20]),
    ("white", [245, 245, 240]),
    ("grey", [128, 128, 128]),
    ("beige", [225, 205, 170]),
];

/// Background styles; the caption names them.
const STYLES: [&str; 5] = ["minimal", "gradient", "geometric", "striped", "textured"];

/// Settings of a synthetic corpus.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub output: PathBuf,
    /// Samples in all.
    pub n: usize,
    /// Square image side in pixels, 256..=2048. Default 256.
    pub size: u32,
    /// Default 0.
    pub seed: u64,
    /// Samples per shard. Default 10,000.
    pub shard_size: usize,
    /// Worker threads. Default 0: one per core.
    pub jobs: usize,
}

impl SynthConfig {
    pub fn new(output: impl Into<PathBuf>, n: usize) -> Self {
        Self {
            output: output.into(),
            n,
            size: 256,
            seed: 0,
            shard_size: 10_000,
            jobs: 0,
        }
    }
}

/// What a synth run did.
#[derive(Debug, Clone)]
pub struct SynthReport {
    pub shards: usize,
    pub shards_resumed: usize,
    pub stats: Stats,
}

fn luminance(c: [u8; 3]) -> f32 {
    0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
}

fn mix(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    let m = |x: u8, y: u8| (f32::from(x) * (1.0 - t) + f32::from(y) * t).round() as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

/// A procedural background in `style` around colour `base` (with `accent` for the second tone).
fn background(style: &str, side: u32, base: [u8; 3], accent: [u8; 3], rng: &mut Rng) -> RgbImage {
    let mut img = RgbImage::from_pixel(side, side, image::Rgb(base));
    let s = side as f32;
    match style {
        "gradient" => {
            let angle = rng.unit() * std::f32::consts::TAU;
            let (dx, dy) = (angle.cos(), angle.sin());
            for (x, y, p) in img.enumerate_pixels_mut() {
                let t = ((x as f32 / s - 0.5) * dx + (y as f32 / s - 0.5) * dy + 0.7) / 1.4;
                *p = image::Rgb(mix(base, accent, t.clamp(0.0, 1.0)));
            }
        }
        "geometric" => {
            for _ in 0..(3 + rng.below(6)) {
                let (cx, cy) = (rng.unit() * s, rng.unit() * s);
                let r = (0.08 + rng.unit() * 0.3) * s;
                let tone = mix(base, accent, 0.4 + rng.unit() * 0.6);
                let circle = rng.below(2) == 0;
                for (x, y, p) in img.enumerate_pixels_mut() {
                    let (fx, fy) = (x as f32 - cx, y as f32 - cy);
                    let inside = if circle {
                        fx * fx + fy * fy < r * r
                    } else {
                        fx.abs() < r && fy.abs() < r * 0.6
                    };
                    if inside {
                        *p = image::Rgb(tone);
                    }
                }
            }
        }
        "striped" => {
            let period = (0.05 + rng.unit() * 0.15) * s;
            let diagonal = rng.below(2) == 0;
            for (x, y, p) in img.enumerate_pixels_mut() {
                let u = if diagonal { x + y } else { y } as f32;
                if (u / period) as u32 % 2 == 1 {
                    *p = image::Rgb(mix(base, accent, 0.35));
                }
            }
        }
        "textured" => {
            // Value noise on a coarse lattice, bilinearly interpolated: paper- or
            // concrete-like grain without a texture file.
            let cells = 8 + rng.below(24);
            let lattice: Vec<f32> = (0..(cells + 1) * (cells + 1)).map(|_| rng.unit()).collect();
            let at = |i: usize, j: usize| lattice[j * (cells + 1) + i];
            for (x, y, p) in img.enumerate_pixels_mut() {
                let (u, v) = (x as f32 / s * cells as f32, y as f32 / s * cells as f32);
                let (i, j) = (u as usize, v as usize);
                let (fu, fv) = (u - i as f32, v - j as f32);
                let n = at(i, j) * (1.0 - fu) * (1.0 - fv)
                    + at(i + 1, j) * fu * (1.0 - fv)
                    + at(i, j + 1) * (1.0 - fu) * fv
                    + at(i + 1, j + 1) * fu * fv;
                *p = image::Rgb(mix(base, accent, n * 0.5));
            }
        }
        _ => {} // minimal: flat colour
    }
    img
}

/// Keywords: 1–3 phrases of 1–2 words, in upper, title or lower case.
fn keywords(words: &[&str], rng: &mut Rng) -> Vec<String> {
    let n = 1 + rng.below(3);
    (0..n)
        .map(|_| {
            let len = if rng.below(3) == 0 { 2 } else { 1 };
            let phrase: Vec<&str> = (0..len).map(|_| *rng.pick(words)).collect();
            let phrase = phrase.join(" ");
            match rng.below(3) {
                0 => phrase.to_uppercase(),
                1 => phrase
                    .split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect::<String>())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => phrase,
            }
        })
        .collect()
}

/// `a red minimal poster with the words 'SALE' and 'today only'`.
fn caption(colour: &str, style: &str, keywords: &[String]) -> String {
    let quoted: Vec<String> = keywords.iter().map(|k| format!("'{k}'")).collect();
    let words = match quoted.as_slice() {
        [one] => format!("the word {one}"),
        [init @ .., last] => format!("the words {} and {last}", init.join(", ")),
        [] => "no text".into(),
    };
    let article = if colour.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {colour} {style} poster with {words}")
}

fn png(img: &[u8], w: u32, h: u32, colour: image::ExtendedColorType) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub)
        .write_image(img, w, h, colour)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Shared read-only state of the workers.
struct SynthContext<'a> {
    renderer: &'a Renderer,
    fonts: Vec<&'static str>,
    words: Vec<&'static str>,
    config: &'a SynthConfig,
}

/// Text colour: a named colour far in luminance from the background `bg`, so the text stays
/// legible whatever the draw (black or white when none is far enough).
fn text_colour(bg: [u8; 3], rng: &mut Rng) -> (&'static str, [u8; 3]) {
    let candidates: Vec<&(&str, [u8; 3])> = COLOURS
        .iter()
        .filter(|(_, c)| (luminance(*c) - luminance(bg)).abs() > 110.0)
        .collect();
    if candidates.is_empty() {
        if luminance(bg) > 128.0 {
            COLOURS[10]
        } else {
            COLOURS[11]
        }
    } else {
        **rng.pick(&candidates)
    }
}

/// The image and its glyph mask as PNG files.
fn encode_pngs(image: &RgbImage, mask: &GrayImage) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (w, h) = image.dimensions();
    let image = png(image.as_raw(), w, h, image::ExtendedColorType::Rgb8)?;
    let mask = png(
        mask.as_raw(),
        mask.width(),
        mask.height(),
        image::ExtendedColorType::L8,
    )?;
    Ok((image, mask))
}

/// The sample's lines, words and characters with their boxes (pixels and the 128-grid), as
/// the dataset's JSON records them.
fn annotations(
    layout: &Layout,
    rendering: &Rendering,
    side: u32,
) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let grid = |b: &BBox| {
        let g = b.to_grid(side, side);
        [g.l, g.t, g.r, g.b]
    };
    let lines = layout
        .lines
        .iter()
        .map(|l| json!({"text": l.text, "bbox": l.bbox, "bbox_128": grid(&l.bbox)}))
        .collect();
    let words = layout
        .lines
        .iter()
        .flat_map(|l| l.text.split_whitespace().map(|w| json!({"text": w})))
        .collect();
    let chars = rendering
        .char_boxes
        .iter()
        .map(|c| json!({"char": c.ch.to_string(), "bbox": c.bbox, "bbox_128": grid(&c.bbox), "line": c.line}))
        .collect();
    (lines, words, chars)
}

/// Sample `index` of the corpus.
fn synthesize(cx: &SynthContext, index: usize, key: &str) -> Outcome {
    let mut rng = Rng::new(cx.config.seed, index as u64);
    let side = cx.config.size;
    let style = *rng.pick(&STYLES);
    let (bg_name, bg) = *rng.pick(&COLOURS);
    let (_, accent) = *rng.pick(&COLOURS);
    let (text_name, text) = text_colour(bg, &mut rng);
    let font = *rng.pick(&cx.fonts);
    let keywords = keywords(&cx.words, &mut rng);
    let plan = match TypographicPlanner::new(cx.renderer).with_font(font).plan(
        side,
        side,
        &keywords,
        rng.next(),
    ) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Error {
                kind: "layout",
                reason: e.to_string(),
            };
        }
    };
    let mut layout: Layout = plan.layout;
    for line in &mut layout.lines {
        line.color = Some(Rgb(text));
    }
    let rendering: Rendering = match cx.renderer.render(&layout) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Error {
                kind: "mask",
                reason: e.to_string(),
            };
        }
    };
    let mut image = background(style, side, bg, accent, &mut rng);
    // The glyph mask is the text's coverage: composite the text colour through it.
    for (p, m) in image.pixels_mut().zip(rendering.glyph_mask.pixels()) {
        let a = f32::from(m.0[0]) / 255.0;
        if a > 0.0 {
            p.0 = mix(p.0, text, a);
        }
    }
    let (image_bytes, mask_png) = match encode_pngs(&image, &rendering.glyph_mask) {
        Ok(x) => x,
        Err(e) => {
            return Outcome::Error {
                kind: "encode",
                reason: e,
            };
        }
    };
    let caption = caption(bg_name, style, &keywords);
    let (lines, words, chars) = annotations(&layout, &rendering, side);
    let json = json!({
        "key": key,
        "source": format!("synth:{}:{index}", cx.config.seed),
        "caption": caption,
        "width": side,
        "height": side,
        "format": "png",
        "words": words,
        "lines": lines,
        "chars": chars,
        "layout_td2": td2::serialize(&layout),
        "mask_size": [side, side],
        "synth": {
            "seed": cx.config.seed,
            "index": index,
            "style": style,
            "background": bg_name,
            "text_color": text_name,
            "font": font,
            "template": plan.template,
            "keywords": keywords,
        },
        "letterpress_version": env!("CARGO_PKG_VERSION"),
    });
    Outcome::Kept(Box::new(KeptSample {
        image_bytes,
        image_ext: "png",
        json,
        mask_png,
        planner: None,
    }))
}

fn key_for(index: usize, shard_size: usize) -> String {
    let digits = (shard_size.saturating_sub(1)).to_string().len();
    format!("{:05}{:0digits$}", index / shard_size, index % shard_size)
}

/// Writes (or resumes writing) a synthetic corpus.
pub fn synth(
    config: &SynthConfig,
    progress: &dyn BuildProgress,
) -> Result<SynthReport, DatasetError> {
    if config.shard_size == 0 || config.n == 0 {
        return Err(DatasetError::Config(format!(
            "sample count {} and shard size {}: both must be at least 1",
            config.n, config.shard_size
        )));
    }
    if !(256..=2048).contains(&config.size) {
        return Err(DatasetError::Config(format!(
            "image size {} is outside 256..=2048 (the typographic planner's canvas range)",
            config.size
        )));
    }
    let out = config.output.as_path();
    std::fs::create_dir_all(out).map_err(|e| DatasetError::io(out, e))?;
    let manifest = json!({
        "letterpress_version": env!("CARGO_PKG_VERSION"),
        "input": "synth",
        "inputs": config.n,
        "seed": config.seed,
        "size": config.size,
        "shard_size": config.shard_size,
    });
    check_manifest(&out.join(RUN_FILE), &manifest)?;
    let renderer = Renderer::new(RenderOptions {
        missing_glyph: MissingGlyph::Skip,
        ..RenderOptions::default()
    })?;
    let fonts: Vec<&'static str> = FONTS
        .iter()
        .copied()
        .filter(|f| renderer.font_file(Some(f)).is_ok())
        .collect();
    if fonts.is_empty() {
        return Err(DatasetError::Config(
            "none of the synth fonts is installed (scripts/setup installs fonts-dejavu-core)"
                .into(),
        ));
    }
    let cx = SynthContext {
        renderer: &renderer,
        fonts,
        words: WORDS.lines().filter(|w| !w.is_empty()).collect(),
        config,
    };
    let shards = config.n.div_ceil(config.shard_size);
    let complete: Vec<bool> = (0..shards)
        .map(|s| ShardFiles::new(out, s).is_complete())
        .collect();
    let work: Vec<usize> = (0..config.n)
        .filter(|i| !complete[i / config.shard_size])
        .collect();
    let resumed = complete.iter().filter(|c| **c).count();
    progress.start(work.len() as u64, (config.n - work.len()) as u64);
    if !work.is_empty() {
        run_workers(&cx, &work, progress)?;
    }
    let mut stats = Stats::default();
    for s in 0..shards {
        stats.add(&shard::read_stats(&ShardFiles::new(out, s))?);
    }
    let mut total = serde_json::to_value(&stats).expect("stats serialise");
    total["inputs"] = json!(config.n);
    total["shards"] = json!(shards);
    shard::write_atomic(
        &out.join("stats.json"),
        &serde_json::to_vec_pretty(&total).expect("stats serialise"),
    )?;
    Ok(SynthReport {
        shards,
        shards_resumed: resumed,
        stats,
    })
}

/// Synthesises `work` on worker threads and writes the outcomes in order, so shards are
/// byte-for-byte reproducible.
fn run_workers(
    cx: &SynthContext,
    work: &[usize],
    progress: &dyn BuildProgress,
) -> Result<(), DatasetError> {
    let config = cx.config;
    let jobs = match config.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, work.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<(usize, Outcome)>(jobs * 4);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let pos = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = work.get(pos) else { break };
                    let outcome = synthesize(cx, index, &key_for(index, config.shard_size));
                    if tx.send((pos, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = (|| {
            let mut pending: BTreeMap<usize, Outcome> = BTreeMap::new();
            let mut done = 0;
            let mut writer: Option<ShardWriter> = None;
            for (pos, outcome) in rx {
                pending.insert(pos, outcome);
                while let Some(outcome) = pending.remove(&done) {
                    let index = work[done];
                    let shard = index / config.shard_size;
                    let w = match &mut writer {
                        Some(w) if w.shard == shard => w,
                        _ => {
                            let start = shard * config.shard_size;
                            let expected = (config.n - start).min(config.shard_size) as u64;
                            writer.insert(ShardWriter::create(
                                &config.output,
                                shard,
                                expected,
                                false,
                            )?)
                        }
                    };
                    let source = format!("synth:{}:{index}", config.seed);
                    w.write(&key_for(index, config.shard_size), &source, outcome)?;
                    if w.is_full() {
                        writer.take().expect("just written").finish()?;
                    }
                    done += 1;
                    progress.advance();
                }
            }
            Ok(())
        })();
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_name_colour_style_and_every_keyword() {
        let k = vec!["SALE".to_string(), "today only".to_string()];
        assert_eq!(
            caption("red", "minimal", &k),
            "a red minimal poster with the words 'SALE' and 'today only'"
        );
        assert_eq!(
            caption("orange", "striped", &k[..1]),
            "an orange striped poster with the word 'SALE'"
        );
    }

    #[test]
    fn the_word_list_is_usable() {
        let words: Vec<&str> = WORDS.lines().collect();
        assert!(words.len() >= 300);
        assert!(words.iter().all(|w| !w.is_empty() && w.len() <= 12));
    }

    #[test]
    fn draws_depend_only_on_seed_and_index() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, 3).next()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(7, 3).next(), Rng::new(7, 4).next());
    }
}

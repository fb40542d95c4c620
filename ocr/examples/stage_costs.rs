//! What the first stage costs and saves on photographs without text: per kind of procedural
//! photograph, milliseconds of JPEG decoding, of layout analysis alone, and of a full
//! recognition, and how many photographs layout analysis lets through to recognition with the
//! default filters (docs/architecture.md, "OCR first stage").
//!
//! `OMP_THREAD_LIMIT=1 cargo run --release -p letterpress-ocr --example stage_costs -- 120 21`
//! (photographs, seed)

use std::time::Instant;

use image::ImageEncoder;
use letterpress_ocr::dataset::{PHOTO_KINDS, textless_photo};
use letterpress_ocr::{OcrConfig, OcrEngine};

const SIZES: [(u32, u32); 5] = [(480, 360), (640, 480), (360, 640), (800, 600), (1024, 768)];
/// The default `text_area` filter.
const MIN_TEXT_AREA: f32 = 0.10;

/// Seconds spent per kind: decode, layout analysis, full recognition; photographs; passed.
#[derive(Default, Clone, Copy)]
struct Costs {
    decode: f64,
    layout: f64,
    recognize: f64,
    n: usize,
    passed: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().unwrap_or_else(|| "120".into()).parse()?;
    let seed: u64 = args.next().unwrap_or_else(|| "21".into()).parse()?;
    let mut engine = OcrEngine::new(OcrConfig::default())?;
    let mut kinds = [Costs::default(); PHOTO_KINDS.len()];
    for i in 0..n {
        let (w, h) = SIZES[(i / 6) as usize % SIZES.len()];
        let photo = textless_photo(seed, i, w, h);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).write_image(
            photo.as_raw(),
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )?;
        let clock = Instant::now();
        let gray = image::load_from_memory(&jpeg)?.to_luma8();
        let decode = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let regions = engine.analyse_layout(&gray)?;
        let layout = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        engine.recognize(&gray)?;
        let recognize = clock.elapsed().as_secs_f64();
        let c = &mut kinds[i as usize % PHOTO_KINDS.len()];
        c.decode += decode;
        c.layout += layout;
        c.recognize += recognize;
        c.n += 1;
        c.passed += usize::from(!regions.is_empty() && regions.text_area_bound() >= MIN_TEXT_AREA);
    }
    println!("kind            n  passed  decode ms  layout ms  recognize ms (means)");
    let mut all = Costs::default();
    for (name, c) in PHOTO_KINDS.iter().zip(kinds) {
        let ms = |s: f64| s * 1e3 / c.n.max(1) as f64;
        println!(
            "{name:<14} {:>3} {:>7} {:>10.1} {:>10.1} {:>13.1}",
            c.n,
            c.passed,
            ms(c.decode),
            ms(c.layout),
            ms(c.recognize)
        );
        all.decode += c.decode;
        all.layout += c.layout;
        all.recognize += c.recognize;
        all.n += c.n;
        all.passed += c.passed;
    }
    let ms = |s: f64| s * 1e3 / all.n.max(1) as f64;
    println!(
        "{:<14} {:>3} {:>7} {:>10.1} {:>10.1} {:>13.1}",
        "all",
        all.n,
        all.passed,
        ms(all.decode),
        ms(all.layout),
        ms(all.recognize)
    );
    Ok(())
}

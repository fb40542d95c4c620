//! Measures how far recognised word boxes outgrow the line boxes of the layout they were
//! recognised on, over procedural photographs: the evidence behind `LINE_AREA_SLACK`
//! (docs/architecture.md, "OCR first stage").
//!
//! `cargo run --release -p letterpress-ocr --example area_bound -- 300 11` (photographs, seed)

use letterpress_ocr::dataset::textless_photo;
use letterpress_ocr::{LINE_AREA_SLACK, OcrConfig, OcrEngine};

const SIZES: [(u32, u32); 5] = [(480, 360), (640, 480), (360, 640), (800, 600), (1024, 768)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().unwrap_or_else(|| "120".into()).parse()?;
    let seed: u64 = args.next().unwrap_or_else(|| "11".into()).parse()?;
    let mut engine = OcrEngine::new(OcrConfig::default())?;
    let (mut worst, mut over) = (0.0f32, 0);
    for i in 0..n {
        let (w, h) = SIZES[(i / 6) as usize % SIZES.len()];
        let photo = image::DynamicImage::ImageRgb8(textless_photo(seed, i, w, h)).to_luma8();
        let regions = engine.analyse_layout(&photo)?;
        let page = engine.recognize_analysed()?;
        let words: f32 = page
            .words
            .iter()
            .map(|x| x.bbox.width() as f32 * x.bbox.height() as f32)
            .sum::<f32>()
            / (w * h) as f32;
        let ratio = words.min(1.0) / regions.line_area().max(f32::MIN_POSITIVE);
        if words > 0.0 && ratio > worst {
            worst = ratio;
        }
        if words.min(1.0) > regions.text_area_bound() {
            over += 1;
        }
    }
    println!(
        "{n} photographs: word area / line area at most {worst:.3}; over the bound (slack {LINE_AREA_SLACK}): {over}"
    );
    Ok(())
}

//! Recognises each text line of the layout cropped with a margin and compares the words with a
//! whole-page recognition: the evidence for recognising survivors whole (docs/architecture.md,
//! "OCR first stage").
//!
//! `cargo run --release -p letterpress-ocr --example crop_survivors -- IMAGE...`

use std::time::Instant;

use letterpress_ocr::{OcrConfig, OcrEngine, OcrWord};

const MARGIN: i32 = 16;

/// Words as comparable tuples (text, box, confidence), sorted.
fn key(words: &[OcrWord]) -> Vec<(String, [i32; 4], f32)> {
    let mut k: Vec<_> = words
        .iter()
        .map(|w| {
            let b = w.bbox;
            (
                w.text.clone(),
                [b.left, b.top, b.right, b.bottom],
                w.confidence,
            )
        })
        .collect();
    k.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    k
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut whole = OcrEngine::new(OcrConfig::default())?;
    let mut crops = OcrEngine::new(OcrConfig::default())?;
    let (mut same, mut differ) = (0, 0);
    for path in std::env::args().skip(1) {
        let image = image::open(&path)?.to_luma8();
        let (w, h) = (image.width() as i32, image.height() as i32);
        let start = Instant::now();
        let page = whole.recognize(&image)?;
        let whole_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut words = Vec::new();
        for b in crops.analyse_layout(&image)?.lines {
            let (x0, y0) = ((b.left - MARGIN).max(0), (b.top - MARGIN).max(0));
            let (x1, y1) = ((b.right + MARGIN).min(w), (b.bottom + MARGIN).min(h));
            let crop = image::imageops::crop_imm(
                &image,
                x0 as u32,
                y0 as u32,
                (x1 - x0) as u32,
                (y1 - y0) as u32,
            )
            .to_image();
            for mut word in crops.recognize(&crop)?.words {
                let bb = word.bbox;
                word.bbox = letterpress_layout::BBox::new(
                    bb.left + x0,
                    bb.top + y0,
                    bb.right + x0,
                    bb.bottom + y0,
                );
                words.push(word);
            }
        }
        let crops_s = start.elapsed().as_secs_f64();
        if key(&page.words) == key(&words) {
            same += 1;
        } else {
            differ += 1;
            println!("{path}: differs (whole {whole_s:.3} s, crops {crops_s:.3} s)");
        }
    }
    println!("identical {same}, different {differ}");
    Ok(())
}

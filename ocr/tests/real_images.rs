//! Tesseract's word recall on real images that no one here made (`tests/real/`, sources and
//! licences in its README), against words transcribed by hand (`tests/real/expected.jsonl`).

use std::path::Path;

use letterpress_ocr::{OcrConfig, OcrEngine, score_image, summarize};
use serde_json::Value;

fn recall_with(psm: u32) -> f64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real");
    let expected = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap();
    let mut engine = OcrEngine::new(OcrConfig {
        psm,
        ..OcrConfig::default()
    })
    .unwrap();
    let mut scores = Vec::new();
    for line in expected.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let name = v["image"].as_str().unwrap();
        let image = image::open(dir.join(name)).unwrap().to_luma8();
        let page = engine.recognize(&image).unwrap();
        let predicted: Vec<String> = page.words.iter().map(|w| w.text.clone()).collect();
        let score = score_image(&[v["text"].as_str().unwrap().to_string()], &predicted);
        eprintln!(
            "psm {psm} {name}: recall {:.3} ({} of {} words)",
            score.recall,
            score.matched,
            score.expected.len()
        );
        scores.push(score);
    }
    let summary = summarize(&scores);
    println!(
        "real images, psm {psm}: {} images, mean recall {:.4}, word_accuracy (words found / words) {:.4}",
        summary.images, summary.recall, summary.word_accuracy
    );
    summary.word_accuracy
}

#[test]
fn tesseract_reads_real_images() {
    // psm 11 (sparse text) is what the dataset builder uses; psm 3 (automatic page
    // segmentation) is tesseract's default, for comparison.
    let sparse = recall_with(11);
    let auto = recall_with(3);
    // A broken engine, wrong colour handling or a lost language file reads (almost) nothing.
    assert!(sparse >= 0.75, "word recall {sparse:.3} with psm 11");
    assert!(auto >= 0.75, "word recall {auto:.3} with psm 3");
}

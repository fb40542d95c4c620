//! Round trip: 100 layouts of common English words rendered at 512×512 by letterpress-render,
//! read back by tesseract in-process; word accuracy (expected words found) must be ≥ 95 %.

use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_ocr::{OcrConfig, OcrEngine, score_image, summarize, tesseract_version};
use letterpress_render::Renderer;

const WORDS: &[&str] = &[
    "time", "people", "year", "day", "thing", "world", "life", "hand", "part", "child", "place",
    "week", "case", "point", "number", "group", "problem", "fact", "good", "new", "first", "last",
    "long", "great", "little", "other", "old", "right", "big", "high", "small", "large", "next",
    "early", "young", "public", "music", "coffee", "summer", "winter", "market", "garden", "house",
    "night", "open", "sale", "free", "fresh", "book", "film", "party", "city", "water", "light",
    "green", "black", "white", "happy", "travel", "street",
];

/// Deterministic layouts: 2–4 stacked lines of 1–3 words (xorshift, no external generator).
fn layouts() -> Vec<(Layout, Vec<String>)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m) as i32
    };
    (0..100)
        .map(|_| {
            let n = 2 + next(3);
            let slot = 472 / n;
            let mut words = Vec::new();
            let lines = (0..n)
                .map(|i| {
                    let text: Vec<&str> = (0..1 + next(3))
                        .map(|_| WORDS[next(WORDS.len() as u64) as usize])
                        .collect();
                    words.extend(text.iter().map(|w| w.to_string()));
                    let inset = next(50);
                    TextLine::new(
                        text.join(" "),
                        BBox::new(
                            20 + inset,
                            20 + i * slot + 6,
                            492 - inset,
                            20 + (i + 1) * slot - 6,
                        ),
                    )
                })
                .collect();
            (Layout::new(512, 512, lines), words)
        })
        .collect()
}

#[test]
fn rendered_words_read_back() {
    let renderer = Renderer::with_default_font().unwrap();
    let mut engine = OcrEngine::new(OcrConfig::default()).unwrap();
    let mut scores = Vec::new();
    let (mut lines_expected, mut lines_merged) = (0, 0);
    for (i, (layout, words)) in layouts().iter().enumerate() {
        let rendering = renderer.render(layout).unwrap();
        let page = engine.recognize(&rendering.inverse()).unwrap();
        let predicted: Vec<String> = page.words.iter().map(|w| w.text.clone()).collect();
        let score = score_image(words, &predicted);
        if score.recall < 1.0 {
            eprintln!(
                "layout {i}: expected {:?}, read {:?}",
                score.expected, score.predicted
            );
        }
        // Each rendered line should come back as one merged OCR line.
        lines_expected += layout.lines.len();
        lines_merged += layout
            .lines
            .iter()
            .filter(|l| page.lines.iter().any(|o| o.text.to_lowercase() == l.text))
            .count();
        assert!(!page.chars.is_empty(), "character boxes from hOCR");
        scores.push(score);
    }
    let summary = summarize(&scores);
    println!(
        "tesseract {} in-process, 100 rendered layouts: word accuracy {:.4}, precision {:.4}, recall {:.4}, F {:.4}, accuracy {:.2}, NED {:.4}; lines merged whole {lines_merged}/{lines_expected}",
        tesseract_version(),
        summary.word_accuracy,
        summary.precision,
        summary.recall,
        summary.f,
        summary.accuracy,
        summary.normalized_edit_distance
    );
    assert!(summary.word_accuracy >= 0.95, "{summary:?}");
    assert!(
        lines_merged as f64 >= 0.9 * lines_expected as f64,
        "{lines_merged}/{lines_expected} lines merged whole"
    );
}

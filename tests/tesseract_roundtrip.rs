//! Legibility round trip through the real `tesseract` program (Debian `tesseract-ocr`):
//! 20 layouts of common English words at 512×512, rendered black on white, must be read back
//! with at least 95 % of their words (case-insensitive).

use std::collections::HashMap;
use std::process::Command;

use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_render::Renderer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORDS: &[&str] = &[
    "time", "people", "year", "way", "day", "thing", "world", "life", "hand", "part", "child",
    "place", "week", "case", "point", "number", "group", "problem", "fact", "good", "new", "first",
    "last", "long", "great", "little", "own", "other", "old", "right", "big", "high", "small",
    "large", "next", "early", "young", "public", "bad", "able", "music", "coffee", "summer",
    "winter", "market", "garden", "house", "night", "open", "sale", "free", "fresh", "book",
    "film", "party", "city", "water", "light", "green", "black", "white", "happy",
];

/// Three or four stacked lines of one to three words, boxes sized to their word count.
fn layouts() -> Vec<(Layout, Vec<String>)> {
    let mut rng = StdRng::seed_from_u64(20261130);
    (0..20)
        .map(|_| {
            let n_lines: i32 = rng.random_range(3..=4);
            let slot = 472 / n_lines;
            let mut lines = Vec::new();
            let mut words = Vec::new();
            for i in 0..n_lines {
                let count = rng.random_range(1..=3);
                let text: Vec<&str> = (0..count)
                    .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                    .collect();
                words.extend(text.iter().map(|w| w.to_string()));
                let top = 20 + i * slot;
                let inset = rng.random_range(0..60);
                let bbox = BBox::new(20 + inset, top + 8, 492 - inset, top + slot - 8);
                lines.push(TextLine::new(text.join(" "), bbox));
            }
            (Layout::new(512, 512, lines), words)
        })
        .collect()
}

fn ocr_words(png: &std::path::Path) -> Vec<String> {
    let out = Command::new("tesseract")
        .arg(png)
        .arg("stdout")
        .args(["--psm", "11", "-l", "eng"])
        .output()
        .expect("the tesseract program (scripts/setup installs tesseract-ocr)");
    assert!(
        out.status.success(),
        "tesseract failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn tesseract_reads_back_rendered_words() {
    let renderer = Renderer::with_default_font().unwrap();
    let dir = std::env::temp_dir().join(format!("letterpress-ocr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut expected, mut found) = (0usize, 0usize);
    for (i, (layout, words)) in layouts().iter().enumerate() {
        let png = dir.join(format!("layout-{i:02}.png"));
        renderer
            .render(layout)
            .unwrap()
            .inverse()
            .save(&png)
            .unwrap();
        // Multiset match: a word expected twice must be read twice.
        let mut read: HashMap<String, usize> = HashMap::new();
        for w in ocr_words(&png) {
            *read.entry(w).or_default() += 1;
        }
        for w in words {
            expected += 1;
            if let Some(n) = read.get_mut(w).filter(|n| **n > 0) {
                *n -= 1;
                found += 1;
            } else {
                eprintln!("layout {i}: tesseract missed {w:?}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let accuracy = found as f64 / expected as f64;
    println!(
        "tesseract round trip: {found}/{expected} words read back ({:.1} %)",
        accuracy * 100.0
    );
    assert!(accuracy >= 0.95, "only {found}/{expected} words read back");
}

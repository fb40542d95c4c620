//! Fuzzes TextDiffuser-2 answer parsing: whatever an LLM sends, `parse` must not panic and
//! must only return lines with text and a non-empty box on the 0..=128 grid, which convert to
//! a layout inside any canvas.
#![no_main]

use letterpress_layout::{GRID_SIZE, td2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line, when short, doubles as a keyword list so both parser modes run.
    let keywords: Vec<String> = text
        .lines()
        .next()
        .filter(|l| l.len() < 64)
        .map(|l| l.split('/').map(str::to_string).collect())
        .unwrap_or_default();
    for keywords in [&[][..], &keywords[..]] {
        let parsed = td2::parse(&text, keywords);
        for line in &parsed.lines {
            let g = line.grid;
            assert!(!line.text.is_empty());
            assert!(g.l < g.r && g.t < g.b && g.r <= GRID_SIZE && g.b <= GRID_SIZE);
            assert!(keywords.is_empty() || keywords.contains(&line.text));
        }
        let layout = parsed.to_layout(517, 263);
        for line in &layout.lines {
            assert!(line.bbox.left >= 0 && line.bbox.right <= 517 && line.bbox.bottom <= 263);
        }
        let _ = parsed.missing_keywords(keywords);
    }
});

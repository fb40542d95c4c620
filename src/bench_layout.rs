//! `letterpress bench layout`: layouts planned per second by the typographic planner, on one
//! thread.

use std::time::Instant;

use anyhow::{Result, bail};
use letterpress_render::Renderer;

/// Keyword sets for the layout benchmark: one to five poster phrases of one to four words.
fn bench_keyword_sets(count: usize) -> Vec<(u32, u32, Vec<String>)> {
    const WORDS: [&str; 24] = [
        "summer", "sale", "grand", "opening", "jazz", "night", "coffee", "house", "fresh",
        "market", "today", "only", "free", "entry", "live", "music", "book", "fair", "open",
        "studio", "winter", "festival", "tickets", "weekend",
    ];
    const SIZES: [(u32, u32); 5] = [
        (512, 512),
        (768, 512),
        (512, 768),
        (1024, 1024),
        (1024, 256),
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    };
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let (w, h) = SIZES[next(SIZES.len())];
        let mut keywords = Vec::new();
        for _ in 0..1 + next(5) {
            let words: Vec<&str> = (0..1 + next(4)).map(|_| WORDS[next(WORDS.len())]).collect();
            keywords.push(words.join(" "));
        }
        sets.push((w, h, letterpress_layout::normalize_keywords(keywords)));
    }
    sets
}

pub fn run(n: usize) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let renderer = Renderer::with_default_font()?;
    let planner = letterpress_layout::TypographicPlanner::new(&renderer);
    let sets = bench_keyword_sets(256);
    // Warm-up: glyph metrics for every word are cached, as in a running service.
    for (i, (w, h, k)) in sets.iter().enumerate() {
        planner.plan(*w, *h, k, i as u64)?;
    }
    let start = Instant::now();
    for i in 0..n {
        let (w, h, k) = &sets[i % sets.len()];
        std::hint::black_box(planner.plan(*w, *h, k, i as u64)?);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("typographic planner: {n} layouts of 1-5 keywords in {secs:.3} s on one thread");
    println!("layouts_per_s: {:.0}", n as f64 / secs);
    Ok(())
}

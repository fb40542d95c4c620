//! The typographic planner over 1,000 random keyword sets and canvases: every box inside the
//! canvas, none overlapping, every keyword present exactly once, and the text, rendered by
//! the real renderer, fits its box at the planned size.

use letterpress_layout::{TypographicPlanner, td2};
use letterpress_render::Renderer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORDS: &[&str] = &[
    "sale",
    "Grand",
    "OPENING",
    "jazz",
    "night",
    "coffee",
    "50%",
    "off!",
    "Main",
    "St.",
    "12",
    "winter",
    "market",
    "free",
    "entry",
    "live",
    "music",
    "the",
    "a",
    "supercalifragilistic",
    "Ünïcödé",
    "café",
    "naïve",
    "rock'n'roll",
    "A+B",
    "@home",
    "#1",
    "x",
];
const CJK: &[&str] = &[
    "夏日音乐节",
    "新年快乐",
    "咖啡",
    "東京",
    "大売り出し中です",
    "한국어",
    "中",
];

fn random_keyword(rng: &mut StdRng) -> String {
    if rng.random_bool(0.15) {
        return CJK[rng.random_range(0..CJK.len())].to_string();
    }
    let n = if rng.random_bool(0.1) {
        rng.random_range(5..=12)
    } else {
        rng.random_range(1..=4)
    };
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn random_canvas(rng: &mut StdRng) -> (u32, u32) {
    loop {
        let w = rng.random_range(256..=2048);
        let h = rng.random_range(256..=2048);
        if w.max(h) <= 4 * w.min(h) {
            return (w, h);
        }
    }
}

/// Whitespace-free form, so a keyword broken over lines still matches itself.
fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn thousand_random_plans_are_valid() {
    let renderer = Renderer::with_default_font().unwrap();
    let planner = TypographicPlanner::new(&renderer);
    let mut rng = StdRng::seed_from_u64(1000);
    let mut templates = std::collections::HashMap::new();
    let mut small = 0;
    for case in 0..1000 {
        let (w, h) = random_canvas(&mut rng);
        let mut keywords: Vec<String> = Vec::new();
        for _ in 0..rng.random_range(1..=8) {
            let k = random_keyword(&mut rng);
            if !keywords.iter().any(|e| squash(e) == squash(&k)) {
                keywords.push(k);
            }
        }
        let seed = rng.random();
        let plan = planner
            .plan(w, h, &keywords, seed)
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        let layout = &plan.layout;
        *templates
            .entry(format!("{:?}", plan.template.unwrap()))
            .or_insert(0) += 1;
        small += plan.warnings.len();
        let ctx = || {
            format!(
                "case {case}: {w}x{h} seed {seed} {keywords:?}\n{}",
                td2::serialize(layout)
            )
        };

        assert_eq!(layout.lines.len(), keywords.len(), "{}", ctx());
        for (k, line) in keywords.iter().zip(&layout.lines) {
            let copies = layout
                .lines
                .iter()
                .filter(|l| squash(&l.text) == squash(k))
                .count();
            assert_eq!(copies, 1, "keyword {k:?} once; {}", ctx());
            assert_eq!(squash(&line.text), squash(k), "{}", ctx());
            let b = line.bbox;
            assert!(
                !b.is_empty()
                    && b.left >= 0
                    && b.top >= 0
                    && b.right <= w as i32
                    && b.bottom <= h as i32,
                "{b:?} inside; {}",
                ctx()
            );
        }
        for (i, a) in layout.lines.iter().enumerate() {
            for b in &layout.lines[i + 1..] {
                assert!(
                    !a.bbox.overlaps(&b.bbox),
                    "{:?} overlaps {:?}; {}",
                    a.bbox,
                    b.bbox,
                    ctx()
                );
            }
        }
        // Rendered at the planned size, the ink fills each box up to the 1-px padding (and
        // rounding), so the box was sized from the real metrics, not stretched or squeezed.
        let rendering = renderer
            .render(layout)
            .unwrap_or_else(|e| panic!("{e}; {}", ctx()));
        assert!(
            rendering.warnings.is_empty(),
            "{:?}; {}",
            rendering.warnings,
            ctx()
        );
        for ((line, drawn), planned) in layout.lines.iter().zip(&rendering.lines).zip(&plan.font_px)
        {
            let ink = drawn
                .ink
                .unwrap_or_else(|| panic!("{:?} drew nothing; {}", line.text, ctx()));
            assert!(line.bbox.contains(&ink), "{}", ctx());
            let (slack_w, slack_h) = (
                line.bbox.width() - ink.width(),
                line.bbox.height() - ink.height(),
            );
            assert!(
                slack_w.max(slack_h) <= 5,
                "{:?}: box {:?} ink {ink:?}; {}",
                line.text,
                line.bbox,
                ctx()
            );
            let px = drawn.font_px.unwrap();
            assert!(
                px >= planned * 0.97 - 0.25,
                "{:?} rendered at {px} px, planned {planned}; {}",
                line.text,
                ctx()
            );
        }
    }
    println!("1000 plans valid; templates used: {templates:?}; small-text warnings: {small}");
    assert!(
        templates.len() >= 4,
        "several templates chosen by seed: {templates:?}"
    );
}

#[test]
fn same_seed_same_layout() {
    let renderer = Renderer::with_default_font().unwrap();
    let planner = TypographicPlanner::new(&renderer);
    let keywords = vec!["Grand Opening".to_string(), "free coffee".to_string()];
    let a = planner.plan(512, 768, &keywords, 42).unwrap();
    let b = planner.plan(512, 768, &keywords, 42).unwrap();
    assert_eq!(a.layout, b.layout);
    let differs = (0..20).any(|s| planner.plan(512, 768, &keywords, s).unwrap().layout != a.layout);
    assert!(differs, "seeds choose among templates");
}

#[test]
fn headline_is_the_largest_line() {
    let renderer = Renderer::with_default_font().unwrap();
    let planner = TypographicPlanner::new(&renderer);
    let keywords: Vec<String> = ["SALE", "today only", "Main Street 12"]
        .map(String::from)
        .to_vec();
    for seed in 0..20 {
        let plan = planner.plan(512, 512, &keywords, seed).unwrap();
        let r = renderer.render(&plan.layout).unwrap();
        let px: Vec<f32> = r.lines.iter().map(|l| l.font_px.unwrap()).collect();
        assert!(px[0] > px[1] && px[0] > px[2], "seed {seed}: sizes {px:?}");
    }
}

#[test]
fn limits_are_errors_and_no_keywords_is_empty() {
    let renderer = Renderer::with_default_font().unwrap();
    let planner = TypographicPlanner::new(&renderer);
    let nine: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
    assert!(
        planner
            .plan(512, 512, &nine, 0)
            .unwrap_err()
            .to_string()
            .contains("at most 8")
    );
    for (w, h) in [(255, 512), (512, 2049), (256, 1100), (2048, 500)] {
        let err = planner.plan(w, h, &nine[..1], 0).unwrap_err().to_string();
        assert!(err.contains("256..=2048") && err.contains("1:4"), "{err}");
    }
    let long = "x".repeat(201);
    assert!(
        planner
            .plan(512, 512, &[long], 0)
            .unwrap_err()
            .to_string()
            .contains("at most 200")
    );
    let empty = planner.plan(512, 512, &[], 0).unwrap();
    assert!(empty.layout.lines.is_empty() && !empty.warnings.is_empty());
}

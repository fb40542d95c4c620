//! Helpers the benchmarks share: the statistics they report, the peak RSS of this process, the
//! Python of the references and the poster layouts several of them draw. No other bench module
//! is imported here, so every benchmark depends on this one and on nothing else of its kind.

use std::path::PathBuf;

use anyhow::{Context, Result};
use letterpress_layout::{BBox, Layout, TextLine};

/// The median (the mean of the middle two for an even count).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in MB.
pub(crate) fn peak_rss_mb() -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("parsing VmHWM")?;
    Ok(kb / 1024.0)
}

/// The Python of the references: .venv/bin/python when there is one, else python3.
pub(crate) fn default_python() -> PathBuf {
    let venv = PathBuf::from(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Sixteen 512×512 poster layouts of three lines and about 40 characters: a headline and two
/// smaller lines, the shape of a TextDiffuser-2 layout.
pub(crate) fn bench_layouts() -> Vec<Layout> {
    const HEADLINES: [&str; 8] = [
        "Summer Sale",
        "Grand Opening",
        "Jazz Night",
        "Coffee House",
        "Winter Market",
        "Book Fair",
        "Open Studio",
        "Film Club",
    ];
    const SUBLINES: [&str; 8] = [
        "fresh deals every day",
        "live music and dancing",
        "handmade gifts for all",
        "doors open at seven",
        "free entry for students",
        "join us this weekend",
        "the best of the season",
        "tickets at the door",
    ];
    const FOOTERS: [&str; 4] = ["June 21", "Main Street 12", "since 1998", "all welcome"];
    (0..16)
        .map(|i| {
            let shift = (i as i32 % 4) * 12;
            Layout::new(
                512,
                512,
                vec![
                    TextLine::new(
                        HEADLINES[i % 8],
                        BBox::new(40 + shift, 48, 472 - shift, 148),
                    ),
                    TextLine::new(
                        SUBLINES[(i * 3) % 8],
                        BBox::new(64, 200 + shift, 448, 248 + shift),
                    ),
                    TextLine::new(FOOTERS[i % 4], BBox::new(136, 380, 376, 420)),
                ],
            )
        })
        .collect()
}

//! The repair loop: lines the certificate finds wrong are repainted in place (region
//! inpainting, with the glyph control), each round with a new seed, and each line keeps its
//! best read. Only the repaired lines' regions are copied from a round's painting onto the
//! first image, so every other pixel stays the first image's exactly.

use image::{GrayImage, Luma, RgbImage};
use letterpress_layout::Layout;

use crate::PosterError;
use crate::certificate::{Certificate, LineCheck, read_box};

/// The most repair rounds a request may ask for: each costs about one more generation.
pub const MAX_REPAIR_ROUNDS: usize = 5;

/// The seed of repair round `round` (1-based) of the image made with `seed`: far from the
/// `seed + i` of the request's other images.
pub fn repair_seed(seed: u64, round: usize) -> u64 {
    seed.wrapping_add((round as u64) << 32)
}

/// What line `index` may change: its read box (with margin) less the read boxes of lines
/// already right, so that what those lines are read from never changes and they stay right.
/// White where the line may be repainted.
pub fn line_region(layout: &Layout, index: usize, ok: &[bool], size: (u32, u32)) -> GrayImage {
    let mut mask = GrayImage::new(size.0, size.1);
    let Some((l, t, r, b)) = layout
        .lines
        .get(index)
        .and_then(|x| read_box(&x.bbox, size))
    else {
        return mask;
    };
    let kept: Vec<(u32, u32, u32, u32)> = layout
        .lines
        .iter()
        .zip(ok)
        .filter(|(_, ok)| **ok)
        .filter_map(|(line, _)| read_box(&line.bbox, size))
        .collect();
    for y in t..b {
        for x in l..r {
            let in_kept = kept
                .iter()
                .any(|&(kl, kt, kr, kb)| x >= kl && x < kr && y >= kt && y < kb);
            if !in_kept {
                mask.put_pixel(x, y, Luma([255]));
            }
        }
    }
    mask
}

/// Copies `from`'s pixels where `region` is white onto `onto`.
pub fn paste(onto: &mut RgbImage, from: &RgbImage, region: &GrayImage) {
    for (x, y, m) in region.enumerate_pixels() {
        if m.0[0] > 0 {
            onto.put_pixel(x, y, *from.get_pixel(x, y));
        }
    }
}

/// How a repair round paints and reads: `paint(current, mask, seed)` repaints `current` where
/// `mask` is white; `read(image, line)` checks one line.
pub struct RepairTools<'a> {
    pub paint: &'a mut dyn FnMut(&RgbImage, &GrayImage, u64) -> Result<RgbImage, PosterError>,
    pub read: &'a mut dyn FnMut(&RgbImage, usize) -> Result<LineCheck, PosterError>,
}

/// At most `rounds` repair rounds of `first` (made with `seed`, certified as `certificate`):
/// stops early once every line reads right. Returns the repaired image and its certificate.
pub fn repair(
    first: &RgbImage,
    layout: &Layout,
    certificate: Certificate,
    rounds: usize,
    seed: u64,
    tools: RepairTools<'_>,
) -> Result<(RgbImage, Certificate), PosterError> {
    let size = first.dimensions();
    let mut current = first.clone();
    let mut best = certificate.lines;
    let mut seeds = Vec::new();
    // Lines whose read box another line's accepted paste reached since they were read.
    let mut stale = vec![false; best.len()];
    for round in 1..=rounds {
        reread_stale(&current, &mut best, &mut stale, tools.read)?;
        let ok: Vec<bool> = best.iter().map(|l| l.ok).collect();
        let failing: Vec<usize> = (0..best.len()).filter(|&i| !ok[i]).collect();
        if failing.is_empty() {
            break;
        }
        let regions: Vec<GrayImage> = failing
            .iter()
            .map(|&i| line_region(layout, i, &ok, size))
            .collect();
        let mut mask = GrayImage::new(size.0, size.1);
        for region in &regions {
            for (m, r) in mask.pixels_mut().zip(region.pixels()) {
                m.0[0] = m.0[0].max(r.0[0]);
            }
        }
        let round_seed = repair_seed(seed, round);
        seeds.push(round_seed);
        let painted = (tools.paint)(&current, &mask, round_seed)?;
        for (&i, region) in failing.iter().zip(&regions) {
            let mut trial = current.clone();
            paste(&mut trial, &painted, region);
            let mut check = (tools.read)(&trial, i)?;
            check.round = round;
            if check.better_than(&best[i]) {
                current = trial;
                best[i] = check;
                mark_reached(layout, i, region, &mut stale);
            }
        }
    }
    reread_stale(&current, &mut best, &mut stale, tools.read)?;
    Ok((current, Certificate::from_lines(best, seeds)))
}

/// Marks stale every other line whose read box `region` (line `pasted`'s accepted paste)
/// reaches: two failing lines can sit within each other's margins.
fn mark_reached(layout: &Layout, pasted: usize, region: &GrayImage, stale: &mut [bool]) {
    for (j, line) in layout.lines.iter().enumerate() {
        if j == pasted || stale[j] {
            continue;
        }
        if let Some((l, t, r, b)) = read_box(&line.bbox, region.dimensions()) {
            stale[j] = (t..b).any(|y| (l..r).any(|x| region.get_pixel(x, y).0[0] > 0));
        }
    }
}

/// Reads the stale lines again on `current`, keeping the round whose paint they show, so the
/// certificate describes the pixels returned.
fn reread_stale(
    current: &RgbImage,
    best: &mut [LineCheck],
    stale: &mut [bool],
    read: &mut dyn FnMut(&RgbImage, usize) -> Result<LineCheck, PosterError>,
) -> Result<(), PosterError> {
    for (i, line) in best.iter_mut().enumerate() {
        if std::mem::take(&mut stale[i]) {
            let round = line.round;
            *line = read(current, i)?;
            line.round = round;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use letterpress_layout::{BBox, TextLine};

    use super::*;

    fn layout() -> Layout {
        Layout::new(
            64,
            64,
            vec![
                TextLine::new("KEEP", BBox::new(8, 8, 56, 24)),
                TextLine::new("FIX", BBox::new(8, 30, 56, 46)),
            ],
        )
    }

    fn check(index: usize, ok: bool, d: f64) -> LineCheck {
        LineCheck {
            index,
            text: String::new(),
            read: String::new(),
            edit_distance: d,
            confidence: 0.0,
            ok,
            round: 0,
        }
    }

    /// Paints every masked pixel a new grey per round; reads line 1 as never right but a
    /// little closer each round, line 0 as right.
    #[test]
    fn the_loop_stops_after_k_rounds_and_never_touches_a_right_line() {
        let first = RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let cert = Certificate::from_lines(vec![check(0, true, 0.0), check(1, false, 1.0)], vec![]);
        let (mut painted, mut reads, mut masks) = (0, 0, Vec::new());
        let mut paint = |cur: &RgbImage, mask: &GrayImage, _seed: u64| {
            painted += 1;
            masks.push(mask.clone());
            Ok(RgbImage::from_fn(64, 64, |x, y| {
                let inside = mask.get_pixel(x, y).0[0] > 0;
                if inside {
                    image::Rgb([200, painted as u8, 0])
                } else {
                    *cur.get_pixel(x, y)
                }
            }))
        };
        let mut read = |_: &RgbImage, i: usize| {
            reads += 1;
            Ok(check(i, false, 1.0 - 0.1 * reads as f64))
        };
        let tools = RepairTools {
            paint: &mut paint,
            read: &mut read,
        };
        let (out, cert) = repair(&first, &layout(), cert, 3, 5, tools).unwrap();
        assert_eq!(painted, 3, "three rounds, no more");
        assert_eq!((cert.rounds, cert.repair_seeds.len()), (3, 3));
        assert_eq!(
            cert.lines[1].round, 3,
            "each round read closer, so the last is kept"
        );
        assert!(cert.lines[0].ok && cert.lines[0].round == 0);
        for mask in &masks {
            // Line 0's box is never in a repaint mask…
            assert!((8..56).all(|x| (8..24).all(|y| mask.get_pixel(x, y).0[0] == 0)));
        }
        let region = line_region(&layout(), 1, &[true, false], (64, 64));
        for (x, y, p) in out.enumerate_pixels() {
            if region.get_pixel(x, y).0[0] == 0 {
                // …and everything outside line 1's region is the first image's exactly.
                assert_eq!(p, first.get_pixel(x, y), "({x}, {y})");
            } else {
                assert_eq!(p.0, [200, 3, 0]);
            }
        }
    }

    #[test]
    fn a_round_that_reads_worse_is_not_kept_and_right_lines_end_the_loop() {
        let first = RgbImage::new(64, 64);
        let cert =
            Certificate::from_lines(vec![check(0, false, 0.5), check(1, false, 0.5)], vec![]);
        let rounds = std::cell::Cell::new(0);
        let mut paint = |_: &RgbImage, _: &GrayImage, _: u64| {
            rounds.set(rounds.get() + 1);
            Ok(RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9])))
        };
        // Round 1: line 0 reads right, line 1 worse. Round 2: line 1 right.
        let mut read = |_: &RgbImage, i: usize| {
            Ok(match (rounds.get(), i) {
                (1, 0) | (2, 1) => check(i, true, 0.0),
                _ => check(i, false, 0.9),
            })
        };
        let tools = RepairTools {
            paint: &mut paint,
            read: &mut read,
        };
        let (_, cert) = repair(&first, &layout(), cert, 5, 1, tools).unwrap();
        assert_eq!(
            rounds.get(),
            2,
            "everything right after round 2: no round 3"
        );
        assert_eq!(cert.rounds, 2);
        assert_eq!((cert.lines[0].round, cert.lines[1].round), (1, 2));
        assert_eq!(cert.lines_ok, 2);
        assert_eq!(repair_seed(1, 1), cert.repair_seeds[0]);
        assert_ne!(cert.repair_seeds[0], cert.repair_seeds[1]);
    }

    /// Line 0's accepted paste reaches into line 1's read box: line 1, whose own paste read
    /// worse and was dropped, is read again, so its certificate entry is of the returned
    /// pixels.
    #[test]
    fn a_line_a_neighbours_paste_reached_is_read_again() {
        let close = Layout::new(
            64,
            64,
            vec![
                TextLine::new("A", BBox::new(8, 8, 56, 20)),
                TextLine::new("B", BBox::new(8, 22, 56, 34)),
            ],
        );
        let first = RgbImage::new(64, 64);
        let cert =
            Certificate::from_lines(vec![check(0, false, 0.5), check(1, false, 0.5)], vec![]);
        let mut paint = |_: &RgbImage, _: &GrayImage, _: u64| {
            Ok(RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9])))
        };
        let line1_reads = std::cell::Cell::new(0);
        let mut read = |_: &RgbImage, i: usize| {
            Ok(if i == 0 {
                check(0, true, 0.0)
            } else {
                line1_reads.set(line1_reads.get() + 1);
                // Its own trial reads worse (0.9); the read after line 0's paste, 0.7.
                check(1, false, if line1_reads.get() == 1 { 0.9 } else { 0.7 })
            })
        };
        let tools = RepairTools {
            paint: &mut paint,
            read: &mut read,
        };
        let (_, cert) = repair(&first, &close, cert, 1, 3, tools).unwrap();
        assert_eq!(line1_reads.get(), 2, "its trial, then once more at the end");
        assert_eq!(cert.lines[1].edit_distance, 0.7);
        assert_eq!(cert.lines[1].round, 0, "its own paste was not kept");
        assert!(cert.lines[0].ok);
    }
}

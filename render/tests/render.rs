//! Structural tests of the renderer on real Debian fonts: where ink lands, how boxes nest,
//! how well text fills its box, and every bad input's error. No pixel hashes.

use letterpress_layout::{Align, BBox, Layout, TextLine, char_class};
use letterpress_render::{MissingGlyph, RenderError, RenderOptions, Renderer, Rendering};

fn renderer() -> Renderer {
    Renderer::with_default_font().expect("DejaVu Sans Bold is installed by scripts/setup")
}

fn line(text: &str, bbox: [i32; 4]) -> TextLine {
    TextLine::new(text, BBox::new(bbox[0], bbox[1], bbox[2], bbox[3]))
}

fn sample_layouts() -> Vec<Layout> {
    vec![
        Layout::new(
            512,
            512,
            vec![
                line("Summer Sale", [40, 40, 472, 140]),
                line("up to 50% off", [80, 180, 432, 240]),
                line("Main St. 12", [150, 400, 362, 440]),
            ],
        ),
        Layout::new(
            768,
            384,
            vec![
                line("Grand\nOpening", [20, 20, 380, 360]),
                line("jazz & blues", [400, 100, 748, 160]),
            ],
        ),
        Layout::new(
            300,
            900,
            vec![
                line("TALL", [10, 10, 290, 890]),
                line("q.y,j", [0, 0, 60, 20]),
            ],
        ),
        Layout::new(512, 512, {
            let mut l = line("left side", [20, 300, 492, 360]);
            l.align = Some(Align::Left);
            let mut r = line("right side", [20, 380, 492, 440]);
            r.align = Some(Align::Right);
            vec![l, r]
        }),
    ]
}

fn inked(r: &Rendering) -> impl Iterator<Item = (u32, u32)> + '_ {
    r.glyph_mask
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] > 0)
        .map(|(x, y, _)| (x, y))
}

fn inside(b: &BBox, x: u32, y: u32) -> bool {
    (x as i32) >= b.left && (x as i32) < b.right && (y as i32) >= b.top && (y as i32) < b.bottom
}

#[test]
fn ink_only_inside_the_boxes() {
    let r = renderer();
    for layout in sample_layouts() {
        let out = r.render(&layout).unwrap();
        assert!(inked(&out).count() > 0);
        for (x, y) in inked(&out) {
            assert!(
                out.lines.iter().any(|l| inside(&l.clipped_box, x, y)),
                "ink at {x},{y} outside every box"
            );
        }
    }
}

#[test]
fn char_boxes_nest_in_their_line_in_reading_order() {
    let r = renderer();
    for layout in sample_layouts() {
        let out = r.render(&layout).unwrap();
        for (i, l) in layout.lines.iter().enumerate() {
            let boxes: Vec<_> = out.char_boxes.iter().filter(|c| c.line == i).collect();
            let visible: String = l.text.chars().filter(|c| !c.is_whitespace()).collect();
            let drawn: String = boxes.iter().map(|c| c.ch).collect();
            assert_eq!(drawn, visible, "line {i}: characters in reading order");
            for cb in &boxes {
                assert!(l.bbox.contains(&cb.bbox), "{:?} outside {:?}", cb, l.bbox);
            }
            // Within a sub-line, boxes advance to the right; sub-lines advance downward.
            for pair in boxes.windows(2) {
                let (a, b) = (pair[0].bbox, pair[1].bbox);
                let same_row = b.top < a.bottom && a.top < b.bottom;
                if same_row {
                    assert!(
                        a.left + a.right < b.left + b.right,
                        "{:?} then {:?}",
                        pair[0],
                        pair[1]
                    );
                } else {
                    assert!(b.top >= a.top, "{:?} then {:?}", pair[0], pair[1]);
                }
            }
        }
    }
}

#[test]
fn text_fills_the_limiting_dimension() {
    let r = renderer();
    for layout in sample_layouts() {
        let out = r.render(&layout).unwrap();
        for (i, l) in out.lines.iter().enumerate() {
            let ink = l.ink.unwrap();
            let b = l.clipped_box;
            let fill_w = ink.width() as f32 / b.width() as f32;
            let fill_h = ink.height() as f32 / b.height() as f32;
            assert!(
                fill_w.max(fill_h) >= 0.8,
                "line {i}: fills {fill_w:.2} x {fill_h:.2} of {b:?}"
            );
            assert!(fill_w <= 1.0 && fill_h <= 1.0);
        }
    }
}

#[test]
fn alignment_moves_ink_to_the_chosen_side() {
    let out = renderer().render(&sample_layouts()[3]).unwrap();
    let (left, right) = (out.lines[0].ink.unwrap(), out.lines[1].ink.unwrap());
    assert!(
        left.left - 20 <= 2,
        "left-aligned ink starts at {}",
        left.left
    );
    assert!(
        492 - right.right <= 2,
        "right-aligned ink ends at {}",
        right.right
    );
}

#[test]
fn stacked_sublines_share_the_box() {
    let out = renderer()
        .render(&Layout::new(
            512,
            512,
            vec![line("ab\ncd", [0, 0, 512, 512])],
        ))
        .unwrap();
    let boxes = &out.char_boxes;
    assert_eq!(boxes.len(), 4);
    assert!(
        boxes[2].bbox.top >= boxes[0].bbox.bottom - 2,
        "second sub-line below the first"
    );
}

#[test]
fn segmentation_classes_match_the_characters() {
    let r = renderer();
    for layout in sample_layouts() {
        let out = r.render(&layout).unwrap();
        let seg = out.segmentation_map();
        assert!(seg.pixels().all(|p| p.0[0] <= 95));
        for cb in &out.char_boxes {
            let mut counts = [0usize; 96];
            for y in cb.bbox.top..cb.bbox.bottom {
                for x in cb.bbox.left..cb.bbox.right {
                    counts[seg.get_pixel(x as u32, y as u32).0[0] as usize] += 1;
                }
            }
            let majority = (1..96).max_by_key(|&c| counts[c]).unwrap();
            assert_eq!(
                Some(majority as u8),
                char_class(cb.ch),
                "{cb:?}: counts {:?}",
                &counts[..]
            );
        }
    }
}

#[test]
fn inverse_is_black_on_white() {
    let out = renderer().render(&sample_layouts()[0]).unwrap();
    let inv = out.inverse();
    for (m, i) in out.glyph_mask.pixels().zip(inv.pixels()) {
        assert_eq!(u16::from(m.0[0]) + u16::from(i.0[0]), 255);
    }
}

#[test]
fn preview_draws_text_and_boxes() {
    let out = renderer().render(&sample_layouts()[0]).unwrap();
    let preview = out.preview();
    assert_eq!(preview.dimensions(), (512, 512));
    let distinct: std::collections::HashSet<_> = preview.pixels().map(|p| p.0).collect();
    assert!(
        distinct.len() > 10,
        "text, boxes and anti-aliasing over the background"
    );
}

#[test]
fn cjk_renders_through_noto_cjk() {
    let r = renderer();
    let face = r
        .font_for_char('夏', None)
        .unwrap()
        .expect("a CJK font is installed");
    assert!(
        face.contains("NotoSansCJK") || face.contains("NotoSerifCJK"),
        "{face}"
    );
    let out = r
        .render(&Layout::new(
            512,
            512,
            vec![line("夏日音乐节", [40, 200, 472, 300])],
        ))
        .unwrap();
    assert_eq!(
        out.char_boxes.iter().map(|c| c.ch).collect::<String>(),
        "夏日音乐节"
    );
    // CJK characters have no TextDiffuser class: the segmentation map stays background.
    assert!(out.segmentation_map().pixels().all(|p| p.0[0] == 0));
}

fn find_ttc() -> std::path::PathBuf {
    let dir = std::path::Path::new("/usr/share/fonts/opentype/noto");
    std::fs::read_dir(dir)
        .expect("fonts-noto-cjk is installed by scripts/setup")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "ttc"))
        .expect("a .ttc collection")
}

#[test]
fn ttc_collections_load_by_index() {
    let ttc = find_ttc();
    for index in [0, 2] {
        let font = format!("{}#{index}", ttc.display());
        let r = Renderer::new(RenderOptions {
            font: font.clone(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.font_file(None).unwrap(), Some((ttc.clone(), index)));
        assert_eq!(
            r.font_for_char('字', None).unwrap(),
            Some(format!("{}#{index}", ttc.display()))
        );
        let out = r
            .render(&Layout::new(
                256,
                256,
                vec![line("漢字 ok", [10, 10, 246, 100])],
            ))
            .unwrap();
        assert_eq!(out.char_boxes.len(), 4);
    }
}

#[test]
fn fonts_by_family_name_and_line() {
    let r = renderer();
    let mut l = line("Noto", [10, 10, 246, 100]);
    l.font = Some("Noto Sans Italic".into());
    let out = r.render(&Layout::new(256, 256, vec![l])).unwrap();
    assert!(
        out.lines[0].font.contains("NotoSans-Italic"),
        "{}",
        out.lines[0].font
    );
    assert!(out.lines[0].font_px.unwrap() > 10.0);
}

#[test]
fn glyphs_are_rasterised_once() {
    let r = renderer();
    let layout = &sample_layouts()[0];
    r.render(layout).unwrap();
    let after_first = r.glyphs_rasterised();
    let second = r.render(layout).unwrap();
    assert_eq!(
        r.glyphs_rasterised(),
        after_first,
        "second render served from the cache"
    );
    assert_eq!(second.glyph_mask, r.render(layout).unwrap().glyph_mask);
}

#[test]
fn empty_layout_is_a_black_mask() {
    let out = renderer().render(&Layout::new(64, 32, vec![])).unwrap();
    assert_eq!(out.glyph_mask.dimensions(), (64, 32));
    assert!(out.glyph_mask.pixels().all(|p| p.0[0] == 0));
    assert!(out.char_boxes.is_empty() && out.warnings.is_empty());
}

#[test]
fn box_partly_outside_is_clipped_and_reported() {
    let out = renderer()
        .render(&Layout::new(
            256,
            256,
            vec![line("Edge", [-50, 200, 300, 300])],
        ))
        .unwrap();
    assert_eq!(out.lines[0].clipped_box, BBox::new(0, 200, 256, 256));
    assert!(
        out.warnings[0].contains("line 0") && out.warnings[0].contains("clipped"),
        "{:?}",
        out.warnings
    );
    for (x, y) in inked(&out) {
        assert!(inside(&out.lines[0].clipped_box, x, y));
    }
}

#[test]
fn degenerate_boxes_are_errors_naming_the_line() {
    let r = renderer();
    for bbox in [[10, 10, 10, 50], [10, 10, 50, 5], [30, 0, 10, 20]] {
        let layout = Layout::new(
            256,
            256,
            vec![line("ok", [0, 0, 100, 100]), line("bad", bbox)],
        );
        let err = r.render(&layout).unwrap_err();
        assert!(
            matches!(err, RenderError::EmptyBox { line: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("line 1:"), "{err}");
    }
    let err = r
        .render(&Layout::new(
            256,
            256,
            vec![line("far", [300, 300, 400, 400])],
        ))
        .unwrap_err();
    assert!(
        matches!(err, RenderError::BoxOutsideCanvas { line: 0, .. }),
        "{err}"
    );
}

#[test]
fn canvas_size_limits() {
    let r = renderer();
    for (w, h) in [(0, 512), (512, 0), (4097, 512), (512, 10_000)] {
        let err = r.render(&Layout::new(w, h, vec![])).unwrap_err();
        assert!(matches!(err, RenderError::CanvasSize { .. }), "{err}");
        assert!(err.to_string().contains("1..=4096"), "{err}");
    }
    assert!(r.render(&Layout::new(4096, 1, vec![])).is_ok());
}

#[test]
fn control_characters_are_stripped() {
    let out = renderer()
        .render(&Layout::new(
            256,
            256,
            vec![line("SA\u{7}L\tE\u{200B}", [0, 0, 256, 100])],
        ))
        .unwrap();
    assert_eq!(
        out.char_boxes.iter().map(|c| c.ch).collect::<String>(),
        "SALE"
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("control characters")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn over_long_lines_are_errors() {
    let r = renderer();
    let long = "a".repeat(1001);
    let err = r
        .render(&Layout::new(256, 256, vec![line(&long, [0, 0, 256, 100])]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::LineTooLong {
                line: 0,
                chars: 1001,
                max: 1000
            }
        ),
        "{err}"
    );
    assert!(
        r.render(&Layout::new(
            256,
            256,
            vec![line(&"a".repeat(1000), [0, 0, 256, 100])]
        ))
        .is_ok()
    );
}

#[test]
fn missing_glyphs_error_or_skip() {
    // U+0378 is unassigned: no font can have it.
    let layout = Layout::new(256, 256, vec![line("A\u{378}B", [0, 0, 256, 100])]);
    let err = renderer().render(&layout).unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::MissingGlyph {
                line: 0,
                ch: '\u{378}'
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("U+0378"), "{err}");

    let skip = Renderer::new(RenderOptions {
        missing_glyph: MissingGlyph::Skip,
        ..Default::default()
    })
    .unwrap();
    let out = skip.render(&layout).unwrap();
    assert_eq!(
        out.char_boxes.iter().map(|c| c.ch).collect::<String>(),
        "AB"
    );
    assert!(
        out.warnings.iter().any(|w| w.contains("skipped")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn unknown_fonts_are_errors_with_a_hint() {
    let err = Renderer::new(RenderOptions {
        font: "Noto Nonexistent".into(),
        ..Default::default()
    })
    .err()
    .expect("no such family");
    let msg = err.to_string();
    assert!(
        msg.contains("Noto Nonexistent") && msg.contains("Noto Sans"),
        "{msg}"
    );
    let err = Renderer::new(RenderOptions {
        font: "/no/such/font.ttf".into(),
        ..Default::default()
    })
    .err()
    .expect("no such file");
    assert!(err.to_string().contains("/no/such/font.ttf"), "{err}");
}

#[test]
fn measures_text_for_the_planner() {
    use letterpress_layout::TextMeasure;
    let r = renderer();
    let one = r.ink_extent("Sale", None).unwrap();
    let two = r.ink_extent("Sale Sale", None).unwrap();
    assert!(
        one.width > 0.5 && one.height > 0.5 && one.height < 1.2,
        "{one:?}"
    );
    assert!(two.width > 2.0 * one.width);
    // A box sized from the measurement is filled by the rendered text.
    let px = 80.0;
    let e = one.at_px(px);
    let bbox = BBox::new(
        10,
        10,
        10 + e.width.ceil() as i32 + 1,
        10 + e.height.ceil() as i32 + 1,
    );
    let out = r
        .render(&Layout::new(512, 512, vec![TextLine::new("Sale", bbox)]))
        .unwrap();
    assert!(
        (out.lines[0].font_px.unwrap() - px).abs() < 1.0,
        "{:?}",
        out.lines[0].font_px
    );
}

//! Verification and repair on the tiny fixture model (its pictures are noise, so no line ever
//! reads right): the certificate reaches events, images and PNG metadata, the repair loop
//! runs exactly the rounds asked for, and pixels outside the lines' boxes stay the first
//! image's.

mod common;

use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_poster::{
    PosterError, PosterEvent, PosterInit, PosterRequest, PosterText, RepaintRegion, read_box,
    repair_seed,
};

use common::{engine, engine_of};

fn request(layout: &Layout) -> PosterRequest {
    let mut r = PosterRequest::new("a poster");
    r.text = PosterText::Layout(layout.clone());
    r.steps = 2;
    r.seed = Some(21);
    r
}

#[test]
fn repair_runs_k_rounds_and_keeps_pixels_outside_the_boxes() {
    let layout = Layout::new(
        64,
        64,
        vec![
            TextLine::new("SALE", BBox::new(8, 6, 56, 22)),
            TextLine::new("NOW", BBox::new(16, 40, 48, 56)),
        ],
    );
    let engine = engine();
    let first = engine
        .make(&request(&layout), &mut |_| {}, &|| false)
        .unwrap();
    assert!(first.images[0].certificate.is_none(), "off by default");

    let mut r = request(&layout);
    r.repair = 2;
    let mut verified = Vec::new();
    let poster = engine
        .make(
            &r,
            &mut |e| {
                if let PosterEvent::Verified { image, certificate } = e {
                    verified.push((image, certificate.rounds));
                }
            },
            &|| false,
        )
        .unwrap();
    assert_eq!(verified, [(0, 2)], "one event, after both rounds");
    let image = &poster.images[0];
    let c = image.certificate.as_ref().unwrap();
    assert_eq!((c.line_count, c.lines_ok, c.rounds), (2, 0, 2));
    assert_eq!(c.repair_seeds, [repair_seed(21, 1), repair_seed(21, 2)]);
    let boxes: Vec<_> = layout
        .lines
        .iter()
        .filter_map(|l| read_box(&l.bbox, (64, 64)))
        .collect();
    for (x, y, p) in image.image.enumerate_pixels() {
        let inside = boxes
            .iter()
            .any(|&(l, t, r, b)| x >= l && x < r && y >= t && y < b);
        if !inside {
            assert_eq!(p, first.images[0].image.get_pixel(x, y), "({x}, {y})");
        }
    }
    let text = poster.png_text(image);
    let json = &text.iter().find(|(k, _)| k == "certificate").unwrap().1;
    let back: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(back["rounds"], 2);
    assert_eq!(back["lines"][1]["text"], "NOW");
}

#[test]
fn too_many_repair_rounds_name_the_field() {
    let layout = Layout::new(64, 64, vec![TextLine::new("A", BBox::new(8, 8, 56, 40))]);
    let mut r = request(&layout);
    r.repair = 6;
    match engine().make(&r, &mut |_| {}, &|| false) {
        Err(PosterError::Request { field, message }) => {
            assert_eq!(field, "repair");
            assert!(message.contains("at most 5"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// Repair rounds run on every model kind the pipelines take: TextDiffuser-2 (layout tokens)
/// and a 9-channel inpainting UNet as well as the glyph ControlNet above.
#[test]
fn repair_runs_on_textdiffuser2_and_inpainting_models() {
    let layout = Layout::new(64, 64, vec![TextLine::new("SALE", BBox::new(8, 8, 56, 30))]);
    for kind in ["td2", "sd2-inpaint"] {
        let mut r = request(&layout);
        r.repair = 1;
        if kind == "sd2-inpaint" {
            // An inpainting UNet paints only into a picture: the whole of a grey one here.
            r.init = Some(PosterInit {
                image: image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128])),
                strength: 1.0,
                region: Some(RepaintRegion::Mask(image::GrayImage::from_pixel(
                    64,
                    64,
                    image::Luma([255]),
                ))),
            });
        }
        let poster = engine_of(kind).make(&r, &mut |_| {}, &|| false).unwrap();
        let c = poster.images[0].certificate.as_ref().unwrap();
        assert_eq!((c.line_count, c.rounds), (1, 1), "{kind}");
    }
}

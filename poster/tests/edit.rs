//! Editing text in a picture on the tiny fixture model: the old word is found by OCR, only
//! the edited region changes (other text and every pixel outside are the input's exactly),
//! and bad input is refused naming the field.

mod common;

use image::RgbImage;
use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_poster::{EditRequest, PosterError, PosterRequest, Replacement};
use letterpress_render::Renderer;

use common::{engine, engine_of};

/// Black text on white, odd-sized (not a multiple of 8) to exercise the padding.
fn picture() -> RgbImage {
    let layout = Layout::new(
        203,
        98,
        vec![
            TextLine::new("BIG", BBox::new(10, 20, 80, 60)),
            TextLine::new("SALE", BBox::new(110, 20, 195, 60)),
        ],
    );
    let mask = Renderer::with_default_font()
        .unwrap()
        .render(&layout)
        .unwrap()
        .glyph_mask;
    RgbImage::from_fn(203, 98, |x, y| {
        let v = 255 - mask.get_pixel(x, y).0[0];
        image::Rgb([v, v, v])
    })
}

fn request(old: &str, new: &str, image: RgbImage) -> EditRequest {
    let mut base = PosterRequest::new("a poster");
    (base.steps, base.seed) = (2, Some(5));
    EditRequest {
        image,
        replacements: vec![Replacement {
            old: old.into(),
            new: new.into(),
        }],
        known_layout: None,
        base,
    }
}

#[test]
fn only_the_edited_region_changes() {
    let input = picture();
    let edited = engine()
        .edit(&request("sale", "DEAL", input.clone()), &|| false)
        .unwrap();
    let b = &edited.boxes[0];
    assert_eq!(b.found_by, "ocr");
    assert!(b.found.left >= 100 && b.found.right <= 200, "{b:?}");
    assert_eq!(edited.image.dimensions(), input.dimensions());
    let mut changed = 0;
    for (x, y, p) in edited.image.enumerate_pixels() {
        let inside = edited.region.get_pixel(x, y).0[0] > 0;
        if !inside {
            assert_eq!(p, input.get_pixel(x, y), "({x}, {y}) outside the region");
        } else if p != input.get_pixel(x, y) {
            changed += 1;
        }
        if x < 75 {
            assert!(!inside, "BIG's side is never in the region: ({x}, {y})");
        }
    }
    assert!(changed > 0, "the region was repainted");
    assert_eq!(edited.certificate.lines[0].text, "DEAL");
}

#[test]
fn bad_edits_name_the_field() {
    let engine = engine();
    let field_of = |r: EditRequest| match engine.edit(&r, &|| false) {
        Err(PosterError::Edit { field, message }) => (field, message),
        Err(PosterError::Request { field, message }) => (field.to_string(), message),
        other => panic!("{other:?}"),
    };
    let (field, message) = field_of(request("PARTY", "FUN", picture()));
    assert_eq!(field, "replacements[0].old");
    assert!(message.contains("SALE"), "lists what was read: {message}");
    let (field, _) = field_of(request("SALE", "X", RgbImage::new(4096, 64)));
    assert_eq!(field, "image");
    let (field, message) = field_of(request("SALE", "\u{10FFFD}", picture()));
    assert_eq!(field, "replacements[0].new");
    assert!(message.contains("glyph"), "{message}");
    let long = "THIS REPLACEMENT IS FAR TOO LONG FOR THE ROOM THERE IS";
    let (field, message) = field_of(request("SALE", long, picture()));
    assert_eq!(field, "replacements[0].new");
    assert!(message.contains("8 px"), "{message}");
}

/// Every model kind edits: TextDiffuser-2 (the new text as layout tokens) and a 9-channel
/// inpainting UNet as well as the glyph ControlNet above.
#[test]
fn textdiffuser2_and_inpainting_models_edit_too() {
    let input = picture();
    for kind in ["td2", "sd2-inpaint"] {
        let edited = engine_of(kind)
            .edit(&request("SALE", "DEAL", input.clone()), &|| false)
            .unwrap();
        for (x, y, p) in edited.image.enumerate_pixels() {
            if edited.region.get_pixel(x, y).0[0] == 0 {
                assert_eq!(p, input.get_pixel(x, y), "{kind} ({x}, {y})");
            }
        }
    }
}

//! The poster engine on the tiny fixture models (diffusion/tests/fixtures/pipeline, made with
//! diffusers by tools/make_pipeline_fixtures.py): its stages, events, stop checks and errors,
//! and that it hands the pipeline exactly what a caller building the request by hand would.

use std::cell::Cell;
use std::path::PathBuf;

use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::pipelines::{
    ControlSettings, GenerationRequest, ModelSource, StableDiffusion, TextConditioning,
};
use letterpress_layout::{BBox, Layout, TextLine, layout_tokens};
use letterpress_poster::{
    LayoutTokens, PosterEngine, PosterError, PosterEvent, PosterInit, PosterRequest, PosterText,
    RepaintRegion, glyph_init_image, read_png_text,
};
use letterpress_render::{RenderOptions, Renderer};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../diffusion/tests/fixtures/pipeline")
        .join(name)
}

fn source(name: &str) -> ModelSource {
    ModelSource {
        model: fixture(name),
        ..Default::default()
    }
}

fn engine(name: &str) -> PosterEngine {
    PosterEngine::load(
        &source(name),
        &LoadOptions::default(),
        RenderOptions::default(),
    )
    .unwrap()
}

fn small_request(prompt: &str) -> PosterRequest {
    let mut r = PosterRequest::new(prompt);
    (r.width, r.height) = (Some(64), Some(64));
    r.steps = 2;
    r.seed = Some(11);
    r
}

#[derive(Debug, PartialEq)]
enum Seen {
    Planned(usize),
    Rendered,
    Step(usize, usize),
    Verified(usize),
}

#[test]
fn stages_run_in_order_with_their_events() {
    let engine = engine("sd1-controlnet");
    let mut request = small_request("a poster for 'SALE' and 'today'");
    request.n = 2;
    request.preview_every = 1;
    let mut seen = Vec::new();
    let mut previews = 0;
    let poster = engine
        .make(
            &request,
            &mut |e| match e {
                PosterEvent::Planned { layout, .. } => seen.push(Seen::Planned(layout.lines.len())),
                PosterEvent::Rendered { glyph_mask, .. } => {
                    assert_eq!(glyph_mask.dimensions(), (64, 64));
                    seen.push(Seen::Rendered)
                }
                PosterEvent::Step {
                    step,
                    steps,
                    preview,
                } => {
                    previews += usize::from(preview.is_some());
                    seen.push(Seen::Step(step, steps))
                }
                PosterEvent::Verified { image, .. } => seen.push(Seen::Verified(image)),
            },
            &|| false,
        )
        .unwrap();
    assert_eq!(
        seen,
        [
            Seen::Planned(2),
            Seen::Rendered,
            Seen::Step(1, 2),
            Seen::Step(2, 2)
        ]
    );
    assert_eq!(
        previews, 2,
        "a preview on every step when preview_every is 1"
    );
    let seeds: Vec<u64> = poster.images.iter().map(|i| i.seed).collect();
    assert_eq!(seeds, [11, 12]);
    let layout = poster.layout.as_ref().unwrap();
    assert_eq!(
        (layout.width, layout.height),
        (64, 64),
        "planned on the output canvas"
    );
    assert_eq!(layout.lines[0].text, "SALE");
    assert!(poster.control_image.is_some());
    let text = poster.metadata.png_text(12);
    let get = |k: &str| {
        text.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("seed"), Some("12"));
    assert!(get("layout").unwrap().contains("today"));
    assert!(
        get("parameters")
            .unwrap()
            .contains("ControlNet: \"weight: 1")
    );
    let png = letterpress_poster::encode_png(&poster.images[1].image, &text).unwrap();
    assert_eq!(read_png_text(&png).unwrap(), text);
}

#[test]
fn the_engine_hands_the_pipeline_what_a_hand_built_request_would() {
    let layout = Layout::new(64, 64, vec![TextLine::new("HI", BBox::new(8, 16, 56, 40))]);
    let mut request = small_request("a poster");
    request.text = PosterText::Layout(layout.clone());
    request.control.conditioning_scale = 0.7;
    let poster = engine("sd1-controlnet")
        .make(&request, &mut |_| {}, &|| false)
        .unwrap();

    let model =
        StableDiffusion::load_from(&source("sd1-controlnet"), &LoadOptions::default()).unwrap();
    let mask = Renderer::with_default_font()
        .unwrap()
        .render(&layout)
        .unwrap()
        .glyph_mask;
    let mut by_hand = GenerationRequest::new("a poster");
    (by_hand.width, by_hand.height, by_hand.steps) = (64, 64, 2);
    by_hand.seed = Some(11);
    let mut control = ControlSettings::new(mask);
    control.conditioning_scale = 0.7;
    by_hand.control = Some(control);
    let direct = model
        .generate(&by_hand, &|_| {}, &Default::default())
        .unwrap();
    assert_eq!(poster.images[0].image, direct.images[0].to_rgb8().unwrap());
}

#[test]
fn a_layout_for_another_canvas_is_fitted_to_the_output() {
    let layout = Layout::new(
        128,
        128,
        vec![TextLine::new("HI", BBox::new(16, 32, 112, 80))],
    );
    let mut request = small_request("a poster");
    request.text = PosterText::Layout(layout);
    request.steps = 1;
    let poster = engine("sd1-controlnet")
        .make(&request, &mut |_| {}, &|| false)
        .unwrap();
    let fitted = poster.layout.unwrap();
    assert_eq!((fitted.width, fitted.height), (64, 64));
    assert_eq!(fitted.lines[0].bbox, BBox::new(8, 16, 56, 40));
    assert_eq!(poster.glyph_mask.unwrap().dimensions(), (64, 64));
}

#[test]
fn stop_ends_the_poster_between_steps() {
    let engine = engine("sd1-controlnet");
    let mut request = small_request("'SALE'");
    request.steps = 4;
    let steps = Cell::new(0);
    let result = engine.make(
        &request,
        &mut |e| {
            if let PosterEvent::Step { .. } = e {
                steps.set(steps.get() + 1);
            }
        },
        &|| steps.get() >= 1,
    );
    assert!(matches!(result, Err(PosterError::Stopped)), "{result:?}");
    assert_eq!(steps.get(), 1, "no step runs after the stop");
    // A stop before planning ends it before any stage.
    let mut events = 0;
    let result = engine.make(&request, &mut |_| events += 1, &|| true);
    assert!(matches!(result, Err(PosterError::Stopped)));
    assert_eq!(events, 0, "no stage ran");
}

#[test]
fn bad_requests_name_the_field() {
    let engine = engine("sd1-controlnet");
    let mut request = small_request("no quoted text here");
    let err = engine.make(&request, &mut |_| {}, &|| false).unwrap_err();
    assert!(err.is_request_error());
    assert!(err.to_string().contains("no text to draw"), "{err}");

    request.text = PosterText::Keywords(vec!["A".into()]);
    request.n = 0;
    let err = engine.make(&request, &mut |_| {}, &|| false).unwrap_err();
    assert!(
        matches!(err, PosterError::Request { field: "n", .. }),
        "{err}"
    );

    request.n = 1;
    request.init = Some(PosterInit {
        image: image::RgbImage::new(64, 64),
        strength: 0.5,
        region: Some(RepaintRegion::Line(3)),
    });
    let err = engine.make(&request, &mut |_| {}, &|| false).unwrap_err();
    assert!(
        matches!(
            err,
            PosterError::Request {
                field: "init.region",
                ..
            }
        ),
        "{err}"
    );

    request.init = None;
    request.layout_tokens = LayoutTokens::Always;
    let err = engine.make(&request, &mut |_| {}, &|| false).unwrap_err();
    assert!(err.to_string().contains("TextDiffuser-2"), "{err}");

    request.layout_tokens = LayoutTokens::Auto;
    request.text = PosterText::Keywords(vec!["x".repeat(300)]);
    let err = engine.make(&request, &mut |_| {}, &|| false).unwrap_err();
    assert!(matches!(err, PosterError::Layout(_)), "{err}");
    assert!(err.is_request_error());
}

#[test]
fn a_textdiffuser2_model_reads_the_layout_tokens_by_itself() {
    let engine = engine("td2");
    let mut request = small_request("a poster for 'SALE'");
    request.steps = 1;
    let poster = engine.make(&request, &mut |_| {}, &|| false).unwrap();
    assert!(
        poster.control_image.is_none(),
        "no ControlNet in the folder"
    );

    let model = StableDiffusion::load_from(&source("td2"), &LoadOptions::default()).unwrap();
    let mut by_hand = GenerationRequest::new("a poster for 'SALE'");
    (by_hand.width, by_hand.height, by_hand.steps) = (64, 64, 1);
    by_hand.seed = Some(11);
    by_hand.conditioning = TextConditioning::TextDiffuser2 {
        layout_tokens: layout_tokens(poster.layout.as_ref().unwrap()),
    };
    let direct = model
        .generate(&by_hand, &|_| {}, &Default::default())
        .unwrap();
    assert_eq!(poster.images[0].image, direct.images[0].to_rgb8().unwrap());

    // Never: the caption alone, which paints another picture.
    request.layout_tokens = LayoutTokens::Never;
    let plain = engine.make(&request, &mut |_| {}, &|| false).unwrap();
    assert_ne!(plain.images[0].image, poster.images[0].image);
}

/// Glyph initialisation is img2img from the glyphs drawn over the prompt's colour: the same
/// images as that picture given as an init image by hand, and the engine's default applies
/// only to requests that leave it unset.
#[test]
fn glyph_initialisation_starts_from_the_drawn_glyphs() {
    let engine = engine("sd1-controlnet");
    let mut request = small_request("a navy poster for 'SALE'");
    request.glyph_init = Some(0.7);
    let glyphs = engine.make(&request, &mut |_| {}, &|| false).unwrap();
    assert_eq!(glyphs.metadata.glyph_init, Some(0.7));
    let text = glyphs.png_text(&glyphs.images[0]);
    assert!(text.iter().any(|(k, v)| k == "glyph_init" && v == "0.7"));

    let mask = glyphs.glyph_mask.clone().unwrap();
    let mut by_hand = small_request("a navy poster for 'SALE'");
    by_hand.init = Some(PosterInit {
        image: glyph_init_image(&by_hand.prompt, &mask),
        strength: 0.7,
        region: None,
    });
    let by_hand = engine.make(&by_hand, &mut |_| {}, &|| false).unwrap();
    assert_eq!(glyphs.images[0].image, by_hand.images[0].image);

    let plain = engine
        .make(
            &small_request("a navy poster for 'SALE'"),
            &mut |_| {},
            &|| false,
        )
        .unwrap();
    assert_ne!(plain.images[0].image, glyphs.images[0].image);
    assert_eq!(plain.metadata.glyph_init, None);

    // The default fills an unset request; 0 switches it off.
    let engine = engine_with_default_glyph_init(0.7);
    let defaulted = engine
        .make(
            &small_request("a navy poster for 'SALE'"),
            &mut |_| {},
            &|| false,
        )
        .unwrap();
    assert_eq!(defaulted.images[0].image, glyphs.images[0].image);
    let mut off = small_request("a navy poster for 'SALE'");
    off.glyph_init = Some(0.0);
    let off = engine.make(&off, &mut |_| {}, &|| false).unwrap();
    assert_eq!(off.images[0].image, plain.images[0].image);
    assert_eq!(off.metadata.glyph_init, None);
}

fn engine_with_default_glyph_init(strength: f64) -> PosterEngine {
    engine("sd1-controlnet").with_default_glyph_init(Some(strength))
}

#[test]
fn glyph_initialisation_refuses_what_it_cannot_start_from() {
    let engine = engine("sd1-controlnet");
    let field_of = |request: &PosterRequest| match engine.make(request, &mut |_| {}, &|| false) {
        Err(PosterError::Request { field, message }) => (field, message),
        other => panic!("expected a request error, got {other:?}"),
    };
    let mut request = small_request("a poster for 'SALE'");
    for bad in [1.5, -0.2, f64::NAN] {
        request.glyph_init = Some(bad);
        let (field, message) = field_of(&request);
        assert_eq!(field, "glyph_init");
        assert!(message.contains("(0, 1]"), "{message}");
    }
    request.glyph_init = Some(0.6);
    request.init = Some(PosterInit {
        image: image::RgbImage::new(64, 64),
        strength: 0.5,
        region: None,
    });
    assert_eq!(field_of(&request).0, "glyph_init");
    // An engine default never collides with a caller's own init image.
    request.glyph_init = None;
    assert!(
        engine_with_default_glyph_init(0.6)
            .make(&request, &mut |_| {}, &|| false)
            .is_ok()
    );
}

#[test]
fn repair_is_refused_with_a_repaint_region() {
    let engine = engine("sd1-controlnet");
    let mut request = small_request("a poster for 'SALE'");
    request.repair = 1;
    request.init = Some(PosterInit {
        image: image::RgbImage::new(64, 64),
        strength: 1.0,
        region: Some(RepaintRegion::Line(0)),
    });
    match engine.make(&request, &mut |_| {}, &|| false) {
        Err(PosterError::Request { field, message }) => {
            assert_eq!(field, "repair");
            assert!(message.contains("one or the other"), "{message}");
        }
        other => panic!("expected a request error, got {other:?}"),
    }
}

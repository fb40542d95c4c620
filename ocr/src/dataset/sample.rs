//! One input through the pipeline: read, decode, filter, OCR, glyph mask, records.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{GrayImage, ImageEncoder};
use letterpress_layout::{BBox, Layout, TextLine, td2};
use letterpress_render::Renderer;
use serde_json::{Value, json};

use super::decode::{self, DecodeLimits};
use super::filters::{Filters, Measures};
use super::input::{self, Input, Location, ReadError};
use crate::{OcrEngine, OcrPage};

/// The renderer refuses canvases with a side over this; larger masks are drawn scaled down.
const MAX_MASK_SIDE: u32 = letterpress_render::MAX_CANVAS_SIDE;

/// Per-run settings every worker needs.
pub(crate) struct SampleContext<'a> {
    pub limits: &'a DecodeLimits,
    pub resize: Option<u32>,
    pub filters: &'a Filters,
    pub renderer: &'a Renderer,
    /// `{"engine", "version", "languages", "psm", "word_min_confidence"}`.
    pub ocr_meta: &'a Value,
    pub export_planner: bool,
    /// Reject on layout analysis before recognition (`BuildConfig::first_stage`).
    pub first_stage: bool,
}

/// What became of one input.
pub(crate) enum Outcome {
    Kept(Box<KeptSample>),
    Rejected {
        filter: &'static str,
        detail: String,
    },
    Error {
        kind: &'static str,
        reason: String,
    },
}

pub(crate) struct KeptSample {
    pub image_bytes: Vec<u8>,
    pub image_ext: &'static str,
    pub json: Value,
    pub mask_png: Vec<u8>,
    /// FastChat conversation, when planner export is on and the sample has a caption.
    pub planner: Option<Value>,
}

fn error(kind: &'static str, reason: impl Into<String>) -> Outcome {
    Outcome::Error {
        kind,
        reason: reason.into(),
    }
}

/// The input's image bytes, or the error outcome that records why there are none.
fn read_image_bytes(input: &Input, max_bytes: u64) -> Result<Vec<u8>, Outcome> {
    input::read_bytes(&input.location, max_bytes).map_err(|e| match e {
        ReadError::Io(e) => error("read", format!("cannot read: {e}")),
        ReadError::TooLarge(size) => error(
            "file_too_large",
            format!("{size} bytes is over the file size limit of {max_bytes} bytes"),
        ),
        ReadError::NoImage(members) => error(
            "no_image",
            format!(
                "the sample has no image member (members: {})",
                members.join(", ")
            ),
        ),
    })
}

/// The FastChat conversation that teaches the layout planner this sample's layout.
fn planner_conversation(key: &str, caption: &str, layout_td2: &str) -> Value {
    json!({
        "id": key,
        "conversations": [
            {"from": "human", "value": td2::planner_prompt(caption, &[])},
            {"from": "gpt", "value": layout_td2},
        ],
    })
}

pub(crate) fn process(
    input: &Input,
    key: &str,
    engine: &mut OcrEngine,
    cx: &SampleContext,
) -> Outcome {
    let bytes = match read_image_bytes(input, cx.limits.max_bytes) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let (mut caption, mut source_json) = (input.caption.clone(), input.source_json.clone());
    if let Location::File(path) = &input.location
        && caption.is_none()
    {
        let (c, j) = input::sidecar(path);
        caption = c;
        source_json = source_json.or(j);
    }
    let source = match decode::decode(&bytes, cx.limits) {
        Ok(s) => s,
        Err(e) => return error(e.kind, e.message),
    };
    let (original_width, original_height) = source.gray.dimensions();
    if let Err(r) = cx.filters.check_size(original_width, original_height) {
        return Outcome::Rejected {
            filter: r.filter,
            detail: r.detail,
        };
    }
    let gray = match cx.resize {
        Some(short) => resize_short_side(&source.gray, short),
        None => source.gray,
    };
    let page = match recognize(engine, &gray, cx) {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    let measures = Filters::measure(&page, caption.as_deref());
    if let Err(r) = cx.filters.check_text(&page, &measures) {
        return Outcome::Rejected {
            filter: r.filter,
            detail: r.detail,
        };
    }
    let layout = Layout::new(
        page.width,
        page.height,
        page.lines
            .iter()
            .map(|l| TextLine::new(l.text.clone(), l.bbox))
            .collect(),
    );
    let EncodedMask {
        png: mask_png,
        size: mask_size,
    } = match glyph_mask(cx.renderer, &layout) {
        Ok(m) => m,
        Err(e) => return error("mask", format!("glyph mask: {e}")),
    };
    let layout_td2 = td2::serialize(&layout);
    let planner = match (&caption, cx.export_planner) {
        (Some(c), true) => Some(planner_conversation(key, c, &layout_td2)),
        _ => None,
    };
    let image_ext = decode::extension(source.format);
    let json = record(RecordParts {
        key,
        input,
        caption: caption.as_deref(),
        source_json,
        original: (original_width, original_height),
        format: image_ext,
        color: &source.color,
        page: &page,
        measures: &measures,
        layout_td2: &layout_td2,
        mask_size,
        cx,
    });
    Outcome::Kept(Box::new(KeptSample {
        image_bytes: bytes,
        image_ext,
        json,
        mask_png,
        planner,
    }))
}

/// OCR of the (resized) image. With the first stage on, layout analysis runs alone first and
/// a page that cannot pass the word-count or text-area filter is rejected unrecognised; a
/// survivor is recognised on that same layout, so its page is the one the stage-off path reads.
fn recognize(
    engine: &mut OcrEngine,
    gray: &GrayImage,
    cx: &SampleContext,
) -> Result<OcrPage, Outcome> {
    let ocr_error = |e: crate::OcrError| error("ocr", e.to_string());
    if !cx.first_stage {
        return engine.recognize(gray).map_err(ocr_error);
    }
    let regions = engine.analyse_layout(gray).map_err(ocr_error)?;
    if let Err(r) = cx.filters.check_layout(&regions) {
        return Err(Outcome::Rejected {
            filter: r.filter,
            detail: r.detail,
        });
    }
    engine.recognize_analysed().map_err(ocr_error)
}

/// Scales so the short side is `short` pixels (up or down, as img2dataset's `keep_ratio`).
fn resize_short_side(image: &GrayImage, short: u32) -> GrayImage {
    let (w, h) = image.dimensions();
    let side = w.min(h);
    if side == short || short == 0 {
        return image.clone();
    }
    let scale = f64::from(short) / f64::from(side);
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    image::imageops::resize(image, nw, nh, image::imageops::FilterType::Triangle)
}

/// A PNG-encoded glyph mask and its size.
struct EncodedMask {
    png: Vec<u8>,
    size: (u32, u32),
}

/// The glyph mask of the OCR'd lines at the image's size (scaled down when a side is over the
/// renderer's limit).
fn glyph_mask(
    renderer: &Renderer,
    layout: &Layout,
) -> Result<EncodedMask, Box<dyn std::error::Error>> {
    let long = layout.width.max(layout.height);
    let layout = if long > MAX_MASK_SIDE {
        let s = f64::from(MAX_MASK_SIDE) / f64::from(long);
        let px = |v: i32| (f64::from(v) * s).round() as i32;
        let dim = |v: u32| ((f64::from(v) * s).round() as u32).clamp(1, MAX_MASK_SIDE);
        Layout::new(
            dim(layout.width),
            dim(layout.height),
            layout
                .lines
                .iter()
                .map(|l| {
                    let b = l.bbox;
                    let (left, top) = (px(b.left), px(b.top));
                    let bbox = BBox::new(
                        left,
                        top,
                        px(b.right).max(left + 1),
                        px(b.bottom).max(top + 1),
                    );
                    TextLine::new(l.text.clone(), bbox)
                })
                .collect(),
        )
    } else {
        layout.clone()
    };
    let rendering = renderer.render(&layout)?;
    let mask = &rendering.glyph_mask;
    let mut png = Vec::new();
    // Masks are mostly black; fast compression is nearly as small and several times faster.
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Sub).write_image(
        mask.as_raw(),
        mask.width(),
        mask.height(),
        image::ExtendedColorType::L8,
    )?;
    Ok(EncodedMask {
        png,
        size: (mask.width(), mask.height()),
    })
}

struct RecordParts<'a> {
    key: &'a str,
    input: &'a Input,
    caption: Option<&'a str>,
    source_json: Option<Value>,
    original: (u32, u32),
    format: &'a str,
    color: &'a str,
    page: &'a OcrPage,
    measures: &'a Measures,
    layout_td2: &'a str,
    mask_size: (u32, u32),
    cx: &'a SampleContext<'a>,
}

fn grid(b: &BBox, w: u32, h: u32) -> [u32; 4] {
    let g = b.to_grid(w, h);
    [g.l, g.t, g.r, g.b]
}

/// The sample's `key.json`.
fn record(p: RecordParts) -> Value {
    let (w, h) = (p.page.width, p.page.height);
    let words: Vec<Value> = p
        .page
        .words
        .iter()
        .map(|x| json!({"text": x.text, "bbox": x.bbox, "bbox_128": grid(&x.bbox, w, h), "confidence": x.confidence}))
        .collect();
    let lines: Vec<Value> = p
        .page
        .lines
        .iter()
        .map(|x| json!({"text": x.text, "bbox": x.bbox, "bbox_128": grid(&x.bbox, w, h), "words": x.words}))
        .collect();
    let chars: Vec<Value> = p
        .page
        .chars
        .iter()
        .map(|x| json!({"char": x.text, "bbox": x.bbox, "bbox_128": grid(&x.bbox, w, h), "confidence": x.confidence}))
        .collect();
    json!({
        "key": p.key,
        "source": p.input.source,
        "caption": p.caption,
        "original_width": p.original.0,
        "original_height": p.original.1,
        "format": p.format,
        "color_type": p.color,
        // Boxes are in the pixels of the image OCR saw: the original, or resized.
        "width": w,
        "height": h,
        "resize_short_side": p.cx.resize,
        "words": words,
        "lines": lines,
        "chars": chars,
        "layout_td2": p.layout_td2,
        "mask_size": [p.mask_size.0, p.mask_size.1],
        "text_area": p.measures.text_area,
        "mean_confidence": p.measures.mean_confidence,
        "caption_match": p.measures.caption_match,
        "ocr": p.cx.ocr_meta,
        "letterpress_version": env!("CARGO_PKG_VERSION"),
        "source_json": p.source_json,
    })
}

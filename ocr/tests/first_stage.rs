//! The first stage (layout analysis before recognition) on the committed real images, rendered
//! posters and procedural photographs: recognising an analysed layout reads the same page as
//! recognising directly, the layout's text-area bound holds, and a dataset build keeps the very
//! same samples with the stage on and off.

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageEncoder};
use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_ocr::dataset::{BuildConfig, NoProgress, build, textless_photo};
use letterpress_ocr::{OcrConfig, OcrEngine};
use letterpress_render::Renderer;

const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/real");

fn real_images() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(REAL)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    paths.sort();
    paths
}

fn poster(lines: &[&str]) -> GrayImage {
    let layout = Layout::new(
        512,
        512,
        lines
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let top = 60 + i as i32 * 140;
                TextLine::new(*t, BBox::new(40, top, 472, top + 80))
            })
            .collect(),
    );
    Renderer::with_default_font()
        .unwrap()
        .render(&layout)
        .unwrap()
        .inverse()
}

/// The committed real images, two posters (one kept, one with too many words) and six
/// photographs (one of each kind), as greyscale images with names.
fn images() -> Vec<(String, GrayImage)> {
    let mut images: Vec<(String, GrayImage)> = real_images()
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, image::open(&p).unwrap().to_luma8())
        })
        .collect();
    images.push((
        "poster-kept.png".into(),
        poster(&["Summer Sale", "June 21"]),
    ));
    images.push((
        "poster-wordy.png".into(),
        poster(&["one two three", "four five six", "seven eight nine"]),
    ));
    for i in 0..6 {
        let photo = image::DynamicImage::ImageRgb8(textless_photo(3, i, 320, 256)).to_luma8();
        images.push((format!("photo-{i}.png"), photo));
    }
    images
}

#[test]
fn recognising_the_analysed_layout_reads_the_same_page_and_the_area_bound_holds() {
    let mut direct = OcrEngine::new(OcrConfig::default()).unwrap();
    let mut staged = OcrEngine::new(OcrConfig::default()).unwrap();
    for (name, image) in images() {
        let page = direct.recognize(&image).unwrap();
        let regions = staged.analyse_layout(&image).unwrap();
        assert_eq!(staged.recognize_analysed().unwrap(), page, "{name}");
        // The bound is checked against every word (no confidence floor), the strictest case.
        let area = page
            .words
            .iter()
            .map(|w| f64::from(w.bbox.width()) * f64::from(w.bbox.height()))
            .sum::<f64>()
            / (f64::from(page.width) * f64::from(page.height));
        assert!(
            f64::from(regions.text_area_bound()) + 1e-6 >= area.min(1.0),
            "{name}: bound {} < text area {area}",
            regions.text_area_bound()
        );
        if regions.is_empty() {
            assert!(page.words.is_empty(), "{name}: words without layout words");
        }
    }
    assert!(
        staged.recognize_analysed().is_err(),
        "a layout is recognised once"
    );
}

fn png(image: &GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .unwrap();
    out
}

fn build_with(input: &Path, output: &Path, first_stage: bool) -> letterpress_ocr::dataset::Stats {
    let mut c = BuildConfig::new(input, output);
    c.jobs = 2;
    c.first_stage = first_stage;
    build(&c, &NoProgress).unwrap().stats
}

#[test]
fn a_build_keeps_the_same_samples_with_the_first_stage_on_and_off() {
    let dir = std::env::temp_dir().join(format!("letterpress-first-stage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for (name, image) in images() {
        std::fs::write(input.join(name), png(&image)).unwrap();
    }
    let on = build_with(&input, &dir.join("on"), true);
    let off = build_with(&input, &dir.join("off"), false);
    assert!(on.kept >= 1, "{on:?}");
    assert_eq!(on.kept, off.kept);
    assert_eq!(on.rejected_total(), off.rejected_total());
    assert!(
        on.rejected["layout_word_count"] + on.rejected["layout_text_area"] >= 3,
        "the photographs are rejected on their layout: {on:?}"
    );
    assert_eq!(off.rejected["layout_word_count"], 0);
    // The shard holds the kept samples only: image, JSON record and glyph mask, byte for byte.
    assert_eq!(
        std::fs::read(dir.join("on/00000.tar")).unwrap(),
        std::fs::read(dir.join("off/00000.tar")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

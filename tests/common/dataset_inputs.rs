//! Inputs for the dataset build tests: rendered two-word posters, every 40th (from the 8th)
//! a broken file that must end up as an error.

use std::path::Path;

use image::ImageEncoder;
use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_render::Renderer;

const WORDS: [&str; 12] = [
    "summer", "sale", "coffee", "house", "jazz", "night", "book", "fair", "open", "late", "film",
    "club",
];

/// Writes `n` inputs `img0000.png`… into `dir` (created); returns how many are broken.
pub fn write_posters(dir: &Path, n: usize) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let renderer = Renderer::with_default_font().unwrap();
    let mut broken = 0;
    for i in 0..n {
        let path = dir.join(format!("img{i:04}.png"));
        if i % 40 == 7 {
            std::fs::write(&path, b"not a png").unwrap();
            broken += 1;
            continue;
        }
        let words = [WORDS[i % 12], WORDS[(i * 7 + 3) % 12]];
        let layout = Layout::new(
            256,
            256,
            vec![
                TextLine::new(words[0], BBox::new(16, 30, 240, 110)),
                TextLine::new(words[1], BBox::new(16, 140, 240, 220)),
            ],
        );
        let image = renderer.render(&layout).unwrap().inverse();
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(image.as_raw(), 256, 256, image::ExtendedColorType::L8)
            .unwrap();
        std::fs::write(&path, png).unwrap();
    }
    broken
}

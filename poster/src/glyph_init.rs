//! Glyph latent initialisation: the layout's text drawn in one colour over a plain background
//! in another, which the pipeline encodes with the VAE and noises to a strength before
//! denoising (SDEdit, Meng et al. 2022). A model too small to draw letters from noise alone
//! still starts from their shapes; the strength says how much of the picture it repaints
//! (docs/architecture.md, "Glyph initialisation").

use image::{GrayImage, Rgb, RgbImage};
use letterpress_ocr::dataset::COLOURS;

/// Background when the prompt names no colour.
const NEUTRAL: [u8; 3] = [128, 128, 128];
const DARK_INK: [u8; 3] = [20, 20, 20];
const LIGHT_INK: [u8; 3] = [245, 245, 240];

/// The background the prompt asks for: the first colour word in it, with the values the
/// embedded model's synthetic corpus paints under each name (American "gray" too), else mid
/// grey.
pub fn background_colour(prompt: &str) -> [u8; 3] {
    prompt
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .find_map(|word| {
            let word = match word.to_lowercase() {
                w if w == "gray" => "grey".to_string(),
                w => w,
            };
            COLOURS
                .iter()
                .find(|(name, _)| *name == word)
                .map(|(_, rgb)| *rgb)
        })
        .unwrap_or(NEUTRAL)
}

/// Near-black ink on a light background, near-white on a dark one: the most contrast, so the
/// letters survive the VAE and the noise.
fn ink_for(background: [u8; 3]) -> [u8; 3] {
    let luma = 0.299 * f32::from(background[0])
        + 0.587 * f32::from(background[1])
        + 0.114 * f32::from(background[2]);
    if luma > 140.0 { DARK_INK } else { LIGHT_INK }
}

/// The starting picture: `glyph_mask` (white text on black, anti-aliased) as ink over the
/// prompt's background colour, the mask's grey levels blending the two.
pub fn glyph_init_image(prompt: &str, glyph_mask: &GrayImage) -> RgbImage {
    let background = background_colour(prompt);
    let ink = ink_for(background);
    RgbImage::from_fn(glyph_mask.width(), glyph_mask.height(), |x, y| {
        let a = f32::from(glyph_mask.get_pixel(x, y).0[0]) / 255.0;
        let blend =
            |i: usize| (f32::from(background[i]) * (1.0 - a) + f32::from(ink[i]) * a).round() as u8;
        Rgb([blend(0), blend(1), blend(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_colour_named_is_the_background() {
        assert_eq!(background_colour("a NAVY poster, red text"), [20, 30, 80]);
        assert_eq!(background_colour("a blue-gray banner"), [40, 80, 190]);
        assert_eq!(background_colour("a GRAY banner"), [128, 128, 128]);
        assert_eq!(
            background_colour("a gray banner"),
            background_colour("a grey banner")
        );
        assert_eq!(background_colour("a poster that says 'SALE'"), NEUTRAL);
        // Whole words only: "redwood" names no colour.
        assert_eq!(background_colour("redwood forest"), NEUTRAL);
    }

    #[test]
    fn ink_follows_the_mask_over_the_background() {
        let mut mask = GrayImage::new(4, 1);
        mask.put_pixel(1, 0, image::Luma([255]));
        mask.put_pixel(2, 0, image::Luma([128]));
        let dark = glyph_init_image("a navy poster", &mask);
        assert_eq!(dark.get_pixel(0, 0).0, [20, 30, 80]);
        assert_eq!(dark.get_pixel(1, 0).0, LIGHT_INK);
        let half = dark.get_pixel(2, 0).0;
        assert!(half[0] > 20 && half[0] < 245, "{half:?}");
        let light = glyph_init_image("a yellow poster", &mask);
        assert_eq!(light.get_pixel(1, 0).0, DARK_INK);
        assert_eq!(light.get_pixel(3, 0).0, [245, 210, 60]);
    }
}

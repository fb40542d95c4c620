//! What a poster carries so it can be reproduced: the settings, seed and layout, written into
//! PNG text chunks as A1111 and ComfyUI write them (one chunk per field, plus A1111's
//! `parameters` chunk that its "PNG Info" tab and many tools read back).

use image::RgbImage;
use letterpress_layout::Layout;

use crate::ControlOptions;

/// The settings a poster was made with; [`PosterMetadata::png_text`] gives an image's chunks.
#[derive(Debug, Clone)]
pub struct PosterMetadata {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    /// The scheduler that ran, by its diffusers class name (`DDIMScheduler`, …).
    pub scheduler: &'static str,
    pub guidance_scale: f64,
    /// The model folder's or file's name.
    pub model: String,
    /// The ControlNet settings, when a ControlNet saw the glyph mask.
    pub control: Option<ControlOptions>,
    /// img2img / inpainting strength, when the poster started from a picture.
    pub strength: Option<f64>,
    /// Glyph initialisation strength, when the poster started from its glyphs.
    pub glyph_init: Option<f64>,
    /// The layout the text was drawn from, when there was text.
    pub layout: Option<Layout>,
}

impl PosterMetadata {
    /// `key → value` text chunks for the image made with `seed`, in the order written.
    pub fn png_text(&self, seed: u64) -> Vec<(String, String)> {
        let mut pairs: Vec<(&str, String)> = vec![
            ("Steps", self.steps.to_string()),
            ("Sampler", self.scheduler.to_string()),
            ("CFG scale", self.guidance_scale.to_string()),
            ("Seed", seed.to_string()),
            ("Size", format!("{}x{}", self.width, self.height)),
            ("Model", self.model.clone()),
        ];
        if let Some(c) = &self.control {
            pairs.push((
                "ControlNet",
                format!(
                    "\"weight: {}, guidance start: {}, guidance end: {}, guess mode: {}\"",
                    c.conditioning_scale, c.guidance_start, c.guidance_end, c.guess_mode
                ),
            ));
        }
        if let Some(strength) = self.strength {
            pairs.push(("Denoising strength", strength.to_string()));
        }
        if let Some(strength) = self.glyph_init {
            pairs.push(("Glyph init", strength.to_string()));
        }
        pairs.push((
            "Version",
            format!("letterpress {}", env!("CARGO_PKG_VERSION")),
        ));
        let mut text = vec![
            (
                "parameters".to_string(),
                a1111_parameters(&self.prompt, &self.negative_prompt, &pairs),
            ),
            ("prompt".to_string(), self.prompt.clone()),
            ("negative_prompt".to_string(), self.negative_prompt.clone()),
            ("seed".to_string(), seed.to_string()),
            ("steps".to_string(), self.steps.to_string()),
            ("scheduler".to_string(), self.scheduler.to_string()),
            (
                "guidance_scale".to_string(),
                self.guidance_scale.to_string(),
            ),
            ("model".to_string(), self.model.clone()),
        ];
        if let Some(strength) = self.glyph_init {
            text.push(("glyph_init".to_string(), strength.to_string()));
        }
        if let Some(layout) = &self.layout {
            // A layout always serialises (plain strings and numbers).
            if let Ok(json) = serde_json::to_string(layout) {
                text.push(("layout".to_string(), json));
            }
        }
        text
    }
}

/// A1111's `parameters` text: the prompt, a `Negative prompt:` line, then `Key: value` pairs.
pub fn a1111_parameters(prompt: &str, negative: &str, pairs: &[(&str, String)]) -> String {
    let mut s = prompt.to_string();
    if !negative.is_empty() {
        s.push_str("\nNegative prompt: ");
        s.push_str(negative);
    }
    s.push('\n');
    s.push_str(
        &pairs
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    s
}

/// An 8-bit RGB PNG with `text` chunks, in order. Latin-1 values go in `tEXt` (what A1111
/// writes); anything else in `iTXt` (UTF-8), since `tEXt` cannot hold it.
pub fn encode_png(
    image: &RgbImage,
    text: &[(String, String)],
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (key, value) in text {
        if value.chars().all(|c| (c as u32) < 256) {
            encoder.add_text_chunk(key.clone(), value.clone())?;
        } else {
            encoder.add_itxt_chunk(key.clone(), value.clone())?;
        }
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(image.as_raw())?;
    writer.finish()?;
    Ok(out)
}

/// The text chunks of a PNG (tEXt, zTXt and iTXt), in file order.
pub fn read_png_text(bytes: &[u8]) -> Result<Vec<(String, String)>, png::DecodingError> {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info()?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.compressed_latin1_text {
        out.push((t.keyword.clone(), t.get_text().unwrap_or_default()));
    }
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_round_trip_latin1_and_utf8() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        let text = vec![
            ("prompt".to_string(), "café SALE".to_string()),
            ("layout".to_string(), "日本語".to_string()),
        ];
        let png = encode_png(&img, &text).unwrap();
        let mut back = read_png_text(&png).unwrap();
        back.sort();
        let mut want = text.clone();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8(), img);
    }

    #[test]
    fn a1111_format() {
        let p = a1111_parameters(
            "a cat",
            "blurry",
            &[("Steps", "20".into()), ("Seed", "1".into())],
        );
        assert_eq!(p, "a cat\nNegative prompt: blurry\nSteps: 20, Seed: 1");
    }

    #[test]
    fn png_text_names_the_seed_and_control_settings() {
        let meta = PosterMetadata {
            prompt: "a poster".into(),
            negative_prompt: String::new(),
            width: 256,
            height: 128,
            steps: 4,
            scheduler: "DDIMScheduler",
            guidance_scale: 7.5,
            model: "tiny".into(),
            control: Some(ControlOptions::default()),
            strength: Some(0.5),
            glyph_init: Some(0.6),
            layout: None,
        };
        let text = meta.png_text(42);
        let get = |k: &str| {
            text.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("seed").as_deref(), Some("42"));
        let params = get("parameters").unwrap();
        assert!(params.contains("Seed: 42, Size: 256x128"), "{params}");
        assert!(
            params.contains("guidance end: 1, guess mode: false"),
            "{params}"
        );
        assert!(params.contains("Denoising strength: 0.5"), "{params}");
        assert!(params.contains("Glyph init: 0.6"), "{params}");
        assert_eq!(get("glyph_init").as_deref(), Some("0.6"));
        assert!(get("layout").is_none());
    }
}

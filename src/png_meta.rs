//! PNGs with generation metadata in text chunks, as A1111 and ComfyUI write them: one chunk per
//! field, plus A1111's `parameters` chunk that its "PNG Info" tab and many tools read back.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use image::RgbImage;

/// `key → value` pairs, written in order. Latin-1 values go in `tEXt` (what A1111 writes);
/// anything else in `iTXt` (UTF-8), since `tEXt` cannot hold it.
pub fn write_png(path: &Path, image: &RgbImage, text: &[(String, String)]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (key, value) in text {
        let latin1 = value.chars().all(|c| (c as u32) < 256);
        if latin1 {
            encoder.add_text_chunk(key.clone(), value.clone())
        } else {
            encoder.add_itxt_chunk(key.clone(), value.clone())
        }
        .with_context(|| format!("adding the {key} text chunk"))?;
    }
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("writing {}", path.display()))?;
    writer
        .write_image_data(image.as_raw())
        .with_context(|| format!("writing {}", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The text chunks of a PNG (tEXt, zTXt and iTXt), in file order.
#[allow(dead_code)] // used by tests through the binary's behaviour; kept for `letterpress` users
pub fn read_text(path: &Path) -> Result<Vec<(String, String)>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder
        .read_info()
        .with_context(|| format!("reading {}", path.display()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().unwrap_or_default()));
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_round_trip_latin1_and_utf8() {
        let dir = std::env::temp_dir().join(format!("lp-png-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        let img = RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        let text = vec![
            ("prompt".to_string(), "café SALE".to_string()),
            ("layout".to_string(), "日本語".to_string()),
        ];
        write_png(&path, &img, &text).unwrap();
        let mut back = read_text(&path).unwrap();
        back.sort();
        let mut want = text.clone();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(image::open(&path).unwrap().to_rgb8(), img);
        std::fs::remove_dir_all(&dir).ok();
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
}

//! `letterpress edit`: replace text in an existing picture, in place (letterpress-poster's
//! `PosterEngine::edit`); the PNG written carries what was replaced and the certificate.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use image::DynamicImage;
use letterpress_layout::Layout;
use letterpress_poster::{
    EditRequest, LayoutTokens, PosterError, PosterText, Replacement, encode_png, plan_edit,
    read_png_text,
};
use letterpress_render::{RenderOptions, Renderer};

use crate::model_options::{ModelOptions, load_engine, poster_request};

#[derive(Args)]
pub struct EditArgs {
    /// The picture to edit (PNG or JPEG). A Letterpress PNG's own layout helps find text OCR
    /// cannot read.
    image: PathBuf,
    /// OLD=NEW: replace the word or line OLD (matched as OCR reads it, case and surrounding
    /// punctuation ignored) with NEW. Repeat for several.
    #[arg(long = "replace", required = true)]
    replacements: Vec<String>,
    /// What the picture shows, for the model. Default: "a poster".
    #[arg(long, default_value = "a poster")]
    prompt: String,
    #[command(flatten)]
    options: ModelOptions,
    /// Output PNG.
    #[arg(short, long)]
    output: PathBuf,
}

fn parse_replacement(s: &str) -> Result<Replacement> {
    match s.split_once('=') {
        Some((old, new)) if !old.trim().is_empty() && !new.trim().is_empty() => Ok(Replacement {
            old: old.trim().to_string(),
            new: new.trim().to_string(),
        }),
        _ => bail!("--replace {s:?}: expected OLD=NEW, both non-empty"),
    }
}

/// The engine's error in the CLI's words: `replacements[i].…` becomes the `--replace` it came
/// from, `image` the IMAGE argument.
fn in_flags(e: PosterError, args: &EditArgs) -> anyhow::Error {
    match &e {
        PosterError::Edit { field, message } => {
            let index = field
                .strip_prefix("replacements[")
                .and_then(|rest| rest.split(']').next())
                .and_then(|i| i.parse::<usize>().ok());
            match index.and_then(|i| args.replacements.get(i)) {
                Some(given) => anyhow!("--replace {given:?}: {message}"),
                None => anyhow!("{field}: {message}"),
            }
        }
        PosterError::Request {
            field: "image",
            message,
        } => {
            anyhow!("IMAGE {}: {message}", args.image.display())
        }
        _ => anyhow::Error::new(e),
    }
}

pub fn run(args: EditArgs) -> Result<()> {
    if let Some(flag) = args.options.edit_conflict() {
        bail!("{flag}: not used by edit");
    }
    let is_png = args
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        bail!(
            "-o {}: the output must be a .png file",
            args.output.display()
        );
    }
    let replacements = args
        .replacements
        .iter()
        .map(|s| parse_replacement(s))
        .collect::<Result<Vec<_>>>()?;
    let bytes = std::fs::read(&args.image)
        .with_context(|| format!("reading IMAGE {}", args.image.display()))?;
    let decoded = image::load_from_memory(&bytes)
        .with_context(|| format!("IMAGE {}: not a readable picture", args.image.display()))?;
    let image =
        keepable_rgb(decoded).map_err(|why| anyhow!("IMAGE {}: {why}", args.image.display()))?;
    let known_layout = read_png_text(&bytes)
        .ok()
        .and_then(|text| text.into_iter().find(|(k, _)| k == "layout"))
        .and_then(|(_, json)| Layout::from_json(&json).ok())
        .map(|l| l.fitted_to(image.width(), image.height()));
    let mut base = poster_request(&args.prompt, PosterText::Quoted, &args.options)?;
    // A TextDiffuser-2 model reads the new lines' layout tokens by itself (`--td2`: always).
    if base.layout_tokens == LayoutTokens::Never {
        base.layout_tokens = LayoutTokens::Auto;
    }
    // Every check an edit makes before painting (size, OLD found, NEW fits and has glyphs)
    // runs before the model loads, so a bad edit fails at once and writes nothing.
    let mut render = RenderOptions::default();
    if let Some(font) = &args.options.font {
        render.font = font.clone();
    }
    let renderer = Renderer::new(render)?;
    let plan = plan_edit(&renderer, &image, &replacements, known_layout.as_ref())
        .map_err(|e| in_flags(e, &args))?;
    let engine = load_engine(&args.options)?;
    let request = EditRequest {
        image,
        replacements,
        known_layout,
        base,
    };
    let edited = engine
        .paint_edit(&request, plan, &|| false)
        .map_err(|e| in_flags(e, &args))?;
    for (r, b) in request.replacements.iter().zip(&edited.boxes) {
        println!(
            "{:?} → {:?}: found by {} at {:?}, drawn in {:?} at {:.0} px",
            r.old, r.new, b.found_by, b.found, b.drawn, b.font_px
        );
    }
    let c = &edited.certificate;
    println!("new text read back: {}/{} right", c.lines_ok, c.line_count);
    let edits: Vec<serde_json::Value> = request
        .replacements
        .iter()
        .zip(&edited.boxes)
        .map(|(r, b)| {
            let bbox = |b: &letterpress_layout::BBox| [b.left, b.top, b.right, b.bottom];
            serde_json::json!({"old": r.old, "new": r.new, "found": bbox(&b.found),
                "found_by": b.found_by, "drawn": bbox(&b.drawn), "font_px": b.font_px})
        })
        .collect();
    let text = vec![
        ("prompt".to_string(), args.prompt.clone()),
        ("seed".to_string(), edited.seed.to_string()),
        ("edits".to_string(), serde_json::to_string(&edits)?),
        ("certificate".to_string(), c.to_json()),
    ];
    let png = encode_png(&edited.image, &text).context("encoding the PNG")?;
    std::fs::write(&args.output, png)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let Some(path) = &args.options.certificate {
        std::fs::write(path, c.to_json())
            .with_context(|| format!("writing --certificate {}", path.display()))?;
    }
    println!("{} (seed {})", args.output.display(), edited.seed);
    Ok(())
}

/// The picture as 8-bit RGB, refused when that would change pixels the edit must keep:
/// transparency or 16-bit samples would not survive, so every pixel would differ.
fn keepable_rgb(decoded: DynamicImage) -> Result<image::RgbImage, String> {
    let color = decoded.color();
    if color.bytes_per_pixel() / color.channel_count() > 1 {
        return Err(format!(
            "{color:?} has 16-bit or float samples, which the edited PNG (8-bit RGB) cannot \
             keep: save it as 8-bit first"
        ));
    }
    if color.has_alpha() && decoded.to_rgba8().pixels().any(|p| p.0[3] < 255) {
        return Err(
            "it has transparent pixels, which the edited PNG (RGB) cannot keep: flatten it \
             first"
                .into(),
        );
    }
    Ok(decoded.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_need_both_sides() {
        let r = parse_replacement("SALE = DEAL").unwrap();
        assert_eq!((r.old.as_str(), r.new.as_str()), ("SALE", "DEAL"));
        assert!(parse_replacement("SALE").is_err());
        assert!(parse_replacement("=DEAL").is_err());
        assert!(parse_replacement("SALE=").is_err());
    }
}

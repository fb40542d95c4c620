//! The embedded demo model (`models/embedded/`, models/README.md): a small pipeline whose UNet
//! reads the glyph mask as input channels (docs/architecture.md, "Glyph input channels"),
//! trained from scratch by `letterpress train` on the synthetic corpus, compiled into
//! the binary so that `letterpress poster` works with no weights on the machine. On first use
//! its files are written once to a cache folder named by their hash (computed by build.rs),
//! because the model loader reads diffusers folders.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/embedded/", $path)))),*]
    };
}

/// `(path inside the pipeline folder, bytes)`.
const FILES: &[(&str, &[u8])] = embedded![
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// What the CLI prints when it falls back to the embedded model.
pub const DESCRIPTION: &str = "the embedded demo model (8 M parameters, trained on synthetic \
                               posters; pass --model-dir for a real one)";

/// Glyph initialisation strength the embedded model starts from by default: it paints no
/// letters from pure noise, and below 0.6 the result is mostly the drawing itself rather than
/// the model's picture (models/README.md, "Glyph initialisation").
pub const GLYPH_INIT: f64 = 0.6;

/// A hash of the model's files, computed by build.rs: names the cache folder, so a new
/// build's model never reuses an old one's files.
const FINGERPRINT: &str = env!("LETTERPRESS_EMBEDDED_HASH");

fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("letterpress")
}

/// The embedded pipeline as a diffusers folder, written on first use.
pub fn folder() -> Result<PathBuf> {
    let root = cache_root();
    let dir = root.join(format!("embedded-{FINGERPRINT}"));
    if dir.join("model_index.json").is_file() {
        return Ok(dir);
    }
    // Written under a private name and renamed, so a concurrent or killed first run never
    // leaves a half-written folder under the final name.
    let partial = root.join(format!(
        ".embedded-{FINGERPRINT}.{}.partial",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    for (path, bytes) in FILES {
        let file = partial.join(path);
        let parent = file.parent().expect("files are inside the folder");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
    }
    if let Err(e) = std::fs::rename(&partial, &dir) {
        let _ = std::fs::remove_dir_all(&partial);
        // Another process finished first: its folder is as good as ours.
        if !dir.join("model_index.json").is_file() {
            return Err(e).with_context(|| format!("writing {}", dir.display()));
        }
    }
    Ok(dir)
}

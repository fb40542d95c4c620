//! Embeds the designer page (built by `scripts/setup` with npm into `plugin/web/dist`). When it
//! has not been built, a placeholder page that says so is embedded instead, so the crate still
//! builds (clippy, CI lint) and `/` tells the user what to run.

use std::path::{Path, PathBuf};

const ASSETS: [&str; 3] = ["index.html", "designer.js", "designer.css"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = manifest.join("../plugin/web/dist");
    for name in ASSETS {
        println!("cargo:rerun-if-changed={}", dist.join(name).display());
    }
    let dir = if ASSETS.iter().all(|n| dist.join(n).is_file()) {
        dist
    } else {
        println!(
            "cargo:warning=the designer page is not built ({} is missing): `/` serves a placeholder. \
             Run scripts/setup (npm ci && npm run build in plugin/), then rebuild.",
            dist.display()
        );
        placeholder(&PathBuf::from(
            std::env::var_os("OUT_DIR").expect("set by cargo"),
        ))
    };
    println!("cargo:rustc-env=LETTERPRESS_DESIGNER_DIR={}", dir.display());
}

fn placeholder(out: &Path) -> PathBuf {
    let dir = out.join("designer-placeholder");
    std::fs::create_dir_all(&dir).expect("creating OUT_DIR/designer-placeholder");
    let page = "<!doctype html><meta charset=\"utf-8\"><title>Letterpress</title>\
        <p id=\"designer-missing\">This build of letterpress has no designer page: its assets were \
        not built when it was compiled. Run <code>scripts/setup</code> (it builds <code>plugin/</code> \
        with npm), then <code>cargo build</code> again. The API itself works: see \
        <a href=\"/docs\">/docs</a>.</p>";
    for (name, body) in [
        ("index.html", page),
        ("designer.js", ""),
        ("designer.css", ""),
    ] {
        std::fs::write(dir.join(name), body).expect("writing the placeholder designer");
    }
    dir
}

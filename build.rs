//! Embeds libtorch's directory as an rpath so `letterpress` and its tests run with no
//! environment set. torch-sys (`links = "tch"`) exports the directory as `DEP_TCH_LIBTORCH_LIB`.
//!
//! Also hashes the embedded demo model (`models/embedded/`) once per build into
//! `LETTERPRESS_EMBEDDED_HASH`, which names its cache folder (src/embedded_model.rs), so no run
//! pays for hashing 19 MB at start-up.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// FNV-1a over every file's path (relative to `root`) and bytes, in path order.
fn model_hash(root: &Path) -> u64 {
    let mut paths = Vec::new();
    files(root, &mut paths);
    paths.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for path in paths {
        let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
        let bytes = std::fs::read(&path).unwrap_or_default();
        for b in name.bytes().chain(bytes) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    // The run-time variable, not `env!`: a build script compiled once is reused by cargo for
    // another checkout sharing the target folder, and would hash that checkout's model.
    let root =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let model = root.join("models/embedded");
    println!("cargo:rerun-if-changed={}", model.display());
    println!(
        "cargo:rustc-env=LETTERPRESS_EMBEDDED_HASH={:016x}",
        model_hash(&model)
    );
}

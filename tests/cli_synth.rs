//! `letterpress dataset synth`: shards in `dataset build`'s format, reproducible from the seed,
//! resumable by shard, captions that name the text.

use std::path::{Path, PathBuf};
use std::process::Command;

use letterpress_ocr::dataset::read_samples;

fn synth(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_letterpress"))
        .args([
            "dataset",
            "synth",
            "--n",
            "7",
            "--shard-size",
            "4",
            "--seed",
            "11",
        ])
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("run letterpress")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("letterpress-synth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn synth_writes_reproducible_resumable_shards_with_masks_and_captions() {
    let (a, b) = (tmp("a"), tmp("b"));
    let out = synth(&a, &["--jobs", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("samples: 7, shards: 2"));
    let out = synth(&b, &["--jobs", "1"]);
    assert!(out.status.success());
    for f in [
        "00000.tar",
        "00001.tar",
        "00000.jsonl",
        "00001_stats.json",
        "stats.json",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).expect(f),
            std::fs::read(b.join(f)).expect(f),
            "{f}: same seed, different bytes"
        );
    }

    let samples = read_samples(&a).expect("read back");
    assert_eq!(samples.len(), 7);
    for s in &samples {
        let image = image::load_from_memory(&s.image).expect("image decodes");
        assert_eq!((image.width(), image.height()), (256, 256));
        let mask = image::load_from_memory(&s.mask_png)
            .expect("mask")
            .to_luma8();
        assert_eq!(mask.dimensions(), (256, 256));
        assert!(mask.pixels().any(|p| p.0[0] > 200), "{}: empty mask", s.key);
        let caption = s.caption();
        assert!(caption.contains(" poster with the word"), "{caption}");
        for k in s.json["synth"]["keywords"].as_array().expect("keywords") {
            let k = k.as_str().expect("keyword");
            assert!(caption.contains(&format!("'{k}'")), "{caption} lacks {k}");
            // The planner may break a phrase over lines; every word is placed.
            let layout = s.json["layout_td2"].as_str().expect("layout");
            for word in k.split_whitespace() {
                assert!(layout.contains(word), "the layout places {word}: {layout}");
            }
        }
    }

    // Resume: a shard without its stats file is redone, to the same bytes.
    let before = std::fs::read(a.join("00001.tar")).unwrap();
    std::fs::remove_file(a.join("00001_stats.json")).unwrap();
    std::fs::write(a.join("00001.tar"), b"half-written").unwrap();
    let out = synth(&a, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 resumed)"));
    assert_eq!(std::fs::read(a.join("00001.tar")).unwrap(), before);

    // Other settings into the same folder are refused.
    let out = synth(&a, &["--size", "320"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other settings"));
    let out = synth(&tmp("small"), &["--size", "64"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("256..=2048"));
}

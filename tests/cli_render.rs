//! `letterpress render` end to end: files written, standard input, and errors for bad input.

use std::io::Write;
use std::process::{Command, Stdio};

fn letterpress() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_letterpress"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("letterpress-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `letterpress render - ARGS` with `json` on standard input.
fn render_stdin(json: &str, args: &[&str]) -> std::process::Output {
    let mut child = letterpress()
        .args(["render", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn renders_the_example_with_every_output() {
    let dir = temp_dir("all");
    let out = letterpress()
        .args(["render", "examples/poster-layout.json", "-o"])
        .arg(dir.join("mask.png"))
        .arg("--seg")
        .arg(dir.join("seg.png"))
        .arg("--preview")
        .arg(dir.join("preview.png"))
        .arg("--boxes")
        .arg(dir.join("boxes.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["mask.png", "seg.png", "preview.png"] {
        let img = image::open(dir.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (512, 512), "{name}");
    }
    let mask = image::open(dir.join("mask.png")).unwrap().to_luma8();
    assert!(mask.pixels().any(|p| p.0[0] == 255));
    let boxes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("boxes.json")).unwrap()).unwrap();
    let n_chars = boxes["char_boxes"].as_array().unwrap().len();
    assert!(n_chars > 30, "{n_chars} char boxes");
    assert_eq!(
        boxes["layout"]["lines"].as_array().unwrap().len(),
        4,
        "the layout is echoed for reproducibility"
    );
    // The printed paths are the files written.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_standard_input_and_inverts() {
    let dir = temp_dir("stdin");
    let json = r#"{"width":128,"height":64,"lines":[{"text":"Hi","bbox":[0,0,128,64]}]}"#;
    let out = render_stdin(
        json,
        &["--inverse", "-o", dir.join("inv.png").to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(dir.join("inv.png")).unwrap().to_luma8();
    assert_eq!(img.dimensions(), (128, 64));
    assert_eq!(img.get_pixel(0, 0).0[0], 255, "white background");
    assert!(img.pixels().any(|p| p.0[0] == 0), "black text");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_fails_with_a_message_and_writes_nothing() {
    let dir = temp_dir("bad");
    let cases: [(&str, &str); 4] = [
        (
            r#"{"width":512,"height":512,"lines":[{"text":"a","bbox":[10,10,5,50]}]}"#,
            "line 0",
        ),
        (r#"{"width":0,"height":512,"lines":[]}"#, "1..=4096"),
        (
            r#"{"width":512,"height":512,"lines":[{"text":"a"}]}"#,
            "bbox",
        ),
        ("not json", "parsing"),
    ];
    for (json, expect) in cases {
        let mask = dir.join("mask.png");
        let out = render_stdin(json, &["-o", mask.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expect), "{json}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!mask.exists());
    }
    let out = letterpress()
        .args(["render", "/no/such/layout.json", "-o", "x.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/layout.json"));
    let _ = std::fs::remove_dir_all(&dir);
}

//! `letterpress layout` end to end.

use std::process::Command;

fn letterpress(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_letterpress"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_output_is_the_layout_with_its_metadata() {
    let out = letterpress(&[
        "layout",
        "a poster that says 'Grand Opening' and \"free coffee\"",
        "--seed",
        "9",
        "--size",
        "768x512",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(768), Some(512))
    );
    assert_eq!(v["seed"], 9);
    assert_eq!(
        v["keywords"],
        serde_json::json!(["Grand Opening", "free coffee"])
    );
    assert_eq!(v["planner"], "typographic");
    assert!(v["warnings"].is_array());
    let layout =
        letterpress_layout::Layout::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(layout.lines.len(), 2);
    // Same seed, same layout.
    let again = letterpress(&[
        "layout",
        "a poster that says 'Grand Opening' and \"free coffee\"",
        "--seed",
        "9",
        "--size",
        "768x512",
    ]);
    assert_eq!(again.stdout, out.stdout);
}

#[test]
fn td2_format_and_render() {
    let mask = std::env::temp_dir().join(format!("letterpress-layout-{}.png", std::process::id()));
    let out = letterpress(&[
        "layout",
        "x",
        "--keywords",
        "SALE/today only",
        "--format",
        "td2",
        "--seed",
        "1",
        "--render",
        mask.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = letterpress_layout::td2::parse(&text, &[]);
    assert_eq!(
        parsed
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>(),
        ["SALE", "today only"]
    );
    let img = image::open(&mask).unwrap().to_luma8();
    assert!(img.pixels().any(|p| p.0[0] == 255));
    let _ = std::fs::remove_file(mask);
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, expect) in [
        (
            vec!["layout", "x", "--keywords", "a/b/c/d/e/f/g/h/i"],
            "at most 8",
        ),
        (vec!["layout", "'x'", "--size", "100x512"], "256..=2048"),
        (vec!["layout", "'x'", "--size", "512"], "WIDTHxHEIGHT"),
        (vec!["layout", "'x'", "--planner", "llm"], "--llm-url"),
    ] {
        let out = letterpress(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn edits_change_a_written_layout_or_say_what_is_understood() {
    let out = letterpress(&[
        "layout",
        "a jazz poster 'Jazz Night' 'Friday 9pm' 'free entry'",
        "--seed",
        "3",
    ]);
    assert!(out.status.success());
    let path = std::env::temp_dir().join(format!("lp-edit-{}.json", std::process::id()));
    std::fs::write(&path, &out.stdout).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let from = path.to_str().unwrap();
    let instruction = "make the title larger and move the date to the bottom";
    let out = letterpress(&[
        "layout",
        "--edit",
        instruction,
        "--from",
        from,
        "--seed",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after["planner"], "edit");
    assert_eq!(
        after["prompt"], before["prompt"],
        "the prompt comes from the file"
    );
    let side = |v: &serde_json::Value, line: usize, i: usize| {
        v["lines"][line]["bbox"][i].as_i64().unwrap()
    };
    assert!(side(&after, 0, 2) - side(&after, 0, 0) > side(&before, 0, 2) - side(&before, 0, 0));
    assert_eq!(
        side(&after, 1, 3),
        512 - 20,
        "the date sits on the bottom margin"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: made larger"), "{stderr}");

    let out = letterpress(&["layout", "--edit", "make it pop", "--from", from]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--edit")
            && stderr.contains("Understood edits")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&path);
}

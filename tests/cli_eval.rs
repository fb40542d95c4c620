//! `letterpress eval ocr` on rendered images with known words.

use std::process::Command;

use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_render::Renderer;

/// `letterpress eval ocr --images IMAGES ARGS`, which must succeed.
fn eval_ocr(images: &std::path::Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_letterpress"))
        .args(["eval", "ocr", "--images"])
        .arg(images)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn scores_rendered_images_against_expected_words_and_prompts() {
    let dir = std::env::temp_dir().join(format!("letterpress-eval-{}", std::process::id()));
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let renderer = Renderer::with_default_font().unwrap();
    let posters = [
        ("a.png", ["Summer", "Sale"]),
        ("b.png", ["Coffee", "House"]),
        ("c.png", ["Open", "Late"]),
    ];
    for (name, [w1, w2]) in posters {
        let layout = Layout::new(
            512,
            512,
            vec![
                TextLine::new(w1, BBox::new(40, 60, 472, 180)),
                TextLine::new(w2, BBox::new(80, 300, 432, 400)),
            ],
        );
        renderer
            .render(&layout)
            .unwrap()
            .inverse()
            .save(images.join(name))
            .unwrap();
    }
    // c.png is expected to say something else: its precision and recall are 0.
    let expected = "{\"image\":\"a.png\",\"words\":[\"summer\",\"sale\"]}\n{\"image\":\"b.png\",\"text\":\"Coffee House\"}\n{\"image\":\"c.png\",\"words\":[\"closed\"]}\n";
    std::fs::write(dir.join("expected.jsonl"), expected).unwrap();
    let out = eval_ocr(
        &images,
        &[
            "--expected".as_ref(),
            dir.join("expected.jsonl").as_os_str(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let per_image: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(per_image.len(), 3);
    assert_eq!(per_image[0]["score"]["recall"], 1.0);
    assert_eq!(per_image[2]["score"]["recall"], 0.0);
    assert!(stdout.contains("accuracy: 0.6667"), "{stdout}");
    assert_eq!(
        stdout.lines().last().unwrap(),
        "word_accuracy: 0.8000",
        "4 of 5 expected words"
    );

    // Plain-text prompts, one per image in file-name order.
    std::fs::write(
        dir.join("prompts.txt"),
        "a poster 'Summer Sale'\na sign 'Coffee' 'House'\na door sign 'Open Late'\n",
    )
    .unwrap();
    let prompts = dir.join("prompts.txt");
    let scores = dir.join("scores.jsonl");
    let out = eval_ocr(
        &images,
        &[
            "--prompts".as_ref(),
            prompts.as_os_str(),
            "--out".as_ref(),
            scores.as_os_str(),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap(),
        "word_accuracy: 1.0000"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("scores.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

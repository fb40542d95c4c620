//! `letterpress generate` and `letterpress poster` on the tiny pipeline fixtures: files and
//! metadata written, n images with consecutive seeds, TextDiffuser-2 and inpainting paths, and
//! clear errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn letterpress() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_letterpress"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd.env_remove("LETTERPRESS_MODEL_DIR");
    cmd
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("letterpress-gen-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> String {
    format!("diffusion/tests/fixtures/pipeline/{name}")
}

fn run(args: &[&str]) -> Output {
    letterpress().args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure mentioning {needle:?}"
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The text chunks of a PNG, keyword → text.
fn text_chunks(path: &Path) -> std::collections::HashMap<String, String> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let mut map: std::collections::HashMap<String, String> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        map.insert(t.keyword.clone(), t.get_text().unwrap());
    }
    map
}

const LAYOUT: &str = r#"{"width": 64, "height": 64, "lines": [
  {"text": "SALE", "bbox": [8, 8, 56, 28]}, {"text": "today", "bbox": [12, 36, 52, 52]}]}"#;

#[test]
fn controlnet_generation_writes_images_mask_layout_and_metadata() {
    let dir = temp_dir("cn");
    let layout = dir.join("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let out_png = dir.join("out.png");
    let out = run(&[
        "generate",
        "--model-dir",
        &fixture("sd1-controlnet"),
        "--prompt",
        "a poster that says SALE",
        "--negative-prompt",
        "blurry",
        "--layout",
        layout.to_str().unwrap(),
        "--steps",
        "2",
        "--seed",
        "42",
        "--n",
        "2",
        "--control-scale",
        "0.8",
        "--control-end",
        "0.75",
        "--save-mask",
        dir.join("mask.png").to_str().unwrap(),
        "--save-layout",
        dir.join("saved.json").to_str().unwrap(),
        "-o",
        out_png.to_str().unwrap(),
    ]);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("seed 42") && stdout.contains("seed 43"),
        "{stdout}"
    );
    for (i, seed) in [(1, "42"), (2, "43")] {
        let path = dir.join(format!("out-{i}.png"));
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
        let meta = text_chunks(&path);
        assert_eq!(meta["prompt"], "a poster that says SALE");
        assert_eq!(meta["negative_prompt"], "blurry");
        assert_eq!(meta["seed"], seed);
        assert_eq!(meta["steps"], "2");
        assert_eq!(meta["scheduler"], "DDIMScheduler");
        assert_eq!(meta["guidance_scale"], "7.5");
        assert_eq!(meta["model"], "sd1-controlnet");
        let layout: serde_json::Value = serde_json::from_str(&meta["layout"]).unwrap();
        assert_eq!(layout["lines"][0]["text"], "SALE");
        let params = &meta["parameters"];
        assert!(params.starts_with("a poster that says SALE\nNegative prompt: blurry\nSteps: 2, Sampler: DDIMScheduler, CFG scale: 7.5, Seed: "), "{params}");
        assert!(params.contains("ControlNet: \"weight: 0.8"), "{params}");
    }
    assert_ne!(
        image::open(dir.join("out-1.png")).unwrap().to_rgb8(),
        image::open(dir.join("out-2.png")).unwrap().to_rgb8(),
        "different seeds, different images"
    );
    let mask = image::open(dir.join("mask.png")).unwrap().to_luma8();
    assert!(mask.pixels().any(|p| p[0] == 255) && mask.pixels().any(|p| p[0] == 0));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("saved.json")).unwrap()).unwrap();
    assert_eq!(saved["lines"][1]["text"], "today");

    // The same seed again gives the same image (CPU, fp32).
    let again = dir.join("again.png");
    ok(&run(&[
        "generate",
        "--model-dir",
        &fixture("sd1-controlnet"),
        "--prompt",
        "a poster that says SALE",
        "--negative-prompt",
        "blurry",
        "--layout",
        layout.to_str().unwrap(),
        "--steps",
        "2",
        "--seed",
        "43",
        "--control-scale",
        "0.8",
        "--control-end",
        "0.75",
        "-o",
        again.to_str().unwrap(),
    ]));
    assert_eq!(
        image::open(&again).unwrap().to_rgb8(),
        image::open(dir.join("out-2.png")).unwrap().to_rgb8(),
        "image i of a batch equals a single run with its seed"
    );

    // Regenerate one text line in place.
    let fixed = dir.join("fixed.png");
    ok(&run(&[
        "generate",
        "--model-dir",
        &fixture("sd1-controlnet"),
        "--prompt",
        "a poster that says SALE",
        "--layout",
        layout.to_str().unwrap(),
        "--steps",
        "2",
        "--seed",
        "1",
        "--init-image",
        dir.join("out-1.png").to_str().unwrap(),
        "--inpaint-line",
        "1",
        "--strength",
        "1.0",
        "-o",
        fixed.to_str().unwrap(),
    ]));
    let (before, after) = (
        image::open(dir.join("out-1.png")).unwrap().to_rgb8(),
        image::open(&fixed).unwrap().to_rgb8(),
    );
    // The latents outside line 1 are kept; the VAE's receptive field blurs the seam only a little.
    let far = |img: &image::RgbImage| img.get_pixel(32, 60).0;
    let diff = far(&before)
        .iter()
        .zip(far(&after))
        .map(|(a, b)| (*a as i32 - b as i32).abs())
        .max()
        .unwrap();
    assert!(
        diff <= 48,
        "far from the repainted line the picture stays: {diff}"
    );
    assert_ne!(before, after);
    assert!(text_chunks(&fixed)["parameters"].contains("Denoising strength: 1"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn textdiffuser2_from_keywords_and_random_seed_reported() {
    let dir = temp_dir("td2");
    let out_png = dir.join("td2.png");
    let out = run(&[
        "generate",
        "--model-dir",
        &fixture("td2"),
        "--prompt",
        "a poster of summer",
        "--keywords",
        "Summer Vibe/2024",
        "--td2",
        "--width",
        "256",
        "--height",
        "256",
        "--steps",
        "1",
        "--scheduler",
        "ddim",
        "-o",
        out_png.to_str().unwrap(),
    ]);
    ok(&out);
    let meta = text_chunks(&out_png);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("(seed {})", meta["seed"])),
        "{stdout}"
    );
    assert!(meta["seed"].parse::<u64>().is_ok());
    assert!(meta["layout"].contains("Summer"), "{}", meta["layout"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn poster_plans_renders_and_generates() {
    let dir = temp_dir("poster");
    let out_png = dir.join("poster.png");
    let out = run(&[
        "poster",
        "a poster for 'SUMMER SALE' on a beach",
        "--model-dir",
        &fixture("sd1-controlnet"),
        "--width",
        "256",
        "--height",
        "256",
        "--steps",
        "1",
        "--seed",
        "3",
        "-o",
        out_png.to_str().unwrap(),
    ]);
    ok(&out);
    let meta = text_chunks(&out_png);
    assert!(meta["layout"].contains("SUMMER"), "{}", meta["layout"]);
    assert_eq!(image::open(&out_png).unwrap().width(), 256);
    std::fs::remove_dir_all(&dir).ok();
}

/// The CLI plans on any canvas the model takes, as the service does (it used to refuse sides
/// under 256): a thumbnail and a banner past the planner's 4:1 aspect.
#[test]
fn poster_plans_on_small_and_banner_canvases() {
    let dir = temp_dir("poster-sizes");
    for (w, h) in [("64", "64"), ("640", "64")] {
        let out_png = dir.join(format!("poster-{w}x{h}.png"));
        ok(&run(&[
            "poster",
            "a poster for 'SALE'",
            "--model-dir",
            &fixture("sd1-controlnet"),
            "--width",
            w,
            "--height",
            h,
            "--steps",
            "1",
            "--seed",
            "3",
            "-o",
            out_png.to_str().unwrap(),
        ]));
        let img = image::open(&out_png).unwrap();
        assert_eq!(
            (img.width().to_string(), img.height().to_string()),
            (w.to_string(), h.to_string())
        );
        let layout: serde_json::Value =
            serde_json::from_str(&text_chunks(&out_png)["layout"]).unwrap();
        assert_eq!(
            layout["width"].to_string(),
            w,
            "the layout is on the output canvas"
        );
        let b = &layout["lines"][0]["bbox"];
        let right = b[2].as_i64().unwrap();
        assert!(
            right <= w.parse::<i64>().unwrap(),
            "box inside the canvas: {b}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn single_file_checkpoint_with_a_tokenizer_folder() {
    let dir = temp_dir("single");
    let out_png = dir.join("single.png");
    let file = "diffusion/tests/fixtures/single_file/sd1.safetensors";
    // Without a tokenizer the error says what to add.
    fails_with(
        &run(&[
            "generate",
            "--model-dir",
            file,
            "--prompt",
            "a cat",
            "-o",
            out_png.to_str().unwrap(),
        ]),
        "no tokenizer",
    );
    // The fixture is sd1 in the original ldm keys; its VAE downsamples 2x, so 64 px = 32 latents.
    ok(&run(&[
        "generate",
        "--model-dir",
        file,
        "--tokenizer",
        "diffusion/tests/fixtures/sd1/tokenizer",
        // tiny models' group-norm sizes cannot be inferred from shapes: read sd1's configs
        "--config-dir",
        "diffusion/tests/fixtures/sd1",
        "--prompt",
        "a cat",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--seed",
        "5",
        "-o",
        out_png.to_str().unwrap(),
    ]));
    let meta = text_chunks(&out_png);
    assert_eq!(meta["model"], "sd1");
    assert_eq!(image::open(&out_png).unwrap().width(), 64);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn poster_without_a_model_uses_the_embedded_one() {
    let dir = temp_dir("embedded");
    let out_png = dir.join("poster.png");
    let out = letterpress()
        // A private cache, so the test also covers the first-use extraction.
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .args([
            "poster",
            "a red minimal poster with the word 'SALE'",
            "--steps",
            "2",
            "--seed",
            "1",
            "-o",
            out_png.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("embedded demo model"), "{err}");
    let img = image::open(&out_png).unwrap();
    assert_eq!((img.width(), img.height()), (256, 256), "its native size");
    assert!(text_chunks(&out_png)["layout"].contains("SALE"));
    let cached: Vec<_> = std::fs::read_dir(dir.join("cache").join("letterpress"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.len() == 1 && cached[0].starts_with("embedded-"),
        "one complete model folder, no partial ones: {cached:?}"
    );
    // Options that only make sense with a --model-dir are refused, not ignored.
    let refused = run(&[
        "poster",
        "a poster for 'SALE'",
        "--controlnet",
        "cn",
        "-o",
        out_png.to_str().unwrap(),
    ]);
    fails_with(&refused, "go with a --model-dir");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = temp_dir("bad");
    let o = dir.join("x.png");
    let o = o.to_str().unwrap();
    let model = fixture("sd1-controlnet");
    let base = [
        "generate",
        "--model-dir",
        model.as_str(),
        "--prompt",
        "'HI'",
        "--steps",
        "1",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        run(&a)
    };
    fails_with(&with(&["--device", "cuda", "-o", o]), "CUDA");
    fails_with(
        &with(&["--device", "tpu", "-o", o]),
        "allowed cpu, cuda, cuda:N",
    );
    fails_with(
        &with(&["--scheduler", "plms", "-o", o]),
        "expected one of ddim",
    );
    fails_with(
        &with(&["--width", "260", "--height", "256", "-o", o]),
        "multiples of 8",
    );
    fails_with(&with(&["--n", "0", "-o", o]), "--n must be at least 1");
    fails_with(&with(&["-o", dir.join("x.jpg").to_str().unwrap()]), ".png");
    fails_with(&with(&["--mask", "m.png", "-o", o]), "need --init-image");
    fails_with(
        &run(&[
            "generate",
            "--model-dir",
            "/nonexistent",
            "--prompt",
            "x",
            "-o",
            o,
        ]),
        "/nonexistent",
    );
    fails_with(
        &run(&["generate", "--tokenizer", "t", "--prompt", "x", "-o", o]),
        "go with a --model-dir",
    );
    // A ControlNet with nothing to draw.
    fails_with(
        &run(&[
            "generate",
            "--model-dir",
            model.as_str(),
            "--prompt",
            "no quotes",
            "--steps",
            "1",
            "-o",
            o,
        ]),
        "no text to draw",
    );
    assert!(!Path::new(o).exists(), "nothing written on failure");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--best-of` with `--repair` and `--certificate`: one PNG (the best), its certificate in a
/// text chunk and in the JSON file, and a summary line per image.
#[test]
fn best_of_writes_the_best_image_with_its_certificate() {
    let dir = temp_dir("best-of");
    let layout = dir.join("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let out_png = dir.join("out.png");
    let cert = dir.join("cert.json");
    let out = run(&[
        "generate",
        "--model-dir",
        &fixture("sd1-controlnet"),
        "--prompt",
        "a poster",
        "--layout",
        layout.to_str().unwrap(),
        "--steps",
        "1",
        "--seed",
        "4",
        "--n",
        "2",
        "--best-of",
        "--repair",
        "1",
        "--certificate",
        cert.to_str().unwrap(),
        "-o",
        out_png.to_str().unwrap(),
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("lines read right").count(), 2, "{err}");
    assert!(out_png.exists() && !dir.join("out-1.png").exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    assert_eq!(json["file"], out_png.to_str().unwrap());
    assert_eq!(json["certificate"]["line_count"], 2);
    assert_eq!(json["certificate"]["lines"][1]["text"], "today");
    let chunk: serde_json::Value =
        serde_json::from_str(&text_chunks(&out_png)["certificate"]).unwrap();
    assert_eq!(chunk, json["certificate"]);
    let out = run(&[
        "generate",
        "--model-dir",
        &fixture("sd1-controlnet"),
        "--prompt",
        "p",
        "--layout",
        layout.to_str().unwrap(),
        "--repair",
        "6",
        "-o",
        dir.join("x.png").to_str().unwrap(),
    ]);
    fails_with(&out, "--repair: 6 rounds: at most 5");
    let out = run(&[
        "generate",
        "--model-dir",
        &fixture("sd1-controlnet"),
        "--prompt",
        "p",
        "--layout",
        layout.to_str().unwrap(),
        "--best-of",
        "-o",
        dir.join("x.png").to_str().unwrap(),
    ]);
    fails_with(&out, "--best-of ranks several images");
    assert!(!dir.join("x.png").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `edit` on a poster of ours: the old word is found (here through the PNG's layout, the
/// fixture paints noise), pixels far from it are unchanged, and bad edits write nothing.
#[test]
fn edit_replaces_a_word_and_bad_edits_write_nothing() {
    let dir = temp_dir("edit");
    let layout = dir.join("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let poster = dir.join("poster.png");
    let model = fixture("sd1-controlnet");
    ok(&run(&[
        "generate",
        "--model-dir",
        &model,
        "--prompt",
        "p",
        "--layout",
        layout.to_str().unwrap(),
        "--steps",
        "1",
        "--seed",
        "1",
        "-o",
        poster.to_str().unwrap(),
    ]));
    let edited = dir.join("edited.png");
    let edit = |replace: &str, input: &Path, output: &Path| {
        run(&[
            "edit",
            input.to_str().unwrap(),
            "--replace",
            replace,
            "--model-dir",
            &model,
            "--steps",
            "1",
            "--seed",
            "2",
            "-o",
            output.to_str().unwrap(),
        ])
    };
    let out = edit("today=later", &poster, &edited);
    ok(&out);
    let edits = &text_chunks(&edited)["edits"];
    assert!(edits.contains("\"new\":\"later\""), "{edits}");
    let (a, b) = (
        image::open(&poster).unwrap().to_rgb8(),
        image::open(&edited).unwrap().to_rgb8(),
    );
    // "today" is drawn in rows 36..52; the rows above its margin are untouched.
    for y in 0..30 {
        for x in 0..64 {
            assert_eq!(a.get_pixel(x, y), b.get_pixel(x, y), "({x}, {y})");
        }
    }
    let nothing = dir.join("nothing.png");
    fails_with(
        &edit("PARTY=FUN", &poster, &nothing),
        "--replace \"PARTY=FUN\": \"PARTY\" is not in the picture; OCR read",
    );
    fails_with(&edit("today", &poster, &nothing), "expected OLD=NEW");
    let huge = dir.join("huge.png");
    image::RgbImage::new(4096, 64).save(&huge).unwrap();
    fails_with(
        &edit("a=b", &huge, &nothing),
        "each side must be 64 to 2048",
    );
    // Transparency would not survive the RGB result: refused, not silently flattened.
    let clear = dir.join("clear.png");
    image::RgbaImage::from_pixel(64, 64, image::Rgba([9, 9, 9, 0]))
        .save(&clear)
        .unwrap();
    fails_with(&edit("a=b", &clear, &nothing), "transparent pixels");
    // A flag edit would ignore is refused by name.
    fails_with(
        &run(&[
            "edit",
            poster.to_str().unwrap(),
            "--replace",
            "today=later",
            "--model-dir",
            &model,
            "--width",
            "128",
            "-o",
            nothing.to_str().unwrap(),
        ]),
        "--width (the result keeps IMAGE's size): not used by edit",
    );
    assert!(!nothing.exists());
    std::fs::remove_dir_all(&dir).ok();
}

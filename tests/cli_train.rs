//! `letterpress train` as a process, on a synthetic corpus and the tiny fixture pipelines:
//! checkpoints, validation images and a final model in diffusers layout; clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn letterpress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_letterpress"))
        .args(args)
        .output()
        .expect("run letterpress")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "letterpress-cli-train-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("diffusion/tests/fixtures/pipeline")
        .join(name)
        .display()
        .to_string()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A synthetic corpus of `n` posters in a fresh folder; its path.
fn synth(name: &str, n: &str, seed: &str) -> String {
    let d = tmp(name).display().to_string();
    ok(&letterpress(&[
        "dataset", "synth", "--n", n, "-o", &d, "--seed", seed,
    ]));
    d
}

#[test]
fn train_controlnet_and_unet_on_synthetic_shards() {
    let d = synth("data", "4", "3");

    let out = tmp("controlnet");
    let o = out.display().to_string();
    let common = [
        "--data",
        &d,
        "--out",
        &o,
        "--resolution",
        "64",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--checkpoint-every",
        "1",
        "--learning-rate",
        "1e-3",
    ];
    let base = fixture("sd1-controlnet");
    let mut args = vec!["train", "controlnet", "--base", &base];
    args.extend(common);
    args.extend(["--validation-every", "2", "--conditioning-channels", "1"]);
    args.extend([
        "--conditioning-embedding-channels",
        "4,4,8,8",
        "--ema-decay",
        "0.9",
    ]);
    let run = letterpress(&args);
    ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("training on 4 samples"), "{stdout}");
    assert!(stdout.contains("steps: 2 (resumed from 0)"), "{stdout}");
    for f in [
        "controlnet/config.json",
        "controlnet/diffusion_pytorch_model.safetensors",
        "checkpoint-2/optimizer.safetensors",
        "checkpoint-2/ema.safetensors",
        "checkpoint-2/trainer_state.json",
        "validation/step-000002-0.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("controlnet/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["_class_name"], "ControlNetModel");
    assert_eq!(config["conditioning_channels"], 1);
    // The trained ControlNet drives generation.
    let image = tmp("gen").with_extension("png");
    ok(&letterpress(&[
        "generate",
        "--model-dir",
        &base,
        "--controlnet",
        &format!("{o}/controlnet"),
        "--prompt",
        "a poster",
        "--layout",
        &format!("{}/examples/poster-layout.json", env!("CARGO_MANIFEST_DIR")),
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--seed",
        "1",
        "-o",
        &image.display().to_string(),
    ]));

    // Rerunning a finished run trains nothing more.
    let rerun = letterpress(&args);
    ok(&rerun);
    assert!(String::from_utf8_lossy(&rerun.stdout).contains("steps: 2 (resumed from 2)"));

    // TextDiffuser-2-style fine-tuning of UNet + text encoder.
    let out = tmp("unet");
    let o = out.display().to_string();
    let base = fixture("td2");
    ok(&letterpress(&[
        "train",
        "unet",
        "--base",
        &base,
        "--data",
        &d,
        "--out",
        &o,
        "--resolution",
        "64",
        "--batch-size",
        "1",
        "--max-steps",
        "1",
    ]));
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    // A plain SD base with TextDiffuser-2's tokenizer: the token table grows to 51,583 rows.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("diffusion/tests/fixtures");
    let plain = tmp("plain-td2");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::copy(
        fixtures.join("pipeline/td2/model_index.json"),
        plain.join("model_index.json"),
    )
    .unwrap();
    for (name, target) in [
        ("tokenizer", "td2_tokenizer"),
        ("text_encoder", "sd1/text_encoder"),
        ("unet", "sd1/unet"),
        ("vae", "pipeline/vae"),
        ("scheduler", "sd1/scheduler"),
    ] {
        std::os::unix::fs::symlink(fixtures.join(target), plain.join(name)).unwrap();
    }
    let out = tmp("unet-resized");
    let o = out.display().to_string();
    let run = letterpress(&[
        "train",
        "unet",
        "--base",
        &plain.display().to_string(),
        "--data",
        &d,
        "--out",
        &o,
        "--resolution",
        "64",
        "--batch-size",
        "1",
        "--max-steps",
        "1",
    ]);
    ok(&run);
    let te: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("text_encoder/config.json")).unwrap())
            .unwrap();
    assert_eq!(te["vocab_size"], 51583);

    // The VAE as an autoencoder.
    let out = tmp("vae");
    let o = out.display().to_string();
    let run = letterpress(&[
        "train",
        "vae",
        "--base",
        &fixture("sd1-controlnet"),
        "--data",
        &d,
        "--out",
        &o,
        "--resolution",
        "64",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--learning-rate",
        "1e-3",
    ]);
    ok(&run);
    assert!(
        out.join("vae/diffusion_pytorch_model.safetensors")
            .is_file()
    );
    assert!(out.join("checkpoint-2/vae/config.json").is_file());
    // A trained VAE makes a complete pipeline folder that generates.
    for f in [
        "model_index.json",
        "unet/config.json",
        "tokenizer/vocab.json",
        "scheduler/scheduler_config.json",
    ] {
        assert!(
            out.join(f).is_file(),
            "{f} missing from the pipeline folder"
        );
    }
    ok(&letterpress(&[
        "generate",
        "--model-dir",
        &o,
        "--prompt",
        "a poster",
        "--layout",
        &format!("{}/examples/poster-layout.json", env!("CARGO_MANIFEST_DIR")),
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--seed",
        "1",
        "-o",
        &tmp("gen-vae").with_extension("png").display().to_string(),
    ]));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let base = fixture("sd1-controlnet");
    let out = tmp("bad").display().to_string();
    let run = letterpress(&[
        "train",
        "controlnet",
        "--base",
        &base,
        "--data",
        "/nonexistent/shards",
        "--out",
        &out,
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("reading shards from /nonexistent/shards"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `--random-crop` trains a ControlNet on crops of the synthetic posters (larger than the
/// 64² resolution) and records it in the run's settings, so a resume without it is refused.
#[test]
fn train_controlnet_on_random_crops() {
    let d = synth("crop-data", "2", "4");
    let out = tmp("crop-controlnet");
    let o = out.display().to_string();
    let base = fixture("sd1-controlnet");
    let args = |crop: bool, steps: &'static str| {
        let mut a = vec![
            "train",
            "controlnet",
            "--base",
            &base,
            "--data",
            &d,
            "--out",
            &o,
            "--resolution",
            "64",
            "--batch-size",
            "2",
            "--max-steps",
            steps,
            "--checkpoint-every",
            "1",
            "--conditioning-channels",
            "1",
            "--conditioning-embedding-channels",
            "4,4,8,8",
        ];
        if crop {
            a.push("--random-crop");
        }
        a
    };
    ok(&letterpress(&args(true, "1")));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("checkpoint-1/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["run"]["target"], "controlnet-crops", "{state}");
    assert!(
        out.join("controlnet/diffusion_pytorch_model.safetensors")
            .is_file()
    );
    let refused = letterpress(&args(false, "2"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("other settings"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

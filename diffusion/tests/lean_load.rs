//! Loading is lean: a load draws nothing from torch's generator (the models are built without
//! initial values), every variable ends up with exactly the file's value in the load's dtype,
//! and a file without a value for some variable is refused, naming it.
//!
//! The generator test seeds and draws: no other test in this binary draws, so nothing else
//! moves the generator between its seed and its draws.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use letterpress_diffusion::tch::{self, Device, Kind, Tensor};
use letterpress_diffusion::{
    AutoencoderKL, AutoencoderKLConfig, ClipTextModel, ControlNetModel, Error, FromPretrained,
    LoadOptions, SingleFileOptions, UNet2DConditionModel, build_random, load,
    load_stable_diffusion, read_json,
};

fn sd1(component: &str) -> PathBuf {
    common::fixtures().join("sd1").join(component)
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("letterpress-lean-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn read_file(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .expect("read")
        .into_iter()
        .collect()
}

/// Writes a model folder: `config.json` copied from `from`, and `tensors` as its weights.
fn write_folder(dir: &Path, from: &Path, tensors: &HashMap<String, Tensor>) {
    std::fs::copy(from.join("config.json"), dir.join("config.json")).expect("config");
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, dir.join("diffusion_pytorch_model.safetensors"))
        .expect("write");
}

#[test]
fn loading_draws_no_random_values() {
    let draw = || Tensor::randn([64], (Kind::Float, Device::Cpu));
    tch::manual_seed(11);
    let expected = draw();

    tch::manual_seed(11);
    let options = LoadOptions::default();
    load::<UNet2DConditionModel>(&sd1("unet"), &options).expect("unet");
    load::<AutoencoderKL>(&sd1("vae"), &options).expect("vae");
    load::<ClipTextModel>(&sd1("text_encoder"), &options).expect("text encoder");
    load::<ControlNetModel>(&sd1("controlnet"), &options).expect("controlnet");
    let single = common::fixtures()
        .join("single_file")
        .join("sd1.safetensors");
    let single_options = SingleFileOptions {
        // The tiny fixture's group-norm groups cannot be inferred from shapes.
        config_dir: Some(common::fixtures().join("sd1")),
        ..Default::default()
    };
    load_stable_diffusion(&single, &single_options).expect("single file");
    assert!(draw().equal(&expected), "a load moved torch's generator");

    // The check can fail: a random build between the seed and the draw does move it.
    tch::manual_seed(11);
    let config: AutoencoderKLConfig = read_json(&sd1("vae").join("config.json")).expect("config");
    build_random::<AutoencoderKL>(&config, Device::Cpu, Kind::Float).expect("random build");
    assert!(!draw().equal(&expected), "a random build drew nothing");
}

/// Every variable of `M` loaded from `dir` in `kind` equals the file's value cast to fp32 and
/// then to `kind` (a copy into fp32 variables and a cast of the store, as loading once did).
fn assert_file_values<M: FromPretrained>(dir: &Path, file: &Path, kind: Kind) {
    let options = LoadOptions {
        kind: Some(kind),
        ..LoadOptions::default()
    };
    let loaded = load::<M>(dir, &options).expect("load");
    let file: HashMap<String, Tensor> = read_file(file)
        .into_iter()
        .filter_map(|(key, t)| M::rename_key(&key).map(|name| (name, t)))
        .collect();
    let vars = loaded.var_store.variables();
    assert_eq!(vars.len(), file.len());
    for (name, var) in vars {
        let want = file[&name].to_kind(Kind::Float).to_kind(kind);
        assert_eq!(var.kind(), kind, "{name}");
        assert!(!var.requires_grad(), "{name}: loaded models are frozen");
        assert!(var.equal(&want), "{name} in {kind:?}");
    }
}

#[test]
fn loaded_values_are_the_files_in_every_dtype() {
    let unet = sd1("unet");
    let file = unet.join("diffusion_pytorch_model.safetensors");
    for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
        assert_file_values::<UNet2DConditionModel>(&unet, &file, kind);
    }
    // An fp16 file: loaded into fp32 and bf16 through fp32, kept as it is in fp16.
    let dir = tmpdir("fp16");
    let half: HashMap<String, Tensor> =
        read_file(&sd1("vae").join("diffusion_pytorch_model.safetensors"))
            .into_iter()
            .map(|(k, t)| (k, t.to_kind(Kind::Half)))
            .collect();
    write_folder(&dir, &sd1("vae"), &half);
    let file = dir.join("diffusion_pytorch_model.safetensors");
    for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
        assert_file_values::<AutoencoderKL>(&dir, &file, kind);
    }
}

#[test]
fn a_file_lacking_a_key_is_refused_naming_it() {
    let dir = tmpdir("missing");
    let mut tensors = read_file(&sd1("vae").join("diffusion_pytorch_model.safetensors"));
    let _removed = tensors
        .remove("decoder.conv_out.bias")
        .expect("fixture has the key");
    write_folder(&dir, &sd1("vae"), &tensors);
    let err = load::<AutoencoderKL>(&dir, &LoadOptions::default()).expect_err("must refuse");
    assert!(err.to_string().contains("decoder.conv_out.bias"), "{err}");
    match err {
        Error::KeyMismatch {
            missing,
            unexpected,
            mismatched,
            ..
        } => {
            assert_eq!(missing, ["decoder.conv_out.bias"]);
            assert!(unexpected.is_empty() && mismatched.is_empty());
        }
        other => panic!("expected KeyMismatch, got {other}"),
    }
}

#[test]
fn training_a_loaded_model_leaves_its_file_alone() {
    let dir = tmpdir("cow");
    let tensors = read_file(&sd1("vae").join("diffusion_pytorch_model.safetensors"));
    write_folder(&dir, &sd1("vae"), &tensors);
    let file = dir.join("diffusion_pytorch_model.safetensors");
    let before = std::fs::read(&file).expect("read");
    let loaded = load::<AutoencoderKL>(&dir, &LoadOptions::default()).expect("load");
    tch::no_grad(|| {
        for (_, mut var) in loaded.var_store.variables() {
            let _ = var.f_add_(&Tensor::from(1f32)).expect("in-place update");
        }
    });
    let var = &loaded.var_store.variables()["decoder.conv_out.bias"];
    assert!(var.equal(&(&tensors["decoder.conv_out.bias"] + 1.0)));
    assert_eq!(std::fs::read(&file).expect("read"), before);
}

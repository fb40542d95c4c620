//! Single-file checkpoints (tools/make_single_file_fixtures.py writes the tiny sd1/sd2 pipelines
//! and ControlNets in the original ldm/cldm key scheme and checks with diffusers' own conversion
//! code that they map back to the folder weights). Here the models loaded from those files must
//! give exactly the outputs of the models loaded from the diffusers folders.

mod common;

use std::path::PathBuf;

use letterpress_diffusion::schedulers::PredictionType;
use letterpress_diffusion::{
    ControlNetModel, Error, LoadOptions, SdVersion, SingleFile, SingleFileOptions, load,
    load_controlnet, load_stable_diffusion,
};
use tch::Tensor;

fn single(name: &str) -> PathBuf {
    common::fixtures().join("single_file").join(name)
}

fn exact(label: &str, ours: &Tensor, folder: &Tensor) {
    let err = common::max_abs_err(&format!("single-file {label}"), ours, folder);
    assert!(
        err <= 1e-6,
        "{label}: single file differs from folder by {err:e}"
    );
}

#[test]
fn stable_diffusion_files_equal_the_folders() {
    for kind in ["sd1", "sd2"] {
        let dir = common::fixtures().join(kind);
        let refs = common::refs(kind);
        let options = SingleFileOptions {
            config_dir: Some(dir.clone()),
            ..Default::default()
        };
        let file = load_stable_diffusion(&single(&format!("{kind}.safetensors")), &options)
            .unwrap_or_else(|e| panic!("{kind} single file: {e}"));
        let folder = load_stable_diffusion(&dir, &options).expect("folder");
        let expected = if kind == "sd1" {
            SdVersion::Sd1
        } else {
            SdVersion::Sd2
        };
        assert_eq!(file.version, Some(expected));

        let (sample, t, states) = (
            common::get(&refs, "unet.sample"),
            common::get(&refs, "unet.timestep"),
            common::get(&refs, "unet.encoder_hidden_states"),
        );
        let ours = file
            .unet
            .model
            .forward(sample, t, states, None)
            .expect("unet");
        let theirs = folder
            .unet
            .model
            .forward(sample, t, states, None)
            .expect("unet");
        exact(&format!("{kind} unet"), &ours, &theirs);
        common::assert_close(
            &format!("{kind} single-file unet vs diffusers"),
            &ours,
            common::get(&refs, "unet.out"),
        );

        let latents = common::get(&refs, "vae.latents");
        let ours = file.vae.model.decode(latents).expect("decode");
        exact(
            &format!("{kind} vae decode"),
            &ours,
            &folder.vae.model.decode(latents).expect("decode"),
        );
        let image = common::get(&refs, "vae.image");
        let ours = file.vae.model.encode(image).expect("encode");
        let theirs = folder.vae.model.encode(image).expect("encode");
        exact(&format!("{kind} vae encode mean"), &ours.mean, &theirs.mean);

        let ids = common::get(&refs, "text.input_ids");
        for clip_skip in [0, 1] {
            let ours = file
                .text_encoder
                .model
                .forward(ids, clip_skip)
                .expect("text");
            let theirs = folder
                .text_encoder
                .model
                .forward(ids, clip_skip)
                .expect("text");
            exact(
                &format!("{kind} text encoder clip_skip {clip_skip}"),
                &ours,
                &theirs,
            );
        }
    }
}

#[test]
fn controlnet_files_equal_the_folders() {
    for kind in ["sd1", "sd2"] {
        let dir = common::fixtures().join(kind).join("controlnet");
        let refs = common::refs(kind);
        let options = SingleFileOptions {
            config_dir: Some(dir.clone()),
            ..Default::default()
        };
        let file = load_controlnet(&single(&format!("{kind}_controlnet.safetensors")), &options)
            .unwrap_or_else(|e| panic!("{kind} controlnet file: {e}"));
        let folder = load::<ControlNetModel>(&dir, &LoadOptions::default()).expect("folder");
        let args = (
            common::get(&refs, "unet.sample"),
            common::get(&refs, "unet.timestep"),
            common::get(&refs, "unet.encoder_hidden_states"),
            common::get(&refs, "controlnet.cond"),
        );
        let ours = file
            .model
            .forward(args.0, args.1, args.2, args.3, 0.8, false)
            .expect("cn");
        let theirs = folder
            .model
            .forward(args.0, args.1, args.2, args.3, 0.8, false)
            .expect("cn");
        assert_eq!(ours.down.len(), theirs.down.len());
        for (i, (a, b)) in ours.down.iter().zip(&theirs.down).enumerate() {
            exact(&format!("{kind} controlnet down {i}"), a, b);
        }
        exact(&format!("{kind} controlnet mid"), &ours.mid, &theirs.mid);
    }
}

/// Everything the shapes determine is inferred as the folder configs have it; the rest (norm
/// groups, head counts of these tiny models) needs a config folder.
#[test]
fn configs_are_inferred_from_shapes() {
    for kind in ["sd1", "sd2"] {
        let dir = common::fixtures().join(kind);
        let file = SingleFile::open(&single(&format!("{kind}.safetensors"))).expect("open");
        assert!(file.is_stable_diffusion() && !file.is_controlnet());
        let options = SingleFileOptions::default();
        let unet = file.infer_unet_config(&options).expect("unet config");
        let folder: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("unet/config.json")).expect("read"),
        )
        .expect("json");
        assert_eq!(
            serde_json::json!(unet.in_channels),
            folder["in_channels"],
            "{kind}"
        );
        assert_eq!(
            serde_json::json!(unet.block_out_channels),
            folder["block_out_channels"],
            "{kind}"
        );
        assert_eq!(
            serde_json::json!(unet.down_block_types),
            folder["down_block_types"],
            "{kind}"
        );
        assert_eq!(
            serde_json::json!(unet.up_block_types),
            folder["up_block_types"],
            "{kind}"
        );
        assert_eq!(unet.use_linear_projection, kind == "sd2");
        let layers = folder["layers_per_block"].as_i64().expect("layers");
        assert_eq!(
            format!("{:?}", unet.layers_per_block),
            format!("All({layers})"),
            "{kind}"
        );
        let depth = if kind == "sd1" {
            "[1, 1, 1]"
        } else {
            "[1, 2, 1]"
        };
        assert_eq!(
            format!("{:?}", unet.transformer_layers_per_block),
            format!("Each({depth})")
        );
        let vae = file.infer_vae_config().expect("vae config");
        let folder_vae: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("vae/config.json")).expect("read"),
        )
        .expect("json");
        assert_eq!(
            serde_json::json!(vae.block_out_channels),
            folder_vae["block_out_channels"]
        );
        assert_eq!(
            serde_json::json!(vae.latent_channels),
            folder_vae["latent_channels"]
        );
        let text = file.infer_text_encoder_config().expect("text config");
        assert_eq!(
            text.num_hidden_layers, 3,
            "{kind}: the extra OpenCLIP layer is dropped"
        );
        assert_eq!(text.hidden_size, if kind == "sd1" { 8 } else { 4 });
        assert_eq!(
            text.hidden_act,
            if kind == "sd1" { "quick_gelu" } else { "gelu" }
        );
        // Inpainting (9 input channels) SD 2.x is epsilon-prediction; SD 1.x too.
        let scheduler = file.scheduler_config(&options).expect("scheduler");
        assert_eq!(scheduler.prediction_type.as_deref(), Some("epsilon"));
        let v = SingleFileOptions {
            prediction_type: Some(PredictionType::VPrediction),
            ..Default::default()
        };
        assert_eq!(
            file.scheduler_config(&v)
                .expect("scheduler")
                .prediction_type
                .as_deref(),
            Some("v_prediction")
        );

        let cn =
            SingleFile::open(&single(&format!("{kind}_controlnet.safetensors"))).expect("open");
        assert!(cn.is_controlnet() && !cn.is_stable_diffusion());
        let config = cn
            .infer_controlnet_config(&options)
            .expect("controlnet config");
        let folder_cn: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("controlnet/config.json")).expect("read"),
        )
        .expect("json");
        assert_eq!(
            serde_json::json!(config.conditioning_channels),
            folder_cn["conditioning_channels"]
        );
        assert_eq!(
            serde_json::json!(config.conditioning_embedding_out_channels),
            folder_cn["conditioning_embedding_out_channels"]
        );
        assert_eq!(
            serde_json::json!(config.unet.block_out_channels),
            folder_cn["block_out_channels"]
        );
    }
}

#[test]
fn wrong_files_get_clear_errors() {
    let options = SingleFileOptions::default();
    // Pickles are refused before anything is read.
    let err = load_stable_diffusion(&PathBuf::from("/nonexistent/model.ckpt"), &options)
        .expect_err("pickle");
    assert!(matches!(err, Error::PickleRefused { .. }), "{err}");
    // A ControlNet given as the SD checkpoint, and the other way round.
    let err =
        load_stable_diffusion(&single("sd1_controlnet.safetensors"), &options).expect_err("cn");
    assert!(err.to_string().contains("ControlNet"), "{err}");
    let err = load_controlnet(&single("sd1.safetensors"), &options).expect_err("sd");
    assert!(err.to_string().contains("control_model"), "{err}");
    let err = load_controlnet(&PathBuf::from("/nonexistent/cn.safetensors"), &options)
        .expect_err("missing");
    assert!(err.to_string().contains("cn.safetensors"), "{err}");
    // A diffusers component file is not an ldm checkpoint.
    let unet_file = common::fixtures().join("sd1/unet/diffusion_pytorch_model.safetensors");
    let err = load_stable_diffusion(&unet_file, &options).expect_err("diffusers file");
    assert!(err.to_string().contains("model.diffusion_model"), "{err}");
    // An unknown key in the UNet is named.
    let dir = std::env::temp_dir().join(format!("letterpress-single-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("odd.safetensors");
    let tensors: Vec<(String, Tensor)> =
        Tensor::read_safetensors(single("sd1.safetensors")).expect("read");
    let mut tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    tensors.push((
        "model.diffusion_model.input_blocks.1.5.mystery.weight".into(),
        Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)),
    ));
    Tensor::write_safetensors(&tensors, &path).expect("write");
    let err = load_stable_diffusion(
        &path,
        &SingleFileOptions {
            config_dir: Some(common::fixtures().join("sd1")),
            ..Default::default()
        },
    )
    .expect_err("unknown key");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        err.to_string().contains("input_blocks.1.5.mystery"),
        "{err}"
    );
    // A config that does not fit the file lists the mismatching keys.
    let err = load_stable_diffusion(
        &single("sd1.safetensors"),
        &SingleFileOptions {
            config_dir: Some(common::fixtures().join("sd2")),
            ..Default::default()
        },
    )
    .expect_err("wrong config");
    assert!(
        matches!(err, Error::KeyMismatch { .. }) || err.to_string().contains("shape"),
        "{err}"
    );
}

/// The released layouts (tools/make_single_file_fixtures.py lists their ldm keys and shapes; the
/// tensors here are zero-strided views, so no weights are allocated): the inferred configs are
/// the released configs, and the mapped names and shapes hash to the manifests of the diffusers
/// and transformers models (full_manifests.json, also checked by full_configs.rs).
#[test]
fn released_layouts_map_to_the_diffusers_models() {
    use sha2::{Digest, Sha256};
    use std::collections::{BTreeMap, HashMap};

    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json")
    };
    let layouts = read(single("full_layouts.json"));
    let manifests = read(common::fixtures().join("full_manifests.json"));
    let digest = |state: &HashMap<String, Tensor>| {
        let mut lines: Vec<String> = state
            .iter()
            .map(|(k, v)| format!("{k} {:?}", v.size()))
            .collect();
        lines.sort();
        (
            lines.len(),
            format!("{:x}", Sha256::digest(lines.join("\n").as_bytes())),
        )
    };
    let check = |label: &str, state: &HashMap<String, Tensor>, manifest: &str| {
        let m = &manifests[manifest];
        let (count, sha) = digest(state);
        assert_eq!(
            count as u64,
            m["count"].as_u64().expect("count"),
            "{label}: tensor count"
        );
        assert_eq!(
            sha,
            m["sha256"].as_str().expect("sha"),
            "{label}: names or shapes"
        );
        println!("single-file layout {label}: {count} tensors map to {manifest}");
    };
    let open = |name: &str| {
        let tensors: BTreeMap<String, Tensor> = layouts[name]
            .as_object()
            .expect("layout")
            .iter()
            .map(|(k, shape)| {
                let shape: Vec<i64> = shape
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| d.as_i64().expect("dim"))
                    .collect();
                let zero = Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
                let t = if shape.is_empty() {
                    zero.reshape([])
                } else {
                    zero.expand(&shape, false)
                };
                (k.clone(), t)
            })
            .collect();
        SingleFile::from_tensors(&PathBuf::from(format!("{name}.safetensors")), tensors)
    };
    let options = SingleFileOptions::default();
    for (name, version, unet_manifest, text_manifest) in [
        ("sd15", SdVersion::Sd1, "sd15_unet", "clip_vit_l14_text"),
        ("sd21", SdVersion::Sd2, "sd21_unet", "openclip_vit_h_text"),
    ] {
        let file = open(name);
        assert_eq!(file.version().expect("version"), version);
        check(
            &format!("{name} unet"),
            &file.unet_state().expect("unet"),
            unet_manifest,
        );
        check(
            &format!("{name} vae"),
            &file.vae_state().expect("vae"),
            "sd15_vae",
        );
        let text = file.infer_text_encoder_config().expect("text config");
        let expected = &manifests[text_manifest]["config"];
        assert_eq!(
            serde_json::json!(text.num_hidden_layers),
            expected["num_hidden_layers"],
            "{name}"
        );
        assert_eq!(
            serde_json::json!(text.hidden_size),
            expected["hidden_size"],
            "{name}"
        );
        assert_eq!(
            serde_json::json!(text.intermediate_size),
            expected["intermediate_size"],
            "{name}"
        );
        assert_eq!(
            serde_json::json!(text.num_attention_heads),
            expected["num_attention_heads"],
            "{name}"
        );
        assert_eq!(
            serde_json::json!(text.hidden_act),
            expected["hidden_act"],
            "{name}"
        );
        let state = file
            .text_encoder_state(text.num_hidden_layers)
            .expect("text");
        check(&format!("{name} text encoder"), &state, text_manifest);

        let unet = file.infer_unet_config(&options).expect("unet config");
        let expected = &manifests[unet_manifest]["config"];
        for (field, ours) in [
            ("in_channels", serde_json::json!(unet.in_channels)),
            (
                "block_out_channels",
                serde_json::json!(unet.block_out_channels),
            ),
            ("down_block_types", serde_json::json!(unet.down_block_types)),
            ("up_block_types", serde_json::json!(unet.up_block_types)),
            (
                "use_linear_projection",
                serde_json::json!(unet.use_linear_projection),
            ),
            ("upcast_attention", serde_json::json!(unet.upcast_attention)),
            ("norm_num_groups", serde_json::json!(unet.norm_num_groups)),
        ] {
            assert_eq!(ours, expected[field], "{name} unet config {field}");
        }
        assert_eq!(
            format!("{:?}", unet.attention_head_dim),
            if name == "sd15" {
                "All(8)"
            } else {
                "Each([5, 10, 20, 20])"
            }
        );
        assert_eq!(
            format!("{:?}", unet.cross_attention_dim),
            if name == "sd15" {
                "All(768)"
            } else {
                "All(1024)"
            }
        );
        let vae = file.infer_vae_config().expect("vae config");
        assert_eq!(
            serde_json::json!(vae.block_out_channels),
            manifests["sd15_vae"]["config"]["block_out_channels"]
        );
        let scheduler = file.scheduler_config(&options).expect("scheduler");
        let prediction = if name == "sd15" {
            "epsilon"
        } else {
            "v_prediction"
        };
        assert_eq!(scheduler.prediction_type.as_deref(), Some(prediction));
    }
    let cn = open("sd15_controlnet");
    assert_eq!(cn.version().expect("version"), SdVersion::Sd1);
    check(
        "sd15 controlnet",
        &cn.controlnet_state().expect("controlnet"),
        "sd15_controlnet",
    );
    let config = cn
        .infer_controlnet_config(&options)
        .expect("controlnet config");
    let expected = &manifests["sd15_controlnet"]["config"];
    assert_eq!(
        serde_json::json!(config.conditioning_embedding_out_channels),
        expected["conditioning_embedding_out_channels"]
    );
    assert_eq!(
        serde_json::json!(config.conditioning_channels),
        expected["conditioning_channels"]
    );
    assert_eq!(
        serde_json::json!(config.unet.block_out_channels),
        expected["block_out_channels"]
    );
}

/// GlyphControl-style cldm checkpoints hold the SD model and the ControlNet in one file.
#[test]
fn combined_cldm_checkpoint_loads_both_parts() {
    let mut tensors: Vec<(String, Tensor)> =
        Tensor::read_safetensors(single("sd2.safetensors")).expect("read sd2");
    tensors
        .extend(Tensor::read_safetensors(single("sd2_controlnet.safetensors")).expect("read cn"));
    let dir = std::env::temp_dir().join(format!("letterpress-cldm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("glyph_cldm.safetensors");
    Tensor::write_safetensors(&tensors, &path).expect("write");
    let fixtures = common::fixtures().join("sd2");
    let sd = load_stable_diffusion(
        &path,
        &SingleFileOptions {
            config_dir: Some(fixtures.clone()),
            ..Default::default()
        },
    )
    .expect("SD part");
    assert_eq!(sd.version, Some(SdVersion::Sd2));
    let cn = load_controlnet(
        &path,
        &SingleFileOptions {
            config_dir: Some(fixtures.join("controlnet")),
            ..Default::default()
        },
    )
    .expect("ControlNet part");
    let folder = load::<ControlNetModel>(&fixtures.join("controlnet"), &LoadOptions::default())
        .expect("folder");
    let refs = common::refs("sd2");
    let args = (
        common::get(&refs, "unet.sample"),
        common::get(&refs, "unet.timestep"),
        common::get(&refs, "unet.encoder_hidden_states"),
        common::get(&refs, "controlnet.cond"),
    );
    let ours = cn
        .model
        .forward(args.0, args.1, args.2, args.3, 1.0, true)
        .expect("cn");
    let theirs = folder
        .model
        .forward(args.0, args.1, args.2, args.3, 1.0, true)
        .expect("cn");
    exact("sd2 combined cldm controlnet mid", &ours.mid, &theirs.mid);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A diffusers-scheme ControlNet file loads too: with the `config.json` beside it, or with its
/// config inferred from the shapes.
#[test]
fn diffusers_scheme_controlnet_file() {
    let dir = common::fixtures().join("sd1/controlnet");
    let file_path = dir.join("diffusion_pytorch_model.safetensors");
    let ours = load_controlnet(&file_path, &SingleFileOptions::default()).expect("file");
    let folder = load::<ControlNetModel>(&dir, &LoadOptions::default()).expect("folder");
    let refs = common::refs("sd1");
    let args = (
        common::get(&refs, "unet.sample"),
        common::get(&refs, "unet.timestep"),
        common::get(&refs, "unet.encoder_hidden_states"),
        common::get(&refs, "controlnet.cond"),
    );
    let a = ours
        .model
        .forward(args.0, args.1, args.2, args.3, 0.8, false)
        .expect("cn");
    let b = folder
        .model
        .forward(args.0, args.1, args.2, args.3, 0.8, false)
        .expect("cn");
    exact("sd1 diffusers-scheme controlnet file mid", &a.mid, &b.mid);
    let file = SingleFile::open(&file_path).expect("open");
    assert!(file.is_controlnet() && !file.is_stable_diffusion());
    let config = file
        .infer_controlnet_config(&SingleFileOptions::default())
        .expect("inferred");
    assert_eq!(config.conditioning_channels, 3);
    assert_eq!(config.unet.block_out_channels, [8, 8, 16]);
}

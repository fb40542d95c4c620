//! Weight loading against the real fixture folders: key mismatches name the keys and the file,
//! unsupported configs are refused with the field, and the half-precision path (what CUDA
//! uses by default) stays close to the fp32 reference.

mod common;

use letterpress_diffusion::tch::{Device, Kind};
use letterpress_diffusion::{
    AutoencoderKL, ControlNetModel, Error, LoadOptions, UNet2DConditionConfig,
    UNet2DConditionModel, default_kind, load, load_with_config, read_json,
};

#[test]
fn dtype_policy() {
    assert_eq!(default_kind(Device::Cpu), Kind::Float);
    assert_eq!(default_kind(Device::Cuda(0)), Kind::Half);
    assert_eq!(LoadOptions::default().kind(), Kind::Float);
}

#[test]
fn weights_of_another_config_list_missing_and_unexpected_keys() {
    // sd2's config (linear projections, 2 transformer layers in block 1) over sd1's weights.
    let sd2: UNet2DConditionConfig =
        read_json(&common::fixtures().join("sd2/unet/config.json")).expect("config");
    let dir = common::fixtures().join("sd1/unet");
    let err = load_with_config::<UNet2DConditionModel>(&dir, &sd2, &LoadOptions::default())
        .expect_err("must not fit");
    let msg = err.to_string();
    match err {
        Error::KeyMismatch {
            path,
            missing,
            unexpected,
            mismatched,
        } => {
            assert_eq!(path, dir.join("diffusion_pytorch_model.safetensors"));
            assert!(
                missing
                    .iter()
                    .any(|k| k.starts_with("down_blocks.1.attentions.0.transformer_blocks.1.")),
                "{missing:?}"
            );
            assert!(
                unexpected
                    .iter()
                    .any(|k| k.starts_with("down_blocks.0.resnets.1.")),
                "{unexpected:?}"
            );
            assert!(
                mismatched.iter().any(|k| k.starts_with("conv_in.weight")),
                "{mismatched:?}"
            );
        }
        other => panic!("expected KeyMismatch, got {other}"),
    }
    assert!(
        msg.contains("missing key") && msg.contains("unexpected key"),
        "{msg}"
    );
}

#[test]
fn unsupported_and_inconsistent_configs_are_refused() {
    let base: serde_json::Value =
        read_json(&common::fixtures().join("sd2/unet/config.json")).expect("config");
    let with = |key: &str, value: serde_json::Value| {
        let mut c = base.clone();
        c[key] = value;
        serde_json::from_value::<UNet2DConditionConfig>(c).expect("deserialises")
    };
    let cases = [
        (
            with("attention_head_dim", serde_json::json!([2, 4])),
            "attention_head_dim",
        ),
        (
            with("addition_embed_type", serde_json::json!("text_time")),
            "addition_embed_type",
        ),
        (
            with(
                "down_block_types",
                serde_json::json!([
                    "CrossAttnDownBlock2D",
                    "SimpleCrossAttnDownBlock2D",
                    "DownBlock2D"
                ]),
            ),
            "SimpleCrossAttnDownBlock2D",
        ),
        (
            with("attention_head_dim", serde_json::json!([3, 4, 4])),
            "attention heads",
        ),
    ];
    for (config, expected) in cases {
        let err = load_with_config::<UNet2DConditionModel>(
            &common::fixtures().join("sd2/unet"),
            &config,
            &LoadOptions::default(),
        )
        .expect_err("must be refused");
        assert!(
            matches!(err, Error::Config { .. } | Error::Shape { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn bfloat16_weights_stay_close_to_the_fp32_reference() {
    // Exercises the half-precision path (including sd2's upcast_attention) on CPU. The models
    // cast their inputs, so fp32 and bf16 inputs give the same result. bf16 keeps ~3 digits.
    let refs = common::refs("sd2");
    let dir = common::fixtures().join("sd2");
    let options = LoadOptions {
        kind: Some(Kind::BFloat16),
        ..LoadOptions::default()
    };
    let unet = load::<UNet2DConditionModel>(&dir.join("unet"), &options).expect("load unet");
    let controlnet =
        load::<ControlNetModel>(&dir.join("controlnet"), &options).expect("load controlnet");
    let bf = |k: &str| common::get(&refs, k).to_kind(Kind::BFloat16);
    let (sample, t, states) = (
        bf("unet.sample"),
        common::get(&refs, "unet.timestep"),
        bf("unet.encoder_hidden_states"),
    );
    let res = controlnet
        .model
        .forward(&sample, t, &states, &bf("controlnet.cond"), 0.8, false)
        .expect("controlnet");
    let out = unet
        .model
        .forward(&sample, t, &states, Some(&res))
        .expect("unet");
    assert_eq!(out.kind(), Kind::BFloat16);
    let err = common::max_abs_err(
        "sd2 unet + controlnet bf16",
        &out,
        common::get(&refs, "unet.out_with_controlnet.scaled"),
    );
    assert!(err < 0.1, "bf16 error {err}");
    let vae = load::<AutoencoderKL>(&dir.join("vae"), &options).expect("load vae");
    let decoded = vae.model.decode(&bf("vae.latents")).expect("decode");
    let err = common::max_abs_err(
        "sd2 vae decode bf16",
        &decoded,
        common::get(&refs, "vae.decoded"),
    );
    assert!(err < 0.1, "bf16 error {err}");
}

#[test]
fn pipeline_folder_lists_and_loads_components() {
    use letterpress_diffusion::{ClipTextModel, PipelineFolder};
    let folder = PipelineFolder::open(&common::fixtures().join("sd1")).expect("model_index.json");
    assert_eq!(
        folder.class("unet"),
        Some(("diffusers", "UNet2DConditionModel"))
    );
    assert_eq!(
        folder.class("text_encoder"),
        Some(("transformers", "CLIPTextModel"))
    );
    let text = folder
        .load::<ClipTextModel>("text_encoder", &LoadOptions::default())
        .expect("text encoder");
    assert_eq!(text.model.config().hidden_size, 8);
    let err = folder.component("safety_checker").expect_err("not listed");
    assert!(err.to_string().contains("unet"), "{err}");
    assert!(matches!(
        PipelineFolder::open(&common::fixtures().join("td2_tokenizer")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn sharded_weights_load_through_their_index() {
    use letterpress_diffusion::tch::Tensor;
    // Split the sd1 VAE into two shards with an index, as save_pretrained(max_shard_size=…) does.
    let src = common::fixtures().join("sd1/vae");
    let dir = std::env::temp_dir().join(format!("letterpress-sharded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).expect("copy config");
    let mut tensors =
        Tensor::read_safetensors(src.join("diffusion_pytorch_model.safetensors")).expect("read");
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].iter().enumerate() {
        let name = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1);
        let named: Vec<(&str, &Tensor)> = part.iter().map(|(k, t)| (k.as_str(), t)).collect();
        Tensor::write_safetensors(&named, dir.join(&name)).expect("write shard");
        for (k, _) in part.iter() {
            weight_map.insert(k.clone(), serde_json::Value::String(name.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("index");

    let refs = common::refs("sd1");
    let vae = load::<AutoencoderKL>(&dir, &LoadOptions::default()).expect("sharded load");
    let decoded = vae
        .model
        .decode(common::get(&refs, "vae.latents"))
        .expect("decode");
    common::assert_close(
        "sd1 vae decode (sharded)",
        &decoded,
        common::get(&refs, "vae.decoded"),
    );

    // A shard that is missing is an error naming it, not a partial load.
    std::fs::remove_file(dir.join("diffusion_pytorch_model-00002-of-00002.safetensors"))
        .expect("rm");
    let err = load::<AutoencoderKL>(&dir, &LoadOptions::default()).expect_err("missing shard");
    assert!(err.to_string().contains("00002-of-00002"), "{err}");
}

//! Training steps against diffusers/torch (`tools/make_train_fixtures.py`): the same batch,
//! the same tiny sd1 models, the same loss, gradients and AdamW updates.

mod common;

use std::collections::HashMap;

use letterpress_diffusion::training::{
    AdamW, AdamWConfig, NoiseSchedule, StepModels, TrainBatch, controlnet_config_json,
    controlnet_from_unet, diffusion_loss, named_variables,
};
use letterpress_diffusion::{
    ClipTextModel, ControlNetModel, LoadOptions, UNet2DConditionModel, load, read_json,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use common::{fixtures, get, max_abs_err};

/// Gradients and weights go through a few thousand fp32 operations; torch and libtorch agree
/// to rounding, so this is tight.
const GRAD_TOLERANCE: f64 = 1e-5;
const LOSS_TOLERANCE: f64 = 1e-6;

fn settings() -> Value {
    read_json(&fixtures().join("train").join("settings.json")).expect("settings.json")
}

fn batch(refs: &HashMap<String, Tensor>, control: bool) -> TrainBatch {
    TrainBatch {
        latents: get(refs, "batch.latents").shallow_clone(),
        noise: get(refs, "batch.noise").shallow_clone(),
        timesteps: get(refs, "batch.timesteps").shallow_clone(),
        input_ids: get(refs, "batch.input_ids").shallow_clone(),
        control: control.then(|| get(refs, "batch.control").shallow_clone()),
    }
}

fn sd1(name: &str) -> std::path::PathBuf {
    fixtures().join("sd1").join(name)
}

fn schedule(prediction: &str) -> NoiseSchedule {
    let mut config: letterpress_diffusion::schedulers::SchedulerConfig =
        read_json(&sd1("scheduler").join("scheduler_config.json")).expect("scheduler config");
    config.prediction_type = Some(prediction.into());
    NoiseSchedule::new(&config).expect("schedule")
}

fn relative(label: &str, ours: f64, theirs: f64) -> f64 {
    let err = (ours - theirs).abs() / theirs.abs().max(1e-12);
    println!("parity {label}: ours {ours:.9} diffusers {theirs:.9} (rel err {err:.2e})");
    err
}

#[test]
fn controlnet_steps_equal_diffusers() {
    let refs = common::refs("train");
    let s = settings();
    let options = LoadOptions::default();
    let text = load::<ClipTextModel>(&sd1("text_encoder"), &options).expect("text encoder");
    let unet = load::<UNet2DConditionModel>(&sd1("unet"), &options).expect("unet");
    let mut cn = load::<ControlNetModel>(&sd1("controlnet"), &options).expect("controlnet");
    cn.var_store.unfreeze();
    // Frozen models have no trainable variables; the ControlNet's all are.
    assert!(
        text.var_store
            .variables()
            .values()
            .all(|v| !v.requires_grad())
    );
    assert!(
        unet.var_store
            .variables()
            .values()
            .all(|v| !v.requires_grad())
    );
    assert!(cn.var_store.variables().values().all(Tensor::requires_grad));

    let schedule = schedule("epsilon");
    let batch = batch(&refs, true);
    let f = |k: &str| s[k].as_f64().expect(k);
    let config = AdamWConfig {
        beta1: s["betas"][0].as_f64().expect("beta1"),
        beta2: s["betas"][1].as_f64().expect("beta2"),
        weight_decay: f("weight_decay"),
        eps: f("eps"),
    };
    let params = named_variables(&cn.var_store);
    assert_eq!(
        params.len(),
        s["controlnet_params"].as_array().expect("names").len(),
        "every diffusers ControlNet parameter is one of ours"
    );
    let shared = params
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    let mut opt = AdamW::new(shared, config).expect("optimizer");
    let losses = get(&refs, "controlnet.loss");
    let models = StepModels {
        text_encoder: &text.model,
        unet: &unet.model,
        controlnet: Some(&cn.model),
        schedule: &schedule,
    };
    let mut worst_grad: f64 = 0.0;
    for step in 0..2i64 {
        let loss = diffusion_loss(&models, &batch).expect("loss");
        let value = loss.double_value(&[]);
        let err = relative(
            &format!("controlnet loss step {}", step + 1),
            value,
            losses.double_value(&[step]),
        );
        assert!(err < LOSS_TOLERANCE, "loss step {}: {err:e}", step + 1);
        loss.backward();
        if step == 0 {
            for (name, p) in &params {
                let reference = get(&refs, &format!("controlnet.grad.{name}"));
                let e = max_abs_err(&format!("grad {name}"), &p.grad(), reference);
                worst_grad = worst_grad.max(e);
            }
        }
        let norm = opt.clip_grad_norm(f("max_grad_norm")).expect("clip");
        relative(
            &format!("grad norm step {}", step + 1),
            norm,
            get(&refs, &format!("controlnet.grad_norm{}", step + 1)).double_value(&[0]),
        );
        opt.step(f("lr")).expect("step");
        opt.zero_grad();
        let mut worst_weight: f64 = 0.0;
        for (name, p) in &params {
            let reference = get(&refs, &format!("controlnet.step{}.{name}", step + 1));
            let e = (p - reference).abs().max().double_value(&[]);
            worst_weight = worst_weight.max(e);
        }
        println!(
            "parity weights after AdamW step {}: worst max abs err {worst_weight:.3e}",
            step + 1
        );
        assert!(worst_weight < GRAD_TOLERANCE, "weights step {}", step + 1);
    }
    println!("parity gradients (all ControlNet parameters): worst max abs err {worst_grad:.3e}");
    assert!(worst_grad < GRAD_TOLERANCE, "gradients: {worst_grad:e}");
}

#[test]
fn v_prediction_loss_equals_diffusers() {
    let refs = common::refs("train");
    let options = LoadOptions::default();
    let text = load::<ClipTextModel>(&sd1("text_encoder"), &options).expect("text encoder");
    let unet = load::<UNet2DConditionModel>(&sd1("unet"), &options).expect("unet");
    let cn = load::<ControlNetModel>(&sd1("controlnet"), &options).expect("controlnet");
    let schedule = schedule("v_prediction");
    let models = StepModels {
        text_encoder: &text.model,
        unet: &unet.model,
        controlnet: Some(&cn.model),
        schedule: &schedule,
    };
    let loss = tch::no_grad(|| diffusion_loss(&models, &batch(&refs, true)).expect("loss"));
    let err = relative(
        "v-prediction loss",
        loss.double_value(&[]),
        get(&refs, "vpred.loss").double_value(&[0]),
    );
    assert!(err < LOSS_TOLERANCE);
}

#[test]
fn from_unet_copies_the_encoder_and_zeroes_the_zero_convolutions() {
    let refs = common::refs("train");
    let unet = load::<UNet2DConditionModel>(&sd1("unet"), &LoadOptions::default()).expect("unet");
    let unet_config: Value = read_json(&sd1("unet").join("config.json")).expect("config");
    let config = controlnet_config_json(&unet_config, 1, &[4, 4, 8, 8]);
    let cn = controlnet_from_unet(&unet, &config, Device::Cpu).expect("from_unet");
    let ours: HashMap<String, Tensor> = named_variables(&cn.var_store).into_iter().collect();
    let mut compared = 0;
    for (key, reference) in &refs {
        let Some(name) = key.strip_prefix("from_unet.") else {
            continue;
        };
        let mine = ours
            .get(name)
            .unwrap_or_else(|| panic!("diffusers' from_unet has {name}, ours does not"));
        assert!(
            mine.to_kind(Kind::Float).equal(reference),
            "{name} differs from diffusers' from_unet"
        );
        compared += 1;
    }
    println!("from_unet: {compared} tensors equal diffusers' bit for bit");
    assert!(compared > 100, "only {compared} tensors compared");
    // The rest is the conditioning encoder's random first layers.
    let random: Vec<&String> = ours
        .keys()
        .filter(|k| !refs.contains_key(&format!("from_unet.{k}")))
        .collect();
    assert!(
        random
            .iter()
            .all(|k| k.starts_with("controlnet_cond_embedding.")),
        "{random:?}"
    );
}

#[test]
fn unet_and_text_encoder_gradients_equal_diffusers() {
    let refs = common::refs("train");
    let s = settings();
    let options = LoadOptions::default();
    let mut text = load::<ClipTextModel>(&sd1("text_encoder"), &options).expect("text encoder");
    let mut unet = load::<UNet2DConditionModel>(&sd1("unet"), &options).expect("unet");
    text.var_store.unfreeze();
    unet.var_store.unfreeze();
    let schedule = schedule("epsilon");
    let models = StepModels {
        text_encoder: &text.model,
        unet: &unet.model,
        controlnet: None,
        schedule: &schedule,
    };
    let loss = diffusion_loss(&models, &batch(&refs, false)).expect("loss");
    let err = relative(
        "unet fine-tuning loss",
        loss.double_value(&[]),
        get(&refs, "unet.loss").double_value(&[0]),
    );
    assert!(err < LOSS_TOLERANCE);
    loss.backward();
    let unet_vars = unet.var_store.variables();
    let text_vars = text.var_store.variables();
    let mut worst: f64 = 0.0;
    for name in s["unet_params"].as_array().expect("names") {
        let name = name.as_str().expect("name");
        let e = max_abs_err(
            &format!("grad unet.{name}"),
            &unet_vars[name].grad(),
            get(&refs, &format!("unet.grad.unet.{name}")),
        );
        worst = worst.max(e);
    }
    for name in s["text_params"].as_array().expect("names") {
        let name = name.as_str().expect("name");
        let e = max_abs_err(
            &format!("grad text_encoder.{name}"),
            &text_vars[name].grad(),
            get(&refs, &format!("unet.grad.text_encoder.{name}")),
        );
        worst = worst.max(e);
    }
    let ids = get(&refs, "unet.token_ids");
    let rows = text_vars["embeddings.token_embedding.weight"]
        .grad()
        .index_select(0, ids);
    worst = worst.max(max_abs_err(
        "grad token embedding (rows of the batch's ids)",
        &rows,
        get(&refs, "unet.grad.token_embedding_rows"),
    ));
    println!("parity unet + text encoder gradients: worst max abs err {worst:.3e}");
    assert!(worst < GRAD_TOLERANCE, "{worst:e}");
}

#[test]
fn token_table_grows_with_old_rows_kept_and_new_rows_at_the_mean() {
    let text =
        load::<ClipTextModel>(&sd1("text_encoder"), &LoadOptions::default()).expect("text encoder");
    let grown = letterpress_diffusion::training::resize_token_embeddings(&text, 51583, Device::Cpu)
        .expect("resize");
    assert_eq!(grown.model.config().vocab_size, 51583);
    let old = &text.var_store.variables()["embeddings.token_embedding.weight"];
    let new = &grown.var_store.variables()["embeddings.token_embedding.weight"];
    assert_eq!(new.size(), [51583, 8]);
    assert!(new.narrow(0, 0, 49408).equal(old));
    let mean = old.mean_dim([0i64].as_slice(), true, Kind::Float);
    assert!(
        new.narrow(0, 49408, 2175)
            .equal(&mean.expand([2175, 8], false))
    );
    // Every other variable is copied.
    for (name, v) in grown.var_store.variables() {
        if name != "embeddings.token_embedding.weight" {
            assert!(v.equal(&text.var_store.variables()[&name]), "{name}");
        }
    }
    // Shrinking is refused.
    assert!(
        letterpress_diffusion::training::resize_token_embeddings(&text, 100, Device::Cpu).is_err()
    );
}

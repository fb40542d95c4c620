//! Schedulers against diffusers over whole denoising loops (tools/make_scheduler_fixtures.py):
//! the recorded model outputs and noise draws are replayed, and every step's scaled model input
//! and previous sample must be within 1e-5 of diffusers'; timesteps must be equal and σ within
//! float32 rounding, for every scheduler × spacing × a range of step counts.

mod common;

use std::collections::HashMap;

use letterpress_diffusion::schedulers::{
    GlobalNoise, NoiseSource, Scheduler, SchedulerConfig, SchedulerKind, build_scheduler,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// The per-step tolerance.
const STEP_TOLERANCE: f64 = 1e-5;

/// Schedulers implemented so far (the fixtures cover all of diffusers' ones we port).
const IMPLEMENTED_KINDS: &[SchedulerKind] = &[
    SchedulerKind::Ddim,
    SchedulerKind::Ddpm,
    SchedulerKind::Euler,
    SchedulerKind::EulerAncestral,
    SchedulerKind::DpmSolverMultistep { karras: false },
    SchedulerKind::UniPc,
    SchedulerKind::Lcm,
];
fn implemented(scheduler: &Value, class: &str) -> bool {
    let kind = match scheduler.as_str() {
        Some(name) => name.parse().expect("scheduler name"),
        None => SchedulerKind::from_class_name(class).expect("class"),
    };
    IMPLEMENTED_KINDS
        .iter()
        .any(|k| std::mem::discriminant(k) == std::mem::discriminant(&kind))
}

fn fixtures() -> std::path::PathBuf {
    common::fixtures().join("schedulers")
}

fn read_json(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with `make fixtures`)", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn build(config: &Value, scheduler: &Value) -> Box<dyn Scheduler> {
    let config: SchedulerConfig = serde_json::from_value(config.clone()).expect("config fields");
    let kind = scheduler
        .as_str()
        .map(|s| s.parse::<SchedulerKind>().expect("scheduler name"));
    build_scheduler(&config, kind).expect("build scheduler")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// σ values are float32 in diffusers; ours are the same float32 values unless a libm
/// function rounds differently in the last place.
fn assert_sigmas(label: &str, ours: &[f64], reference: &[f64]) {
    assert_eq!(ours.len(), reference.len(), "{label}: number of sigmas");
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let tol = 4.0 * f32::EPSILON as f64 * b.abs().max(1e-3);
        assert!(
            (a - b).abs() <= tol,
            "{label}: sigma {i}: ours {a}, diffusers {b}"
        );
    }
}

/// Replays diffusers' recorded `randn_tensor` draws, checking each requested shape.
struct Replay {
    draws: Vec<Tensor>,
    shapes: Vec<Vec<i64>>,
    next: usize,
    label: String,
}

impl NoiseSource for Replay {
    fn randn(&mut self, shape: &[i64], _kind: Kind, _device: Device) -> Tensor {
        let i = self.next;
        assert!(
            i < self.shapes.len(),
            "{}: noise draw {i} but diffusers drew only {}",
            self.label,
            self.shapes.len()
        );
        assert_eq!(
            shape,
            self.shapes[i].as_slice(),
            "{}: shape of noise draw {i}",
            self.label
        );
        self.next += 1;
        self.draws[i].shallow_clone()
    }
}

fn max_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn trajectories_match_diffusers() {
    let cases = read_json("cases.json");
    let tensors: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixtures().join("trajectories.safetensors"))
            .expect("trajectories.safetensors")
            .into_iter()
            .collect();
    let get = |k: &str| {
        tensors
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing from trajectories.safetensors"))
    };
    let mut worst: Vec<(String, f64)> = Vec::new();
    let mut checked = 0;
    for case in cases.as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let class = case["class"].as_str().expect("class");
        if !implemented(&case["scheduler"], class) {
            continue;
        }
        let mut scheduler = build(&case["config"], &case["scheduler"]);
        assert_eq!(scheduler.name(), class, "{name}: class");
        let steps = case["steps"].as_u64().expect("steps") as usize;
        scheduler.set_timesteps(steps).expect("set_timesteps");
        assert_eq!(
            scheduler.timesteps(),
            floats(&case["timesteps"]),
            "{name}: timesteps"
        );
        if let Some(sigmas) = case.get("sigmas") {
            let ours = scheduler
                .sigmas()
                .unwrap_or_else(|| panic!("{name}: no sigmas"));
            assert_sigmas(name, ours, &floats(sigmas));
        }
        let init = case["init_noise_sigma"].as_f64().expect("init_noise_sigma");
        assert!(
            (scheduler.init_noise_sigma() - init).abs() <= 1e-6 * init.max(1.0),
            "{name}: init_noise_sigma {} vs {init}",
            scheduler.init_noise_sigma()
        );
        let timesteps = scheduler.timesteps().to_vec();
        let mut err: f64 = 0.0;
        let (mut latents, timesteps) = match case["begin_index"].as_u64() {
            None => (
                get(&format!("{name}.latents")).shallow_clone(),
                &timesteps[..],
            ),
            Some(begin) => {
                let begin = begin as usize;
                scheduler.set_begin_index(begin);
                let noised = scheduler
                    .add_noise(
                        get(&format!("{name}.original")),
                        get(&format!("{name}.added_noise")),
                        timesteps[begin],
                    )
                    .expect("add_noise");
                err = err.max(max_err(&noised, get(&format!("{name}.latents"))));
                (noised, &timesteps[begin..])
            }
        };
        let shapes: Vec<Vec<i64>> = case["noise_shapes"]
            .as_array()
            .expect("noise_shapes")
            .iter()
            .map(|s| floats(s).into_iter().map(|x| x as i64).collect())
            .collect();
        let draws = if shapes.is_empty() {
            Vec::new()
        } else {
            get(&format!("{name}.noise")).unbind(0)
        };
        let mut noise = Replay {
            draws,
            shapes,
            next: 0,
            label: name.to_string(),
        };
        let scaled_ref = get(&format!("{name}.scaled"));
        let outputs = get(&format!("{name}.model_output"));
        let prev_ref = get(&format!("{name}.prev_sample"));
        assert_eq!(
            outputs.size()[0],
            timesteps.len() as i64,
            "{name}: steps run"
        );
        for (i, &t) in timesteps.iter().enumerate() {
            let i = i as i64;
            let scaled = scheduler
                .scale_model_input(&latents, t)
                .expect("scale_model_input");
            err = err.max(max_err(&scaled, &scaled_ref.get(i)));
            latents = scheduler
                .step(&outputs.get(i), t, &latents, &mut noise)
                .expect("step");
            let step_err = max_err(&latents, &prev_ref.get(i));
            assert!(
                step_err <= STEP_TOLERANCE,
                "{name}: step {i} (t = {t}): max abs err {step_err:e}"
            );
            err = err.max(step_err);
        }
        assert_eq!(noise.next, noise.shapes.len(), "{name}: noise draws used");
        println!(
            "parity scheduler {class} {name}: max abs err {err:.3e} over {} steps",
            timesteps.len()
        );
        assert!(err <= STEP_TOLERANCE, "{name}: max abs err {err:e}");
        worst.push((class.to_string(), err));
        checked += 1;
    }
    assert!(checked > 0, "no case checked");
    let mut by_class: HashMap<String, f64> = HashMap::new();
    for (class, e) in worst {
        let w = by_class.entry(class).or_insert(0.0);
        *w = w.max(e);
    }
    let mut by_class: Vec<_> = by_class.into_iter().collect();
    by_class.sort_by(|a, b| a.0.cmp(&b.0));
    for (class, e) in by_class {
        println!("parity scheduler {class} worst: max abs err {e:.3e}");
    }
}

/// The fixtures drew the stochastic schedulers' noise from `torch.Generator().manual_seed(2000 +
/// case index)`; libtorch's global generator seeded the same way must give the same draws, so a
/// pipeline that seeds it reproduces diffusers' images.
#[test]
fn global_noise_reproduces_diffusers_draws() {
    let cases = read_json("cases.json");
    let tensors: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixtures().join("trajectories.safetensors"))
            .expect("trajectories.safetensors")
            .into_iter()
            .collect();
    let mut checked = 0;
    for (index, case) in cases.as_array().expect("cases").iter().enumerate() {
        let name = case["name"].as_str().expect("name");
        let Some(draws) = tensors.get(&format!("{name}.noise")) else {
            continue;
        };
        tch::manual_seed(2000 + index as i64);
        let mut noise = GlobalNoise;
        for (i, draw) in draws.unbind(0).iter().enumerate() {
            let ours = noise.randn(&draw.size(), Kind::Float, Device::Cpu);
            assert_eq!(max_err(&ours, draw), 0.0, "{name}: draw {i}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} stochastic cases");
}

#[test]
fn timesteps_and_sigmas_match_diffusers() {
    let record = read_json("timesteps.json");
    let mut checked = 0;
    for entry in record["tables"].as_array().expect("tables") {
        let base = entry["base"].as_str().expect("base");
        if !implemented(&entry["scheduler"], "") {
            continue;
        }
        let mut config = record["bases"][base].clone();
        config["timestep_spacing"] = entry["spacing"].clone();
        let mut scheduler = build(&config, &entry["scheduler"]);
        let steps = entry["steps"].as_u64().expect("steps") as usize;
        let label = format!(
            "{} {base} {} {steps} steps",
            entry["scheduler"], entry["spacing"]
        );
        let result = scheduler.set_timesteps(steps);
        if entry.get("error").is_some() {
            assert!(result.is_err(), "{label}: diffusers refuses, we accept");
            continue;
        }
        result.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            scheduler.timesteps(),
            floats(&entry["timesteps"]),
            "{label}"
        );
        if let Some(sigmas) = entry.get("sigmas") {
            assert_sigmas(&label, scheduler.sigmas().expect("sigmas"), &floats(sigmas));
        }
        let init = entry["init_noise_sigma"]
            .as_f64()
            .expect("init_noise_sigma");
        assert!(
            (scheduler.init_noise_sigma() - init).abs() <= 1e-6 * init.max(1.0),
            "{label}: init_noise_sigma {} vs {init}",
            scheduler.init_noise_sigma()
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn bad_step_counts_and_names_are_errors() {
    let config = SchedulerConfig::default();
    for kind in IMPLEMENTED_KINDS {
        let mut s = build_scheduler(&config, Some(*kind)).expect("build");
        let zero = s.set_timesteps(0).expect_err("0 steps").to_string();
        assert!(zero.contains("at least 1"), "{kind}: {zero}");
        let many = s.set_timesteps(1001).expect_err("too many").to_string();
        assert!(many.contains("1001"), "{kind}: {many}");
    }
    let err = "dpm++3m"
        .parse::<SchedulerKind>()
        .expect_err("unknown name")
        .to_string();
    assert!(err.contains("dpm++2m") && err.contains("euler-a"), "{err}");
    for name in SchedulerKind::NAMES {
        let kind: SchedulerKind = name.parse().expect("CLI name");
        assert_eq!(kind.to_string(), name);
    }
}

#[test]
fn load_scheduler_reads_the_folder_config_and_name_overrides() {
    use letterpress_diffusion::load_scheduler;
    let path = common::fixtures().join("sd2/scheduler/scheduler_config.json");
    let s = load_scheduler(&path, None).expect("load");
    assert_eq!(s.name(), "DDIMScheduler");
    let mut s = load_scheduler(&path, Some("dpm++2m-karras".parse().expect("name"))).expect("load");
    assert_eq!(s.name(), "DPMSolverMultistepScheduler");
    s.set_timesteps(10).expect("steps");
    assert_eq!(s.timesteps().len(), 10);
    // An unimplemented class (PNDM, SD 1.5's default) falls back to DDIM with its betas.
    let record = read_json("timesteps.json");
    let pndm: SchedulerConfig =
        serde_json::from_value(record["bases"]["sd15"].clone()).expect("sd15 config");
    assert_eq!(pndm.class_name.as_deref(), Some("PNDMScheduler"));
    assert_eq!(
        build_scheduler(&pndm, None).expect("fallback").name(),
        "DDIMScheduler"
    );
    let missing = load_scheduler(&common::fixtures().join("nope.json"), None).expect_err("missing");
    assert!(missing.to_string().contains("nope.json"), "{missing}");
}

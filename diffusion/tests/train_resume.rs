//! A training run stopped at a checkpoint and resumed computes exactly what an uninterrupted
//! run computes; checkpoints and the final model are diffusers folders that load again.

mod common;

use image::{GrayImage, RgbImage};
use letterpress_diffusion::training::{
    LrSchedule, NoTrainProgress, TrainConfig, TrainTarget, TrainingData, TrainingSample,
    latest_checkpoint, train,
};
use letterpress_diffusion::{ControlNetModel, LoadOptions, load};
use tch::Tensor;

/// Eight 64×64 samples: colour blocks and bar masks that differ per index.
struct Blocks;

impl TrainingData for Blocks {
    fn len(&self) -> usize {
        8
    }
    fn get(&self, i: usize) -> letterpress_diffusion::Result<TrainingSample> {
        let i = i as u32;
        let image = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4 + i * 30) as u8, (y * 4) as u8, (i * 17) as u8])
        });
        let mask = GrayImage::from_fn(64, 64, |x, y| {
            let on = (8 + i * 2..40 + i * 2).contains(&x) && (20..30 + i).contains(&y);
            image::Luma([if on { 255 } else { 0 }])
        });
        Ok(TrainingSample {
            image,
            mask,
            caption: format!("a poster with the word 'block{i}'"),
            layout_tokens: Vec::new(),
        })
    }
}

fn config(out: &std::path::Path) -> TrainConfig {
    let base = common::fixtures().join("pipeline").join("sd1-controlnet");
    let mut c = TrainConfig::new(
        base,
        out,
        TrainTarget::ControlNet {
            init: None,
            conditioning_channels: 1,
            conditioning_embedding_out_channels: vec![4, 4, 8, 8],
            train_base: false,
        },
    );
    c.resolution = 64;
    c.batch_size = 2;
    c.gradient_accumulation = 2;
    c.max_steps = 5;
    c.checkpoint_every = 2;
    c.learning_rate = 1e-3;
    c.lr_schedule = LrSchedule::Cosine;
    c.warmup_steps = 1;
    c.caption_dropout = 0.3;
    c.ema_decay = Some(0.9);
    c.seed = 5;
    c
}

/// Training seeds torch's one global generator, so runs in parallel test threads would draw
/// from each other's streams: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("letterpress-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn weights(dir: &std::path::Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(
        dir.join("controlnet")
            .join("diffusion_pytorch_model.safetensors"),
    )
    .expect("weights");
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn stopped_and_resumed_equals_uninterrupted() {
    let _turn = serial();
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let straight = train(&config(&a), &Blocks, &NoTrainProgress).expect("uninterrupted run");
    assert_eq!(straight.steps, 5);
    assert_eq!(straight.losses.len(), 5);

    let mut first = config(&b);
    first.stop_after = Some(3);
    let part1 = train(&first, &Blocks, &NoTrainProgress).expect("first part");
    assert_eq!(part1.steps, 3);
    assert!(part1.model_dir.is_none());
    // Killed after step 3: the newest checkpoint is step 2.
    std::fs::remove_dir_all(b.join("checkpoint-4")).ok();
    assert_eq!(latest_checkpoint(&b).map(|c| c.0), Some(2));
    let part2 = train(&config(&b), &Blocks, &NoTrainProgress).expect("resumed run");
    assert_eq!(part2.resumed_from, 2);
    assert_eq!(part2.steps, 5);

    println!("uninterrupted losses: {:?}", straight.losses);
    println!("stopped losses:       {:?}", part1.losses);
    println!("resumed losses:       {:?}", part2.losses);
    assert_eq!(&straight.losses[..3], &part1.losses[..]);
    assert_eq!(
        &straight.losses[2..],
        &part2.losses[..],
        "steps 3–5 after resuming"
    );
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(wa.len(), wb.len());
    let mut worst: f64 = 0.0;
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        worst = worst.max((ta - tb).abs().max().double_value(&[]));
    }
    println!("final (EMA) weights, resumed vs uninterrupted: max abs diff {worst:e}");
    assert_eq!(worst, 0.0);

    // The final model and the checkpoints are diffusers ControlNet folders.
    let options = LoadOptions::default();
    load::<ControlNetModel>(&a.join("controlnet"), &options).expect("final model loads");
    load::<ControlNetModel>(&a.join("checkpoint-4").join("controlnet"), &options)
        .expect("checkpoint loads");
    assert!(
        a.join("checkpoint-4")
            .join("optimizer.safetensors")
            .is_file()
    );

    // A resume with other settings is refused.
    let mut other = config(&b);
    other.batch_size = 1;
    other.max_steps = 9;
    let err = train(&other, &Blocks, &NoTrainProgress).expect_err("other settings");
    assert!(err.to_string().contains("other settings"), "{err}");
}

/// Joint training (`train_base`): the UNet and text encoder learn with the ControlNet, a
/// resumed run matches an uninterrupted one in all three, and the output is a whole pipeline
/// that lists and loads its ControlNet.
#[test]
fn joint_training_resumes_exactly_and_writes_a_pipeline() {
    let _turn = serial();
    let joint = |out: &std::path::Path| {
        let mut c = config(out);
        if let TrainTarget::ControlNet { train_base, .. } = &mut c.target {
            *train_base = true;
        }
        c.max_steps = 3;
        c.checkpoint_every = 1;
        c.ema_decay = None;
        c
    };
    let (a, b) = (tmp("joint-straight"), tmp("joint-resumed"));
    let straight = train(&joint(&a), &Blocks, &NoTrainProgress).expect("uninterrupted run");
    let mut first = joint(&b);
    first.stop_after = Some(1);
    train(&first, &Blocks, &NoTrainProgress).expect("first part");
    let resumed = train(&joint(&b), &Blocks, &NoTrainProgress).expect("resumed run");
    assert_eq!(resumed.resumed_from, 1);
    assert_eq!(&straight.losses[1..], &resumed.losses[..]);

    let base = common::fixtures().join("pipeline").join("sd1-controlnet");
    let read = |dir: &std::path::Path, component: &str, stem: &str| {
        let mut v =
            Tensor::read_safetensors(dir.join(component).join(format!("{stem}.safetensors")))
                .expect("weights");
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    for (component, stem) in [
        ("unet", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
        ("controlnet", "diffusion_pytorch_model"),
    ] {
        let (wa, wb) = (read(&a, component, stem), read(&b, component, stem));
        let worst = wa
            .iter()
            .zip(&wb)
            .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
            .fold(0.0, f64::max);
        assert_eq!(worst, 0.0, "{component}: resumed vs uninterrupted");
    }
    // The base UNet moved (it is trained, not frozen).
    let moved = read(&base, "unet", "diffusion_pytorch_model")
        .iter()
        .zip(&read(&a, "unet", "diffusion_pytorch_model"))
        .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(moved > 0.0, "the UNet did not change");

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("model_index.json")).expect("index"))
            .expect("JSON");
    assert_eq!(index["controlnet"][1], "ControlNetModel");
    let sd =
        letterpress_diffusion::pipelines::StableDiffusion::load(&a, None, &LoadOptions::default())
            .expect("the output loads as a pipeline");
    assert!(
        sd.controlnet.is_some(),
        "the pipeline's own ControlNet is loaded"
    );
}

/// `train vae` writes a scaling factor that brings the trained VAE's latents to unit variance
/// (the diffusion model's noise schedule assumes it), measured here on the training images.
#[test]
fn trained_vae_latents_have_unit_variance_after_scaling() {
    let _turn = serial();
    let out = tmp("vae");
    let mut c = config(&out);
    c.target = TrainTarget::Vae {
        kl_weight: 1e-6,
        text_weight: 4.0,
    };
    c.random_crop = true;
    c.max_steps = 3;
    c.ema_decay = None;
    let report = train(&c, &Blocks, &NoTrainProgress).expect("VAE training");
    assert_eq!(report.model_dir.as_deref(), Some(out.as_path()));
    let vae =
        load::<letterpress_diffusion::AutoencoderKL>(&out.join("vae"), &LoadOptions::default())
            .expect("the trained VAE loads");
    let factor = vae.model.config().scaling_factor;
    let base = common::fixtures().join("pipeline").join("sd1-controlnet");
    let base_factor =
        load::<letterpress_diffusion::AutoencoderKL>(&base.join("vae"), &LoadOptions::default())
            .expect("base VAE")
            .model
            .config()
            .scaling_factor;
    assert!(factor.is_finite() && factor > 0.0);
    assert_ne!(factor, base_factor, "the scaling factor was not measured");
    let pixels = Tensor::cat(
        &(0..8)
            .map(|i| {
                let s = Blocks.get(i).expect("sample");
                Tensor::from_slice(&s.image.into_raw())
                    .view([1, 64, 64, 3])
                    .permute([0, 3, 1, 2])
                    .to_kind(tch::Kind::Float)
                    / 127.5
                    - 1.0
            })
            .collect::<Vec<_>>(),
        0,
    );
    tch::manual_seed(1);
    let z = tch::no_grad(|| {
        vae.model
            .encode(&pixels)
            .expect("encode")
            .sample()
            .expect("sample")
    });
    let std = (z * factor).std(true).double_value(&[]);
    println!("scaling factor {factor:.5}, std of scaled latents {std:.4}");
    assert!((0.8..1.2).contains(&std), "scaled latent std {std}");
}

/// `Blocks` with empty glyph masks.
struct NoGlyphs;

impl TrainingData for NoGlyphs {
    fn len(&self) -> usize {
        Blocks.len()
    }
    fn get(&self, i: usize) -> letterpress_diffusion::Result<TrainingSample> {
        let mut s = Blocks.get(i)?;
        s.mask = GrayImage::new(64, 64);
        Ok(s)
    }
}

#[test]
fn glyph_input_unet_trains_on_crops_with_its_masks() {
    let _turn = serial();
    let glyph_config = |out: &std::path::Path| {
        let base = common::fixtures().join("pipeline").join("sd1-glyph");
        let mut c = TrainConfig::new(base, out, TrainTarget::UNet);
        c.resolution = 64;
        // Plain CLIP tokenizer: captions alone, and crops are allowed.
        c.random_crop = true;
        c.batch_size = 2;
        c.max_steps = 2;
        c.checkpoint_every = 10;
        c.learning_rate = 1e-3;
        c.seed = 3;
        c
    };
    let (a, b) = (tmp("glyph"), tmp("glyph-empty"));
    let with_masks = train(&glyph_config(&a), &Blocks, &NoTrainProgress).expect("glyph run");
    let without = train(&glyph_config(&b), &NoGlyphs, &NoTrainProgress).expect("empty masks");
    println!(
        "losses with masks {:?}, with empty masks {:?}",
        with_masks.losses, without.losses
    );
    // Same seed, same noise and timesteps: only the glyph channels differ.
    assert_ne!(
        with_masks.losses[0], without.losses[0],
        "the mask never reached the UNet"
    );

    let model = letterpress_diffusion::pipelines::StableDiffusion::load(
        &with_masks.model_dir.expect("final model"),
        None,
        &LoadOptions::default(),
    )
    .expect("the trained pipeline loads");
    assert_eq!(model.glyph_input_factor(), Some(8));

    // A ControlNet on a glyph-input UNet is refused with the reason.
    let mut cn = glyph_config(&tmp("glyph-cn"));
    cn.target = TrainTarget::ControlNet {
        init: None,
        conditioning_channels: 1,
        conditioning_embedding_out_channels: vec![4, 4, 8, 8],
        train_base: false,
    };
    let err = train(&cn, &Blocks, &NoTrainProgress).unwrap_err();
    assert!(err.to_string().contains("train unet"), "{err}");
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

//! Micro-batches: the seeded per-epoch sample order, images and glyph masks resized or
//! randomly cropped, and the tensors of a diffusion step (latents, noise, timesteps, ids).

use image::{GrayImage, RgbImage};
use tch::{Device, Kind, Tensor};

use super::config::{TrainConfig, TrainTarget};
use super::noise::NoiseSchedule;
use super::step::TrainBatch;
use crate::error::Result;
use crate::pipelines::images::rgb_to_tensor;
use crate::pipelines::{ControlMode, StableDiffusion, control_tensor};

/// One training sample as decoded by the caller's dataset.
#[derive(Debug, Clone)]
pub struct TrainingSample {
    pub image: RgbImage,
    /// The glyph mask, white on black.
    pub mask: GrayImage,
    pub caption: String,
    /// TextDiffuser-2 layout tokens per text line (UNet training; may be empty otherwise).
    pub layout_tokens: Vec<Vec<String>>,
}

/// Random access to the training set (dataset shards in the CLI).
pub trait TrainingData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get(&self, index: usize) -> Result<TrainingSample>;
}

/// A permutation of `0..n` from `(seed, epoch)` (Fisher–Yates over SplitMix64).
pub(super) fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut state = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The samples of micro-batches, in the order of their epoch's permutation (the current
/// epoch's permutation is kept).
pub(super) struct Sampler {
    epoch: u64,
    order: Vec<usize>,
}

impl Sampler {
    pub(super) fn new() -> Self {
        Self {
            epoch: u64::MAX,
            order: Vec::new(),
        }
    }

    /// The `batch_size` samples of micro-batch `m`; a batch may span two epochs.
    pub(super) fn micro_batch(
        &mut self,
        data: &dyn TrainingData,
        config: &TrainConfig,
        m: u64,
    ) -> Result<Vec<TrainingSample>> {
        let bs = config.batch_size as u64;
        let mut samples = Vec::with_capacity(config.batch_size);
        for j in 0..bs {
            let i = m * bs + j;
            let (epoch, pos) = (i / data.len() as u64, (i % data.len() as u64) as usize);
            if epoch != self.epoch {
                self.order = epoch_order(data.len(), config.seed, epoch);
                self.epoch = epoch;
            }
            samples.push(data.get(self.order[pos])?);
        }
        Ok(samples)
    }
}

/// The images of a micro-batch (`[B, 3, r, r]` in [-1, 1]) and, for `Some(mask_channels)`,
/// their glyph masks as control images (`[B, mask_channels, r, r]` in [0, 1]): resized to `r`², or, with
/// `config.random_crop`, the same random `r`² crop of both at the images' own size (an image
/// smaller than `r` is resized up first). Crop offsets come from torch's generator, seeded per
/// micro-batch, so a resumed run crops as the uninterrupted one did.
pub(super) fn image_batch(
    samples: &[TrainingSample],
    config: &TrainConfig,
    mask_channels: Option<i64>,
) -> Result<(Tensor, Option<Tensor>)> {
    let r = config.resolution;
    let mut pixels = Vec::with_capacity(samples.len());
    let mut masks = Vec::with_capacity(samples.len());
    for s in samples {
        let (w, h) = if config.random_crop {
            (s.image.width().max(r), s.image.height().max(r))
        } else {
            (r, r)
        };
        let image = rgb_to_tensor(&s.image, w, h);
        let (x, y) = if config.random_crop {
            let draw = |n: u32| -> Result<i64> {
                Ok(
                    Tensor::f_randint(i64::from(n - r + 1), [1], (Kind::Int64, Device::Cpu))?
                        .f_int64_value(&[0])?,
                )
            };
            (draw(w)?, draw(h)?)
        } else {
            (0, 0)
        };
        let crop = |t: &Tensor| -> Result<Tensor> {
            Ok(t.f_narrow(3, x, i64::from(r))?
                .f_narrow(2, y, i64::from(r))?)
        };
        pixels.push(crop(&image)?);
        if let Some(channels) = mask_channels {
            masks.push(crop(&control_tensor(
                &s.mask,
                ControlMode::Mask,
                w,
                h,
                channels,
            ))?);
        }
    }
    let masks = match mask_channels {
        Some(_) => Some(Tensor::f_cat(&masks, 0)?.f_to_device(config.device)?),
        None => None,
    };
    Ok((
        Tensor::f_cat(&pixels, 0)?.f_to_device(config.device)?,
        masks,
    ))
}

/// Per-pixel loss weights `1 + text_weight × (mask dilated by 2 px)`.
pub(super) fn text_weights(mask: &Tensor, text_weight: f64) -> Result<Tensor> {
    let near_text = mask.f_max_pool2d([5, 5], [1, 1], [2, 2], [1, 1], false)?;
    Ok(near_text.f_mul_scalar(text_weight)?.f_add_scalar(1.0)?)
}

/// Decodes a micro-batch into tensors and draws its noise, timesteps and caption dropout.
pub(super) fn make_batch(
    sd: &StableDiffusion,
    config: &TrainConfig,
    schedule: &NoiseSchedule,
    samples: &[TrainingSample],
) -> Result<TrainBatch> {
    let device = config.device;
    // TextDiffuser-2's captions with layout tokens where the tokenizer has them; a UNet
    // trained with a plain CLIP tokenizer (a glyph-input UNet) reads plain captions.
    let layout_captions =
        matches!(config.target, TrainTarget::UNet) && sd.tokenizer.has_layout_tokens();
    // The glyph mask: the ControlNet's control image, or a glyph-input UNet's extra channels.
    let control_channels = match &sd.controlnet {
        Some(cn) => Some(cn.model.config().conditioning_channels),
        None => sd.glyph_input_factor().map(|_| 1),
    };
    let (pixels, control) = image_batch(samples, config, control_channels)?;
    let latents = tch::no_grad(|| -> Result<Tensor> {
        let dist = sd.vae.model.encode(&pixels)?;
        Ok(dist
            .sample()?
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(sd.vae.model.config().scaling_factor)?)
    })?;
    let noise = Tensor::f_randn(latents.size(), (Kind::Float, Device::Cpu))?.f_to_device(device)?;
    let timesteps = schedule.sample_timesteps(samples.len() as i64, device);
    let drop = Tensor::f_rand([samples.len() as i64], (Kind::Float, Device::Cpu))?;
    let mut ids = Vec::with_capacity(samples.len() * 77);
    for (i, s) in samples.iter().enumerate() {
        let dropped = drop.f_double_value(&[i as i64])? < config.caption_dropout;
        let row = match (layout_captions, dropped) {
            // TextDiffuser-2's unconditional input: all eos.
            (true, true) => vec![sd.tokenizer.eos_id(); sd.tokenizer.max_length()],
            (true, false) => sd
                .tokenizer
                .textdiffuser2_input_ids(&s.caption, &s.layout_tokens),
            (false, true) => sd.tokenizer.encode_padded(""),
            (false, false) => sd.tokenizer.encode_padded(&s.caption),
        };
        ids.extend(row);
    }
    let input_ids = Tensor::from_slice(&ids)
        .f_reshape([samples.len() as i64, -1])?
        .f_to_device(device)?;
    Ok(TrainBatch {
        latents,
        noise,
        timesteps,
        input_ids,
        control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random crop takes the same window of the image and of its glyph mask, inside the
    /// image, at offsets that vary; without cropping the batch is the image resized.
    #[test]
    fn random_crops_cut_image_and_mask_alike() {
        // Seeds and draws: held so that no seeded draw of another test lands in between.
        let _turn = crate::global_generator();
        // Red encodes x and green y; the mask is on where (x + y) % 3 == 0.
        let (w, h) = (200u32, 150u32);
        let image = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let mask = GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if (x + y) % 3 == 0 { 255 } else { 0 }])
        });
        let sample = TrainingSample {
            image,
            mask,
            caption: "a poster".into(),
            layout_tokens: Vec::new(),
        };
        let mut config = TrainConfig::new("base", "out", TrainTarget::UNet);
        config.resolution = 64;
        config.random_crop = true;
        tch::manual_seed(3);
        let samples = vec![
            sample.clone(),
            sample.clone(),
            sample.clone(),
            sample.clone(),
        ];
        let (pixels, masks) = image_batch(&samples, &config, Some(3)).unwrap();
        let masks = masks.expect("masks asked for");
        assert_eq!(pixels.size(), [4, 3, 64, 64]);
        assert_eq!(masks.size(), [4, 3, 64, 64]);
        let value = |t: &Tensor| ((t + 1.0) * 127.5).round();
        let xs = value(&pixels.narrow(1, 0, 1));
        let ys = value(&pixels.narrow(1, 1, 1));
        // Each crop is a window of the original at the image's own scale …
        let dx = xs.narrow(3, 1, 63) - xs.narrow(3, 0, 63);
        let dy = ys.narrow(2, 1, 63) - ys.narrow(2, 0, 63);
        for d in [dx, dy] {
            assert_eq!(d.min().double_value(&[]), 1.0);
            assert_eq!(d.max().double_value(&[]), 1.0);
        }
        let x0 = xs.amin([1, 2, 3], false);
        let y0 = ys.amin([1, 2, 3], false);
        assert!(x0.max().double_value(&[]) <= f64::from(w - 64));
        assert!(y0.max().double_value(&[]) <= f64::from(h - 64));
        assert!(
            x0.max().double_value(&[]) > x0.min().double_value(&[]),
            "crop offsets vary"
        );
        // … and its mask is the same window of the mask, in every channel.
        let expected = (xs + ys).fmod(3.0).eq(0.0).to_kind(Kind::Float);
        for c in 0..3 {
            assert!(masks.narrow(1, c, 1).equal(&expected), "mask channel {c}");
        }
        // Without random crops: the whole image, resized, and no draw from the generator.
        config.random_crop = false;
        tch::manual_seed(9);
        let (resized, _) = image_batch(&samples[..1], &config, Some(1)).unwrap();
        assert!(resized.allclose(&rgb_to_tensor(&sample.image, 64, 64), 0.0, 0.0, false));
        let after = Tensor::randint(1000, [4], (Kind::Int64, Device::Cpu));
        tch::manual_seed(9);
        assert!(after.equal(&Tensor::randint(1000, [4], (Kind::Int64, Device::Cpu))));
    }

    #[test]
    fn epoch_orders_are_permutations_that_differ_by_epoch() {
        let a = epoch_order(50, 3, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 3, 0));
        assert_ne!(a, epoch_order(50, 3, 1));
    }
}

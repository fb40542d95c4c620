//! The glyph mask as extra UNet input channels, as TextDiffuser feeds its character
//! segmentation map to the UNet beside the latents (docs/architecture.md, "Glyph input
//! channels"). The mask is folded onto the latent grid without loss by space-to-depth
//! (`pixel_unshuffle`): with a VAE that downsamples f×, each latent position gets the f × f
//! mask pixels it covers as f² channels, so even strokes narrower than a latent cell reach
//! the UNet. Such a UNet has `in_channels = latent_channels + f²` and stays an ordinary
//! diffusers `UNet2DConditionModel`; the folding is the pipeline's, like an inpainting UNet's
//! mask and masked-image latents.

use tch::Tensor;

use crate::error::{Result, TorchContext};

/// The downsampling factor f of a UNet that reads the glyph mask as f² extra channels, or
/// `None` for a UNet whose inputs are the latents alone or an inpainting UNet's
/// (`2 × latent_channels + 1`, diffusers' convention, which takes precedence).
pub fn glyph_input_factor(
    in_channels: i64,
    latent_channels: i64,
    vae_scale_factor: i64,
) -> Option<i64> {
    let inpainting = in_channels == 2 * latent_channels + 1;
    let f = vae_scale_factor;
    (!inpainting && in_channels == latent_channels + f * f).then_some(f)
}

/// `[B, 1, H, W]` mask values in [0, 1] → `[B, f², H / f, W / f]`: channel `(y % f) · f + x % f`
/// of latent cell `(y / f, x / f)` holds mask pixel `(y, x)`.
pub fn glyph_input(mask: &Tensor, factor: i64) -> Result<Tensor> {
    mask.f_pixel_unshuffle(factor)
        .ctx("folding the glyph mask onto the latent grid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn glyph_channels_are_told_apart_from_latents_and_inpainting() {
        // 8 latent channels, 4× VAE: 8 + 16 reads the glyph mask.
        assert_eq!(glyph_input_factor(24, 8, 4), Some(4));
        assert_eq!(glyph_input_factor(8, 8, 4), None);
        // SD's 9-channel inpainting UNet, and an inpainting UNet that happens to have
        // latent + f² channels too (15 latent channels, 4×), stay inpainting.
        assert_eq!(glyph_input_factor(9, 4, 8), None);
        assert_eq!(glyph_input_factor(31, 15, 4), None);
        assert_eq!(glyph_input_factor(68, 4, 8), Some(8));
    }

    #[test]
    fn each_pixel_lands_in_its_cell_and_channel() {
        let (h, w, f) = (8i64, 12i64, 4i64);
        let values: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        let mask = Tensor::from_slice(&values).reshape([1, 1, h, w]);
        let folded = glyph_input(&mask, f).unwrap();
        assert_eq!(folded.size(), [1, f * f, h / f, w / f]);
        for y in 0..h {
            for x in 0..w {
                let c = (y % f) * f + x % f;
                let got = folded.double_value(&[0, c, y / f, x / f]);
                assert_eq!(got, (y * w + x) as f64, "pixel ({y}, {x})");
            }
        }
        let zeros = Tensor::zeros([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        assert_eq!(glyph_input(&zeros, 8).unwrap().size(), [2, 64, 1, 1]);
    }
}

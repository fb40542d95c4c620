//! Pixels ↔ tensors as diffusers' `VaeImageProcessor` converts them.

use image::imageops::{FilterType, resize};
use image::{GrayImage, RgbImage};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// `[1, C, H, W]` fp32 in [0, 1] from interleaved 8-bit pixels (`pil_to_numpy` divides by 255).
fn to_unit_tensor(raw: &[u8], channels: i64, width: u32, height: u32) -> Tensor {
    Tensor::from_slice(raw)
        .view([height as i64, width as i64, channels])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(Kind::Float)
        / 255.0
}

/// The image at exactly `width × height` (Lanczos, as diffusers' default `resample`).
pub(crate) fn fit_rgb(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        image.clone()
    } else {
        resize(image, width, height, FilterType::Lanczos3)
    }
}

pub(crate) fn fit_gray(image: &GrayImage, width: u32, height: u32) -> GrayImage {
    if image.dimensions() == (width, height) {
        image.clone()
    } else {
        resize(image, width, height, FilterType::Lanczos3)
    }
}

/// An RGB image as the VAE's input: `[1, 3, H, W]` in [-1, 1] (`image_processor.preprocess`).
pub(crate) fn rgb_to_tensor(image: &RgbImage, width: u32, height: u32) -> Tensor {
    let image = fit_rgb(image, width, height);
    to_unit_tensor(image.as_raw(), 3, width, height) * 2.0 - 1.0
}

/// A grey image as `[1, channels, H, W]` in [0, 1]; grey is repeated for 3 channels
/// (`convert("RGB")`).
pub(crate) fn gray_to_unit_tensor(image: &GrayImage, channels: i64) -> Tensor {
    let t = to_unit_tensor(image.as_raw(), 1, image.width(), image.height());
    if channels == 1 {
        t
    } else {
        t.repeat([1, channels, 1, 1])
    }
}

/// An inpainting mask as diffusers' `mask_processor` makes it: grey in [0, 1], binarised at 0.5,
/// `[1, 1, H, W]`.
pub(crate) fn binary_mask(mask: &GrayImage, width: u32, height: u32) -> Tensor {
    let mask = fit_gray(mask, width, height);
    gray_to_unit_tensor(&mask, 1).ge(0.5).to_kind(Kind::Float)
}

/// `[3, H, W]` in [0, 1] → 8-bit RGB, rounding as `numpy_to_pil` does (`(x * 255).round()`).
pub(crate) fn tensor_to_rgb8(pixels: &Tensor) -> Result<RgbImage> {
    let size = pixels.size();
    let [3, h, w] = size[..] else {
        return Err(Error::Shape {
            what: "image",
            message: format!("{size:?}: expected [3, height, width]"),
        });
    };
    let bytes = (pixels
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .clamp(0.0, 1.0)
        * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous();
    let raw = Vec::<u8>::try_from(&bytes.flatten(0, -1))?;
    RgbImage::from_raw(w as u32, h as u32, raw).ok_or_else(|| Error::Shape {
        what: "image",
        message: "pixel buffer does not fit its size".into(),
    })
}

/// A cheap RGB approximation of SD 1.x/2.x latents `[4, h, w]` at latent resolution: the
/// linear latent→RGB factors the community fitted for SD 1.5 previews (as in A1111's
/// "Approx NN" cheap mode). Good enough to watch an image form, not for output.
pub(crate) fn latent_preview(latents: &Tensor) -> Result<RgbImage> {
    const FACTORS: [[f64; 3]; 4] = [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ];
    let latents = latents.to_device(Device::Cpu).to_kind(Kind::Float);
    if latents.size().len() != 3 || latents.size()[0] != 4 {
        return Err(Error::Shape {
            what: "latent preview",
            message: format!("{:?}: expected [4, h, w]", latents.size()),
        });
    }
    let flat: Vec<f64> = FACTORS.iter().flatten().copied().collect();
    let m = Tensor::from_slice(&flat).view([4, 3]).to_kind(Kind::Float);
    // [h, w, 4] × [4, 3] → [h, w, 3], roughly in [-1, 1].
    let rgb = latents.permute([1, 2, 0]).matmul(&m).permute([2, 0, 1]);
    tensor_to_rgb8(&((rgb + 1.0) / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_round_trip_and_quantisation() {
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 100, 7]));
        let t = rgb_to_tensor(&img, 4, 3);
        assert_eq!(t.size(), [1, 3, 3, 4]);
        assert!((t.max().double_value(&[]) - (200.0 / 255.0 * 2.0 - 1.0)).abs() < 1e-6);
        let back = tensor_to_rgb8(&((t.get(0) + 1.0) / 2.0)).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn mask_is_binarised_at_half() {
        let m = GrayImage::from_raw(3, 1, vec![127, 128, 255]).unwrap();
        let t = binary_mask(&m, 3, 1);
        assert_eq!(
            Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap(),
            [0.0, 1.0, 1.0]
        );
    }
}

//! The ControlNet's conditioning image from the renderer's glyph mask: the mask itself, its
//! inverse (GlyphControl's black on white), or its Canny edges (canny ControlNets, the
//! "ControlNet (canny on glyphs)" baseline of TextDiffuser's evaluation).

use image::GrayImage;
use tch::Tensor;

use super::images::{fit_gray, gray_to_unit_tensor};
use super::request::ControlMode;

/// Canny thresholds on 8-bit gradients, the values ControlNet's canny annotator uses by default
/// (lllyasviel/ControlNet `gradio_canny2image.py`: low 100, high 200).
const CANNY_LOW: f32 = 100.0;
const CANNY_HIGH: f32 = 200.0;

/// The control picture, 8-bit, at `width × height`.
pub fn control_picture(mask: &GrayImage, mode: ControlMode, width: u32, height: u32) -> GrayImage {
    let mask = fit_gray(mask, width, height);
    match mode {
        ControlMode::Mask => mask,
        ControlMode::Inverse => {
            let mut inv = mask;
            image::imageops::invert(&mut inv);
            inv
        }
        ControlMode::Canny => imageproc::edges::canny(&mask, CANNY_LOW, CANNY_HIGH),
    }
}

/// `[1, channels, H, W]` fp32 in [0, 1], as `StableDiffusionControlNetPipeline.prepare_image`
/// makes it from a PIL image (`convert("RGB")` for 3-channel ControlNets).
pub fn control_tensor(
    mask: &GrayImage,
    mode: ControlMode,
    width: u32,
    height: u32,
    channels: i64,
) -> Tensor {
    gray_to_unit_tensor(&control_picture(mask, mode, width, height), channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar() -> GrayImage {
        GrayImage::from_fn(32, 32, |x, y| {
            image::Luma([if (8..24).contains(&x) && (12..20).contains(&y) {
                255
            } else {
                0
            }])
        })
    }

    #[test]
    fn inverse_is_black_on_white() {
        let inv = control_picture(&bar(), ControlMode::Inverse, 32, 32);
        assert_eq!(inv.get_pixel(0, 0)[0], 255);
        assert_eq!(inv.get_pixel(10, 15)[0], 0);
    }

    #[test]
    fn canny_marks_the_outline_only() {
        let edges = control_picture(&bar(), ControlMode::Canny, 32, 32);
        let on = |x, y| edges.get_pixel(x, y)[0] == 255;
        assert!(!on(16, 16), "inside the bar is flat");
        assert!(!on(2, 2), "background is flat");
        let outline =
            (6..26).any(|x| on(x, 11) || on(x, 12)) && (10..22).any(|y| on(7, y) || on(8, y));
        assert!(outline, "edges on the bar's outline");
    }

    #[test]
    fn three_channel_grey() {
        let t = control_tensor(&bar(), ControlMode::Mask, 32, 32, 3);
        assert_eq!(t.size(), [1, 3, 32, 32]);
        assert_eq!(t.double_value(&[0, 2, 15, 10]), 1.0);
        assert_eq!(t.double_value(&[0, 0, 0, 0]), 0.0);
    }
}

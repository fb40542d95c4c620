//! Procedural photographs without text, the bulk of a web crawl: landscapes, blurred shapes
//! (bokeh), cloud and stone textures, noisy gradients, wood and marble grain, and foliage-like
//! high-contrast detail. `letterpress bench ocr --mix web` and the first-stage tests use them
//! as the inputs a dataset build must reject; they are made, not downloaded, so they carry no
//! licence and no text.

use super::rng::Rng;
use image::{Rgb, RgbImage};

/// The kinds of photograph, in the order `textless_photo` cycles through them.
pub const PHOTO_KINDS: [&str; 6] = [
    "landscape",
    "bokeh",
    "clouds",
    "noisy_gradient",
    "grain",
    "foliage",
];

/// Photograph `index` of the series `seed`: kind `PHOTO_KINDS[index % 6]`, colours and shapes
/// drawn from `(seed, index)` alone.
pub fn textless_photo(seed: u64, index: u64, width: u32, height: u32) -> RgbImage {
    let mut rng = Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D);
    let noise = ValueNoise::new(&mut rng);
    let (a, b) = (rng.colour(), rng.colour());
    let (w, h) = (width.max(1), height.max(1));
    let scale = 2.0 + rng.unit() * 6.0;
    let mut img = RgbImage::new(w, h);
    let kind = index as usize % PHOTO_KINDS.len();
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let t = match kind {
            0 => {
                let ridge = 0.45 + 0.25 * noise.fractal(u * scale, 0.5, 4);
                if v < ridge {
                    v * 0.6
                } else {
                    0.5 + 0.5 * noise.fractal(u * 40.0, v * 40.0, 5)
                }
            }
            2 => noise.fractal(u * scale, v * scale, 6),
            3 => 0.8 * u * 0.5 + 0.8 * v * 0.5 + 0.2 * rng.unit(),
            4 => {
                let turbulence = noise.fractal(u * scale, v * scale, 5);
                0.5 + 0.5 * ((u * 30.0 + turbulence * 8.0) * std::f32::consts::PI).sin()
            }
            5 => {
                let leaf = noise.fractal(u * 60.0, v * 60.0, 3);
                if leaf > 0.55 { 0.9 } else { 0.15 + 0.2 * leaf }
            }
            _ => v,
        };
        *p = mix(a, b, t.clamp(0.0, 1.0));
    }
    if kind == 1 {
        bokeh(&mut img, &mut rng);
    }
    img
}

/// Soft discs of light over the gradient: a shallow-depth-of-field background.
fn bokeh(img: &mut RgbImage, rng: &mut Rng) {
    let (w, h) = img.dimensions();
    for _ in 0..(8 + rng.below(20)) {
        let (cx, cy) = (rng.unit() * w as f32, rng.unit() * h as f32);
        let r = (0.03 + rng.unit() * 0.15) * w.min(h) as f32;
        let c = rng.colour();
        let (x0, x1) = ((cx - r).max(0.0) as u32, ((cx + r) as u32).min(w));
        let (y0, y1) = ((cy - r).max(0.0) as u32, ((cy + r) as u32).min(h));
        for y in y0..y1 {
            for x in x0..x1 {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / r;
                if d < 1.0 {
                    let p = img.get_pixel_mut(x, y);
                    *p = mix(p.0, c, 0.6 * (1.0 - d * d));
                }
            }
        }
    }
    *img = image::imageops::fast_blur(img, 3.0);
}

fn mix(a: [u8; 3], b: [u8; 3], t: f32) -> Rgb<u8> {
    let m = |x: u8, y: u8| (f32::from(x) * (1.0 - t) + f32::from(y) * t).round() as u8;
    Rgb([m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])])
}

/// Value noise: random values on the integer lattice (hashed into a table of 4096, cheap
/// enough for megapixel photographs), smoothly interpolated.
struct ValueNoise(Vec<f32>);

impl ValueNoise {
    fn new(rng: &mut Rng) -> Self {
        ValueNoise((0..4096).map(|_| rng.unit()).collect())
    }

    fn lattice(&self, i: i64, j: i64) -> f32 {
        let h = (i.wrapping_mul(73_856_093) ^ j.wrapping_mul(19_349_663)) as usize;
        self.0[h & 4095]
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (i, j) = (x.floor() as i64, y.floor() as i64);
        let s = |t: f32| t * t * (3.0 - 2.0 * t);
        let (fx, fy) = (s(x - x.floor()), s(y - y.floor()));
        let top = self.lattice(i, j) * (1.0 - fx) + self.lattice(i + 1, j) * fx;
        let bottom = self.lattice(i, j + 1) * (1.0 - fx) + self.lattice(i + 1, j + 1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// Octaves of halving amplitude and doubling frequency, normalised to 0–1.
    fn fractal(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut norm, mut amp, mut freq) = (0.0, 0.0, 1.0, 1.0);
        for _ in 0..octaves {
            sum += amp * self.at(x * freq, y * freq);
            norm += amp;
            amp *= 0.5;
            freq *= 2.0;
        }
        sum / norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_depend_only_on_seed_and_index_and_vary_by_kind() {
        let a = textless_photo(7, 3, 64, 48);
        assert_eq!(a, textless_photo(7, 3, 64, 48));
        assert_ne!(a, textless_photo(8, 3, 64, 48));
        assert_eq!(a.dimensions(), (64, 48));
        for i in 0..PHOTO_KINDS.len() as u64 {
            let p = textless_photo(1, i, 32, 32);
            let first = p.get_pixel(0, 0);
            assert!(p.pixels().any(|q| q != first), "kind {i} is flat");
        }
    }
}

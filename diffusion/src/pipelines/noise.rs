//! Seeded Gaussian noise that reproduces diffusers' draws on the CPU.
//!
//! diffusers draws with `torch.Generator().manual_seed(S)` on the CPU; `tch::manual_seed(S)` then
//! `randn` on the CPU draws from the same Philox-free mt19937 stream, so the first draws after
//! seeding are identical (verified by the `seeded_latents` test against values torch recorded).
//! tch exposes only the process-wide generator, so every seed-and-draw sequence holds one lock:
//! two generations in one process cannot interleave their draws.

use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::schedulers::NoiseSource;

static GENERATOR: Mutex<()> = Mutex::new(());

/// Seeds the CPU generator with `seed` and draws one fp32 tensor per shape, in order: exactly
/// the tensors `g = torch.Generator().manual_seed(seed)` gives for
/// `[torch.randn(s, generator=g) for s in shapes]`.
pub fn seeded_draws(seed: u64, shapes: &[&[i64]]) -> Vec<Tensor> {
    let _guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    // torch takes the seed as a uint64; tch passes the same 64 bits as i64.
    tch::manual_seed(seed as i64);
    shapes
        .iter()
        .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
        .collect()
}

/// Noise for stochastic schedulers (DDPM, Euler ancestral, LCM): one generator per image,
/// reseeded for each draw from (image seed, draw index) so an image is reproducible from its
/// seed whatever else runs in the process and whatever n is. diffusers continues the initial
/// generator instead, so stochastic schedulers match diffusers only in distribution.
#[derive(Debug)]
pub struct PerImageNoise {
    seeds: Vec<u64>,
    draws: u64,
}

impl PerImageNoise {
    pub fn new(seeds: &[u64]) -> Self {
        Self {
            seeds: seeds.to_vec(),
            draws: 0,
        }
    }
}

/// SplitMix64: decorrelates neighbouring (seed, draw) pairs.
fn mix(seed: u64, draw: u64) -> u64 {
    let mut z = seed ^ draw.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NoiseSource for PerImageNoise {
    fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Tensor {
        self.draws += 1;
        let n = self.seeds.len() as i64;
        // The scheduler asks for the whole batch; each image gets its own rows.
        let per_image: Vec<i64> = match shape.split_first() {
            Some((&b, rest)) if b == n => std::iter::once(1).chain(rest.iter().copied()).collect(),
            _ => {
                let seed = mix(self.seeds.first().copied().unwrap_or(0), self.draws);
                return seeded_draws(seed, &[shape])
                    .remove(0)
                    .to_kind(kind)
                    .to_device(device);
            }
        };
        let parts: Vec<Tensor> = self
            .seeds
            .iter()
            .map(|&s| seeded_draws(mix(s, self.draws), &[&per_image]).remove(0))
            .collect();
        Tensor::cat(&parts, 0).to_kind(kind).to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `torch.randn(8, generator=torch.Generator().manual_seed(S))` recorded with torch 2.11.0.
    #[test]
    fn seeded_latents_equal_torch() {
        let cases: [(u64, [f32; 8]); 3] = [
            (0, TORCH_SEED_0),
            (42, TORCH_SEED_42),
            (1234567890123, TORCH_SEED_BIG),
        ];
        for (seed, expected) in cases {
            let got = seeded_draws(seed, &[&[8]]).remove(0);
            let got: Vec<f32> = Vec::try_from(&got).unwrap();
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    #[test]
    fn per_image_noise_is_independent_of_n() {
        let mut one = PerImageNoise::new(&[5]);
        let mut two = PerImageNoise::new(&[9, 5]);
        let a = one.randn(&[1, 4, 2, 2], Kind::Float, Device::Cpu);
        let b = two.randn(&[2, 4, 2, 2], Kind::Float, Device::Cpu);
        assert!(a.equal(&b.get(1).unsqueeze(0)));
        assert!(!a.equal(&b.get(0).unsqueeze(0)));
        let a2 = one.randn(&[1, 4, 2, 2], Kind::Float, Device::Cpu);
        assert!(!a.equal(&a2), "each draw is new noise");
    }

    /// A latent-sized draw (torch's vectorised path) followed by a second draw from the same
    /// generator, as img2img makes them: `g = Generator().manual_seed(7); randn(1,4,64,64, g); randn(3, g)`.
    #[test]
    fn consecutive_draws_equal_torch() {
        let draws = seeded_draws(7, &[&[1, 4, 64, 64], &[3]]);
        let flat = draws[0].flatten(0, -1);
        assert_eq!(flat.double_value(&[0]) as f32, -0.820_134_5_f32);
        assert_eq!(flat.double_value(&[16383]) as f32, -0.251_509_64_f32);
        let sum = flat
            .to_kind(Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
        assert!((sum - 85.159_843_597_153_67).abs() < 1e-9, "sum {sum}");
        let second: Vec<f32> = Vec::try_from(&draws[1]).unwrap();
        assert_eq!(second, [0.323_535_53, 0.561_370_07, 0.883_461_76]);
    }

    const TORCH_SEED_0: [f32; 8] = [
        1.540_996_1,
        -0.293_428_9,
        -2.178_789_4,
        0.568_431_26,
        -1.084_522_4,
        -1.398_595_5,
        0.403_346_84,
        0.838_026_35,
    ];
    const TORCH_SEED_42: [f32; 8] = [
        0.336_690_36,
        0.128_809_41,
        0.234_462_37,
        0.230_333_03,
        -1.122_856_4,
        -0.186_328_29,
        2.208_201_4,
        -0.637_997_03,
    ];
    const TORCH_SEED_BIG: [f32; 8] = [
        0.612_099_05,
        -0.930_138_05,
        0.090_384_2,
        0.293_270_6,
        0.387_402_03,
        0.703_606_6,
        -0.919_079_7,
        -0.518_783_2,
    ];
}

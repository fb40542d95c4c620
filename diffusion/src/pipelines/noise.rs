//! Seeded Gaussian noise that reproduces diffusers' draws on the CPU.
//!
//! diffusers draws with `torch.Generator().manual_seed(S)` on the CPU; `tch::manual_seed(S)` then
//! `randn` on the CPU draws from the same Philox-free mt19937 stream, so the first draws after
//! seeding are identical (verified by the `seeded_latents` test against values torch recorded).
//! tch exposes only the process-wide generator, so every seed-and-draw sequence holds one lock
//! (`crate::global_generator`): two generations in one process cannot interleave their draws.

use tch::{Device, Kind, Tensor};

use crate::schedulers::NoiseSource;

/// Seeds the CPU generator with `seed` and draws one fp32 tensor per shape, in order: exactly
/// the tensors `g = torch.Generator().manual_seed(seed)` gives for
/// `[torch.randn(s, generator=g) for s in shapes]`.
pub fn seeded_draws(seed: u64, shapes: &[&[i64]]) -> Vec<Tensor> {
    let _guard = crate::global_generator();
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
#[allow(clippy::excessive_precision)] // torch's printed digits, kept as recorded
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
        assert_eq!(flat.double_value(&[0]) as f32, -0.8201345205307007_f32);
        assert_eq!(flat.double_value(&[16383]) as f32, -0.2515096366405487_f32);
        let sum = flat
            .to_kind(Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
        assert!((sum - 85.159_843_597_153_67).abs() < 1e-9, "sum {sum}");
        let second: Vec<f32> = Vec::try_from(&draws[1]).unwrap();
        assert_eq!(
            second,
            [0.3235355317592621, 0.5613700747489929, 0.8834617733955383]
        );
    }

    const TORCH_SEED_0: [f32; 8] = [
        1.5409960746765137,
        -0.293428897857666,
        -2.1787893772125244,
        0.5684312582015991,
        -1.0845223665237427,
        -1.3985954523086548,
        0.40334683656692505,
        0.8380263447761536,
    ];
    const TORCH_SEED_42: [f32; 8] = [
        0.33669036626815796,
        0.12880940735340118,
        0.23446236550807953,
        0.23033303022384644,
        -1.1228563785552979,
        -0.18632829189300537,
        2.2082014083862305,
        -0.637997031211853,
    ];
    const TORCH_SEED_BIG: [f32; 8] = [
        0.6120990514755249,
        -0.9301380515098572,
        0.09038420021533966,
        0.29327061772346497,
        0.3874020278453827,
        0.7036066055297852,
        -0.9190797209739685,
        -0.5187832117080688,
    ];
}

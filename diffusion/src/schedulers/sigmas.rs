//! The σ-parameterised schedules shared by Euler, Euler ancestral, DPM-Solver and UniPC:
//! σ_t = √((1−ᾱ_t)/ᾱ_t), numpy's interpolation onto fractional timesteps, Karras et al.'s
//! spacing (arXiv:2206.00364, eq. 5) and its inverse σ → t (diffusers' `_sigma_to_t`).

use super::config::{Common, TimestepSpacing, np_arange, np_linspace};

/// σ of every training timestep, float32 as diffusers computes it from ᾱ.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)` in float64, as numpy computes it.
pub(crate) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// Karras et al.'s σ spacing with ρ = 7 between `sigma_max` and `sigma_min`, in float64.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional timestep whose log σ interpolates `sigma`.
/// `log_sigmas` is float32 (numpy's log of the float32 σ array), and the mix of float32 and
/// float64 arithmetic follows numpy's scalar promotion.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // argmax of the cumulative count of `log_sigma >= log_sigmas[i]`: the last such i, or 0.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(n - 2);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// The float32 timesteps of the Euler schedulers (not rounded for `linspace`).
pub(crate) fn euler_timesteps(c: &Common, steps: usize) -> Vec<f32> {
    let n = c.num_train_timesteps;
    match c.timestep_spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (n - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (n / steps) as f64;
            (0..steps)
                .rev()
                .map(|i| (i as f64 * ratio).round_ties_even() as f32 + c.steps_offset as f32)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(n as f64, 0.0, -(n as f64 / steps as f64))
            .into_iter()
            .map(|t| t.round_ties_even() as f32 - 1.0)
            .collect(),
    }
}

/// The integer timesteps of DPM-Solver and UniPC: `steps + 1` points with the last dropped
/// (`linspace`, `leading`), which differs from DDIM's spacing.
pub(crate) fn multistep_timesteps(c: &Common, steps: usize, last_timestep: usize) -> Vec<f64> {
    match c.timestep_spacing {
        TimestepSpacing::Linspace => {
            let mut t: Vec<f64> = np_linspace(0.0, last_timestep as f64 - 1.0, steps + 1)
                .into_iter()
                .map(f64::round_ties_even)
                .collect();
            t.reverse();
            t.pop();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = (last_timestep / (steps + 1)) as f64;
            (1..=steps)
                .rev()
                .map(|i| (i as f64 * ratio).round_ties_even() + c.steps_offset as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = c.num_train_timesteps as f64 / steps as f64;
            np_arange(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// (α_t, σ_t) of the VP process at noise level σ: α = 1/√(σ²+1), σ_t = σ·α (float32).
pub(crate) fn alpha_sigma_t(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy_at_knots_and_between() {
        let fp = [1.0f32, 3.0, 4.0];
        assert_eq!(np_interp(0.0, &fp), 1.0);
        assert_eq!(np_interp(0.5, &fp), 2.0);
        assert_eq!(np_interp(2.0, &fp), 4.0);
        assert_eq!(np_interp(7.0, &fp), 4.0);
    }

    #[test]
    fn sigma_to_t_inverts_the_schedule() {
        let log_sigmas: Vec<f32> = [0.1f32, 0.5, 1.0, 5.0].iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(1.0, &log_sigmas) - 2.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(0.01, &log_sigmas), 0.0);
        assert_eq!(sigma_to_t(50.0, &log_sigmas), 3.0);
    }
}

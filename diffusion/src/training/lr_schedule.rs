//! Learning-rate schedules with linear warm-up, as diffusers' `get_scheduler`
//! (`optimization.py`): a factor of the base rate per optimizer step.

use std::f64::consts::PI;
use std::str::FromStr;

use crate::error::Error;

/// The shape of the rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrSchedule {
    Constant,
    Linear,
    Cosine,
}

impl FromStr for LrSchedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "constant" | "constant_with_warmup" => Self::Constant,
            "linear" => Self::Linear,
            "cosine" => Self::Cosine,
            other => {
                return Err(Error::Training(format!(
                    "unknown learning-rate schedule {other:?} (allowed: constant, linear, cosine)"
                )));
            }
        })
    }
}

impl LrSchedule {
    /// The factor at optimizer step `step` (0-based) of `total`, after `warmup` warm-up steps.
    pub fn factor(self, step: u64, warmup: u64, total: u64) -> f64 {
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        match self {
            Self::Constant => 1.0,
            Self::Linear => (1.0 - progress).max(0.0),
            Self::Cosine => (0.5 * (1.0 + (PI * progress.min(1.0)).cos())).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_shape() {
        let s = LrSchedule::Cosine;
        assert_eq!(s.factor(0, 10, 110), 0.0);
        assert_eq!(s.factor(5, 10, 110), 0.5);
        assert_eq!(s.factor(10, 10, 110), 1.0);
        assert!((s.factor(60, 10, 110) - 0.5).abs() < 1e-12);
        assert!(s.factor(110, 10, 110).abs() < 1e-12);
        assert_eq!(LrSchedule::Linear.factor(60, 10, 110), 0.5);
        assert_eq!(LrSchedule::Constant.factor(100, 0, 10), 1.0);
        assert!("step".parse::<LrSchedule>().is_err());
    }
}

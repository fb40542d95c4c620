//! An exponential moving average of the trained weights (diffusers' `EMAModel` with a fixed
//! decay): evaluation and the released model use the average, which is smoother than the last
//! step's weights.

use tch::Tensor;

use crate::error::Result;

#[derive(Debug)]
pub struct Ema {
    pub decay: f64,
    /// `(name, shadow copy, live parameter)`.
    shadows: Vec<(String, Tensor, Tensor)>,
}

impl Ema {
    pub fn new(decay: f64, params: &[(String, Tensor)]) -> Result<Self> {
        let shadows = tch::no_grad(|| {
            params
                .iter()
                .map(|(n, p)| Ok((n.clone(), p.f_detach_copy()?, p.shallow_clone())))
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Self { decay, shadows })
    }

    /// shadow ← decay·shadow + (1 − decay)·param, after an optimizer step.
    pub fn update(&mut self) -> Result<()> {
        tch::no_grad(|| {
            for (_, shadow, param) in &mut self.shadows {
                let _ = shadow.f_lerp_(param, 1.0 - self.decay)?;
            }
            Ok(())
        })
    }

    pub fn shadows(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.shadows.iter().map(|(n, s, _)| (n.as_str(), s))
    }

    /// Overwrites the live weights with the averages (at the end of a run, so what is measured
    /// after training is the model that is saved).
    pub fn copy_to_live(&self) -> Result<()> {
        tch::no_grad(|| {
            for (_, shadow, param) in &self.shadows {
                param.shallow_clone().f_copy_(shadow)?;
            }
            Ok(())
        })
    }

    /// Overwrites the shadows with saved ones (resume).
    pub fn restore(&mut self, saved: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        tch::no_grad(|| {
            for (name, shadow, _) in &mut self.shadows {
                if let Some(s) = saved.get(name.as_str()) {
                    shadow.f_copy_(s)?;
                }
            }
            Ok(())
        })
    }
}

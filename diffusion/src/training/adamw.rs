//! AdamW (Loshchilov & Hutter, arXiv:1711.05101) with the exact arithmetic of
//! `torch.optim.AdamW`'s single-tensor path (`torch/optim/adam.py`, `_single_tensor_adam` with
//! `decoupled_weight_decay`), and global-norm gradient clipping as `clip_grad_norm_`. Written
//! here rather than using tch's optimizer because a resumed run needs the moment estimates,
//! which libtorch's C++ optimizer does not hand out.

use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result, TorchContext};

/// Hyper-parameters; the defaults are diffusers' training scripts' (`--adam_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    /// Default 1e-2.
    pub weight_decay: f64,
    /// Default 1e-8.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 1e-2,
            eps: 1e-8,
        }
    }
}

/// A trainable parameter and its moment estimates.
#[derive(Debug)]
struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over named parameters (the names key the saved state).
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    /// Optimizer steps taken (torch keeps one per parameter; all ours move together).
    pub steps: i64,
}

impl AdamW {
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                if !param.requires_grad() {
                    return Err(Error::Training(format!(
                        "parameter {name} does not require grad (frozen)"
                    )));
                }
                let zeros = || param.f_zeros_like();
                Ok(Slot {
                    exp_avg: zeros()?,
                    exp_avg_sq: zeros()?,
                    name,
                    param,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            slots,
            steps: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Forgets the gradients (torch's `zero_grad(set_to_none=False)`).
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.param.zero_grad();
        }
    }

    /// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping. As torch, the factor `max_norm / (norm + 1e-6)` capped at 1 is always
    /// applied.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .slots
                .iter()
                .map(|s| s.param.grad())
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                return Ok(0.0);
            }
            let norms = grads
                .iter()
                .map(|g| g.f_norm())
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
            let coef = total
                .f_add_scalar(1e-6)?
                .f_reciprocal()?
                .f_mul_scalar(max_norm)?
                .f_clamp_max(1.0)?;
            for mut g in grads {
                let _ = g.f_mul_(&coef.f_to_kind(g.kind())?)?;
            }
            Ok(total.f_double_value(&[])?)
        })
    }

    /// Whether every gradient is finite (fp16 loss scaling skips the step otherwise).
    pub fn grads_finite(&self) -> Result<bool> {
        for s in &self.slots {
            let g = s.param.grad();
            if g.defined() && g.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Multiplies every gradient by `factor` (unscaling after fp16 loss scaling).
    pub fn scale_grads(&mut self, factor: f64) -> Result<()> {
        tch::no_grad(|| {
            for s in &self.slots {
                let mut g = s.param.grad();
                if g.defined() {
                    let _ = g.f_mul_scalar_(factor)?;
                }
            }
            Ok(())
        })
    }

    /// One update at learning rate `lr`. Parameters without a gradient are left alone, as torch
    /// skips parameters whose `grad` is `None`.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.steps += 1;
        let c = self.config;
        let step = self.steps as f64;
        let bias_correction1 = 1.0 - c.beta1.powf(step);
        let bias_correction2 = 1.0 - c.beta2.powf(step);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        tch::no_grad(|| {
            for s in &mut self.slots {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = grad.f_to_kind(s.exp_avg.kind())?;
                let _ = s.param.f_mul_scalar_(1.0 - lr * c.weight_decay)?;
                let _ = s.exp_avg.f_lerp_(&grad, 1.0 - c.beta1)?;
                let _ = s
                    .exp_avg_sq
                    .f_mul_scalar_(c.beta2)?
                    .f_addcmul_(&grad, &grad.f_mul_scalar(1.0 - c.beta2)?)?;
                let denom = s
                    .exp_avg_sq
                    .f_sqrt()?
                    .f_div_scalar(bias_correction2_sqrt)?
                    .f_add_scalar(c.eps)?;
                let _ = s
                    .param
                    .f_addcdiv_(&s.exp_avg.f_mul_scalar(-step_size)?, &denom)?;
            }
            Ok::<_, Error>(())
        })
    }

    /// The moment estimates keyed `exp_avg.<name>` / `exp_avg_sq.<name>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            out.push((format!("exp_avg.{}", s.name), s.exp_avg.shallow_clone()));
            out.push((
                format!("exp_avg_sq.{}", s.name),
                s.exp_avg_sq.shallow_clone(),
            ));
        }
        out
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let state = self.state();
        let refs: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Tensor::write_safetensors(&refs, path).ctx(format!("writing {}", path.display()))
    }

    /// Restores the moment estimates saved by [`save`](Self::save) and the step count.
    pub fn load(&mut self, path: &Path, steps: i64) -> Result<()> {
        let saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .ctx(format!("reading {}", path.display()))?
            .into_iter()
            .collect();
        let missing = |key: String| {
            Error::Training(format!(
                "{} lacks {key}: the checkpoint belongs to another model",
                path.display()
            ))
        };
        tch::no_grad(|| {
            for s in &mut self.slots {
                for (prefix, dst) in [
                    ("exp_avg", &mut s.exp_avg),
                    ("exp_avg_sq", &mut s.exp_avg_sq),
                ] {
                    let key = format!("{prefix}.{}", s.name);
                    let src = saved.get(&key).ok_or_else(|| missing(key.clone()))?;
                    if src.size() != dst.size() {
                        return Err(Error::Training(format!(
                            "{}: {key} is {:?}, the model's is {:?}",
                            path.display(),
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.f_copy_(&src.f_to_kind(Kind::Float)?)?;
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

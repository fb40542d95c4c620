//! The few torch.nn layers the models are built of, with fallible forwards (tch's `nn` modules
//! panic on a bad shape). Parameter names follow torch.nn (`weight`, `bias`), so a layer created
//! under `nn::Path` "conv_in" owns the safetensors keys `conv_in.weight` and `conv_in.bias`.

use tch::{Tensor, nn};

use crate::error::Result;

fn weight(p: &nn::Path, dims: &[i64]) -> Result<Tensor> {
    // torch.nn's default for Linear and Conv2d (kaiming_uniform_ with a=sqrt(5)) is
    // U(-1/sqrt(fan_in), 1/sqrt(fan_in)); only a randomly initialised model (the benchmark)
    // keeps these values, loading overwrites every variable.
    let fan_in: i64 = dims.iter().skip(1).product();
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Ok(p.f_var(
        "weight",
        dims,
        nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?)
}

fn bias(p: &nn::Path, dim: i64) -> Result<Tensor> {
    Ok(p.f_var("bias", &[dim], nn::Init::Const(0.))?)
}

/// torch.nn.Conv2d with square kernel, stride and padding.
#[derive(Debug)]
pub(crate) struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub(crate) fn new(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> Result<Self> {
        Ok(Self {
            weight: weight(&p, &[c_out, c_in, kernel, kernel])?,
            bias: Some(bias(&p, c_out)?),
            stride,
            padding,
        })
    }

    /// `xs` on this layer's device in its dtype: models cast their inputs explicitly, so an
    /// fp32 tensor can be fed to an fp16 model (the dtype policy of weights.rs).
    pub(crate) fn cast_input(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs
            .f_to_device(self.weight.device())?
            .f_to_kind(self.weight.kind())?)
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride; 2],
            [self.padding; 2],
            [1, 1],
            1,
        )?)
    }
}

/// torch.nn.Linear.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(p: nn::Path, d_in: i64, d_out: i64, with_bias: bool) -> Result<Self> {
        let bias = if with_bias {
            Some(bias(&p, d_out)?)
        } else {
            None
        };
        Ok(Self {
            weight: weight(&p, &[d_out, d_in])?,
            bias,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// torch.nn.GroupNorm (affine).
#[derive(Debug)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub(crate) fn new(p: nn::Path, groups: i64, channels: i64, eps: f64) -> Result<Self> {
        if groups <= 0 || channels % groups != 0 {
            return Err(crate::error::Error::Shape {
                what: "GroupNorm",
                message: format!("{channels} channels at {p:?} do not split into {groups} groups"),
            });
        }
        Ok(Self {
            weight: p.f_var("weight", &[channels], nn::Init::Const(1.))?,
            bias: bias(&p, channels)?,
            groups,
            eps,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.f_group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )?)
    }
}

/// torch.nn.LayerNorm over the last dimension.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn new(p: nn::Path, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.f_var("weight", &[dim], nn::Init::Const(1.))?,
            bias: bias(&p, dim)?,
            dim,
            eps,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.f_layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )?)
    }
}

/// torch.nn.Embedding.
#[derive(Debug)]
pub(crate) struct Embedding {
    weight: Tensor,
    pub(crate) num: i64,
}

impl Embedding {
    pub(crate) fn new(p: nn::Path, num: i64, dim: i64) -> Result<Self> {
        Ok(Self {
            weight: p.f_var(
                "weight",
                &[num, dim],
                nn::Init::Randn {
                    mean: 0.,
                    stdev: 0.02,
                },
            )?,
            num,
        })
    }

    pub(crate) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(&self.weight, ids, -1, false, false)?)
    }
}

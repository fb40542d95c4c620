//! The few torch.nn layers the models are built of, with fallible forwards (tch's `nn` modules
//! panic on a bad shape). Parameter names follow torch.nn (`weight`, `bias`), so a layer created
//! under `nn::Path` "conv_in" owns the safetensors keys `conv_in.weight` and `conv_in.bias`.
//!
//! Every variable of every model is created here, in the [`Init`] mode of the build: random
//! values for training from scratch, or memory left unwritten for a model whose weights come
//! from a file.

use std::cell::Cell;

use tch::{Kind, Tensor, nn};

use crate::error::Result;
use crate::weights::Init;

thread_local! {
    /// The [`Init`] of the model being built on this thread. A thread-local rather than an
    /// argument, which every layer constructor (about a hundred calls) would have to pass on;
    /// only [`with_init`] sets it, for the length of one build.
    static INIT: Cell<Init> = const { Cell::new(Init::Random) };
}

/// Runs `build` with its variables initialised as `init` says; the previous mode comes back on
/// return and on unwinding.
pub(crate) fn with_init<T>(init: Init, build: impl FnOnce() -> T) -> T {
    struct Restore(Init);
    impl Drop for Restore {
        fn drop(&mut self) {
            INIT.with(|mode| mode.set(self.0));
        }
    }
    let _restore = Restore(INIT.with(|mode| mode.replace(init)));
    build()
}

/// Creates the trainable variable `name` of `p`: with `init`'s values, or allocated without
/// being written while an [`Init::Empty`] build runs (no draw, no fill: the loader replaces it).
fn variable(p: &nn::Path, name: &str, dims: &[i64], init: nn::Init) -> Result<Tensor> {
    if INIT.with(Cell::get) == Init::Empty {
        let empty = Tensor::f_empty(dims, (p.kind(), p.device()))?;
        return Ok(p.add(name, empty, true));
    }
    // A draw uses torch's global generator: not between a seeded draw's seed and its noise.
    let draws = matches!(init, nn::Init::Uniform { .. } | nn::Init::Randn { .. });
    let _generator = draws.then(crate::global_generator);
    Ok(p.f_var(name, dims, init)?)
}

fn weight(p: &nn::Path, dims: &[i64]) -> Result<Tensor> {
    // torch.nn's default for Linear and Conv2d (kaiming_uniform_ with a=sqrt(5)) is
    // U(-1/sqrt(fan_in), 1/sqrt(fan_in)); only a randomly initialised model (the benchmark,
    // training from scratch) keeps these values.
    let fan_in: i64 = dims.iter().skip(1).product();
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    variable(
        p,
        "weight",
        dims,
        nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )
}

fn bias(p: &nn::Path, dim: i64) -> Result<Tensor> {
    variable(p, "bias", &[dim], nn::Init::Const(0.))
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
        if let Some(out) = self.forward_as_gemm(xs)? {
            return Ok(out);
        }
        Ok(xs.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride; 2],
            [self.padding; 2],
            [1, 1],
            1,
        )?)
    }

    /// On CPU, oneDNN reorders the whole weight into its blocked layout at every call. For a
    /// large kernel over a small output (the 1280-channel convolutions at 4×4 and 8×8 in SD's
    /// inner blocks at 256 px) that reorder costs more than the arithmetic, so there the
    /// convolution is computed as im2col and one matrix product with the weight as it lies.
    /// Same sums in another order: outputs agree with `conv2d` to float rounding (~1e-6).
    /// `None` where oneDNN is the faster route.
    fn forward_as_gemm(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        // Measured with torch on 2 cores at batch 2 (SD 1.5 shapes): the product wins below
        // about 256 output positions in all, once the weight has a million elements or more.
        const MAX_POSITIONS: i64 = 256;
        const MIN_WEIGHT: i64 = 1 << 20;
        let kind = self.weight.kind();
        if self.weight.device() != tch::Device::Cpu
            || !matches!(kind, Kind::Float | Kind::Double)
            || xs.dim() != 4
            || self.weight.numel() < MIN_WEIGHT as usize
        {
            return Ok(None);
        }
        let (n, _, h, w) = xs.size4()?;
        let (c_out, _, k, _) = self.weight.size4()?;
        // A kernel larger than the padded input: conv2d gives the error.
        if h + 2 * self.padding < k || w + 2 * self.padding < k {
            return Ok(None);
        }
        let out_h = (h + 2 * self.padding - k) / self.stride + 1;
        let out_w = (w + 2 * self.padding - k) / self.stride + 1;
        if n * out_h * out_w > MAX_POSITIONS {
            return Ok(None);
        }
        // [n, c_in·k·k, out_h·out_w]
        let columns = xs.f_im2col([k, k], [1, 1], [self.padding; 2], [self.stride; 2])?;
        let mut out = self.weight.f_reshape([c_out, -1])?.f_matmul(&columns)?;
        if let Some(bias) = &self.bias {
            out = out.f_add(&bias.f_view([c_out, 1])?)?;
        }
        Ok(Some(out.f_view([n, c_out, out_h, out_w])?))
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
                // The path's name, not its Debug form, which prints the store's variables.
                message: format!(
                    "{channels} channels at {} do not split into {groups} groups",
                    p.components().collect::<Vec<_>>().join(".")
                ),
            });
        }
        Ok(Self {
            weight: variable(&p, "weight", &[channels], nn::Init::Const(1.))?,
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
            weight: variable(&p, "weight", &[dim], nn::Init::Const(1.))?,
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
        let init = nn::Init::Randn {
            mean: 0.,
            stdev: 0.02,
        };
        Ok(Self {
            weight: variable(&p, "weight", &[num, dim], init)?,
            num,
        })
    }

    pub(crate) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(&self.weight, ids, -1, false, false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic stand-ins for random values, in about [-scale, scale]: these tests must
    /// not draw from torch's global generator, which the seeded-noise tests running in other
    /// threads rely on.
    fn filled(shape: &[i64], phase: f64, scale: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) * 0.618 + phase)
            .sin()
            .view(shape)
            * scale
    }

    fn conv(c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64, bias: bool) -> Conv2d {
        let fan_in = (c_in * kernel * kernel) as f64;
        Conv2d {
            weight: filled(&[c_out, c_in, kernel, kernel], 0.0, 1.0 / fan_in.sqrt()),
            bias: bias.then(|| filled(&[c_out], 1.0, 0.1)),
            stride,
            padding,
        }
    }

    /// The im2col route against torch's own `conv2d` on the shapes where it is taken.
    #[test]
    fn gemm_convolution_equals_conv2d() {
        // (c_in, kernel, stride, padding, bias, input side): SD's 1280-channel 3×3 convolution
        // at 4×4 and 8×8, its downsampler (stride 2), the VAE's downsampler form (padding 0,
        // stride 2) on an odd side, the ControlNet's 1×1 zero convolutions, no bias.
        let cases = [
            (1280, 3, 1, 1, true, 4),
            (1280, 3, 1, 1, true, 8),
            (1280, 3, 2, 1, true, 8),
            (1280, 3, 2, 0, true, 9),
            (1280, 1, 1, 0, true, 8),
            (2560, 1, 1, 0, false, 4),
            (1280, 3, 1, 1, false, 4),
        ];
        for (c_in, kernel, stride, padding, bias, side) in cases {
            let layer = conv(c_in, 1280, kernel, stride, padding, bias);
            // Channels-last storage: a non-contiguous input must work too.
            for channels_last in [false, true] {
                let xs = if channels_last {
                    filled(&[2, side, side, c_in], 2.0, 1.0).permute([0, 3, 1, 2])
                } else {
                    filled(&[2, c_in, side, side], 2.0, 1.0)
                };
                let what = format!(
                    "{c_in}→1280 {kernel}×{kernel} stride {stride} padding {padding} bias {bias} \
                     on {side}×{side}, channels last {channels_last}"
                );
                let gemm = layer.forward_as_gemm(&xs).unwrap();
                let gemm = gemm.unwrap_or_else(|| panic!("{what}: takes the im2col route"));
                let reference = xs.conv2d(
                    &layer.weight,
                    layer.bias.as_ref(),
                    [stride; 2],
                    [padding; 2],
                    [1; 2],
                    1,
                );
                assert_eq!(gemm.size(), reference.size(), "{what}");
                let err = (gemm - &reference).abs().max().double_value(&[]);
                assert!(err < 1e-4, "{what}: max abs error {err}");
            }
        }
        // Small weights, large outputs and kernels larger than the input stay with conv2d:
        // (c_in, padding, input shape).
        for (c_in, padding, shape) in [
            (64, 1, [1, 64, 4, 4]),
            (1280, 1, [2, 1280, 16, 16]),
            (1280, 0, [1, 1280, 2, 2]),
        ] {
            let layer = conv(c_in, c_in, 3, 1, padding, true);
            let gemm = layer.forward_as_gemm(&filled(&shape, 0.0, 1.0)).unwrap();
            assert!(
                gemm.is_none(),
                "{c_in} channels, padding {padding}, {shape:?}"
            );
        }
    }
}

//! `--device` and `--dtype`, shared by every command that runs a model.

use anyhow::{Result, bail};
use clap::ValueEnum;
use letterpress_diffusion::LoadOptions;
use letterpress_diffusion::tch::{self, Device, Kind};

/// Weight dtype flags.
#[derive(Clone, Copy, ValueEnum)]
pub enum Dtype {
    Fp32,
    Fp16,
    Bf16,
}

impl Dtype {
    pub fn kind(self) -> Kind {
        match self {
            Dtype::Fp32 => Kind::Float,
            Dtype::Fp16 => Kind::Half,
            Dtype::Bf16 => Kind::BFloat16,
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`; a CUDA device must exist in this libtorch's view.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("--device {s:?}: allowed cpu, cuda, cuda:N"),
        },
    };
    if let Device::Cuda(i) = device {
        let count = tch::Cuda::device_count();
        if count <= i as i64 {
            bail!(
                "--device {s}: libtorch sees {count} CUDA device(s) (a CUDA build of libtorch and a GPU are needed)"
            );
        }
    }
    Ok(device)
}

/// Load options for `--device` and `--dtype` (default: fp32 on the CPU, fp16 on CUDA).
pub fn load_options(device: &str, dtype: Option<Dtype>) -> Result<LoadOptions> {
    let device = parse_device(device)?;
    let kind = dtype.map(Dtype::kind);
    if device == Device::Cpu && kind == Some(Kind::Half) {
        tracing::warn!(
            "fp16 on the CPU is slow and not what the parity tests check; fp32 is the default there"
        );
    }
    Ok(LoadOptions {
        device,
        kind,
        variant: None,
    })
}

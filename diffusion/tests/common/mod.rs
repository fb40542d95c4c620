//! Shared helpers of the parity tests: fixture paths and the reference tensors recorded by
//! `tools/make_fixtures.py` (diffusers/transformers are the oracle).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Kind, Tensor};

/// The golden-file tolerance of the issue: fp32 on CPU.
pub const TOLERANCE: f64 = 1e-4;

pub fn fixtures() -> PathBuf {
    // The run-time value first (cargo sets it), so a test binary built on another machine finds
    // this checkout's fixtures when it is set by hand (tools/gpu_check.sh).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests")
        .join("fixtures")
}

pub fn refs(kind: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join(kind).join("refs.safetensors");
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with `make fixtures`)", path.display()))
        .into_iter()
        .collect()
}

pub fn get<'a>(refs: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    refs.get(key)
        .unwrap_or_else(|| panic!("reference {key} missing from refs.safetensors"))
}

/// Max abs difference, after checking shapes; prints it so `--nocapture` lists every component.
pub fn max_abs_err(label: &str, ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.size(), reference.size(), "{label}: shape");
    let ours = ours.to_kind(Kind::Float);
    let err = (&ours - reference).abs().max().double_value(&[]);
    let scale = reference.abs().max().double_value(&[]);
    println!("parity {label}: max abs err {err:.3e} (reference max abs {scale:.3e})");
    assert!(
        ours.isfinite().all().int64_value(&[]) == 1,
        "{label}: non-finite output"
    );
    err
}

pub fn assert_close(label: &str, ours: &Tensor, reference: &Tensor) {
    let err = max_abs_err(label, ours, reference);
    assert!(
        err <= TOLERANCE,
        "{label}: max abs err {err:e} > {TOLERANCE:e}"
    );
}

//! Helpers shared by the integration tests: the PyTorch reference script and small fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that scripts/setup installed (it has torch, torchvision and safetensors), or
/// `TCH_ALEXNET_PYTHON`. `None` only when neither exists (a user who brought their own
/// LIBTORCH and no Python); the parity tests then say loudly that they did not run.
pub fn reference_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TCH_ALEXNET_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = project_root().join(".venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs `scripts/reference.py` with `args`; panics with its stderr on failure.
pub fn run_reference(python: &Path, args: &[&str]) {
    let out = Command::new(python)
        .arg(project_root().join("scripts/reference.py"))
        .args(args)
        .output()
        .expect("cannot start the reference Python");
    assert!(
        out.status.success(),
        "reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Skips a parity test, visibly, when no reference Python exists.
#[macro_export]
macro_rules! require_reference_python {
    () => {
        match common::reference_python() {
            Some(p) => p,
            None => {
                eprintln!(
                    "SKIPPED: no reference Python (.venv from scripts/setup, or TCH_ALEXNET_PYTHON); parity not checked"
                );
                return;
            }
        }
    };
}

/// Max absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double)).abs().max().double_value(&[])
}

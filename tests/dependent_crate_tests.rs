//! A crate of the user's own that depends on this one builds and runs with no environment
//! variable: `scripts/new-crate` makes it from `templates/dependent-crate/`, cargo builds it
//! without LIBTORCH (its `.cargo/config.toml` names libtorch, for torch-sys), and its program
//! starts without LD_LIBRARY_PATH (its `build.rs` passes on the rpath that this crate's build
//! script hands it through the `links` key, `DEP_TCH_ALEXNET_LINK_ARGS`).
//!
//! The scratch crate builds into this build's target folder, with the profile, environment and
//! LIBTORCH string of this build, so that tch and torch-sys are not built again. tch-alexnet
//! is, once per checkout (cargo names a workspace member's artifacts after its path
//! in the workspace, a dependency's after its absolute path): about 1.5 minutes of CPU.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The LIBTORCH this build (tch's included) was made with: the environment's, else the one
/// `.cargo/config.toml` sets.
const BUILD_LIBTORCH: Option<&str> = option_env!("LIBTORCH");

/// `command` without the variables a user would otherwise need.
fn without_env(command: &mut Command) -> &mut Command {
    for var in ["LIBTORCH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"] {
        command.env_remove(var);
    }
    command
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The target folder this test was built in (`CARGO_TARGET_TMPDIR` is its `tmp/`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("CARGO_TARGET_TMPDIR has a parent").to_path_buf()
}

#[test]
fn a_crate_made_by_new_crate_builds_and_runs_without_environment_variables() {
    let libtorch = BUILD_LIBTORCH.expect("this build had no LIBTORCH (tch-alexnet's build.rs needs one)");
    // Outside this checkout, whose `.cargo/config.toml` would set LIBTORCH too.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("dependent-check");

    // The one step with LIBTORCH: the one this build has, for new-crate to record (it would
    // record this checkout's .libtorch without it, the same path unless LIBTORCH was exported).
    let mut new_crate = Command::new(common::project_root().join("scripts/new-crate"));
    new_crate.arg(&dir);
    run(new_crate.env("LIBTORCH", libtorch));

    let release = !cfg!(debug_assertions);
    // Without what cargo set for this test (see `common::cargo_command`).
    let mut build = common::cargo_command();
    build.args(["build", "--offline"]).current_dir(&dir).env("CARGO_TARGET_DIR", target_dir());
    if release {
        build.arg("--release");
    }
    let started = Instant::now();
    let built = run(without_env(&mut build));
    let log = String::from_utf8_lossy(&built.stderr);
    eprintln!("the scratch crate built in {:.0} s:\n{log}", started.elapsed().as_secs_f64());
    // tch and torch-sys (minutes of build, and what a user would pay again with a second
    // libtorch build) are reused: the scratch crate has the same profile and LIBTORCH as this
    // build. Small crates may be rebuilt: which of their features and build-script inputs
    // match depends on what this target folder built last (`cargo test` unifies the
    // dev-dependencies' features, a plain `cargo build` does not).
    let compiled: Vec<&str> = log.lines().filter_map(|l| l.trim().strip_prefix("Compiling ")).collect();
    assert!(
        !compiled.iter().any(|c| c.starts_with("tch v") || c.starts_with("torch-sys v")),
        "the scratch crate built tch or torch-sys again: {compiled:?}"
    );

    let program = target_dir().join(if release { "release" } else { "debug" }).join("dependent-check");
    let output = run(without_env(&mut Command::new(&program)));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let device = if tch::Cuda::is_available() { "Cuda(0)" } else { "Cpu" };
    assert!(stdout.contains(&format!("device: {device}\n")), "{stdout}");
    assert!(stdout.contains("logits: [1, 10]\n"), "{stdout}");

    // What tch needs to see a GPU, checked on any machine: libtorch's CUDA library is linked
    // (tch-alexnet's `--no-as-needed`), and found through the rpath.
    #[cfg(target_os = "linux")]
    {
        let loaded = run(without_env(&mut Command::new(&program)).env("LD_TRACE_LOADED_OBJECTS", "1"));
        let loaded = String::from_utf8_lossy(&loaded.stdout);
        assert!(!loaded.contains("not found"), "{loaded}");
        let lib = Path::new(libtorch).canonicalize().unwrap().join("lib");
        let expected = format!("libtorch_cpu.so => {}", lib.join("libtorch_cpu.so").display());
        assert!(loaded.contains(&expected), "expected {expected}:\n{loaded}");
        if lib.join("libtorch_cuda.so").exists() {
            let expected = format!("libtorch_cuda.so => {}", lib.join("libtorch_cuda.so").display());
            assert!(loaded.contains(&expected), "expected {expected}:\n{loaded}");
        }
    }
}

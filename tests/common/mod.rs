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
    assert!(out.status.success(), "reference.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `tests/fixtures/<script>` with `args`; panics with its stderr on failure and returns
/// its stdout.
pub fn run_fixture(python: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(project_root().join("tests/fixtures").join(script))
        .args(args)
        .output()
        .expect("cannot start the reference Python");
    assert!(out.status.success(), "{script} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `draw` right after `tch::manual_seed(seed)`, holding a lock on libtorch's global
/// generator. The tests of a binary run on parallel threads and share that generator, so a test
/// that needs the exact numbers of a seed (bit-for-bit init parity) seeds and draws under this
/// lock, and so does every other test of its binary that draws, or its draws may land between.
pub fn with_seed<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while drawing leaves nothing half-done that matters to the next.
    let _guard = GLOBAL_GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    draw()
}

/// Whether `TCH_ALEXNET_REQUIRE_ALL=1` (set by `.ci/run`): every skip CI could avoid fails.
pub fn require_all() -> bool {
    std::env::var("TCH_ALEXNET_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Says, visibly, that a check did not run for lack of `what`, something CI has (the reference
/// Python, Gloo, the real data, root, AVX-512); with `TCH_ALEXNET_REQUIRE_ALL=1` the skip is a
/// failure instead, so that CI never goes green without the checks it can run.
pub fn skip_or_fail(what: &str) {
    if require_all() {
        panic!("TCH_ALEXNET_REQUIRE_ALL=1 but this check cannot run: {what}");
    }
    eprintln!("SKIPPED: {what}");
}

/// The file `scripts/test` names in this variable (and empties before `cargo test`), where
/// [`skip_hardware`] records each check that did not run; it prints them, counted, at the end.
pub const HARDWARE_SKIPS_VAR: &str = "TCH_ALEXNET_HARDWARE_SKIPS";

/// Says that a check did not run for lack of hardware CI does not have (a GPU): never a
/// failure, but never silent either: besides the `SKIPPED` line (which `cargo test` hides for
/// passing tests) it appends `what` to the list that `scripts/test` prints at the end.
pub fn skip_hardware(what: &str) {
    eprintln!("SKIPPED (hardware): {what}");
    let Some(list) = std::env::var_os(HARDWARE_SKIPS_VAR) else { return };
    use std::io::Write;
    let line = format!("{what}\n");
    // One write of one short line on an append-mode file: lines of tests running in parallel
    // do not interleave.
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&list)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = appended {
        panic!("cannot record the skip in {} ({HARDWARE_SKIPS_VAR}): {e}", Path::new(&list).display());
    }
}

/// Skips a parity test, visibly, when no reference Python exists (fails under
/// `TCH_ALEXNET_REQUIRE_ALL=1`).
#[macro_export]
macro_rules! require_reference_python {
    () => {
        match common::reference_python() {
            Some(p) => p,
            None => {
                common::skip_or_fail(
                    "no reference Python (.venv from scripts/setup, or TCH_ALEXNET_PYTHON); parity not checked",
                );
                return;
            }
        }
    };
}

/// A port nothing listens on right now on 127.0.0.1 (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether this build has Gloo; where not, says that `what` did not run (a failure under
/// `TCH_ALEXNET_REQUIRE_ALL=1`).
pub fn gloo_or_skip(what: &str) -> bool {
    if tch_alexnet::distributed::Backend::Gloo.is_available() {
        return true;
    }
    skip_or_fail(&format!("this build has no Gloo (libgloo-dev); {what} did not run"));
    false
}

/// The variables torchrun gives rank `rank` of `world` processes whose master is
/// 127.0.0.1:`port`.
pub fn rank_env(rank: usize, world: usize, port: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RANK", rank.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
    ]
}

/// Runs this test binary's ignored test `test` as `world` rank processes (the variables of
/// [`rank_env`], and `var` naming `dir`) and waits for them; panics with a failed rank's
/// stderr.
pub fn run_rank_processes(test: &str, var: &str, dir: &Path, world: usize) {
    let port = free_port().to_string();
    let exe = std::env::current_exe().unwrap();
    let ranks: Vec<std::process::Child> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env(var, dir)
                .envs(rank_env(rank, world, &port))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for rank in ranks {
        let out = rank.wait_with_output().unwrap();
        assert!(out.status.success(), "rank failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Compares each rank's `rust{r}_state` and `rust{r}_momentum` safetensors files in `dir` with
/// PyTorch DDP's `rank{r}_...` in `torch_dir` ([`assert_all_close`] with the bounds; `what`
/// names the comparison), then asserts that the ranks' weights (all but BatchNorm's running
/// statistics and counters, which each rank updates from its own batch) are bit-identical.
/// Returns rank 0's state.
pub fn assert_ddp_ranks_match_pytorch(
    what: &str,
    dir: &Path,
    torch_dir: &Path,
    world: usize,
    (state_bound, momentum_bound): (f64, f64),
) -> std::collections::BTreeMap<String, tch::Tensor> {
    for rank in 0..world {
        for (part, bound) in [("state", state_bound), ("momentum", momentum_bound)] {
            let ours = tensors(&dir.join(format!("rust{rank}_{part}.safetensors")));
            let theirs = tensors(&torch_dir.join(format!("rank{rank}_{part}.safetensors")));
            assert_all_close(&format!("rank {rank} {part} {what}"), &ours, &theirs, bound);
        }
    }
    let first = tensors(&dir.join("rust0_state.safetensors"));
    for rank in 1..world {
        let other = tensors(&dir.join(format!("rust{rank}_state.safetensors")));
        for (name, t) in first.iter().filter(|(n, _)| !n.contains("running_") && !n.contains("num_batches")) {
            assert!(t.equal(&other[name]), "{name}: the weights of ranks 0 and {rank} differ");
        }
    }
    first
}

/// Max absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double)).abs().max().double_value(&[])
}

/// A parity test's tolerance for values of magnitude up to `scale` in `kind`: `bound` (each test
/// sets it at about ten times the largest difference measured, and says so), but never below
/// four units in the last place of `kind` at that magnitude.
pub fn tolerance(bound: f64, kind: tch::Kind, scale: f64) -> f64 {
    let epsilon = match kind {
        tch::Kind::Double => f64::EPSILON,
        tch::Kind::BFloat16 => 2f64.powi(-7),
        tch::Kind::Half => 2f64.powi(-10),
        _ => f32::EPSILON as f64,
    };
    bound.max(4.0 * epsilon * scale)
}

/// Max absolute value of a tensor.
pub fn max_abs(t: &tch::Tensor) -> f64 {
    t.to_kind(tch::Kind::Double).abs().max().double_value(&[])
}

/// Compares same-named tensors: prints the largest difference (`what: max |diff| = ...`), then
/// asserts that each is within [`tolerance`]`(bound, ...)` at its own magnitude. Returns the
/// largest difference.
pub fn assert_all_close(
    what: &str,
    ours: &std::collections::BTreeMap<String, tch::Tensor>,
    theirs: &std::collections::BTreeMap<String, tch::Tensor>,
    bound: f64,
) -> f64 {
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{what}: names differ");
    let diffs: Vec<(&String, f64, f64)> = ours
        .iter()
        .map(|(name, t)| {
            let theirs = &theirs[name];
            (name, max_abs_diff(t, theirs), tolerance(bound, theirs.kind(), max_abs(theirs)))
        })
        .collect();
    let (worst_name, worst) = diffs.iter().fold(("", -1.0), |w, d| if d.1 > w.1 { (d.0.as_str(), d.1) } else { w });
    eprintln!("{what}: max |diff| = {worst:.3e} ({worst_name}; tolerance {bound:.1e})");
    let bad: Vec<String> =
        diffs.iter().filter(|d| d.1 > d.2).map(|(n, d, tol)| format!("{n}: {d:.3e} > {tol:.1e}")).collect();
    assert!(bad.is_empty(), "{what}: {bad:?}");
    worst
}

/// The cargo running these tests, as a command without what cargo set for this test about this
/// package (`CARGO_MANIFEST_DIR`, `OUT_DIR`, …): cargo compares a build script's
/// `rerun-if-env-changed` variables with its own environment, and ring's build script watches
/// `CARGO_MANIFEST_DIR`, so a cargo started with them would rebuild ring, rustls, ureq,
/// tch-alexnet and every example, and the next `cargo test` all of them again.
pub fn cargo_command() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()));
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        let set_by_cargo = ["CARGO_PKG_", "CARGO_MANIFEST_"].iter().any(|p| name.starts_with(p))
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"]
                .contains(&&*name);
        if set_by_cargo {
            cargo.env_remove(&var);
        }
    }
    cargo
}

/// Path of a compiled example (`train`, `evaluate`, `predict`), built on first use so that
/// `cargo test --test <one>` works too.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = cargo_command()
            .args(["build", "--examples", "--quiet"])
            .current_dir(project_root())
            .status()
            .expect("cannot run cargo");
        assert!(status.success(), "cargo build --examples failed");
    });
    // target/<profile>/deps/<test binary> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

/// A full-size synthetic CIFAR-10 folder (stripes: colour and orientation make the class, see
/// `data::synthetic`), written once per machine under cargo's target tmp dir; the folder's name
/// changes with the pattern, so that a folder of an older pattern is never reused.
pub fn synthetic_data_dir() -> PathBuf {
    static WRITTEN: std::sync::Once = std::sync::Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("synthetic-cifar10-stripes");
    WRITTEN.call_once(|| {
        if tch_alexnet::data::cifar::check_dir(&dir).is_ok() {
            return;
        }
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        tch_alexnet::data::synthetic::write_dataset(&tmp, 2024).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    });
    dir
}

/// Trains once, in a fresh `<target tmp>/<folder>/run`, with the flags `args(data, run)` on the
/// synthetic data set, and returns the run folder and what the program wrote; fails the test if
/// training fails. For a run that the tests of a binary share: keep the path in a `OnceLock` so
/// that it trains once.
pub fn train_in_fresh_folder(
    folder: &str,
    args: impl for<'a> FnOnce(&'a str, &'a str) -> Vec<&'a str>,
) -> (PathBuf, Finished) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(folder);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let run = root.join("run");
    let data = synthetic_data_dir();
    let f = run_bin(&example_bin("train"), &args(data.to_str().unwrap(), run.to_str().unwrap()));
    assert_eq!(f.code, Some(0), "the {folder} run failed:\n{}\n{}", f.stdout, f.stderr);
    (run, f)
}

/// Output of a finished command.
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bin` with `args` (CPU, 2 threads) and waits.
pub fn run_bin(bin: &Path, args: &[&str]) -> Finished {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a failed command printed exactly one `Error:` line, no panic, and exited with 1 or 2.
pub fn assert_clean_failure(f: &Finished, expect_in_message: &str) {
    assert!(matches!(f.code, Some(1) | Some(2)), "exit code {:?}\nstderr: {}", f.code, f.stderr);
    assert!(!f.stderr.contains("panicked") && !f.stderr.contains("backtrace"), "panic: {}", f.stderr);
    let error_lines: Vec<&str> =
        f.stderr.lines().filter(|l| l.starts_with("Error:") || l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "expected one error line, got:\n{}", f.stderr);
    assert!(error_lines[0].contains(expect_in_message), "error line {:?} lacks {expect_in_message:?}", error_lines[0]);
}

/// Every tensor of a safetensors file.
pub fn tensors(path: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    tch_alexnet::formats::safetensors::load_tensors(path).unwrap().tensors
}

/// Asserts that two run folders hold bit-identical `last.safetensors` weights.
pub fn assert_same_weights(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(&a.join("last.safetensors")), tensors(&b.join("last.safetensors")));
    assert_eq!(ta.len(), tb.len());
    for (name, t) in &ta {
        assert!(t.equal(&tb[name]), "{name} differs between {} and {}", a.display(), b.display());
    }
}

/// The lines of a metrics.jsonl file.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Names of the temporary files (`.NAME.tmp-PID`) left in a folder.
pub fn temporary_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Flags of a one-epoch CPU run on 16 training images, 8 validation and 8 test images.
pub fn cpu_train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--data-dir",
        data,
        "--no-download",
        "--device",
        "cpu",
        "--threads",
        "2",
        "--out",
        out,
        "--limit-train",
        "16",
        "--limit-val",
        "8",
        "--limit-test",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "1",
    ]
}

/// Flags of a two-epoch CPU run of three steps each (24 training images, batch 8), with `extra`
/// flags after them.
pub fn two_epoch_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = with_flags(cpu_train_args(data, out), &["--epochs", "2", "--limit-train", "24"]);
    args.extend_from_slice(extra);
    args
}

/// A JSON file (`config.json`, `summary.json`, ...), parsed; panics naming the file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `args` with each `--flag value` pair of `overrides` replacing the same flag's value, or added.
pub fn with_flags<'a>(mut args: Vec<&'a str>, overrides: &[&'a str]) -> Vec<&'a str> {
    for pair in overrides.chunks(2) {
        match args.iter().position(|a| *a == pair[0]) {
            Some(i) => args[i + 1] = pair[1],
            None => args.extend_from_slice(pair),
        }
    }
    args
}

/// The lines a child writes to `stdout`, as they come, on a channel.
pub fn line_channel(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most 300 s) for a line containing `needle`, collecting every line into `lines`.
pub fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, lines: &mut Vec<String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(1)) {
            let found = line.contains(needle);
            lines.push(line);
            if found {
                return;
            }
        }
    }
    panic!("no line with {needle:?} within 300 s; got {lines:?}");
}

/// The lines of a JSON-lines file (`metrics.jsonl`, `steps.jsonl`).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Each line's `(step, lr)` of a run's `steps.jsonl`, the learning rate parsed from its own
/// text by Rust's correctly rounded parser (serde_json's default float parsing may be one ulp
/// off), so that it can be compared with another program's bit for bit.
pub fn step_lrs(run: &Path) -> Vec<(u64, f64)> {
    json_lines(&run.join("steps.jsonl"))
        .iter()
        .zip(std::fs::read_to_string(run.join("steps.jsonl")).unwrap().lines())
        .map(|(line, text)| {
            let value = text.split("\"lr\":").nth(1).and_then(|rest| rest.split([',', '}']).next());
            let lr = value.and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no lr in {text}"));
            (line["step"].as_u64().unwrap(), lr)
        })
        .collect()
}

/// Two run folders' weights and optimizer state (`last.safetensors`, `last.optim.safetensors`:
/// its tensors, the optimizer's settings such as the learning rates and betas a schedule set,
/// and the schedule's state), metrics and per-step log are the same, bit for bit: a resumed
/// run against an uninterrupted one.
pub fn assert_same_runs(a: &Path, b: &Path) {
    for file in ["last.safetensors", "last.optim.safetensors"] {
        let (ta, tb) = (tensors(&a.join(file)), tensors(&b.join(file)));
        assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>(), "{file}: tensor names");
        for (name, t) in &ta {
            assert!(t.equal(&tb[name]), "{file}: {name} differs between the resumed and the uninterrupted run");
        }
    }
    let metadata = |run: &Path| {
        tch_alexnet::formats::safetensors::load_tensors(&run.join("last.optim.safetensors")).unwrap().metadata
    };
    let (ma, mb) = (metadata(a), metadata(b));
    assert_eq!(ma["optimizer"], mb["optimizer"], "the optimizer's settings differ");
    let loop_state = |m: &tch_alexnet::formats::safetensors::Metadata| -> serde_json::Value {
        serde_json::from_str(&m["loop_state"]).unwrap()
    };
    let (la, lb) = (loop_state(&ma), loop_state(&mb));
    for key in ["epoch", "step", "schedule"] {
        assert_eq!(la[key], lb[key], "the loop state's {key} differs");
    }
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        for key in ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"] {
            assert_eq!(x[key], y[key], "metrics.jsonl: {key} differs: {x} vs {y}");
        }
    }
    assert_eq!(json_lines(&a.join("steps.jsonl")), json_lines(&b.join("steps.jsonl")), "steps.jsonl differs");
    assert_eq!(step_lrs(a), step_lrs(b), "steps.jsonl: the learning rates");
}

/// Runs `args` with a failpoint that kills the process (as a power loss would) during its
/// `nth` checkpoint save, after the new optimizer file and before the new weights.
pub fn crash_at_save(args: &[&str], nth: usize) {
    let out = Command::new(example_bin("train"))
        .args(args)
        .env("TCH_ALEXNET_FAILPOINT", format!("between-checkpoint-writes:{nth}"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint did not stop the run");
}

//! The AlexNet recipe stays bit-identical across refactors: short runs of `train` on the
//! synthetic set are compared, number for number and tensor byte for tensor byte, with the
//! values the program gave before the trainer was made generic (`tests/fixtures/golden/`).
//!
//! The values depend on libtorch's kernels, which oneDNN picks per CPU: they are compared only
//! on the CPU model and libtorch version they were captured with (anywhere else the check is
//! listed as not run for lack of that hardware). `TCH_ALEXNET_WRITE_GOLDEN=1` rewrites them,
//! which is only right before a change that must not alter results.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{cpu_train_args, example_bin, run_bin, synthetic_data_dir, with_flags};
use serde_json::{json, Value};

fn golden_path(name: &str) -> PathBuf {
    common::project_root().join("tests/fixtures/golden").join(format!("{name}.json"))
}

/// The CPU model, as `/proc/cpuinfo` names it.
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// XXH3-64 of each tensor's bytes in a safetensors file, by name.
fn tensor_digests(path: &Path) -> BTreeMap<String, String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, format!("{:016x}", xxhash_rust::xxh3::xxh3_64(view.data()))))
        .collect()
}

/// The lines of a JSON-lines file, without the fields that measure time.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(map) = v.as_object_mut() {
                for timing in ["seconds", "images_per_sec", "allreduce_seconds"] {
                    map.remove(timing);
                }
            }
            v
        })
        .collect()
}

/// Everything a run's results are: metrics, steps, test accuracies and every saved tensor.
fn results_of(run: &Path) -> Value {
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    json!({
        "metrics": json_lines(&run.join("metrics.jsonl")),
        "steps": json_lines(&run.join("steps.jsonl")),
        "test_acc_best": summary["test_acc_best"],
        "test_acc_last": summary["test_acc_last"],
        "last": tensor_digests(&run.join("last.safetensors")),
        "best": tensor_digests(&run.join("best.safetensors")),
        "optimizer": tensor_digests(&run.join("last.optim.safetensors")),
    })
}

/// Trains with `overrides` and compares the results with the golden file `name`.
fn check_golden(name: &str, overrides: &[&str]) {
    let data = synthetic_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args = with_flags(cpu_train_args(data.to_str().unwrap(), run.to_str().unwrap()), overrides);
    let f = run_bin(&example_bin("train"), &args);
    assert_eq!(f.code, Some(0), "stdout: {}\nstderr: {}", f.stdout, f.stderr);
    let results = results_of(&run);
    let machine = json!({ "cpu": cpu_model(), "libtorch": tch_alexnet::versions::libtorch_built_against() });
    let path = golden_path(name);
    if std::env::var("TCH_ALEXNET_WRITE_GOLDEN").is_ok_and(|v| v == "1") {
        let golden = json!({ "machine": machine, "args": overrides, "results": results });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&golden).unwrap() + "\n").unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if golden["machine"] != machine {
        common::skip_hardware(&format!(
            "golden values of `{name}` were captured on {}, this is {machine}",
            golden["machine"]
        ));
        return;
    }
    assert_eq!(golden["args"], json!(overrides), "the golden file was made with other flags");
    for (key, expected) in golden["results"].as_object().unwrap() {
        assert_eq!(&results[key], expected, "{name}: `{key}` differs from the golden run");
    }
}

/// The tutorial's recipe (SGD, constant learning rate, flips, dropout): 2 epochs of 4 steps.
#[test]
fn the_alexnet_recipe_is_bit_identical_to_the_golden_run() {
    check_golden("alexnet-tutorial", &["--epochs", "2", "--limit-train", "32"]);
}

/// The optimizer issue's paths: AdamW, two parameter groups, warm-up then cosine per batch,
/// clipping and label smoothing.
#[test]
fn an_adamw_cosine_run_is_bit_identical_to_the_golden_run() {
    check_golden(
        "alexnet-adamw-cosine",
        &[
            "--epochs",
            "2",
            "--limit-train",
            "32",
            "--optimizer",
            "adamw",
            "--no-decay-on-norm-and-bias",
            "--schedule",
            "cosine",
            "--schedule-per",
            "batch",
            "--warmup-steps",
            "3",
            "--clip-grad-norm",
            "1.0",
            "--label-smoothing",
            "0.1",
        ],
    );
}

//! The tutorial's split, checked against NumPy itself (the setup's Python): the same
//! `np.random.seed(seed); np.random.shuffle(indices)` draws, for several seeds and sizes,
//! including the tutorial's 50,000 images with seed 1; and `split.json` in a run folder.

mod common;

use std::process::Command;

use tch_alexnet::data::split::{numpy_shuffle, train_valid_split, SplitRng};

/// NumPy's shuffled `list(range(n))` for each `(n, seed)`, as the tutorial makes it.
fn numpy_shuffles(python: &std::path::Path, cases: &[(usize, u32)]) -> Vec<Vec<i64>> {
    let script = r#"
import json, sys
import numpy as np
out = []
for n, seed in json.loads(sys.argv[1]):
    indices = list(range(n))
    np.random.seed(seed)
    np.random.shuffle(indices)
    out.append(indices)
print(json.dumps(out))
"#;
    let cases = serde_json::to_string(cases).unwrap();
    let out = Command::new(python).args(["-c", script, &cases]).output().expect("cannot run the reference Python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn numpy_shuffle_matches_numpy_for_several_seeds_and_sizes() {
    let python = require_reference_python!();
    // Sizes around powers of two exercise the bounded draw's mask; 4294967295 is the largest seed.
    let cases: Vec<(usize, u32)> = vec![
        (50_000, 1),
        (50_000, 0),
        (50_000, 42),
        (1, 7),
        (2, 7),
        (3, 1),
        (255, 3),
        (256, 3),
        (257, 3),
        (1000, 4_294_967_295),
        (65_537, 123_456_789),
    ];
    let expected = numpy_shuffles(&python, &cases);
    for ((n, seed), want) in cases.iter().zip(&expected) {
        let mut got: Vec<i64> = (0..*n as i64).collect();
        numpy_shuffle(&mut got, *seed);
        assert_eq!(&got, want, "n = {n}, seed = {seed}");
    }
}

#[test]
fn the_default_split_is_the_tutorials() {
    let python = require_reference_python!();
    let indices = &numpy_shuffles(&python, &[(50_000, 1)])[0];
    let split = train_valid_split(50_000, 0.1, 1, SplitRng::Numpy).unwrap();
    assert_eq!(split.valid, indices[..5_000]);
    assert_eq!(split.train, indices[5_000..]);
}

#[test]
fn numpy_split_refuses_seeds_numpy_refuses() {
    let err = train_valid_split(100, 0.1, 1 << 32, SplitRng::Numpy).unwrap_err();
    assert!(err.to_string().contains("4294967295"), "{err}");
    assert!(train_valid_split(100, 0.1, 1 << 32, SplitRng::Chacha).is_ok());
}

/// Every run folder lists its whole split (before any --limit-*), in the tutorial's order.
#[test]
fn run_folders_hold_split_json() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let data = common::synthetic_data_dir();
    let args =
        common::with_flags(common::cpu_train_args(data.to_str().unwrap(), out.to_str().unwrap()), &["--epochs", "0"]);
    let f = common::run_bin(&common::example_bin("train"), &args);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("split.json")).unwrap()).unwrap();
    assert_eq!(split["rng"], "numpy");
    assert_eq!(split["seed"], 1);
    let expected = train_valid_split(50_000, 0.1, 1, SplitRng::Numpy).unwrap();
    let as_vec = |v: &serde_json::Value| -> Vec<i64> { serde_json::from_value(v.clone()).unwrap() };
    assert_eq!(as_vec(&split["valid"]), expected.valid);
    assert_eq!(as_vec(&split["train"]), expected.train);
}

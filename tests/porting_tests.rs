//! Porting a network other than AlexNet: examples/port_small's SmallNet, written with
//! `tch_alexnet::model::layers`, runs the weights PyTorch trained (`torch.save(model.state_dict())`)
//! and gives PyTorch's eval logits; the example program does the same as a user would.

mod common;

#[allow(dead_code)]
#[path = "../examples/port_small/net.rs"]
mod net;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tch::nn::{self, ModuleT};
use tch::Device;
use tch_alexnet::formats::state_dict;

/// Runs `pytorch_interop.py small-net dir`: small.pth and small_eval.safetensors.
fn pytorch_small_net(python: &Path, dir: &Path) {
    let out = Command::new(python)
        .arg(common::project_root().join("tests/fixtures/pytorch_interop.py"))
        .args(["small-net", dir.to_str().unwrap()])
        .output()
        .expect("cannot start the reference Python");
    assert!(out.status.success(), "pytorch_interop.py small-net failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The state dict names, the loaded weights and BatchNorm statistics, and the eval logits are
/// PyTorch's.
#[test]
fn a_small_network_ported_with_the_layers_matches_pytorch() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    pytorch_small_net(&python, dir.path());
    let pth = dir.path().join("small.pth");

    let vs = nn::VarStore::new(Device::Cpu);
    let net = net::SmallNet::new(&vs.root(), 10);
    let file = state_dict::load_state_dict(&pth, None).unwrap();
    let ours: Vec<String> = vs.variables().into_keys().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(ours, file.keys().cloned().collect::<Vec<_>>(), "state_dict names differ from PyTorch's");
    state_dict::load_into_var_store(&vs, &pth, None).unwrap();

    let variables = vs.variables();
    for (name, t) in &file {
        assert!(t.equal(&variables[name]), "{name} was not loaded as saved");
    }
    // Three training steps in PyTorch: statistics and counters away from their initial values.
    assert_eq!(variables["features.1.num_batches_tracked"].int64_value(&[]), 3);
    assert!(variables["features.5.running_var"].mean(None).double_value(&[]) != 1.0);

    let eval = common::tensors(&dir.path().join("small_eval.safetensors"));
    let logits = tch::no_grad(|| net.forward_t(&eval["images"], false));
    // Measured bit-identical (libtorch 2.13.0, x86-64): four float32 ulps of the logits.
    const LOGITS_TOLERANCE: f64 = 0.0;
    let ours = BTreeMap::from([("logits".to_string(), logits.shallow_clone())]);
    let theirs = BTreeMap::from([("logits".to_string(), eval["logits"].shallow_clone())]);
    common::assert_all_close("SmallNet eval logits vs PyTorch", &ours, &theirs, LOGITS_TOLERANCE);
    // Training mode uses the batch statistics: different logits from the same weights.
    let train_logits = tch::no_grad(|| net.forward_t(&eval["images"], true));
    assert!(common::max_abs_diff(&train_logits, &logits) > 1e-3);
}

/// The example program's `run`, as its README runs it: with --check it compares with PyTorch's logits
/// and says so; without, it classifies random images; a file of another network is refused.
#[test]
fn the_port_small_example_runs_pytorch_weights() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    pytorch_small_net(&python, dir.path());
    let (pth, eval) = (dir.path().join("small.pth"), dir.path().join("small_eval.safetensors"));
    let bin = common::example_bin("port_small");

    let f = common::run_bin(&bin, &["run", pth.to_str().unwrap(), "--check", eval.to_str().unwrap()]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("Loaded 16 tensors"), "{}", f.stdout);
    assert!(f.stdout.contains("image 4:") && f.stdout.contains("(within 1e-5)"), "{}", f.stdout);

    let f = common::run_bin(&bin, &["run", pth.to_str().unwrap(), "--images", "3"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(f.stdout.matches("logits [").count(), 3, "{}", f.stdout);

    // An AlexNet state dict is not SmallNet's: a clear error naming a missing key.
    let alexnet = dir.path().join("alexnet.safetensors");
    let (vs, _) = tch_alexnet::train::build_model(Device::Cpu, 10, false).unwrap();
    tch_alexnet::formats::safetensors::save_var_store(&vs, &alexnet, &Default::default()).unwrap();
    let f = common::run_bin(&bin, &["run", alexnet.to_str().unwrap()]);
    common::assert_clean_failure(&f, "alexnet.safetensors");
}

//! kuangliu/pytorch-cifar's ResNet-18 here against PyTorch's: state_dict names and shapes,
//! parameter order, init, eval and train forwards, three steps of the recipe's SGD, and a
//! checkpoint of kuangliu's `main.py` (`{'net': DataParallel state_dict, 'acc', 'epoch'}`).
//!
//! PyTorch's side is tests/fixtures/resnet_reference.py (kuangliu's class copied, MIT), run with
//! the setup's Python; without one the parity tests say SKIPPED (and fail under
//! `TCH_ALEXNET_REQUIRE_ALL=1`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use tch_alexnet::formats::safetensors as checkpoint;
use tch_alexnet::formats::state_dict;
use tch_alexnet::model::{self, ModelError, ModelKind, Network};
use tch_alexnet::train::optim::{cross_entropy, ordered_parameters, param_groups, Optimizer, Sgd, SgdConfig};
use tch_alexnet::train::optimizer_setup::momentum_buffers;

/// Trainable parameters of `ResNet18()` and `ResNet34()` for 10 classes (PyTorch's count).
const RESNET18_PARAMETERS: i64 = 11_173_962;
const RESNET34_PARAMETERS: i64 = 21_282_122;

// Tolerances of the float32 comparisons with PyTorch: about ten times the largest difference
// measured, never below four float32 ulps of the values compared (libtorch 2.13.0, x86-64; the
// tests print each figure). The same ATen operators run on both sides, and every comparison
// measures 0, so each bound is that floor.
const EVAL_LOGITS: f64 = 0.0;
const TRAIN_LOGITS: f64 = 0.0;
const LOSSES: f64 = 0.0;
const STATE: f64 = 0.0;
const MOMENTUM: f64 = 0.0;
const CHECKPOINT_LOGITS: f64 = 0.0;

/// Runs tests/fixtures/resnet_reference.py with `args`.
fn reference(python: &Path, args: &[&str]) {
    common::run_fixture(python, "resnet_reference.py", args);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// Every test here that draws from libtorch's generator does so under `common::with_seed`: one
// of them compares a seeded init with PyTorch's bit for bit.

fn new_resnet18(seed: i64) -> (nn::VarStore, model::ResNet) {
    common::with_seed(seed, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = model::resnet18(&vs.root(), 10).unwrap();
        (vs, net)
    })
}

fn state(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().collect()
}

fn logits(t: Tensor) -> BTreeMap<String, Tensor> {
    BTreeMap::from([("logits".to_string(), t)])
}

#[test]
fn resnet18_has_kuangliu_s_shapes_count_and_parameter_order() {
    let (vs, net) = new_resnet18(0);
    assert_eq!(model::trainable_parameter_count(&vs), RESNET18_PARAMETERS);
    let s = state(&vs);
    // 20 convolutions (17 3×3, 3 1×1 projections), 20 BatchNorms with 5 entries each, linear.
    assert_eq!(s.len(), 20 + 20 * 5 + 2);
    let shapes = [
        ("conv1.weight", vec![64, 3, 3, 3]),
        ("layer1.1.conv2.weight", vec![64, 64, 3, 3]),
        ("layer2.0.conv1.weight", vec![128, 64, 3, 3]),
        ("layer2.0.shortcut.0.weight", vec![128, 64, 1, 1]),
        ("layer4.0.shortcut.1.running_var", vec![512]),
        ("layer4.1.bn2.num_batches_tracked", vec![]),
        ("linear.weight", vec![10, 512]),
        ("linear.bias", vec![10]),
    ];
    for (name, shape) in shapes {
        assert_eq!(s[name].size(), shape, "{name}");
    }
    assert!(!s.contains_key("layer1.0.shortcut.0.weight"), "layer1 keeps its shape: no projection");
    // The recorded order names exactly the trainable variables, each once.
    let names = net.parameter_names();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    let trainable: Vec<String> = s.iter().filter(|(_, t)| t.requires_grad()).map(|(k, _)| k.clone()).collect();
    assert_eq!(sorted, trainable);
    assert_eq!(names[..4], ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight"]);
    assert_eq!(names[names.len() - 2..], ["linear.weight", "linear.bias"]);

    let xs = common::with_seed(1, || Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)));
    assert_eq!(tch::no_grad(|| net.forward_t(&xs, false)).size(), vec![2, 10]);

    let vs34 = nn::VarStore::new(Device::Cpu);
    let _ = common::with_seed(0, || model::resnet34(&vs34.root(), 10).unwrap());
    assert_eq!(model::trainable_parameter_count(&vs34), RESNET34_PARAMETERS);
}

/// The input check takes what kuangliu's network takes (sides 25 to 56, which PyTorch runs) and
/// refuses the rest with a message that says why; the zoo's names go both ways.
#[test]
fn input_check_and_zoo() {
    let (_vs, net) = new_resnet18(0);
    let zeros = |size: [i64; 4], kind| Tensor::zeros(size, (kind, Device::Cpu));
    for size in [[1, 3, 32, 32], [2, 3, 25, 56], [1, 3, 56, 25]] {
        assert!(net.check_input(&zeros(size, Kind::Float)).is_ok(), "{size:?}");
    }
    let out = tch::no_grad(|| net.try_forward_t(&zeros([1, 3, 25, 56], Kind::Float), false)).unwrap();
    assert_eq!(out.size(), vec![1, 10]);
    for size in [[1, 3, 24, 32], [1, 3, 32, 57], [1, 1, 32, 32], [0, 3, 32, 32]] {
        let err = net.check_input(&zeros(size, Kind::Float)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ResNet-18") && msg.contains("25 ≤ H, W ≤ 56") && msg.contains(&format!("{size:?}")),
            "{msg}"
        );
    }
    let err = net.check_input(&Tensor::zeros([3, 32, 32], (Kind::Float, Device::Cpu))).unwrap_err();
    assert!(matches!(err, ModelError::InputShape { .. }), "{err}");
    let err = net.check_input(&zeros([1, 3, 32, 32], Kind::Uint8)).unwrap_err();
    assert!(matches!(err, ModelError::InputKind(Kind::Uint8)), "{err}");

    for (kind, name, size) in [
        (ModelKind::Alexnet, "alexnet", 227),
        (ModelKind::Resnet18, "resnet18", 32),
        (ModelKind::Resnet34, "resnet34", 32),
    ] {
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<ModelKind>().unwrap(), kind);
        assert_eq!(name.to_uppercase().parse::<ModelKind>().unwrap(), kind);
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<ModelKind>(&format!("\"{name}\"")).unwrap(), kind);
        assert_eq!(<ModelKind as clap::ValueEnum>::from_str(name, false).unwrap(), kind);
        assert_eq!(kind.input_size(), Some(size));
    }
    assert_eq!(ModelKind::ALL.map(ModelKind::name), ModelKind::NAMES);
    assert_eq!(ModelKind::default(), ModelKind::Alexnet);
    let err = "resnet50".parse::<ModelKind>().unwrap_err();
    assert!(err.to_string().contains("resnet50") && err.to_string().contains("alexnet, resnet18, resnet34"), "{err}");

    let vs = nn::VarStore::new(Device::Cpu);
    let built = common::with_seed(0, || ModelKind::Resnet18.build(&vs.root(), 7).unwrap());
    assert_eq!(model::trainable_parameter_count(&vs), RESNET18_PARAMETERS - 3 * 513);
    assert_eq!(built.parameter_names().len(), 62);
    let out = tch::no_grad(|| built.try_forward_t(&zeros([1, 3, 32, 32], Kind::Float), false)).unwrap();
    assert_eq!(out.size(), vec![1, 7]);
    assert!(matches!(ModelKind::Resnet18.build(&vs.root().sub("x"), 0), Err(ModelError::NumClasses(0))));
    let alexnet = common::with_seed(0, || ModelKind::Alexnet.build(&vs.root().sub("a"), 10).unwrap());
    assert_eq!(alexnet.parameter_names(), model::parameter_names());
}

/// PyTorch's rules: every conv weight ~ U(±1/sqrt(fan_in)) (kaiming_uniform, a=√5), fan_in =
/// c_in × kh × kw; linear weight and bias ~ U(±1/sqrt(512)); BatchNorm weight 1, bias 0,
/// running mean 0, running var 1, counter 0.
#[test]
fn init_follows_pytorch_rules() {
    let (vs, _net) = new_resnet18(3);
    for (name, t) in state(&vs) {
        let leaf = name.rsplit('.').next().unwrap();
        let is_bn = name.contains(".bn") || name.starts_with("bn") || name.contains("shortcut.1");
        match (is_bn, leaf) {
            (true, "weight" | "running_var") => assert!(t.equal(&t.ones_like()), "{name} not ones"),
            (true, "bias" | "running_mean") => assert!(t.equal(&t.zeros_like()), "{name} not zeros"),
            (true, _) => assert_eq!((t.kind(), t.int64_value(&[])), (Kind::Int64, 0), "{name}"),
            (false, _) => {
                let size = t.size();
                let fan_in = if name.starts_with("linear") { 512 } else { size[1..].iter().product::<i64>() };
                let bound = 1.0 / (fan_in as f64).sqrt();
                let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
                let edge = bound * (1.0 + 1e-6);
                assert!(lo >= -edge && hi <= edge, "{name}: [{lo}, {hi}] outside ±{bound}");
                // Large draws come close to the bound (not tch's default, sqrt(6 / fan_in)).
                if t.numel() >= 1000 {
                    assert!(hi > 0.99 * bound && lo < -0.99 * bound, "{name}: [{lo}, {hi}] far inside ±{bound}");
                }
                let std = t.to_kind(Kind::Double).std(true).double_value(&[]);
                let n = t.numel() as f64;
                let tol = (4.5 / n.sqrt()).max(0.01);
                assert!((std / (bound / 3f64.sqrt()) - 1.0).abs() < tol, "{name}: std {std} for bound {bound}");
            }
        }
    }
}

/// The state_dict PyTorch builds (names, shapes, dtypes), `named_parameters()` order, the
/// count, and, from the same seed, the very same initial weights, for ResNet-18 and ResNet-34.
#[test]
fn names_shapes_order_and_seeded_init_are_pytorchs() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    type Build = fn(&nn::Path, i64) -> Result<model::ResNet, ModelError>;
    let arches: [(&str, Build); 2] = [("ResNet18", model::resnet18), ("ResNet34", model::resnet34)];
    for (arch, build) in arches {
        let out = dir.path().join(arch);
        reference(&python, &["describe", arch, "7", s(&out)]);
        let described: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("describe.json")).unwrap()).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = common::with_seed(7, || build(&vs.root(), 10).unwrap());

        let torch_order: Vec<String> = serde_json::from_value(described["parameters"].clone()).unwrap();
        assert_eq!(net.parameter_names(), torch_order, "{arch}: parameter order");
        assert_eq!(model::trainable_parameter_count(&vs), described["count"].as_i64().unwrap(), "{arch}");
        let ours: BTreeMap<String, (Vec<i64>, String)> =
            state(&vs).into_iter().map(|(k, t)| (k, (t.size(), format!("{:?}", t.kind())))).collect();
        let torch_dtype = |d: &str| if d == "torch.int64" { "Int64" } else { "Float" }.to_string();
        let theirs: BTreeMap<String, (Vec<i64>, String)> = described["state_dict"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let shape = serde_json::from_value(e[1].clone()).unwrap();
                (e[0].as_str().unwrap().to_string(), (shape, torch_dtype(e[2].as_str().unwrap())))
            })
            .collect();
        assert_eq!(ours, theirs, "{arch}: state_dict names, shapes, dtypes");

        let torch_init = common::tensors(&out.join("init.safetensors"));
        let different: Vec<String> =
            state(&vs).into_iter().filter(|(k, t)| !t.equal(&torch_init[k])).map(|(k, _)| k).collect();
        assert!(different.is_empty(), "{arch}: not PyTorch's seeded init: {different:?}");
    }
}

/// Eval logits, three steps of the recipe's SGD (each step's train-mode logits, the loss, the
/// state with BatchNorm statistics and counters, the momentum), and eval logits with the
/// statistics the steps left, against PyTorch from the same weights and batches.
#[test]
fn forward_and_three_sgd_steps_match_pytorch() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let (vs, net) = new_resnet18(11);
    let randn = |size: [i64; 4]| Tensor::randn(size, (Kind::Float, Device::Cpu));
    let mut batches = BTreeMap::new();
    common::with_seed(12, || {
        batches.insert("eval_images".to_string(), randn([2, 3, 32, 32]));
        for (i, labels) in [[3i64, 7, 0, 9], [1, 1, 4, 8], [2, 6, 5, 0]].iter().enumerate() {
            batches.insert(format!("b{}_images", i + 1), randn([4, 3, 32, 32]));
            batches.insert(format!("b{}_labels", i + 1), Tensor::from_slice(labels));
        }
    });
    let (init_path, batches_path) = (dir.path().join("init.safetensors"), dir.path().join("batches.safetensors"));
    checkpoint::save_var_store(&vs, &init_path, &Default::default()).unwrap();
    checkpoint::save_tensors(&batches_path, batches.iter().map(|(k, v)| (k.as_str(), v)), &Default::default()).unwrap();
    let out = dir.path().join("torch");
    reference(&python, &["train-steps", s(&init_path), s(&batches_path), s(&out)]);
    let torch = |file: &str| common::tensors(&out.join(file));

    let eval = tch::no_grad(|| net.forward_t(&batches["eval_images"], false));
    common::assert_all_close("eval logits vs PyTorch", &logits(eval), &torch("eval_logits.safetensors"), EVAL_LOGITS);

    let params = ordered_parameters(&vs, &net.parameter_names()).unwrap();
    let config = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 5e-4, ..SgdConfig::default() };
    let mut sgd = Sgd::new(param_groups(params, config, false)).unwrap();
    let mut losses = Vec::new();
    for step in 1..=3 {
        sgd.zero_grad();
        let out = net.forward_t(&batches[&format!("b{step}_images")], true);
        let loss = cross_entropy(&out, &batches[&format!("b{step}_labels")], 0.0).unwrap();
        loss.backward();
        sgd.step().unwrap();
        losses.push(loss.double_value(&[]));
        let what = |x: &str| format!("step {step}: {x} vs PyTorch");
        let train_logits = torch(&format!("train_logits{step}.safetensors"));
        common::assert_all_close(&what("train-mode logits"), &logits(out.detach()), &train_logits, TRAIN_LOGITS);
        let after = state(&vs);
        common::assert_all_close(&what("state"), &after, &torch(&format!("state{step}.safetensors")), STATE);
        assert_eq!(after["layer3.0.shortcut.1.num_batches_tracked"].int64_value(&[]), step);
        let momentum = momentum_buffers(&sgd);
        common::assert_all_close(
            &what("momentum"),
            &momentum,
            &torch(&format!("momentum{step}.safetensors")),
            MOMENTUM,
        );
    }
    let torch_losses: Vec<f64> =
        serde_json::from_str(&std::fs::read_to_string(out.join("losses.json")).unwrap()).unwrap();
    let worst = losses.iter().zip(&torch_losses).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("losses of 3 SGD steps {losses:?} vs PyTorch: max |diff| = {worst:.3e} (tolerance {LOSSES:.1e})");
    for (a, b) in losses.iter().zip(&torch_losses) {
        assert!((a - b).abs() <= common::tolerance(LOSSES, Kind::Float, b.abs()), "{losses:?} vs {torch_losses:?}");
    }
    // The steps moved the weights: a comparison of unchanged weights would pass trivially.
    let init = common::tensors(&init_path);
    assert!(common::max_abs_diff(&state(&vs)["conv1.weight"], &init["conv1.weight"]) > 1e-3);
    let after = tch::no_grad(|| net.forward_t(&batches["eval_images"], false));
    let what = "eval logits after the steps (trained BatchNorm statistics) vs PyTorch";
    common::assert_all_close(what, &logits(after), &torch("eval_logits_after.safetensors"), EVAL_LOGITS);
}

/// kuangliu's main.py trained with `nn.DataParallel` saves `{'net': state_dict with `module.`
/// keys, 'acc', 'epoch'}`: it loads here (the entry found and the prefix removed, and said so)
/// and gives PyTorch's eval logits.
#[test]
fn a_kuangliu_checkpoint_loads_and_gives_pytorchs_logits() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    reference(&python, &["kuangliu-checkpoint", "5", s(dir.path())]);
    let ckpt = dir.path().join("ckpt.pth");
    let expected = common::tensors(&dir.path().join("expected.safetensors"));

    let (tensors, source) = state_dict::read_state_dict(&ckpt, None).unwrap();
    assert_eq!(source.entry.as_deref(), Some("net"));
    assert_eq!(source.stripped_prefix, Some("module."));
    let note = source.to_string();
    assert!(note.contains("entry `net`") && note.contains("`module.` prefix"), "{note}");
    assert!(tensors.contains_key("layer4.1.bn2.running_mean"));

    for key in [None, Some("net")] {
        let (vs, net) = new_resnet18(99);
        let loaded = state_dict::load_into_var_store(&vs, &ckpt, key).unwrap();
        assert_eq!(loaded.stripped_prefix, Some("module."), "{key:?}");
        assert_eq!(state(&vs)["bn1.num_batches_tracked"].int64_value(&[]), 2);
        let ours = tch::no_grad(|| net.forward_t(&expected["images"], false));
        let theirs = logits(expected["logits"].shallow_clone());
        common::assert_all_close(
            &format!("kuangliu checkpoint ({key:?}): eval logits"),
            &logits(ours),
            &theirs,
            CHECKPOINT_LOGITS,
        );
    }
    let err = state_dict::load_into_var_store(&new_resnet18(1).0, &ckpt, Some("acc")).unwrap_err();
    assert!(err.to_string().contains("`acc` is a float"), "{err}");
}

//! `train::optim` against the setup's PyTorch: SGD (Nesterov; dampening + maximize), Adam,
//! AdamW, AdamW + amsgrad and the fused Adam/AdamW kernels, each with two parameter groups, 20
//! steps on a small network with BatchNorm; the state both ways (PyTorch's `state_dict()` and our
//! own format); `clip_grad_norm_`; label smoothing.
//!
//! Over 20 float32 steps, ReLU and max-pool decisions would flip between two implementations
//! that differ by rounding, so both sides apply the same recorded gradients
//! (tests/fixtures/optim_reference.py records them from a real PyTorch run). Each tensor is
//! measured as max|Δ| / max|reference| (an element-wise relative error means nothing where
//! `exp_avg_sq` is near 0), and the agreement is printed (`--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};
use tch_alexnet::formats::pytorch;
use tch_alexnet::train::optim::{
    clip, loss, param_groups, split_no_decay, Adam, AdamConfig, LrGroups, NamedParams, Optimizer, ParamGroup,
    SavedState, Sgd, SgdConfig, StateError,
};

/// The optimizers of `CONFIGS` in tests/fixtures/optim_reference.py, same names.
const CONFIGS: [&str; 7] =
    ["sgd_nesterov", "sgd_dampening_maximize", "adam", "adamw", "adamw_amsgrad", "adam_fused", "adamw_amsgrad_fused"];

/// The largest max|Δ| / max|reference| allowed over all parameters and state tensors: none.
/// The ports call the very ATen operators PyTorch calls, in the same order, with the same
/// scalars, on the same libtorch binaries (the setup's `.libtorch` is the venv's torch), so the
/// results are bit-identical: the observed agreement is exactly 0 for every optimizer, the
/// state both ways, clipping and the loss. Any difference means the port has diverged (swapping
/// Adam's two bias corrections gives 4.6e2, dropping Nesterov's look-ahead 9.8e-2).
const TOLERANCE: f64 = 0.0;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs tests/fixtures/optim_reference.py with `args`; panics with its stderr on failure.
fn reference_script(python: &Path, args: &[&str]) {
    let out = Command::new(python)
        .arg(common::project_root().join("tests/fixtures/optim_reference.py"))
        .args(args)
        .output()
        .expect("cannot start the reference Python");
    assert!(out.status.success(), "optim_reference.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The folder of PyTorch's recorded runs, recorded afresh once per test process (into a
/// temporary folder renamed over the previous run's, so that none accumulate).
fn recorded(python: &Path) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("optim-reference");
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        reference_script(python, &["record", s(&tmp)]);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
        dir
    })
}

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    common::tensors(path)
}

/// The network's parameters, from `file`, in `model.parameters()` order (that of the Sequential).
fn params_from(file: &Path) -> NamedParams {
    let tensors = load(file);
    ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
        .iter()
        .map(|n| (n.to_string(), tensors[*n].copy().set_requires_grad(true)))
        .collect()
}

/// The optimizer `name` of the fixture's table, with its two groups (weights; biases and
/// BatchNorm) and their learning rates and weight decays.
fn optimizer(name: &str, params: NamedParams) -> Box<dyn Optimizer> {
    let (decay, no_decay) = split_no_decay(params);
    if name.starts_with("sgd") {
        let base = if name == "sgd_nesterov" {
            SgdConfig { momentum: 0.9, nesterov: true, ..Default::default() }
        } else {
            SgdConfig { momentum: 0.8, dampening: 0.3, maximize: true, ..Default::default() }
        };
        let groups = vec![
            ParamGroup::new(decay, SgdConfig { lr: 0.05, weight_decay: 1e-3, ..base }),
            ParamGroup::new(no_decay, SgdConfig { lr: 0.02, weight_decay: 0.0, ..base }),
        ];
        return Box::new(Sgd::new(groups).unwrap());
    }
    let mut base = if name.starts_with("adamw") { AdamConfig::adamw() } else { AdamConfig::default() };
    if name == "adamw_amsgrad" {
        base = AdamConfig { betas: (0.8, 0.99), eps: 1e-6, amsgrad: true, ..base };
    }
    if name.ends_with("fused") {
        base = AdamConfig { fused: Some(true), amsgrad: name.contains("amsgrad"), ..base };
    }
    let groups = vec![
        ParamGroup::new(decay, AdamConfig { lr: 1e-2, weight_decay: 5e-2, ..base }),
        ParamGroup::new(no_decay, AdamConfig { lr: 5e-3, weight_decay: 1e-3, ..base }),
    ];
    Box::new(Adam::new(groups).unwrap())
}

/// Sets each parameter's gradient to the recorded one of `step` and steps.
fn step_with(opt: &mut dyn Optimizer, grads: &BTreeMap<String, Tensor>, step: usize) {
    opt.zero_grad();
    for (name, mut p) in opt.parameters() {
        tch_alexnet::ffi::set_grad(&mut p, &grads[&format!("{step}.{name}")].copy()).unwrap();
    }
    opt.step().unwrap();
}

fn run_steps(opt: &mut dyn Optimizer, grads: &BTreeMap<String, Tensor>, steps: std::ops::RangeInclusive<usize>) {
    for step in steps {
        step_with(opt, grads, step);
    }
}

/// Parameters and state by name (`PARAM.KEY` for the state, as the fixture writes them).
fn snapshot(opt: &dyn Optimizer) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let params = opt.parameters().into_iter().collect();
    (params, opt.save_state().tensors)
}

/// max|Δ| / max|reference|, over every tensor of `reference`; `ours` must have the same keys.
fn agreement(what: &str, ours: &BTreeMap<String, Tensor>, reference: &BTreeMap<String, Tensor>) -> f64 {
    assert_eq!(ours.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>(), "{what}: keys");
    let mut worst = 0f64;
    for (key, r) in reference {
        let o = &ours[key];
        assert_eq!(o.size(), r.size(), "{what}: shape of {key}");
        let diff = common::max_abs_diff(o, r);
        let scale = r.to_kind(Kind::Double).abs().max().double_value(&[]);
        worst = worst.max(if scale > 0.0 { diff / scale } else { diff });
    }
    worst
}

/// Asserts that `opt` holds the parameters and state of `params_file` and `state_file`.
fn assert_matches(what: &str, opt: &dyn Optimizer, params_file: &Path, state_file: &Path) {
    let (params, state) = snapshot(opt);
    let (p, st) = (agreement(what, &params, &load(params_file)), agreement(what, &state, &load(state_file)));
    println!("{what}: max|Δ|/max|ref| parameters {p:.3e}, state {st:.3e} (tolerance {TOLERANCE:e})");
    assert!(p <= TOLERANCE && st <= TOLERANCE, "{what}: parameters {p:e}, state {st:e} > {TOLERANCE:e}");
}

/// Each optimizer, 20 steps from the same start with the same gradients, ends where PyTorch's
/// does: parameters, momentum buffers, moments, steps.
#[test]
fn each_optimizer_matches_pytorch_over_20_steps_with_two_groups() {
    let python = require_reference_python!();
    let dir = recorded(&python);
    for name in CONFIGS {
        let mut opt = optimizer(name, params_from(&dir.join("init.safetensors")));
        run_steps(opt.as_mut(), &load(&dir.join(format!("{name}_grads.safetensors"))), 1..=20);
        assert_matches(
            name,
            opt.as_ref(),
            &dir.join(format!("{name}_params20.safetensors")),
            &dir.join(format!("{name}_state20.safetensors")),
        );
    }
}

/// A state PyTorch saved (`torch.save(opt.state_dict())`) after 10 steps, loaded here into an
/// optimizer made with other settings, continues as PyTorch's own run did.
#[test]
fn a_pytorch_optimizer_state_continues_here() {
    let python = require_reference_python!();
    let dir = recorded(&python);
    for name in CONFIGS {
        let mut opt = optimizer(name, params_from(&dir.join(format!("{name}_params10.safetensors"))));
        for g in 0..opt.group_count() {
            opt.set_lr(g, 123.0);
        }
        let saved = pytorch::load(&dir.join(format!("{name}_opt10.pth"))).unwrap();
        opt.load_state_dict(&saved).unwrap();
        run_steps(opt.as_mut(), &load(&dir.join(format!("{name}_grads.safetensors"))), 11..=20);
        assert_matches(
            &format!("{name} (PyTorch's state at 10)"),
            opt.as_ref(),
            &dir.join(format!("{name}_params20.safetensors")),
            &dir.join(format!("{name}_state20.safetensors")),
        );
    }
}

/// Our state after 10 steps, written with `formats::pytorch::save`, is loaded by PyTorch's
/// `opt.load_state_dict(torch.load(path))` (weights_only) and continues as the uninterrupted
/// PyTorch run; and the keys of each param group are those torch writes, in its order.
#[test]
fn our_optimizer_state_continues_in_pytorch() {
    let python = require_reference_python!();
    let dir = recorded(&python);
    let out = tempfile::tempdir().unwrap();
    for name in CONFIGS {
        let grads_file = dir.join(format!("{name}_grads.safetensors"));
        std::fs::copy(&grads_file, out.path().join(format!("{name}_grads.safetensors"))).unwrap();
        let mut opt = optimizer(name, params_from(&dir.join("init.safetensors")));
        run_steps(opt.as_mut(), &load(&grads_file), 1..=10);
        let params = opt.parameters();
        let file = out.path().join(format!("{name}_rust_params10.safetensors"));
        tch_alexnet::formats::safetensors::save_tensors(
            &file,
            params.iter().map(|(n, t)| (n.as_str(), t)),
            &Default::default(),
        )
        .unwrap();
        pytorch::save(&out.path().join(format!("{name}_rust_opt10.pth")), &opt.state_dict()).unwrap();
        assert_same_group_keys(
            name,
            &opt.state_dict(),
            &pytorch::load(&dir.join(format!("{name}_opt10.pth"))).unwrap(),
        );
    }
    let mut args = vec!["continue", s(out.path())];
    args.extend(CONFIGS);
    reference_script(&python, &args);
    for name in CONFIGS {
        let p = agreement(
            name,
            &load(&out.path().join(format!("{name}_cont_params20.safetensors"))),
            &load(&dir.join(format!("{name}_params20.safetensors"))),
        );
        let st = agreement(
            name,
            &load(&out.path().join(format!("{name}_cont_state20.safetensors"))),
            &load(&dir.join(format!("{name}_state20.safetensors"))),
        );
        println!("{name} (our state at 10, continued in PyTorch): parameters {p:.3e}, state {st:.3e}");
        assert!(p <= TOLERANCE && st <= TOLERANCE, "{name}: parameters {p:e}, state {st:e} > {TOLERANCE:e}");
    }
}

/// The keys of each param group (a set: torch puts the keys a group was given explicitly
/// first) with 'params' last, and of each parameter's state (in order), are PyTorch's.
fn assert_same_group_keys(name: &str, ours: &pytorch::PtValue, torch: &pytorch::PtValue) {
    let keys = |v: &pytorch::PtValue| -> (Vec<Vec<String>>, Vec<Vec<String>>) {
        let names = |d: &pytorch::PtValue| -> Vec<String> {
            d.as_dict().unwrap().iter().map(|(k, _)| k.as_str().unwrap().to_string()).collect()
        };
        let groups = v.get("param_groups").and_then(|g| g.as_list()).unwrap().iter().map(names).collect();
        let states = v.get("state").and_then(|s| s.as_dict()).unwrap().iter().map(|(_, st)| names(st)).collect();
        (groups, states)
    };
    let ((mut ours_groups, ours_states), (mut torch_groups, torch_states)) = (keys(ours), keys(torch));
    for k in ours_groups.iter_mut().chain(torch_groups.iter_mut()) {
        assert_eq!(k.last().map(String::as_str), Some("params"), "{name}: 'params' last");
        k.sort();
    }
    assert_eq!(ours_groups, torch_groups, "{name}: param_groups keys");
    assert_eq!(ours_states, torch_states, "{name}: state keys");
}

/// Our own format (tensors by name + JSON settings, one safetensors file) resumes bit for bit:
/// 10 steps, save, a fresh optimizer loads it, 10 more steps = 20 uninterrupted steps.
#[test]
fn our_own_state_format_resumes_bit_for_bit() {
    let python = require_reference_python!();
    let dir = recorded(&python);
    let tmp = tempfile::tempdir().unwrap();
    for name in CONFIGS {
        let grads = load(&dir.join(format!("{name}_grads.safetensors")));
        let mut straight = optimizer(name, params_from(&dir.join("init.safetensors")));
        run_steps(straight.as_mut(), &grads, 1..=20);

        let mut first = optimizer(name, params_from(&dir.join("init.safetensors")));
        run_steps(first.as_mut(), &grads, 1..=10);
        first.set_extra(0, "initial_lr", 0.25).unwrap();
        let file = tmp.path().join(format!("{name}.optim.safetensors"));
        first.save_state().save(&file, &Default::default()).unwrap();

        let params: NamedParams =
            first.parameters().into_iter().map(|(n, p)| (n, p.copy().set_requires_grad(true))).collect();
        let mut second = optimizer(name, params);
        second.set_lr(0, 99.0);
        second.load_state(&SavedState::load(&file).unwrap().0).unwrap();
        assert_eq!(second.extra(0, "initial_lr"), Some(0.25), "{name}: extra key kept");
        assert_eq!(second.lr(0), first.lr(0), "{name}: lr restored");
        run_steps(second.as_mut(), &grads, 11..=20);

        let ((p1, s1), (p2, s2)) = (snapshot(straight.as_ref()), snapshot(second.as_ref()));
        for (k, t) in p1.iter().chain(&s1) {
            assert!(t.equal(p2.get(k).or(s2.get(k)).unwrap()), "{name}: {k} differs after resuming");
        }
    }
}

/// `clip_grad_norm` = `torch.nn.utils.clip_grad_norm_` for norm types 2, 1 and inf, with a
/// max_norm that clips and one that does not: the returned total norm and the scaled gradients.
#[test]
fn clip_grad_norm_matches_pytorch() {
    let python = require_reference_python!();
    let t = load(&recorded(&python).join("clip.safetensors"));
    let mut worst = 0f64;
    for (nt_name, nt) in [("2", 2.0), ("1", 1.0), ("inf", f64::INFINITY)] {
        for mn in ["0.5", "1000"] {
            let params: Vec<Tensor> = (0..4)
                .map(|i| {
                    let mut p =
                        Tensor::zeros(t[&format!("in.{i}")].size(), (Kind::Float, Device::Cpu)).set_requires_grad(true);
                    tch_alexnet::ffi::set_grad(&mut p, &t[&format!("in.{i}")].copy()).unwrap();
                    p
                })
                .collect();
            let total = clip::clip_grad_norm(&params, mn.parse().unwrap(), nt).unwrap();
            let expected = &t[&format!("norm.{nt_name}.{mn}")];
            worst = worst.max(common::max_abs_diff(&total, expected) / expected.abs().double_value(&[]));
            for (i, p) in params.iter().enumerate() {
                let r = &t[&format!("out.{nt_name}.{mn}.{i}")];
                worst = worst.max(common::max_abs_diff(&p.grad(), r) / r.abs().max().double_value(&[]));
            }
            if mn == "0.5" {
                let clipped = clip::grad_norm(&params, nt).unwrap().double_value(&[]);
                assert!((clipped - 0.5).abs() < 1e-5, "norm {nt_name}: {clipped} after clipping to 0.5");
            }
        }
    }
    println!("clip_grad_norm: max|Δ|/max|ref| {worst:.3e} (tolerance {TOLERANCE:e})");
    assert!(worst <= TOLERANCE, "clip_grad_norm differs from PyTorch by {worst:e}");
}

/// `loss::cross_entropy` = `F.cross_entropy(label_smoothing=s)`: the loss and its gradient.
#[test]
fn label_smoothing_cross_entropy_matches_pytorch() {
    let python = require_reference_python!();
    let t = load(&recorded(&python).join("loss.safetensors"));
    let mut worst = 0f64;
    let mut values = Vec::new();
    for smoothing in ["0", "0.1", "0.3"] {
        let logits = t["logits"].copy().set_requires_grad(true);
        let value = loss::cross_entropy(&logits, &t["targets"], smoothing.parse().unwrap()).unwrap();
        value.backward();
        let (r, g) = (&t[&format!("loss.{smoothing}")], &t[&format!("grad.{smoothing}")]);
        worst = worst.max(common::max_abs_diff(&value, r) / r.abs().double_value(&[]));
        worst = worst.max(common::max_abs_diff(&logits.grad(), g) / g.abs().max().double_value(&[]));
        values.push(value.double_value(&[]));
    }
    println!("cross_entropy(label_smoothing): max|Δ|/max|ref| {worst:.3e} (tolerance {TOLERANCE:e})");
    assert!(worst <= TOLERANCE, "label-smoothed cross entropy differs from PyTorch by {worst:e}");
    assert!(values[0] != values[1] && values[1] != values[2], "smoothing changes the loss: {values:?}");
    assert!(loss::cross_entropy(&t["logits"], &t["targets"], 1.5).is_err());
}

/// Loading a state into an optimizer it does not fit is refused with what does not fit, and
/// leaves the optimizer as it was.
#[test]
fn mismatched_states_are_refused_clearly() {
    let python = require_reference_python!();
    let dir = recorded(&python);
    let adam_state = pytorch::load(&dir.join("adam_opt10.pth")).unwrap();
    let sgd_state = pytorch::load(&dir.join("sgd_nesterov_opt10.pth")).unwrap();
    let init = || params_from(&dir.join("init.safetensors"));

    let mut one_group = Adam::new(param_groups(init(), AdamConfig::default(), false)).unwrap();
    let err = one_group.load_state_dict(&adam_state).unwrap_err();
    assert!(matches!(err, StateError::GroupCount { found: 2, expected: 1 }), "{err}");

    let mut adam = optimizer("adam", init());
    let err = adam.load_state_dict(&sgd_state).unwrap_err();
    assert!(err.to_string().contains("betas"), "{err}");
    let err = optimizer("sgd_nesterov", init()).load_state_dict(&adam_state).unwrap_err();
    assert!(err.to_string().contains("momentum"), "{err}");

    // A network whose first layer is wider: same parameter count, other shapes.
    let mut wider = init();
    wider[0].1 = Tensor::zeros([7, 3, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let err = optimizer("adam", wider).load_state_dict(&adam_state).unwrap_err();
    assert!(matches!(&err, StateError::Param { name, .. } if name == "0.weight"), "{err}");
    assert!(err.to_string().contains("[7, 3, 3, 3]"), "{err}");
    assert_eq!(adam.lr(0), 1e-2, "a refused load changes nothing");

    let sgd_own = optimizer("sgd_nesterov", init()).save_state();
    let err = adam.load_state(&sgd_own).unwrap_err();
    assert!(matches!(err, StateError::Kind { .. }), "{err}");
    assert!(adam.set_extra(0, "lr", 1.0).is_err(), "lr is not an extra key");
}

/// The one-call "no weight decay on biases and BatchNorm" split keeps `parameters()` order in
/// each group, and extra keys go through PyTorch's layout.
#[test]
fn groups_without_decay_on_one_dim_parameters_and_extra_keys() {
    let params: NamedParams =
        [("a.weight", vec![4, 3]), ("a.bias", vec![4]), ("bn.weight", vec![4]), ("b.weight", vec![2, 4])]
            .into_iter()
            .map(|(n, s)| (n.to_string(), Tensor::zeros(s, (Kind::Float, Device::Cpu)).set_requires_grad(true)))
            .collect();
    let config = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 5e-4, ..Default::default() };
    let mut opt = Sgd::new(param_groups(params, config, true)).unwrap();
    assert_eq!(opt.group_parameter_names(0), ["a.weight", "b.weight"]);
    assert_eq!(opt.group_parameter_names(1), ["a.bias", "bn.weight"]);
    assert_eq!((opt.weight_decay(0), opt.weight_decay(1)), (5e-4, 0.0));
    let names: Vec<String> = opt.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a.weight", "b.weight", "a.bias", "bn.weight"], "ids run over the groups in order");

    opt.set_extra(1, "initial_lr", 0.1).unwrap();
    opt.set_lr(1, 0.05);
    let state = opt.state_dict();
    let group1 = &state.get("param_groups").and_then(|g| g.as_list()).unwrap()[1];
    assert_eq!(group1.get("initial_lr").and_then(|v| v.as_float()), Some(0.1));
    let ids: Vec<i64> =
        group1.get("params").and_then(|p| p.as_list()).unwrap().iter().map(|i| i.as_int().unwrap()).collect();
    assert_eq!(ids, [2, 3]);
    opt.set_lr(1, 7.0);
    opt.load_state_dict(&state).unwrap();
    assert_eq!((opt.lr(1), opt.extra(1, "initial_lr")), (0.05, Some(0.1)));
}

/// With no smoothing, the loss is the recipe's `cross_entropy_for_logits` bit for bit, so the
/// trainer can use `loss::cross_entropy` whatever `--label-smoothing` is.
#[test]
fn no_smoothing_is_the_recipes_loss_bit_for_bit() {
    tch::manual_seed(5);
    let logits = Tensor::randn([64, 10], (Kind::Float, Device::Cpu)) * 4.0;
    let targets = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let ours = loss::cross_entropy(&logits, &targets, 0.0).unwrap();
    assert!(ours.equal(&logits.cross_entropy_for_logits(&targets)), "{ours:?}");
}

//! The learning-rate schedules against torch 2.13's `torch.optim.lr_scheduler`: every learning
//! rate (and `OneCycleLR`'s momentum or `betas[0]`) of whole runs, two parameter groups of
//! different learning rates, to 1e-12 (the port is meant to be bit-exact: the count of
//! bit-identical values is printed); the state dicts both ways (PyTorch's continued here, ours
//! continued by PyTorch); our own JSON state, exact mid-schedule; the `--schedule` parser.
//!
//! The PyTorch side is tests/fixtures/lr_scheduler.py, run with the setup's Python; without one
//! these tests say SKIPPED (and fail under `TCH_ALEXNET_REQUIRE_ALL=1`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use tch_alexnet::formats::pytorch::{self, PtValue};
use tch_alexnet::train::optim::lr_scheduler::{
    AnnealStrategy, Decay, LrScheduler, MomentumKey, OneCycleConfig, ScheduleError, ScheduleSpec, SchedulerConfig,
    StepUnit, Warmup, WarmupLength,
};
use tch_alexnet::train::optim::LrGroups;

/// The bound the issue sets for every learning rate.
const TOLERANCE: f64 = 1e-12;
/// The two groups' learning rates (tests/fixtures/lr_scheduler.py's `LRS`).
const LRS: [f64; 2] = [0.1, 0.037];

/// A stand-in optimizer: per group, its `lr` and its momentum (SGD's `momentum` or `betas[0]`).
#[derive(Clone, Debug, PartialEq)]
struct Groups(Vec<(f64, Option<f64>)>);

impl LrGroups for Groups {
    fn group_count(&self) -> usize {
        self.0.len()
    }
    fn lr(&self, group: usize) -> f64 {
        self.0[group].0
    }
    fn set_lr(&mut self, group: usize, lr: f64) {
        self.0[group].0 = lr;
    }
    fn momentum(&self, group: usize) -> Option<f64> {
        self.0[group].1
    }
    fn set_momentum(&mut self, group: usize, momentum: f64) {
        if let Some(m) = &mut self.0[group].1 {
            *m = momentum;
        }
    }
}

/// SGD(momentum=0.9) and Adam (betas[0] = 0.9) both start with 0.9.
fn groups() -> Groups {
    Groups(LRS.iter().map(|lr| (*lr, Some(0.9))).collect())
}

fn linear_warmup(total_iters: i64) -> SchedulerConfig {
    SchedulerConfig::warmup(1.0 / 3.0, total_iters)
}

/// The cases of tests/fixtures/lr_scheduler.py's `CASES`: name, how many steps.
const CASES: [(&str, usize); 12] = [
    ("step", 120),
    ("multistep", 120),
    ("exponential", 150),
    ("cosine", 130),
    ("linear", 30),
    ("linear_custom", 60),
    ("onecycle_sgd", 150),
    ("onecycle_adam", 120),
    ("onecycle_three_linear", 101),
    ("warmup_cosine", 120),
    ("warmup_multistep", 60),
    ("warmup_step_exp", 50),
];

/// Where runs are checkpointed (the fixture's `ks`).
fn ks(n: usize) -> [usize; 2] {
    [3, n / 2 + 1]
}

/// The case's schedule, built on fresh groups, as the fixture builds it.
fn build(name: &str) -> (Groups, LrScheduler) {
    use SchedulerConfig as C;
    let mut g = groups();
    let single = |g: &mut Groups, c: C| LrScheduler::new(g, &c).unwrap();
    let s = match name {
        "step" => single(&mut g, C::StepLr { step_size: 7, gamma: 0.5 }),
        "multistep" => single(&mut g, C::MultiStepLr { milestones: vec![10, 25, 25, 60], gamma: 0.3 }),
        "exponential" => single(&mut g, C::ExponentialLr { gamma: 0.97 }),
        "cosine" => single(&mut g, C::CosineAnnealingLr { t_max: 50, eta_min: 0.001 }),
        "linear" => single(&mut g, linear_warmup(5)),
        "linear_custom" => single(&mut g, C::LinearLr { start_factor: 0.1, end_factor: 0.8, total_iters: 40 }),
        "onecycle_sgd" => {
            let mut c = OneCycleConfig::new(0.5, 150, MomentumKey::Momentum);
            c.max_lr = vec![0.5, 0.2];
            single(&mut g, C::OneCycleLr(c))
        }
        "onecycle_adam" => single(&mut g, C::OneCycleLr(OneCycleConfig::new(0.01, 120, MomentumKey::Betas))),
        "onecycle_three_linear" => {
            let mut c = OneCycleConfig::new(0.3, 101, MomentumKey::Momentum);
            (c.pct_start, c.anneal_strategy, c.three_phase) = (0.25, AnnealStrategy::Linear, true);
            single(&mut g, C::OneCycleLr(c))
        }
        "warmup_cosine" => LrScheduler::sequential(
            &mut g,
            &[linear_warmup(10), C::CosineAnnealingLr { t_max: 110, eta_min: 0.0 }],
            vec![10],
        )
        .unwrap(),
        "warmup_multistep" => LrScheduler::sequential(
            &mut g,
            &[linear_warmup(5), C::MultiStepLr { milestones: vec![20, 40], gamma: 0.1 }],
            vec![5],
        )
        .unwrap(),
        "warmup_step_exp" => LrScheduler::sequential(
            &mut g,
            &[linear_warmup(4), C::StepLr { step_size: 5, gamma: 0.5 }, C::ExponentialLr { gamma: 0.9 }],
            vec![4, 20],
        )
        .unwrap(),
        _ => panic!("unknown case {name}"),
    };
    (g, s)
}

/// Learning rates and momenta per step, as the fixture writes them (IEEE-754 bits).
#[derive(Deserialize)]
struct Trace {
    lr: Vec<Vec<u64>>,
    momentum: Vec<Vec<u64>>,
}

/// Our run's values per step, in the same form.
#[derive(Default)]
struct Ours {
    lr: Vec<Vec<f64>>,
    momentum: Vec<Vec<f64>>,
}

impl Ours {
    fn record(&mut self, g: &Groups, s: &LrScheduler) {
        self.lr.push(s.last_lr().to_vec());
        self.momentum.push(g.0.iter().map(|(_, m)| m.unwrap()).collect());
    }
}

/// Steps `s` `n` times, recording the values before the first step and after each.
fn run(g: &mut Groups, s: &mut LrScheduler, n: usize) -> Ours {
    let mut ours = Ours::default();
    ours.record(g, s);
    for _ in 0..n {
        s.step(g).unwrap();
        ours.record(g, s);
    }
    ours
}

/// How far `ours` is from `theirs`: (max |difference|, values compared, bit-identical ones).
fn compare(ours: &[Vec<f64>], theirs: &[Vec<u64>]) -> (f64, usize, usize) {
    assert_eq!(ours.len(), theirs.len(), "number of steps");
    let (mut max, mut n, mut same) = (0.0f64, 0, 0);
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!(a.len(), b.len(), "number of groups");
        for (x, y) in a.iter().zip(b) {
            let y = f64::from_bits(*y);
            max = max.max((x - y).abs());
            n += 1;
            same += usize::from(x.to_bits() == y.to_bits());
        }
    }
    (max, n, same)
}

/// Asserts `ours` matches `theirs` to [`TOLERANCE`] and prints the agreement.
fn assert_matches(what: &str, ours: &Ours, theirs: &Trace) {
    let (lr_max, n, same) = compare(&ours.lr, &theirs.lr);
    let (m_max, m_n, m_same) = compare(&ours.momentum, &theirs.momentum);
    println!(
        "{what}: lr max |Δ| {lr_max:.1e} ({same}/{n} bit-identical), momentum max |Δ| {m_max:.1e} \
         ({m_same}/{m_n} bit-identical)"
    );
    assert!(lr_max <= TOLERANCE, "{what}: learning rates differ from PyTorch's by {lr_max:e}");
    assert!(m_max <= TOLERANCE, "{what}: momenta differ from PyTorch's by {m_max:e}");
    // The port repeats PyTorch's float operations in PyTorch's order, with the same libm: it is
    // exact, and a textbook closed form (within 1e-15 of PyTorch's values) is caught here.
    assert!(same == n && m_same == m_n, "{what}: within {TOLERANCE:e} but not bit for bit");
}

fn fixture(python: &Path, args: &[&str]) {
    let out = Command::new(python)
        .arg(common::project_root().join("tests/fixtures/lr_scheduler.py"))
        .args(args)
        .output()
        .expect("cannot start the reference Python");
    assert!(out.status.success(), "lr_scheduler.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// PyTorch's uninterrupted runs of every case, computed once per test binary.
fn pytorch_traces(python: &Path) -> &'static BTreeMap<String, Trace> {
    static TRACES: OnceLock<BTreeMap<String, Trace>> = OnceLock::new();
    TRACES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.json");
        fixture(python, &["trace", s(&path)]);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// The part of a trace from step `k` on.
fn tail(trace: &Trace, k: usize) -> Trace {
    Trace { lr: trace.lr[k..].to_vec(), momentum: trace.momentum[k..].to_vec() }
}

#[test]
fn every_learning_rate_of_every_schedule_equals_pytorchs() {
    let python = require_reference_python!();
    let traces = pytorch_traces(&python);
    for (name, n) in CASES {
        let (mut g, mut sched) = build(name);
        assert_matches(name, &run(&mut g, &mut sched, n), &traces[name]);
    }
}

/// The spec parser's schedules are PyTorch's recipes: `cosine` after a 10-epoch warm-up over
/// 120 epochs is `warmup_cosine`; `multistep:20,40` after 5 is `warmup_multistep`; `onecycle`
/// per batch over 12 epochs of 10 batches with Adam is `onecycle_adam`.
#[test]
fn schedules_from_specs_equal_pytorchs_recipes() {
    let python = require_reference_python!();
    let traces = pytorch_traces(&python);
    let cases = [
        ("warmup_cosine", "cosine", Some(WarmupLength::Epochs(10)), StepUnit::Epoch, 120, 1, MomentumKey::Momentum),
        (
            "warmup_multistep",
            "multistep:20,40",
            Some(WarmupLength::Epochs(5)),
            StepUnit::Epoch,
            60,
            7,
            MomentumKey::Momentum,
        ),
        (
            "warmup_multistep",
            "multistep:20,40:0.1",
            Some(WarmupLength::Steps(5)),
            StepUnit::Batch,
            6,
            10,
            MomentumKey::Momentum,
        ),
        ("onecycle_adam", "onecycle:0.01", None, StepUnit::Batch, 12, 10, MomentumKey::Betas),
    ];
    for (name, decay, warmup, unit, epochs, steps_per_epoch, key) in cases {
        let spec = ScheduleSpec::new(decay.parse().unwrap(), warmup.map(Warmup::new), unit).unwrap();
        let mut g = groups();
        let mut sched = spec.build(&mut g, epochs, steps_per_epoch, key).unwrap().unwrap();
        let n = spec.total_steps(epochs, steps_per_epoch) as usize;
        assert_matches(&format!("{decay} {warmup:?} {unit:?}"), &run(&mut g, &mut sched, n), &traces[name]);
    }
}

/// The comparison can fail: a cosine with another eta_min, and the textbook closed form of the
/// cosine (which PyTorch does not step with) are caught.
#[test]
fn a_wrong_schedule_fails_the_comparison() {
    let python = require_reference_python!();
    let traces = pytorch_traces(&python);
    let theirs = &traces["cosine"];

    let mut g = groups();
    let config = SchedulerConfig::CosineAnnealingLr { t_max: 50, eta_min: 0.0011 };
    let mut wrong = LrScheduler::new(&mut g, &config).unwrap();
    let (max, _, _) = compare(&run(&mut g, &mut wrong, 130).lr, &theirs.lr);
    assert!(max > TOLERANCE, "a cosine with eta_min 0.0011 passed for one with 0.001 ({max:e})");

    let textbook: Vec<Vec<f64>> = (0..=130)
        .map(|t| {
            LRS.iter()
                .map(|base| 0.001 + (base - 0.001) * (1.0 + (std::f64::consts::PI * t as f64 / 50.0).cos()) / 2.0)
                .collect()
        })
        .collect();
    let (max, n, same) = compare(&textbook, &theirs.lr);
    println!("textbook closed-form cosine: max |Δ| {max:.1e}, {same}/{n} bit-identical");
    assert!(same < n, "the closed form gave PyTorch's recursive values bit for bit");
}

#[test]
fn onecycle_past_its_total_steps_is_an_error() {
    let (mut g, mut sched) = build("onecycle_sgd");
    for _ in 0..150 {
        sched.step(&mut g).unwrap();
    }
    assert!(matches!(sched.step(&mut g), Err(ScheduleError::PastEnd { step: 151, total_steps: 150 })));
}

/// Structural equality of two PtValues: same variants (an int is not a float), same floats to
/// the bit, dicts in the same order. Err names the first difference.
fn pt_eq(a: &PtValue, b: &PtValue, path: &str) -> Result<(), String> {
    use PtValue as P;
    match (a, b) {
        (P::None, P::None) => Ok(()),
        (P::Bool(x), P::Bool(y)) if x == y => Ok(()),
        (P::Int(x), P::Int(y)) if x == y => Ok(()),
        (P::Float(x), P::Float(y)) if x.to_bits() == y.to_bits() => Ok(()),
        (P::Str(x), P::Str(y)) if x == y => Ok(()),
        (P::List(x), P::List(y)) | (P::Tuple(x), P::Tuple(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().try_for_each(|(i, (x, y))| pt_eq(x, y, &format!("{path}[{i}]")))
        }
        (P::Dict(x), P::Dict(y)) | (P::Counter(x), P::Counter(y)) if x.len() == y.len() => {
            x.iter().zip(y).try_for_each(|((kx, vx), (ky, vy))| {
                pt_eq(kx, ky, &format!("{path} key"))?;
                pt_eq(vx, vy, &format!("{path}[{kx:?}]"))
            })
        }
        _ => Err(format!("{path}: {a:?} != {b:?}")),
    }
}

/// Puts a PyTorch optimizer's `lr` and `momentum` / `betas[0]` into `g`.
fn restore_groups(g: &mut Groups, param_groups: &PtValue) {
    for (i, group) in param_groups.as_list().unwrap().iter().enumerate() {
        g.set_lr(i, group.get("lr").unwrap().as_float().unwrap());
        let momentum = match group.get("betas") {
            Some(betas) => &betas.as_list().unwrap()[0],
            None => group.get("momentum").unwrap(),
        };
        g.0[i].1 = Some(momentum.as_float().unwrap());
    }
}

#[test]
fn pytorch_state_dicts_are_ours_and_continue_here() {
    let python = require_reference_python!();
    let traces = pytorch_traces(&python);
    let dir = tempfile::tempdir().unwrap();
    fixture(&python, &["save", s(dir.path())]);
    for (name, n) in CASES {
        for k in ks(n) {
            let file = pytorch::load(&dir.path().join(format!("{name}.{k}.pth"))).unwrap();
            let (theirs, optimizer) = (file.get("scheduler").unwrap(), file.get("optimizer").unwrap());

            // Our uninterrupted run writes PyTorch's state dict and param-group entries.
            let (mut g, mut sched) = build(name);
            for _ in 0..k {
                sched.step(&mut g).unwrap();
            }
            pt_eq(&sched.state_dict(), theirs, name).unwrap_or_else(|e| panic!("{name} after {k} steps: {e}"));
            let param_groups = optimizer.get("param_groups").unwrap();
            for (group, entries) in param_groups.as_list().unwrap().iter().zip(sched.param_group_entries()) {
                for (key, value) in entries {
                    assert_eq!(group.get(key).unwrap().as_float().unwrap().to_bits(), value.to_bits(), "{name}: {key}");
                }
            }

            // A fresh schedule takes PyTorch's state and continues as PyTorch did.
            let (mut g, mut sched) = build(name);
            restore_groups(&mut g, param_groups);
            sched.load_param_group_entries(param_groups).unwrap();
            sched.load_state_dict(theirs).unwrap();
            pt_eq(&sched.state_dict(), theirs, name).unwrap();
            assert_matches(
                &format!("{name} from PyTorch's step {k}"),
                &run(&mut g, &mut sched, n - k),
                &tail(&traces[name], k),
            );
        }
    }
}

/// What the Rust side hands PyTorch: the scheduler's state dict and, per group, the `lr`, the
/// momentum and the schedule's entries (what the optimizer's export writes into `param_groups`).
fn ours_checkpoint(g: &Groups, sched: &LrScheduler) -> PtValue {
    let param_groups = g.0.iter().zip(sched.param_group_entries()).map(|((lr, momentum), entries)| {
        let mut items =
            vec![(PtValue::from("lr"), PtValue::Float(*lr)), ("momentum".into(), PtValue::Float(momentum.unwrap()))];
        items.extend(entries.into_iter().map(|(k, v)| (PtValue::from(k), PtValue::Float(v))));
        PtValue::Dict(items)
    });
    PtValue::Dict(vec![
        ("scheduler".into(), sched.state_dict()),
        ("param_groups".into(), PtValue::List(param_groups.collect())),
    ])
}

#[test]
fn our_state_dicts_continue_in_pytorch() {
    let python = require_reference_python!();
    let traces = pytorch_traces(&python);
    let dir = tempfile::tempdir().unwrap();
    for (name, n) in CASES {
        for k in ks(n) {
            let (mut g, mut sched) = build(name);
            for _ in 0..k {
                sched.step(&mut g).unwrap();
            }
            pytorch::save(&dir.path().join(format!("{name}.{k}.ours.pth")), &ours_checkpoint(&g, &sched)).unwrap();
        }
    }
    // The fixture checks each loaded state dict equals PyTorch's own after k steps.
    let out = dir.path().join("resumed.json");
    fixture(&python, &["resume", s(dir.path()), s(&out)]);
    let resumed: BTreeMap<String, Trace> = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    for (name, n) in CASES {
        for k in ks(n) {
            let theirs = &resumed[&format!("{name}.{k}")];
            // PyTorch continuing from our state gives PyTorch's uninterrupted values.
            let trace = tail(&traces[name], k);
            let as_f64 =
                |t: &Trace| t.lr.iter().map(|r| r.iter().map(|b| f64::from_bits(*b)).collect()).collect::<Vec<_>>();
            let (max, n_values, same) = compare(&as_f64(theirs), &trace.lr);
            assert!(max <= TOLERANCE && same == n_values, "{name}: PyTorch from our step {k} drifts by {max:e}");
            let (max, ..) = compare(&as_f64(&Trace { lr: theirs.momentum.clone(), momentum: vec![] }), &trace.momentum);
            assert!(max <= TOLERANCE, "{name}: PyTorch's momenta from our step {k} drift by {max:e}");
        }
    }
    println!("PyTorch continued all {} of our checkpoints bit for bit", CASES.len() * 2);
}

/// Our own format: the schedule and the groups through JSON mid-run, then the rest of the run,
/// bit for bit the uninterrupted one (pure Rust).
#[test]
fn json_state_resumes_exactly_mid_schedule() {
    let (mut lossy, mut floats) = (0, 0);
    for (name, n) in CASES {
        let (mut g, mut sched) = build(name);
        let whole = run(&mut g, &mut sched, n);
        // Why floats are strings in our format: serde_json's default parser is not exact.
        for x in whole.lr.iter().flatten() {
            floats += 1;
            lossy += usize::from(serde_json::from_str::<f64>(&serde_json::to_string(x).unwrap()).unwrap() != *x);
        }
        for k in ks(n) {
            let (mut g, mut sched) = build(name);
            for _ in 0..k {
                sched.step(&mut g).unwrap();
            }
            let saved = serde_json::to_string(&sched).unwrap();
            let mut sched2: LrScheduler = serde_json::from_str(&saved).unwrap();
            assert_eq!(sched2, sched, "{name}: JSON round trip");
            // The optimizer's own state (here: lr and momentum) is restored exactly by its owner.
            let mut g2 = g.clone();
            let rest = run(&mut g2, &mut sched2, n - k);
            for (a, b) in rest.lr.iter().zip(&whole.lr[k..]) {
                assert_eq!(
                    a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{name}"
                );
            }
        }
    }
    println!("plain serde_json f64s would have lost {lossy} of these {floats} learning rates");
}

#[test]
fn a_state_dict_of_another_schedule_is_refused() {
    let (_, step) = build("step");
    let (_, exponential) = build("exponential");
    let (_, warmup) = build("warmup_cosine");
    let (_, mut cosine) = build("cosine");
    let before = cosine.clone();
    for other in [&step, &exponential, &warmup] {
        let err = cosine.load_state_dict(&other.state_dict()).unwrap_err();
        assert!(matches!(err, ScheduleError::State(_)), "{err}");
        assert_eq!(cosine, before, "a refused state dict changed the schedule");
    }
    // An Exponential state dict has no marker key of its own: its `gamma` alone is not a StepLR's.
    let (_, mut step2) = build("step");
    assert!(step2.load_state_dict(&exponential.state_dict()).is_err());
    // One group instead of two.
    let mut one = Groups(vec![(0.1, Some(0.9))]);
    let single = LrScheduler::new(&mut one, &SchedulerConfig::ExponentialLr { gamma: 0.9 }).unwrap();
    let (_, mut two) = build("exponential");
    assert!(matches!(two.load_state_dict(&single.state_dict()), Err(ScheduleError::GroupCount { .. })));
}

#[test]
fn onecycle_without_momentum_is_refused_and_sets_its_group_entries() {
    let mut plain = Groups(vec![(0.1, None), (0.037, None)]);
    let config = SchedulerConfig::OneCycleLr(OneCycleConfig::new(0.5, 10, MomentumKey::Momentum));
    assert!(matches!(LrScheduler::new(&mut plain, &config), Err(ScheduleError::NoMomentum)));
    let (g, sched) = build("onecycle_sgd");
    let entries = sched.param_group_entries();
    let keys: Vec<&str> = entries[1].iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"]);
    assert_eq!(entries[1][1].1, 0.2);
    assert_eq!(g.0[0].1, Some(0.95), "OneCycleLR's constructor sets momentum to max_momentum (then steps)");
}

mod spec {
    use super::*;
    use proptest::prelude::*;

    fn decay() -> impl Strategy<Value = Decay> {
        let gamma = (1e-6f64..10.0).prop_filter("positive", |g| *g > 0.0);
        prop_oneof![
            Just(Decay::Constant),
            (0.0f64..1.0).prop_map(|eta_min| Decay::Cosine { eta_min }),
            (1i64..10_000, gamma.clone()).prop_map(|(step_size, gamma)| Decay::Step { step_size, gamma }),
            (proptest::collection::btree_set(1i64..100_000, 1..6), gamma.clone())
                .prop_map(|(m, gamma)| Decay::MultiStep { milestones: m.into_iter().collect(), gamma }),
            gamma.clone().prop_map(|gamma| Decay::Exponential { gamma }),
            gamma.prop_map(|max_lr| Decay::OneCycle { max_lr }),
        ]
    }

    proptest! {
        #[test]
        fn a_decay_prints_to_what_parses_back_to_it(d in decay()) {
            let text = d.to_string();
            prop_assert_eq!(text.parse::<Decay>().unwrap(), d.clone());
            prop_assert_eq!(serde_json::from_str::<Decay>(&serde_json::to_string(&d).unwrap()).unwrap(), d);
        }

        #[test]
        fn any_string_parses_or_errs_without_panicking(text in "[a-z]{0,12}(:[-0-9.,e]{0,8}){0,3}") {
            if let Ok(d) = text.parse::<Decay>() {
                prop_assert_eq!(d.to_string().parse::<Decay>().unwrap(), d);
            }
        }

        /// A warm-up of w epochs then a cosine: the warm-up ends exactly at the base learning
        /// rate at step w, the lr never exceeds it, and the run ends at (nearly) eta_min.
        #[test]
        fn warmup_then_cosine_spans_the_run(epochs in 2i64..300, w in 0i64..50, eta in 0.0f64..0.01) {
            prop_assume!(w < epochs);
            let spec = ScheduleSpec::new(Decay::Cosine { eta_min: eta }, Some(Warmup::new(WarmupLength::Epochs(w))), StepUnit::Epoch).unwrap();
            let mut g = groups();
            let mut sched = spec.build(&mut g, epochs, 1, MomentumKey::Momentum).unwrap().unwrap();
            for step in 1..=epochs {
                sched.step(&mut g).unwrap();
                for (lr, base) in sched.last_lr().iter().zip(LRS) {
                    prop_assert!(lr.is_finite() && *lr <= base * (1.0 + 1e-12), "step {}: {} > {}", step, lr, base);
                    if step == w {
                        prop_assert!((lr - base).abs() <= 1e-15, "end of warm-up {}: {}", w, lr);
                    }
                    if step == epochs {
                        prop_assert!((lr - eta.min(base)).abs() <= 1e-12, "end of run: {} vs eta_min {}", lr, eta);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let cases = [
            ("", "unknown schedule"),
            ("cosin", "unknown schedule"),
            ("constant:1", "1 arguments, expected 0"),
            ("step", "0 arguments, expected 1 to 2"),
            ("step:0", "not a positive integer"),
            ("step:30:0", "GAMMA must be > 0"),
            ("step:30:x", "not a number"),
            ("step:30:0.1:2", "1 to 2"),
            ("multistep:30,20", "increasing"),
            ("multistep:30,,60", "not a positive integer"),
            ("exponential", "0 arguments, expected 1"),
            ("exponential:inf", "not a number"),
            ("onecycle:-1", "MAX_LR must be > 0"),
            ("cosine:-0.1", "ETA_MIN must be >= 0"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<Decay>().unwrap_err().to_string();
            assert!(err.contains(expected), "`{text}`: {err}");
        }
        let cosine = Decay::Cosine { eta_min: 0.0 };
        let onecycle = Decay::OneCycle { max_lr: 0.1 };
        let warm = |l| Some(Warmup::new(l));
        assert!(ScheduleSpec::new(onecycle, warm(WarmupLength::Epochs(2)), StepUnit::Batch).is_err());
        assert!(ScheduleSpec::new(cosine.clone(), warm(WarmupLength::Steps(100)), StepUnit::Epoch).is_err());
        let bad_factor = Some(Warmup { length: WarmupLength::Epochs(2), start_factor: 0.0 });
        assert!(ScheduleSpec::new(cosine.clone(), bad_factor, StepUnit::Epoch).is_err());
        let too_long = ScheduleSpec::new(cosine.clone(), warm(WarmupLength::Epochs(10)), StepUnit::Epoch).unwrap();
        let err = too_long.build(&mut groups(), 10, 5, MomentumKey::Momentum).unwrap_err().to_string();
        assert!(err.contains("shorter than the run"), "{err}");
        // A constant learning rate without warm-up is no schedule at all; with one, a LinearLR.
        let constant = ScheduleSpec::new(Decay::Constant, None, StepUnit::Epoch).unwrap();
        assert!(constant.build(&mut groups(), 10, 5, MomentumKey::Momentum).unwrap().is_none());
        let warm_constant = ScheduleSpec::new(Decay::Constant, warm(WarmupLength::Steps(5)), StepUnit::Batch).unwrap();
        let sched = warm_constant.build(&mut groups(), 2, 5, MomentumKey::Momentum).unwrap().unwrap();
        assert!(sched.state_dict().get("start_factor").is_some());
    }
}

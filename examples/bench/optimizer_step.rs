//! `--only-optimizer-step`: seconds per optimizer step on AlexNet's parameters (58.3M floats),
//! for SGD with momentum (the recipe's), Adam on PyTorch's single-tensor path (its CPU default)
//! and Adam on the fused kernels (PyTorch's fastest CPU Adam, `fused=True`).
//! `scripts/bench_optimizer.py` measures PyTorch's `torch.optim` the same way.

use std::time::Instant;

use anyhow::Result;
use tch::{Device, Kind, Tensor};
use tch_alexnet::train::optim::{self, Adam, AdamConfig, NamedParams, Optimizer, ParamGroup, Sgd, SgdConfig};

/// AlexNet's parameters in `parameters()` order, each with a random gradient.
fn parameters_with_gradients(device: Device) -> Result<NamedParams> {
    tch::manual_seed(1);
    let (vs, _net) = tch_alexnet::train::build_model(device, 10, false)?;
    let params = optim::ordered_parameters(&vs, &tch_alexnet::model::parameter_names())?;
    for (_, p) in &params {
        let mut p = p.shallow_clone();
        let grad = Tensor::randn(p.size(), (Kind::Float, device)) * 1e-3;
        tch_alexnet::ffi::set_grad(&mut p, &grad)?;
    }
    // `vs` may go: the tensors stay alive through the handles.
    Ok(params)
}

/// Median seconds of `reps` steps after one untimed step (which creates the state).
fn seconds_per_step(opt: &mut dyn Optimizer, reps: usize, device: Device) -> Result<(f64, Vec<f64>)> {
    opt.step()?;
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        super::sync(device);
        let t = Instant::now();
        opt.step()?;
        super::sync(device);
        runs.push(t.elapsed().as_secs_f64());
    }
    Ok((super::median(runs.clone()), runs))
}

/// Builds an optimizer over the given parameters.
type MakeOptimizer = dyn Fn(NamedParams) -> Result<Box<dyn Optimizer>>;

/// The report's fields: `optimizer_step_seconds_{sgd,adam,adam_fused}` and their runs.
pub fn measure(device: Device, reps: usize) -> Result<serde_json::Value> {
    let mut report = serde_json::Map::new();
    let sgd = SgdConfig { lr: 0.005, momentum: 0.9, weight_decay: 0.005, ..Default::default() };
    let adam = AdamConfig { lr: 1e-3, ..Default::default() };
    let fused = AdamConfig { fused: Some(true), ..adam };
    let cases: [(&str, Box<MakeOptimizer>); 3] = [
        ("sgd", Box::new(move |p| Ok(Box::new(Sgd::new(vec![ParamGroup::new(p, sgd)])?)))),
        ("adam", Box::new(move |p| Ok(Box::new(Adam::new(vec![ParamGroup::new(p, adam)])?)))),
        ("adam_fused", Box::new(move |p| Ok(Box::new(Adam::new(vec![ParamGroup::new(p, fused)])?)))),
    ];
    for (name, make) in cases {
        let mut opt = make(parameters_with_gradients(device)?)?;
        let (secs, runs) = seconds_per_step(opt.as_mut(), reps, device)?;
        eprintln!("optimizer step, {name}: {secs:.3} s");
        report.insert(format!("optimizer_step_seconds_{name}"), secs.into());
        report.insert(format!("optimizer_step_{name}_runs"), runs.into());
    }
    Ok(report.into())
}

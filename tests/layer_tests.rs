//! The layers of `model::layers` against their torch.nn counterparts: from the same seed the
//! same initial tensors under the same names, the same forward values on PyTorch's input, and
//! BatchNorm's statistics and counter after train-mode forwards; and PyTorch's refusals.
//!
//! PyTorch's side is `resnet_reference.py layers` (tests/fixtures), whose LAYER_CASES list the
//! same cases under the same names as [`build`] here. AlexNet's layers draw in their own order,
//! which its golden runs depend on: checked here too.
//!
//! Every test here that draws from libtorch's generator does so under `common::with_seed`, as
//! some compare the draws of a seed bit for bit.

mod common;

use std::collections::BTreeMap;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use tch_alexnet::model;
use tch_alexnet::model::layers::{
    conv2d_with, kaiming_uniform_bound, linear_with, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d,
    Conv2dConfig, MaxPool2d,
};

/// The seed of the first case; case `i` is built after `manual_seed(SEED + i)` on both sides.
const SEED: i64 = 3;
/// The forward values agree within this (measured: 0 for every case; the bound is then the floor
/// of four float32 ulps of the values compared, see `common::tolerance`).
const FORWARD: f64 = 0.0;

/// The cases of LAYER_CASES in resnet_reference.py, in its order.
const CASES: [&str; 16] = [
    "conv_rect_groups",
    "conv_no_bias",
    "conv_depthwise",
    "linear_no_bias",
    "linear",
    "max_pool_pad_ceil",
    "max_pool_dilation",
    "avg_pool_default",
    "avg_pool_pad_ceil_exclude",
    "avg_pool_pad_include",
    "avg_pool_divisor",
    "adaptive_avg_pool",
    "adaptive_avg_pool_square",
    "batch_norm_1d",
    "batch_norm_1d_seq",
    "batch_norm_2d",
];

/// The layer of `case`, built under `p` as the PyTorch case builds it.
fn build(case: &str, p: &nn::Path) -> Box<dyn ModuleT> {
    let conv = |c_in, c_out, config| Box::new(conv2d_with(p, c_in, c_out, config).unwrap());
    match case {
        "conv_rect_groups" => {
            conv(4, 6, Conv2dConfig::new((3, 2)).stride((2, 1)).padding([1, 0]).dilation((1, 2)).groups(2))
        }
        "conv_no_bias" => conv(3, 5, Conv2dConfig::new(3).padding(1).bias(false)),
        "conv_depthwise" => conv(4, 8, Conv2dConfig::new(3).stride(2).groups(4)),
        "linear_no_bias" => Box::new(linear_with(p, 12, 5, false)),
        "linear" => Box::new(linear_with(p, 12, 5, true)),
        "max_pool_pad_ceil" => Box::new(MaxPool2d::new(3).stride(2).padding(1).ceil_mode(true)),
        "max_pool_dilation" => Box::new(MaxPool2d::new((3, 2)).stride((1, 2)).dilation((2, 1))),
        "avg_pool_default" => Box::new(AvgPool2d::new(2)),
        "avg_pool_pad_ceil_exclude" => {
            Box::new(AvgPool2d::new(3).stride(2).padding(1).ceil_mode(true).count_include_pad(false))
        }
        "avg_pool_pad_include" => Box::new(AvgPool2d::new((3, 2)).stride((2, 1)).padding((1, 1))),
        "avg_pool_divisor" => Box::new(AvgPool2d::new(2).divisor_override(Some(3))),
        "adaptive_avg_pool" => Box::new(AdaptiveAvgPool2d::new((2, 3))),
        "adaptive_avg_pool_square" => Box::new(AdaptiveAvgPool2d::new(1)),
        "batch_norm_1d" => Box::new(BatchNorm1d::new(p, 5)),
        "batch_norm_1d_seq" => Box::new(BatchNorm1d::new(p, 4)),
        "batch_norm_2d" => Box::new(BatchNorm2d::new(p, 3)),
        _ => unreachable!("no case {case}"),
    }
}

/// The entries `CASE.PART.NAME` of the reference file, by NAME.
fn part(reference: &BTreeMap<String, Tensor>, case: &str, part: &str) -> BTreeMap<String, Tensor> {
    let prefix = format!("{case}.{part}.");
    reference.iter().filter_map(|(k, t)| Some((k.strip_prefix(&prefix)?.to_string(), t.shallow_clone()))).collect()
}

fn single(name: &str, t: Tensor) -> BTreeMap<String, Tensor> {
    BTreeMap::from([(name.to_string(), t)])
}

#[test]
fn layers_match_torch_nn() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    common::run_fixture(&python, "resnet_reference.py", &["layers", &SEED.to_string(), dir.path().to_str().unwrap()]);
    let reference = common::tensors(&dir.path().join("layers.safetensors"));

    for (index, case) in CASES.iter().enumerate() {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = common::with_seed(SEED + index as i64, || build(case, &vs.root()));
        // The same names, shapes, dtypes and, drawn in PyTorch's order, the same numbers.
        let init: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let torch_init = part(&reference, case, "init");
        assert_eq!(init.keys().collect::<Vec<_>>(), torch_init.keys().collect::<Vec<_>>(), "{case}: names");
        for (name, t) in &init {
            assert!(t.equal(&torch_init[name]), "{case}.{name}: not PyTorch's seeded init");
        }

        let xs = &reference[&format!("{case}.input")];
        let output = |name: &str| single("output", reference[&format!("{case}.{name}")].shallow_clone());
        if case.starts_with("batch_norm") {
            let (first, second) =
                tch::no_grad(|| (layer.forward_t(&(xs * 3.0 + 1.0), true), layer.forward_t(xs, true)));
            drop(first);
            common::assert_all_close(
                &format!("{case}: train output"),
                &single("output", second),
                &output("output"),
                FORWARD,
            );
            let eval = tch::no_grad(|| layer.forward_t(xs, false));
            common::assert_all_close(
                &format!("{case}: eval output"),
                &single("output", eval),
                &output("eval_output"),
                FORWARD,
            );
            let after: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
            common::assert_all_close(
                &format!("{case}: state after"),
                &after,
                &part(&reference, case, "after"),
                FORWARD,
            );
            assert_eq!(after["num_batches_tracked"].int64_value(&[]), 2, "{case}");
        } else {
            let ys = tch::no_grad(|| layer.forward_t(xs, false));
            common::assert_all_close(&format!("{case}: output"), &single("output", ys), &output("output"), FORWARD);
        }
    }
}

/// Without Python: the weight bound of a grouped, rectangular convolution is
/// 1/sqrt(c_in / groups × kh × kw), and the biasless one has no bias.
#[test]
fn grouped_rectangular_conv_init_uses_the_fan_in_per_group() {
    let vs = nn::VarStore::new(Device::Cpu);
    let config = Conv2dConfig::new((3, 2)).groups(4).bias(false);
    let conv = common::with_seed(0, || conv2d_with(vs.root() / "c", 8, 64, config).unwrap());
    assert_eq!(conv.ws.size(), vec![64, 2, 3, 2]);
    assert!(conv.bs.is_none() && vs.variables().len() == 1);
    let bound = 1.0 / 12f64.sqrt();
    assert!((kaiming_uniform_bound(12) - bound).abs() < 1e-15);
    let (lo, hi) = (conv.ws.min().double_value(&[]), conv.ws.max().double_value(&[]));
    assert!(lo >= -bound && hi <= bound && hi > 0.95 * bound && lo < -0.95 * bound, "[{lo}, {hi}] vs ±{bound}");
    let xs = common::with_seed(1, || Tensor::randn([1, 8, 5, 4], (Kind::Float, Device::Cpu)));
    assert_eq!(xs.apply(&conv).size(), vec![1, 64, 3, 3]);
}

/// What PyTorch (or libtorch, at the first forward) refuses is a typed error with the reason.
#[test]
fn invalid_settings_are_clear_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let err = conv2d_with(vs.root() / "layer1" / "0" / "conv1", 3, 4, Conv2dConfig::new(3).groups(2)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`layer1.0.conv1`") && msg.contains("divisible by groups"), "{msg}");
    assert!(conv2d_with(vs.root() / "a", 3, 4, Conv2dConfig::new(0)).is_err());
    assert!(conv2d_with(vs.root() / "b", 3, 4, Conv2dConfig::new(3).padding(-1)).is_err());
    assert!(vs.variables().is_empty(), "a refused conv created variables");

    assert!(MaxPool2d::new(3).padding(1).check().is_ok());
    let err = MaxPool2d::new(3).padding(2).dilation(2).check().unwrap_err();
    assert!(err.to_string().contains("half the kernel"), "{err}");
    assert!(MaxPool2d::new(2).stride(0).check().is_err());
    assert!(AvgPool2d::new(4).padding(2).check().is_ok());
    assert!(AvgPool2d::new(3).padding(2).check().is_err());
    assert!(AvgPool2d::new(2).divisor_override(Some(0)).check().is_err());
    assert!(AdaptiveAvgPool2d::new((1, -1)).check().is_err());
    // The checks refuse exactly what libtorch refuses.
    let xs = common::with_seed(2, || Tensor::randn([1, 1, 9, 9], (Kind::Float, Device::Cpu)));
    for pool in [MaxPool2d::new(3).padding(2).dilation(2), MaxPool2d::new(3).padding(1).dilation(2)] {
        let libtorch = xs.f_max_pool2d(pool.kernel, pool.stride, pool.padding, pool.dilation, pool.ceil_mode);
        assert_eq!(pool.check().is_ok(), libtorch.is_ok(), "{pool:?}");
    }
    for pool in
        [AvgPool2d::new(3).padding(2), AvgPool2d::new(4).padding(2), AvgPool2d::new(2).divisor_override(Some(0))]
    {
        let libtorch = xs.f_avg_pool2d(
            pool.kernel,
            pool.stride,
            pool.padding,
            pool.ceil_mode,
            pool.count_include_pad,
            pool.divisor_override,
        );
        assert_eq!(pool.check().is_ok(), libtorch.is_ok(), "{pool:?}");
    }
}

/// AlexNet's init draws the numbers its bit-for-bit golden runs were made with, in the same
/// order: layer by layer, the bias, then the weight (tch's order, which the zoo's newer layers
/// do not follow), each `zeros(shape).uniform_(-b, b)` with b = 1/sqrt(fan_in). Any change of
/// order or kind of draw in AlexNet's construction fails here.
#[test]
fn alexnet_init_draws_are_unchanged() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = common::with_seed(17, || model::alexnet(&vs.root(), 10).unwrap());
    let s: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut layers: Vec<(String, i64, Vec<i64>)> = model::CONV_BLOCKS
        .iter()
        .map(|&(name, c_in, c_out, k, _, _)| (format!("{name}.0"), c_in * k * k, vec![c_out, c_in, k, k]))
        .collect();
    for (name, n_in, n_out) in [("fc1.1", 9216, 4096), ("fc2.1", 4096, 4096), ("fc3.0", 4096, 10)] {
        layers.push((name.to_string(), n_in, vec![n_out, n_in]));
    }
    let draws = common::with_seed(17, || {
        let draw = |shape: &[i64], bound: f64| Tensor::zeros(shape, (Kind::Float, Device::Cpu)).uniform_(-bound, bound);
        let mut draws = Vec::new();
        for (layer, fan_in, shape) in layers {
            let bound = 1.0 / (fan_in as f64).sqrt();
            draws.push((format!("{layer}.bias"), draw(&shape[..1], bound)));
            draws.push((format!("{layer}.weight"), draw(&shape, bound)));
        }
        draws
    });
    for (name, drawn) in draws {
        assert!(s[&name].equal(&drawn), "{name}: not the draws of the golden runs");
    }
}

//! ResNet-18 and ResNet-34 for CIFAR-10, layer for layer as kuangliu/pytorch-cifar defines them
//! (`ResNet(BasicBlock, [2, 2, 2, 2])` and `[3, 4, 6, 3]`).
//!
//! Ported from <https://github.com/kuangliu/pytorch-cifar>, `models/resnet.py` (commit 49b7aa9),
//! MIT License, Copyright (c) 2017 liukuang.
//!
//! Unlike torchvision's ImageNet ResNets, the stem is one 3×3 stride-1 convolution without max
//! pooling, the projection of a block is called `shortcut` (an `nn.Sequential` of a 1×1 conv and
//! a BatchNorm2d, so `layer2.0.shortcut.0.weight`, `layer2.0.shortcut.1.running_mean`), and the
//! head is `F.avg_pool2d(out, 4)` then `linear`. That fixed 4×4 pool must leave 1×1 features, so
//! the network takes only images whose sides are 25 to 56 pixels (layer4's side, ⌈side / 8⌉, is
//! then 4 to 7); it is made for CIFAR's 32×32. Names, shapes, init and parameter order are
//! PyTorch's (see [`crate::model::layers`]): after `tch::manual_seed(s)` it starts from the very
//! weights that `torch.manual_seed(s); ResNet18()` has (tests/resnet_tests.rs checks it).

use std::ops::RangeInclusive;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::layers::{AvgPool2d, BatchNorm2d, Conv2dConfig, LayerError, ParameterOrder};
use super::network::{ImageBatchSpec, Network};
use super::ModelError;

/// The side of the images the ResNets are made for: CIFAR's 32.
pub const INPUT_SIZE: i64 = 32;
/// The image sides that give layer4 a 4×4 to 7×7 map, which the head's 4×4 pool takes to 1×1.
pub const RESNET_INPUT_SIDES: RangeInclusive<i64> = 25..=56;
/// Blocks per stage of `ResNet18()` and `ResNet34()`.
pub const RESNET18_BLOCKS: [usize; 4] = [2, 2, 2, 2];
pub const RESNET34_BLOCKS: [usize; 4] = [3, 4, 6, 3];
/// `planes` and the first block's stride of `layer1` to `layer4`.
const STAGES: [(i64, i64); 4] = [(64, 1), (128, 2), (256, 2), (512, 2)];
/// Channels out of `conv1`, the stem.
const STEM_PLANES: i64 = 64;

/// kuangliu's `BasicBlock` (expansion 1): two 3×3 convolutions with BatchNorm, plus the input,
/// through a 1×1 projection when the block changes the shape.
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: BatchNorm2d,
    conv2: nn::Conv2D,
    bn2: BatchNorm2d,
    /// `None` is kuangliu's empty `nn.Sequential()`: the identity, no variables.
    shortcut: Option<(nn::Conv2D, BatchNorm2d)>,
}

impl BasicBlock {
    fn new(
        p: &nn::Path,
        order: &mut ParameterOrder,
        in_planes: i64,
        planes: i64,
        stride: i64,
    ) -> Result<Self, LayerError> {
        let conv3x3 = |stride| Conv2dConfig::new(3).stride(stride).padding(1).bias(false);
        let conv1 = order.conv2d(p / "conv1", in_planes, planes, conv3x3(stride))?;
        let bn1 = order.batch_norm2d(p / "bn1", planes);
        let conv2 = order.conv2d(p / "conv2", planes, planes, conv3x3(1))?;
        let bn2 = order.batch_norm2d(p / "bn2", planes);
        let shortcut = if stride != 1 || in_planes != planes {
            let projection = Conv2dConfig::new(1).stride(stride).bias(false);
            let conv = order.conv2d(p / "shortcut" / "0", in_planes, planes, projection)?;
            Some((conv, order.batch_norm2d(p / "shortcut" / "1", planes)))
        } else {
            None
        };
        Ok(Self { conv1, bn1, conv2, bn2, shortcut })
    }
}

impl ModuleT for BasicBlock {
    /// `[N, in_planes, H, W] → [N, planes, H / stride, W / stride]` (rounded up).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let out = out.apply(&self.conv2).apply_t(&self.bn2, train);
        let shortcut = match &self.shortcut {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        // PyTorch's `out += self.shortcut(x)`: the same sum, out of place for autograd's sake.
        (out + shortcut).relu()
    }
}

/// kuangliu's `ResNet` with `BasicBlock`s. Build it with [`resnet18`] or [`resnet34`]; run it
/// with `forward_t(xs, train)`, where `train` is PyTorch's `model.train()`.
#[derive(Debug)]
pub struct ResNet {
    input: ImageBatchSpec,
    conv1: nn::Conv2D,
    bn1: BatchNorm2d,
    /// `layer1` to `layer4`, each a list of blocks (an `nn.Sequential`).
    stages: Vec<Vec<BasicBlock>>,
    pool: AvgPool2d,
    linear: nn::Linear,
    num_classes: i64,
    parameter_names: Vec<String>,
}

/// `ResNet18()` of kuangliu/pytorch-cifar (with `num_classes`) under `p`: 11,173,962 trainable
/// parameters for 10 classes.
pub fn resnet18(p: &nn::Path, num_classes: i64) -> Result<ResNet, ModelError> {
    resnet(p, "ResNet-18", RESNET18_BLOCKS, num_classes)
}

/// `ResNet34()` of kuangliu/pytorch-cifar (with `num_classes`) under `p`: 21,282,122 trainable
/// parameters for 10 classes.
pub fn resnet34(p: &nn::Path, num_classes: i64) -> Result<ResNet, ModelError> {
    resnet(p, "ResNet-34", RESNET34_BLOCKS, num_classes)
}

/// `ResNet(BasicBlock, blocks, num_classes)`, building the layers in `__init__`'s order.
fn resnet(p: &nn::Path, network: &'static str, blocks: [usize; 4], num_classes: i64) -> Result<ResNet, ModelError> {
    if num_classes < 1 {
        return Err(ModelError::NumClasses(num_classes));
    }
    let mut order = ParameterOrder::default();
    let stem = Conv2dConfig::new(3).padding(1).bias(false);
    let conv1 = order.conv2d(p / "conv1", 3, STEM_PLANES, stem)?;
    let bn1 = order.batch_norm2d(p / "bn1", STEM_PLANES);
    let mut in_planes = STEM_PLANES;
    let mut stages = Vec::with_capacity(STAGES.len());
    for (i, (&(planes, first_stride), &count)) in STAGES.iter().zip(&blocks).enumerate() {
        // `_make_layer`: strides [stride, 1, 1, ...].
        let stage_path = p / format!("layer{}", i + 1);
        let mut stage = Vec::with_capacity(count);
        for j in 0..count {
            let stride = if j == 0 { first_stride } else { 1 };
            stage.push(BasicBlock::new(&(&stage_path / j), &mut order, in_planes, planes, stride)?);
            in_planes = planes;
        }
        stages.push(stage);
    }
    let linear = order.linear(p / "linear", in_planes, num_classes, true);
    let input = ImageBatchSpec {
        network,
        channels: 3,
        sides: RESNET_INPUT_SIDES,
        hint: " (it is made for 32×32 CIFAR images; its head's fixed 4×4 average pool must leave 1×1 features)",
    };
    let parameter_names = order.into_names();
    Ok(ResNet { input, conv1, bn1, stages, pool: AvgPool2d::new(4), linear, num_classes, parameter_names })
}

impl ResNet {
    pub fn num_classes(&self) -> i64 {
        self.num_classes
    }
}

impl ModuleT for ResNet {
    /// Shapes for 32×32 input.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu(); // [N, 64, 32, 32]
                                                                             // layer1 [N, 64, 32, 32], layer2 [N, 128, 16, 16], layer3 [N, 256, 8, 8],
                                                                             // layer4 [N, 512, 4, 4]
        for block in self.stages.iter().flatten() {
            xs = xs.apply_t(block, train);
        }
        let xs = xs.apply(&self.pool); //   [N, 512, 1, 1]
        let xs = xs.flatten(1, -1); //      [N, 512]
        xs.apply(&self.linear) //           [N, num_classes]
    }
}

impl Network for ResNet {
    fn parameter_names(&self) -> Vec<String> {
        self.parameter_names.clone()
    }

    fn check_input(&self, xs: &Tensor) -> Result<(), ModelError> {
        self.input.check(xs)
    }
}

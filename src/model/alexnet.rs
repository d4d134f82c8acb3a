//! The recipe's AlexNet with BatchNorm, layer for layer as the PyTorch tutorial defines it.
//!
//! Parameter names are the PyTorch module's `state_dict()` keys (`conv_block1.0.weight`,
//! `conv_block1.1.running_mean`, `fc1.1.weight`, …) and every layer is initialised with
//! PyTorch's default rule, not tch's, so a run starts from the same distribution as the
//! Python original and weights move both ways (see [`crate::formats::safetensors`]).

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::layers::{self, BatchNorm2d, Dropout};
use super::network::{ImageBatchSpec, Network};
use super::ModelError;

/// Side of the square input images. The AlexNet paper says 224, which gives a fractional
/// size after the first convolution ((224 - 11) / 4 + 1 = 54.25); 227 gives 55.
pub const INPUT_SIZE: i64 = 227;
/// Number of CIFAR-10 classes, the default head size.
pub const CIFAR10_CLASSES: i64 = 10;
/// Features entering the classifier head: 256 channels × 6 × 6.
pub const FLAT_FEATURES: i64 = 256 * 6 * 6;

/// The batches AlexNet takes.
const ALEXNET_INPUT: ImageBatchSpec = ImageBatchSpec {
    network: "AlexNet",
    channels: 3,
    sides: INPUT_SIZE..=INPUT_SIZE,
    hint: " (resize images to 227×227; 224, the size printed in the paper, does not fit the first convolution)",
};

/// `(name, in_channels, out_channels, kernel, stride, padding)` of the five conv blocks.
pub const CONV_BLOCKS: [(&str, i64, i64, i64, i64, i64); 5] = [
    ("conv_block1", 3, 96, 11, 4, 0),
    ("conv_block2", 96, 256, 5, 1, 2),
    ("conv_block3", 256, 384, 3, 1, 1),
    ("conv_block4", 384, 384, 3, 1, 1),
    ("conv_block5", 384, 256, 3, 1, 1),
];

fn conv_block(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> nn::SequentialT {
    nn::seq_t()
        .add(layers::conv2d(&p / "0", c_in, c_out, kernel, stride, padding))
        .add(BatchNorm2d::new(&p / "1", c_out))
        .add_fn(|xs| xs.relu())
}

/// The recipe's AlexNet. Build it with [`alexnet`]; run it with `forward_t(xs, train)`, where
/// `train` turns on dropout and batch statistics, as `model.train()` does in PyTorch.
#[derive(Debug)]
pub struct AlexNet {
    conv_blocks: Vec<nn::SequentialT>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
    num_classes: i64,
    dropout: Dropout,
}

/// Builds the recipe's AlexNet under `p`, with PyTorch's parameter names and init.
pub fn alexnet(p: &nn::Path, num_classes: i64) -> Result<AlexNet, ModelError> {
    if num_classes < 1 {
        return Err(ModelError::NumClasses(num_classes));
    }
    let conv_blocks = CONV_BLOCKS
        .iter()
        .map(|&(name, c_in, c_out, k, s, pad)| conv_block(p / name, c_in, c_out, k, s, pad))
        .collect();
    // Index 0 of fc1/fc2 is the parameter-free Dropout, so the Linear sits at index 1,
    // and at index 0 in fc3, exactly as in the PyTorch `nn.Sequential`s.
    Ok(AlexNet {
        conv_blocks,
        fc1: layers::linear(p / "fc1" / "1", FLAT_FEATURES, 4096),
        fc2: layers::linear(p / "fc2" / "1", 4096, 4096),
        fc3: layers::linear(p / "fc3" / "0", 4096, num_classes),
        num_classes,
        dropout: Dropout { p: 0.5 },
    })
}

impl AlexNet {
    pub fn num_classes(&self) -> i64 {
        self.num_classes
    }

    /// Replaces the recipe's dropout probability (0.5) in fc1 and fc2; 0 turns dropout off,
    /// which the parity tests use to compare training steps with PyTorch.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = Dropout { p };
        self
    }

    /// Checks that `xs` is a float batch of `[N, 3, 227, 227]` images.
    pub fn check_input(xs: &Tensor) -> Result<(), ModelError> {
        ALEXNET_INPUT.check(xs)
    }

    /// `forward_t` with the input checked first: a clear error instead of a libtorch
    /// shape error deep inside the first Linear.
    pub fn try_forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        Self::check_input(xs)?;
        Ok(self.forward_t(xs, train))
    }

    /// Output of every stage, in the order of the recipe's table: conv1, pool, conv2, pool,
    /// conv3, conv4, conv5, pool, flatten, fc1, fc2, fc3 (the same code path as `forward_t`).
    pub fn stages_t(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let mut stages = Vec::with_capacity(12);
        let _logits = self.run(xs, train, |t| stages.push(t.shallow_clone()));
        stages
    }

    /// The forward pass; `record` sees the output of every stage of the recipe's table.
    fn run(&self, xs: &Tensor, train: bool, mut record: impl FnMut(&Tensor)) -> Tensor {
        let [b1, b2, b3, b4, b5] = &self.conv_blocks[..] else { unreachable!("AlexNet has five conv blocks") };
        let mut stage = |xs: Tensor| {
            record(&xs);
            xs
        };
        let xs = stage(xs.apply_t(b1, train)); //  [N, 96, 55, 55]
        let xs = stage(max_pool(&xs)); //          [N, 96, 27, 27]
        let xs = stage(xs.apply_t(b2, train)); //  [N, 256, 27, 27]
        let xs = stage(max_pool(&xs)); //          [N, 256, 13, 13]
        let xs = stage(xs.apply_t(b3, train)); //  [N, 384, 13, 13]
        let xs = stage(xs.apply_t(b4, train)); //  [N, 384, 13, 13]
        let xs = stage(xs.apply_t(b5, train)); //  [N, 256, 13, 13]
        let xs = stage(max_pool(&xs)); //          [N, 256, 6, 6]
        let xs = stage(xs.flatten(1, -1)); //      [N, 9216]
        let xs = stage(self.fc1_t(&xs, train)); // [N, 4096]
        let xs = stage(self.fc2_t(&xs, train)); // [N, 4096]
        stage(xs.apply(&self.fc3)) //              [N, num_classes]
    }

    fn fc1_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply_t(&self.dropout, train).apply(&self.fc1).relu()
    }

    fn fc2_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply_t(&self.dropout, train).apply(&self.fc2).relu()
    }
}

/// The one MaxPool2d(kernel 3, stride 2) shared by blocks 1, 2 and 5.
fn max_pool(xs: &Tensor) -> Tensor {
    layers::max_pool2d(xs, 3, 2)
}

impl ModuleT for AlexNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.run(xs, train, |_| {})
    }
}

/// The trainable parameters' names in `model.parameters()` order, which PyTorch's optimizer
/// state is indexed by: the five conv blocks (conv weight, bias, BatchNorm weight, bias), then
/// fc1, fc2, fc3 (weight, bias).
pub fn parameter_names() -> Vec<String> {
    let conv = CONV_BLOCKS
        .iter()
        .flat_map(|(block, ..)| ["0.weight", "0.bias", "1.weight", "1.bias"].map(|leaf| format!("{block}.{leaf}")));
    let fc =
        ["fc1.1", "fc2.1", "fc3.0"].into_iter().flat_map(|fc| ["weight", "bias"].map(|leaf| format!("{fc}.{leaf}")));
    conv.chain(fc).collect()
}

impl Network for AlexNet {
    fn parameter_names(&self) -> Vec<String> {
        parameter_names()
    }

    fn check_input(&self, xs: &Tensor) -> Result<(), ModelError> {
        AlexNet::check_input(xs)
    }
}

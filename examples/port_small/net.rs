//! The ported network: a LeNet-like classifier for 32×32 images, built from
//! `tch_alexnet::model::layers` so that its init and `state_dict()` names are PyTorch's.
//!
//! The PyTorch original (also in tests/fixtures/pytorch_interop.py):
//!
//! ```python
//! class SmallNet(nn.Module):
//!     def __init__(self, num_classes=10):
//!         super().__init__()
//!         self.features = nn.Sequential(
//!             nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2, 2),
//!             nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2, 2),
//!         )
//!         self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 8 * 8, num_classes))
//!
//!     def forward(self, x):
//!         return self.classifier(self.features(x))
//! ```
//!
//! Each `nn.Sequential` index becomes a path segment; the layers without parameters (ReLU,
//! MaxPool2d, Flatten, Dropout) take an index but create no variable, so the Rust struct skips
//! their numbers: `features.0.weight`, `features.1.running_mean`, `features.4.weight`,
//! `classifier.2.bias`, … exactly as `model.state_dict()` names them.

use tch::nn::{self, ModuleT};
use tch::Tensor;
use tch_alexnet::model::layers::{self, BatchNorm2d, Dropout};
use tch_alexnet::model::{ImageBatchSpec, ModelError, Network};

/// Side of the square input images.
pub const INPUT_SIZE: i64 = 32;

/// The network; build it with [`SmallNet::new`], run it with `forward_t(xs, train)`
/// (`train = true` is PyTorch's `model.train()`, `false` its `model.eval()`).
#[derive(Debug)]
pub struct SmallNet {
    conv1: nn::Conv2D,
    bn1: BatchNorm2d,
    conv2: nn::Conv2D,
    bn2: BatchNorm2d,
    dropout: Dropout,
    fc: nn::Linear,
}

impl SmallNet {
    /// Creates the variables under `p` with PyTorch's names and default init.
    pub fn new(p: &nn::Path, num_classes: i64) -> Self {
        let features = p / "features";
        let classifier = p / "classifier";
        SmallNet {
            conv1: layers::conv2d(&features / "0", 3, 8, 3, 1, 1),
            bn1: BatchNorm2d::new(&features / "1", 8),
            // features.2 is the ReLU, features.3 the MaxPool2d: no variables.
            conv2: layers::conv2d(&features / "4", 8, 16, 3, 1, 1),
            bn2: BatchNorm2d::new(&features / "5", 16),
            // classifier.0 is the Flatten, classifier.1 the Dropout.
            dropout: Dropout { p: 0.5 },
            fc: layers::linear(&classifier / "2", 16 * 8 * 8, num_classes),
        }
    }
}

impl ModuleT for SmallNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu(); // [N, 8, 32, 32]
        let xs = layers::max_pool2d(&xs, 2, 2); //                          [N, 8, 16, 16]
        let xs = xs.apply(&self.conv2).apply_t(&self.bn2, train).relu(); // [N, 16, 16, 16]
        let xs = layers::max_pool2d(&xs, 2, 2); //                          [N, 16, 8, 8]
        let xs = xs.flatten(1, -1); //                                      [N, 1024]
        xs.apply_t(&self.dropout, train).apply(&self.fc) //                 [N, num_classes]
    }
}

/// What the trainer needs beyond `ModuleT`: the parameters in `model.parameters()` order
/// (registration order: features.0, features.1, features.4, features.5, classifier.2; weight
/// before bias), which PyTorch's optimizer state is indexed by, and the input check.
impl Network for SmallNet {
    fn parameter_names(&self) -> Vec<String> {
        ["features.0", "features.1", "features.4", "features.5", "classifier.2"]
            .into_iter()
            .flat_map(|layer| [format!("{layer}.weight"), format!("{layer}.bias")])
            .collect()
    }

    fn check_input(&self, xs: &Tensor) -> Result<(), ModelError> {
        let spec = ImageBatchSpec { network: "SmallNet", channels: 3, sides: INPUT_SIZE..=INPUT_SIZE, hint: "" };
        spec.check(xs)
    }
}

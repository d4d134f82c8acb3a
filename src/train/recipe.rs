//! Named recipes: the settings of a known experiment, as `train --recipe NAME` starts from them
//! (each flag still overrides one). A recipe sets the network, data set, transforms, optimizer,
//! schedule, batch sizes and epochs; `config.json` records the recipe and the resolved values.
//!
//! - `alexnet-tutorial`: the tutorial this crate ports (the default; its runs are bit-identical
//!   to those of the crate before recipes existed).
//! - `resnet18-cifar`: kuangliu/pytorch-cifar's `main.py` with `net = ResNet18()` (MIT): SGD
//!   lr 0.1, momentum 0.9, weight decay 5e-4, `CosineAnnealingLR(T_max = epochs)` stepped per
//!   epoch, batch 128 (test batch 100), 200 epochs, `RandomCrop(32, padding=4)` and
//!   `RandomHorizontalFlip()`, all 50,000 training images, the test set evaluated after every
//!   epoch and the best checkpoint chosen by it (which selects on the test set, as the original
//!   does; `--valid-size` restores a held-out split).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::data::TransformSpec;
use crate::model::ModelKind;
use crate::train::config::{OptimizerKind, TrainConfig};
use crate::train::optim::lr_scheduler::{Decay, ScheduleSpec, StepUnit};

/// The known experiments `train --recipe` starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// The PyTorch tutorial: AlexNet-BN on CIFAR-10 upscaled to 227×227, SGD, 20 epochs.
    #[default]
    AlexnetTutorial,
    /// kuangliu/pytorch-cifar's ResNet-18 on 32×32 CIFAR-10: SGD with a cosine schedule, 200 epochs.
    Resnet18Cifar,
}

impl Recipe {
    /// The name `--recipe` and `config.json` give it.
    pub fn name(&self) -> &'static str {
        match self {
            Recipe::AlexnetTutorial => "alexnet-tutorial",
            Recipe::Resnet18Cifar => "resnet18-cifar",
        }
    }

    /// Every setting of the recipe (the machine-specific ones at their defaults).
    pub fn config(&self) -> TrainConfig {
        let tutorial = TrainConfig { recipe: self.name().into(), ..TrainConfig::default() };
        match self {
            Recipe::AlexnetTutorial => tutorial,
            Recipe::Resnet18Cifar => TrainConfig {
                model: "resnet18".into(),
                dataset: "cifar10".into(),
                epochs: 200,
                batch_size: 128,
                eval_batch_size: Some(100),
                test_every_epoch: true,
                optimizer: OptimizerKind::Sgd,
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 5e-4,
                schedule: ScheduleSpec { decay: Decay::Cosine { eta_min: 0.0 }, warmup: None, unit: StepUnit::Epoch },
                valid_size: 0.0,
                transforms: TransformSpec::resnet18_cifar(),
                ..tutorial
            },
        }
    }
}

impl Recipe {
    /// The recipe a zoo network was made for: its transforms are the ones to evaluate and
    /// predict with.
    pub fn for_model(kind: ModelKind) -> Recipe {
        match kind {
            ModelKind::Alexnet => Recipe::AlexnetTutorial,
            ModelKind::Resnet18 | ModelKind::Resnet34 => Recipe::Resnet18Cifar,
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

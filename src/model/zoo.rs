//! The networks a run can choose by name (`--model alexnet`, `"model": "resnet18"`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::nn;

use super::{alexnet, resnet, ModelError, Network};

/// The networks of the zoo. The default is the recipe's AlexNet, so that settings written
/// before there was a choice still read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The recipe's AlexNet with BatchNorm, on 227×227 images.
    #[default]
    Alexnet,
    /// ResNet-18 of kuangliu/pytorch-cifar, on 32×32 images.
    Resnet18,
    /// ResNet-34 of kuangliu/pytorch-cifar, on 32×32 images.
    Resnet34,
}

impl ModelKind {
    /// Every kind, in the order of [`ModelKind::NAMES`].
    pub const ALL: [ModelKind; 3] = [ModelKind::Alexnet, ModelKind::Resnet18, ModelKind::Resnet34];
    /// The names of the kinds, as serde, clap, `FromStr` and `Display` spell them.
    pub const NAMES: [&'static str; 3] = ["alexnet", "resnet18", "resnet34"];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Alexnet => "alexnet",
            ModelKind::Resnet18 => "resnet18",
            ModelKind::Resnet34 => "resnet34",
        }
    }

    /// The state-dict key of the classifier's weight, whose rows are the classes.
    pub fn classifier_weight(&self) -> &'static str {
        match self {
            ModelKind::Alexnet => "fc3.0.weight",
            ModelKind::Resnet18 | ModelKind::Resnet34 => "linear.weight",
        }
    }

    /// Builds the network under `p` with PyTorch's names and init, for `num_classes` classes.
    pub fn build(&self, p: &nn::Path, num_classes: i64) -> Result<Box<dyn Network>, ModelError> {
        Ok(match self {
            ModelKind::Alexnet => Box::new(alexnet::alexnet(p, num_classes)?),
            ModelKind::Resnet18 => Box::new(resnet::resnet18(p, num_classes)?),
            ModelKind::Resnet34 => Box::new(resnet::resnet34(p, num_classes)?),
        })
    }

    /// The side of the square images the network is made for, which the data pipeline resizes
    /// to: 227 for AlexNet, 32 for the ResNets (which also run on 25 to 56, see
    /// [`resnet::RESNET_INPUT_SIDES`], but were designed and are trained on CIFAR's 32×32).
    /// `None` would be a network that takes any size; none of the zoo does.
    pub fn input_size(&self) -> Option<i64> {
        match self {
            ModelKind::Alexnet => Some(alexnet::INPUT_SIZE),
            ModelKind::Resnet18 | ModelKind::Resnet34 => Some(resnet::INPUT_SIZE),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;

    /// The lowercase names of [`ModelKind::NAMES`], in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL.into_iter().find(|kind| kind.name() == lower).ok_or_else(|| ModelError::UnknownModel(s.to_string()))
    }
}

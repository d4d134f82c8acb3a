//! The seam between a network and the trainer: [`Network`], and the zoo's names ([`ModelKind`]).

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{alexnet, AlexNet, ModelError};

/// A network the trainer can train: a `ModuleT` with PyTorch's names, and its parameters'
/// names in PyTorch's `model.parameters()` order (tch's `VarStore` keeps no order; PyTorch's
/// optimizer state is indexed by it).
pub trait Network: ModuleT {
    fn parameter_names(&self) -> Vec<String>;
    /// Checks the input batch's shape and kind, with a clear error.
    fn check_input(&self, xs: &Tensor) -> Result<(), ModelError>;
}

impl Network for AlexNet {
    fn parameter_names(&self) -> Vec<String> {
        super::parameter_names()
    }

    fn check_input(&self, xs: &Tensor) -> Result<(), ModelError> {
        AlexNet::check_input(xs)
    }
}

/// The networks of the zoo, by the name `--model` and `config.json` give them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    #[default]
    Alexnet,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("every model has a name");
        f.write_str(value.get_name())
    }
}

impl ModelKind {
    /// The state-dict key of the classifier's weight, whose rows are the classes.
    pub fn classifier_weight(&self) -> &'static str {
        match self {
            ModelKind::Alexnet => "fc3.0.weight",
        }
    }

    pub fn build(&self, p: &nn::Path, num_classes: i64) -> Result<Box<dyn Network>, ModelError> {
        match self {
            ModelKind::Alexnet => Ok(Box::new(alexnet(p, num_classes)?)),
        }
    }
}

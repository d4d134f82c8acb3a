//! The networks, built from PyTorch-compatible layers so that their `state_dict()` names and
//! initialisation are the Python originals', and weights move both ways (see
//! [`crate::formats::safetensors`]).
//!
//! - [`mod@alexnet`]: the recipe's AlexNet with BatchNorm (re-exported here, as before the zoo).
//! - [`resnet`]: ResNet-18 and ResNet-34 of kuangliu/pytorch-cifar.
//! - [`layers`]: the `torch.nn` layers they are made of, for porting other networks.
//! - [`Network`]: what the trainer needs of a network beyond `ModuleT`: its parameters' names
//!   in PyTorch's `model.parameters()` order, and an input check.
//! - [`ModelKind`]: the networks by name, for settings and the command line.

pub mod alexnet;
mod error;
pub mod layers;
mod network;
pub mod resnet;
mod zoo;

pub use alexnet::{alexnet, parameter_names, AlexNet, CIFAR10_CLASSES, CONV_BLOCKS, FLAT_FEATURES, INPUT_SIZE};
pub use error::ModelError;
pub use network::{trainable_parameter_count, ImageBatchSpec, Network};
pub use resnet::{resnet18, resnet34, ResNet};
pub use zoo::ModelKind;

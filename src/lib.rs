//! AlexNet with BatchNorm on CIFAR-10 at 227×227, a Rust port on tch (libtorch) of a
//! well-known PyTorch tutorial: the same model (PyTorch parameter names and init, weights that
//! load both ways), the same recipe, and a faster, batched, on-device data pipeline.
//!
//! - [`model`]: the network.
//! - [`checkpoint`]: safetensors files with PyTorch `state_dict` keys.
//! - [`sgd`]: `torch.optim.SGD`'s update, with momentum buffers that can be saved.

pub mod checkpoint;
pub mod model;
pub mod sgd;

pub use model::{alexnet, AlexNet};

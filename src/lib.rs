//! AlexNet with BatchNorm on CIFAR-10 at 227×227, a Rust port on tch (libtorch) of a
//! well-known PyTorch tutorial: the same model (PyTorch parameter names and init, weights that
//! load both ways), the same recipe, and a faster, batched, on-device data pipeline.
//!
//! - [`model`]: the network.
//! - [`checkpoint`]: safetensors files with PyTorch `state_dict` keys, written atomically.
//! - [`sgd`]: `torch.optim.SGD`'s update, with momentum buffers that can be saved.
//! - [`cifar`], [`download`]: the data set on disk, checked, and fetched when missing.
//! - [`split`], [`batches`], [`transforms`]: the seeded split and the batched on-device pipeline.
//! - [`training`], [`evaluation`], [`plot`]: the recipe's loop, its metrics and what a run leaves.
//! - [`inference`]: loading a checkpoint for evaluation and prediction.

pub mod allocator;
pub mod batches;
pub mod checkpoint;
pub mod cifar;
pub mod cli;
pub mod device;
pub mod download;
pub mod evaluation;
pub mod ffi;
pub mod inference;
pub mod model;
pub mod plot;
pub mod progress;
pub mod resize;
pub mod sgd;
pub mod split;
pub mod synthetic;
pub mod training;
pub mod transforms;

pub use model::{alexnet, AlexNet};

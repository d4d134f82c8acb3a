//! AlexNet with BatchNorm on CIFAR-10 at 227×227, a Rust port on tch (libtorch) of a
//! well-known PyTorch tutorial: the same model (PyTorch parameter names and init, weights that
//! load both ways), the same recipe, and a faster, batched, on-device data pipeline.
//!
//! The modules follow a run from data to files:
//!
//! - [`data`]: CIFAR-10 on disk, the seeded split, the batched on-device pipeline.
//! - [`model`]: the network, and [`model::layers`], its PyTorch-compatible building blocks.
//! - [`train`]: the recipe's loop, its optimizer, metrics, run folder and resume state, and
//!   data-parallel training with DDP's semantics.
//! - [`formats`]: checkpoint files: safetensors with PyTorch `state_dict` keys, and PyTorch's
//!   own `torch.save` files and training checkpoints, read and written.
//! - [`inference`]: loading a checkpoint for evaluation and prediction.
//! - [`distributed`]: data-parallel training over several processes, on libtorch's c10d.
//! - [`cli`], [`device`], [`progress`], [`allocator`], [`ffi`]: what the programs share, and
//!   the few lines of C++ for what tch does not bind.
//! - [`versions`]: the tch and libtorch a binary was built with, and the libtorch it runs with.

pub mod allocator;
pub mod cli;
pub mod data;
pub mod device;
pub mod distributed;
pub mod ffi;
pub mod formats;
pub mod inference;
pub mod model;
pub mod progress;
pub mod train;
pub mod versions;

pub use model::{alexnet, AlexNet};

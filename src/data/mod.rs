//! Stage 1, the data: CIFAR-10 or CIFAR-100 on disk (checked, fetched when missing), the
//! seeded split, and the batched pipeline that crops, flips, normalises and resizes each batch
//! on the device.
//!
//! - [`dataset`]: a data set in memory, whatever its source ([`dataset::ImageDataset`]).
//! - [`dataset_kind`]: the data sets known by name, and [`load`], the one entry point.
//! - [`download`], [`cifar`], [`cifar100`]: the data sets' files, fetched and parsed.
//! - [`split`]: the train/validation split and each epoch's order, flips and crop offsets.
//! - [`transform_spec`], [`transforms`]: what a run's transforms are, and their batched run.
//! - [`batches`], [`resize`], [`crop`] (and `cpu_batch`, what they share): batches as the model
//!   sees them, and the fused CPU kernels that make them.
//! - [`synthetic`]: made-up data sets in CIFAR-10's and CIFAR-100's formats, for tests.

pub mod batches;
pub mod cifar;
pub mod cifar100;
mod cpu_batch;
pub mod crop;
pub mod dataset;
pub mod dataset_kind;
pub mod download;
pub mod resize;
pub mod split;
pub mod synthetic;
pub mod transform_spec;
pub mod transforms;

pub use dataset::{FileFingerprint, ImageDataset};
pub use dataset_kind::{load, DatasetKind};
pub use transform_spec::TransformSpec;

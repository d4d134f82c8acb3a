//! TensorBoard event files, written as the run goes, so that `tensorboard --logdir runs`
//! shows a run live beside others, as PyTorch users watch theirs (`SummaryWriter`, Lightning's
//! default logger).
//!
//! - [`event_file`]: the file itself, TFRecord framing with masked CRC-32C checksums, named as
//!   `SummaryWriter` names its files.
//! - [`proto`]: the `Event`/`Summary` protobuf messages and the events a run writes.
//! - [`run_writer`]: the trainer's steps, epochs and test results as scalars and text, with
//!   Lightning's tags (`train/loss`, `val/acc`, `lr-SGD`, ...).
//!
//! The trainer writes rank 0's steps right after `steps.jsonl` receives them (about once a
//! second; the values are the same, read once from the device), each epoch's metrics before
//! its checkpoint, and the test results at the end; see [`run_writer`] for the tags.

pub mod event_file;
pub mod proto;
pub mod run_writer;

pub use run_writer::{Opening, RunWriter};

//! Stage 3, training: the recipe's loop and everything a run leaves behind.
//!
//! A run folder holds `config.json`, `metrics.jsonl`, `steps.jsonl`, `last.safetensors` (+
//! `last.optim.safetensors`, the optimizer's state, the schedule's and the loop's position),
//! `best.safetensors`, `curves.svg`, TensorBoard's `events.out.tfevents.*` (one per session)
//! and, at the end, `summary.json`.
//!
//! - [`config`]: the settings (defaults = the recipe) and `config.json`.
//! - [`setup`]: device, data and model before the first step.
//! - [`trainer`]: the loop itself, top to bottom.
//! - [`data_parallel`]: one rank of a data-parallel job, with PyTorch DDP's semantics.
//! - [`optimizer_setup`]: the optimizer and schedule the settings ask for.
//! - [`steps_log`]: `steps.jsonl`, each step's learning rate and loss.
//! - [`tensorboard`]: the run's TensorBoard event files, written as it goes.
//! - [`optim`]: PyTorch's optimizers (SGD with Nesterov and dampening, Adam, AdamW) with
//!   parameter groups and their state both ways, gradient clipping, label smoothing, and the
//!   learning-rate schedules.
//! - [`evaluation`], [`metrics`], [`plot`]: what the loop measures and draws.
//! - [`run_dir`], [`resume`]: the run folder's files, its lock, and the crash-consistent
//!   checkpoint pair that `--resume` continues from.
//!
//! Dependencies point one way: `trainer` uses the others; none of them uses `trainer`.

pub mod command;
pub mod config;
pub mod data_parallel;
pub mod evaluation;
pub mod experiment;
pub mod metrics;
pub mod optim;
pub mod optimizer_setup;
pub mod plot;
pub mod pytorch_run;
pub mod recipe;
pub mod resume;
pub mod run_dir;
pub mod setup;
pub mod step;
pub mod steps_log;
pub mod tensorboard;
pub mod trainer;

pub use config::{Precision, TrainConfig};
pub use experiment::{Experiment, Zoo};
pub use metrics::{EpochMetrics, Summary};
pub use run_dir::{read_config, RunDir, BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT, METRICS_FILE};
pub use setup::{build_model, build_network, setup, Setup};
pub use step::{train_step, train_step_with, StepSettings};
pub use trainer::{train, train_rank, Outcome};

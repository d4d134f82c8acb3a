//! A run's settings (`TrainConfig`, defaults = the recipe) and what `config.json` records
//! beside them: the resolved device, versions, and the fingerprint of the data files.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::split::SplitRng;
use crate::data::FileFingerprint;
use crate::data::TransformSpec;
use crate::model;
use crate::train::optim::lr_scheduler::ScheduleSpec;
use crate::versions::{self, LoadedLibtorch};

/// The optimizer of a run: PyTorch's `SGD` (the recipe), `Adam` or `AdamW`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Sgd,
    Adam,
    Adamw,
}

/// Every setting of a run; defaults are the recipe's. Saved as `config.json`. Settings added
/// after the first release have serde defaults (the recipe's), so that older run folders
/// still resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The named recipe whose defaults the run started from (`train --recipe`); runs made
    /// before recipes existed followed the tutorial's.
    #[serde(default = "default_recipe")]
    pub recipe: String,
    /// The network: a zoo name (`alexnet`, `resnet18`) or a user's own network's.
    #[serde(default = "default_model")]
    pub model: String,
    /// The data set: `cifar10`, `cifar100`, or a user's own.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    pub epochs: usize,
    pub batch_size: usize,
    /// Images per evaluation batch (`None`: `batch_size`).
    #[serde(default)]
    pub eval_batch_size: Option<usize>,
    /// Also evaluate the test set after every epoch (as pytorch-cifar's `main.py` does); with
    /// no validation split, the best checkpoint is then the one of the best test accuracy.
    #[serde(default)]
    pub test_every_epoch: bool,
    /// Runs saved before this setting existed used SGD.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// The optimizer's learning rate (with a schedule: its starting point, as in PyTorch).
    pub lr: f64,
    /// SGD's momentum (unused by Adam and AdamW, whose first beta plays that part).
    pub momentum: f64,
    /// Weight decay: SGD's and Adam's L2 term, AdamW's decoupled decay.
    pub weight_decay: f64,
    /// SGD's dampening and Nesterov momentum.
    #[serde(default)]
    pub dampening: f64,
    #[serde(default)]
    pub nesterov: bool,
    /// Adam's and AdamW's settings.
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default)]
    pub amsgrad: bool,
    /// Biases and BatchNorm parameters (every 1-dim parameter) in a second parameter group
    /// without weight decay; the recipe decays all parameters.
    #[serde(default)]
    pub no_decay_on_norm_and_bias: bool,
    /// The learning-rate schedule (the recipe: constant).
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Clip the gradients' total 2-norm to this before each update (`clip_grad_norm_`).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// `F.cross_entropy(..., label_smoothing)`; 0 is the recipe's plain cross entropy.
    #[serde(default)]
    pub label_smoothing: f64,
    pub valid_size: f64,
    /// The seed of the run's randomness: initial weights, epoch orders and flips, dropout.
    pub seed: u64,
    /// The seed of the train/validation split; `None`: `seed` (runs saved before it existed,
    /// and the default).
    #[serde(default)]
    pub split_seed: Option<u64>,
    /// The generator of the train/validation split: NumPy's (the tutorial's images) or ChaCha8.
    /// Runs saved before this setting existed used ChaCha8.
    #[serde(default = "split_rng_of_older_runs")]
    pub split_rng: SplitRng,
    /// Turns the training augmentation of `transforms` (flips, crops) on or off.
    pub augment: bool,
    /// The images' transforms: normalisation, resize, and the training augmentation (runs made
    /// before it was recorded used the tutorial's).
    #[serde(default = "TransformSpec::alexnet_tutorial")]
    pub transforms: TransformSpec,
    pub num_classes: i64,
    pub data_dir: PathBuf,
    pub download: bool,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads; `None` keeps libtorch's default (one per physical core).
    pub threads: Option<usize>,
    pub limit_train: Option<usize>,
    pub limit_val: Option<usize>,
    pub limit_test: Option<usize>,
    /// `--amp`: bf16 autocast, on the CPU or CUDA. What a run computes in is [`Self::precision`].
    pub amp: bool,
    /// The precision the run computes in, recorded in config.json. Absent in runs made before it
    /// was recorded, where `amp` meant bf16 on CUDA and nothing on the CPU: reading such a
    /// folder ([`crate::train::run_dir::read_run_info`]) fills it in as the run ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// `channels-last` (NHWC strides for images and conv weights; measured faster on both the
    /// CPU and CUDA) or `contiguous` (NCHW, as PyTorch's default).
    pub memory_format: String,
    /// Also save `last.safetensors` every this many steps (0: only at the end of each epoch).
    pub save_every: usize,
}

/// What a run's forward passes compute in. The weights, gradients, optimizer state and
/// checkpoints are fp32 either way, as under PyTorch's autocast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp32 throughout.
    Fp32,
    /// bf16 autocast: convolutions and linear layers in bf16, the loss in fp32.
    Bf16,
}

fn split_rng_of_older_runs() -> SplitRng {
    SplitRng::Chacha
}

fn default_recipe() -> String {
    "alexnet-tutorial".into()
}

fn default_model() -> String {
    "alexnet".into()
}

fn default_dataset() -> String {
    "cifar10".into()
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}

fn default_eps() -> f64 {
    1e-8
}

/// The recipe's SGD settings: `SGD(lr=0.005, momentum=0.9, weight_decay=0.005)`.
pub const RECIPE_LR: f64 = 0.005;
pub const RECIPE_MOMENTUM: f64 = 0.9;
pub const RECIPE_WEIGHT_DECAY: f64 = 0.005;

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            recipe: default_recipe(),
            model: default_model(),
            dataset: default_dataset(),
            epochs: 20,
            batch_size: 64,
            eval_batch_size: None,
            test_every_epoch: false,
            optimizer: OptimizerKind::Sgd,
            lr: RECIPE_LR,
            momentum: RECIPE_MOMENTUM,
            weight_decay: RECIPE_WEIGHT_DECAY,
            dampening: 0.0,
            nesterov: false,
            betas: default_betas(),
            eps: default_eps(),
            amsgrad: false,
            no_decay_on_norm_and_bias: false,
            schedule: ScheduleSpec::default(),
            clip_grad_norm: None,
            label_smoothing: 0.0,
            valid_size: 0.1,
            seed: 1,
            split_seed: None,
            split_rng: SplitRng::Numpy,
            augment: true,
            transforms: TransformSpec::alexnet_tutorial(),
            num_classes: model::CIFAR10_CLASSES,
            data_dir: PathBuf::from("data"),
            download: true,
            device: "auto".into(),
            threads: None,
            limit_train: None,
            limit_val: None,
            limit_test: None,
            amp: false,
            precision: None,
            memory_format: "channels-last".into(),
            save_every: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every value before anything is loaded or written.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if self.eval_batch_size == Some(0) {
            bail!("eval batch size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("learning rate must be a positive number, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("weight decay must be a non-negative number, got {}", self.weight_decay);
        }
        self.validate_optimizer()?;
        self.validate_schedule()?;
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            bail!("label smoothing must be in [0, 1], got {}", self.label_smoothing);
        }
        if let Some(max) = self.clip_grad_norm.filter(|m| !(m.is_finite() && *m > 0.0)) {
            bail!("the gradient clipping norm must be a positive number, got {max}");
        }
        if !(0.0..1.0).contains(&self.valid_size) {
            bail!("valid size must be in [0, 1), got {}", self.valid_size);
        }
        if self.split_rng == SplitRng::Numpy && u32::try_from(self.split_seed()).is_err() {
            bail!("the NumPy split takes seeds up to 4294967295 (np.random.seed), got {}", self.split_seed());
        }
        if self.threads == Some(0) {
            bail!("threads must be at least 1 (leave --threads out for libtorch's default)");
        }
        for (name, limit) in
            [("limit-train", self.limit_train), ("limit-val", self.limit_val), ("limit-test", self.limit_test)]
        {
            if limit == Some(0) {
                bail!("--{name} must be at least 1");
            }
        }
        if !["channels-last", "contiguous"].contains(&self.memory_format.as_str()) {
            bail!("memory format must be channels-last or contiguous, got `{}`", self.memory_format);
        }
        crate::device::parse_device(&self.device)?;
        Ok(())
    }

    /// What the run computes in: the recorded precision, else bf16 exactly when `--amp` is on.
    pub fn precision(&self) -> Precision {
        self.precision.unwrap_or(if self.amp { Precision::Bf16 } else { Precision::Fp32 })
    }

    /// Whether forward passes run in bf16 autocast.
    pub fn bf16(&self) -> bool {
        self.precision() == Precision::Bf16
    }

    /// Images per evaluation batch.
    pub fn eval_batch_size(&self) -> usize {
        self.eval_batch_size.unwrap_or(self.batch_size)
    }

    /// The seed of the train/validation split.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed)
    }

    /// The optimizer's own settings, checked as PyTorch's constructors check them (and what
    /// belongs to the other optimizer refused).
    fn validate_optimizer(&self) -> Result<()> {
        match self.optimizer {
            OptimizerKind::Sgd => {
                if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
                    bail!("momentum must be in [0, 1), got {}", self.momentum);
                }
                if !(self.dampening.is_finite() && (0.0..=1.0).contains(&self.dampening)) {
                    bail!("dampening must be in [0, 1], got {}", self.dampening);
                }
                if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
                    bail!("Nesterov momentum needs a momentum above 0 and no dampening");
                }
                if self.amsgrad {
                    bail!("amsgrad is an Adam/AdamW setting; SGD has none");
                }
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let (b1, b2) = self.betas;
                if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
                    bail!("betas must both be in [0, 1), got {b1},{b2}");
                }
                if !(self.eps.is_finite() && self.eps >= 0.0) {
                    bail!("eps must be a non-negative number, got {}", self.eps);
                }
                if self.nesterov || self.dampening != 0.0 {
                    bail!("Nesterov momentum and dampening are SGD settings; Adam and AdamW have none");
                }
            }
        }
        Ok(())
    }

    /// The schedule's parts fit together (as when parsed from the command line).
    fn validate_schedule(&self) -> Result<()> {
        let s = &self.schedule;
        ScheduleSpec::new(s.decay.clone(), s.warmup, s.unit)?;
        Ok(())
    }
}

/// `config.json`: the settings plus what produced the run. Read back by `--resume`, which
/// takes the settings from it and compares the data fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    #[serde(flatten)]
    pub config: TrainConfig,
    pub resolved_device: String,
    pub libtorch_threads: i32,
    pub crate_version: String,
    /// The tch crate the program was built with (its `Cargo.lock` entry).
    pub tch_version: String,
    /// The libtorch the program was compiled against (its headers' version).
    pub libtorch_version: String,
    /// The libtorch the run loaded (path and, where the files beside it say, version): it may
    /// differ from the one compiled against (`LD_LIBRARY_PATH`). Absent in older runs.
    #[serde(default)]
    pub libtorch_loaded: Option<LoadedLibtorch>,
    pub cuda_available: bool,
    /// The normalisation's per-channel mean and std (also in `transforms`).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// The data files the run was trained on (absent in runs made before it was recorded).
    #[serde(default)]
    pub data_fingerprint: Vec<FileFingerprint>,
    /// Processes of the data-parallel job (1: a single process); `--resume` needs the same.
    #[serde(default = "one")]
    pub world_size: usize,
    /// Images per optimizer step over all processes: `batch_size × world_size`.
    #[serde(default)]
    pub global_batch_size: usize,
}

fn one() -> usize {
    1
}

impl RunInfo {
    pub fn new(config: &TrainConfig, device: Device, data_fingerprint: Vec<FileFingerprint>) -> Self {
        Self {
            config: TrainConfig { precision: Some(config.precision()), ..config.clone() },
            resolved_device: crate::device::device_name(device),
            libtorch_threads: tch::get_num_threads(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            tch_version: versions::tch_built_with().to_string(),
            libtorch_version: versions::libtorch_built_against().to_string(),
            libtorch_loaded: versions::loaded_libtorch(),
            cuda_available: tch::Cuda::is_available(),
            mean: config.transforms.mean.clone(),
            std: config.transforms.std.clone(),
            global_batch_size: config.batch_size,
            data_fingerprint,
            world_size: 1,
        }
    }

    /// The same, for a job of `world_size` processes (each with `batch_size` images a step).
    pub fn with_world_size(self, world_size: usize) -> Self {
        Self { world_size, global_batch_size: self.config.batch_size * world_size, ..self }
    }
}

//! A run's settings (`TrainConfig`, defaults = the recipe) and what `config.json` records
//! beside them: the resolved device, versions, and the fingerprint of the data files.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::cifar::FileFingerprint;
use crate::data::split::SplitRng;
use crate::data::transforms;
use crate::model;
use crate::train::sgd::SgdConfig;
use crate::versions::{self, LoadedLibtorch};

/// Every setting of a run; defaults are the recipe's. Saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub valid_size: f64,
    pub seed: u64,
    /// The generator of the train/validation split: NumPy's (the tutorial's images) or ChaCha8.
    /// Runs saved before this setting existed used ChaCha8.
    #[serde(default = "split_rng_of_older_runs")]
    pub split_rng: SplitRng,
    pub augment: bool,
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
    /// bf16 autocast on CUDA (no effect on the CPU).
    pub amp: bool,
    /// `channels-last` (NHWC strides for images and conv weights; measured faster on both the
    /// CPU and CUDA) or `contiguous` (NCHW, as PyTorch's default).
    pub memory_format: String,
    /// Also save `last.safetensors` every this many steps (0: only at the end of each epoch).
    pub save_every: usize,
}

fn split_rng_of_older_runs() -> SplitRng {
    SplitRng::Chacha
}

impl Default for TrainConfig {
    fn default() -> Self {
        let sgd = SgdConfig::default();
        Self {
            epochs: 20,
            batch_size: 64,
            lr: sgd.lr,
            momentum: sgd.momentum,
            weight_decay: sgd.weight_decay,
            valid_size: 0.1,
            seed: 1,
            split_rng: SplitRng::Numpy,
            augment: true,
            num_classes: model::CIFAR10_CLASSES,
            data_dir: PathBuf::from("data"),
            download: true,
            device: "auto".into(),
            threads: None,
            limit_train: None,
            limit_val: None,
            limit_test: None,
            amp: false,
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
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("learning rate must be a positive number, got {}", self.lr);
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            bail!("momentum must be in [0, 1), got {}", self.momentum);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("weight decay must be a non-negative number, got {}", self.weight_decay);
        }
        if !(0.0..1.0).contains(&self.valid_size) {
            bail!("valid size must be in [0, 1), got {}", self.valid_size);
        }
        if self.split_rng == SplitRng::Numpy && u32::try_from(self.seed).is_err() {
            bail!("the NumPy split takes seeds up to 4294967295 (np.random.seed), got {}", self.seed);
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
        if self.limit_train.is_none() && self.valid_size * 50_000.0 >= 49_999.0 {
            bail!("valid size {} leaves no training image", self.valid_size);
        }
        if !["channels-last", "contiguous"].contains(&self.memory_format.as_str()) {
            bail!("memory format must be channels-last or contiguous, got `{}`", self.memory_format);
        }
        crate::device::parse_device(&self.device)?;
        Ok(())
    }

    pub fn sgd(&self) -> SgdConfig {
        SgdConfig { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay }
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
    pub mean: [f64; 3],
    pub std: [f64; 3],
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
            config: config.clone(),
            resolved_device: crate::device::device_name(device),
            libtorch_threads: tch::get_num_threads(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            tch_version: versions::tch_built_with().to_string(),
            libtorch_version: versions::libtorch_built_against().to_string(),
            libtorch_loaded: versions::loaded_libtorch(),
            cuda_available: tch::Cuda::is_available(),
            mean: transforms::CIFAR_MEAN,
            std: transforms::CIFAR_STD,
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

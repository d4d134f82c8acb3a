//! What a run (or an evaluation) works with before its first step: the device, the data set
//! on it, the split and the images each phase uses, and the model.

use anyhow::{anyhow, bail, Result};
use tch::{nn, Device};

use crate::data::split::{self, Split};
use crate::data::transforms::{self, Preprocess};
use crate::data::{DatasetKind, ImageDataset};
use crate::model::{self, AlexNet, Network};
use crate::train::config::TrainConfig;
use crate::train::experiment::Experiment;

/// The device, data, split and model a run (or an evaluation) works with.
pub struct Setup {
    pub device: Device,
    pub data: ImageDataset,
    pub split: Split,
    pub preprocess: Preprocess,
    pub channels_last: bool,
}

/// Chooses the device, applies thread settings, and loads the experiment's data set onto the
/// device.
pub fn setup(config: &TrainConfig, experiment: &dyn Experiment, log: &mut dyn FnMut(&str)) -> Result<Setup> {
    let device = crate::device::parse_device(&config.device)?;
    if let Some(threads) = config.threads {
        tch::set_num_threads(threads as i32);
    }
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    if let Some(advice) = crate::device::cpu_bf16_advice(device, config.bf16(), crate::device::CpuBf16::detect()) {
        log(&advice);
    }
    let channels_last = config.memory_format == "channels-last";
    let data = experiment.load_data(config, log)?;
    check_dataset(config, &data)?;
    let data = data.to_device(device);
    log(&format!(
        "Data: {}, {} training and {} test images of {:?}, {} classes, on {}",
        data.name,
        data.train_len(),
        data.test_len(),
        data.image_shape(),
        data.num_classes,
        crate::device::device_name(device)
    ));
    let split = split::train_valid_split(data.train_len(), config.valid_size, config.split_seed(), config.split_rng)?;
    config.transforms.check_images(data.image_shape())?;
    let preprocess = Preprocess::new(&config.transforms, device, channels_last)?;
    Ok(Setup { device, data, split, preprocess, channels_last })
}

/// Refuses a data set the settings do not fit: labels beyond the network's classes, or a
/// validation share that leaves no training image.
fn check_dataset(config: &TrainConfig, data: &ImageDataset) -> Result<()> {
    if data.num_classes > config.num_classes {
        bail!(
            "{} has {} classes, but the network is built for {} (set num_classes to the data set's)",
            data.name,
            data.num_classes,
            config.num_classes
        );
    }
    let train = data.train_len();
    if config.limit_train.is_none() && train > 0 && (config.valid_size * train as f64).floor() as usize >= train {
        bail!(
            "valid size {} leaves none of the {train} training images of {} to train on",
            config.valid_size,
            data.name
        );
    }
    Ok(())
}

/// The data set `config.dataset` names ([`DatasetKind`]: `cifar10`, `cifar100`,
/// `cifar100-coarse`) from `config.data_dir`, downloaded there when missing and allowed, on the CPU.
pub fn load_builtin_dataset(config: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<ImageDataset> {
    use clap::ValueEnum;
    let kind = DatasetKind::from_str(&config.dataset, true).map_err(|_| {
        anyhow!("unknown data set `{}`: the built-in ones are cifar10, cifar100 and cifar100-coarse", config.dataset)
    })?;
    Ok(crate::data::load(kind, &config.data_dir, config.download, log)?)
}

/// The images each phase of a run uses: the split's, cut to the `--limit-*` flags.
pub struct Subsets {
    pub train: Vec<i64>,
    pub valid: Vec<i64>,
    pub test: Vec<i64>,
}

impl Subsets {
    /// Applies the limits of `config` to `setup`'s split and test set, and says what it chose
    /// (and which limits were larger than their split) through `log`.
    pub fn new(config: &TrainConfig, setup: &Setup, log: &mut dyn FnMut(&str)) -> Self {
        let test_len = setup.data.test_len();
        let subsets = Self {
            train: first_n(&setup.split.train, config.limit_train),
            valid: first_n(&setup.split.valid, config.limit_val),
            test: test_indices(test_len, config.limit_test),
        };
        for (name, limit, len) in [
            ("train", config.limit_train, setup.split.train.len()),
            ("val", config.limit_val, setup.split.valid.len()),
            ("test", config.limit_test, test_len),
        ] {
            if let Some(limit) = limit.filter(|&l| l > len) {
                log(&format!("note: --limit-{name} {limit} is larger than the split ({len} images); using all {len}"));
            }
        }
        log(&format!(
            "Split ({}, seed {}): {} train / {} validation images (using {} / {}), {test_len} test images (using {})",
            config.split_rng.name(),
            config.split_seed(),
            setup.split.train.len(),
            setup.split.valid.len(),
            subsets.train.len(),
            subsets.valid.len(),
            subsets.test.len()
        ));
        subsets
    }
}

/// How many of `len` items a `--limit-*` flag keeps: all without a limit, else at most `limit`.
fn limited(len: usize, limit: Option<usize>) -> usize {
    limit.map_or(len, |limit| limit.min(len))
}

fn first_n(indices: &[i64], limit: Option<usize>) -> Vec<i64> {
    indices[..limited(indices.len(), limit)].to_vec()
}

/// The test images a `--limit-test` selects from a test set of `test_len`: the first `limit`, or
/// all of them without a limit (a limit larger than the set takes all of it too).
pub fn test_indices(test_len: usize, limit: Option<usize>) -> Vec<i64> {
    (0..limited(test_len, limit) as i64).collect()
}

/// Converts the 4-D (conv) weights to channels-last strides.
pub fn model_to_channels_last(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 {
                var.set_data(&transforms::to_channels_last(&var));
            }
        }
    });
}

/// The recipe's AlexNet on `device`, with the variable store that owns its weights.
pub fn build_model(device: Device, num_classes: i64, channels_last: bool) -> Result<(nn::VarStore, AlexNet)> {
    let vs = nn::VarStore::new(device);
    let net = model::alexnet(&vs.root(), num_classes)?;
    if channels_last {
        model_to_channels_last(&vs);
    }
    Ok((vs, net))
}

/// The experiment's network for `config` on `device`, with the variable store that owns its
/// weights.
pub fn build_network(
    experiment: &dyn Experiment,
    config: &TrainConfig,
    device: Device,
    channels_last: bool,
) -> Result<(nn::VarStore, Box<dyn Network>)> {
    let vs = nn::VarStore::new(device);
    let net = experiment.build_network(config, &vs.root())?;
    if channels_last {
        model_to_channels_last(&vs);
    }
    Ok((vs, net))
}

/// Bytes of all the variables of `vs`: the size of one weights checkpoint.
pub fn weight_bytes(vs: &nn::VarStore) -> u64 {
    vs.variables().values().map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_takes_every_test_image() {
        assert_eq!(test_indices(10_000, None).len(), 10_000);
        assert_eq!(test_indices(3, None), vec![0, 1, 2]);
        assert!(test_indices(0, None).is_empty());
    }

    #[test]
    fn a_limit_takes_the_first_images_and_never_more_than_there_are() {
        assert_eq!(test_indices(10, Some(3)), vec![0, 1, 2]);
        assert_eq!(test_indices(3, Some(10)), vec![0, 1, 2]);
        assert_eq!(test_indices(3, Some(usize::MAX)), vec![0, 1, 2]);
        assert_eq!(first_n(&[7, 8, 9], None), vec![7, 8, 9]);
        assert_eq!(first_n(&[7, 8, 9], Some(2)), vec![7, 8]);
        assert_eq!(first_n(&[7, 8, 9], Some(usize::MAX)), vec![7, 8, 9]);
    }
}

//! What a user brings to the trainer: the [`Experiment`] seam, as a `LightningModule` and a
//! `LightningDataModule` are in PyTorch Lightning: the network and the data. Everything else (the
//! transforms, optimizer, schedule, epochs, batch size) is in the run's [`TrainConfig`], and
//! everything the trainer does with them (run folder, resume, checkpoints in both formats,
//! data-parallel training, evaluation, metrics) is the same for every experiment.
//!
//! [`Zoo`] is the experiment of the built-in networks and data sets, named by `config.model`
//! and `config.dataset` (what `train --recipe` and `--model` choose). A port of another
//! PyTorch script implements [`Experiment`] for its own network (see `examples/port_small`).

use anyhow::{bail, Result};
use tch::nn;

use crate::data::ImageDataset;
use crate::model::{ModelKind, Network};
use crate::train::config::TrainConfig;

/// A network and a data set for the trainer ([`crate::train::fit`]).
pub trait Experiment: Sync {
    /// The network `config` asks for, built under `p` with PyTorch's names and initialisation,
    /// for `config.num_classes` classes. Called once per model the run needs (the trained one,
    /// the best checkpoint's for the final test), after libtorch's generator is seeded.
    fn build_network(&self, config: &TrainConfig, p: &nn::Path) -> Result<Box<dyn Network>>;

    /// The data set, on the CPU: training images (split into training and validation by the
    /// trainer) and test images. `config.download` allows fetching it; under data-parallel
    /// training only the first process of each machine is asked first, the others after it.
    fn load_data(&self, config: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<ImageDataset>;
}

/// The built-in networks ([`ModelKind`]) and data sets, by the names `config.json` records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zoo;

impl Experiment for Zoo {
    fn build_network(&self, config: &TrainConfig, p: &nn::Path) -> Result<Box<dyn Network>> {
        let kind = parse_model(&config.model)?;
        Ok(kind.build(p, config.num_classes)?)
    }

    fn load_data(&self, config: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<ImageDataset> {
        crate::train::setup::load_builtin_dataset(config, log)
    }
}

/// The zoo's network called `name`.
pub fn parse_model(name: &str) -> Result<ModelKind> {
    use clap::ValueEnum;
    match ModelKind::from_str(name, true) {
        Ok(kind) => Ok(kind),
        Err(_) => {
            let known: Vec<String> = ModelKind::value_variants()
                .iter()
                .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
                .collect();
            bail!("unknown model `{name}`: the zoo has {} (a network of your own trains through your own program, see the README's porting section)", known.join(", "))
        }
    }
}

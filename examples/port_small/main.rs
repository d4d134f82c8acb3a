//! A PyTorch experiment of one's own, ported: SmallNet (net.rs) trained on CIFAR-10 with random
//! crops and flips, AdamW, a warm-up then a cosine schedule and label smoothing, through the
//! crate's trainer (`port_small train`); and PyTorch's weights run in the port (`port_small
//! run small.pth`). See `README.md` beside this file for the PyTorch script this reads like,
//! and the expected output.

mod net;
mod run_weights;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tch::nn;
use tch_alexnet::data::transforms::{CIFAR_MEAN, CIFAR_STD};
use tch_alexnet::data::{ImageDataset, TransformSpec};
use tch_alexnet::model::Network;
use tch_alexnet::train::command::{self, TrainArgs};
use tch_alexnet::train::config::OptimizerKind;
use tch_alexnet::train::optim::lr_scheduler::{Decay, ScheduleSpec, StepUnit, Warmup, WarmupLength};
use tch_alexnet::train::{Experiment, TrainConfig, Zoo};

use net::SmallNet;

tch_alexnet::use_jemalloc!();

/// The experiment's settings: what the PyTorch script writes at its top.
fn recipe() -> TrainConfig {
    TrainConfig {
        recipe: "port-small".into(),
        model: "smallnet".into(),
        // transform_train = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(),
        //                            ToTensor(), Normalize(mean, std)])
        transforms: TransformSpec {
            mean: CIFAR_MEAN.to_vec(),
            std: CIFAR_STD.to_vec(),
            resize: None,
            random_crop_padding: Some(4),
            flip: true,
        },
        // optimizer = AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
        optimizer: OptimizerKind::Adamw,
        lr: 3e-3,
        weight_decay: 0.05,
        betas: (0.9, 0.999),
        momentum: 0.0,
        // SequentialLR([LinearLR(start_factor=1/3, total_iters=1), CosineAnnealingLR(T_max=EPOCHS - 1)],
        //              milestones=[1]), stepped once per epoch
        schedule: ScheduleSpec {
            decay: Decay::Cosine { eta_min: 0.0 },
            warmup: Some(Warmup::new(WarmupLength::Epochs(1))),
            unit: StepUnit::Epoch,
        },
        // criterion = CrossEntropyLoss(label_smoothing=0.1)
        label_smoothing: 0.1,
        epochs: 15,
        batch_size: 128,
        ..TrainConfig::default()
    }
}

/// The network and the data: SmallNet (`net = SmallNet()`) on CIFAR-10.
struct SmallNetOnCifar10;

impl Experiment for SmallNetOnCifar10 {
    fn build_network(&self, config: &TrainConfig, p: &nn::Path) -> Result<Box<dyn Network>> {
        Ok(Box::new(SmallNet::new(p, config.num_classes)))
    }

    fn load_data(&self, config: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<ImageDataset> {
        Zoo.load_data(config, log) // torchvision.datasets.CIFAR10(root=args.data_dir, ...)
    }
}

/// SmallNet, a port of a small PyTorch CIFAR-10 experiment: train it, or run PyTorch's weights.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train SmallNet on CIFAR-10 as the PyTorch script does (every flag of `train`; the
    /// defaults are the script's).
    Train(Box<TrainArgs>),
    /// Run weights PyTorch saved (or a checkpoint of `port_small train`) and compare with
    /// PyTorch's logits.
    Run(run_weights::RunArgs),
}

fn main() -> ExitCode {
    let base = recipe();
    let cli = Cli::command().mut_subcommand("train", |train| command::with_defaults(train, &[("", &base)]));
    let matches = cli.get_matches();
    let run = || match Cli::from_arg_matches(&matches)?.command {
        Command::Train(args) => {
            let train_matches = matches.subcommand_matches("train").expect("the train subcommand");
            command::run(&SmallNetOnCifar10, &base, &args, train_matches)
        }
        Command::Run(args) => run_weights::run(&args),
    };
    tch_alexnet::cli::exit_code(run())
}

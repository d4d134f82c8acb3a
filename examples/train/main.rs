//! Trains a recipe: `cargo run --release --example train` (every default is the tutorial's
//! recipe; `--recipe resnet18-cifar` is kuangliu/pytorch-cifar's ResNet-18). See `README.md`
//! beside this file for the expected output.

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser};
use tch_alexnet::data::DatasetKind;
use tch_alexnet::model::ModelKind;
use tch_alexnet::train::command::{self, TrainArgs};
use tch_alexnet::train::recipe::Recipe;
use tch_alexnet::train::Zoo;

tch_alexnet::use_jemalloc!();

/// Train an image classifier on CIFAR as a known PyTorch experiment does: by default the
/// tutorial's AlexNet (with BatchNorm) on CIFAR-10 upscaled to 227×227.
///
/// Every default is the recipe's (--recipe). A run writes config.json, metrics.jsonl,
/// steps.jsonl, last.safetensors, best.safetensors, curves.svg and summary.json into --out.
/// Ctrl-C or SIGTERM stops after the current step with a consistent checkpoint (exit code 130
/// or 143); --resume continues from it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The experiment whose settings are the defaults: alexnet-tutorial (the PyTorch tutorial:
    /// AlexNet-BN, CIFAR-10 at 227×227, SGD, 20 epochs) or resnet18-cifar (kuangliu/pytorch-cifar:
    /// ResNet-18 at 32×32 with random crops, SGD + cosine, 200 epochs, best checkpoint by test
    /// accuracy). Every other flag overrides one of its settings.
    #[arg(long, value_enum, default_value = "alexnet-tutorial")]
    recipe: Recipe,
    /// The network [default: the recipe's].
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    /// The data set: cifar10, cifar100 (100 fine classes) or cifar100-coarse (20 superclasses);
    /// the network gets as many classes [default: cifar10].
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    #[command(flatten)]
    train: TrainArgs,
}

fn run(matches: &clap::ArgMatches) -> Result<ExitCode> {
    let args = Args::from_arg_matches(matches)?;
    let mut base = args.recipe.config();
    if let Some(model) = args.model {
        base.model = model.to_string();
    }
    if let Some(dataset) = args.dataset {
        base.dataset = dataset.to_string();
        base.num_classes = dataset.num_classes();
    }
    command::run(&Zoo, &base, &args.train, matches)
}

fn main() -> ExitCode {
    let recipes: Vec<(&str, tch_alexnet::train::TrainConfig)> =
        [Recipe::AlexnetTutorial, Recipe::Resnet18Cifar].iter().map(|r| (r.name(), r.config())).collect();
    let bases: Vec<(&str, &tch_alexnet::train::TrainConfig)> = recipes.iter().map(|(n, c)| (*n, c)).collect();
    let matches = command::with_defaults(Args::command(), &bases).get_matches();
    tch_alexnet::cli::exit_code(run(&matches))
}

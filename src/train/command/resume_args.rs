//! What `--resume` allows: a run folder continues with its saved settings (a few flags may
//! change), and a PyTorch training checkpoint starts a new folder with the file's optimizer.

use std::path::Path;

use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::train::config::TrainConfig;
use crate::train::resume;
use crate::train::run_dir::{self, RunDir, Start};

use super::args::TrainArgs;

/// Flags that may change when a run is resumed; every other one comes from its config.json.
const RESUMABLE_FLAGS: [&str; 10] = [
    "epochs",
    "device",
    "threads",
    "save_every",
    "data_dir",
    "no_download",
    "resume",
    "allow_data_change",
    "nproc_per_node",
    "dist_timeout",
];

fn given(matches: &ArgMatches, id: &str) -> bool {
    matches.try_get_raw(id).is_ok() && matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// `--resume RUN_DIR`: the run's saved settings with the few flags that may change.
pub fn resume_run_folder(args: &TrainArgs, matches: &ArgMatches, dir: &Path) -> Result<(TrainConfig, RunDir)> {
    // Only the training flags count: `matches.ids()` also holds the ids of clap's argument
    // groups (one per flattened struct, e.g. `DataArgs`, "given" when one of its flags is) and
    // the program's own flags, which are none of this check's business.
    let training_flags: Vec<String> = <TrainArgs as clap::Args>::augment_args(clap::Command::new("train"))
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .collect();
    let mut refused: Vec<String> = matches
        .ids()
        .map(|id| id.as_str().to_string())
        .filter(|id| training_flags.contains(id) && given(matches, id) && !RESUMABLE_FLAGS.contains(&id.as_str()))
        .collect();
    refused.sort();
    if !refused.is_empty() {
        bail!(
            "--resume continues a run with its saved settings; remove --{} (only --epochs, --device, --threads, --save-every, --data-dir and --no-download may change)",
            refused.join(", --").replace('_', "-")
        );
    }
    let mut config = run_dir::read_config(dir)?;
    if let Some(epochs) = args.epochs {
        config.epochs = epochs;
    }
    if given(matches, "device") {
        config.device = args.data.device.clone();
    }
    if given(matches, "data_dir") {
        config.data_dir = args.data.data_dir.clone();
    }
    config.download = config.download && !args.data.no_download;
    config.threads = args.threads.or(config.threads);
    config.save_every = args.save_every;
    let run = RunDir { allow_data_change: args.allow_data_change, ..RunDir::resume(dir) };
    Ok((config, run))
}

/// `--resume FILE`: a new run folder continuing a PyTorch training checkpoint, with the
/// file's optimizer (class and settings); a flag given with another value is refused rather
/// than overridden. A schedule is given with --schedule as for a new run; its state comes from
/// the file.
pub fn continue_pytorch_run(
    args: &TrainArgs,
    base: &TrainConfig,
    matches: &ArgMatches,
    file: &Path,
) -> Result<(TrainConfig, RunDir)> {
    let wanted = args.config(base)?;
    let config = resume::config_of_pytorch_checkpoint(file, &wanted)?;
    if given(matches, "optimizer") && wanted.optimizer != config.optimizer {
        bail!(
            "--optimizer {:?} contradicts the checkpoint {}, whose optimizer is {:?}; leave the flag out",
            wanted.optimizer,
            file.display(),
            config.optimizer
        );
    }
    for (flag, given_value, saved) in [
        ("lr", args.lr, config.lr),
        ("momentum", args.momentum, config.momentum),
        ("weight_decay", args.weight_decay, config.weight_decay),
    ] {
        if given(matches, flag) && given_value != Some(saved) {
            bail!(
                "--{} {} contradicts the checkpoint {}, whose optimizer has {saved}; leave the flag out to continue with the checkpoint's settings",
                flag.replace('_', "-"),
                given_value.unwrap_or_default(),
                file.display()
            );
        }
    }
    Ok((config, RunDir { start: Start::PytorchCheckpoint { path: file.to_path_buf() }, ..RunDir::new(args.out_dir()) }))
}

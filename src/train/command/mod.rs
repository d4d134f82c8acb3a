//! A training program's `main`, as a library: what `train` does with its flags, for any
//! [`Experiment`], so that a user's own port gets the same command line, resume rules,
//! data-parallel launcher and signal handling with a few lines (see `examples/port_small`).
//!
//! - [`args`]: the flags ([`TrainArgs`], flattened into the program's clap parser).
//! - [`help`]: `--help` showing the base settings' defaults.
//! - [`resume_args`]: what `--resume` allows.
//!
//! ```no_run
//! # use clap::{CommandFactory, FromArgMatches, Parser};
//! # use tch_alexnet::train::{command, recipe::Recipe, Zoo};
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     train: command::TrainArgs,
//! }
//! fn main() -> std::process::ExitCode {
//!     let base = Recipe::AlexnetTutorial.config();
//!     let matches = command::with_defaults(Cli::command(), &[("", &base)]).get_matches();
//!     let run = || {
//!         let cli = Cli::from_arg_matches(&matches)?;
//!         command::run(&Zoo, &base, &cli.train, &matches)
//!     };
//!     tch_alexnet::cli::exit_code(run())
//! }
//! ```

pub mod args;
pub mod help;
pub mod resume_args;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;

pub use args::TrainArgs;
pub use help::with_defaults;

use crate::distributed::{self, Backend};
use crate::train::config::TrainConfig;
use crate::train::data_parallel::DataParallel;
use crate::train::experiment::Experiment;
use crate::train::run_dir::{RunDir, Start};
use crate::train::trainer::{self, Outcome};

/// Trains `experiment` as the flags say, starting from `base` (a recipe's settings, or the
/// port's own): a new run, a resumed one, or a PyTorch run continued; in this process, as the
/// launcher of `--nproc-per-node` ranks, or as one rank of a torchrun job. Ctrl-C and SIGTERM
/// stop after the current step with a checkpoint (exit code 130 or 143).
pub fn run(
    experiment: &dyn Experiment,
    base: &TrainConfig,
    args: &TrainArgs,
    matches: &ArgMatches,
) -> Result<ExitCode> {
    let (config, run) = match &args.resume {
        Some(file) if file.is_file() => resume_args::continue_pytorch_run(args, base, matches, file)?,
        Some(dir) => resume_args::resume_run_folder(args, matches, dir)?,
        None => {
            let start = match &args.init_from {
                Some(path) => Start::Weights { path: path.clone(), key: args.key.clone() },
                None => Start::Fresh,
            };
            (args.config(base)?, RunDir { start, ..RunDir::new(args.out_dir()) })
        }
    };
    config.validate()?;
    if args.nproc_per_node == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    let rank = distributed::env_rank_info()?;
    if rank.is_none() && args.nproc_per_node > 1 {
        return launch_ranks(args, matches, &run);
    }
    let mut config = config;
    let mut dp = match &rank {
        Some(info) => join_job(&mut config, info, args)?,
        _ => DataParallel::single(),
    };
    let main = dp.is_main();

    let stop = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicI32::new(0));
    watch_signals(stop.clone(), signal.clone())?;
    let (orphan_stop, orphan_signal) = (stop.clone(), signal.clone());
    distributed::launcher::watch_launcher(move || {
        eprintln!("\nThe launcher is gone: stopping after the current step and saving a checkpoint");
        orphan_signal.store(signal_hook::consts::SIGTERM, Ordering::SeqCst);
        orphan_stop.store(true, Ordering::SeqCst);
    });

    if main {
        println!("Run folder: {}", run.path.display());
    }
    let mut log = |line: &str| {
        if main {
            println!("{line}")
        }
    };
    let outcome = trainer::train_rank(experiment, &config, &run, &mut dp, &stop, &mut log);
    let rank = dp.rank();
    let outcome = if main { outcome? } else { outcome.with_context(|| format!("rank {rank}"))? };
    match outcome {
        Outcome::Finished(_) => Ok(ExitCode::SUCCESS),
        Outcome::Interrupted { epoch, step } => {
            if main {
                println!(
                    "Interrupted at epoch {epoch}, step {step}; checkpoint saved. Continue with: --resume {}",
                    run.path.display()
                );
            }
            // The shell's convention: 128 + the signal's number (SIGINT 130, SIGTERM 143).
            Ok(ExitCode::from(128 + signal.load(Ordering::SeqCst).clamp(2, 127) as u8))
        }
    }
}

/// This process as one rank of a torchrun-style job: CUDA ranks take the GPU of their local
/// rank and talk over NCCL, CPU ranks over Gloo.
fn join_job(config: &mut TrainConfig, info: &distributed::RankInfo, args: &TrainArgs) -> Result<DataParallel> {
    let device = crate::device::parse_device(&config.device)?;
    let backend = if device.is_cuda() {
        config.device = format!("cuda:{}", info.local_rank);
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    let timeout = std::time::Duration::from_secs(args.dist_timeout.max(1));
    DataParallel::join(info, backend, timeout).with_context(|| format!("rank {} of {}", info.rank, info.world_size))
}

/// `--nproc-per-node N`: N ranks of this program on this machine, each told the same run
/// folder and (without --threads) an equal share of the cores.
fn launch_ranks(args: &TrainArgs, matches: &ArgMatches, run: &RunDir) -> Result<ExitCode> {
    let mut rank_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // A new run folder (not a resumed one): every rank must be told the same one.
    let new_folder = args.resume.as_ref().is_none_or(|r| r.is_file());
    if new_folder && matches.value_source("out") != Some(ValueSource::CommandLine) {
        rank_args.extend(["--out".into(), run.path.clone().into_os_string()]);
    }
    if matches.value_source("threads") != Some(ValueSource::CommandLine) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rank_args.extend(["--threads".into(), (cores / args.nproc_per_node).max(1).to_string().into()]);
    }
    let program = std::env::current_exe().context("cannot find this program to start its ranks")?;
    let code = distributed::launcher::launch_local(&program, &rank_args, args.nproc_per_node, &mut |line| {
        eprintln!("{line}")
    })?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Ctrl-C (SIGINT) and SIGTERM (what Slurm, Kubernetes and systemd send before they kill) both
/// ask the loop to stop after the current step and save; a second signal exits at once. The
/// signals are received on a thread of their own, where printing is safe.
fn watch_signals(stop: Arc<AtomicBool>, signal: Arc<AtomicI32>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        for number in signals.forever() {
            let name = if number == SIGTERM { "SIGTERM" } else { "Interrupt" };
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nSecond {name}: exiting now (the last saved checkpoint is intact)");
                // At once, without running exit handlers: libtorch's globals must not be torn
                // down under the main thread, which may be in the middle of a step.
                // SAFETY: `_exit` ends the process immediately; nothing is left to clean up.
                unsafe { libc::_exit(128 + number) };
            }
            signal.store(number, Ordering::SeqCst);
            eprintln!("\n{name}: stopping after the current step and saving a checkpoint (Ctrl-C again to quit now)");
        }
    });
    Ok(())
}

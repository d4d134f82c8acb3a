//! Trains the recipe: `cargo run --release --example train` (every default is the recipe's).
//! See `README.md` beside this file for the expected output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use tch_alexnet::cli::DataArgs;
use tch_alexnet::data::split::SplitRng;
use tch_alexnet::distributed::{self, Backend};
use tch_alexnet::train::data_parallel::DataParallel;
use tch_alexnet::train::resume;
use tch_alexnet::train::run_dir::Start;
use tch_alexnet::train::trainer as training_loop;
use tch_alexnet::train::{self as training, Outcome, RunDir, TrainConfig};

tch_alexnet::use_jemalloc!();

/// Train AlexNet (with BatchNorm) on CIFAR-10 upscaled to 227×227, as the PyTorch tutorial does.
///
/// Every default is the tutorial's recipe. A run writes config.json, metrics.jsonl,
/// last.safetensors, best.safetensors, curves.svg and summary.json into --out. Ctrl-C or SIGTERM
/// stops after the current step with a consistent checkpoint (exit code 130 or 143); --resume
/// continues from it.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Number of passes over the training split.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Images per training step (and per evaluation batch).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// SGD learning rate (constant, as in the recipe).
    #[arg(long, default_value_t = 0.005)]
    lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// L2 weight decay, applied to all parameters (biases and BatchNorm included, as in the recipe).
    #[arg(long, default_value_t = 0.005)]
    weight_decay: f64,
    /// Share of the 50,000 training images held out for validation, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    valid_size: f64,
    /// Seed of the split, the epoch orders and flips, dropout and the initial weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generator of the train/validation split: numpy (np.random.seed + np.random.shuffle, the
    /// tutorial's exact images) or chacha (ChaCha8). split.json in the run folder lists it.
    #[arg(long, value_enum, default_value = "numpy")]
    split_rng: SplitRng,
    /// Turn off the random horizontal flip of training images.
    #[arg(long)]
    no_augment: bool,
    #[command(flatten)]
    data: DataArgs,
    /// Output folder of the run [default: runs/<date>-<time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// libtorch CPU threads [default: libtorch's, one per physical core].
    #[arg(long)]
    threads: Option<usize>,
    /// Continue the run in this folder from its last checkpoint, with its saved settings
    /// (only --epochs, --device, --threads, --save-every, --data-dir and --no-download may be
    /// given with it). Or continue a PyTorch run: a torch.save file holding {'model':
    /// state_dict, 'optimizer': SGD state_dict, 'epoch': completed epochs}; that starts a new
    /// run folder (--out) at the next epoch, with lr, momentum and weight decay from the file.
    #[arg(long, value_name = "RUN_DIR|FILE")]
    resume: Option<PathBuf>,
    /// Start from these weights instead of a fresh init: a .safetensors or torch.save file
    /// (.pt, .pth, .bin; a bare state dict or one entry of a dict, see --key). Momentum starts
    /// at zero and training at epoch 1.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// With --init-from: the entry of the PyTorch file that holds the state dict (e.g. model);
    /// by default the one entry that is a state dict.
    #[arg(long, value_name = "NAME", requires = "init_from")]
    key: Option<String>,
    /// With --resume: continue even though the data files differ from those the run was
    /// trained on (config.json records their sizes and hashes).
    #[arg(long, requires = "resume")]
    allow_data_change: bool,
    /// Train on the first N images of the training split only (after the seeded split).
    #[arg(long, value_name = "N")]
    limit_train: Option<usize>,
    /// Validate on the first N images of the validation split only.
    #[arg(long, value_name = "N")]
    limit_val: Option<usize>,
    /// Test on the first N test images only.
    #[arg(long, value_name = "N")]
    limit_test: Option<usize>,
    /// bf16 mixed precision (autocast) on CUDA; ignored on the CPU.
    #[arg(long)]
    amp: bool,
    /// Memory layout of images and conv weights: channels-last (faster on CPU and CUDA) or
    /// contiguous (NCHW). Results agree to float rounding.
    #[arg(long, default_value = "channels-last")]
    memory_format: String,
    /// Also save last.safetensors every N steps (0: only at the end of each epoch).
    #[arg(long, default_value_t = 0, value_name = "N")]
    save_every: usize,
    /// Data-parallel training on this machine: start N processes (ranks) of this program, each
    /// with a full model, 1/N of every epoch and --batch-size images per step (as PyTorch's DDP
    /// under torchrun). Without --threads each gets an equal share of the cores. Under
    /// torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) each process is one rank.
    #[arg(long, default_value_t = 1, value_name = "N")]
    nproc_per_node: usize,
    /// Seconds a rank waits for the others (rendezvous and each collective) before it stops
    /// with an error naming the rank that did not answer.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    dist_timeout: u64,
}

impl Args {
    /// `--out`, or `runs/<date>-<time>`.
    fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()))
    }

    fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            valid_size: self.valid_size,
            seed: self.seed,
            split_rng: self.split_rng,
            augment: !self.no_augment,
            num_classes: tch_alexnet::model::CIFAR10_CLASSES,
            data_dir: self.data.data_dir.clone(),
            download: !self.data.no_download,
            device: self.data.device.clone(),
            threads: self.threads,
            limit_train: self.limit_train,
            limit_val: self.limit_val,
            limit_test: self.limit_test,
            amp: self.amp,
            memory_format: self.memory_format.clone(),
            save_every: self.save_every,
        }
    }
}

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

fn run() -> Result<ExitCode> {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches)?;
    let (config, run) = match &args.resume {
        Some(file) if file.is_file() => continue_pytorch_run(&args, &matches, file)?,
        Some(dir) => {
            let given: Vec<String> = Args::command()
                .get_arguments()
                .map(|arg| arg.get_id().as_str().to_string())
                .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
                .filter(|id| !RESUMABLE_FLAGS.contains(&id.as_str()))
                .collect();
            if !given.is_empty() {
                bail!(
                    "--resume continues a run with its saved settings; remove --{} (only --epochs, --device, --threads, --save-every, --data-dir and --no-download may change)",
                    given.join(", --").replace('_', "-")
                );
            }
            let mut config = training::read_config(dir)?;
            if matches.value_source("epochs") == Some(ValueSource::CommandLine) {
                config.epochs = args.epochs;
            }
            if matches.value_source("device") == Some(ValueSource::CommandLine) {
                config.device = args.data.device.clone();
            }
            if matches.value_source("data_dir") == Some(ValueSource::CommandLine) {
                config.data_dir = args.data.data_dir.clone();
            }
            config.download = config.download && !args.data.no_download;
            config.threads = args.threads.or(config.threads);
            config.save_every = args.save_every;
            let run = RunDir { allow_data_change: args.allow_data_change, ..RunDir::resume(dir) };
            (config, run)
        }
        None => {
            let start = match &args.init_from {
                Some(path) => Start::Weights { path: path.clone(), key: args.key.clone() },
                None => Start::Fresh,
            };
            (args.config(), RunDir { start, ..RunDir::new(args.out_dir()) })
        }
    };
    config.validate()?;
    if args.nproc_per_node == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    let rank = distributed::env_rank_info()?;
    if rank.is_none() && args.nproc_per_node > 1 {
        return launch_ranks(&args, &matches, &run);
    }
    let mut config = config;
    let mut dp = match &rank {
        Some(info) => join_job(&mut config, info, &args)?,
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
    let outcome = training_loop::train_rank(&config, &run, &mut dp, &stop, &mut log);
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
fn join_job(config: &mut TrainConfig, info: &distributed::RankInfo, args: &Args) -> Result<DataParallel> {
    let device = tch_alexnet::device::parse_device(&config.device)?;
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
fn launch_ranks(args: &Args, matches: &clap::ArgMatches, run: &RunDir) -> Result<ExitCode> {
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

/// `--resume FILE`: a new run folder continuing a PyTorch training checkpoint, with the
/// file's SGD settings; a flag given with another value is refused rather than overridden.
fn continue_pytorch_run(
    args: &Args,
    matches: &clap::ArgMatches,
    file: &std::path::Path,
) -> Result<(TrainConfig, RunDir)> {
    let sgd = resume::pytorch_checkpoint_sgd(file)?;
    let mut config = args.config();
    for (flag, given, saved) in [
        ("lr", args.lr, sgd.lr),
        ("momentum", args.momentum, sgd.momentum),
        ("weight_decay", args.weight_decay, sgd.weight_decay),
    ] {
        if matches.value_source(flag) == Some(ValueSource::CommandLine) && given != saved {
            bail!(
                "--{} {given} contradicts the checkpoint {}, whose optimizer has {saved}; leave the flag out to continue with the checkpoint's settings",
                flag.replace('_', "-"),
                file.display()
            );
        }
    }
    (config.lr, config.momentum, config.weight_decay) = (sgd.lr, sgd.momentum, sgd.weight_decay);
    Ok((config, RunDir { start: Start::PytorchCheckpoint { path: file.to_path_buf() }, ..RunDir::new(args.out_dir()) }))
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

fn main() -> ExitCode {
    tch_alexnet::cli::exit_code(run())
}

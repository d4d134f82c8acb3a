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
use tch_alexnet::train::config::{OptimizerKind, RECIPE_LR, RECIPE_MOMENTUM, RECIPE_WEIGHT_DECAY};
use tch_alexnet::train::data_parallel::DataParallel;
use tch_alexnet::train::optim::lr_scheduler::{Decay, ScheduleSpec, StepUnit, Warmup, WarmupLength};
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
    /// Optimizer, as PyTorch's class of that name: sgd (the recipe), adam or adamw.
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: OptimizerKind,
    /// Learning rate (with --schedule, its base value). With adam and adamw the default is
    /// PyTorch's, 0.001 [default: 0.005]
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum [default: 0.9]
    #[arg(long)]
    momentum: Option<f64>,
    /// Weight decay, on all parameters unless --no-decay-on-norm-and-bias: SGD's and Adam's L2
    /// term, AdamW's decoupled decay. The defaults are the recipe's for sgd, PyTorch's for adam
    /// (0) and adamw (0.01) [default: 0.005]
    #[arg(long)]
    weight_decay: Option<f64>,
    /// SGD dampening of the momentum [default: 0].
    #[arg(long)]
    dampening: Option<f64>,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// Adam/AdamW coefficients of the running averages of the gradient and its square
    /// [default: 0.9,0.999].
    #[arg(long, value_name = "B1,B2")]
    betas: Option<String>,
    /// Adam/AdamW term added to the denominator [default: 1e-8].
    #[arg(long)]
    eps: Option<f64>,
    /// Adam/AdamW's AMSGrad variant.
    #[arg(long)]
    amsgrad: bool,
    /// No weight decay on biases and BatchNorm parameters (every 1-dim parameter goes to a
    /// second parameter group with weight_decay 0); the recipe decays all parameters.
    #[arg(long)]
    no_decay_on_norm_and_bias: bool,
    /// Learning-rate schedule (PyTorch's schedulers): constant, cosine[:ETA_MIN]
    /// (CosineAnnealingLR over the run after the warm-up), step:N[:GAMMA] (StepLR),
    /// multistep:M1,M2,...[:GAMMA] (MultiStepLR), exponential:GAMMA (ExponentialLR) or
    /// onecycle:MAX_LR (OneCycleLR over the whole run; it sets the learning rate itself, so
    /// --lr is refused with it). Counts are in --schedule-per units.
    #[arg(long, value_name = "SPEC", default_value = "constant")]
    schedule: String,
    /// When the schedule steps: after every epoch or every batch (optimizer step)
    /// [default: batch for onecycle, epoch otherwise].
    #[arg(long, value_name = "epoch|batch")]
    schedule_per: Option<String>,
    /// Linear warm-up (LinearLR, then the schedule, as SequentialLR) over the first N epochs.
    #[arg(long, value_name = "N", conflicts_with = "warmup_steps")]
    warmup_epochs: Option<i64>,
    /// Linear warm-up over the first N optimizer steps (needs --schedule-per batch).
    #[arg(long, value_name = "N")]
    warmup_steps: Option<i64>,
    /// The warm-up's first learning rate as a fraction of --lr, in (0, 1] [default: 1/3,
    /// LinearLR's].
    #[arg(long, value_name = "F")]
    warmup_start_factor: Option<f64>,
    /// Clip the gradients' total 2-norm to MAX before each update (clip_grad_norm_; under
    /// data parallelism, of the averaged gradients).
    #[arg(long, value_name = "MAX")]
    clip_grad_norm: Option<f64>,
    /// Label smoothing of the cross-entropy loss, in [0, 1] (0: the recipe's plain loss).
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    label_smoothing: f64,
    /// Share of the 50,000 training images held out for validation, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    valid_size: f64,
    /// Seed of the run's randomness: the initial weights, the epoch orders and flips, dropout
    /// (and the split, unless --split-seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed of the train/validation split [default: --seed]. The tutorial has these two random
    /// sources: the split (NumPy) and the training (torch).
    #[arg(long, value_name = "N")]
    split_seed: Option<u64>,
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
    /// state_dict, 'optimizer': SGD, Adam or AdamW state_dict, 'scheduler': its state_dict
    /// (optional), 'epoch': completed epochs}; that starts a new run folder (--out) at the next
    /// epoch, with the optimizer and its settings from the file (give the run's --schedule
    /// when it has a scheduler).
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

    fn config(&self) -> Result<TrainConfig> {
        let optim = self.optimizer_settings()?;
        Ok(TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            lr: optim.lr,
            momentum: optim.momentum,
            weight_decay: optim.weight_decay,
            dampening: self.dampening.unwrap_or(0.0),
            nesterov: self.nesterov,
            betas: optim.betas,
            eps: self.eps.unwrap_or(1e-8),
            amsgrad: self.amsgrad,
            no_decay_on_norm_and_bias: self.no_decay_on_norm_and_bias,
            schedule: self.schedule()?,
            clip_grad_norm: self.clip_grad_norm,
            label_smoothing: self.label_smoothing,
            valid_size: self.valid_size,
            seed: self.seed,
            split_seed: self.split_seed,
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
        })
    }

    /// The optimizer's settings: the flags given, else the recipe's (SGD) or PyTorch's
    /// defaults (Adam, AdamW). Flags of the other optimizer are refused.
    fn optimizer_settings(&self) -> Result<OptimizerFlags> {
        let sgd = self.optimizer == OptimizerKind::Sgd;
        let other = if sgd { "sgd" } else { "adam and adamw" };
        let wrong: Vec<&str> = if sgd {
            [("--betas", self.betas.is_some()), ("--eps", self.eps.is_some()), ("--amsgrad", self.amsgrad)]
                .into_iter()
                .filter_map(|(flag, given)| given.then_some(flag))
                .collect()
        } else {
            [
                ("--momentum", self.momentum.is_some()),
                ("--dampening", self.dampening.is_some()),
                ("--nesterov", self.nesterov),
            ]
            .into_iter()
            .filter_map(|(flag, given)| given.then_some(flag))
            .collect()
        };
        if !wrong.is_empty() {
            let hint =
                if sgd { "they are Adam/AdamW settings" } else { "they are SGD settings (Adam's momentum is --betas)" };
            bail!("{} cannot be used with --optimizer {other}: {hint}", wrong.join(", "));
        }
        let betas = match &self.betas {
            None => (0.9, 0.999),
            Some(text) => {
                let parsed: Vec<f64> = text.split(',').filter_map(|b| b.trim().parse().ok()).collect();
                let [b1, b2] = parsed[..] else {
                    bail!("--betas takes two numbers, B1,B2 (e.g. 0.9,0.999), got `{text}`")
                };
                (b1, b2)
            }
        };
        let (lr, weight_decay) = match self.optimizer {
            OptimizerKind::Sgd => (RECIPE_LR, RECIPE_WEIGHT_DECAY),
            OptimizerKind::Adam => (1e-3, 0.0),
            OptimizerKind::Adamw => (1e-3, 1e-2),
        };
        Ok(OptimizerFlags {
            lr: self.lr.unwrap_or(lr),
            momentum: if sgd { self.momentum.unwrap_or(RECIPE_MOMENTUM) } else { 0.0 },
            weight_decay: self.weight_decay.unwrap_or(weight_decay),
            betas,
        })
    }

    /// `--schedule`, `--schedule-per` and the warm-up flags as one schedule.
    fn schedule(&self) -> Result<ScheduleSpec> {
        let decay: Decay = self.schedule.parse()?;
        let one_cycle = matches!(decay, Decay::OneCycle { .. });
        if one_cycle && self.lr.is_some() {
            bail!(
                "--lr has no effect with --schedule onecycle:MAX_LR: OneCycleLR sets the learning rate itself \
                 (from MAX_LR/25 up to MAX_LR, then down to MAX_LR/1e4 of that); leave --lr out"
            );
        }
        let unit = match &self.schedule_per {
            Some(unit) => unit.parse()?,
            None if one_cycle => StepUnit::Batch,
            None => StepUnit::Epoch,
        };
        let length = match (self.warmup_epochs, self.warmup_steps) {
            (Some(n), _) => Some(WarmupLength::Epochs(n)),
            (_, Some(n)) => Some(WarmupLength::Steps(n)),
            _ => None,
        };
        let warmup = match (length, self.warmup_start_factor) {
            (None, Some(_)) => bail!("--warmup-start-factor needs --warmup-epochs or --warmup-steps"),
            (None, None) => None,
            (Some(length), factor) => {
                Some(Warmup { start_factor: factor.unwrap_or(Warmup::new(length).start_factor), length })
            }
        };
        Ok(ScheduleSpec::new(decay, warmup, unit)?)
    }
}

/// The optimizer flags with their defaults applied.
struct OptimizerFlags {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    betas: (f64, f64),
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
            (args.config()?, RunDir { start, ..RunDir::new(args.out_dir()) })
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
/// file's optimizer (class and settings); a flag given with another value is refused rather
/// than overridden. A schedule is given with --schedule as for a new run; its state comes from
/// the file.
fn continue_pytorch_run(
    args: &Args,
    matches: &clap::ArgMatches,
    file: &std::path::Path,
) -> Result<(TrainConfig, RunDir)> {
    let given = args.config()?;
    let config = resume::config_of_pytorch_checkpoint(file, &given)?;
    let given_flag = |flag: &str| matches.value_source(flag) == Some(ValueSource::CommandLine);
    if given_flag("optimizer") && given.optimizer != config.optimizer {
        bail!(
            "--optimizer {:?} contradicts the checkpoint {}, whose optimizer is {:?}; leave the flag out",
            given.optimizer,
            file.display(),
            config.optimizer
        );
    }
    for (flag, given, saved) in [
        ("lr", args.lr, config.lr),
        ("momentum", args.momentum, config.momentum),
        ("weight_decay", args.weight_decay, config.weight_decay),
    ] {
        if given_flag(flag) && given != Some(saved) {
            bail!(
                "--{} {} contradicts the checkpoint {}, whose optimizer has {saved}; leave the flag out to continue with the checkpoint's settings",
                flag.replace('_', "-"),
                given.unwrap_or_default(),
                file.display()
            );
        }
    }
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

//! The training flags every training program shares (`train`, and a user's own port through
//! [`crate::train::command::run`]): clap's `Args`, flattened into the program's parser. Each
//! flag left out takes the value of the program's base settings (a recipe, or the port's own),
//! which `--help` shows ([`super::help::with_defaults`]).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::cli::DataArgs;
use crate::data::split::SplitRng;
use crate::train::config::{OptimizerKind, TrainConfig};
use crate::train::optim::lr_scheduler::{Decay, ScheduleSpec, StepUnit, Warmup, WarmupLength};

/// Every training flag. Defaults come from the base settings unless a flag says otherwise.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Number of passes over the training split.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per training step (and per evaluation batch, unless --eval-batch-size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Images per evaluation batch (validation and test).
    #[arg(long, value_name = "N")]
    pub eval_batch_size: Option<usize>,
    /// Optimizer, as PyTorch's class of that name: sgd, adam or adamw.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate (with --schedule, its base value). With adam and adamw the default is
    /// PyTorch's, 0.001.
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay, on all parameters unless --no-decay-on-norm-and-bias: SGD's and Adam's L2
    /// term, AdamW's decoupled decay. With adam and adamw the defaults are PyTorch's (0 and 0.01).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// SGD dampening of the momentum [default: 0].
    #[arg(long)]
    pub dampening: Option<f64>,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Adam/AdamW coefficients of the running averages of the gradient and its square
    /// [default: 0.9,0.999].
    #[arg(long, value_name = "B1,B2")]
    pub betas: Option<String>,
    /// Adam/AdamW term added to the denominator [default: 1e-8].
    #[arg(long)]
    pub eps: Option<f64>,
    /// Adam/AdamW's AMSGrad variant.
    #[arg(long)]
    pub amsgrad: bool,
    /// No weight decay on biases and BatchNorm parameters (every 1-dim parameter goes to a
    /// second parameter group with weight_decay 0).
    #[arg(long)]
    pub no_decay_on_norm_and_bias: bool,
    /// Learning-rate schedule (PyTorch's schedulers): constant, cosine[:ETA_MIN]
    /// (CosineAnnealingLR over the run after the warm-up), step:N[:GAMMA] (StepLR),
    /// multistep:M1,M2,...[:GAMMA] (MultiStepLR), exponential:GAMMA (ExponentialLR) or
    /// onecycle:MAX_LR (OneCycleLR over the whole run; it sets the learning rate itself, so
    /// --lr is refused with it). Counts are in --schedule-per units.
    #[arg(long, value_name = "SPEC")]
    pub schedule: Option<String>,
    /// When the schedule steps: after every epoch or every batch (optimizer step)
    /// [default: the base schedule's; for a --schedule given here, batch for onecycle and
    /// epoch otherwise].
    #[arg(long, value_name = "epoch|batch")]
    pub schedule_per: Option<String>,
    /// Linear warm-up (LinearLR, then the schedule, as SequentialLR) over the first N epochs.
    #[arg(long, value_name = "N", conflicts_with = "warmup_steps")]
    pub warmup_epochs: Option<i64>,
    /// Linear warm-up over the first N optimizer steps (needs --schedule-per batch).
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<i64>,
    /// The warm-up's first learning rate as a fraction of --lr, in (0, 1] [default: 1/3,
    /// LinearLR's].
    #[arg(long, value_name = "F")]
    pub warmup_start_factor: Option<f64>,
    /// Clip the gradients' total 2-norm to MAX before each update (clip_grad_norm_; under
    /// data parallelism, of the averaged gradients).
    #[arg(long, value_name = "MAX")]
    pub clip_grad_norm: Option<f64>,
    /// Label smoothing of the cross-entropy loss, in [0, 1] (0: plain cross entropy).
    #[arg(long, value_name = "S")]
    pub label_smoothing: Option<f64>,
    /// Share of the training images held out for validation, in [0, 1).
    #[arg(long)]
    pub valid_size: Option<f64>,
    /// Also evaluate the test set after every epoch; with --valid-size 0 the best checkpoint
    /// is then the one of the best test accuracy.
    #[arg(long)]
    pub test_every_epoch: bool,
    /// Seed of the run's randomness: the initial weights, the epoch orders and augmentations,
    /// dropout (and the split, unless --split-seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the train/validation split [default: --seed]. The tutorial has these two random
    /// sources: the split (NumPy) and the training (torch).
    #[arg(long, value_name = "N")]
    pub split_seed: Option<u64>,
    /// Generator of the train/validation split: numpy (np.random.seed + np.random.shuffle, the
    /// tutorial's exact images) or chacha (ChaCha8). split.json in the run folder lists it.
    #[arg(long, value_enum)]
    pub split_rng: Option<SplitRng>,
    /// Turn off the training augmentation (random flips and crops).
    #[arg(long)]
    pub no_augment: bool,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output folder of the run [default: runs/<date>-<time>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// libtorch CPU threads [default: libtorch's, one per physical core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue the run in this folder from its last checkpoint, with its saved settings
    /// (only --epochs, --device, --threads, --save-every, --data-dir and --no-download may be
    /// given with it). Or continue a PyTorch run: a torch.save file holding {'model':
    /// state_dict, 'optimizer': SGD, Adam or AdamW state_dict, 'scheduler': its state_dict
    /// (optional), 'epoch': completed epochs}; that starts a new run folder (--out) at the next
    /// epoch, with the optimizer and its settings from the file (give the run's --schedule
    /// when it has a scheduler).
    #[arg(long, value_name = "RUN_DIR|FILE")]
    pub resume: Option<PathBuf>,
    /// Start from these weights instead of a fresh init: a .safetensors or torch.save file
    /// (.pt, .pth, .bin; a bare state dict or one entry of a dict, see --key). Optimizer state
    /// starts at zero and training at epoch 1.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// With --init-from: the entry of the PyTorch file that holds the state dict (e.g. model,
    /// net); by default the one entry that is a state dict.
    #[arg(long, value_name = "NAME", requires = "init_from")]
    pub key: Option<String>,
    /// With --resume: continue even though the data files differ from those the run was
    /// trained on (config.json records their sizes and hashes).
    #[arg(long, requires = "resume")]
    pub allow_data_change: bool,
    /// Train on the first N images of the training split only (after the seeded split).
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Validate on the first N images of the validation split only.
    #[arg(long, value_name = "N")]
    pub limit_val: Option<usize>,
    /// Test on the first N test images only.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// bf16 autocast, as `torch.autocast(device, torch.bfloat16)` around forward and loss:
    /// convolutions and linear layers in bf16, weights, optimizer state and checkpoints fp32.
    /// On the CPU, fast where it has AMX or AVX-512-BF16 (said at start-up), emulated and slow
    /// elsewhere; on CUDA, bf16 (no gradient scaler needed). config.json records the precision.
    #[arg(long)]
    pub amp: bool,
    /// Memory layout of images and conv weights: channels-last (faster on CPU and CUDA) or
    /// contiguous (NCHW). Results agree to float rounding.
    #[arg(long, default_value = "channels-last")]
    pub memory_format: String,
    /// Also save last.safetensors every N steps (0: only at the end of each epoch).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub save_every: usize,
    /// Data-parallel training on this machine: start N processes (ranks) of this program, each
    /// with a full model, 1/N of every epoch and --batch-size images per step (as PyTorch's DDP
    /// under torchrun). Without --threads each gets an equal share of the cores. Under
    /// torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) each process is one rank.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nproc_per_node: usize,
    /// Seconds a rank waits for the others (rendezvous and each collective) before it stops
    /// with an error naming the rank that did not answer.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub dist_timeout: u64,
}

impl TrainArgs {
    /// `--out`, or `runs/<date>-<time>`.
    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()))
    }

    /// `base` with every flag given applied to it: the settings of a new run.
    pub fn config(&self, base: &TrainConfig) -> Result<TrainConfig> {
        let optimizer = self.optimizer.unwrap_or(base.optimizer);
        let optim = self.optimizer_settings(base, optimizer)?;
        Ok(TrainConfig {
            epochs: self.epochs.unwrap_or(base.epochs),
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            eval_batch_size: self.eval_batch_size.or(base.eval_batch_size),
            test_every_epoch: self.test_every_epoch || base.test_every_epoch,
            optimizer,
            lr: optim.lr,
            momentum: optim.momentum,
            weight_decay: optim.weight_decay,
            dampening: optim.dampening,
            nesterov: self.nesterov || (optimizer == base.optimizer && base.nesterov),
            betas: optim.betas,
            eps: optim.eps,
            amsgrad: self.amsgrad || (optimizer == base.optimizer && base.amsgrad),
            no_decay_on_norm_and_bias: self.no_decay_on_norm_and_bias || base.no_decay_on_norm_and_bias,
            schedule: self.schedule(base)?,
            clip_grad_norm: self.clip_grad_norm.or(base.clip_grad_norm),
            label_smoothing: self.label_smoothing.unwrap_or(base.label_smoothing),
            valid_size: self.valid_size.unwrap_or(base.valid_size),
            seed: self.seed.unwrap_or(base.seed),
            split_seed: self.split_seed.or(base.split_seed),
            split_rng: self.split_rng.unwrap_or(base.split_rng),
            augment: base.augment && !self.no_augment,
            data_dir: self.data.data_dir.clone(),
            download: !self.data.no_download,
            device: self.data.device.clone(),
            threads: self.threads,
            limit_train: self.limit_train,
            limit_val: self.limit_val,
            limit_test: self.limit_test,
            amp: self.amp,
            precision: None,
            memory_format: self.memory_format.clone(),
            save_every: self.save_every,
            ..base.clone()
        })
    }

    /// The optimizer's settings: the flags given, else the base's (same optimizer) or PyTorch's
    /// defaults (another optimizer). Flags of the other optimizer are refused.
    fn optimizer_settings(&self, base: &TrainConfig, optimizer: OptimizerKind) -> Result<OptimizerFlags> {
        let sgd = optimizer == OptimizerKind::Sgd;
        let other = if sgd { "sgd" } else { "adam and adamw" };
        let given = |flags: &[(&'static str, bool)]| -> Vec<&'static str> {
            flags.iter().filter_map(|&(flag, given)| given.then_some(flag)).collect()
        };
        let wrong = if sgd {
            given(&[("--betas", self.betas.is_some()), ("--eps", self.eps.is_some()), ("--amsgrad", self.amsgrad)])
        } else {
            given(&[
                ("--momentum", self.momentum.is_some()),
                ("--dampening", self.dampening.is_some()),
                ("--nesterov", self.nesterov),
            ])
        };
        if !wrong.is_empty() {
            let hint =
                if sgd { "they are Adam/AdamW settings" } else { "they are SGD settings (Adam's momentum is --betas)" };
            bail!("{} cannot be used with --optimizer {other}: {hint}", wrong.join(", "));
        }
        let betas = match &self.betas {
            None => None,
            Some(text) => {
                let parsed: Vec<f64> = text.split(',').filter_map(|b| b.trim().parse().ok()).collect();
                let [b1, b2] = parsed[..] else {
                    bail!("--betas takes two numbers, B1,B2 (e.g. 0.9,0.999), got `{text}`")
                };
                Some((b1, b2))
            }
        };
        // Another optimizer than the base's starts from PyTorch's defaults for it.
        let defaults = if optimizer == base.optimizer {
            base.clone()
        } else {
            let (lr, weight_decay) = match optimizer {
                OptimizerKind::Sgd => (base.lr, base.weight_decay),
                OptimizerKind::Adam => (1e-3, 0.0),
                OptimizerKind::Adamw => (1e-3, 1e-2),
            };
            TrainConfig { lr, weight_decay, momentum: 0.0, dampening: 0.0, ..TrainConfig::default() }
        };
        Ok(OptimizerFlags {
            lr: self.lr.unwrap_or(defaults.lr),
            momentum: if sgd { self.momentum.unwrap_or(defaults.momentum) } else { 0.0 },
            dampening: if sgd { self.dampening.unwrap_or(defaults.dampening) } else { 0.0 },
            weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
            betas: betas.unwrap_or(defaults.betas),
            eps: self.eps.unwrap_or(defaults.eps),
        })
    }

    /// `--schedule`, `--schedule-per` and the warm-up flags applied to the base's schedule.
    fn schedule(&self, base: &TrainConfig) -> Result<ScheduleSpec> {
        let decay: Decay = match &self.schedule {
            Some(text) => text.parse()?,
            None => base.schedule.decay.clone(),
        };
        let one_cycle = matches!(decay, Decay::OneCycle { .. });
        if one_cycle && self.lr.is_some() {
            bail!(
                "--lr has no effect with --schedule onecycle:MAX_LR: OneCycleLR sets the learning rate itself \
                 (from MAX_LR/25 up to MAX_LR, then down to MAX_LR/1e4 of that); leave --lr out"
            );
        }
        let unit = match (&self.schedule_per, &self.schedule) {
            (Some(unit), _) => unit.parse()?,
            (None, None) => base.schedule.unit,
            (None, Some(_)) if one_cycle => StepUnit::Batch,
            (None, Some(_)) => StepUnit::Epoch,
        };
        let length = match (self.warmup_epochs, self.warmup_steps) {
            (Some(n), _) => Some(WarmupLength::Epochs(n)),
            (_, Some(n)) => Some(WarmupLength::Steps(n)),
            _ => None,
        };
        let warmup = match (length, self.warmup_start_factor) {
            (None, Some(_)) => bail!("--warmup-start-factor needs --warmup-epochs or --warmup-steps"),
            (None, None) => base.schedule.warmup,
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
    dampening: f64,
    weight_decay: f64,
    betas: (f64, f64),
    eps: f64,
}

//! Converts checkpoints between safetensors and PyTorch's `torch.save` format, and a run folder
//! into a PyTorch training checkpoint: `cargo run --release --example convert -- IN OUT`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use tch_alexnet::formats::state_dict::{self, WeightsFormat};
use tch_alexnet::train::{read_config, resume};

tch_alexnet::use_jemalloc!();

/// Convert checkpoints (AlexNet or any network of the zoo) between safetensors and PyTorch's
/// torch.save format, both ways.
///
/// The formats follow the extensions: .safetensors, or .pt/.pth/.bin for torch.save. IN may
/// also be a run folder: OUT (.pt/.pth) is then a PyTorch training checkpoint {'model':
/// state_dict, 'optimizer': the optimizer's state_dict (SGD, Adam or AdamW), 'scheduler': the
/// schedule's state_dict (with a schedule), 'epoch': completed epochs}, which continues in
/// Python with model.load_state_dict(ckpt['model']), optimizer.load_state_dict(ckpt['optimizer'])
/// and scheduler.load_state_dict(ckpt['scheduler']).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A checkpoint (.safetensors, .pt, .pth, .bin; the format is read from its content) or a
    /// run folder.
    input: PathBuf,
    /// The file to write (.safetensors, .pt, .pth or .bin); written atomically.
    output: PathBuf,
    /// The entry of a PyTorch input that holds the state dict (e.g. model); by default the one
    /// entry that is a state dict.
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
}

fn run() -> Result<ExitCode> {
    let args = Args::parse();
    if args.input.is_dir() {
        convert_run(&args.input, &args.output)?;
    } else {
        let format = state_dict::format_for_extension(&args.output)?;
        let tensors = state_dict::load_state_dict(&args.input, args.key.as_deref())?;
        state_dict::save_state_dict(&args.output, &tensors)?;
        println!(
            "{} → {} ({} tensors, {})",
            args.input.display(),
            args.output.display(),
            tensors.len(),
            if format == WeightsFormat::Pytorch { "torch.save" } else { "safetensors" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A run folder's last checkpoint as a PyTorch training checkpoint.
fn convert_run(dir: &Path, output: &Path) -> Result<()> {
    if state_dict::format_for_extension(output)? != WeightsFormat::Pytorch {
        bail!("a run folder converts to a PyTorch training checkpoint: name the output .pt or .pth");
    }
    let config = read_config(dir)?;
    let (checkpoint, state) = resume::last_as_training_checkpoint(&tch_alexnet::train::Zoo, dir, &config)?;
    let (epoch, scheduler) = (checkpoint.epoch, checkpoint.scheduler.is_some());
    checkpoint.write_pytorch(output)?;
    println!(
        "{} → {}: training checkpoint after epoch {epoch} ({:?}, lr {}, weight decay {}{})",
        dir.display(),
        output.display(),
        config.optimizer,
        config.lr,
        config.weight_decay,
        if scheduler { ", with its scheduler state" } else { "" }
    );
    if state.step > 0 {
        eprintln!(
            "note: the run stopped {} steps into epoch {}; PyTorch checkpoints count whole epochs, so those steps' \
             updates are in the weights but the next epoch starts from its beginning",
            state.step,
            state.epoch + 1
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    tch_alexnet::cli::exit_code(run())
}

//! Top classes of image files:
//! `cargo run --release --example predict -- --checkpoint runs/<run>/best.safetensors cat.jpg`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use tch::Tensor;
use tch_alexnet::inference;
use tch_alexnet::model::ModelKind;
use tch_alexnet::train::recipe::Recipe;

tch_alexnet::use_jemalloc!();

/// Classify PNG or JPEG images of any size with a checkpoint of AlexNet or another network of the
/// zoo. Each image is scaled to 32×32 like a CIFAR image, then transformed as in training.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The checkpoint: .safetensors (e.g. runs/<run>/best.safetensors) or a torch.save file
    /// (.pt, .pth, .bin) holding the state dict, or a dict with it inside (see --key).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The entry of a PyTorch checkpoint that holds the state dict (e.g. model); by default the
    /// one entry that is a state dict. The `module.` prefix of DataParallel/DDP is removed.
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
    /// The network [default: the one the checkpoint records (this crate's safetensors files
    /// do), else alexnet].
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    /// Image files (PNG or JPEG).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top: i64,
    /// Images per forward pass (memory grows with it, not with the number of images).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// bf16 autocast (as `torch.autocast(device, torch.bfloat16)`), on the CPU or CUDA: fast
    /// where the CPU has AMX or AVX-512-BF16, and on recent GPUs.
    #[arg(long)]
    amp: bool,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn run() -> Result<()> {
    let args = Args::parse();
    if args.top < 1 {
        bail!("--top must be at least 1");
    }
    let device = tch_alexnet::device::parse_device(&args.device)?;
    let images = args.images.iter().map(|p| inference::load_image(p)).collect::<Result<Vec<_>>>()?;
    let loaded = inference::load_model(&args.checkpoint, args.key.as_deref(), args.model, device, false)?;
    let batch = Tensor::stack(&images, 0);
    // The transforms of the recipe the network was made for (AlexNet: resize to 227).
    let spec = Recipe::for_model(loaded.kind).config().transforms;
    let options = inference::PredictOptions { top: args.top, batch_size: args.batch_size, amp: args.amp };
    let predictions = inference::predict(loaded.net.as_ref(), loaded.num_classes, &spec, &batch, device, options)?;
    if args.json {
        let out: Vec<_> = args
            .images
            .iter()
            .zip(&predictions)
            .map(|(path, top)| serde_json::json!({ "image": path, "top": top }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (path, top) in args.images.iter().zip(&predictions) {
        println!("{}", path.display());
        for p in top {
            println!("  {:<12} {:6.2}%", p.name, 100.0 * p.probability);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tch_alexnet::cli::exit_code(run().map(|()| ExitCode::SUCCESS))
}

//! Test accuracy, per-class accuracy and confusion matrix of a checkpoint:
//! `cargo run --release --example evaluate -- --checkpoint runs/<run>/best.safetensors`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tch_alexnet::cli::DataArgs;
use tch_alexnet::data::batches::Batches;
use tch_alexnet::data::DatasetKind;
use tch_alexnet::model::ModelKind;
use tch_alexnet::train::recipe::Recipe;
use tch_alexnet::train::{self as training, TrainConfig};
use tch_alexnet::{inference, train::evaluation};

tch_alexnet::use_jemalloc!();

/// Evaluate a checkpoint (from this crate, or PyTorch's: torch.save or safetensors) on the
/// test set of CIFAR-10 (or CIFAR-100): AlexNet, or another network of the zoo (--model).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The checkpoint: .safetensors (e.g. runs/<run>/best.safetensors) or a torch.save file
    /// (.pt, .pth, .bin) holding the state dict, or a dict with it inside (see --key).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The entry of a PyTorch checkpoint that holds the state dict (e.g. model, or net for
    /// pytorch-cifar's); by default the one entry that is a state dict. The `module.` prefix of
    /// DataParallel/DDP is removed.
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
    /// The network [default: the one the checkpoint records (this crate's safetensors files
    /// do), else alexnet].
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    #[command(flatten)]
    data: DataArgs,
    /// The data set whose test images to evaluate on: cifar10, cifar100 or cifar100-coarse.
    #[arg(long, value_enum, default_value = "cifar10")]
    dataset: DatasetKind,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Evaluate on the first N test images only.
    #[arg(long, value_name = "N")]
    limit_test: Option<usize>,
    /// bf16 autocast (as `torch.autocast(device, torch.bfloat16)`), on the CPU or CUDA: fast
    /// where the CPU has AMX or AVX-512-BF16, and on recent GPUs.
    #[arg(long)]
    amp: bool,
    /// Also write the results as JSON to this file; "-" writes the JSON alone to standard output
    /// and the table to standard error (so `--json - | jq .accuracy` works).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = tch_alexnet::device::parse_device(&args.data.device)?;
    // The checkpoint first: a wrong path should fail before the data set is loaded.
    let loaded = inference::load_model(&args.checkpoint, args.key.as_deref(), args.model, device, true)?;
    eprintln!("Network: {} ({} classes; from {})", loaded.kind, loaded.num_classes, loaded.kind_from);
    // The evaluation transforms of the recipe the network was made for (AlexNet: resize to 227).
    let recipe = Recipe::for_model(loaded.kind).config();
    let config = TrainConfig {
        data_dir: args.data.data_dir.clone(),
        download: !args.data.no_download,
        device: args.data.device.clone(),
        dataset: args.dataset.to_string(),
        num_classes: loaded.num_classes,
        transforms: recipe.transforms,
        batch_size: args.batch_size,
        limit_test: args.limit_test,
        amp: args.amp,
        ..TrainConfig::default()
    };
    config.validate()?;
    let setup = training::setup(&config, &tch_alexnet::train::Zoo, &mut |line| eprintln!("{line}"))?;
    let indices = tch_alexnet::train::setup::test_indices(setup.data.test_len(), args.limit_test);
    if indices.is_empty() {
        anyhow::bail!("{} has no test images to evaluate", setup.data.name);
    }
    let batches =
        Batches::new(&setup.data.test_images, &setup.data.test_labels, &indices, args.batch_size, &setup.preprocess);
    eprintln!("Evaluating {} test images", indices.len());
    let result = evaluation::evaluate(loaded.net.as_ref(), loaded.num_classes, batches, args.amp)?;
    let class_names = &setup.data.class_names;

    // With `--json -` the JSON alone goes to standard output (for `| jq`), the table to stderr.
    let json_to_stdout = args.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    let mut out: Box<dyn Write> =
        if json_to_stdout { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
    writeln!(out, "checkpoint: {}", args.checkpoint.display())?;
    writeln!(
        out,
        "test images: {}, accuracy: {:.2}%, loss: {:.4}",
        result.images,
        100.0 * result.accuracy,
        result.loss
    )?;
    let name = |c: usize| class_names.get(c).map_or("?", |n| n.as_str());
    writeln!(out, "\n{:<12} {:>8}   confusion (rows: true class, columns: predicted)", "class", "accuracy")?;
    let header: String =
        (0..result.confusion.len()).map(|c| format!("{:>6}", &name(c)[..name(c).len().min(5)])).collect();
    writeln!(out, "{:<12} {:>8}   {header}", "", "")?;
    for (c, (row, acc)) in result.confusion.iter().zip(result.per_class_accuracy()).enumerate() {
        let cells: String = row.iter().map(|v| format!("{v:>6}")).collect();
        writeln!(out, "{:<12} {:>7.2}%   {cells}", name(c), 100.0 * acc)?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "checkpoint": args.checkpoint,
            "images": result.images,
            "accuracy": result.accuracy,
            "loss": result.loss,
            "model": loaded.kind.to_string(),
            "per_class_accuracy": class_names.iter().zip(result.per_class_accuracy())
                .map(|(n, a)| (n.to_string(), serde_json::json!(a))).collect::<serde_json::Map<_, _>>(),
            "classes": class_names,
            "confusion": result.confusion,
        });
        let text = serde_json::to_string_pretty(&json)? + "\n";
        if path.as_os_str() == "-" {
            print!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tch_alexnet::cli::exit_code(run().map(|()| ExitCode::SUCCESS))
}

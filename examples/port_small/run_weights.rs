//! `port_small run`: the ported SmallNet with weights PyTorch saved
//! (`torch.save(model.state_dict())`), in eval mode, each image's top classes, and optionally a
//! comparison with PyTorch's logits.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use tch_alexnet::data::cifar::CLASS_NAMES;
use tch_alexnet::formats::{safetensors, state_dict};

use crate::net::{SmallNet, INPUT_SIZE};

/// Run SmallNet with weights saved by PyTorch's torch.save(model.state_dict()) (or a checkpoint
/// of `port_small train`), in eval mode, and print each image's top classes.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The weights: a torch.save file (.pt, .pth, .bin) or a .safetensors file.
    weights: PathBuf,
    /// The entry of a PyTorch file that holds the state dict (e.g. model), if it holds several.
    #[arg(long, value_name = "NAME")]
    key: Option<String>,
    /// A safetensors file with `images` [N, 3, 32, 32] and PyTorch's eval `logits` for them:
    /// run on those images and compare (exit code 1 if any logit differs by more than 1e-5).
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Without --check: how many random images to classify.
    #[arg(long, default_value_t = 2)]
    images: i64,
    /// Without --check: the seed of the random images.
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    tch::set_num_threads(2);

    // model = SmallNet(); model.load_state_dict(torch.load(path)); model.eval()
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SmallNet::new(&vs.root(), CLASS_NAMES.len() as i64);
    state_dict::load_into_var_store(&vs, &args.weights, args.key.as_deref())?;
    let parameters: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    println!(
        "Loaded {} tensors from {} into SmallNet ({parameters} parameters)",
        vs.variables().len(),
        args.weights.display()
    );

    let (images, expected) = match &args.check {
        Some(path) => {
            let mut file = safetensors::load_tensors(path)?.tensors;
            let images = file.remove("images").with_context(|| format!("{} has no `images`", path.display()))?;
            (images, file.remove("logits"))
        }
        None => {
            tch::manual_seed(args.seed);
            (Tensor::randn([args.images, 3, INPUT_SIZE, INPUT_SIZE], (Kind::Float, Device::Cpu)), None)
        }
    };
    let logits = tch::no_grad(|| net.forward_t(&images, false));
    let probabilities = logits.softmax(-1, Kind::Float);
    for i in 0..logits.size()[0] {
        let (top, classes) = probabilities.get(i).topk(3, -1, true, true);
        let top: Vec<String> = Vec::<f64>::try_from(&top)?
            .iter()
            .zip(Vec::<i64>::try_from(&classes)?)
            .map(|(p, c)| format!("{} {p:.3}", CLASS_NAMES[c as usize]))
            .collect();
        let row: Vec<String> = Vec::<f64>::try_from(&logits.get(i))?.iter().map(|l| format!("{l:.4}")).collect();
        println!("image {i}: {}\n  logits [{}]", top.join(", "), row.join(", "));
    }

    if let Some(expected) = expected {
        if expected.size() != logits.size() {
            bail!("PyTorch's logits have shape {:?}, these {:?}", expected.size(), logits.size());
        }
        let diff = (&logits - &expected).abs().max().double_value(&[]);
        if diff > 1e-5 {
            bail!("the logits differ from PyTorch's by up to {diff:.3e} (more than 1e-5)");
        }
        println!("max |logit difference| vs PyTorch: {diff:.1e} (within 1e-5)");
    }
    Ok(ExitCode::SUCCESS)
}

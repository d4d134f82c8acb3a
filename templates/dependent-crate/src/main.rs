//! Your program: it builds tch-alexnet's AlexNet and runs it once on a batch of zeros. Replace
//! it with your experiment (tch-alexnet's README, "Porting a PyTorch experiment").

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

tch_alexnet::use_jemalloc!();

fn main() -> anyhow::Result<()> {
    let device = Device::cuda_if_available();
    let vs = nn::VarStore::new(device);
    let net = tch_alexnet::alexnet(&vs.root(), 10)?;
    let images = Tensor::zeros([1, 3, 227, 227], (Kind::Float, device));
    let logits = tch::no_grad(|| net.forward_t(&images, false));
    println!("device: {device:?}");
    println!("logits: {:?}", logits.size());
    Ok(())
}

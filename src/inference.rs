//! Using a trained checkpoint: rebuild the model it fits, and classify image files.

use std::path::Path;

use anyhow::{Context, Result};
use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::data::cifar::{CLASS_NAMES, IMAGE_SIZE};
use crate::data::transforms::{Preprocess, TransformSpec};
use crate::formats::{safetensors, state_dict};
use crate::model::{ModelKind, Network};

/// A checkpoint's network, loaded and ready.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub net: Box<dyn Network>,
    pub kind: ModelKind,
    pub num_classes: i64,
    /// Where the network's name came from: `--model`, the checkpoint's metadata, or the default.
    pub kind_from: &'static str,
}

/// Builds the network of a checkpoint and loads the checkpoint into it: safetensors or
/// PyTorch's `torch.save` (chosen by content; `key` picks the entry of a nested PyTorch file,
/// see [`state_dict::load_state_dict`]). The network is `model`, else the one the checkpoint's
/// metadata names (this crate's safetensors files record it), else AlexNet; it gets as many
/// classes as the checkpoint's classifier has rows. `channels_last` gives the conv weights NHWC
/// strides (feed it channels-last batches then).
pub fn load_model(
    path: &Path,
    key: Option<&str>,
    model: Option<ModelKind>,
    device: Device,
    channels_last: bool,
) -> Result<LoadedModel> {
    let tensors = state_dict::load_state_dict(path, key)?;
    let recorded = recorded_model(path)?;
    let (kind, kind_from) = match (model, recorded) {
        (Some(kind), _) => (kind, "--model"),
        (None, Some(kind)) => (kind, "the checkpoint's metadata"),
        (None, None) => (ModelKind::default(), "the default"),
    };
    let classifier = kind.classifier_weight();
    let num_classes = tensors.get(classifier).map(|w| w.size()[0]).with_context(|| {
        format!(
            "checkpoint {} lacks the key `{classifier}`: not a {kind} checkpoint (the network is {kind} by {kind_from}; \
             --model names another)",
            path.display()
        )
    })?;
    let vs = nn::VarStore::new(device);
    let net = kind.build(&vs.root(), num_classes)?;
    if channels_last {
        crate::train::setup::model_to_channels_last(&vs);
    }
    safetensors::copy_into_var_store(&vs, path, &tensors)?;
    Ok(LoadedModel { vs, net, kind, num_classes, kind_from })
}

/// The network a checkpoint's metadata names (safetensors files written by this crate), if any.
fn recorded_model(path: &Path) -> Result<Option<ModelKind>> {
    if state_dict::detect_format(path)? != state_dict::WeightsFormat::Safetensors {
        return Ok(None);
    }
    let metadata = safetensors::read_metadata(path)?;
    match metadata.get("model") {
        None => Ok(None),
        Some(name) => crate::train::experiment::parse_model(name)
            .map(Some)
            .with_context(|| format!("checkpoint {} was trained with another program's network", path.display())),
    }
}

/// Reads a PNG or JPEG of any size as the model sees CIFAR images: RGB, scaled to 32×32
/// (area-averaging, as the CIFAR images themselves were made), `uint8 [3, 32, 32]`. The
/// training transform then upsamples it to 227×227.
pub fn load_image(path: &Path) -> Result<Tensor> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("{} is not a readable PNG or JPEG image", path.display()))?;
    let side = IMAGE_SIZE as u32;
    let rgb = image::imageops::resize(&img.to_rgb8(), side, side, image::imageops::FilterType::Triangle);
    // HWC bytes → CHW tensor.
    let hwc = Tensor::from_slice(rgb.as_raw()).view([IMAGE_SIZE, IMAGE_SIZE, 3]);
    Ok(hwc.permute([2, 0, 1]).contiguous())
}

/// One image's most likely classes, best first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    pub class: usize,
    pub name: String,
    pub probability: f64,
}

/// How [`predict`] runs: classes per image, images per forward pass, bf16 autocast.
#[derive(Clone, Copy, Debug)]
pub struct PredictOptions {
    /// How many classes to return per image (at most the network's).
    pub top: i64,
    /// Images per forward pass: memory stays that of one batch however many images there are.
    pub batch_size: usize,
    /// bf16 autocast, as `evaluate --amp`.
    pub amp: bool,
}

/// The `options.top` most likely classes of each image in `images` (`uint8 [N, 3, 32, 32]`),
/// transformed by `spec` as in evaluation (no augmentation), `options.batch_size` at a time.
pub fn predict(
    net: &dyn Network,
    num_classes: i64,
    spec: &TransformSpec,
    images: &Tensor,
    device: Device,
    options: PredictOptions,
) -> Result<Vec<Vec<Prediction>>> {
    if options.batch_size == 0 {
        anyhow::bail!("the batch size must be at least 1");
    }
    let pre = Preprocess::new(spec, device, false)?;
    let k = options.top.clamp(1, num_classes);
    let mut predictions = Vec::with_capacity(images.size()[0] as usize);
    // One autocast region for every batch: the weights are cast to bf16 once.
    crate::ffi::autocast_bf16(device, options.amp, || -> Result<()> {
        for chunk in images.split(options.batch_size as i64, 0) {
            // [B, 3, 32, 32] uint8 → the network's input → [B, num_classes] probabilities.
            let logits = tch::no_grad(|| net.forward_t(&pre.apply(&chunk.to_device(device), None), false));
            let probs = logits.to_kind(Kind::Float).softmax(-1, Kind::Float).to_device(Device::Cpu);
            predictions.extend(top_k(&probs, k)?);
        }
        Ok(())
    })??;
    Ok(predictions)
}

/// The `k` largest of each row of `probs` (`[B, classes]`, on the CPU), largest first, named.
fn top_k(probs: &Tensor, k: i64) -> Result<Vec<Vec<Prediction>>> {
    let (values, indices) = probs.topk(k, -1, true, true);
    let values = Vec::<f64>::try_from(values.to_kind(Kind::Double).flatten(0, -1))?;
    let indices = Vec::<i64>::try_from(indices.flatten(0, -1))?;
    let prediction = |(&probability, &class): (&f64, &i64)| {
        let class = class as usize;
        let name = CLASS_NAMES.get(class).map_or_else(|| format!("class {class}"), |s| s.to_string());
        Prediction { class, name, probability }
    };
    Ok(values
        .chunks(k as usize)
        .zip(indices.chunks(k as usize))
        .map(|(v, i)| v.iter().zip(i).map(prediction).collect())
        .collect())
}

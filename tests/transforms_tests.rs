//! The transforms of any experiment: the AlexNet recipe's output pinned byte for byte, the
//! random crop with padding against torchvision, the fused CPU kernel against the tensor path
//! (what CUDA runs), and the crop offsets' draws.

mod common;

use proptest::prelude::*;
use tch::{Device, Kind, Tensor};
use tch_alexnet::data::batches::{Batch, Batches};
use tch_alexnet::data::split::epoch_plan;
use tch_alexnet::data::transforms::{crop_flip_tensor, Preprocess};
use tch_alexnet::data::TransformSpec;

/// `n` images of `uint8 [n, c, h, w]` from a fixed linear congruential generator: the same
/// bytes on every machine, unlike `Tensor::randint`.
fn fixed_images(n: i64, c: i64, h: i64, w: i64) -> Tensor {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..n * c * h * w)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    Tensor::from_slice(&bytes).view([n, c, h, w])
}

/// XXH3-64 of a float tensor's values in NCHW order, whatever its strides.
fn digest(t: &Tensor) -> String {
    let values = Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// The AlexNet recipe's transform (flip, CIFAR normalisation, bilinear resize to 227), through
/// `Batches::for_epoch` as the trainer draws an epoch, in both layouts: the digests were taken
/// before the transforms were generalised (commit "transforms: the AlexNet recipe's output
/// pinned"), and the golden runs depend on every bit of them.
#[test]
fn alexnet_transform_output_is_unchanged() {
    let images = fixed_images(300, 3, 32, 32);
    let labels = Tensor::arange(300, (Kind::Int64, Device::Cpu));
    let split: Vec<i64> = (0..300).rev().step_by(2).collect(); // 150 images
    let plan = epoch_plan(split.len(), 1, 2);
    let mut got = Vec::new();
    for channels_last in [false, true] {
        let pre = Preprocess::new(&TransformSpec::alexnet_tutorial(), Device::Cpu, channels_last).unwrap();
        let batches = Batches::for_epoch(&images, &labels, &split, &plan, true, 64, &pre);
        for batch in batches {
            assert_eq!(batch.images.size()[1..], [3, 227, 227]);
            got.push(digest(&batch.images));
        }
    }
    // Three batches (64, 64, 22 images), NCHW then channels-last: the same values.
    let want = ["1833db1957a5f638", "3c0964ea7ded1616", "a0179ef1c7e509df"];
    assert_eq!(got, [want, want].concat());
}

// ---------------------------------------------------------------- the crop

/// The ResNet-18 recipe's spec with `padding`, for `channels` channels (mean and std varied per
/// channel, so that a channel mix-up shows).
fn crop_spec(channels: usize, padding: i64) -> TransformSpec {
    TransformSpec {
        mean: (0..channels).map(|c| 0.3 + 0.1 * c as f64).collect(),
        std: (0..channels).map(|c| 0.2 + 0.01 * c as f64).collect(),
        resize: None,
        random_crop_padding: Some(padding),
        flip: true,
    }
}

/// Offsets covering the corners and the middle of `0..=2p`, then seeded ones; flips alternate
/// in a pattern that is not the offsets'.
fn draws(n: usize, padding: i64, seed: u64) -> (Vec<i64>, Vec<bool>) {
    let max = 2 * padding;
    let fixed = [[0, 0], [max, max], [0, max], [max, 0], [padding, padding]];
    let plan = epoch_plan(n, seed, 0).with_crops(seed, 0, padding);
    let offsets = (0..n).flat_map(|i| if i < fixed.len() { fixed[i] } else { plan.crops[i] }).collect();
    (offsets, plan.flips)
}

/// The fused CPU kernel against the tensor path (`gather` with per-image indices: what CUDA
/// runs), for 1, 3 and 4 channels, paddings 0, 1, 4 and 40 (wider than the image), odd sizes,
/// both layouts, repeated and out-of-order indices: bit for bit the same (measured difference
/// 0: both compute `x · scale + shift` per value and pad with `0 · scale + shift`).
#[test]
fn fused_crop_kernel_equals_the_tensor_path_bit_for_bit() {
    for (c, h, w) in [(3i64, 32i64, 32i64), (1, 7, 5), (4, 9, 16)] {
        let images = fixed_images(12, c, h, w);
        let indices = [11i64, 0, 3, 3, 7, 1, 5, 5, 2];
        let idx = Tensor::from_slice(&indices);
        for padding in [0i64, 1, 4, 40] {
            let spec = crop_spec(c as usize, padding);
            let (offsets, flips) = draws(indices.len(), padding, 9 + padding as u64);
            let crops = Tensor::from_slice(&offsets).view([-1, 2]);
            let flips = Tensor::from_slice(&flips);
            for channels_last in [false, true] {
                let pre = Preprocess::new(&spec, Device::Cpu, channels_last).unwrap();
                let fused = pre.apply_gathered(&images, &idx, Some(&flips), Some(&crops));
                // Float images take the tensor path on the CPU too.
                let float_images = images.to_kind(Kind::Float);
                let tensor = pre.apply_gathered(&float_images, &idx, Some(&flips), Some(&crops));
                // The tensor path on the uint8 images, normalised as Preprocess does.
                let cropped = crop_flip_tensor(&images.index_select(0, &idx), padding, Some(&crops), Some(&flips));
                assert_eq!(cropped.kind(), Kind::Uint8);
                let what = format!("[{c}, {h}, {w}], padding {padding}, channels_last {channels_last}");
                assert_eq!(fused.size(), [indices.len() as i64, c, h, w], "{what}");
                assert_eq!(fused.stride()[1] == 1 && c > 1, channels_last && c > 1, "layout of {what}");
                assert!(bitwise_equal(&fused, &tensor), "{what}: fused and tensor paths differ");
                let uint8_path = pre.apply_gathered(
                    &cropped,
                    &Tensor::arange(indices.len() as i64, (Kind::Int64, Device::Cpu)),
                    None,
                    None,
                );
                assert!(bitwise_equal(&fused, &uint8_path), "{what}: fused and uint8 gather differ");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any shape (one-pixel axes included), padding (wider than the image included), offsets
    /// and flips: the fused kernel and the tensor path agree bit for bit, in both layouts.
    #[test]
    fn fused_crop_kernel_equals_the_tensor_path_on_any_shape(
        (c, h, w) in (1i64..5, 1i64..12, 1i64..12),
        padding in 0i64..15,
        n in 1usize..6,
        seed in any::<u64>(),
        channels_last in any::<bool>(),
    ) {
        let images = fixed_images(n as i64 + 2, c, h, w);
        let idx = Tensor::from_slice(&(0..n as i64).rev().collect::<Vec<_>>());
        let plan = epoch_plan(n, seed, 0).with_crops(seed, 0, padding);
        let crops = Tensor::from_slice(&plan.crops.concat()).view([-1, 2]);
        let flips = Tensor::from_slice(&plan.flips);
        let pre = Preprocess::new(&crop_spec(c as usize, padding), Device::Cpu, channels_last).unwrap();
        let fused = pre.apply_gathered(&images, &idx, Some(&flips), Some(&crops));
        let tensor = pre.apply_gathered(&images.to_kind(Kind::Float), &idx, Some(&flips), Some(&crops));
        prop_assert!(bitwise_equal(&fused, &tensor));
    }
}

/// Bit-for-bit equality of two float tensors of the same shape (NaN-free inputs).
fn bitwise_equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && {
        let bits = |t: &Tensor| {
            Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        bits(a) == bits(b)
    }
}

/// The ResNet-18 recipe's transform against torchvision's own `RandomCrop(32, padding=4)`,
/// `RandomHorizontalFlip()`, `ToTensor()`, `Normalize(...)` on PIL images, run at the same
/// offsets and flips (tests/fixtures/crop_reference.py fixes only the draws). Measured: max
/// |diff| 7.2e-7 (torchvision divides by 255 and then by std; the kernel multiplies by
/// 1/(255·std) and adds −mean/std).
#[test]
fn resnet18_crop_matches_torchvision_at_the_same_offsets() {
    let python = require_reference_python!();
    let spec = TransformSpec::resnet18_cifar();
    let n = 40;
    let images = fixed_images(n as i64, 3, 32, 32);
    let (offsets, flips) = draws(n, 4, 5);
    let crops = Tensor::from_slice(&offsets).view([-1, 2]);
    let flips_t = Tensor::from_slice(&flips);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
    let flags = Tensor::from_slice(&flips.iter().map(|&f| f as u8).collect::<Vec<_>>());
    let tensors = [("images", &images), ("crops", &crops), ("flips", &flags)];
    tch_alexnet::formats::safetensors::save_tensors(&input, tensors, &Default::default()).unwrap();
    let numbers = |v: &[f64]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let status = std::process::Command::new(&python)
        .arg(common::project_root().join("tests/fixtures/crop_reference.py"))
        .args([input.to_str().unwrap(), output.to_str().unwrap(), "--padding", "4", "--mean"])
        .args(numbers(&spec.mean))
        .arg("--std")
        .args(numbers(&spec.std))
        .status()
        .unwrap();
    assert!(status.success(), "crop_reference.py failed");
    let torch = tch_alexnet::formats::safetensors::load_tensors(&output).unwrap().tensors;
    let pre = Preprocess::new(&spec, Device::Cpu, false).unwrap();
    let idx = Tensor::arange(n as i64, (Kind::Int64, Device::Cpu));
    let ours = pre.apply_gathered(&images, &idx, Some(&flips_t), Some(&crops));
    let diff = common::max_abs_diff(&ours, &torch["out"]);
    eprintln!("crop + flip + normalise vs torchvision: max |diff| = {diff:.2e}");
    assert!(diff < 5e-6, "differs from torchvision by {diff}");
    // The padding is there: the corner crops start with padding values (−mean/std).
    let pad = -spec.mean[0] / spec.std[0];
    assert!((ours.double_value(&[0, 0, 0, 0]) - pad).abs() < 1e-6);
}

// ---------------------------------------------------------------- the draws

/// Crop offsets: every value of 0..=8 on both axes, about uniformly (45,000 draws, within 5σ
/// of 5,000 each), deterministic per (seed, epoch), different across epochs and seeds, and
/// the order and flips exactly those of `epoch_plan` (the AlexNet recipe's draws).
#[test]
fn crop_offsets_are_uniform_deterministic_and_leave_order_and_flips_alone() {
    let pre = Preprocess::new(&TransformSpec::resnet18_cifar(), Device::Cpu, false).unwrap();
    let plan = pre.epoch_plan(45_000, 1, 3);
    let base = epoch_plan(45_000, 1, 3);
    assert_eq!((&plan.order, &plan.flips), (&base.order, &base.flips));
    assert!(base.crops.is_empty());
    assert_eq!(plan.crops.len(), 45_000);
    for axis in 0..2 {
        let mut counts = [0usize; 9];
        for c in &plan.crops {
            counts[c[axis] as usize] += 1; // panics if an offset is outside 0..=8
        }
        let sigma = (45_000.0f64 * (1.0 / 9.0) * (8.0 / 9.0)).sqrt();
        for (value, &count) in counts.iter().enumerate() {
            assert!((count as f64 - 5_000.0).abs() < 5.0 * sigma, "axis {axis}: offset {value} drawn {count} times");
        }
    }
    assert_eq!(plan, pre.epoch_plan(45_000, 1, 3));
    assert_ne!(plan.crops, pre.epoch_plan(45_000, 1, 4).crops);
    assert_ne!(plan.crops, pre.epoch_plan(45_000, 2, 3).crops);
    // The two axes are not one draw repeated.
    assert!(plan.crops.iter().filter(|c| c[0] != c[1]).count() > 30_000);
    // Without a crop in the spec, the plan is epoch_plan's.
    let alexnet = Preprocess::new(&TransformSpec::alexnet_tutorial(), Device::Cpu, false).unwrap();
    assert_eq!(alexnet.epoch_plan(1000, 1, 0), epoch_plan(1000, 1, 0));
}

/// Data-parallel shards carry each position's crop with its image and flip, as
/// `DistributedSampler` pads and strides: together the ranks cover the epoch.
#[test]
fn shards_carry_crop_offsets_with_their_images() {
    let plan = epoch_plan(103, 7, 0).with_crops(7, 0, 4);
    for world in [1usize, 2, 3, 4] {
        let mut seen = Vec::new();
        for rank in 0..world {
            let shard = plan.clone().shard(rank, world);
            assert_eq!(shard.order.len(), 103usize.div_ceil(world));
            assert_eq!((shard.flips.len(), shard.crops.len()), (shard.order.len(), shard.order.len()));
            for (k, &image) in shard.order.iter().enumerate() {
                let position = plan.order.iter().position(|&o| o == image).unwrap();
                assert_eq!((shard.flips[k], shard.crops[k]), (plan.flips[position], plan.crops[position]));
                seen.push(image);
            }
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 103, "world {world}: the ranks together see every image");
    }
    // Without crops, shards have none either.
    assert!(epoch_plan(10, 1, 0).shard(1, 3).crops.is_empty());
}

/// `Batches::for_epoch` hands each batch its own images, flips and crop offsets, in the
/// plan's order (the whole epoch equals one call of the transform on the ordered images);
/// without `augment`, or for validation, images are only normalised.
#[test]
fn batches_pass_each_batch_its_flips_and_crops() {
    let images = fixed_images(50, 3, 32, 32);
    let labels = Tensor::arange(50, (Kind::Int64, Device::Cpu));
    let split: Vec<i64> = (0..50).rev().collect();
    let pre = Preprocess::new(&TransformSpec::resnet18_cifar(), Device::Cpu, true).unwrap();
    let plan = pre.epoch_plan(split.len(), 3, 1);
    let batches: Vec<Batch> = Batches::for_epoch(&images, &labels, &split, &plan, true, 16, &pre).collect();
    assert_eq!(batches.iter().map(|b| b.images.size()[0]).collect::<Vec<_>>(), [16, 16, 16, 2]);
    let ordered: Vec<i64> = plan.order.iter().map(|&i| split[i]).collect();
    let offsets: Vec<i64> = plan.crops.iter().flatten().copied().collect();
    let whole = pre.apply_gathered(
        &images,
        &Tensor::from_slice(&ordered),
        Some(&Tensor::from_slice(&plan.flips)),
        Some(&Tensor::from_slice(&offsets).view([-1, 2])),
    );
    let joined = Tensor::cat(&batches.iter().map(|b| b.images.shallow_clone()).collect::<Vec<_>>(), 0);
    assert!(bitwise_equal(&joined, &whole), "the batches are not the epoch's transform");
    let joined_labels = Tensor::cat(&batches.iter().map(|b| b.labels.shallow_clone()).collect::<Vec<_>>(), 0);
    assert_eq!(Vec::<i64>::try_from(&joined_labels).unwrap(), ordered);
    // No augmentation: the images themselves, normalised (no crop, no flip).
    let plain: Vec<Batch> = Batches::for_epoch(&images, &labels, &split, &plan, false, 64, &pre).collect();
    let spec = TransformSpec::resnet18_cifar();
    let mean = Tensor::from_slice(&spec.mean).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&spec.std).view([1, 3, 1, 1]);
    let want = (images.index_select(0, &Tensor::from_slice(&ordered)).to_kind(Kind::Double) / 255.0 - mean) / std;
    let diff = common::max_abs_diff(&plain[0].images, &want);
    assert!(diff < 1e-5, "unaugmented batch differs from (x/255 - mean)/std by {diff}");
}

/// A crop before a resize: the uint8 crop, then the AlexNet path (fused on the CPU), against
/// the same steps as libtorch ops in float (measured: max |diff| 4.5e-6, float rounding of
/// values up to 2.7 through two different operation orders).
#[test]
fn crop_then_resize_matches_libtorch_ops() {
    let spec = TransformSpec { random_crop_padding: Some(4), ..TransformSpec::alexnet_tutorial() };
    let pre = Preprocess::new(&spec, Device::Cpu, false).unwrap();
    let images = fixed_images(6, 3, 32, 32);
    let idx = Tensor::from_slice(&[5i64, 1, 1, 0]);
    let (offsets, flips) = draws(4, 4, 2);
    let (crops, flips) = (Tensor::from_slice(&offsets).view([-1, 2]), Tensor::from_slice(&flips));
    let got = pre.apply_gathered(&images, &idx, Some(&flips), Some(&crops));
    assert_eq!(got.size(), [4, 3, 227, 227]);
    let cropped = crop_flip_tensor(&images.index_select(0, &idx), 4, Some(&crops), Some(&flips)).to_kind(Kind::Float);
    let mean = Tensor::from_slice(&spec.mean).view([1, 3, 1, 1]).to_kind(Kind::Float);
    let std = Tensor::from_slice(&spec.std).view([1, 3, 1, 1]).to_kind(Kind::Float);
    // libtorch's resize in float: its weights are float, as the kernel's are.
    let want = ((cropped / 255.0 - mean) / std).upsample_bilinear2d([227, 227], false, None, None);
    let diff = common::max_abs_diff(&got, &want);
    eprintln!("crop + resize vs libtorch ops: max |diff| = {diff:.2e}");
    assert!(diff < 1e-5, "crop + resize differs from libtorch by {diff}");
}

// ---------------------------------------------------------------- the spec

#[test]
fn specs_are_checked_with_clear_errors_and_round_trip_through_json() {
    let ok = TransformSpec::resnet18_cifar();
    for (spec, message) in [
        (TransformSpec { std: vec![0.2, 0.2], ..ok.clone() }, "mean has 3 values and its std 2"),
        (TransformSpec { mean: vec![], std: vec![], ..ok.clone() }, "mean has 0 values"),
        (TransformSpec { std: vec![0.2, 0.0, 0.2], ..ok.clone() }, "std of channel 1 is 0"),
        (TransformSpec { mean: vec![0.2, 0.2, f64::NAN], ..ok.clone() }, "mean of channel 2 is NaN"),
        (TransformSpec { resize: Some(0), ..ok.clone() }, "resize to 0×0"),
        (TransformSpec { random_crop_padding: Some(-1), ..ok.clone() }, "padding -1"),
    ] {
        let err = Preprocess::new(&spec, Device::Cpu, false).unwrap_err();
        assert!(err.to_string().contains(message), "{err} (expected: {message})");
    }
    let err = ok.check_images([1, 32, 32]).unwrap_err();
    assert!(err.to_string().contains("the images have 1 channels but the transform normalises 3"), "{err}");
    assert!(ok.check_images([3, 0, 32]).is_err());
    ok.check_images([3, 32, 32]).unwrap();
    for spec in [TransformSpec::alexnet_tutorial(), TransformSpec::resnet18_cifar()] {
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<TransformSpec>(&json).unwrap(), spec);
    }
    // Absent optional fields read as None.
    let spec: TransformSpec = serde_json::from_str(r#"{"mean":[0.5],"std":[0.25],"flip":false}"#).unwrap();
    assert_eq!((spec.resize, spec.random_crop_padding), (None, None));
}

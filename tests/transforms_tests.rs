//! The transforms of any experiment: the AlexNet recipe's output pinned byte for byte, the
//! random crop with padding against torchvision, the fused CPU kernel against the tensor path
//! (what CUDA runs), and the crop offsets' draws.

mod common;

use tch::{Device, Kind, Tensor};
use tch_alexnet::data::batches::Batches;
use tch_alexnet::data::split::epoch_plan;
use tch_alexnet::data::transforms::Preprocess;

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
        let pre = Preprocess::new(Device::Cpu).channels_last(channels_last);
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

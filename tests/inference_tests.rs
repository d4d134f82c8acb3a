//! `inference::predict`, what the `predict` example runs: the same answers in batches of any
//! size as in one (memory stays one batch's), and bf16 autocast close to fp32.

mod common;

use tch::{nn, Device, Kind, Tensor};
use tch_alexnet::data::transform_spec::TransformSpec;
use tch_alexnet::inference::{predict, PredictOptions, Prediction};
use tch_alexnet::model::ModelKind;

/// A randomly initialised AlexNet-BN and seven random 32×32 images, the same in every test
/// (drawn under the lock on libtorch's global generator: the tests run in parallel).
fn network_and_images() -> (nn::VarStore, Box<dyn tch_alexnet::model::Network>, Tensor) {
    common::with_seed(7, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ModelKind::Alexnet.build(&vs.root(), 10).unwrap();
        let images = Tensor::randint(256, [7, 3, 32, 32], (Kind::Uint8, Device::Cpu));
        (vs, net, images)
    })
}

fn run(options: PredictOptions) -> Vec<Vec<Prediction>> {
    let (_vs, net, images) = network_and_images();
    predict(net.as_ref(), 10, &TransformSpec::alexnet_tutorial(), &images, Device::Cpu, options).unwrap()
}

fn options(top: i64, batch_size: usize, amp: bool) -> PredictOptions {
    PredictOptions { top, batch_size, amp }
}

#[test]
fn batches_of_any_size_give_the_answers_of_one_batch() {
    let whole = run(options(3, 64, false));
    assert_eq!(whole.len(), 7);
    for batch_size in [1, 2, 3, 7] {
        let batched = run(options(3, batch_size, false));
        assert_eq!(batched.len(), 7, "batch size {batch_size}");
        for (image, (a, b)) in whole.iter().zip(&batched).enumerate() {
            let classes = |p: &[Prediction]| p.iter().map(|p| p.class).collect::<Vec<_>>();
            assert_eq!(classes(a), classes(b), "image {image}, batch size {batch_size}");
            for (a, b) in a.iter().zip(b) {
                // Another batch size may pick other kernels: float rounding only.
                assert!((a.probability - b.probability).abs() < 1e-5, "image {image}: {a:?} vs {b:?}");
            }
        }
    }
}

#[test]
fn top_k_is_sorted_named_and_capped_at_the_number_of_classes() {
    for image in run(options(20, 4, false)) {
        assert_eq!(image.len(), 10, "--top larger than the classes gives every class once");
        let mut classes: Vec<usize> = image.iter().map(|p| p.class).collect();
        assert!(image.windows(2).all(|w| w[0].probability >= w[1].probability), "{image:?}");
        let total: f64 = image.iter().map(|p| p.probability).sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities of all classes sum to {total}");
        classes.sort();
        assert_eq!(classes, (0..10).collect::<Vec<_>>());
        let names = tch_alexnet::data::cifar::CLASS_NAMES;
        assert!(image.iter().all(|p| p.name == names[p.class]), "{image:?}");
    }
}

#[test]
fn amp_gives_fp32_s_probabilities_to_bf16_precision() {
    let fp32 = run(options(10, 4, false));
    let bf16 = run(options(10, 4, true));
    for (a, b) in fp32.iter().zip(&bf16) {
        let by_class = |p: &[Prediction]| {
            let mut v = vec![0.0; 10];
            p.iter().for_each(|p| v[p.class] = p.probability);
            v
        };
        let (a, b) = (by_class(a), by_class(b));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        // bf16 keeps 8 bits of mantissa: logits of a random network, some tenths apart, move by
        // about 1% through eight layers; the probabilities by less.
        assert!(worst < 0.02, "fp32 {a:?}\nbf16 {b:?}");
        assert!(worst > 0.0, "--amp changed nothing: is autocast on?");
    }
}

#[test]
fn a_zero_batch_size_is_an_error_not_a_hang() {
    let (_vs, net, images) = network_and_images();
    let spec = TransformSpec::alexnet_tutorial();
    let err = predict(net.as_ref(), 10, &spec, &images, Device::Cpu, options(3, 0, false)).unwrap_err();
    assert!(err.to_string().contains("batch size"), "{err}");
}

//! Checks that libtorch is linked and computes: fails if the build picked up no libtorch.

use tch::{Device, Kind, Tensor};

#[test]
fn libtorch_matmul_computes() {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
    let b = a.matmul(&a.transpose(0, 1));
    let got: Vec<f32> = Vec::try_from(b.flatten(0, -1)).unwrap();
    assert_eq!(got, vec![5.0, 11.0, 11.0, 25.0]);
    assert_eq!(b.kind(), Kind::Float);
    assert_eq!(b.device(), Device::Cpu);
}

/// The C++ shim that build.rs compiles against libtorch's headers links and sets the dtype,
/// for the calling thread only (libtorch keeps it per thread).
#[test]
fn cuda_autocast_dtype_can_be_set_to_bf16() {
    tch_alexnet::ffi::set_cuda_autocast_bf16(true).unwrap();
    assert!(tch_alexnet::ffi::cuda_autocast_is_bf16().unwrap());
    let elsewhere = std::thread::spawn(|| tch_alexnet::ffi::cuda_autocast_is_bf16().unwrap()).join().unwrap();
    assert!(!elsewhere, "another thread sees libtorch's default, fp16");
    tch_alexnet::ffi::set_cuda_autocast_bf16(false).unwrap();
    assert!(!tch_alexnet::ffi::cuda_autocast_is_bf16().unwrap());
}

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

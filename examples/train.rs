fn main() {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = tch_alexnet::alexnet(&vs.root(), 10).expect("model");
    let _ = model;
    println!("parameters: {}", tch_alexnet::model::trainable_parameter_count(&vs));
}

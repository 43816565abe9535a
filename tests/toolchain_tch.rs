//! libtorch works from a clean clone: one forward/backward/SGD step on CPU.

use detnas_train::tch::{Device, Kind, Tensor, nn, nn::Module, nn::OptimizerConfig};

#[test]
fn tiny_forward_backward_step_on_cpu() {
    detnas_train::device::init();
    detnas_train::tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq()
        .add(nn::conv2d(vs.root() / "conv", 3, 4, 3, nn::ConvConfig { padding: 1, ..Default::default() }))
        .add_fn(|x| x.relu().mean_dim(&[2i64, 3][..], false, Kind::Float))
        .add(nn::linear(vs.root() / "fc", 4, 2, Default::default()));
    let mut opt = nn::Sgd::default().build(&vs, 0.1).unwrap();
    let x = Tensor::randn([8, 3, 16, 16], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 0, 1, 0, 1, 0, 1]);
    let before = net.forward(&x).cross_entropy_for_logits(&y).double_value(&[]);
    let weight_before = vs.variables()["fc.weight"].copy();
    for _ in 0..5 {
        let loss = net.forward(&x).cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
    }
    let after = net.forward(&x).cross_entropy_for_logits(&y).double_value(&[]);
    assert!(before.is_finite() && after.is_finite());
    assert!(after < before, "loss did not decrease: {before} -> {after}");
    let moved = (vs.variables()["fc.weight"].copy() - weight_before).abs().sum(Kind::Float).double_value(&[]);
    assert!(moved > 0.0);
}

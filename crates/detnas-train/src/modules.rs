//! Convolution + BatchNorm units built from [`detnas_core::detector::plan::ConvUnit`], with parameter names
//! taken verbatim from the plan (so checkpoints load straight into the exporter).

use crate::optim::PathParam;
use detnas_core::detector::plan::{ConvUnit, ParamSpec};
use std::cell::Cell;
use tch::{Device, Kind, Tensor, nn};

/// Creates the variable `full_name` (dot-separated) under `root` with the given values.
pub fn var(root: &nn::Path<'_>, full_name: &str, shape: &[usize], values: &[f32], trainable: bool) -> Tensor {
    let mut parts: Vec<&str> = full_name.split('.').collect();
    let leaf = parts.pop().expect("non-empty name");
    let mut path = root.clone();
    for p in parts {
        path = path / p;
    }
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let init = Tensor::from_slice(values).reshape(&dims).to_device(path.device());
    if trainable {
        path.var_copy(leaf, &init)
    } else {
        let t = path.zeros_no_train(leaf, &dims);
        tch::no_grad(|| t.shallow_clone().copy_(&init));
        t
    }
}

/// Looks `name` up in `specs` and creates it with its initial values.
pub struct Builder<'a, 'p> {
    /// Where the variables are created.
    pub root: &'a nn::Path<'p>,
    /// Parameter name -> its spec and initial values.
    pub specs: std::collections::HashMap<String, (ParamSpec, Vec<f32>)>,
}

impl Builder<'_, '_> {
    pub(crate) fn make(&self, name: &str) -> Tensor {
        let (spec, values) = self.specs.get(name).unwrap_or_else(|| panic!("parameter `{name}` is not in the plan"));
        var(self.root, name, &spec.shape, values, !spec.buffer)
    }
}

/// How BN statistics are updated in train mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BnUpdate {
    /// Exponential moving average with this momentum (PyTorch's default 0.1).
    Ema(f64),
    /// Exact cumulative average over the batches seen since the last reset.
    Cumulative,
}

/// BatchNorm2d with explicit running statistics.
pub struct Bn {
    /// Scale (gamma).
    pub weight: Tensor,
    /// Shift (beta).
    pub bias: Tensor,
    /// Running mean (a buffer).
    pub running_mean: Tensor,
    /// Running variance (a buffer).
    pub running_var: Tensor,
    /// Epsilon added to the variance.
    pub eps: f64,
    update: Cell<BnUpdate>,
    batches: Cell<u64>,
}

impl Bn {
    /// Batch norm of `x`: in train mode with the batch's statistics, which update the running ones
    /// per the update rule ([`BnUpdate`]); otherwise with the running statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let momentum = match self.update.get() {
            BnUpdate::Ema(m) => m,
            BnUpdate::Cumulative => 1.0 / (self.batches.get() + 1) as f64,
        };
        if train {
            self.batches.set(self.batches.get() + 1);
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            momentum,
            self.eps,
            false,
        )
    }

    /// Resets the running statistics (mean 0, variance 1) and the batch count.
    pub fn reset(&self, update: BnUpdate) {
        tch::no_grad(|| {
            let _ = self.running_mean.shallow_clone().fill_(0.0);
            let _ = self.running_var.shallow_clone().fill_(1.0);
        });
        self.batches.set(0);
        self.update.set(update);
    }

    /// Sets how the running statistics are updated, keeping them and the batch count.
    pub fn set_update(&self, update: BnUpdate) {
        self.update.set(update);
    }
}

/// A conv (optional bias), optional BN, optional ReLU.
pub struct ConvBn {
    /// Parameter prefixes of the conv and of its BN.
    pub conv_name: String,
    /// Parameter prefix of the BN, if any.
    pub bn_name: Option<String>,
    /// Conv weight.
    pub weight: Tensor,
    /// Conv bias, if any.
    pub bias: Option<Tensor>,
    /// The BN after the conv, if any.
    pub bn: Option<Bn>,
    stride: i64,
    padding: i64,
    groups: i64,
    relu: bool,
    /// One group per channel (depthwise): elastic widths keep it depthwise.
    depthwise: bool,
}

impl ConvBn {
    /// Creates the unit `u` from `b` (BN epsilon `eps`).
    pub fn new(b: &Builder<'_, '_>, u: &ConvUnit, eps: f64) -> Self {
        let bn = u.bn.as_ref().map(|p| Bn {
            weight: b.make(&format!("{p}.weight")),
            bias: b.make(&format!("{p}.bias")),
            running_mean: b.make(&format!("{p}.running_mean")),
            running_var: b.make(&format!("{p}.running_var")),
            eps,
            update: Cell::new(BnUpdate::Ema(0.1)),
            batches: Cell::new(0),
        });
        ConvBn {
            conv_name: u.conv.clone(),
            bn_name: u.bn.clone(),
            weight: b.make(&format!("{}.weight", u.conv)),
            bias: u.bias.then(|| b.make(&format!("{}.bias", u.conv))),
            bn,
            stride: u.stride as i64,
            padding: u.padding() as i64,
            groups: u.groups as i64,
            relu: u.relu,
            depthwise: u.groups > 1 && u.groups == u.in_channels,
        }
    }

    /// Conv, then BN and ReLU when the unit has them (`train`: BN in train mode).
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let s = self.stride;
        let p = self.padding;
        let mut y = x.conv2d(&self.weight, self.bias.as_ref(), [s, s], [p, p], [1, 1], self.groups);
        if let Some(bn) = &self.bn {
            y = bn.forward(&y, train);
        }
        if self.relu { y.relu() } else { y }
    }

    /// Trainable tensors of this unit with their parameter names.
    pub fn parameters(&self) -> Vec<PathParam> {
        let mut v = vec![PathParam::whole(format!("{}.weight", self.conv_name), self.weight.shallow_clone())];
        if let Some(b) = &self.bias {
            v.push(PathParam::whole(format!("{}.bias", self.conv_name), b.shallow_clone()));
        }
        if let (Some(bn), Some(name)) = (&self.bn, &self.bn_name) {
            v.push(PathParam::whole(format!("{name}.weight"), bn.weight.shallow_clone()));
            v.push(PathParam::whole(format!("{name}.bias"), bn.bias.shallow_clone()));
        }
        v
    }

    /// Full output channels of the weight.
    pub fn out_channels(&self) -> i64 {
        self.weight.size()[0]
    }

    /// The weight and bias blocks of an elastic forward with `inputs` input channels and `out`
    /// output channels (`None`: all); a depthwise conv uses `inputs` for both.
    fn active_shapes(&self, inputs: i64, out: Option<i64>) -> (Vec<i64>, i64) {
        let mut w = self.weight.size();
        let out = if self.depthwise { inputs } else { out.unwrap_or(w[0]) };
        w[0] = out;
        if !self.depthwise {
            w[1] = inputs;
        }
        (w, out)
    }

    /// Output channels of an elastic forward with `inputs` input channels and `out` requested.
    pub fn active_out(&self, inputs: i64, out: Option<i64>) -> i64 {
        self.active_shapes(inputs, out).1
    }

    /// Elastic forward (Once-for-All): the conv uses the first `out` filters (`None`: all) over the
    /// first `x.size()[1]` input channels of its weight, and the first `out` bias values; a
    /// depthwise conv uses as many channels as `x` has. Units with BN are not elastic (the FPN and
    /// head have none); with the full shapes this is exactly [`ConvBn::forward`].
    pub fn forward_active(&self, x: &Tensor, out: Option<i64>, train: bool) -> Tensor {
        let (shape, out) = self.active_shapes(x.size()[1], out);
        if shape == self.weight.size() {
            return self.forward(x, train);
        }
        assert!(self.bn.is_none(), "elastic conv `{}` has a BN", self.conv_name);
        let w = crate::optim::leading(&self.weight, &shape);
        let b = self.bias.as_ref().map(|b| b.narrow(0, 0, out));
        let groups = if self.depthwise { out } else { self.groups };
        let (s, p) = (self.stride, self.padding);
        let y = x.conv2d(&w, b.as_ref(), [s, s], [p, p], [1, 1], groups);
        if self.relu { y.relu() } else { y }
    }

    /// The parameters [`ConvBn::forward_active`] uses for `inputs` input channels and `out` output
    /// channels, with their active blocks.
    pub fn parameters_active(&self, inputs: i64, out: Option<i64>) -> Vec<PathParam> {
        let (shape, out) = self.active_shapes(inputs, out);
        let mut v = vec![PathParam::block(format!("{}.weight", self.conv_name), self.weight.shallow_clone(), shape)];
        if let Some(b) = &self.bias {
            v.push(PathParam::block(format!("{}.bias", self.conv_name), b.shallow_clone(), vec![out]));
        }
        if let (Some(bn), Some(name)) = (&self.bn, &self.bn_name) {
            v.push(PathParam::block(format!("{name}.weight"), bn.weight.shallow_clone(), vec![out]));
            v.push(PathParam::block(format!("{name}.bias"), bn.bias.shallow_clone(), vec![out]));
        }
        v
    }
}

/// Runs units in sequence.
pub fn chain(units: &[ConvBn], x: &Tensor, train: bool) -> Tensor {
    let mut y = x.shallow_clone();
    for u in units {
        y = u.forward(&y, train);
    }
    y
}

/// Float32 tensor from a slice on `device`.
pub fn tensor(values: &[f32], shape: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(values).reshape(shape).to_kind(Kind::Float).to_device(device)
}

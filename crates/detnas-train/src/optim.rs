//! SGD with momentum that updates only the tensors it is given (the sampled path), and the learning
//! rate schedules of DetNAS.
//!
//! Tensors outside the path get no gradient, no momentum update and no weight decay in that step:
//! the caller passes [`crate::net::RetinaNet::path_parameters`] of the step's architecture. For
//! elastic layers (a genes supernet) a parameter names the leading block the step used
//! ([`PathParam::active`]); only that block of the tensor and of its momentum is updated.

use std::collections::HashMap;
use tch::Tensor;

/// A trainable tensor on the step's path.
pub struct PathParam {
    /// Parameter name (from [`detnas_core::detector::plan`]).
    pub name: String,
    /// The whole tensor.
    pub tensor: Tensor,
    /// The leading block (first `n` of every dimension) the step used; `None`: all of it.
    pub active: Option<Vec<i64>>,
}

impl PathParam {
    /// All of `tensor`.
    pub fn whole(name: String, tensor: Tensor) -> Self {
        PathParam { name, tensor, active: None }
    }

    /// The leading block `shape` of `tensor`; `None` when it is the whole tensor.
    pub fn block(name: String, tensor: Tensor, shape: Vec<i64>) -> Self {
        let active = (tensor.size() != shape).then_some(shape);
        PathParam { name, tensor, active }
    }
}

/// The view of `t`'s leading block `shape` (shares storage: in-place ops write through).
pub fn leading(t: &Tensor, shape: &[i64]) -> Tensor {
    let mut v = t.shallow_clone();
    for (d, &n) in shape.iter().enumerate() {
        if v.size()[d] != n {
            v = v.narrow(d as i64, 0, n);
        }
    }
    v
}

/// SGD with momentum and (decoupled from nothing: classic L2) weight decay.
pub struct PathSgd {
    /// Momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Apply weight decay to 1-D tensors (BN affine, biases) too. DetNAS classification: no.
    pub decay_1d: bool,
    buffers: HashMap<String, Tensor>,
}

impl PathSgd {
    /// An optimiser with empty momentum buffers.
    pub fn new(momentum: f64, weight_decay: f64, decay_1d: bool) -> Self {
        PathSgd { momentum, weight_decay, decay_1d, buffers: HashMap::new() }
    }

    /// One update of the tensors in `params` that received a gradient; for a parameter with an
    /// active block, the block of the tensor and of its momentum buffer only (views updated in
    /// place; the buffer starts as zeros of the whole shape, which gives PyTorch's first step).
    pub fn step(&mut self, params: &[PathParam], lr: f64) {
        tch::no_grad(|| {
            for PathParam { name, tensor: p, active } in params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let decay = self.weight_decay != 0.0 && (self.decay_1d || p.dim() > 1);
                if let Some(shape) = active {
                    let (pv, gv) = (leading(p, shape), leading(&g, shape));
                    let d = if decay { &gv + &pv * self.weight_decay } else { gv };
                    let buf = self.buffers.entry(name.clone()).or_insert_with(|| p.zeros_like());
                    let bv = leading(buf, shape);
                    let _ = bv.shallow_clone().g_mul_scalar_(self.momentum).g_add_(&d);
                    let _ = pv.shallow_clone().g_sub_(&(bv * lr));
                    continue;
                }
                let d = if decay { &g + p * self.weight_decay } else { g.shallow_clone() };
                let buf = match self.buffers.get_mut(name) {
                    Some(b) => {
                        let _ = b.g_mul_scalar_(self.momentum).g_add_(&d);
                        b.shallow_clone()
                    }
                    None => {
                        let b = d.detach().copy();
                        self.buffers.insert(name.clone(), b.shallow_clone());
                        b
                    }
                };
                let _ = p.shallow_clone().g_sub_(&(buf * lr));
            }
        });
    }

    /// Clears the gradients of `params`.
    pub fn zero_grad(params: &[PathParam]) {
        for p in params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Momentum buffers by parameter name (for checkpoints).
    pub fn buffers(&self) -> &HashMap<String, Tensor> {
        &self.buffers
    }

    /// Restores momentum buffers.
    pub fn set_buffers(&mut self, buffers: HashMap<String, Tensor>) {
        self.buffers = buffers;
    }
}

/// Global L2 norm of the gradients of `params`; scales them down to `max_norm` if above.
pub fn clip_grad_norm(params: &[PathParam], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).filter(Tensor::defined).collect();
    if grads.is_empty() {
        return 0.0;
    }
    let total = tch::no_grad(|| {
        grads.iter().map(|g| g.pow_tensor_scalar(2).sum(tch::Kind::Float)).fold(Tensor::from(0f32), |a, b| a + b).sqrt()
    })
    .double_value(&[]);
    if total.is_finite() && total > max_norm {
        tch::no_grad(|| {
            for g in &grads {
                let _ = g.shallow_clone().g_mul_scalar_(max_norm / (total + 1e-6));
            }
        });
    }
    total
}

/// Learning-rate schedules.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Linear warm-up from `base * warmup_factor`, then `x gamma` at each milestone (detection).
    WarmupStep {
        /// The base learning rate.
        base: f64,
        /// Steps of the warm-up.
        warmup_iters: usize,
        /// Fraction of `base` the warm-up starts from.
        warmup_factor: f64,
        /// Steps at which the rate is multiplied by `gamma`.
        milestones: Vec<usize>,
        /// The factor at each milestone.
        gamma: f64,
    },
    /// Linear decay from `base` to 0 over `total` iterations (classification pretraining).
    Linear {
        /// The initial learning rate.
        base: f64,
        /// Steps over which it decays to 0.
        total: usize,
    },
}

impl LrSchedule {
    /// Learning rate at iteration `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        match self {
            LrSchedule::WarmupStep { base, warmup_iters, warmup_factor, milestones, gamma } => {
                let decay = gamma.powi(milestones.iter().filter(|&&m| step >= m).count() as i32);
                let warm = if step < *warmup_iters {
                    let alpha = step as f64 / *warmup_iters as f64;
                    warmup_factor * (1.0 - alpha) + alpha
                } else {
                    1.0
                };
                base * decay * warm
            }
            LrSchedule::Linear { base, total } => base * (1.0 - step as f64 / (*total).max(1) as f64).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let s = LrSchedule::WarmupStep {
            base: 0.02,
            warmup_iters: 10,
            warmup_factor: 1.0 / 3.0,
            milestones: vec![20, 30],
            gamma: 0.1,
        };
        assert!((s.at(0) - 0.02 / 3.0).abs() < 1e-12);
        assert!((s.at(10) - 0.02).abs() < 1e-12);
        assert!((s.at(25) - 0.002).abs() < 1e-12);
        assert!((s.at(35) - 0.0002).abs() < 1e-12);
        let l = LrSchedule::Linear { base: 0.5, total: 100 };
        assert!((l.at(50) - 0.25).abs() < 1e-12 && l.at(200) == 0.0);
    }

    #[test]
    fn a_block_update_equals_the_whole_update_inside_and_touches_nothing_outside() {
        let init = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, -1.5, 2.5]).view([2, 3]);
        let whole = init.copy().set_requires_grad(true);
        let sliced = init.copy().set_requires_grad(true);
        let (mut a, mut b) = (PathSgd::new(0.9, 0.1, true), PathSgd::new(0.9, 0.1, true));
        for _ in 0..2 {
            let small = leading(&whole, &[1, 2]).copy().detach().set_requires_grad(true);
            let pw = vec![PathParam::whole("w".into(), small.shallow_clone())];
            PathSgd::zero_grad(&pw);
            (&small * &small).sum(tch::Kind::Float).backward();
            a.step(&pw, 0.5);
            tch::no_grad(|| leading(&whole, &[1, 2]).copy_(&small));

            let ps = vec![PathParam::block("w".into(), sliced.shallow_clone(), vec![1, 2])];
            PathSgd::zero_grad(&ps);
            let v = leading(&sliced, &[1, 2]);
            (&v * &v).sum(tch::Kind::Float).backward();
            b.step(&ps, 0.5);
        }
        assert!(whole.equal(&sliced), "{whole} vs {sliced}");
        let buf = &b.buffers()["w"];
        assert!(leading(buf, &[1, 2]).equal(&a.buffers()["w"]));
        let outside: Vec<f32> = Vec::try_from(buf.flatten(0, -1)).unwrap();
        assert_eq!(&outside[2..], &[0.0; 4], "momentum outside the block stays zero");
        let kept: Vec<f32> = Vec::try_from(sliced.detach().flatten(0, -1)).unwrap();
        assert_eq!(&kept[2..], &[3.0, 0.5, -1.5, 2.5], "no decay outside the block");
    }

    #[test]
    fn sgd_matches_the_pytorch_update_rule() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]).set_requires_grad(true);
        let params = vec![PathParam::whole("w".to_string(), p.shallow_clone())];
        let mut opt = PathSgd::new(0.9, 0.1, false);
        for _ in 0..2 {
            PathSgd::zero_grad(&params);
            (&p * &p).sum(tch::Kind::Float).backward();
            opt.step(&params, 0.5);
        }
        // step 1: g = 2p + 0.1p = 2.1p, buf = g, p1 = p - 0.5 g = -0.05 p
        // step 2: g = 2.1 p1, buf = 0.9 * 2.1 p + 2.1 p1, p2 = p1 - 0.5 buf
        let p0 = [1.0f64, -2.0];
        let v: Vec<f32> = Vec::try_from(p.flatten(0, -1)).unwrap();
        for i in 0..2 {
            let p1 = p0[i] - 0.5 * 2.1 * p0[i];
            let buf = 0.9 * 2.1 * p0[i] + 2.1 * p1;
            assert!((v[i] as f64 - (p1 - 0.5 * buf)).abs() < 1e-5, "{v:?}");
        }
    }
}

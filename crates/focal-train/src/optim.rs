//! AdamW with burn's algorithm, defaults and state, each parameter's update done by the
//! backend's [`fused_adamw`](FusedAttentionBackend::fused_adamw): one parallel pass over the
//! parameter, its gradient and its moments on ndarray, where burn's `AdamW` makes about fifteen
//! tensor-op passes (as much time as a layer's backward on a CPU); burn's own formula on every
//! other backend.
//!
//! It is a drop-in for `burn::optim::AdamWConfig`: the same fields and defaults (and one more,
//! `decay_vectors`, to leave biases and norm weights undecayed as transformers does), results
//! bit-identical to burn's on ndarray and wgpu (tested), and the same state
//! ([`AdamWState`]), so optimizer records saved by one load into the other.
//!
//! ```
//! use focal_train::FusedAdamWConfig;
//! use burn::backend::{Autodiff, NdArray};
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::{GradientsParams, Optimizer};
//! use burn::tensor::Tensor;
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let mut model: Linear<B> = LinearConfig::new(4, 2).init(&device);
//! let mut optimizer = FusedAdamWConfig::new().with_weight_decay(0.01).init::<B, Linear<B>>();
//! let x = Tensor::<B, 2>::ones([3, 4], &device);
//! let loss = model.forward(x).powi_scalar(2).mean();
//! let grads = GradientsParams::from_grads(loss.backward(), &model);
//! model = optimizer.step(1e-3, model, grads);
//! ```

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use focal_attention::{AdamWMoments, AdamWStep, FusedAttentionBackend};

/// [`FusedAdamW`]'s configuration: `burn::optim::AdamWConfig`'s fields and defaults.
#[derive(Config, Debug)]
pub struct FusedAdamWConfig {
    /// Decay of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to `√v̂` in the denominator.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Decoupled weight decay.
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    /// Decay only where the parameter's sign agrees with the first moment's
    /// (<https://arxiv.org/abs/2510.12402>).
    #[config(default = false)]
    pub cautious_weight_decay: bool,
    /// AMSGrad: divide by the running maximum of the second moment.
    #[config(default = false)]
    pub amsgrad: bool,
    /// Whether the weight decay applies to vector parameters too (biases, norm weights), as
    /// burn's `AdamW` does (default true); transformers' `Trainer` leaves them undecayed
    /// (false).
    #[config(default = true)]
    pub decay_vectors: bool,
    /// Gradient clipping, applied by burn's optimizer adaptor before the update.
    pub grad_clipping: Option<GradientClippingConfig>,
}

/// AdamW (Loshchilov & Hutter, 2019) with a fused update; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct FusedAdamW {
    /// The hyper-parameters (its gradient clipping is the adaptor's, see
    /// [`FusedAdamWConfig::init`]).
    config: FusedAdamWConfig,
}

impl FusedAdamWConfig {
    /// The optimizer alone, for `burn::optim::adaptor::OptimizerAdaptor::from` or burn-train.
    pub fn build(&self) -> FusedAdamW {
        FusedAdamW {
            config: self.clone(),
        }
    }

    /// The optimizer for a module `M` trained on `B`, with the configured gradient clipping.
    pub fn init<B, M>(&self) -> OptimizerAdaptor<FusedAdamW, M, B>
    where
        B: AutodiffBackend<InnerBackend: FusedAttentionBackend>,
        M: AutodiffModule<B>,
    {
        let optimizer = OptimizerAdaptor::from(self.build());
        match &self.grad_clipping {
            Some(clipping) => optimizer.with_grad_clipping(clipping.init()),
            None => optimizer,
        }
    }
}

impl<B: FusedAttentionBackend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (previous, time) = match state {
            Some(AdamWState { momentum }) => (
                Some(AdamWMoments {
                    moment_1: momentum.moment_1,
                    moment_2: momentum.moment_2,
                    max_moment_2: momentum.max_moment_2,
                }),
                momentum.time + 1,
            ),
            None => (None, 1),
        };
        let c = &self.config;
        let step = AdamWStep {
            lr,
            beta_1: c.beta_1,
            beta_2: c.beta_2,
            epsilon: c.epsilon,
            weight_decay: if D == 1 && !c.decay_vectors {
                0.0
            } else {
                c.weight_decay
            },
            cautious_weight_decay: c.cautious_weight_decay,
            amsgrad: c.amsgrad,
            time,
        };
        let out = B::fused_adamw(step, tensor, grad, previous);
        let mut momentum = AdaptiveMomentumState::new(time, out.moment_1, out.moment_2);
        momentum.max_moment_2 = out.max_moment_2;
        (out.param, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// An optimizer that counts the steps it takes: burn-train's loop decides when the optimizer
/// steps (it skips an epoch's last batches that do not fill a gradient accumulation), so the
/// count reported for a run is measured here, not derived from a formula.
#[derive(Clone)]
pub struct CountingOptimizer<O> {
    inner: O,
    steps: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<O> CountingOptimizer<O> {
    /// `inner`, counting its steps from `start` (a resumed run's steps so far).
    pub fn new(inner: O, start: usize) -> Self {
        Self {
            inner,
            steps: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(start)),
        }
    }

    /// The counter, shared with every clone (burn-train clones the optimizer).
    pub fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.steps.clone()
    }

    fn count(&self) {
        self.steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl<O, M, B> burn::optim::Optimizer<M, B> for CountingOptimizer<O>
where
    O: burn::optim::Optimizer<M, B>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    type Record = O::Record;

    fn step(&mut self, lr: LearningRate, module: M, grads: burn::optim::GradientsParams) -> M {
        self.count();
        self.inner.step(lr, module, grads)
    }

    fn step_multi(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: burn::optim::MultiGradientsParams,
    ) -> M {
        self.count();
        self.inner.step_multi(lr, module, grads)
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
            steps: self.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::Distribution;
    use burn::tensor::backend::Backend;
    use focal_attention::without_cpu_kernel;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        first: Linear<B>,
        second: Linear<B>,
    }

    impl<B: Backend> Two<B> {
        fn loss(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
            self.second
                .forward(self.first.forward(x).tanh())
                .powi_scalar(2)
                .mean()
        }

        fn values(&self) -> Vec<f32> {
            let mut all = Vec::new();
            for layer in [&self.first, &self.second] {
                all.extend(layer.weight.val().into_data().to_vec::<f32>().unwrap());
                let bias = layer.bias.as_ref().expect("a bias");
                all.extend(bias.val().into_data().to_vec::<f32>().unwrap());
            }
            all
        }
    }

    /// Every parameter after each of four steps on changing inputs and learning rates, from
    /// the same start, under burn's `AdamW` and under [`FusedAdamW`] configured alike. The
    /// first weight (22 200 values) is split among threads by ndarray's kernel, the others
    /// run in one piece.
    fn trajectories<B: FusedAttentionBackend>(
        weight_decay: f32,
        cautious: bool,
        amsgrad: bool,
        device: &B::Device,
    ) -> [Vec<Vec<f32>>; 2] {
        type A<B> = Autodiff<B>;
        let start = Two::<A<B>> {
            first: LinearConfig::new(37, 600).init(device),
            second: LinearConfig::new(600, 5).init(device),
        };
        let inputs: Vec<Tensor<A<B>, 2>> = (0..4)
            .map(|_| Tensor::random([6, 37], Distribution::Normal(0.0, 1.0), device))
            .collect();
        let mut burn_optim = AdamWConfig::new()
            .with_weight_decay(weight_decay)
            .with_cautious_weight_decay(cautious)
            .with_amsgrad(amsgrad)
            .init::<A<B>, Two<A<B>>>();
        let mut fused_optim = FusedAdamWConfig::new()
            .with_weight_decay(weight_decay)
            .with_cautious_weight_decay(cautious)
            .with_amsgrad(amsgrad)
            .init::<A<B>, Two<A<B>>>();
        // Parameters are initialised lazily, and a clone before that would draw its own.
        start.values();
        let (mut burn_model, mut fused_model) = (start.clone(), start);
        let (mut burn_steps, mut fused_steps) = (Vec::new(), Vec::new());
        for (i, x) in inputs.into_iter().enumerate() {
            let lr = 0.05 / (1 + i) as f64;
            let grads =
                GradientsParams::from_grads(burn_model.loss(x.clone()).backward(), &burn_model);
            burn_model = burn_optim.step(lr, burn_model, grads);
            burn_steps.push(burn_model.values());
            let grads = GradientsParams::from_grads(fused_model.loss(x).backward(), &fused_model);
            fused_model = fused_optim.step(lr, fused_model, grads);
            fused_steps.push(fused_model.values());
        }
        [burn_steps, fused_steps]
    }

    /// Plain, cautious and AMSGrad AdamW, with and without weight decay: the fused update
    /// (ndarray's kernel, and the generic path with the kernel off; the generic path on wgpu)
    /// equals burn's `AdamW` bit for bit at every step.
    fn fused_adamw_equals_burns_adamw<B: FusedAttentionBackend>(device: &B::Device) {
        let _rng = crate::rng_lock();
        for (weight_decay, cautious, amsgrad) in [
            (0.0, false, false),
            (1e-2, false, false),
            (0.3, true, false),
            (1e-2, false, true),
        ] {
            for kernel in [true, false] {
                let run = || trajectories::<B>(weight_decay, cautious, amsgrad, device);
                let [burn, fused] = if kernel {
                    run()
                } else {
                    without_cpu_kernel(run)
                };
                for (step, (want, got)) in burn.iter().zip(&fused).enumerate() {
                    assert_eq!(want.len(), got.len());
                    for (i, (w, g)) in want.iter().zip(got).enumerate() {
                        assert!(
                            w.to_bits() == g.to_bits(),
                            "weight decay {weight_decay}, cautious {cautious}, amsgrad {amsgrad}, \
                             kernel {kernel}, step {step}, value {i}: burn {w}, fused {g}"
                        );
                    }
                }
            }
        }
    }

    /// Without `decay_vectors`, the weight decay shrinks the weight matrix but leaves the bias
    /// alone (transformers' `Trainer`): with zero gradients, a step only decays.
    fn vectors_are_not_decayed_when_asked<B: FusedAttentionBackend>(device: &B::Device) {
        type A<B> = Autodiff<B>;
        let _rng = crate::rng_lock();
        let model: Linear<A<B>> = LinearConfig::new(3, 2).init(device);
        let before = |m: &Linear<A<B>>| {
            (
                m.weight.val().into_data().to_vec::<f32>().unwrap(),
                m.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap(),
            )
        };
        let (weight, bias) = before(&model);
        for decay_vectors in [false, true] {
            let mut optimizer = FusedAdamWConfig::new()
                .with_weight_decay(0.5)
                .with_decay_vectors(decay_vectors)
                .init::<A<B>, Linear<A<B>>>();
            let x = Tensor::<A<B>, 2>::ones([1, 3], device);
            let loss = model.forward(x).sum().mul_scalar(0.0);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let stepped = optimizer.step(0.1, model.clone(), grads);
            let (new_weight, new_bias) = before(&stepped);
            for (w, n) in weight.iter().zip(&new_weight) {
                assert!((n - w * 0.95).abs() < 1e-6, "weight {w} -> {n}");
            }
            for (b, n) in bias.iter().zip(&new_bias) {
                let want = if decay_vectors { b * 0.95 } else { *b };
                assert!(
                    (n - want).abs() < 1e-6,
                    "decay_vectors {decay_vectors}: bias {b} -> {n}"
                );
            }
        }
    }

    focal_backend::backend_tests!(
        fused_adamw_equals_burns_adamw,
        vectors_are_not_decayed_when_asked
    );
}

//! One AdamW update of one parameter tensor, as a backend extension
//! ([`FusedAttentionBackend::fused_adamw`](crate::FusedAttentionBackend::fused_adamw)).
//!
//! burn's `AdamW` runs a dozen tensor ops per parameter per step, each a pass over memory with
//! an allocation (and, on ndarray, a copy whenever the array is still shared); on a CPU the
//! optimizer then costs about as much as a layer's backward. The update is the same arithmetic
//! done once per element: ndarray does it in one parallel pass, in place where the arrays are
//! not shared (`cpu/adamw.rs`); every other backend runs [`generic_adamw`], burn's own
//! formula op for op.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The hyper-parameters of one AdamW step, as burn's `AdamWConfig` names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to `√v̂` in the denominator.
    pub epsilon: f32,
    /// Decoupled weight decay (the parameter shrinks by `lr · weight_decay` per step).
    pub weight_decay: f32,
    /// Decay only the entries whose sign agrees with the first moment's
    /// (<https://arxiv.org/abs/2510.12402>).
    pub cautious_weight_decay: bool,
    /// AMSGrad: divide by the running maximum of the second moment.
    pub amsgrad: bool,
    /// The step's number, counted from 1 (the bias corrections use it).
    pub time: usize,
}

/// A parameter and its optimizer state after (or before) a step.
#[derive(Clone, Debug)]
pub struct AdamWTensors<B: Backend, const D: usize> {
    /// The parameter.
    pub param: Tensor<B, D>,
    /// First moment (running mean of the gradient).
    pub moment_1: Tensor<B, D>,
    /// Second moment (running mean of the squared gradient).
    pub moment_2: Tensor<B, D>,
    /// The running maximum of the second moment (AMSGrad only).
    pub max_moment_2: Option<Tensor<B, D>>,
}

/// The previous moments of a parameter: `None` on its first step.
#[derive(Clone, Debug)]
pub struct AdamWMoments<B: Backend, const D: usize> {
    /// First moment.
    pub moment_1: Tensor<B, D>,
    /// Second moment.
    pub moment_2: Tensor<B, D>,
    /// The running maximum of the second moment (AMSGrad only; taken as `moment_2` when
    /// absent).
    pub max_moment_2: Option<Tensor<B, D>>,
}

impl AdamWStep {
    /// `1 − β₁ᵗ` and `1 − β₂ᵗ`, in `f32` as burn computes them.
    pub(crate) fn corrections(&self) -> (f32, f32) {
        let time = i32::try_from(self.time).unwrap_or(i32::MAX);
        (1f32 - self.beta_1.powi(time), 1f32 - self.beta_2.powi(time))
    }

    /// `lr · weight_decay`, the fraction of the parameter decayed.
    pub(crate) fn decay_rate(&self) -> f64 {
        self.lr * self.weight_decay as f64
    }
}

/// The tensor-op implementation of one AdamW step, for every backend: burn 0.21's `AdamW`
/// (its `AdaptiveMomentumW::transform` and `step`) op for op, so results are bit-identical to
/// it.
pub fn generic_adamw<B: Backend, const D: usize>(
    step: AdamWStep,
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    previous: Option<AdamWMoments<B, D>>,
) -> AdamWTensors<B, D> {
    let factor_1 = 1.0 - step.beta_1;
    let factor_2 = 1.0 - step.beta_2;
    let (moment_1, moment_2, max_moment_2) = match previous {
        Some(previous) => {
            let moment_1 = previous
                .moment_1
                .mul_scalar(step.beta_1)
                .add(grad.clone().mul_scalar(factor_1));
            let moment_2 = previous
                .moment_2
                .mul_scalar(step.beta_2)
                .add(grad.square().mul_scalar(factor_2));
            // Without AMSGrad a running maximum is carried along untouched, as burn does.
            let max_moment_2 = match (step.amsgrad, previous.max_moment_2) {
                (true, max) => Some(
                    max.unwrap_or_else(|| moment_2.clone())
                        .max_pair(moment_2.clone()),
                ),
                (false, kept) => kept,
            };
            (moment_1, moment_2, max_moment_2)
        }
        None => {
            let moment_1 = grad.clone().mul_scalar(factor_1);
            let moment_2 = grad.square().mul_scalar(factor_2);
            let max_moment_2 = step.amsgrad.then(|| moment_2.clone());
            (moment_1, moment_2, max_moment_2)
        }
    };
    let (correction_1, correction_2) = step.corrections();
    let moment_1_corrected = moment_1.clone().div_scalar(correction_1);
    let v = match &max_moment_2 {
        Some(max) if step.amsgrad => max,
        _ => &moment_2,
    };
    let moment_2_corrected = v.clone().div_scalar(correction_2);
    let delta = moment_1_corrected.div(moment_2_corrected.sqrt().add_scalar(step.epsilon));

    let decay_rate = step.decay_rate();
    let decayed = if decay_rate == 0.0 {
        param
    } else if step.cautious_weight_decay {
        let differ = param
            .clone()
            .greater_equal_elem(0.0)
            .not_equal(moment_1.clone().greater_equal_elem(0.0));
        param.clone() - param.mul_scalar(decay_rate).mask_fill(differ, 0.0)
    } else {
        param.mul_scalar(1.0 - decay_rate)
    };
    AdamWTensors {
        param: decayed - delta.mul_scalar(step.lr),
        moment_1,
        moment_2,
        max_moment_2,
    }
}

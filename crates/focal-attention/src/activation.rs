//! Element-wise activations, as burn tensor ops and (through
//! [`project_activated`](crate::project_activated)) fused into the CPU linear kernel.

use burn::config::Config;
use burn::tensor::{Tensor, activation, backend::Backend};

/// An element-wise activation: of a feed-forward network, or fused into a linear layer
/// ([`project_activated`](crate::project_activated)).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`, as in the original Transformer.
    Relu,
    /// The exact GELU, `x Φ(x)`, as in BERT and PyTorch's `nn.GELU()`.
    Gelu,
    /// The tanh approximation of GELU, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, as in GPT-2
    /// and PyTorch's `nn.GELU(approximate="tanh")` (Hugging Face's `gelu_new`).
    GeluTanh,
    /// SiLU (swish), `x σ(x)`, as in LLaMA's SwiGLU.
    Silu,
}

impl Activation {
    /// Applies the activation element-wise.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Relu => activation::relu(x),
            // Not burn's `gelu`: its backward is the derivative of the tanh approximation
            // (off by up to ~1e-3), where this form's gradient is exact through `erf`'s.
            Activation::Gelu => {
                let cdf = (x.clone().mul_scalar(std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0)
                    .mul_scalar(0.5);
                x * cdf
            }
            Activation::GeluTanh => {
                let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044_715))
                    .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
                x.clone().mul_scalar(0.5) * (inner.tanh() + 1.0)
            }
            Activation::Silu => activation::silu(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use focal_backend::assert_close;

    /// The exact GELU's gradient is `Φ(x) + x φ(x)` (burn's own `gelu` differentiates the tanh
    /// approximation instead, which is off in the third digit).
    fn gelu_gradient_is_exact<B: crate::FusedAttentionBackend>(device: &B::Device) {
        let x = Tensor::<Autodiff<B>, 1>::from_floats([-1.0, 0.5, 2.0], device).require_grad();
        let grads = Activation::Gelu.apply(x.clone()).sum().backward();
        // Φ(-1) - φ(-1), Φ(0.5) + 0.5 φ(0.5), Φ(2) + 2 φ(2)
        let expected =
            Tensor::<B, 1>::from_floats([-0.083_315_47, 0.867_495_1, 1.085_231_8], device);
        assert_close(x.grad(&grads).unwrap(), expected, 1e-6);
    }

    focal_backend::backend_tests!(gelu_gradient_is_exact);
}

//! The position-wise feed-forward network, plain or gated.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
pub use focal_attention::Activation;
use focal_attention::{FusedAttentionBackend, project, project_activated};
use focal_backend::ConfigError;

/// Configuration of [`FeedForward`].
///
/// Plain: `contract(dropout(act(expand(x))))` with `expand: d → d_ff`, `contract: d_ff → d`.
///
/// Gated (`gated = true`; GEGLU with [`Activation::Gelu`], SwiGLU with [`Activation::Silu`],
/// ReGLU with [`Activation::Relu`]; Shazeer 2020): `expand: d → d_ff` is one packed projection
/// whose output splits into a gate half `g` (the first `d_ff / 2` features) and a value half
/// `u` (the last `d_ff / 2`); the result is `contract(dropout(act(g) ⊙ u))` with
/// `contract: d_ff / 2 → d`. So `d_ff` must be even, and LLaMA's `intermediate_size` is
/// `d_ff / 2` (its `gate_proj` and `up_proj` weights stacked make `expand`).
#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Width of the expanding projection (often `4 d`; for gated networks, both halves).
    pub d_ff: usize,
    /// Activation. Default ReLU.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Gated linear unit (GEGLU / SwiGLU / ReGLU) instead of a plain activation. Default false.
    #[config(default = false)]
    pub gated: bool,
    /// Whether the two projections have a bias. Default true (LLaMA and T5 have none).
    #[config(default = true)]
    pub bias: bool,
    /// Dropout after the activation (PyTorch's place for it). Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl FeedForwardConfig {
    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "FeedForwardConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_positive(NAME, "d_ff", self.d_ff)?;
        ConfigError::ensure(!self.gated || self.d_ff.is_multiple_of(2), NAME, || {
            format!(
                "d_ff ({}) must be even for a gated feed-forward (it packs the gate and value halves)",
                self.d_ff
            )
        })?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)
    }

    /// Width of the product entering `contract`.
    fn hidden(&self) -> usize {
        if self.gated { self.d_ff / 2 } else { self.d_ff }
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<FeedForward<B>, ConfigError> {
        self.validate()?;
        let linear = |d_in, d_out| {
            LinearConfig::new(d_in, d_out)
                .with_bias(self.bias)
                .init(device)
        };
        Ok(FeedForward {
            expand: linear(self.d_model, self.d_ff),
            contract: linear(self.hidden(), self.d_model),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: self.activation,
            gated: self.gated,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> FeedForward<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The position-wise feed-forward network, plain or gated (see [`FeedForwardConfig`]).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `d → d_ff` (for gated networks the gate half first, then the value half).
    pub expand: Linear<B>,
    /// `d_ff → d` (`d_ff / 2 → d` when gated).
    pub contract: Linear<B>,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
    gated: bool,
}

impl<B: FusedAttentionBackend> FeedForward<B> {
    /// # Shapes
    ///
    /// - x `[b, l, d]` → `[b, l, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = if self.gated {
            let expanded = project(&self.expand, x); // [b, l, d_ff]
            let [b, l, width] = expanded.dims();
            let half = width / 2;
            let gate = expanded.clone().slice([0..b, 0..l, 0..half]);
            let value = expanded.slice([0..b, 0..l, half..width]);
            self.activation.apply(gate) * value // [b, l, d_ff / 2]
        } else {
            project_activated(&self.expand, x, self.activation) // [b, l, d_ff]
        };
        project(&self.contract, self.dropout.forward(hidden))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use focal_backend::assert_close;

    /// Each activation at -1 and 0.5 against values computed in f64 with Python's `math`.
    fn activations_match_their_formulas<B: Backend>(device: &B::Device) {
        let x = Tensor::<B, 3>::from_floats([[[-1.0, 0.5]]], device);
        for (act, expected) in [
            (Activation::Relu, [0.0f32, 0.5]),
            // x Φ(x): Φ(-1) = 0.15865525, Φ(0.5) = 0.69146246
            (Activation::Gelu, [-0.158_655_25, 0.345_731_23]),
            (Activation::GeluTanh, [-0.158_808_01, 0.345_714]),
            // x σ(x)
            (Activation::Silu, [-0.268_941_42, 0.311_229_67]),
        ] {
            let y = act.apply(x.clone());
            assert_close(y, Tensor::from_floats([[expected]], device), 1e-6);
        }
    }

    fn keeps_the_shape<B: FusedAttentionBackend>(device: &B::Device) {
        for gated in [false, true] {
            let ffn = FeedForwardConfig::new(8, 32)
                .with_activation(Activation::Gelu)
                .with_gated(gated)
                .init::<B>(device);
            let y = ffn.forward(Tensor::zeros([2, 3, 8], device));
            assert_eq!(y.dims(), [2, 3, 8]);
        }
    }

    /// SwiGLU computed by hand from the packed projection: `(silu(x Wg) ⊙ x Wu) Wc`.
    fn swiglu_matches_its_definition<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 40);
        let ffn = FeedForwardConfig::new(4, 6)
            .with_activation(Activation::Silu)
            .with_gated(true)
            .with_bias(false)
            .init::<B>(device);
        let x = Tensor::<B, 3>::random([2, 3, 4], Distribution::Normal(0.0, 1.0), device);
        let w = ffn.expand.weight.val(); // [4, 6]
        let gate = x.clone().matmul(w.clone().slice([0..4, 0..3]).unsqueeze());
        let value = x.clone().matmul(w.slice([0..4, 3..6]).unsqueeze());
        let expected = (burn::tensor::activation::silu(gate) * value)
            .matmul(ffn.contract.weight.val().unsqueeze()); // [2, 3, 4]
        assert_close(ffn.forward(x), expected, 1e-5);
    }

    focal_backend::backend_tests!(
        activations_match_their_formulas,
        keeps_the_shape,
        swiglu_matches_its_definition
    );

    #[test]
    fn zero_hidden_width_is_refused() {
        let err = FeedForwardConfig::new(8, 0).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid FeedForwardConfig: d_ff must be at least 1, got 0"
        );
    }

    #[test]
    fn odd_gated_width_is_refused() {
        let err = FeedForwardConfig::new(8, 33)
            .with_gated(true)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid FeedForwardConfig: d_ff (33) must be even for a gated feed-forward (it packs the gate and value halves)"
        );
    }
}

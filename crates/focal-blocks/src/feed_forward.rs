//! The position-wise feed-forward network.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, activation, backend::Backend};
use focal_backend::ConfigError;

/// The activation between the two linear layers of a [`FeedForward`].
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`, as in the original Transformer.
    Relu,
    /// The exact GELU, `x Φ(x)`, as in BERT and PyTorch's `nn.GELU()`.
    Gelu,
}

impl Activation {
    fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Relu => activation::relu(x),
            Activation::Gelu => activation::gelu(x),
        }
    }
}

/// Configuration of [`FeedForward`].
#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Hidden width (often `4 d`).
    pub d_ff: usize,
    /// Activation. Default ReLU.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Dropout after the activation. Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl FeedForwardConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "FeedForwardConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_positive(NAME, "d_ff", self.d_ff)?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<FeedForward<B>, ConfigError> {
        self.validate()?;
        Ok(FeedForward {
            expand: LinearConfig::new(self.d_model, self.d_ff).init(device),
            contract: LinearConfig::new(self.d_ff, self.d_model).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: self.activation,
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

/// `contract(dropout(activation(expand(x))))`, applied at every position.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    expand: Linear<B>,
    contract: Linear<B>,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> FeedForward<B> {
    /// # Shapes
    ///
    /// - x `[b, l, d]` → `[b, l, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = self.activation.apply(self.expand.forward(x)); // [b, l, d_ff]
        self.contract.forward(self.dropout.forward(hidden))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_backend::assert_close;

    /// With identity-like weights the activation is visible in the output.
    fn activations_match_their_formulas<B: Backend>(device: &B::Device) {
        let x = Tensor::<B, 3>::from_floats([[[-1.0, 0.5]]], device);
        for (act, expected) in [
            (Activation::Relu, [0.0f32, 0.5]),
            // gelu(x) = x Φ(x): Φ(-1) = 0.15865525, Φ(0.5) = 0.69146246
            (Activation::Gelu, [-0.158_655_25, 0.345_731_23]),
        ] {
            let y = act.apply(x.clone());
            assert_close(y, Tensor::from_floats([[expected]], device), 1e-6);
        }
    }

    fn keeps_the_shape<B: Backend>(device: &B::Device) {
        let ffn = FeedForwardConfig::new(8, 32)
            .with_activation(Activation::Gelu)
            .init::<B>(device);
        let y = ffn.forward(Tensor::zeros([2, 3, 8], device));
        assert_eq!(y.dims(), [2, 3, 8]);
    }

    focal_backend::backend_tests!(activations_match_their_formulas, keeps_the_shape);

    #[test]
    fn zero_hidden_width_is_refused() {
        let err = FeedForwardConfig::new(8, 0).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid FeedForwardConfig: d_ff must be at least 1, got 0"
        );
    }
}

//! Residual connections with LayerNorm, and the configuration shared by encoder and decoder
//! layers.

use crate::{Activation, FeedForward, FeedForwardConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Tensor, backend::Backend};
use focal_attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use focal_backend::ConfigError;

/// Where the LayerNorm sits relative to the residual connection.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `norm(x + dropout(f(x)))`: the original Transformer and BERT (PyTorch `norm_first=False`).
    Post,
    /// `x + dropout(f(norm(x)))`: GPT-2 and most modern models (PyTorch `norm_first=True`);
    /// usually paired with a final norm after the stack.
    Pre,
}

/// Configuration of [`ResidualNorm`].
#[derive(Config, Debug)]
pub struct ResidualNormConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Pre- or post-norm. Default post-norm.
    #[config(default = "NormPlacement::Post")]
    pub placement: NormPlacement,
    /// Dropout on the sublayer's output before the addition. Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// LayerNorm epsilon. Default 1e-5, as in PyTorch.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl ResidualNormConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "ResidualNormConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)?;
        ConfigError::ensure(self.layer_norm_eps > 0.0, NAME, || {
            format!("layer_norm_eps ({}) must be positive", self.layer_norm_eps)
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResidualNorm<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        ResidualNorm {
            norm: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            placement: self.placement,
        }
    }
}

/// A sublayer wrapped in a residual connection and a LayerNorm, pre- or post-norm.
#[derive(Module, Debug)]
pub struct ResidualNorm<B: Backend> {
    norm: LayerNorm<B>,
    dropout: Dropout,
    #[module(skip)]
    placement: NormPlacement,
}

impl<B: Backend> ResidualNorm<B> {
    /// Applies `sublayer` with the residual connection and norm; the sublayer may return an extra
    /// value (e.g. attention weights), which is passed through.
    ///
    /// # Shapes
    ///
    /// - x `[b, l, d]`; `sublayer` maps `[b, l, d]` → `[b, l, d]`; output `[b, l, d]`
    pub fn forward<T>(
        &self,
        x: Tensor<B, 3>,
        sublayer: impl FnOnce(Tensor<B, 3>) -> (Tensor<B, 3>, T),
    ) -> (Tensor<B, 3>, T) {
        match self.placement {
            NormPlacement::Post => {
                let (y, extra) = sublayer(x.clone());
                (self.norm.forward(x + self.dropout.forward(y)), extra)
            }
            NormPlacement::Pre => {
                let (y, extra) = sublayer(self.norm.forward(x.clone()));
                (x + self.dropout.forward(y), extra)
            }
        }
    }
}

/// The hyper-parameters of one encoder or decoder layer, shared by both (as in PyTorch's
/// `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer`).
#[derive(Config, Debug)]
pub struct TransformerLayerConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Attention heads `h`; must divide `d_model`.
    pub n_heads: usize,
    /// Feed-forward hidden width.
    pub d_ff: usize,
    /// Dropout on attention probabilities, inside the feed-forward, and on each sublayer's output.
    /// Default 0.1, as in PyTorch.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Feed-forward activation. Default ReLU.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Pre- or post-norm. Default post-norm, as in PyTorch.
    #[config(default = "NormPlacement::Post")]
    pub norm: NormPlacement,
    /// LayerNorm epsilon. Default 1e-5.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl TransformerLayerConfig {
    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.attention().validate()?;
        self.feed_forward().validate()?;
        self.residual().validate()
    }

    pub(crate) fn attention(&self) -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(self.d_model, self.n_heads).with_dropout(self.dropout)
    }

    pub(crate) fn feed_forward(&self) -> FeedForwardConfig {
        FeedForwardConfig::new(self.d_model, self.d_ff)
            .with_activation(self.activation)
            .with_dropout(self.dropout)
    }

    pub(crate) fn residual(&self) -> ResidualNormConfig {
        ResidualNormConfig::new(self.d_model)
            .with_placement(self.norm)
            .with_dropout(self.dropout)
            .with_layer_norm_eps(self.layer_norm_eps)
    }

    pub(crate) fn init_attention<B: Backend>(&self, device: &B::Device) -> MultiHeadAttention<B> {
        self.attention().init(device)
    }

    pub(crate) fn init_feed_forward<B: Backend>(&self, device: &B::Device) -> FeedForward<B> {
        self.feed_forward().init(device)
    }

    pub(crate) fn init_residual<B: Backend>(&self, device: &B::Device) -> ResidualNorm<B> {
        self.residual().init(device)
    }

    /// The final LayerNorm of a stack (used with pre-norm).
    pub(crate) fn init_final_norm<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNormConfig::new(self.d_model)
            .with_epsilon(self.layer_norm_eps)
            .init(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use focal_backend::assert_close;

    fn post_and_pre_norm_wiring<B: Backend>(device: &B::Device) {
        let x = Tensor::<B, 3>::random([2, 3, 4], Distribution::Normal(0.0, 1.0), device);
        let double = |t: Tensor<B, 3>| (t.clone() * 2.0, ());
        let post = ResidualNormConfig::new(4).init::<B>(device);
        let (y, ()) = post.forward(x.clone(), double);
        // Fresh LayerNorm has gamma 1, beta 0: post-norm gives norm(3x).
        assert_close(y, post.norm.forward(x.clone() * 3.0), 1e-6);

        let pre = ResidualNormConfig::new(4)
            .with_placement(NormPlacement::Pre)
            .init::<B>(device);
        let (y, ()) = pre.forward(x.clone(), double);
        assert_close(y, x.clone() + pre.norm.forward(x) * 2.0, 1e-6);
    }

    focal_backend::backend_tests!(post_and_pre_norm_wiring);

    #[test]
    fn layer_config_reports_the_first_bad_value() {
        let err = TransformerLayerConfig::new(30, 4, 64)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid MultiHeadAttentionConfig: d_model (30) is not divisible by n_heads (4)"
        );
        let err = TransformerLayerConfig::new(32, 4, 64)
            .with_dropout(-0.5)
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("dropout (-0.5) must be in [0, 1)"),
            "{err}"
        );
    }
}

//! Encoder layer and stack.

use crate::{FeedForward, ResidualNorm, TransformerLayerConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{Tensor, backend::Backend};
use focal_attention::{AttentionMask, FusedAttentionBackend, MhaInput, MultiHeadAttention};
use focal_backend::ConfigError;

/// One encoder layer: self-attention, then feed-forward, each wrapped in a [`ResidualNorm`].
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    self_attention: MultiHeadAttention<B>,
    self_attention_residual: ResidualNorm<B>,
    feed_forward: FeedForward<B>,
    feed_forward_residual: ResidualNorm<B>,
}

impl<B: Backend> EncoderLayer<B> {
    /// Builds a layer from a validated config.
    pub(crate) fn new(config: &TransformerLayerConfig, device: &B::Device) -> Self {
        Self {
            self_attention: config.init_attention(device),
            self_attention_residual: config.init_residual(device),
            feed_forward: config.init_feed_forward(device),
            feed_forward_residual: config.init_residual(device),
        }
    }
}

impl<B: FusedAttentionBackend> EncoderLayer<B> {
    /// # Shapes
    ///
    /// - x `[b, l, d]` → `[b, l, d]`; `mask` must fit `[b, h, l, l]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let (x, ()) = self.self_attention_residual.forward(x, |x| {
            let input = MhaInput::self_attn(x).mask(mask.clone());
            (self.self_attention.forward(input).context, ())
        });
        let (x, ()) = self
            .feed_forward_residual
            .forward(x, |x| (self.feed_forward.forward(x), ()));
        x
    }
}

/// Configuration of [`TransformerEncoder`].
#[derive(Config, Debug)]
pub struct TransformerEncoderConfig {
    /// The configuration of every layer.
    pub layer: TransformerLayerConfig,
    /// Number of layers.
    pub n_layers: usize,
    /// Whether a LayerNorm follows the last layer (needed with pre-norm). Default false.
    #[config(default = false)]
    pub final_norm: bool,
}

impl TransformerEncoderConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::ensure_positive("TransformerEncoderConfig", "n_layers", self.n_layers)?;
        self.layer.validate()
    }

    /// Builds the stack, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<TransformerEncoder<B>, ConfigError> {
        self.validate()?;
        Ok(TransformerEncoder {
            layers: (0..self.n_layers)
                .map(|_| EncoderLayer::new(&self.layer, device))
                .collect(),
            final_norm: self.final_norm.then(|| self.layer.init_final_norm(device)),
        })
    }

    /// Builds the stack.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerEncoder<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A stack of [`EncoderLayer`]s with an optional final LayerNorm.
#[derive(Module, Debug)]
pub struct TransformerEncoder<B: Backend> {
    layers: Vec<EncoderLayer<B>>,
    final_norm: Option<LayerNorm<B>>,
}

impl<B: FusedAttentionBackend> TransformerEncoder<B> {
    /// # Shapes
    ///
    /// - x `[b, l, d]` → `[b, l, d]`; `mask` must fit `[b, h, l, l]` (typically key padding)
    pub fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let x = self
            .layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, mask));
        match &self.final_norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NormPlacement;
    use burn::tensor::Distribution;
    use focal_attention::padding_mask_from_lengths;
    use focal_backend::assert_close;

    /// Changing padded positions changes nothing at the real positions, through two layers, in
    /// both norm placements.
    fn padding_invariance_through_the_stack<B: FusedAttentionBackend>(device: &B::Device) {
        for norm in [NormPlacement::Post, NormPlacement::Pre] {
            focal_backend::seed::<B>(device, 20);
            let encoder = TransformerEncoderConfig::new(
                TransformerLayerConfig::new(16, 4, 32)
                    .with_dropout(0.0)
                    .with_norm(norm),
                2,
            )
            .with_final_norm(norm == NormPlacement::Pre)
            .init::<B>(device);
            let x = Tensor::<B, 3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), device);
            let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[5, 3], 5, device));
            let y = encoder.forward(x.clone(), &mask);
            let noise = Tensor::random([1, 2, 16], Distribution::Normal(0.0, 9.0), device);
            let y2 = encoder.forward(x.slice_assign([1..2, 3..5, 0..16], noise), &mask);
            assert_close(
                y.clone().slice([1..2, 0..3, 0..16]),
                y2.clone().slice([1..2, 0..3, 0..16]),
                1e-5,
            );
            assert_close(
                y.slice([0..1, 0..5, 0..16]),
                y2.slice([0..1, 0..5, 0..16]),
                1e-5,
            );
        }
    }

    focal_backend::backend_tests!(padding_invariance_through_the_stack);

    #[test]
    fn zero_layers_are_refused() {
        let err = TransformerEncoderConfig::new(TransformerLayerConfig::new(8, 2, 16), 0)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid TransformerEncoderConfig: n_layers must be at least 1, got 0"
        );
    }
}

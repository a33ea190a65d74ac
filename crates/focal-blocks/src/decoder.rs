//! Decoder layer and stack.

use crate::{FeedForward, ResidualNorm, TransformerLayerConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{Tensor, backend::Backend};
use focal_attention::{AttentionMask, FusedAttentionBackend, MhaInput, MultiHeadAttention};
use focal_backend::ConfigError;

/// One decoder layer: masked self-attention, cross-attention to the encoder's output (the
/// memory), then feed-forward, each wrapped in a [`ResidualNorm`].
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    self_attention: MultiHeadAttention<B>,
    self_attention_residual: ResidualNorm<B>,
    cross_attention: MultiHeadAttention<B>,
    cross_attention_residual: ResidualNorm<B>,
    feed_forward: FeedForward<B>,
    feed_forward_residual: ResidualNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Builds a layer from a validated config.
    pub(crate) fn new(config: &TransformerLayerConfig, device: &B::Device) -> Self {
        Self {
            self_attention: config.init_attention(device),
            self_attention_residual: config.init_residual(device),
            cross_attention: config.init_attention(device),
            cross_attention_residual: config.init_residual(device),
            feed_forward: config.init_feed_forward(device),
            feed_forward_residual: config.init_residual(device),
        }
    }
}

impl<B: FusedAttentionBackend> DecoderLayer<B> {
    /// # Shapes
    ///
    /// - x `[b, l, d]`, memory `[b, s, d]` → `[b, l, d]`
    /// - `self_mask` must fit `[b, h, l, l]` (typically causal), `memory_mask` `[b, h, l, s]`
    ///   (typically the source's key padding)
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        memory: Tensor<B, 3>,
        self_mask: &AttentionMask<B>,
        memory_mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let (x, ()) = self.self_attention_residual.forward(x, |x| {
            let input = MhaInput::self_attn(x).mask(self_mask.clone());
            (self.self_attention.forward(input).context, ())
        });
        let (x, ()) = self.cross_attention_residual.forward(x, |x| {
            let input = MhaInput::cross(x, memory).mask(memory_mask.clone());
            (self.cross_attention.forward(input).context, ())
        });
        let (x, ()) = self
            .feed_forward_residual
            .forward(x, |x| (self.feed_forward.forward(x), ()));
        x
    }
}

/// Configuration of [`TransformerDecoder`].
#[derive(Config, Debug)]
pub struct TransformerDecoderConfig {
    /// The configuration of every layer.
    pub layer: TransformerLayerConfig,
    /// Number of layers.
    pub n_layers: usize,
    /// Whether a LayerNorm follows the last layer (needed with pre-norm). Default false.
    #[config(default = false)]
    pub final_norm: bool,
}

impl TransformerDecoderConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::ensure_positive("TransformerDecoderConfig", "n_layers", self.n_layers)?;
        self.layer.validate()
    }

    /// Builds the stack, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<TransformerDecoder<B>, ConfigError> {
        self.validate()?;
        Ok(TransformerDecoder {
            layers: (0..self.n_layers)
                .map(|_| DecoderLayer::new(&self.layer, device))
                .collect(),
            final_norm: self.final_norm.then(|| self.layer.init_final_norm(device)),
        })
    }

    /// Builds the stack.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerDecoder<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A stack of [`DecoderLayer`]s with an optional final LayerNorm.
#[derive(Module, Debug)]
pub struct TransformerDecoder<B: Backend> {
    layers: Vec<DecoderLayer<B>>,
    final_norm: Option<LayerNorm<B>>,
}

impl<B: FusedAttentionBackend> TransformerDecoder<B> {
    /// # Shapes
    ///
    /// - x `[b, l, d]`, memory `[b, s, d]` → `[b, l, d]`; masks as in [`DecoderLayer::forward`]
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        memory: Tensor<B, 3>,
        self_mask: &AttentionMask<B>,
        memory_mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let x = self.layers.iter().fold(x, |x, layer| {
            layer.forward(x, memory.clone(), self_mask, memory_mask)
        });
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

    /// With a causal self-mask, the outputs for a prefix do not depend on later target tokens;
    /// with the memory's padding masked, padded memory positions change nothing.
    fn causal_and_memory_padding_invariance<B: FusedAttentionBackend>(device: &B::Device) {
        for norm in [NormPlacement::Post, NormPlacement::Pre] {
            focal_backend::seed::<B>(device, 30);
            let decoder = TransformerDecoderConfig::new(
                TransformerLayerConfig::new(16, 2, 32)
                    .with_dropout(0.0)
                    .with_norm(norm),
                2,
            )
            .with_final_norm(norm == NormPlacement::Pre)
            .init::<B>(device);
            let n = Distribution::Normal(0.0, 1.0);
            let x = Tensor::<B, 3>::random([2, 4, 16], n, device);
            let memory = Tensor::<B, 3>::random([2, 6, 16], n, device);
            let memory_mask =
                AttentionMask::key_padding(padding_mask_from_lengths(&[6, 4], 6, device));
            let causal = AttentionMask::causal();
            let y = decoder.forward(x.clone(), memory.clone(), &causal, &memory_mask);

            let noise = Tensor::random([2, 1, 16], Distribution::Normal(0.0, 9.0), device);
            let x2 = x.slice_assign([0..2, 3..4, 0..16], noise.clone());
            let memory2 = memory.slice_assign(
                [1..2, 4..6, 0..16],
                noise.slice([0..1, 0..1, 0..16]).repeat_dim(1, 2),
            );
            let y2 = decoder.forward(x2, memory2.clone(), &causal, &memory_mask);
            assert_close(
                y.clone().slice([0..1, 0..3, 0..16]),
                y2.clone().slice([0..1, 0..3, 0..16]),
                1e-5,
            );
            assert_close(
                y.slice([1..2, 0..3, 0..16]),
                y2.slice([1..2, 0..3, 0..16]),
                1e-5,
            );
        }
    }

    focal_backend::backend_tests!(causal_and_memory_padding_invariance);
}

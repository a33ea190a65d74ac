//! Token embeddings with sinusoidal positions.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig};
use burn::tensor::{Int, Tensor, backend::Backend};
use focal_attention::{SinusoidalPositionalEncoding, SinusoidalPositionalEncodingConfig};
use focal_backend::ConfigError;

/// Configuration of [`TokenEmbedding`].
#[derive(Config, Debug)]
pub struct TokenEmbeddingConfig {
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
    /// Model width `d`.
    pub d_model: usize,
    /// Longest sequence the positions cover. Default 512.
    #[config(default = 512)]
    pub max_len: usize,
    /// Multiply the token embeddings by `√d` before adding positions, as in the original
    /// Transformer. Default true.
    #[config(default = true)]
    pub scale_by_sqrt_d: bool,
    /// Dropout on the sum. Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl TokenEmbeddingConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "TokenEmbeddingConfig";
        ConfigError::ensure_positive(NAME, "vocab_size", self.vocab_size)?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)?;
        self.positions().validate()
    }

    fn positions(&self) -> SinusoidalPositionalEncodingConfig {
        SinusoidalPositionalEncodingConfig::new(self.d_model).with_max_len(self.max_len)
    }

    /// N(0, 1/d) when the embeddings are scaled by `√d` (fairseq's Transformer and the paper's
    /// convention), so that the scaled embeddings have unit variance like the positions; burn's
    /// default N(0, 1) otherwise. With N(0, 1) and the `√d` scale the token embeddings would
    /// have standard deviation `√d` and drown the positional signal.
    fn initializer(&self) -> Initializer {
        let std = if self.scale_by_sqrt_d {
            1.0 / (self.d_model as f64).sqrt()
        } else {
            1.0
        };
        Initializer::Normal { mean: 0.0, std }
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<TokenEmbedding<B>, ConfigError> {
        self.validate()?;
        Ok(TokenEmbedding {
            tokens: EmbeddingConfig::new(self.vocab_size, self.d_model)
                .with_initializer(self.initializer())
                .init(device),
            positions: self.positions().init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            scale: if self.scale_by_sqrt_d {
                (self.d_model as f64).sqrt()
            } else {
                1.0
            },
            vocab_size: self.vocab_size,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TokenEmbedding<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `dropout(embedding(ids) · scale + positions)`.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    tokens: Embedding<B>,
    positions: SinusoidalPositionalEncoding<B>,
    dropout: Dropout,
    scale: f64,
    vocab_size: usize,
}

impl<B: Backend> TokenEmbedding<B> {
    /// Embeds token ids at positions `offset .. offset + l`.
    ///
    /// # Shapes
    ///
    /// - ids `[b, l]` → `[b, l, d]`
    ///
    /// Token ids must be below `vocab_size`; that is checked where ids enter the library (the
    /// vocabulary and data loaders), not here on the hot path.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, offset: usize) -> Tensor<B, 3> {
        let x = self.tokens.forward(ids).mul_scalar(self.scale); // [b, l, d]
        self.dropout.forward(self.positions.forward(x, offset))
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ElementConversion;
    use focal_attention::sinusoidal_table;
    use focal_backend::assert_close;

    fn scaled_tokens_plus_positions<B: Backend>(device: &B::Device) {
        let embedding = TokenEmbeddingConfig::new(5, 4).init::<B>(device);
        let ids = Tensor::<B, 2, Int>::from_ints([[3, 1]], device);
        let y = embedding.forward(ids, 0);
        let table = embedding.tokens.weight.val();
        let expected = Tensor::cat(
            vec![table.clone().slice([3..4, 0..4]), table.slice([1..2, 0..4])],
            0,
        ) * 2.0
            + sinusoidal_table::<B>(2, 4, device);
        assert_close(y, expected.unsqueeze::<3>(), 1e-6);
    }

    /// Scaled embeddings have unit variance, like the positions.
    fn scaled_embeddings_have_unit_variance<B: Backend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 5);
        let embedding = TokenEmbeddingConfig::new(1000, 64).init::<B>(device);
        let scaled = embedding.tokens.weight.val() * 8.0;
        let var: f32 = scaled.var(1).mean().into_scalar().elem();
        assert!((0.9..1.1).contains(&var), "variance {var}");
    }

    focal_backend::backend_tests!(
        scaled_tokens_plus_positions,
        scaled_embeddings_have_unit_variance
    );
}

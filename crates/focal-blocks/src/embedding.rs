//! Token embeddings with positions, segments and weight tying.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig};
use burn::tensor::{Int, Tensor, backend::Backend};
use focal_attention::{
    FusedAttentionBackend, LearnedPositionalEmbedding, LearnedPositionalEmbeddingConfig,
    SinusoidalPositionalEncoding, SinusoidalPositionalEncodingConfig, project_transposed,
};
use focal_backend::ConfigError;

/// Which absolute positions a [`TokenEmbedding`] adds.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PositionKind {
    /// Fixed sinusoids ("Attention Is All You Need").
    Sinusoidal,
    /// A learned table (BERT, GPT-2).
    Learned,
    /// None (positions come from inside attention: RoPE, ALiBi, relative bias).
    None,
}

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
    /// Absolute positions. Default sinusoidal.
    #[config(default = "PositionKind::Sinusoidal")]
    pub positions: PositionKind,
    /// Number of segment (token type) ids, as BERT's sentence A / B; 0 for none. Default 0.
    #[config(default = 0)]
    pub n_segments: usize,
    /// Dropout on the sum. Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl TokenEmbeddingConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "TokenEmbeddingConfig";
        ConfigError::ensure_positive(NAME, "vocab_size", self.vocab_size)?;
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)?;
        let rows = self.vocab_size as u128 + self.max_len as u128 + self.n_segments as u128;
        ConfigError::ensure_fits(
            NAME,
            &format!(
                "the embedding tables ({} + {} + {} rows of {})",
                self.vocab_size, self.max_len, self.n_segments, self.d_model
            ),
            rows.checked_mul(self.d_model as u128),
        )?;
        match self.positions {
            PositionKind::Sinusoidal => self.sinusoidal().validate(),
            PositionKind::Learned => self.learned().validate(),
            PositionKind::None => Ok(()),
        }
    }

    fn sinusoidal(&self) -> SinusoidalPositionalEncodingConfig {
        SinusoidalPositionalEncodingConfig::new(self.d_model).with_max_len(self.max_len)
    }

    fn learned(&self) -> LearnedPositionalEmbeddingConfig {
        LearnedPositionalEmbeddingConfig::new(self.d_model, self.max_len)
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
            positions: match self.positions {
                PositionKind::Sinusoidal => {
                    Some(Positions::Sinusoidal(self.sinusoidal().init(device)))
                }
                PositionKind::Learned => Some(Positions::Learned(self.learned().init(device))),
                PositionKind::None => None,
            },
            segments: (self.n_segments > 0)
                .then(|| EmbeddingConfig::new(self.n_segments, self.d_model).init(device)),
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

/// Fixed or learned absolute positions.
#[derive(Module, Debug)]
pub enum Positions<B: Backend> {
    /// Fixed sinusoids.
    Sinusoidal(SinusoidalPositionalEncoding<B>),
    /// A learned table.
    Learned(LearnedPositionalEmbedding<B>),
}

/// `dropout(embedding(ids) · scale + positions + segments)`, and the tied output projection.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    /// The token table `[vocab, d]` (also the tied output projection).
    pub tokens: Embedding<B>,
    /// The absolute positions, if any.
    pub positions: Option<Positions<B>>,
    /// The segment (token type) table, if any.
    pub segments: Option<Embedding<B>>,
    dropout: Dropout,
    scale: f64,
    vocab_size: usize,
}

impl<B: Backend> TokenEmbedding<B> {
    /// Embeds token ids at positions `offset .. offset + l` (the offset is the number of
    /// positions already decoded).
    ///
    /// # Shapes
    ///
    /// - ids `[b, l]` → `[b, l, d]`
    ///
    /// Token ids must be below `vocab_size`; that is checked where ids enter the library (the
    /// vocabulary and data loaders), not here on the hot path.
    ///
    /// # Panics
    ///
    /// When `offset + l` exceeds `max_len`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, offset: usize) -> Tensor<B, 3> {
        self.embed(ids, None, offset, None)
    }

    /// As [`Self::forward`], adding segment (token type) embeddings `segments` `[b, l]`.
    ///
    /// # Panics
    ///
    /// When the configuration has no segments.
    pub fn forward_with_segments(
        &self,
        ids: Tensor<B, 2, Int>,
        segments: Tensor<B, 2, Int>,
        offset: usize,
    ) -> Tensor<B, 3> {
        assert!(
            self.segments.is_some(),
            "this embedding has no segments (n_segments = 0)"
        );
        self.embed(ids, Some(segments), offset, None)
    }

    /// As [`Self::forward_with_segments`] (or [`Self::forward`] without segments), each
    /// token's vector from the table multiplied by `token_scale` `[b, l]` before positions and
    /// segments are added: with ones, the gradient of a loss with respect to the scale is
    /// gradient × input, `Σ_d e_d ∂loss/∂e_d`, of each token's embedding `e` (what
    /// transformers' `inputs_embeds` receives).
    pub fn forward_scaled(
        &self,
        ids: Tensor<B, 2, Int>,
        segments: Option<Tensor<B, 2, Int>>,
        offset: usize,
        token_scale: Tensor<B, 2>,
    ) -> Tensor<B, 3> {
        self.embed(ids, segments, offset, Some(token_scale))
    }

    fn embed(
        &self,
        ids: Tensor<B, 2, Int>,
        segments: Option<Tensor<B, 2, Int>>,
        offset: usize,
        token_scale: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 3> {
        let mut x = self.tokens.forward(ids); // [b, l, d]
        if let Some(scale) = token_scale {
            x = x * scale.unsqueeze_dim(2);
        }
        if self.scale != 1.0 {
            x = x.mul_scalar(self.scale);
        }
        x = match &self.positions {
            Some(Positions::Sinusoidal(p)) => p.forward(x, offset),
            Some(Positions::Learned(p)) => p.forward(x, offset),
            None => x,
        };
        if let (Some(table), Some(segments)) = (&self.segments, segments) {
            x = x + table.forward(segments);
        }
        self.dropout.forward(x)
    }

    /// The output projection tied to the token embeddings: `hidden · Eᵀ`, the logits over the
    /// vocabulary (GPT-2, BERT's MLM decoder, the original Transformer's shared weights).
    ///
    /// # Shapes
    ///
    /// - hidden `[b, l, d]` → logits `[b, l, vocab_size]`
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3>
    where
        B: FusedAttentionBackend,
    {
        project_transposed(hidden, self.tokens.weight.val()) // table [vocab, d]
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

    /// Learned positions, segments and the tied projection, against their definitions.
    fn learned_positions_segments_and_tied_logits<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 6);
        let embedding = TokenEmbeddingConfig::new(7, 4)
            .with_scale_by_sqrt_d(false)
            .with_positions(PositionKind::Learned)
            .with_max_len(8)
            .with_n_segments(2)
            .init::<B>(device);
        let ids = Tensor::<B, 2, Int>::from_ints([[3, 1, 6]], device);
        let segments = Tensor::<B, 2, Int>::from_ints([[0, 0, 1]], device);
        let y = embedding.forward_with_segments(ids.clone(), segments.clone(), 2);
        let Some(Positions::Learned(positions)) = &embedding.positions else {
            panic!("learned positions expected")
        };
        let tokens = embedding.tokens.forward(ids);
        let expected =
            positions.forward(tokens, 2) + embedding.segments.as_ref().unwrap().forward(segments);
        assert_close(y.clone(), expected, 1e-6);

        let logits = embedding.logits(y.clone()); // [1, 3, 7]
        let table = embedding.tokens.weight.val();
        let row = y.slice([0..1, 1..2, 0..4]).reshape([1, 4]);
        assert_close(
            logits.slice([0..1, 1..2, 0..7]).reshape([1, 7]),
            row.matmul(table.transpose()),
            1e-5,
        );
    }

    focal_backend::backend_tests!(
        scaled_tokens_plus_positions,
        scaled_embeddings_have_unit_variance,
        learned_positions_segments_and_tied_logits
    );
}

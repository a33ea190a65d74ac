//! Transformer blocks for Focal, built from [`focal_attention`].
//!
//! - [`FeedForward`]: the position-wise feed-forward network (ReLU or GELU).
//! - [`ResidualNorm`]: residual connection + LayerNorm, pre-norm or post-norm.
//! - [`EncoderLayer`] / [`DecoderLayer`] and their stacks [`TransformerEncoder`] /
//!   [`TransformerDecoder`], configured by one [`TransformerLayerConfig`].
//! - [`TokenEmbedding`]: token embeddings scaled by `√d` plus sinusoidal positions.
//!
//! The arrangement follows PyTorch's `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer`:
//! dropout inside the feed-forward after the activation, and on each sublayer's output before
//! the residual addition.

mod decoder;
mod embedding;
mod encoder;
mod feed_forward;
mod residual;

pub use decoder::{DecoderLayer, TransformerDecoder, TransformerDecoderConfig};
pub use embedding::{TokenEmbedding, TokenEmbeddingConfig};
pub use encoder::{EncoderLayer, TransformerEncoder, TransformerEncoderConfig};
pub use feed_forward::{Activation, FeedForward, FeedForwardConfig};
pub use residual::{NormPlacement, ResidualNorm, ResidualNormConfig, TransformerLayerConfig};

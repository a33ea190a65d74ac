//! Transformer blocks for Focal, built from [`focal_attention`].
//!
//! - [`FeedForward`]: the position-wise feed-forward network: ReLU, GELU (exact or tanh), SiLU,
//!   and the gated variants GEGLU / SwiGLU.
//! - [`Norm`] (LayerNorm or RMSNorm) and [`ResidualNorm`]: residual connection + norm, pre-norm
//!   or post-norm.
//! - [`TransformerLayer`]: encoder, decoder or decoder-only layer ([`LayerKind`]), with any
//!   attention option of `focal-attention` (grouped-query heads, RoPE, sliding window, the
//!   memory-efficient path) selected through [`TransformerLayerConfig`].
//! - [`TransformerStack`]: a stack of layers with an optional final norm and an optional ALiBi
//!   or T5 relative position bias; per-layer hidden states and attention weights on request;
//!   cached decoding through [`StackCache`] (the memory's cross-attention keys and values are
//!   projected once).
//! - [`Transformer`]: the encoder-decoder (PyTorch's `nn.Transformer`), with PyTorch weight
//!   import (see the key table in [`pytorch`]).
//! - [`TokenEmbedding`]: token embeddings, optionally scaled by `√d`, with sinusoidal, learned or
//!   no positions, optional segments, embedding dropout and a tied output projection.
//!
//! The arrangement follows PyTorch: dropout inside the feed-forward after the activation, and on
//! each sublayer's output before the residual addition. The guide is `docs/blocks.md`.

mod embedding;
mod feed_forward;
mod layer;
mod norm;
pub mod pytorch;
mod stack;
mod transformer;

pub use embedding::{PositionKind, Positions, TokenEmbedding, TokenEmbeddingConfig};
pub use feed_forward::{Activation, FeedForward, FeedForwardConfig};
/// Layer 2's multipliers of heads and probabilities, passed per layer by the stack.
pub use focal_attention::AttentionScales;
pub use layer::{
    CrossAttention, LayerCache, LayerKind, LayerOutput, TransformerLayer, TransformerLayerConfig,
};
pub use norm::{Norm, NormConfig, NormKind, NormPlacement, ResidualNorm, ResidualNormConfig};
pub use stack::{StackCache, StackInput, StackOutput, TransformerStack, TransformerStackConfig};
pub use transformer::{Transformer, TransformerConfig};

focal_backend::crate_checks!();

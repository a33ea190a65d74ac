//! Attention primitives for Focal.
//!
//! - [`AttentionMask`]: masks as values (causal, key padding, explicit boolean masks) that
//!   combine with `and` and broadcast over batch and heads.
//! - [`ScaledDotProductAttention`]: `softmax(q kᵀ · scale) v` over `[b, h, l, d_h]` tensors, with
//!   masks, dropout on the probabilities after softmax, zeros for fully masked rows, and opt-in
//!   attention weights. Without weights it runs through [`FusedAttentionBackend`], the backend
//!   extension where a backend's own attention kernel slots in (generic default for every
//!   backend: the plain path, or a chunked online-softmax path for long key sequences).
//! - [`ScoreFunction`] / [`ScoredAttention`]: dot, scaled dot, cosine (fixed or learned
//!   temperature), additive (Bahdanau) and bilinear (Luong) scores, and attention built on any.
//! - [`MultiHeadAttention`]: the projections around it, for self- and cross-attention, with
//!   grouped-query heads, `kdim`/`vdim`, PyTorch weight import, and cached decoding through
//!   [`KvCache`].
//! - Positions: [`SinusoidalPositionalEncoding`] (fixed, "Attention Is All You Need"),
//!   [`LearnedPositionalEmbedding`] (absolute, learned), [`RotaryEncoding`] (RoPE, with a
//!   position offset for cached decoding), [`alibi_bias`] (ALiBi, any head count) and
//!   [`RelativePositionBias`] (T5's learned, bucketed relative positions).
//!
//! # Mask convention
//!
//! Everywhere in Focal a boolean mask means **`true` = may attend** (the convention of PyTorch's
//! `scaled_dot_product_attention`). burn's own `mask_fill` masks mean the opposite; the
//! conversion happens once, inside [`AttentionMask::materialize`] and the attention kernel.
//!
//! # Shapes
//!
//! Fixed names throughout: `b` batch, `h` heads, `l` query length, `s` key length, `d` model
//! width, `d_h` head width.

mod activation;
mod adamw;
mod alibi;
mod cpu;
mod fused;
mod interpret;
mod kv_cache;
mod linear;
mod mask;
mod mha;
mod positional;
mod relative;
mod rotary;
mod score;
mod sdpa;
mod state_dict;

pub use activation::Activation;
pub use adamw::{AdamWMoments, AdamWStep, AdamWTensors, generic_adamw};
pub use alibi::{alibi_bias, alibi_slopes};
pub use fused::{
    FusedAttentionBackend, FusedAttentionOptions, FusedAutodiffBackend, HostValues,
    cpu_kernel_enabled, generic_fused_attention, generic_norm, set_cpu_kernel, without_cpu_kernel,
};
pub use interpret::{
    InterpretError, MAX_FLOW_WORK, attention_flow, attention_rollout, residual_attention,
};
pub use kv_cache::KvCache;
pub use linear::{generic_linear, project, project_activated, project_transposed, store_out_in};
pub use mask::{AttentionMask, causal_mask, padding_mask_from_lengths};
pub use mha::{
    AttentionScales, MhaInput, MhaOutput, MultiHeadAttention, MultiHeadAttentionConfig,
    ProjectedMemory, PytorchImportError, WeightsMode,
};
pub use positional::{
    LearnedPositionalEmbedding, LearnedPositionalEmbeddingConfig, SinusoidalPositionalEncoding,
    SinusoidalPositionalEncodingConfig, sinusoidal_table,
};
pub use relative::{RelativePositionBias, RelativePositionBiasConfig, relative_position_bucket};
pub use rotary::{RotaryEncoding, RotaryEncodingConfig};
pub use score::{
    ScoreFunction, ScoreFunctionConfig, ScoreKind, ScoredAttention, ScoredAttentionConfig,
};
pub use sdpa::{
    AttentionInput, AttentionOutput, ScaledDotProductAttention, ScaledDotProductAttentionConfig,
};
pub use state_dict::{StateDict, WeightLayout, checked_f32};

focal_backend::crate_checks!();

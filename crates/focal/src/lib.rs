//! Focal: attention mechanisms and Transformer models in Rust, on burn.
//!
//! The same model code runs on burn-ndarray (the CPU, default) and burn-wgpu (the GPU), because
//! every layer is generic over burn's `Backend`. This crate re-exports the layers:
//!
//! - [`backend`]: backend aliases, run-time backend choice, test helpers;
//! - [`attention`]: masks, scaled dot-product and multi-head attention, positional encodings;
//! - [`blocks`]: feed-forward, residual norms, encoder/decoder layers and stacks, embeddings;
//! - [`heads`]: task models (sequence-to-sequence), vocabularies, text generation;
//! - [`pretrained`]: Hugging Face model directories (BERT, GPT-2) into Focal's models;
//! - [`train`]: tasks, the training loop, evaluation, checkpoints;
//! - [`burn`]: the burn version Focal is built on, so users need not pin it themselves.
//!
//! ```
//! use focal::attention::{AttentionMask, MhaInput, MultiHeadAttentionConfig};
//! use focal::burn::tensor::Tensor;
//!
//! type B = focal::backend::NdArray;
//! let device = Default::default();
//! let mha = MultiHeadAttentionConfig::new(64, 8).init::<B>(&device);
//! let x = Tensor::<B, 3>::zeros([2, 10, 64], &device);
//! let out = mha.forward(MhaInput::self_attn(x).mask(AttentionMask::causal()));
//! assert_eq!(out.context.dims(), [2, 10, 64]);
//! ```

pub use burn;
pub use focal_attention as attention;
pub use focal_backend as backend;
pub use focal_blocks as blocks;
pub use focal_heads as heads;
pub use focal_pretrained as pretrained;
pub use focal_train as train;

/// The burn version Focal is built on.
pub const BURN_VERSION: &str = "0.21.0";

focal_backend::crate_checks!();

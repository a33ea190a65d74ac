//! Workspace-level integration tests for Focal; the tests are under `tests/tests/`.
//!
//! - `backend_parity`: the same weights and inputs give the same outputs on ndarray and wgpu
//!   (compiled only where both backends are).
//! - `golden_attention`: attention layers against PyTorch fixtures.
//! - `golden_blocks`: Transformer layers and `nn.Transformer` against PyTorch fixtures.
//! - `golden_pretrained`: Hugging Face BERT and GPT-2 directories (loading, outputs, generation,
//!   beam search, checkpoint variants) against transformers' fixtures.

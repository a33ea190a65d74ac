//! Workspace-level integration tests for Focal; the tests are under `tests/tests/`.
//!
//! - `backend_parity`: the same weights and inputs give the same outputs on ndarray and wgpu.
//! - `reverse_model`: the sequence-to-sequence model end to end through its checkpoint.

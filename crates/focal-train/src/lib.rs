//! Training for Focal.
//!
//! - [`task`]: synthetic sequence-to-sequence tasks ([`task::ReverseTask`]) with a fixed
//!   held-out set that training never sees.
//! - [`batch`]: padding examples into tensors.
//! - [`eval`]: exact-match and token accuracy by greedy decoding.
//! - [`checkpoint`]: the model directory (`config.json`, `model.safetensors`, `metrics.json`),
//!   written atomically and loaded with typed errors.
//! - [`finetune`]: fine-tuning a text classifier on a user's CSV / TSV / JSON Lines file, from a
//!   BERT or sentence-transformers directory, on burn-train's `Learner`; the result is a Hugging
//!   Face `BertForSequenceClassification` directory with `metrics.json`.
//! - [`trainer`]: the training loop: AdamW with linear warmup and cosine decay, an `indicatif`
//!   progress bar with loss and throughput, periodic held-out evaluation.
//!
//! The reverse task's loop is still our own rather than burn-train's `Learner`: the tasks here are evaluated by
//! greedy decoding (exact match on whole sequences), checkpoints must be written atomically
//! into one self-describing directory, and the progress display is a single `indicatif` line
//! that works in a plain terminal and in CI logs. Optimiser, schedules and gradient clipping
//! are burn-optim's.

pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod finetune;
pub mod metrics;
pub mod optim;
pub mod plots;
pub mod schedule;
pub mod task;
pub mod trainer;

pub use checkpoint::{
    CheckpointError, ModelArtifact, load_checkpoint, recover_dir, save_checkpoint, save_run,
    write_atomic, write_dir_atomic,
};
pub use data::{Columns, FineTuneError, read_conll, read_labelled, read_records};
pub use eval::{EvalMetrics, evaluate};
pub use finetune::{
    Evaluation, FineTuneConfig, FineTuneReport, FineTuneTask, HeldOut, History, evaluate_model,
    fine_tune,
};
pub use optim::{FusedAdamW, FusedAdamWConfig};
pub use schedule::WarmupLinear;
pub use task::{Example, ReverseTask, Seq2SeqTask, TaskKind, TrainingStream};
pub use trainer::{EvalPoint, TrainConfig, TrainError, TrainOptions, TrainReport, train};

/// burn's backend random generator is one per process: tests that need a run to be
/// reproducible, and tests that draw from it (initialisation, dropout) while those run, take
/// this lock.
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    BACKEND_RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

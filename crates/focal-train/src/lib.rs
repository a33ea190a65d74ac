//! Training for Focal.
//!
//! - [`task`]: synthetic sequence-to-sequence tasks ([`task::ReverseTask`]) with a fixed
//!   held-out set that training never sees.
//! - [`batch`]: padding examples into tensors.
//! - [`eval`]: exact-match and token accuracy by greedy decoding.
//! - [`checkpoint`]: the model directory (`config.json`, `model.safetensors`, `metrics.json`),
//!   written atomically and loaded with typed errors.
//! - [`data`]: users' training files: CSV / TSV / JSON Lines rows, CoNLL tagged sentences and
//!   SQuAD questions, every malformed row an error naming file and line (or question id).
//! - [`finetune`]: fine-tuning on those files on burn-train's `Learner`, one engine for
//!   sequence and pair classification, multi-label, regression, tagging, question answering,
//!   the linear probe and the reverse task;
//!   the result is a Hugging Face directory with `metrics.json` and pictures; `evaluate_model`
//!   scores one on a file.
//! - [`metrics`]: Focal's burn-train metrics (accuracy, macro/micro-F1, Pearson, seqeval entity
//!   F1) with epoch-level figures.
//! - [`schedule`]: transformers' linear warmup and decay as a burn `LrScheduler`.
//! - [`plots`]: loss, metrics and confusion pictures (`plotters`).
//! - [`resume`]: what makes a killed fine-tuning run resumable to the same weights: epoch
//!   orders and dropout seeds replayable per epoch, checkpoints renamed into place, the run's
//!   state beside them.
//! - [`trainer`]: the synthetic reverse task on the same engine: examples generated afresh for
//!   every evaluation period, AdamW with linear warmup and cosine decay, held-out exact match
//!   and token accuracy by greedy decoding as burn-train metrics.

pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod finetune;
pub mod metrics;
pub mod optim;
pub mod plots;
pub mod resume;
pub mod schedule;
pub mod task;
pub mod trainer;

pub use checkpoint::{
    CheckpointError, ModelArtifact, load_checkpoint, recover_dir, save_checkpoint, save_run,
    write_atomic, write_dir_atomic,
};
pub use data::{BadRows, Columns, FineTuneError, read_conll, read_labelled, read_records};
pub use eval::{EvalMetrics, evaluate};
pub use finetune::{
    Evaluation, FineTuneConfig, FineTuneReport, FineTuneTask, HeadImportance, HeldOut, History,
    check_resumable, evaluate_model, fine_tune, fine_tune_on, head_importance,
};
pub use optim::{FusedAdamW, FusedAdamWConfig};
pub use schedule::WarmupLinear;
pub use task::{Example, ReverseTask, Seq2SeqTask, TaskKind, TrainingStream};
pub use trainer::{
    EvalPoint, ModelSize, TrainConfig, TrainError, TrainOptions, TrainReport, train, train_seq2seq,
};

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

focal_backend::crate_checks!();

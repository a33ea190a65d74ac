//! Fine-tuning throughput: `focal train --task classify` for one epoch on a CSV file, against
//! Hugging Face's `Trainer` on the same file through `crates/focal-bench/hf_trainer.py`, which
//! the bench runs itself with `--python` (batch 32, inputs cut to 128 tokens, the same
//! threads).
//!
//! Both figures are training examples per second over the same region: each epoch's training,
//! a validation pass on the file's first 64 rows and a checkpoint of the epoch (model and
//! optimizer state), as a user's run has them (burn-train's `Learner` here, Trainer with
//! `eval_strategy` and `save_strategy` "epoch" there).

use crate::torch::Torch;
use focal::attention::FusedAutodiffBackend;
use focal::train::{FineTuneConfig, FineTuneTask, fine_tune};
use serde::Serialize;
use std::ffi::OsString;
use std::path::PathBuf;

/// What to measure.
pub struct Options {
    /// The directory to start from (all-MiniLM-L6-v2).
    pub init: PathBuf,
    /// Training rows (CSV: text, label).
    pub data: PathBuf,
    /// Passes over the rows.
    pub epochs: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Longest input in tokens.
    pub max_length: usize,
}

/// The measurement.
#[derive(Serialize)]
pub struct Report {
    init: String,
    data: String,
    examples: usize,
    epochs: usize,
    batch_size: usize,
    max_length: usize,
    seconds: f64,
    examples_per_second: f64,
    /// Trainer's figures, as `hf_trainer.py` writes them.
    hf: Option<serde_json::Value>,
    /// Where they come from (or why there are none).
    hf_source: String,
}

impl Report {
    /// Runs `hf_trainer.py` on the same file and settings (with `--python`).
    pub fn compare_with(&mut self, torch: &Torch) -> anyhow::Result<()> {
        let args: Vec<OsString> = vec![
            "--init".into(),
            self.init.clone().into(),
            "--data".into(),
            self.data.clone().into(),
            "--epochs".into(),
            self.epochs.to_string().into(),
            "--batch-size".into(),
            self.batch_size.to_string().into(),
            "--max-length".into(),
            self.max_length.to_string().into(),
            "--valid-rows".into(),
            VALID_ROWS.to_string().into(),
        ];
        self.hf = torch.run("hf_trainer.py", "train", &args)?;
        self.hf_source = Torch::source(self.hf.as_ref(), "hf_trainer.py");
        Ok(())
    }
}

/// Rows of the file's start that both sides validate on after each epoch.
const VALID_ROWS: usize = 64;

/// Fine-tunes once and reads Trainer's figures when present.
pub fn run<B: FusedAutodiffBackend>(
    options: &Options,
    device: &B::Device,
) -> anyhow::Result<Report> {
    let scratch = tempfile_dir()?;
    let text = std::fs::read_to_string(&options.data)?;
    let valid = scratch.join("valid.csv");
    let head: Vec<&str> = text.lines().take(1 + VALID_ROWS).collect();
    std::fs::write(&valid, head.join("\n") + "\n")?;
    let config = FineTuneConfig {
        task: FineTuneTask::Classify,
        epochs: options.epochs,
        batch_size: options.batch_size,
        max_length: options.max_length,
        ..FineTuneConfig::default()
    };
    let result = fine_tune::<B>(
        &options.init,
        &options.data,
        Some(&valid),
        &scratch.join("out"),
        &config,
        device,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    Ok(Report {
        init: options.init.display().to_string(),
        data: options.data.display().to_string(),
        examples: report.train_examples * report.epochs_run,
        epochs: report.epochs_run,
        batch_size: options.batch_size,
        max_length: options.max_length,
        seconds: report.seconds,
        examples_per_second: report.examples_per_second,
        hf: None,
        hf_source: crate::torch::NOT_MEASURED.to_string(),
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("focal-bench-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The table: Focal's and Trainer's examples per second and their ratio.
pub fn markdown(report: &Report, backend: &str) -> String {
    let hf = report
        .hf
        .as_ref()
        .and_then(|v| v["examples_per_second"].as_f64());
    let (hf_text, ratio) = match hf {
        Some(v) => (
            format!("{v:.1}"),
            format!("{:.2}×", report.examples_per_second / v),
        ),
        None => ("–".to_string(), "–".to_string()),
    };
    format!(
        "Fine-tuning {} on {} ({} examples, {} epoch(s), batch {}, max length {}), {backend}\n\n\
         | | examples/s |\n|---|---:|\n| Focal (burn-train Learner) | {:.1} |\n\
         | transformers Trainer | {hf_text} |\n| Focal / Trainer | {ratio} |\n\n\
         Trainer: {}. Both include a validation pass on the file's first {VALID_ROWS} rows and \
         a checkpoint after each epoch.\n",
        report.init,
        report.data,
        report.examples,
        report.epochs,
        report.batch_size,
        report.max_length,
        report.examples_per_second,
        report.hf_source,
    )
}

/// The run as a figure for `--backend all`.
pub fn figures(report: &Report) -> Vec<crate::swap::Figure> {
    vec![crate::swap::Figure {
        workload: format!(
            "fine-tuning {} (batch {}, max length {})",
            report.init, report.batch_size, report.max_length
        ),
        unit: "examples/s".to_string(),
        value: Some(report.examples_per_second),
    }]
}

//! Focal's benchmarks. Run through `cargo xtask bench NAME` (a release build); each prints a
//! markdown table and writes it, with the raw figures as JSON, under `target/bench/`.
//!
//! Timings on shared machines are noisy, so every table compares each row with a baseline
//! measured in the same process, and reports that ratio next to the absolute figures.

mod attention;
mod decoding;
mod measure;
mod models;
mod train;

use anyhow::Context;
use clap::{Parser, Subcommand};
use focal::attention::FusedAutodiffBackend;
use focal::backend::{BackendJob, BackendKind, RunOn};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Focal's benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// Backend to measure on.
    #[arg(long, global = true, default_value = "ndarray")]
    backend: BackendKind,
    /// Seconds of repeated runs per measurement (after the first run).
    #[arg(long, global = true, default_value_t = 2.0)]
    budget: f64,
    /// Folder for the markdown table and the JSON figures.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Bench {
    /// Scaled dot-product attention, forward and forward+backward: Focal's kernel and generic
    /// path vs burn's op and burn-nn's multi-head attention, time and memory.
    Attention {
        /// Sequence lengths (l = s), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "512,2048,8192")]
        lengths: Vec<usize>,
        /// Lengths at which only Focal's kernel runs, forward+backward (`--long` alone: none).
        #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "16384")]
        long: Vec<usize>,
        /// Longest length at which methods with `l · s` memory run forward+backward.
        #[arg(long, default_value_t = 2048)]
        max_quadratic_backward: usize,
        /// Lengths of the multi-query rows (kernel forward+backward, 1 key/value head vs 8;
        /// `--multi-query` alone: none).
        #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "2048")]
        multi_query: Vec<usize>,
    },
    /// Per-token cached decoding through a 6-layer decoder, Focal vs burn-nn.
    Decoding {
        /// Positions already decoded, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
        positions: Vec<usize>,
        /// Tokens timed at each position.
        #[arg(long, default_value_t = 8)]
        steps: usize,
    },
    /// Whole models, Focal vs burn's ops (and PyTorch, when `torch_models.py` has run): an
    /// encoder layer forward and training step, GPT-2-small-shaped decoding, MiniLM embeddings;
    /// with a per-part profile.
    Models {
        /// GPT-2-small-shaped random model (written here when absent).
        #[arg(long, default_value = "target/bench/gpt2-small-random")]
        gpt2: PathBuf,
        /// all-MiniLM-L6-v2 directory (sentence-transformers layout); the row is skipped
        /// without it.
        #[arg(long)]
        minilm: Option<PathBuf>,
        /// Tokens decoded by Focal.
        #[arg(long, default_value_t = 256)]
        new_tokens: usize,
        /// Tokens decoded with Focal's kernels off.
        #[arg(long, default_value_t = 16)]
        baseline_tokens: usize,
        /// PyTorch's figures, as `torch_models.py` writes them.
        #[arg(long, default_value = "target/bench/models_torch.json")]
        torch: PathBuf,
        /// Only these workloads (encoder, training, decoding, minilm), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Fine-tuning throughput (`focal train --task classify`) against transformers' Trainer
    /// (`hf_trainer.py` on the same file).
    Train {
        /// The directory to start from (all-MiniLM-L6-v2).
        #[arg(long)]
        init: PathBuf,
        /// Training rows, CSV with text and label columns.
        #[arg(long)]
        data: PathBuf,
        /// Passes over the rows.
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Examples per batch.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Longest input in tokens.
        #[arg(long, default_value_t = 128)]
        max_length: usize,
        /// Trainer's figures, as `hf_trainer.py` writes them.
        #[arg(long, default_value = "target/bench/train_hf.json")]
        hf: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let budget = Duration::from_secs_f64(cli.budget);
    let backend = cli.backend.name();
    let (name, table, json) = match cli.bench {
        Bench::Attention {
            lengths,
            long,
            max_quadratic_backward,
            multi_query,
        } => {
            let options = attention::Options {
                lengths,
                long,
                max_quadratic_backward,
                multi_query,
                budget,
            };
            let rows = cli.backend.run(AttentionJob(options))?;
            let memory_counted = cli.backend == BackendKind::NdArray;
            let table = attention::markdown(&rows, backend, memory_counted);
            ("attention", table, serde_json::to_string_pretty(&rows)?)
        }
        Bench::Decoding { positions, steps } => {
            let rows = cli.backend.run(DecodingJob { positions, steps })?;
            let table = decoding::markdown(&rows, backend);
            ("decoding", table, serde_json::to_string_pretty(&rows)?)
        }
        Bench::Models {
            gpt2,
            minilm,
            new_tokens,
            baseline_tokens,
            torch,
            only,
        } => {
            let options = models::Options {
                budget,
                gpt2,
                minilm,
                new_tokens,
                baseline_tokens,
                torch,
                only,
            };
            let report = cli.backend.run(ModelsJob(options))??;
            let table = models::markdown(&report, backend);
            ("models", table, serde_json::to_string_pretty(&report)?)
        }
        Bench::Train {
            init,
            data,
            epochs,
            batch_size,
            max_length,
            hf,
        } => {
            let options = train::Options {
                init,
                data,
                epochs,
                batch_size,
                max_length,
                hf,
            };
            let report = cli.backend.run(TrainJob(options))??;
            let table = train::markdown(&report, backend);
            ("train", table, serde_json::to_string_pretty(&report)?)
        }
    };
    write(&cli.out, name, &table, &json)?;
    println!("{table}");
    Ok(())
}

/// The benchmarks run on the inference backend of the one chosen (`RunOn` hands over the
/// autodiff form, for training jobs).
struct AttentionJob(attention::Options);

impl BackendJob for AttentionJob {
    type Output = Vec<attention::Row>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for AttentionJob {
    fn run(self, device: B::Device) -> Self::Output {
        attention::run::<B>(&self.0, &device)
    }
}

struct DecodingJob {
    positions: Vec<usize>,
    steps: usize,
}

impl BackendJob for DecodingJob {
    type Output = Vec<decoding::Row>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for DecodingJob {
    fn run(self, device: B::Device) -> Self::Output {
        decoding::run::<B::InnerBackend>(&self.positions, self.steps, &device)
    }
}

struct ModelsJob(models::Options);

impl BackendJob for ModelsJob {
    type Output = anyhow::Result<models::Report>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for ModelsJob {
    fn run(self, device: B::Device) -> Self::Output {
        models::run::<B>(&self.0, &device)
    }
}

struct TrainJob(train::Options);

impl BackendJob for TrainJob {
    type Output = anyhow::Result<train::Report>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for TrainJob {
    fn run(self, device: B::Device) -> Self::Output {
        train::run::<B>(&self.0, &device)
    }
}

/// Writes `NAME.md` and `NAME.json` under `dir`, each atomically.
fn write(dir: &Path, name: &str, table: &str, rows: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(rows)?;
    for (file, contents) in [
        (format!("{name}.md"), table),
        (format!("{name}.json"), &json),
    ] {
        let path = dir.join(file);
        focal::train::write_atomic(&path, contents.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

//! Focal's benchmarks. Run through `cargo xtask bench NAME` (a release build); each prints a
//! markdown table and writes it, with the raw figures as JSON, under `target/bench/`.
//!
//! Timings on shared machines are noisy, so every table compares each row with a baseline
//! measured in the same process, and reports that ratio next to the absolute figures.
//!
//! `--backend ndarray|wgpu|all` chooses where the workloads run; `all` runs them on every
//! backend of the build, one after the other in the same process, and prints one table with a
//! column per backend and their speed ratio (`swap`). Every table names the device: the
//! CPU's threads, or the wgpu adapter (Mesa's lavapipe on a machine without a GPU).
//!
//! `--threads N` (default: the machine's cores) sizes Focal's thread pool and is passed to
//! every PyTorch script; every table prints it. `--python PATH` has the bench run the PyTorch
//! side itself after its own measurements ([`torch`]), with the same threads, budget and
//! shapes.

mod attention;
mod decoding;
mod measure;
mod models;
mod pipelines;
mod swap;
mod torch;
mod train;

use anyhow::Context;
use clap::{Parser, Subcommand};
use focal::attention::FusedAutodiffBackend;
use focal::backend::{BackendJob, BackendKind, RunOn};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Focal's benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// Backend to measure on: ndarray, wgpu, or all (every backend of the build, one table).
    #[arg(long, global = true, default_value = "ndarray")]
    backend: Backends,
    /// Seconds of repeated runs per measurement (after the first run).
    #[arg(long, global = true, default_value_t = 2.0)]
    budget: f64,
    /// Folder for the markdown table and the JSON figures.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
    /// Threads for Focal (its rayon pool) and for PyTorch (`torch.set_num_threads`); default:
    /// the machine's cores.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// A Python interpreter with the packages the PyTorch scripts pin: the bench then runs the
    /// PyTorch side of `models`, `pipelines` and `train` itself, with the same threads, budget
    /// and shapes (without it the PyTorch column is left out).
    #[arg(long, global = true)]
    python: Option<PathBuf>,
}

/// `--backend`: one backend, or every enabled one.
#[derive(Clone, Copy, Debug)]
enum Backends {
    One(BackendKind),
    All,
}

impl FromStr for Backends {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Backends::All),
            one => one
                .parse()
                .map(Backends::One)
                .map_err(|e| format!("{e}, or all")),
        }
    }
}

impl Backends {
    fn kinds(self) -> Vec<BackendKind> {
        match self {
            Backends::One(kind) => vec![kind],
            Backends::All => BackendKind::enabled(),
        }
    }
}

#[derive(Clone, Subcommand)]
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
    /// Whole models, Focal vs burn's ops and PyTorch (`torch_models.py`, with `--python`): an
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
        /// Only these workloads (encoder, training, decoding, minilm), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Text classification and head importance over generated files, Focal's pipelines vs
    /// transformers' (`torch_pipelines.py`, with `--python`): model loading, reading and every
    /// batch timed on both sides, and their results compared.
    Pipelines {
        /// A `BertForSequenceClassification` directory (`torch_pipelines.py make` writes one
        /// from all-MiniLM-L6-v2 with a seeded random head).
        #[arg(long)]
        model: PathBuf,
        /// Generated lines to classify (4 to 30 words each, seeded).
        #[arg(long, default_value_t = 10_000)]
        lines: usize,
        /// Generated labelled rows to score the heads on.
        #[arg(long, default_value_t = 1_000)]
        rows: usize,
        /// Texts per batch, both tasks.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Longest input of head importance, in tokens.
        #[arg(long, default_value_t = 64)]
        max_length: usize,
        /// Only these workloads (classify, heads), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Fine-tuning throughput (`focal train --task classify`) against transformers' Trainer
    /// (`hf_trainer.py` on the same file, with `--python`).
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
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match cli.threads {
        Some(0) => anyhow::bail!("--threads 0: give at least one thread"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("sizing the thread pool")?;
    let (name, title) = match &cli.bench {
        Bench::Attention { .. } => ("attention", "Scaled dot-product attention"),
        Bench::Decoding { .. } => ("decoding", "Per-token cached decoding"),
        Bench::Models { .. } => ("models", "Whole models"),
        Bench::Pipelines { .. } => ("pipelines", "Pipelines"),
        Bench::Train { .. } => ("train", "Fine-tuning"),
    };
    // One PyTorch run serves every backend's table (its figures do not depend on it).
    let torch = torch::Torch::new(cli.python.clone(), threads, cli.budget, cli.out.clone());
    let mut runs = Vec::new();
    for kind in cli.backend.kinds() {
        let device = swap::device_name(kind);
        eprintln!("{name} on {}: {device}", kind.name());
        runs.push(measure_on(kind, device, &cli, &torch)?);
    }
    let (file, table, json) = match cli.backend {
        Backends::One(_) => {
            let run = runs.pop().expect("one backend was measured");
            let table = format!("{}\n\nDevice: {}.\n", run.table.trim_end(), run.device);
            (name.to_string(), table, run.report)
        }
        Backends::All => {
            let table = swap::markdown(title, &runs);
            (format!("{name}-all"), table, serde_json::to_value(&runs)?)
        }
    };
    let table = format!(
        "{}\n\nThreads: {threads} (`--threads`), for Focal and for every PyTorch script.\n",
        table.trim_end()
    );
    write(&cli.out, &file, &table, &json)?;
    println!("{table}");
    Ok(())
}

/// Runs the chosen benchmark on one backend.
fn measure_on(
    kind: BackendKind,
    device: String,
    cli: &Cli,
    torch: &torch::Torch,
) -> anyhow::Result<swap::Measured> {
    let budget = Duration::from_secs_f64(cli.budget);
    let backend = kind.name();
    let (figures, table, report) = match cli.bench.clone() {
        Bench::Attention {
            lengths,
            long,
            max_quadratic_backward,
            multi_query,
        } => {
            let options = attention::Options {
                lengths: lengths.clone(),
                long,
                max_quadratic_backward,
                multi_query,
                budget,
            };
            let mut rows = kind.run(AttentionJob(options))?;
            let source = attention::add_pytorch(&mut rows, torch, &lengths)?;
            let memory_counted = kind == BackendKind::NdArray;
            let table = format!(
                "{}\nPyTorch: {source}.\n",
                attention::markdown(&rows, backend, memory_counted)
            );
            (
                attention::figures(&rows),
                table,
                serde_json::to_value(&rows)?,
            )
        }
        Bench::Decoding { positions, steps } => {
            let rows = kind.run(DecodingJob { positions, steps })?;
            let table = decoding::markdown(&rows, backend);
            (
                decoding::figures(&rows),
                table,
                serde_json::to_value(&rows)?,
            )
        }
        Bench::Models {
            gpt2,
            minilm,
            new_tokens,
            baseline_tokens,
            only,
        } => {
            let options = models::Options {
                budget,
                gpt2,
                minilm,
                new_tokens,
                baseline_tokens,
                only,
                max_buffer_bytes: match kind {
                    BackendKind::Wgpu => {
                        Some(focal::backend::wgpu_adapter_info()?.max_buffer_bytes)
                    }
                    BackendKind::NdArray => None,
                },
            };
            ModelsJob(options).measure(kind, backend, torch)?
        }
        Bench::Pipelines {
            model,
            lines,
            rows,
            batch_size,
            max_length,
            only,
        } => {
            let options = pipelines::Options {
                model,
                lines,
                rows,
                batch_size,
                max_length,
                only,
                out: cli.out.clone(),
            };
            PipelinesJob(options).measure(kind, backend, torch)?
        }
        Bench::Train {
            init,
            data,
            epochs,
            batch_size,
            max_length,
        } => {
            let options = train::Options {
                init,
                data,
                epochs,
                batch_size,
                max_length,
            };
            TrainJob(options).measure(kind, backend, torch)?
        }
    };
    Ok(swap::Measured {
        backend,
        device,
        figures,
        table,
        report,
    })
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

/// A job running `$module::run` on the autodiff backend chosen (the module's `Options` in,
/// its `Report` out): the whole-model, pipeline and fine-tuning benchmarks.
macro_rules! report_job {
    ($($job:ident => $module:ident),+ $(,)?) => {
        $(
            struct $job($module::Options);

            impl BackendJob for $job {
                type Output = anyhow::Result<$module::Report>;
            }

            impl<B: FusedAutodiffBackend> RunOn<B> for $job {
                fn run(self, device: B::Device) -> Self::Output {
                    $module::run::<B>(&self.0, &device)
                }
            }

            impl $job {
                /// Runs on `kind`, puts PyTorch's side next to it (with `--python`), and gives
                /// the figures, the table and the JSON report.
                fn measure(
                    self,
                    kind: BackendKind,
                    backend: &str,
                    torch: &torch::Torch,
                ) -> anyhow::Result<(Vec<swap::Figure>, String, serde_json::Value)> {
                    let mut report = kind.run(self)??;
                    report.compare_with(torch)?;
                    Ok((
                        $module::figures(&report),
                        $module::markdown(&report, backend),
                        serde_json::to_value(&report)?,
                    ))
                }
            }
        )+
    };
}

report_job!(ModelsJob => models, PipelinesJob => pipelines, TrainJob => train);

/// Writes `NAME.md` and `NAME.json` under `dir`, each atomically.
fn write(dir: &Path, name: &str, table: &str, figures: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(figures)?;
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

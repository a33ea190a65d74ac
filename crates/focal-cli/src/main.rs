//! `focal`: train, evaluate and run Transformer models on ndarray or wgpu.
//!
//! Every error is one line on stderr and a non-zero exit code; `--json` puts machine-readable
//! results on stdout and leaves logs on stderr.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use focal::attention::FusedAutodiffBackend;
use focal::backend::{BackendJob, BackendKind, RunOn};
use focal::train::{TaskKind, TrainConfig, TrainOptions, TrainReport};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

mod attention;
mod output;
mod pretrained;
mod tasks;

/// Attention mechanisms and Transformer models, in Rust, on the CPU (ndarray) or the GPU (wgpu).
#[derive(Parser, Debug)]
#[command(name = "focal", version, about)]
struct Cli {
    /// Backend to run on: ndarray (CPU) or wgpu (GPU, or lavapipe on the CPU).
    #[arg(long, global = true, default_value = "ndarray")]
    backend: String,
    /// Print machine-readable JSON on stdout (logs stay on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on a task and write its directory (config.json, model.safetensors,
    /// metrics.json).
    Train(Box<TrainArgs>),
    /// Run a trained sequence-to-sequence model on inputs, one output line per input.
    Translate(TranslateArgs),
    /// Sentence embeddings from a BERT / sentence-transformers directory.
    Embed(pretrained::EmbedArgs),
    /// The most likely tokens for the [MASK] of a text, from a BERT masked-LM directory.
    FillMask(pretrained::FillMaskArgs),
    /// Continue a prompt with a GPT-2 directory, streaming tokens as they come.
    Generate(pretrained::GenerateArgs),
    /// Label texts or text pairs with a BertForSequenceClassification directory
    /// (transformers' text-classification pipeline).
    Classify(tasks::ClassifyArgs),
    /// Find entities (people, places, organisations, …) with a BertForTokenClassification
    /// directory (token-classification pipeline, simple aggregation).
    Tag(tasks::TagArgs),
    /// Answer questions from a context with a BertForQuestionAnswering directory
    /// (question-answering pipeline).
    Answer(tasks::AnswerArgs),
    /// Rank candidate texts (FAQ questions, tickets) for each query by cosine similarity of
    /// sentence embeddings.
    Match(tasks::MatchArgs),
    /// Score a fine-tuned model on a labelled file: precision, recall and F1 per class (per
    /// entity type for a tagger), the confusion matrix, the task's metrics.
    Eval(tasks::EvalArgs),
    /// What a BERT-style encoder or a GPT-2 attends to: each layer's heads (raw), or the
    /// layers combined (attention rollout or flow); the weights as JSON with --json.
    Attention(attention::AttentionArgs),
    /// How much each attention head matters to a classifier on a labelled file (Michel et al.
    /// 2019: the gradient of each row's loss with respect to a mask on the head), per layer and
    /// head, least important first.
    Heads(attention::HeadsArgs),
    /// Show the enabled backends, the wgpu adapter in use, and versions.
    Info,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// The task: fine-tune from --init on --data: classify (a label per text), pair (a label per
    /// pair of texts), multilabel (any labels per text), regress (a number per text), tag (a
    /// tag per word, CoNLL files), qa (an answer span in a context, SQuAD files), lm (the next
    /// token, a GPT-2 model on plain text), seq2seq (a target text per source text, a model
    /// trained from scratch on pairs: --text-column the source, --label-column the target); or
    /// reverse (reverse a sequence of 4 to 12 digits, a
    /// model trained from scratch on generated data).
    #[arg(long)]
    task: String,
    /// Fine-tuning: the training rows, a .csv, .tsv or .jsonl file (a CoNLL file for tag, a
    /// SQuAD JSON file for qa, plain text for lm).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Fine-tuning: the held-out rows (same format), scored before and after training and
    /// used to keep the best epoch (default: --valid-split of --data).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Fine-tuning without --valid: the share of --data held out for validation, drawn with
    /// the seed (default 0.1).
    #[arg(long, conflicts_with = "valid")]
    valid_split: Option<f64>,
    /// Fine-tuning: the BERT or sentence-transformers directory to start from (e.g.
    /// all-MiniLM-L6-v2), or a directory of the task's model with the same labels; a GPT-2
    /// directory for lm.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Fine-tuning: passes over the data (default 3).
    #[arg(long)]
    epochs: Option<usize>,
    /// Fine-tuning: AdamW's peak learning rate (default 5e-5).
    #[arg(long)]
    lr: Option<f64>,
    /// Fine-tuning: share of the optimizer steps warming the learning rate up from 0, after
    /// which it falls linearly to 0 (default 0).
    #[arg(long)]
    warmup: Option<f64>,
    /// Fine-tuning: batches whose gradients make one optimizer step (default 1).
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Fine-tuning: AdamW's decoupled weight decay, on every weight but biases and norm
    /// weights, as transformers' Trainer (default 0).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Fine-tuning: stop after this many epochs without a better validation metric.
    #[arg(long)]
    early_stopping: Option<usize>,
    /// Fine-tuning: skip malformed rows (and held-out rows of a label the training file lacks),
    /// counting them in the report, instead of stopping at the first.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Fine-tuning: data-parallel replicas (burn-train's multi-device strategy): each optimizer
    /// step runs a batch on each and sums their gradients. They share the backend's device.
    #[arg(long)]
    devices: Option<usize>,
    /// Fine-tuning: keep the encoder frozen and train only a linear head on its mean-pooled
    /// embeddings, computed once (logistic regression for classify; not for tag). A baseline,
    /// and a fast model; the directory pools by the mean, which only Focal reads.
    #[arg(long)]
    linear_probe: bool,
    /// Fine-tuning: longest input in tokens (default 128); for lm, the block length (at most
    /// the model's positions).
    #[arg(long)]
    max_length: Option<usize>,
    /// Fine-tuning: the column (CSV / TSV header) or field (JSON Lines) of the texts.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Fine-tuning: the column of the second texts of pairs (default text_pair for --task
    /// pair; none otherwise).
    #[arg(long)]
    pair_column: Option<String>,
    /// Fine-tuning: the column of the labels (for multilabel, separated by | or a JSON list).
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Optimiser steps (default: the task's recipe, 1000 for reverse).
    #[arg(long)]
    steps: Option<usize>,
    /// Examples per step (default: the task's recipe, 64 for reverse).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Evaluate and checkpoint every this many steps (default 250).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Output directory (default: runs/TASK).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of initialisation and training data (default 42).
    #[arg(long)]
    seed: Option<u64>,
    /// Replace what --out holds (a trained model, other files); without it such a directory is
    /// refused before training starts.
    #[arg(long)]
    overwrite: bool,
    /// seq2seq: the size of the encoder-decoder trained from scratch: tiny (d 64, 2 + 2
    /// layers; default), small (d 256, 3 + 3) or base (d 512, 6 + 6).
    #[arg(long)]
    config: Option<String>,
    /// Continue the killed run that was to write --out (same settings) from its last complete
    /// epoch (fine-tuning) or evaluation (reverse): weights, optimizer state, schedule, data
    /// order; with --overwrite when --out holds an earlier model.
    #[arg(long)]
    resume: bool,
}

#[derive(Args, Debug)]
struct TranslateArgs {
    /// A model directory written by `focal train`.
    #[arg(long)]
    model: PathBuf,
    /// Inputs, each a whitespace-separated token sequence, e.g. "3 1 4 1 5".
    #[arg(required = true)]
    text: Vec<String>,
}

fn main() -> ExitCode {
    output::quiet_wayland_probe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
            if matches!(err.kind(), DisplayHelp | DisplayVersion) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", clap_error_line(&err));
            return ExitCode::from(2);
        }
    };
    init_tracing(cli.verbose);
    match run(cli).and_then(|()| output::flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has gone (`| head`): end quietly, as `cat` does.
        Err(err) if output::is_broken_pipe(&err) => ExitCode::from(output::BROKEN_PIPE_STATUS),
        Err(err) => {
            eprintln!("error: {}", output::error_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// clap's message up to its first blank line, on one line, without the `error:` prefix.
fn clap_error_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first_paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    first_paragraph
        .join(" ")
        .trim_start_matches("error: ")
        .to_string()
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let backend: BackendKind = cli.backend.parse()?;
    match cli.command {
        Command::Train(args) => train(backend, *args, cli.json),
        Command::Translate(args) => translate(backend, args, cli.json),
        Command::Embed(args) => pretrained::embed(backend, args, cli.json),
        Command::FillMask(args) => pretrained::fill_mask(backend, args, cli.json),
        Command::Generate(args) => pretrained::generate_text(backend, args, cli.json),
        Command::Classify(args) => tasks::classify(backend, args, cli.json),
        Command::Tag(args) => tasks::tag(backend, args, cli.json),
        Command::Answer(args) => tasks::answer(backend, args, cli.json),
        Command::Match(args) => tasks::match_texts(backend, args, cli.json),
        Command::Eval(args) => tasks::eval(backend, args, cli.json),
        Command::Attention(args) => attention::attention(backend, args, cli.json),
        Command::Heads(args) => attention::heads(backend, args, cli.json),
        Command::Info => info(cli.json),
    }
}

fn train(backend: BackendKind, args: TrainArgs, json: bool) -> anyhow::Result<()> {
    if let Ok(task) = args.task.parse::<focal::train::FineTuneTask>() {
        return fine_tune(backend, task, args, json);
    }
    let task: TaskKind = args.task.parse().map_err(|e: String| {
        let fine_tuning: Vec<_> = focal::train::FineTuneTask::ALL
            .iter()
            .map(|t| t.name())
            .collect();
        anyhow::anyhow!("{e}, {}", fine_tuning.join(", "))
    })?;
    for (flag, given) in [
        ("--data", args.data.is_some()),
        ("--valid", args.valid.is_some()),
        ("--init", args.init.is_some()),
        ("--epochs", args.epochs.is_some()),
        ("--lr", args.lr.is_some()),
        ("--warmup", args.warmup.is_some()),
        ("--grad-accum", args.grad_accum.is_some()),
        ("--weight-decay", args.weight_decay.is_some()),
        ("--early-stopping", args.early_stopping.is_some()),
        ("--linear-probe", args.linear_probe),
        ("--valid-split", args.valid_split.is_some()),
        ("--skip-bad-rows", args.skip_bad_rows),
        ("--devices", args.devices.is_some()),
        ("--max-length", args.max_length.is_some()),
        ("--config", args.config.is_some()),
    ] {
        if given {
            bail!("{flag} is for fine-tuning tasks; the {task} task makes its own data");
        }
    }
    let mut config = TrainConfig::for_task(task);
    config.steps = args.steps.unwrap_or(config.steps);
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.eval_every = args.eval_every.unwrap_or(config.eval_every);
    config.seed = args.seed.unwrap_or(config.seed);
    config.validate()?;
    let out = args
        .out
        .unwrap_or_else(|| focal::train::trainer::default_out_dir(task));

    struct TrainJob {
        config: TrainConfig,
        out: PathBuf,
        options: TrainOptions,
    }
    impl BackendJob for TrainJob {
        type Output = Result<TrainReport, focal::train::TrainError>;
    }
    impl<B: FusedAutodiffBackend> RunOn<B> for TrainJob {
        fn run(self, device: B::Device) -> Self::Output {
            focal::train::train::<B>(&self.config, &device, &self.out, &self.options)
        }
    }

    // Before anything else: a file, another run or other files at --out are refused at once.
    focal::train::trainer::check_out_dir(&out, args.overwrite)?;
    if args.resume {
        focal::train::check_resumable(&out)?;
    }
    if !json {
        eprintln!(
            "training {task} on {backend}: {} steps of {} examples, writing {}",
            config.steps,
            config.batch_size,
            out.display()
        );
    }
    let report = backend.run(TrainJob {
        config,
        out: out.clone(),
        options: TrainOptions {
            progress: !json,
            backend: backend.name().to_string(),
            overwrite: args.overwrite,
            resume: args.resume,
        },
    })??;

    if json {
        output::line(serde_json::to_string_pretty(&report)?)?;
    } else {
        let m = report.final_metrics;
        output::line(format_args!(
            "trained {} on {} in {:.1} s ({} steps, {:.0} examples/s)",
            report.task, report.backend, report.seconds, report.steps, report.examples_per_second
        ))?;
        output::line(format_args!(
            "held-out exact match: {:.2}% of {} sequences (token accuracy {:.2}%), evaluation {} of {} kept",
            100.0 * m.exact_match,
            m.examples,
            100.0 * m.token_accuracy,
            report.kept_evaluation,
            report.history.len()
        ))?;
        output::line(format_args!("model written to {}", out.display()))?;
    }
    Ok(())
}

/// `focal train --task classify|pair|multilabel|regress|tag|qa|lm|seq2seq`: fine-tunes on burn-train's
/// Learner.
fn fine_tune(
    backend: BackendKind,
    task: focal::train::FineTuneTask,
    args: TrainArgs,
    json: bool,
) -> anyhow::Result<()> {
    use focal::train::{Columns, FineTuneConfig, FineTuneReport};
    let need = |value: Option<PathBuf>, flag: &str| {
        value.with_context(|| format!("--task {task} needs {flag}"))
    };
    let data = need(args.data, "--data FILE")?;
    let valid = args.valid;
    /// Where the run's model comes from.
    enum Start {
        /// A pretrained directory, fine-tuned.
        Init(PathBuf),
        /// A new model of this size, trained from scratch (seq2seq).
        Scratch(focal::train::ModelSize),
    }
    let start = if task == focal::train::FineTuneTask::Seq2Seq {
        if args.init.is_some() {
            bail!("--task seq2seq trains a model from scratch: --config sets its size, not --init");
        }
        Start::Scratch(match &args.config {
            Some(name) => name.parse().map_err(anyhow::Error::msg)?,
            None => focal::train::ModelSize::Tiny,
        })
    } else {
        if args.config.is_some() {
            bail!("--config is for --task seq2seq (a model trained from scratch)");
        }
        Start::Init(need(
            args.init,
            if task == focal::train::FineTuneTask::Lm {
                "--init DIR (a GPT-2 directory)"
            } else {
                "--init DIR (a BERT or sentence-transformers directory)"
            },
        )?)
    };
    let out = need(args.out, "--out DIR")?;
    if args.steps.is_some() || args.eval_every.is_some() {
        bail!("--steps and --eval-every are for --task reverse; --task {task} counts --epochs");
    }
    for (path, flag) in [(Some(&data), "--data"), (valid.as_ref(), "--valid")] {
        let Some(path) = path else { continue };
        if !path.is_file() {
            bail!("{flag} {}: no such file", path.display());
        }
    }
    if let Start::Init(init) = &start
        && !init.is_dir()
    {
        bail!("--init {}: no such directory", init.display());
    }
    focal::train::trainer::check_out_dir(&out, args.overwrite)?;
    if args.resume {
        focal::train::check_resumable(&out)?;
    }
    let defaults = FineTuneConfig::default();
    let config = FineTuneConfig {
        task,
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        grad_accum: args.grad_accum.unwrap_or(defaults.grad_accum),
        weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
        // A model trained from scratch takes a larger step than one fine-tuned.
        learning_rate: args.lr.unwrap_or(match start {
            Start::Scratch(_) => 1e-3,
            Start::Init(_) => defaults.learning_rate,
        }),
        warmup: args.warmup.unwrap_or(defaults.warmup),
        early_stopping: args.early_stopping,
        valid_split: args.valid_split.unwrap_or(defaults.valid_split),
        skip_bad_rows: args.skip_bad_rows,
        devices: args.devices.unwrap_or(defaults.devices),
        linear_probe: args.linear_probe,
        max_length: args.max_length.unwrap_or(defaults.max_length),
        seed: args.seed.unwrap_or(defaults.seed),
        columns: Columns {
            text: args.text_column,
            pair: args.pair_column,
            label: args.label_column,
        },
        progress: !json,
        resume: args.resume,
        overwrite: args.overwrite,
    };
    config.validate()?;

    struct FineTuneJob {
        start: Start,
        data: PathBuf,
        valid: Option<PathBuf>,
        out: PathBuf,
        config: FineTuneConfig,
    }
    impl BackendJob for FineTuneJob {
        type Output = Result<FineTuneReport, focal::train::FineTuneError>;
    }
    impl<B: FusedAutodiffBackend> RunOn<B> for FineTuneJob {
        fn run(self, device: B::Device) -> Self::Output {
            match &self.start {
                Start::Scratch(size) => focal::train::train_seq2seq::<B>(
                    &self.data,
                    self.valid.as_deref(),
                    &self.out,
                    &self.config,
                    *size,
                    &device,
                ),
                Start::Init(init) => focal::train::fine_tune::<B>(
                    init,
                    &self.data,
                    self.valid.as_deref(),
                    &self.out,
                    &self.config,
                    &device,
                ),
            }
        }
    }
    {
        // With -v: the data files are read inside the job, and a refusal must stay one line.
        let from = match &start {
            Start::Init(init) => init.display().to_string(),
            Start::Scratch(size) => format!("a new {} model", size.name()),
        };
        tracing::info!(
            "fine-tuning {from} for {task} on {} ({} epochs, batch {}, lr {}) on {backend}, writing {}",
            data.display(),
            config.epochs,
            config.batch_size,
            config.learning_rate,
            out.display()
        );
    }
    let report = backend.run(FineTuneJob {
        start,
        data,
        valid,
        out: out.clone(),
        config,
    })??;
    if json {
        output::line(serde_json::to_string_pretty(&report)?)?;
    } else {
        let labels = if report.labels.is_empty() {
            String::new()
        } else {
            format!(", labels {}", report.labels.join(", "))
        };
        output::line(format_args!(
            "trained on {} examples in {:.1} s ({:.1} examples/s, {} epochs, best {}){labels}",
            report.train_examples,
            report.seconds,
            report.examples_per_second,
            report.epochs_run,
            report.best_epoch
        ))?;
        if let Some(first) = &report.bad_rows.first {
            output::line(format_args!(
                "skipped {} bad rows; the first: {first}",
                report.bad_rows.count
            ))?;
        }
        for (when, m) in [("before", &report.before), ("after", &report.after)] {
            output::line(format_args!(
                "held-out {when}: {} ({} examples)",
                tasks::held_out_line(m),
                m.examples
            ))?;
        }
        output::line(format_args!("model written to {}", out.display()))?;
    }
    Ok(())
}

fn translate(backend: BackendKind, args: TranslateArgs, json: bool) -> anyhow::Result<()> {
    struct TranslateJob {
        dir: PathBuf,
        texts: Vec<String>,
    }
    impl BackendJob for TranslateJob {
        type Output = anyhow::Result<Vec<String>>;
    }
    impl<B: FusedAutodiffBackend> RunOn<B> for TranslateJob {
        fn run(self, device: B::Device) -> Self::Output {
            let (artifact, model) =
                focal::train::load_checkpoint::<B::InnerBackend>(&self.dir, &device)?;
            let vocabulary = &artifact.vocabulary;
            let mut sources = Vec::with_capacity(self.texts.len());
            for text in &self.texts {
                let ids = vocabulary
                    .encode(text)
                    .with_context(|| format!("input {}", output::echo(text)))?;
                if ids.len() > artifact.max_input_len {
                    bail!(
                        "input {} has {} tokens; this model takes at most {}",
                        output::echo(text),
                        ids.len(),
                        artifact.max_input_len
                    );
                }
                sources.push(ids);
            }
            let specials = vocabulary.specials();
            let sources: Vec<&[usize]> = sources.iter().map(Vec::as_slice).collect();
            let (source, valid) =
                focal::train::batch::source_tensors::<B::InnerBackend>(&sources, specials, &device);
            let outputs = model.greedy_decode(source, valid, specials, artifact.max_output_len);
            Ok(outputs.iter().map(|ids| vocabulary.decode(ids)).collect())
        }
    }

    let outputs = backend.run(TranslateJob {
        dir: args.model.clone(),
        texts: args.text.clone(),
    })??;
    if json {
        let items: Vec<_> = args
            .text
            .iter()
            .zip(&outputs)
            .map(|(input, output)| json!({"input": input, "output": output}))
            .collect();
        output::line(serde_json::to_string_pretty(
            &json!({"model": args.model, "translations": items}),
        )?)?;
    } else {
        for translation in outputs {
            output::line(translation)?;
        }
    }
    Ok(())
}

fn info(json: bool) -> anyhow::Result<()> {
    let enabled = BackendKind::enabled();
    let adapter = if BackendKind::Wgpu.is_enabled() {
        Some(focal::backend::wgpu_adapter_info().map_err(|e| e.to_string()))
    } else {
        None
    };
    let names: Vec<&str> = enabled.iter().map(|k| k.name()).collect();
    if json {
        let adapter = match &adapter {
            Some(Ok(a)) => {
                json!({"name": a.name, "api": a.api, "device_type": a.device_type, "driver": a.driver,
                    "max_buffer_bytes": a.max_buffer_bytes})
            }
            Some(Err(e)) => json!({"error": e}),
            None => json!(null),
        };
        output::line(serde_json::to_string_pretty(&json!({
            "focal": env!("CARGO_PKG_VERSION"),
            "burn": focal::BURN_VERSION,
            "backends": names,
            "default_backend": "ndarray",
            "wgpu_adapter": adapter,
        }))?)?;
    } else {
        output::line(format_args!(
            "focal {} (burn {})",
            env!("CARGO_PKG_VERSION"),
            focal::BURN_VERSION
        ))?;
        output::line(format_args!(
            "backends: {} (default ndarray)",
            names.join(", ")
        ))?;
        match adapter {
            Some(Ok(a)) => output::line(format_args!(
                "wgpu adapter: {a}; largest tensor {}",
                focal::backend::format_bytes(a.max_buffer_bytes.into())
            ))?,
            Some(Err(e)) => output::line(format_args!("wgpu adapter: unavailable ({e})"))?,
            None => output::line("wgpu adapter: wgpu is not enabled in this build")?,
        }
    }
    Ok(())
}

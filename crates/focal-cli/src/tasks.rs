//! `focal classify`, `focal tag`, `focal answer`, `focal match`: transformers' pipeline tasks on
//! Hugging Face directories, over texts given as arguments or streamed from standard input.

use crate::output;
use anyhow::{Context, bail};
use clap::Args;
use focal::attention::FusedAutodiffBackend;
use focal::backend::{BackendJob, BackendKind, RunOn};
use focal::heads::AnswerSearch;
use focal::pretrained::{QaSettings, QuestionAnswerer, Tagger, TextClassifier, TextMatcher};
use focal::train::FineTuneError;
use focal::train::{BadRows, read_records};
use serde_json::json;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The texts of a command: its arguments, or the lines of standard input when it has none, read
/// a batch at a time (a long input never sits in memory at once). Empty texts are skipped with
/// a warning; each text keeps its line (or argument) number.
pub struct Inputs {
    args: std::vec::IntoIter<String>,
    stdin: Option<std::io::Lines<std::io::StdinLock<'static>>>,
    number: usize,
    skipped: usize,
}

impl Inputs {
    /// Texts from `args`, or from standard input when `args` is empty.
    pub fn new(args: Vec<String>) -> Self {
        let stdin = args.is_empty().then(|| std::io::stdin().lock().lines());
        Self {
            args: args.into_iter(),
            stdin,
            number: 0,
            skipped: 0,
        }
    }

    /// Whether the texts come from standard input.
    pub fn streaming(&self) -> bool {
        self.stdin.is_some()
    }

    fn next_text(&mut self) -> anyhow::Result<Option<String>> {
        let next = match &mut self.stdin {
            Some(lines) => lines
                .next()
                .transpose()
                .with_context(|| format!("standard input, line {}", self.number + 1))?,
            None => self.args.next(),
        };
        if next.is_some() {
            self.number += 1;
        }
        Ok(next)
    }

    /// The next at most `n` non-empty texts with their numbers (counted from 1); empty when
    /// the input is exhausted.
    pub fn batch(&mut self, n: usize) -> anyhow::Result<Vec<(usize, String)>> {
        let mut batch = Vec::with_capacity(n.min(1024));
        while batch.len() < n {
            let Some(text) = self.next_text()? else {
                break;
            };
            let text = text.strip_suffix('\r').map(str::to_string).unwrap_or(text);
            if text.trim().is_empty() {
                if self.skipped == 0 {
                    let place = if self.streaming() { "line" } else { "text" };
                    tracing::warn!("{place} {} is empty: skipped", self.number);
                }
                self.skipped += 1;
                continue;
            }
            batch.push((self.number, text));
        }
        Ok(batch)
    }

    /// Says how many empty texts were skipped, when more than the first.
    pub fn finish(self) {
        if self.skipped > 1 {
            tracing::warn!("{} empty texts were skipped in all", self.skipped);
        }
    }
}

/// Runs `each` on every batch of `inputs`.
pub fn for_each_batch(
    mut inputs: Inputs,
    batch_size: usize,
    mut each: impl FnMut(Vec<(usize, String)>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    loop {
        let batch = inputs.batch(batch_size)?;
        if batch.is_empty() {
            break;
        }
        each(batch)?;
    }
    inputs.finish();
    Ok(())
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// A BertForSequenceClassification directory (config.json with id2label,
    /// model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The second text of a pair, once per TEXT (a cross-encoder: paraphrase, entailment).
    #[arg(long)]
    pair: Vec<String>,
    /// Read pairs from standard input: each line is TEXT<TAB>SECOND TEXT.
    #[arg(long, conflicts_with = "pair")]
    pairs: bool,
    /// Labels to print per text, best first (more than the model has: all).
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Texts to classify (none: one per line of standard input).
    text: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// A BertForTokenClassification directory (config.json with id2label, e.g. O, B-PER,
    /// I-PER, …).
    #[arg(long)]
    model: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Texts to tag (none: one per line of standard input).
    text: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// A BertForQuestionAnswering directory.
    #[arg(long)]
    model: PathBuf,
    /// The text to find answers in (any length: it is read in overlapping windows).
    #[arg(long, required_unless_present = "context_file")]
    context: Option<String>,
    /// Read the context from this file instead.
    #[arg(long, conflicts_with = "context")]
    context_file: Option<PathBuf>,
    /// A question (repeatable; none: one per line of standard input).
    #[arg(long)]
    question: Vec<String>,
    /// Answers per question.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 15)]
    max_answer_len: usize,
    /// Let "no answer" (empty, score of the [CLS] token) compete.
    #[arg(long)]
    handle_impossible_answer: bool,
    /// Tokens per window of question and context (default: the model's positions, at most
    /// 384).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Tokens shared by consecutive windows (default: half a window, at most 128).
    #[arg(long)]
    doc_stride: Option<usize>,
    /// Questions per batch read from standard input.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

#[derive(Args, Debug)]
pub struct MatchArgs {
    /// A BERT or sentence-transformers directory (e.g. all-MiniLM-L6-v2).
    #[arg(long)]
    model: PathBuf,
    /// The candidates: one per line, or a .csv / .tsv / .jsonl file whose --column holds them.
    #[arg(long)]
    candidates: PathBuf,
    /// The column (CSV, TSV header) or field (JSON Lines) of the candidates.
    #[arg(long, default_value = "text")]
    column: String,
    /// Matches per query.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Texts per forward pass (candidates and queries).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Queries (none: one per line of standard input).
    query: Vec<String>,
}

/// `{"line": n}` for texts read from standard input (so that skipped empty lines leave the
/// numbering clear), nothing for arguments.
pub fn line_field(streaming: bool, number: usize) -> serde_json::Value {
    if streaming {
        json!(number)
    } else {
        json!(null)
    }
}

fn split_pair(number: usize, line: &str) -> anyhow::Result<(String, String)> {
    let Some((text, pair)) = line.split_once('\t') else {
        bail!("line {number}: --pairs needs TEXT<TAB>SECOND TEXT, found no tab");
    };
    Ok((text.to_string(), pair.to_string()))
}

struct ClassifyJob {
    args: ClassifyArgs,
    json: bool,
}

impl BackendJob for ClassifyJob {
    type Output = anyhow::Result<()>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for ClassifyJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = self.args;
        if !args.pair.is_empty() && args.pair.len() != args.text.len() {
            bail!(
                "--pair is given {} times for {} texts: one second text per TEXT",
                args.pair.len(),
                args.text.len()
            );
        }
        if args.top_k == 0 {
            bail!("--top-k must be at least 1");
        }
        let classifier = TextClassifier::<B::InnerBackend>::load(&args.model, &device)?;
        let mut given_pairs = args.pair.into_iter();
        let inputs = Inputs::new(args.text);
        let streaming = inputs.streaming();
        for_each_batch(inputs, args.batch_size, |batch| {
            let (numbers, mut texts): (Vec<usize>, Vec<String>) = batch.into_iter().unzip();
            let pairs: Option<Vec<String>> = if args.pairs {
                let split = numbers
                    .iter()
                    .zip(&texts)
                    .map(|(&n, line)| split_pair(n, line))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let (firsts, seconds) = split.into_iter().unzip();
                texts = firsts;
                Some(seconds)
            } else if given_pairs.len() > 0 {
                Some(given_pairs.by_ref().take(texts.len()).collect())
            } else {
                None
            };
            let results = classifier.classify(&texts, pairs.as_deref(), Some(args.top_k))?;
            output::ensure_finite(
                "score",
                results.iter().flatten().map(|l| f64::from(l.score)),
            )?;
            for (i, labels) in results.iter().enumerate() {
                let pair = pairs.as_ref().map(|p| p[i].as_str());
                if self.json {
                    output::line(json!({
                        "line": line_field(streaming, numbers[i]),
                        "text": texts[i],
                        "pair": pair,
                        "labels": labels,
                    }))?;
                } else {
                    let shown: Vec<String> = labels
                        .iter()
                        .map(|l| format!("{} {:.4}", l.label, l.score))
                        .collect();
                    let input = match pair {
                        Some(pair) => format!("{}\t{pair}", texts[i]),
                        None => texts[i].clone(),
                    };
                    output::line(format_args!("{}\t{input}", shown.join(", ")))?;
                }
            }
            Ok(())
        })
    }
}

pub fn classify(backend: BackendKind, args: ClassifyArgs, json: bool) -> anyhow::Result<()> {
    backend.run(ClassifyJob { args, json })?
}

struct TagJob {
    args: TagArgs,
    json: bool,
}

impl BackendJob for TagJob {
    type Output = anyhow::Result<()>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for TagJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let tagger = Tagger::<B::InnerBackend>::load(&args.model, &device)?;
        let inputs = Inputs::new(args.text);
        let streaming = inputs.streaming();
        for_each_batch(inputs, args.batch_size, |batch| {
            let (numbers, texts): (Vec<usize>, Vec<String>) = batch.into_iter().unzip();
            let tagged = tagger.tag(&texts)?;
            output::ensure_finite("score", tagged.iter().flatten().map(|e| f64::from(e.score)))?;
            for (i, entities) in tagged.iter().enumerate() {
                if self.json {
                    output::line(json!({
                        "line": line_field(streaming, numbers[i]),
                        "text": texts[i],
                        "entities": entities,
                    }))?;
                } else {
                    let shown: Vec<String> = entities
                        .iter()
                        .map(|e| {
                            format!(
                                "{} \"{}\" [{}, {}) {:.4}",
                                e.entity_group, e.word, e.start, e.end, e.score
                            )
                        })
                        .collect();
                    output::line(format_args!("{}\t{}", texts[i], shown.join("; ")))?;
                }
            }
            Ok(())
        })
    }
}

pub fn tag(backend: BackendKind, args: TagArgs, json: bool) -> anyhow::Result<()> {
    backend.run(TagJob { args, json })?
}

struct AnswerJob {
    args: AnswerArgs,
    json: bool,
}

impl BackendJob for AnswerJob {
    type Output = anyhow::Result<()>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for AnswerJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let context = match (&args.context, &args.context_file) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("--context-file {}", path.display()))?,
            (None, None) => bail!("give --context TEXT or --context-file FILE"),
        };
        if context.trim().is_empty() {
            bail!("the context is empty");
        }
        let settings = QaSettings {
            search: AnswerSearch {
                top_k: args.top_k,
                max_answer_len: args.max_answer_len,
                handle_impossible_answer: args.handle_impossible_answer,
            },
            max_seq_len: args.max_seq_len,
            doc_stride: args.doc_stride,
        };
        settings.search.validate()?;
        let answerer = QuestionAnswerer::<B::InnerBackend>::load(&args.model, &device)?;
        let inputs = Inputs::new(args.question);
        let streaming = inputs.streaming();
        for_each_batch(inputs, args.batch_size, |batch| {
            for (number, question) in batch {
                let answers = answerer.answer(&question, &context, &settings)?;
                output::ensure_finite("score", answers.iter().map(|a| a.score))?;
                if self.json {
                    output::line(json!({
                        "line": line_field(streaming, number),
                        "question": question,
                        "answers": answers,
                    }))?;
                } else {
                    for answer in answers {
                        output::line(format_args!(
                            "{}\t{:.4}\t[{}, {})\t{question}",
                            answer.answer, answer.score, answer.start, answer.end
                        ))?;
                    }
                }
            }
            Ok(())
        })
    }
}

pub fn answer(backend: BackendKind, args: AnswerArgs, json: bool) -> anyhow::Result<()> {
    backend.run(AnswerJob { args, json })?
}

/// Reads the candidates of `path` a batch at a time: plain lines, or the `column` of a CSV /
/// TSV file (by header) or of a JSON Lines file (by field), chosen by the file's extension
/// (`focal::train::read_records`). Empty candidates are skipped.
fn read_candidates(
    path: &Path,
    column: &str,
    batch_size: usize,
    mut each: impl FnMut(Vec<String>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut batch = Vec::new();
    let mut total = 0;
    let mut push = |text: String| -> anyhow::Result<()> {
        if text.trim().is_empty() {
            return Ok(());
        }
        batch.push(text);
        total += 1;
        if batch.len() == batch_size {
            each(std::mem::take(&mut batch))?;
        }
        Ok(())
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ["csv", "tsv", "jsonl", "ndjson"].contains(&extension.as_str()) {
        read_records::<anyhow::Error>(
            path,
            &[column],
            &mut BadRows::strict(),
            |line, mut values| {
                let text = values
                    .pop()
                    .flatten()
                    .with_context(|| format!("{}, line {line}: no \"{column}\"", path.display()))?;
                push(text)
            },
        )
        .map_err(|err| match err.downcast_ref::<FineTuneError>() {
            Some(FineTuneError::Column { header, .. }) => anyhow::anyhow!(
                "{}: no column \"{column}\" (the header has {}); choose one with --column",
                path.display(),
                header.join(", ")
            ),
            _ => err,
        })?;
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("--candidates {}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            push(line.with_context(|| format!("{}, line {}", path.display(), i + 1))?)?;
        }
    }
    if !batch.is_empty() {
        each(batch)?;
    }
    Ok(total)
}

struct MatchJob {
    args: MatchArgs,
    json: bool,
}

impl BackendJob for MatchJob {
    type Output = anyhow::Result<()>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for MatchJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = self.args;
        if args.top_k == 0 || args.batch_size == 0 {
            bail!("--top-k and --batch-size must be at least 1");
        }
        let mut matcher = TextMatcher::<B::InnerBackend>::load(&args.model, &device)?;
        let count = read_candidates(&args.candidates, &args.column, args.batch_size, |texts| {
            Ok(matcher.add_candidates(texts)?)
        })?;
        if count == 0 {
            bail!("{}: no candidates", args.candidates.display());
        }
        let inputs = Inputs::new(args.query);
        let streaming = inputs.streaming();
        for_each_batch(inputs, args.batch_size, |batch| {
            let (numbers, queries): (Vec<usize>, Vec<String>) = batch.into_iter().unzip();
            let ranked = matcher.top_k(&queries, args.top_k)?;
            output::ensure_finite("score", ranked.iter().flatten().map(|m| f64::from(m.score)))?;
            for (i, matches) in ranked.iter().enumerate() {
                if self.json {
                    output::line(json!({
                        "line": line_field(streaming, numbers[i]),
                        "query": queries[i],
                        "matches": matches,
                    }))?;
                } else {
                    for (rank, m) in matches.iter().enumerate() {
                        output::line(format_args!(
                            "{}\t{}\t{:.4}\t{}",
                            queries[i],
                            rank + 1,
                            m.score,
                            m.text
                        ))?;
                    }
                }
            }
            Ok(())
        })
    }
}

pub fn match_texts(backend: BackendKind, args: MatchArgs, json: bool) -> anyhow::Result<()> {
    backend.run(MatchJob { args, json })?
}

/// The held-out figures of a fine-tuned model on one line: the task's metrics (percent) and the
/// loss.
pub fn held_out_line(m: &focal::train::HeldOut) -> String {
    let mut parts = Vec::new();
    let mut percent = |name: &str, value: Option<f64>| {
        if let Some(v) = value {
            parts.push(format!("{name} {:.2}%", 100.0 * v));
        }
    };
    percent("accuracy", m.accuracy);
    percent("micro-F1", m.micro_f1);
    percent("macro-F1", m.macro_f1);
    percent("entity precision", m.entity_precision);
    percent("entity recall", m.entity_recall);
    percent("entity F1", m.entity_f1);
    percent("exact match", m.exact_match);
    percent("F1", m.f1);
    percent("span match", m.span_match);
    percent("next-token accuracy", m.next_token_accuracy);
    percent("token accuracy", m.token_accuracy);
    if let Some(p) = m.perplexity {
        parts.push(format!("perplexity {p:.2}"));
    }
    if let Some(r) = m.pearson {
        parts.push(format!("Pearson {r:.4}"));
    }
    parts.push(format!("loss {:.4}", m.loss));
    parts.join(", ")
}

/// Refuses a `--model` that is not a directory or a `--data` that is not a file.
pub(crate) fn model_and_data(model: &Path, data: &Path) -> anyhow::Result<()> {
    if !model.is_dir() {
        anyhow::bail!("--model {}: no such directory", model.display());
    }
    if !data.is_file() {
        anyhow::bail!("--data {}: no such file", data.display());
    }
    Ok(())
}

/// Which columns of a rows file hold the texts and labels.
#[derive(Args, Debug)]
pub struct ColumnArgs {
    /// The column of the texts (default: the training run's, else text).
    #[arg(long)]
    text_column: Option<String>,
    /// The column of the second texts of pairs (default: the training run's, else none).
    #[arg(long)]
    pair_column: Option<String>,
    /// The column of the labels (default: the training run's, else label).
    #[arg(long)]
    label_column: Option<String>,
}

impl ColumnArgs {
    /// The columns given, the defaults filling in the others; `None` when none was given (the
    /// training run's are used then).
    pub fn columns(&self) -> Option<focal::train::Columns> {
        let given =
            self.text_column.is_some() || self.pair_column.is_some() || self.label_column.is_some();
        let defaults = focal::train::Columns::default();
        given.then(|| focal::train::Columns {
            text: self.text_column.clone().unwrap_or(defaults.text),
            pair: self.pair_column.clone(),
            label: self.label_column.clone().unwrap_or(defaults.label),
        })
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A directory written by `focal train` (or any BertForSequenceClassification,
    /// BertForTokenClassification, BertForQuestionAnswering or GPT2LMHeadModel directory).
    #[arg(long)]
    model: PathBuf,
    /// Labelled rows (.csv, .tsv, .jsonl; pairs of texts for a sequence-to-sequence model), a
    /// CoNLL file for a tagger, a SQuAD file for a question answerer, or plain text for a
    /// language model.
    #[arg(long)]
    data: PathBuf,
    /// Also draw the confusion matrix (single-label classification) into this PNG file.
    #[arg(long)]
    confusion: Option<PathBuf>,
    #[command(flatten)]
    columns: ColumnArgs,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Longest input in tokens (default: the one the model was trained with, from its
    /// `metrics.json`; else 128).
    #[arg(long)]
    max_length: Option<usize>,
}

struct EvalJob {
    args: EvalArgs,
}

impl BackendJob for EvalJob {
    type Output = Result<focal::train::Evaluation, focal::train::FineTuneError>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for EvalJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        focal::train::evaluate_model::<B::InnerBackend>(
            &args.model,
            &args.data,
            args.columns.columns().as_ref(),
            args.batch_size,
            args.max_length,
            &device,
        )
    }
}

/// `focal eval`: a fine-tuned model's figures on a labelled file, per class and overall.
pub fn eval(backend: BackendKind, args: EvalArgs, json: bool) -> anyhow::Result<()> {
    model_and_data(&args.model, &args.data)?;
    let confusion_file = args.confusion.clone();
    let evaluation = backend.run(EvalJob { args })??;
    let m = &evaluation.held_out;
    if let Some(path) = &confusion_file {
        let Some(confusion) = &m.confusion else {
            anyhow::bail!(
                "--confusion: a {} model has no confusion matrix (single-label classification only)",
                evaluation.task
            );
        };
        let picture = focal::train::plots::confusion_chart(&evaluation.labels, confusion)?;
        focal::train::plots::write_picture(path, &picture)?;
    }
    if json {
        return output::line(serde_json::to_string_pretty(&evaluation)?);
    }
    if !m.per_class.is_empty() {
        let width = m
            .per_class
            .iter()
            .map(|c| c.label.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        output::line(format_args!(
            "{:width$}  precision  recall      f1  support",
            "label"
        ))?;
        for c in &m.per_class {
            output::line(format_args!(
                "{:width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
                c.label, c.precision, c.recall, c.f1, c.support
            ))?;
        }
    }
    if let Some(confusion) = &m.confusion {
        let width = evaluation
            .labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(4)
            .max(6);
        let header: Vec<String> = evaluation
            .labels
            .iter()
            .map(|l| format!("{l:>width$}"))
            .collect();
        output::line(format_args!(
            "confusion (rows true, columns predicted)\n{:width$}  {}",
            "",
            header.join("  ")
        ))?;
        for (label, row) in evaluation.labels.iter().zip(confusion) {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:>width$}")).collect();
            output::line(format_args!("{label:width$}  {}", cells.join("  ")))?;
        }
    }
    output::line(format_args!(
        "{}: {} ({} examples)",
        evaluation.task,
        held_out_line(m),
        m.examples
    ))
}

//! Fine-tuning a text classifier on a user's labelled file, on burn-train's `Learner`: texts (or
//! text pairs) and labels from CSV, TSV or JSON Lines, a BERT or sentence-transformers directory
//! to start from, and a Hugging Face `BertForSequenceClassification` directory as the result.

use crate::optim::FusedAdamWConfig;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoaderBuilder, Dataset};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use focal_attention::{FusedAttentionBackend, FusedAutodiffBackend};
use focal_backend::ConfigError;
use focal_heads::ProblemType;
use focal_heads::loss::cross_entropy;
use focal_pretrained::pipelines::bert_inputs;
use focal_pretrained::{
    BertForSequenceClassification, EncodedBatch, PretrainedError, TextTokenizer,
};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Why fine-tuning could not run.
#[derive(Debug, thiserror::Error)]
pub enum FineTuneError {
    /// A data file is missing, malformed, or has a row that cannot be used.
    #[error("{path}, line {line}: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// The line (1 = the first line of the file, a CSV header included).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A CSV / TSV header lacks a column.
    #[error("{path}, line 1: no column \"{column}\" in the header ({})", header.join(", "))]
    Column {
        /// The file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The header's columns.
        header: Vec<String>,
    },
    /// A data file cannot be read at all.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model directory cannot be read or written.
    #[error(transparent)]
    Model(#[from] PretrainedError),
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Which columns (CSV / TSV header names) or fields (JSON Lines) hold the texts and labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Columns {
    /// The text. Default `text`.
    pub text: String,
    /// The second text of a pair (`None`: single texts). Default none.
    pub pair: Option<String>,
    /// The label. Default `label`.
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            text: "text".to_string(),
            pair: None,
            label: "label".to_string(),
        }
    }
}

/// One labelled row of a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledText {
    /// The text.
    pub text: String,
    /// The second text of a pair.
    pub pair: Option<String>,
    /// The label as the file writes it.
    pub label: String,
    /// Its line in the file.
    pub line: usize,
}

/// Calls `each(line, values)` for every row of a `.csv` or `.tsv` file (columns found by the
/// header) or a `.jsonl` / `.ndjson` file (fields of each object; numbers and booleans as text;
/// blank lines skipped), with the values of `columns` in that order (`None` where a row has
/// none). A column missing from the header is [`FineTuneError::Column`]; a malformed line or a
/// file of another type is an error naming it. `each` may stop the reading with an error.
pub fn read_records<E: From<FineTuneError>>(
    path: &Path,
    columns: &[&str],
    mut each: impl FnMut(usize, Vec<Option<String>>) -> Result<(), E>,
) -> Result<(), E> {
    let file_error = |reason: String| FineTuneError::File {
        path: path.to_path_buf(),
        reason,
    };
    let row_error = |line: usize, reason: String| FineTuneError::Data {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match extension.as_str() {
        "csv" | "tsv" => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(if extension == "tsv" { b'\t' } else { b',' })
                .from_reader(std::io::BufReader::new(file));
            let headers = reader
                .headers()
                .map_err(|e| row_error(1, e.to_string()))?
                .clone();
            let indices = columns
                .iter()
                .map(|&name| {
                    headers
                        .iter()
                        .position(|h| h == name)
                        .ok_or_else(|| FineTuneError::Column {
                            path: path.to_path_buf(),
                            column: name.to_string(),
                            header: headers.iter().map(str::to_string).collect(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            for record in reader.records() {
                let record = record.map_err(|e| {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    row_error(line, e.to_string())
                })?;
                let line = record.position().map_or(0, |p| p.line() as usize);
                let values = indices
                    .iter()
                    .map(|&i| record.get(i).map(str::to_string))
                    .collect();
                each(line, values)?;
            }
        }
        "jsonl" | "ndjson" => {
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let number = i + 1;
                let line = line.map_err(|e| row_error(number, e.to_string()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(&line)
                    .map_err(|e| row_error(number, format!("not JSON: {e}")))?;
                let values = columns
                    .iter()
                    .map(|&name| match value.get(name) {
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                        _ => None,
                    })
                    .collect();
                each(number, values)?;
            }
        }
        other => {
            return Err(file_error(format!(
                "unknown file type \"{other}\": expected .csv, .tsv or .jsonl"
            ))
            .into());
        }
    }
    Ok(())
}

/// Reads the labelled rows of a `.csv`, `.tsv` or `.jsonl` file (see [`read_records`]). A
/// missing column, an empty text or label, or a malformed line is an error naming the file and
/// the line.
pub fn read_labelled(path: &Path, columns: &Columns) -> Result<Vec<LabelledText>, FineTuneError> {
    let mut names = vec![columns.text.as_str(), columns.label.as_str()];
    names.extend(columns.pair.as_deref());
    let mut rows = Vec::new();
    read_records::<FineTuneError>(path, &names, |line, values| {
        let missing = |what: &str, name: &str| FineTuneError::Data {
            path: path.to_path_buf(),
            line,
            reason: format!("no {what} (column \"{name}\")"),
        };
        let present = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        let text = present(&values[0]).ok_or_else(|| missing("text", &columns.text))?;
        let label = present(&values[1]).ok_or_else(|| missing("label", &columns.label))?;
        let pair = match &columns.pair {
            Some(name) => Some(present(&values[2]).ok_or_else(|| missing("second text", name))?),
            None => None,
        };
        rows.push(LabelledText {
            text,
            pair,
            label: label.trim().to_string(),
            line,
        });
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(FineTuneError::File {
            path: path.to_path_buf(),
            reason: "no labelled rows".to_string(),
        });
    }
    Ok(rows)
}

/// The label set of rows, sorted (numerically when every label is an integer).
pub fn label_set(rows: &[LabelledText]) -> Vec<String> {
    let set: BTreeSet<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let mut labels: Vec<String> = set.into_iter().map(str::to_string).collect();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or_default());
    }
    labels
}

/// A labelled example, tokenised once (unpadded), with its class id.
#[derive(Clone, Debug)]
pub struct ClassExample {
    ids: Vec<u32>,
    types: Vec<u32>,
    class: usize,
}

/// Examples in memory, for burn's data loader.
struct Examples(Vec<ClassExample>);

impl Dataset<ClassExample> for Examples {
    fn get(&self, index: usize) -> Option<ClassExample> {
        self.0.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A batch of classification examples, padded to its longest row.
#[derive(Clone, Debug)]
pub struct ClassBatch<B: Backend> {
    ids: Tensor<B, 2, Int>,
    types: Tensor<B, 2, Int>,
    valid: Tensor<B, 2, burn::tensor::Bool>,
    targets: Tensor<B, 1, Int>,
}

/// Pads tokenised examples into [`ClassBatch`]es (each batch to its longest row).
#[derive(Clone)]
struct ClassBatcher {
    pad_id: u32,
}

impl<B: Backend> Batcher<B, ClassExample, ClassBatch<B>> for ClassBatcher {
    fn batch(&self, items: Vec<ClassExample>, device: &B::Device) -> ClassBatch<B> {
        let l = items.iter().map(|i| i.ids.len()).max().unwrap_or(0);
        let pad = |row: &[u32], fill: u32| -> Vec<u32> {
            row.iter()
                .copied()
                .chain(std::iter::repeat(fill))
                .take(l)
                .collect()
        };
        let batch = EncodedBatch {
            ids: items.iter().map(|i| pad(&i.ids, self.pad_id)).collect(),
            type_ids: items.iter().map(|i| pad(&i.types, 0)).collect(),
            attention_mask: items
                .iter()
                .map(|i| pad(&vec![1; i.ids.len()], 0))
                .collect(),
        };
        let (ids, types, valid) = bert_inputs(&batch, device);
        let classes: Vec<i64> = items.iter().map(|i| i.class as i64).collect();
        let targets = Tensor::from_data(TensorData::new(classes, [items.len()]), device);
        ClassBatch {
            ids,
            types,
            valid,
            targets,
        }
    }
}

/// The classifier as burn-train trains it.
#[derive(Module, Debug)]
pub struct ClassifierTraining<B: Backend> {
    /// The model.
    pub model: BertForSequenceClassification<B>,
}

/// Logits, loss and targets of a batch.
fn class_output<B: FusedAttentionBackend>(
    model: &BertForSequenceClassification<B>,
    batch: ClassBatch<B>,
) -> ClassificationOutput<B> {
    let logits = model.forward((batch.ids, batch.types, batch.valid));
    let loss = cross_entropy(logits.clone(), batch.targets.clone());
    ClassificationOutput::new(loss, logits, batch.targets)
}

impl<B: FusedAutodiffBackend> TrainStep for ClassifierTraining<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ClassBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let output = class_output(&self.model, batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<B: FusedAttentionBackend> InferenceStep for ClassifierTraining<B> {
    type Input = ClassBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ClassBatch<B>) -> ClassificationOutput<B> {
        class_output(&self.model, batch)
    }
}

/// Settings of [`fine_tune_classifier`].
#[derive(Clone, Debug, Serialize)]
pub struct FineTuneConfig {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// AdamW's learning rate (constant).
    pub learning_rate: f64,
    /// Longest input in tokens (at most the model's positions).
    pub max_length: usize,
    /// Seed of the new head's initialisation, dropout and shuffling.
    pub seed: u64,
    /// Where the texts and labels are.
    pub columns: Columns,
    /// Print one line per epoch on standard error (burn-train's loss and accuracy).
    #[serde(skip)]
    pub progress: bool,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 32,
            learning_rate: 5e-5,
            max_length: 128,
            seed: 42,
            columns: Columns::default(),
            progress: false,
        }
    }
}

impl FineTuneConfig {
    /// Checks the settings; the error names the offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "FineTuneConfig";
        ConfigError::ensure_positive(NAME, "epochs", self.epochs)?;
        ConfigError::ensure_positive(NAME, "batch_size", self.batch_size)?;
        ConfigError::ensure_positive(NAME, "max_length", self.max_length)?;
        ConfigError::ensure(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            NAME,
            || format!("learning_rate must be positive, got {}", self.learning_rate),
        )
    }
}

/// Held-out figures of a fine-tuned classifier.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassifierMetrics {
    /// Examples scored.
    pub examples: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of examples whose best label is right.
    pub accuracy: f64,
    /// Mean over the labels of each label's F1 (a label never predicted nor present counts 0).
    pub macro_f1: f64,
    /// Confusion counts `[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// What [`fine_tune_classifier`] reports (also written as `metrics.json`).
#[derive(Clone, Debug, Serialize)]
pub struct FineTuneReport {
    /// The labels, by id.
    pub labels: Vec<String>,
    /// Training rows.
    pub train_examples: usize,
    /// The settings.
    pub config: FineTuneConfig,
    /// Seconds of training.
    pub seconds: f64,
    /// Training examples per second.
    pub examples_per_second: f64,
    /// Held-out figures before training.
    pub before: ClassifierMetrics,
    /// Held-out figures after training.
    pub after: ClassifierMetrics,
}

/// burn-train's metrics as one line per epoch on standard error (`epoch 2/3: train loss 0.41
/// accuracy 81.2% | valid loss 0.37 accuracy 84.4%`), the means of the epoch's batches; nothing
/// when `print` is off. burn-train's plain renderer writes every step on standard output,
/// which belongs to results.
struct EpochLines {
    print: bool,
    epochs: usize,
    names: std::collections::HashMap<burn::train::metric::MetricId, String>,
    train: std::collections::BTreeMap<String, (f64, usize)>,
    valid: std::collections::BTreeMap<String, (f64, usize)>,
    printed: usize,
}

impl EpochLines {
    fn record(&mut self, valid: bool, state: MetricState) {
        if let MetricState::Numeric(entry, value) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            let split = if valid {
                &mut self.valid
            } else {
                &mut self.train
            };
            let (sum, count) = split.entry(name.clone()).or_default();
            *sum += value.current();
            *count += 1;
        }
    }

    fn summary(split: &std::collections::BTreeMap<String, (f64, usize)>) -> String {
        split
            .iter()
            .map(|(name, &(sum, count))| {
                let mean = sum / count.max(1) as f64;
                if name.contains("Accuracy") {
                    format!("{} {:.1}%", name.to_lowercase(), mean)
                } else {
                    format!("{} {mean:.4}", name.to_lowercase())
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        self.record(false, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(true, state);
    }

    fn render_train(&mut self, _item: TrainingProgress, _progress: Vec<ProgressType>) {}

    fn render_valid(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let done = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        if done && epoch > self.printed {
            if self.print {
                eprintln!(
                    "epoch {epoch}/{}: train {} | valid {}",
                    self.epochs,
                    Self::summary(&self.train),
                    Self::summary(&self.valid)
                );
            }
            self.printed = epoch;
            self.train.clear();
            self.valid.clear();
        }
    }

    fn on_train_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
    fn render_test(&mut self, _item: EvaluationProgress, _progress: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: burn::train::metric::MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}

/// Loss, accuracy, macro-F1 and confusion counts of `model` on `examples`.
fn evaluate_classifier<B: FusedAttentionBackend>(
    model: &BertForSequenceClassification<B>,
    batcher: &ClassBatcher,
    examples: &[ClassExample],
    labels: usize,
    batch_size: usize,
    device: &B::Device,
) -> ClassifierMetrics {
    let mut confusion = vec![vec![0usize; labels]; labels];
    let mut loss_sum = 0.0;
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch: ClassBatch<B> = batcher.batch(chunk.to_vec(), device);
        let output = class_output(model, batch);
        let loss: f32 = output.loss.into_scalar().elem();
        loss_sum += f64::from(loss) * chunk.len() as f64;
        let predicted: Vec<i64> = output
            .output
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap_or_default();
        for (example, p) in chunk.iter().zip(predicted) {
            confusion[example.class][p as usize] += 1;
        }
    }
    let n = examples.len().max(1) as f64;
    let correct: usize = (0..labels).map(|i| confusion[i][i]).sum();
    let f1 = (0..labels).map(|c| {
        let tp = confusion[c][c] as f64;
        let predicted: usize = (0..labels).map(|t| confusion[t][c]).sum();
        let actual: usize = confusion[c].iter().sum();
        if predicted + actual == 0 {
            0.0
        } else {
            2.0 * tp / (predicted + actual) as f64
        }
    });
    ClassifierMetrics {
        examples: examples.len(),
        loss: loss_sum / n,
        accuracy: correct as f64 / n,
        macro_f1: f1.sum::<f64>() / labels.max(1) as f64,
        confusion,
    }
}

/// Class ids of rows under `labels`, and their tokens: a label outside the set is an error
/// naming the file and the line, and so is a text the tokenizer refuses (found here, before
/// training, not as a panic inside the data loader). Each text is tokenised once.
fn tokenised(
    rows: Vec<LabelledText>,
    labels: &[String],
    tokenizer: &TextTokenizer,
    path: &Path,
) -> Result<Vec<ClassExample>, FineTuneError> {
    let mut examples = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(256) {
        let texts: Vec<String> = chunk.iter().map(|r| r.text.clone()).collect();
        let pairs: Option<Vec<String>> = chunk.iter().map(|r| r.pair.clone()).collect();
        let encodings =
            tokenizer
                .encode(&texts, pairs.as_deref())
                .map_err(|e| FineTuneError::File {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        for (row, encoding) in chunk.iter().zip(encodings) {
            let class =
                labels
                    .iter()
                    .position(|l| *l == row.label)
                    .ok_or_else(|| FineTuneError::Data {
                        path: path.to_path_buf(),
                        line: row.line,
                        reason: format!(
                            "label \"{}\" is not one of the training labels {labels:?}",
                            row.label
                        ),
                    })?;
            // Batches are padded on the right: the real tokens come first.
            let n = encoding
                .get_attention_mask()
                .iter()
                .filter(|&&m| m == 1)
                .count();
            examples.push(ClassExample {
                ids: encoding.get_ids()[..n].to_vec(),
                types: encoding.get_type_ids()[..n].to_vec(),
                class,
            });
        }
    }
    Ok(examples)
}

/// Fine-tunes a sequence classifier on burn-train's `Learner` and saves it as a Hugging Face
/// `BertForSequenceClassification` directory at `out` (with `metrics.json`).
///
/// - `init`: a BERT or sentence-transformers directory (a new classification head on its
///   encoder and pooler), or a `BertForSequenceClassification` directory with the same labels;
/// - `train`, `valid`: `.csv`, `.tsv` or `.jsonl` files (see [`read_labelled`]); the labels are
///   those of `train`, sorted;
/// - the optimizer is [`FusedAdamWConfig`]'s AdamW at a constant learning rate; burn-train's
///   loss and accuracy metrics run on both splits; its checkpoints go to a temporary directory
///   beside `out`, removed at the end.
pub fn fine_tune_classifier<B: FusedAutodiffBackend>(
    init: &Path,
    train: &Path,
    valid: &Path,
    out: &Path,
    config: &FineTuneConfig,
    device: &B::Device,
) -> Result<FineTuneReport, FineTuneError> {
    config.validate()?;
    let train_rows = read_labelled(train, &config.columns)?;
    let valid_rows = read_labelled(valid, &config.columns)?;
    let labels = label_set(&train_rows);
    if labels.len() < 2 {
        return Err(FineTuneError::File {
            path: train.to_path_buf(),
            reason: format!("one label only ({labels:?}): a classifier needs at least two"),
        });
    }
    // The new head's initialisation and dropout draw from the backend's generator.
    focal_backend::seed::<B>(device, config.seed);
    let (model, task) = BertForSequenceClassification::<B>::for_labels(
        init,
        labels.clone(),
        ProblemType::SingleLabel,
        device,
    )?;
    let max_length = config.max_length.min(task.bert.max_position_embeddings);
    let tokenizer = TextTokenizer::load_padded(
        init,
        max_length,
        task.bert.vocab_size,
        task.bert.pad_token_id as u32,
    )?;
    let train_examples = tokenised(train_rows, &labels, &tokenizer, train)?;
    let train_count = train_examples.len();
    let valid_examples = tokenised(valid_rows, &labels, &tokenizer, valid)?;
    let batcher = ClassBatcher {
        pad_id: task.bert.pad_token_id as u32,
    };
    let before = evaluate_classifier(
        &model.valid(),
        &batcher,
        &valid_examples,
        labels.len(),
        config.batch_size,
        device,
    );

    let train_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size)
        .shuffle(config.seed)
        .num_workers(1)
        .set_device(device.clone())
        .build(Examples(train_examples));
    let valid_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size)
        .num_workers(1)
        .set_device(device.clone())
        .build(Examples(valid_examples.clone()));

    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| FineTuneError::File {
        path: parent.to_path_buf(),
        reason: e.to_string(),
    })?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let scratch = parent.join(format!(".{name}.learner-{}", std::process::id()));
    let training = SupervisedTraining::new(&scratch, train_loader, valid_loader)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(AccuracyMetric::new())
        .metric_valid_numeric(AccuracyMetric::new())
        .renderer(EpochLines {
            print: config.progress,
            epochs: config.epochs,
            names: Default::default(),
            train: Default::default(),
            valid: Default::default(),
            printed: 0,
        })
        // The process's own `tracing` subscriber (the CLI's) stays; burn-train would try to
        // install a second one.
        .with_application_logger(None)
        .num_epochs(config.epochs);
    let optimizer = FusedAdamWConfig::new().init::<B, ClassifierTraining<B>>();
    let started = std::time::Instant::now();
    let result = training.launch(Learner::new(
        ClassifierTraining { model },
        optimizer,
        config.learning_rate,
    ));
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&scratch);
    let trained = result.model.model;
    let after = evaluate_classifier(
        &trained,
        &batcher,
        &valid_examples,
        labels.len(),
        config.batch_size,
        device,
    );
    let report = FineTuneReport {
        labels,
        train_examples: train_count,
        config: config.clone(),
        seconds,
        examples_per_second: (train_count * config.epochs) as f64 / seconds.max(1e-9),
        before,
        after,
    };
    let metrics = serde_json::to_vec_pretty(&report).expect("the report serialises");
    trained.save_pretrained_with(out, &task, &[("metrics.json", metrics)])?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use focal_pretrained::TextClassifier;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
    }

    /// Fine-tuning the tiny BERT fixture on 96 committed rows (place or person, from
    /// `tests/fixtures/train/generate_classify.py`): held-out accuracy and loss improve, and the
    /// directory written is a Hugging Face classifier that Focal's pipeline loads, with the
    /// data's labels and `metrics.json`.
    fn fine_tuning_learns_the_labels<B: FusedAttentionBackend>(device: &B::Device) {
        let _rng = crate::rng_lock();
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("model");
        let config = FineTuneConfig {
            epochs: 12,
            batch_size: 16,
            learning_rate: 3e-3,
            max_length: 32,
            seed: 3,
            columns: Columns::default(),
            progress: false,
        };
        let report = fine_tune_classifier::<Autodiff<B>>(
            &fixtures().join("bert"),
            &fixtures().join("train/classify_train.csv"),
            &fixtures().join("train/classify_valid.csv"),
            &dir,
            &config,
            device,
        )
        .unwrap();
        assert_eq!(report.labels, ["person", "place"]);
        assert!(
            report.after.loss < report.before.loss,
            "held-out loss {} -> {}",
            report.before.loss,
            report.after.loss
        );
        assert!(
            report.after.accuracy >= 0.9,
            "held-out accuracy {} -> {} (loss {} -> {})",
            report.before.accuracy,
            report.after.accuracy,
            report.before.loss,
            report.after.loss
        );
        let classifier = TextClassifier::<B>::load(&dir, device).unwrap();
        assert_eq!(classifier.config.labels, ["person", "place"]);
        let best = classifier
            .classify(&["paris was great .".to_string()], None, Some(1))
            .unwrap();
        assert_eq!(best[0][0].label, "place");
        assert!(dir.join("metrics.json").is_file());
        // burn-train's checkpoints lived beside the directory and are gone.
        let leftovers: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["model"]);
    }

    focal_backend::backend_tests!(fine_tuning_learns_the_labels);

    #[test]
    fn bad_rows_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        std::fs::write(&path, "text,label\nhello,a\n,b\n").unwrap();
        let err = read_labelled(&path, &Columns::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}, line 3: no text (column \"text\")", path.display())
        );
        std::fs::write(&path, "sentence,label\nhello,a\n").unwrap();
        let err = read_labelled(&path, &Columns::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("no column \"text\" in the header (sentence, label)"),
            "{err}"
        );
        let path = dir.path().join("data.jsonl");
        std::fs::write(&path, "{\"text\": \"a\", \"label\": 1}\n{oops\n").unwrap();
        let err = read_labelled(&path, &Columns::default()).unwrap_err();
        assert!(err.to_string().contains("line 2: not JSON"), "{err}");
        let rows = vec![
            LabelledText {
                text: "a".into(),
                pair: None,
                label: "10".into(),
                line: 2,
            },
            LabelledText {
                text: "b".into(),
                pair: None,
                label: "9".into(),
                line: 3,
            },
        ];
        assert_eq!(label_set(&rows), ["9", "10"]);
    }
}

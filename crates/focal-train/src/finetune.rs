//! Fine-tuning on a user's files, on burn-train's `Learner`: sequence and pair classification,
//! multi-label classification, regression and token classification (tagging), from a BERT or
//! sentence-transformers directory to a Hugging Face directory with `metrics.json` and pictures.
//!
//! One engine runs every task: burn-train's `SupervisedTraining` with Focal's `FusedAdamW`,
//! transformers' linear warmup and decay ([`WarmupLinear`]), gradient accumulation, burn-train's
//! checkpointer keeping the best epoch by the task's validation metric, and its early stopping.
//! The tasks differ only in the data they read, the head they train and the metrics they watch.

use crate::data::{
    BadRows, Columns, FineTuneError, LabelKind, LabelledRows, SquadQuestion, TaggedSentence,
    label_list, read_conll, read_squad, squad_scores, tag_set,
};
use crate::metrics::{
    ClassOutcomes, ClassScores, Correlation, EntityCounts, EntityF1Metric, EpochCounts, LmMetric,
    OutcomeMetric, PearsonMetric, RegressionPairs, SpanMatchMetric, SpanMatches, TagSequences,
    TokenCounts, class_ids, ints,
};
use crate::optim::{CountingOptimizer, FusedAdamW, FusedAdamWConfig};
use crate::plots::{self, Series};
use crate::resume::{AtomicRecorder, EpochLoader, RunState};
use crate::schedule::WarmupLinear;
use burn::backend::Flex;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder, Dataset};
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::ItemLazy;
use burn::train::metric::{Adaptor, LossInput, LossMetric, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, LearningComponentsMarker,
    MultiDeviceOptim, MultiLabelClassificationOutput, RegressionOutput, SequenceOutput,
    SupervisedTraining, TrainOutput, TrainStep,
};
use focal_attention::{FusedAttentionBackend, FusedAutodiffBackend};
use focal_backend::ConfigError;
use focal_heads::align_word_labels;
use focal_heads::loss::{binary_cross_entropy_with_logits, cross_entropy, mean_squared_error};
use focal_heads::{ClassifierPooling, ProblemType, SequenceClassifierConfig};
use focal_pretrained::pipelines::bert_inputs;
use focal_pretrained::{
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    BertInputs, BertScales, EncodedBatch, TaskConfig, TextTokenizer,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a fine-tuning run learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneTask {
    /// One label per text (sentiment, topic).
    Classify,
    /// One label per pair of texts (paraphrase, entailment).
    Pair,
    /// Any number of labels per text.
    MultiLabel,
    /// A number per text (or pair).
    Regress,
    /// A tag per word (named entities), from a CoNLL file.
    Tag,
    /// An answer span in a context (extractive question answering), from a SQuAD file.
    Qa,
    /// The next token (causal language modelling of a GPT-2 model), from plain text.
    Lm,
    /// A target text for a source text (an encoder-decoder trained from scratch,
    /// [`crate::trainer::train_seq2seq`]), from rows of pairs.
    Seq2Seq,
}

impl FineTuneTask {
    /// Every task, in the order the CLI lists them.
    pub const ALL: [FineTuneTask; 8] = [
        Self::Classify,
        Self::Pair,
        Self::MultiLabel,
        Self::Regress,
        Self::Tag,
        Self::Qa,
        Self::Lm,
        Self::Seq2Seq,
    ];

    /// The task's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classify => "classify",
            Self::Pair => "pair",
            Self::MultiLabel => "multilabel",
            Self::Regress => "regress",
            Self::Tag => "tag",
            Self::Qa => "qa",
            Self::Lm => "lm",
            Self::Seq2Seq => "seq2seq",
        }
    }

    /// The validation metric that picks the best epoch and drives early stopping (burn-train's
    /// metric name).
    pub fn watched(self) -> &'static str {
        match self {
            Self::Classify | Self::Pair | Self::MultiLabel => "Macro F1",
            Self::Regress => "Pearson",
            Self::Tag => "Entity F1",
            Self::Qa => "Span Match",
            Self::Lm => "Perplexity",
            Self::Seq2Seq => "Exact Match",
        }
    }

    /// Whether the watched metric is better lower (perplexity).
    pub fn lower_is_better(self) -> bool {
        self == Self::Lm
    }
}

impl std::fmt::Display for FineTuneTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FineTuneTask {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
                format!("unknown task \"{s}\" (known: {})", known.join(", "))
            })
    }
}

/// Settings of [`fine_tune`].
#[derive(Clone, Debug, Serialize)]
pub struct FineTuneConfig {
    /// What to learn.
    pub task: FineTuneTask,
    /// Passes over the training rows (fewer when early stopping ends the run).
    pub epochs: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Batches whose gradients are summed into one optimizer step (1: none).
    pub grad_accum: usize,
    /// AdamW's peak learning rate.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay, applied to every weight but biases and norm weights
    /// (transformers' `Trainer`, as every fine-tuning run optimizes). Default 0, as transformers'
    /// `TrainingArguments`.
    pub weight_decay: f64,
    /// Share of the optimizer steps spent warming the learning rate up from 0 (transformers'
    /// `warmup_ratio`), after which it falls linearly to 0.
    pub warmup: f64,
    /// Stop when the validation metric has not improved for this many epochs.
    pub early_stopping: Option<usize>,
    /// Without a validation file: the share of the training rows (sentences) held out for
    /// validation, drawn with the seed.
    pub valid_split: f64,
    /// Skip malformed rows (and rows with a held-out label the training file lacks), counting
    /// them in the report, instead of stopping at the first.
    pub skip_bad_rows: bool,
    /// Data-parallel replicas (burn-train's multi-device strategy): each optimizer step runs
    /// one batch on each replica and sums their gradients on the first. On one device (the
    /// CPU, or one GPU) the replicas share it.
    pub devices: usize,
    /// Longest input in tokens (at most the model's positions).
    pub max_length: usize,
    /// Seed of the new head's initialisation, dropout and shuffling.
    pub seed: u64,
    /// Where the texts and labels are (rows files; unused for tagging). For `pair`, the second
    /// text's column defaults to `text_pair`.
    pub columns: Columns,
    /// Train a linear head (logistic regression for classification) on the frozen encoder's
    /// mean-pooled embeddings, computed once, instead of fine-tuning the whole model (not for
    /// tagging). The directory written pools by the mean ([`focal_pretrained::POOLING_KEY`]).
    pub linear_probe: bool,
    /// Print one line per epoch on standard error.
    #[serde(skip)]
    pub progress: bool,
    /// Continue the run of the same settings that was killed before it wrote `out`, from its
    /// last complete epoch checkpoint (see [`crate::resume`]); refused when there is none to
    /// continue or its settings differ.
    #[serde(skip)]
    pub resume: bool,
    /// Start afresh even when a killed run that was to write `out` left checkpoints (deleting
    /// them); without it such a run is refused, naming `--resume`.
    #[serde(skip)]
    pub overwrite: bool,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            task: FineTuneTask::Classify,
            epochs: 3,
            batch_size: 32,
            grad_accum: 1,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            warmup: 0.0,
            early_stopping: None,
            valid_split: 0.1,
            skip_bad_rows: false,
            devices: 1,
            max_length: 128,
            seed: 42,
            columns: Columns::default(),
            linear_probe: false,
            progress: false,
            resume: false,
            overwrite: false,
        }
    }
}

impl FineTuneConfig {
    /// Checks the settings; the error names the offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "FineTuneConfig";
        ConfigError::ensure_positive(NAME, "epochs", self.epochs)?;
        ConfigError::ensure_positive(NAME, "batch_size", self.batch_size)?;
        ConfigError::ensure_positive(NAME, "grad_accum", self.grad_accum)?;
        ConfigError::ensure_positive(NAME, "devices", self.devices)?;
        ConfigError::ensure_positive(NAME, "max_length", self.max_length)?;
        if let Some(patience) = self.early_stopping {
            ConfigError::ensure_positive(NAME, "early_stopping", patience)?;
        }
        ConfigError::ensure(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            NAME,
            || format!("learning_rate must be positive, got {}", self.learning_rate),
        )?;
        ConfigError::ensure(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            NAME,
            || format!("weight_decay must be at least 0, got {}", self.weight_decay),
        )?;
        ConfigError::ensure((0.0..1.0).contains(&self.warmup), NAME, || {
            format!("warmup must be in [0, 1), got {}", self.warmup)
        })?;
        ConfigError::ensure(
            self.valid_split > 0.0 && self.valid_split < 1.0,
            NAME,
            || format!("valid_split must be in (0, 1), got {}", self.valid_split),
        )?;
        ConfigError::ensure(
            self.task != FineTuneTask::Lm || self.max_length >= 2,
            NAME,
            || {
                format!(
                    "max_length must be at least 2 for lm (a block predicts its next tokens), got {}",
                    self.max_length
                )
            },
        )?;
        ConfigError::ensure(
            !(self.linear_probe
                && matches!(
                    self.task,
                    FineTuneTask::Tag | FineTuneTask::Qa | FineTuneTask::Lm | FineTuneTask::Seq2Seq
                )),
            NAME,
            || {
                format!(
                    "linear_probe trains a head on pooled sentence embeddings: not for {}",
                    self.task
                )
            },
        )
    }

    /// The counter of malformed rows the settings ask for: stop at the first, or skip them.
    pub(crate) fn bad_rows(&self) -> BadRows {
        if self.skip_bad_rows {
            BadRows::skipping()
        } else {
            BadRows::strict()
        }
    }

    /// These settings with the columns the task reads: `pair` needs a second text (default
    /// column `text_pair`). A run works with these, so that the settings it stores (in
    /// `metrics.json`, read back by [`evaluate_model`] and [`head_importance`]) name the columns
    /// it actually read.
    fn with_task_columns(&self) -> Self {
        let mut config = self.clone();
        if config.task == FineTuneTask::Pair && config.columns.pair.is_none() {
            config.columns.pair = Some("text_pair".to_string());
        }
        config
    }
}

/// Token ids of one example, unpadded (the real tokens only).
#[derive(Clone, Debug)]
struct Tokens {
    ids: Vec<u32>,
    types: Vec<u32>,
}

impl Tokens {
    fn of(encoding: &tokenizers::Encoding) -> Self {
        // Batches are padded on the right: the real tokens come first.
        let n = encoding
            .get_attention_mask()
            .iter()
            .filter(|&&m| m == 1)
            .count();
        Self {
            ids: encoding.get_ids()[..n].to_vec(),
            types: encoding.get_type_ids()[..n].to_vec(),
        }
    }
}

/// What a text (or pair) should give.
#[derive(Clone, Debug)]
enum Target {
    Class(usize),
    Labels(Vec<f32>),
    Value(f32),
}

/// A text (or pair) example, tokenised once.
#[derive(Clone, Debug)]
pub struct TextExample {
    tokens: Tokens,
    target: Target,
}

/// A tagged sentence, tokenised once, its tags on each word's first piece (the other pieces and
/// the special tokens [`focal_heads::loss::IGNORE_INDEX`]).
#[derive(Clone, Debug)]
pub struct TagExample {
    tokens: Tokens,
    tags: Vec<i64>,
}

/// A window of a question and its context, tokenised once, with the answer's first and last
/// token (both 0, the `[CLS]` token, when the window does not hold the answer).
#[derive(Clone, Debug)]
pub struct QaExample {
    tokens: Tokens,
    start: i64,
    end: i64,
}

/// A batch of question windows, padded to its longest row.
#[derive(Clone, Debug)]
pub struct QaBatch<B: Backend> {
    inputs: BertInputs<B>,
    starts: Tensor<B, 1, Int>,
    ends: Tensor<B, 1, Int>,
}

impl<B: Backend> Batcher<B, QaExample, QaBatch<B>> for PadBatcher {
    fn batch(&self, items: Vec<QaExample>, device: &B::Device) -> QaBatch<B> {
        let rows: Vec<&Tokens> = items.iter().map(|i| &i.tokens).collect();
        let inputs = self.inputs(&rows, device);
        let n = items.len();
        let ids = |values: Vec<i64>| Tensor::from_data(TensorData::new(values, [n]), device);
        QaBatch {
            inputs,
            starts: ids(items.iter().map(|i| i.start).collect()),
            ends: ids(items.iter().map(|i| i.end).collect()),
        }
    }
}

/// A task's examples, for the loaders: held in memory ([`in_memory`]), or read back from a
/// file when asked for ([`TextRows`]).
pub(crate) type Examples<I> = Arc<dyn Dataset<I>>;

/// Training and held-out examples held in memory.
pub(crate) fn in_memory<I: Clone + Send + Sync + 'static>(
    (train, valid): (Vec<I>, Vec<I>),
) -> (Examples<I>, Examples<I>) {
    (Arc::new(InMemory(train)), Arc::new(InMemory(valid)))
}

/// The examples of `examples` in batches of `size`, in order.
pub(crate) fn batches_of<I>(
    examples: &dyn Dataset<I>,
    size: usize,
) -> impl Iterator<Item = Vec<I>> + '_ {
    (0..examples.len()).step_by(size.max(1)).map(move |start| {
        (start..(start + size).min(examples.len()))
            .filter_map(|i| examples.get(i))
            .collect()
    })
}

/// Examples in memory, for burn's data loader.
pub(crate) struct InMemory<T>(pub(crate) Vec<T>);

impl<T: Clone + Send + Sync> Dataset<T> for InMemory<T> {
    fn get(&self, index: usize) -> Option<T> {
        self.0.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Targets of a batch of texts.
#[derive(Clone, Debug)]
enum Targets<B: Backend> {
    Classes(Tensor<B, 1, Int>),
    Labels(Tensor<B, 2>),
    Values(Tensor<B, 2>),
}

/// A batch of texts, padded to its longest row.
#[derive(Clone, Debug)]
pub struct TextBatch<B: Backend> {
    inputs: BertInputs<B>,
    targets: Targets<B>,
}

/// A batch of tagged sentences, padded to its longest row (tags with the ignore index).
#[derive(Clone, Debug)]
pub struct TagBatch<B: Backend> {
    inputs: BertInputs<B>,
    tags: Tensor<B, 2, Int>,
}

/// Pads examples into batches, each to its longest row.
#[derive(Clone)]
struct PadBatcher {
    pad_id: u32,
}

impl PadBatcher {
    fn inputs<B: Backend>(&self, rows: &[&Tokens], device: &B::Device) -> BertInputs<B> {
        let l = rows.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        let pad = |row: &[u32], fill: u32| -> Vec<u32> {
            row.iter()
                .copied()
                .chain(std::iter::repeat(fill))
                .take(l)
                .collect()
        };
        let batch = EncodedBatch {
            ids: rows.iter().map(|t| pad(&t.ids, self.pad_id)).collect(),
            type_ids: rows.iter().map(|t| pad(&t.types, 0)).collect(),
            attention_mask: rows.iter().map(|t| pad(&vec![1; t.ids.len()], 0)).collect(),
        };
        bert_inputs(&batch, device)
    }
}

/// The targets of a batch (all of one kind: classes, label sets or values).
fn batch_targets<B: Backend>(targets: Vec<&Target>, device: &B::Device) -> Targets<B> {
    let n = targets.len();
    let floats = |values: Vec<f32>, width: usize| {
        Tensor::<B, 2>::from_data(TensorData::new(values, [n, width]), device)
    };
    match targets.first() {
        Some(Target::Labels(first)) => {
            let width = first.len();
            let values = targets
                .iter()
                .flat_map(|t| match t {
                    Target::Labels(v) => v.clone(),
                    _ => vec![0.0; width],
                })
                .collect();
            Targets::Labels(floats(values, width))
        }
        Some(Target::Value(_)) => {
            let values = targets
                .iter()
                .map(|t| match t {
                    Target::Value(v) => *v,
                    _ => 0.0,
                })
                .collect();
            Targets::Values(floats(values, 1))
        }
        _ => {
            let classes: Vec<i64> = targets
                .iter()
                .map(|t| match t {
                    Target::Class(c) => *c as i64,
                    _ => 0,
                })
                .collect();
            Targets::Classes(Tensor::from_data(TensorData::new(classes, [n]), device))
        }
    }
}

/// A text's pooled embedding (a linear probe's input) and its target.
#[derive(Clone, Debug)]
pub struct FeatureExample {
    features: Vec<f32>,
    target: Target,
}

/// A batch of embeddings `[b, d]` and their targets.
#[derive(Clone, Debug)]
pub struct FeatureBatch<B: Backend> {
    features: Tensor<B, 2>,
    targets: Targets<B>,
}

impl<B: Backend> Batcher<B, FeatureExample, FeatureBatch<B>> for PadBatcher {
    fn batch(&self, items: Vec<FeatureExample>, device: &B::Device) -> FeatureBatch<B> {
        let d = items.first().map_or(0, |i| i.features.len());
        let values: Vec<f32> = items.iter().flat_map(|i| i.features.clone()).collect();
        let features = Tensor::from_data(TensorData::new(values, [items.len(), d]), device);
        let targets = batch_targets(items.iter().map(|i| &i.target).collect(), device);
        FeatureBatch { features, targets }
    }
}

impl<B: Backend> Batcher<B, TextExample, TextBatch<B>> for PadBatcher {
    fn batch(&self, items: Vec<TextExample>, device: &B::Device) -> TextBatch<B> {
        let rows: Vec<&Tokens> = items.iter().map(|i| &i.tokens).collect();
        let inputs = self.inputs(&rows, device);
        let targets = batch_targets(items.iter().map(|i| &i.target).collect(), device);
        TextBatch { inputs, targets }
    }
}

impl<B: Backend> Batcher<B, TagExample, TagBatch<B>> for PadBatcher {
    fn batch(&self, items: Vec<TagExample>, device: &B::Device) -> TagBatch<B> {
        let rows: Vec<&Tokens> = items.iter().map(|i| &i.tokens).collect();
        let inputs = self.inputs(&rows, device);
        let l = rows.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        let tags: Vec<i64> = items
            .iter()
            .flat_map(|i| {
                i.tags
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(focal_heads::loss::IGNORE_INDEX))
                    .take(l)
            })
            .collect();
        let tags = Tensor::from_data(TensorData::new(tags, [items.len(), l]), device);
        TagBatch { inputs, tags }
    }
}

/// A block of token ids for causal language modelling (`max_length` tokens of the text).
#[derive(Clone, Debug)]
pub struct LmExample {
    ids: Vec<u32>,
}

/// Blocks of token ids `[b, l]` (all of one length: no padding).
#[derive(Clone, Debug)]
pub struct LmBatch<B: Backend> {
    ids: Tensor<B, 2, Int>,
}

impl<B: Backend> Batcher<B, LmExample, LmBatch<B>> for PadBatcher {
    fn batch(&self, items: Vec<LmExample>, device: &B::Device) -> LmBatch<B> {
        let l = items.first().map_or(0, |e| e.ids.len());
        let flat: Vec<i64> = items
            .iter()
            .flat_map(|e| e.ids.iter().map(|&t| i64::from(t)))
            .collect();
        LmBatch {
            ids: Tensor::from_data(TensorData::new(flat, [items.len(), l]), device),
        }
    }
}

/// A batch's outputs, for burn-train's metrics: one type for every task, each variant burn's
/// own output type.
pub enum TaskOutput<B: Backend> {
    /// Single-label classification.
    Class(ClassificationOutput<B>),
    /// Multi-label classification.
    MultiLabel(MultiLabelClassificationOutput<B>),
    /// Regression.
    Regression(RegressionOutput<B>),
    /// Tagging: logits `[b, l, tags]`, targets `[b, l]` with the ignore index.
    Tags(SequenceOutput<B>),
    /// Answer spans: the start and the end logits `[b, l]` against the answer's first and last
    /// token, each as a classification over the positions; both hold the span loss.
    Spans(ClassificationOutput<B>, ClassificationOutput<B>),
    /// Sequence to sequence: the teacher-forced loss (a mean over target tokens), the number of
    /// those tokens, and the greedy outputs' counts (validation only; empty in training).
    Seq2Seq(Tensor<B, 1>, usize, crate::eval::DecodeCounts),
    /// Causal language modelling: the mean next-token loss and the batch's counts.
    Lm(Tensor<B, 1>, TokenCounts),
}

impl<B: Backend> TaskOutput<B> {
    /// The batch's mean loss.
    pub fn loss(&self) -> Tensor<B, 1> {
        match self {
            Self::Class(o) => o.loss.clone(),
            Self::MultiLabel(o) => o.loss.clone(),
            Self::Regression(o) => o.loss.clone(),
            Self::Tags(o) => o.loss.clone(),
            Self::Spans(start, _) => start.loss.clone(),
            Self::Seq2Seq(loss, ..) | Self::Lm(loss, _) => loss.clone(),
        }
    }

    /// How many items the batch's mean loss averages over, so that an epoch's (or a held-out
    /// file's) loss is their mean over the whole set, as transformers weights it: examples,
    /// or tokens for the token tasks (tagging's labelled tokens, the language model's and the
    /// sequence-to-sequence model's predicted tokens).
    pub fn loss_weight(&self) -> usize {
        match self {
            Self::Class(o) => o.targets.dims()[0],
            Self::MultiLabel(o) => o.targets.dims()[0],
            Self::Regression(o) => o.targets.dims()[0],
            Self::Spans(start, _) => start.targets.dims()[0],
            Self::Tags(o) => {
                let labelled = o
                    .targets
                    .clone()
                    .not_equal_elem(focal_heads::loss::IGNORE_INDEX)
                    .int()
                    .sum()
                    .into_scalar();
                labelled.elem::<i64>().max(0) as usize
            }
            Self::Seq2Seq(_, tokens, _) => *tokens,
            Self::Lm(_, counts) => counts.tokens,
        }
    }
}

impl<B: Backend> ItemLazy for TaskOutput<B> {
    type ItemSync = TaskOutput<Flex>;

    fn sync(self) -> TaskOutput<Flex> {
        match self {
            Self::Class(o) => TaskOutput::Class(o.sync()),
            Self::MultiLabel(o) => TaskOutput::MultiLabel(o.sync()),
            Self::Regression(o) => TaskOutput::Regression(o.sync()),
            Self::Tags(o) => TaskOutput::Tags(o.sync()),
            Self::Spans(start, end) => TaskOutput::Spans(start.sync(), end.sync()),
            Self::Seq2Seq(loss, tokens, counts) => TaskOutput::Seq2Seq(
                Tensor::from_data(loss.into_data(), &Default::default()),
                tokens,
                counts,
            ),
            Self::Lm(loss, counts) => TaskOutput::Lm(
                Tensor::from_data(loss.into_data(), &Default::default()),
                counts,
            ),
        }
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for TaskOutput<B> {
    /// burn-train's `LossMetric` weights a batch by the length of the loss it is given: the
    /// batch's mean repeated [`TaskOutput::loss_weight`] times, so that the epoch's loss is
    /// the mean over its examples (tokens), not the mean of its batches' means.
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(self.loss().expand([self.loss_weight().max(1)]))
    }
}

impl<B: Backend> Adaptor<ClassOutcomes> for TaskOutput<B> {
    fn adapt(&self) -> ClassOutcomes {
        match self {
            Self::Class(o) => o.adapt(),
            Self::MultiLabel(o) => o.adapt(),
            _ => ClassOutcomes::default(),
        }
    }
}

impl<B: Backend> Adaptor<RegressionPairs> for TaskOutput<B> {
    fn adapt(&self) -> RegressionPairs {
        match self {
            Self::Regression(o) => o.adapt(),
            _ => RegressionPairs::default(),
        }
    }
}

impl<B: Backend> Adaptor<SpanMatches> for TaskOutput<B> {
    fn adapt(&self) -> SpanMatches {
        match self {
            Self::Spans(start, end) => SpanMatches::of(
                &ints(start.output.clone().argmax(1)),
                &ints(end.output.clone().argmax(1)),
                &ints(start.targets.clone()),
                &ints(end.targets.clone()),
            ),
            _ => SpanMatches::default(),
        }
    }
}

impl<B: Backend> Adaptor<TokenCounts> for TaskOutput<B> {
    fn adapt(&self) -> TokenCounts {
        match self {
            Self::Lm(_, counts) => *counts,
            _ => TokenCounts::default(),
        }
    }
}

impl<B: Backend> Adaptor<crate::eval::DecodeCounts> for TaskOutput<B> {
    fn adapt(&self) -> crate::eval::DecodeCounts {
        match self {
            Self::Seq2Seq(_, _, counts) => *counts,
            _ => Default::default(),
        }
    }
}

impl<B: Backend> Adaptor<TagSequences> for TaskOutput<B> {
    fn adapt(&self) -> TagSequences {
        match self {
            Self::Tags(o) => o.adapt(),
            _ => TagSequences::default(),
        }
    }
}

/// A sequence classifier (single-label, multi-label or regression) as burn-train trains it.
#[derive(Module, Debug)]
pub struct SequenceTraining<B: Backend> {
    /// The model.
    pub model: BertForSequenceClassification<B>,
}

/// A tagger as burn-train trains it.
#[derive(Module, Debug)]
pub struct TagTraining<B: Backend> {
    /// The model.
    pub model: BertForTokenClassification<B>,
}

fn sequence_output<B: FusedAttentionBackend>(
    model: &BertForSequenceClassification<B>,
    batch: TextBatch<B>,
) -> TaskOutput<B> {
    class_output(model.forward(batch.inputs), batch.targets)
}

/// A linear head on frozen embeddings, as burn-train trains it (a linear probe).
#[derive(Module, Debug)]
pub struct ProbeTraining<B: Backend> {
    /// `d → labels`.
    pub classifier: burn::nn::Linear<B>,
}

/// A GPT-2 model as burn-train trains it: the next token of every position.
#[derive(Module, Debug)]
pub struct LmTraining<B: Backend> {
    model: focal_pretrained::Gpt2<B>,
}

/// The next-token loss (mean cross-entropy over every position but the last, as
/// transformers' `GPT2LMHeadModel` shifts the labels) and the batch's counts.
fn lm_output<B: FusedAttentionBackend>(
    model: &focal_pretrained::Gpt2<B>,
    batch: LmBatch<B>,
) -> TaskOutput<B> {
    let [b, l] = batch.ids.dims();
    let logits = model.forward(batch.ids.clone());
    let v = logits.dims()[2];
    let n = b * (l - 1);
    let logits = logits.slice([0..b, 0..l - 1]).reshape([n, v]);
    let targets = batch.ids.slice([0..b, 1..l]).reshape([n]);
    let loss = cross_entropy(logits.clone(), targets.clone());
    let mean: f64 = loss.clone().into_scalar().elem();
    let correct: i64 = logits
        .argmax(1)
        .reshape([n])
        .equal(targets)
        .int()
        .sum()
        .into_scalar()
        .elem();
    let counts = TokenCounts {
        tokens: n,
        correct: correct as usize,
        nll: mean * n as f64,
    };
    TaskOutput::Lm(loss, counts)
}

/// burn-train's `TrainStep` (forward and backward) and `InferenceStep` (forward) of a training
/// wrapper, whose batch's outputs are `output(&wrapper, batch)`.
macro_rules! task_steps {
    ($wrapper:ident, $batch:ident, $output:expr) => {
        impl<B: FusedAutodiffBackend> TrainStep for $wrapper<B> {
            type Input = $batch<B>;
            type Output = TaskOutput<B>;

            fn step(&self, batch: $batch<B>) -> TrainOutput<TaskOutput<B>> {
                let output = $output(self, batch);
                TrainOutput::new(self, output.loss().backward(), output)
            }
        }

        impl<B: FusedAttentionBackend> InferenceStep for $wrapper<B> {
            type Input = $batch<B>;
            type Output = TaskOutput<B>;

            fn step(&self, batch: $batch<B>) -> TaskOutput<B> {
                $output(self, batch)
            }
        }
    };
}

task_steps!(
    ProbeTraining,
    FeatureBatch,
    |p: &ProbeTraining<B>, batch: FeatureBatch<B>| {
        class_output(p.classifier.forward(batch.features), batch.targets)
    }
);
task_steps!(
    SequenceTraining,
    TextBatch,
    |s: &SequenceTraining<B>, batch| sequence_output(&s.model, batch)
);
task_steps!(TagTraining, TagBatch, |t: &TagTraining<B>, batch| {
    tag_output(&t.model, batch)
});
task_steps!(LmTraining, LmBatch, |t: &LmTraining<B>, batch| {
    lm_output(&t.model, batch)
});

/// A span question-answering model as burn-train trains it.
#[derive(Module, Debug)]
pub struct QaTraining<B: Backend> {
    /// The model.
    pub model: BertForQuestionAnswering<B>,
}

fn qa_output<B: FusedAttentionBackend>(
    model: &BertForQuestionAnswering<B>,
    batch: QaBatch<B>,
) -> TaskOutput<B> {
    let (start, end) = model.forward(batch.inputs);
    let loss = model.head.loss(
        start.clone(),
        end.clone(),
        batch.starts.clone(),
        batch.ends.clone(),
    );
    TaskOutput::Spans(
        ClassificationOutput::new(loss.clone(), start, batch.starts),
        ClassificationOutput::new(loss, end, batch.ends),
    )
}

task_steps!(QaTraining, QaBatch, |q: &QaTraining<B>, batch| qa_output(
    &q.model, batch
));

/// Loss and outputs of a sequence head's logits `[b, n]` against the batch's targets.
fn class_output<B: Backend>(logits: Tensor<B, 2>, targets: Targets<B>) -> TaskOutput<B> {
    match targets {
        Targets::Classes(t) => TaskOutput::Class(ClassificationOutput::new(
            cross_entropy(logits.clone(), t.clone()),
            logits,
            t,
        )),
        Targets::Labels(t) => TaskOutput::MultiLabel(MultiLabelClassificationOutput::new(
            binary_cross_entropy_with_logits(logits.clone(), t.clone()),
            logits,
            t.int(),
        )),
        Targets::Values(v) => TaskOutput::Regression(RegressionOutput::new(
            mean_squared_error(logits.clone(), v.clone()),
            logits,
            v,
        )),
    }
}

fn tag_output<B: FusedAttentionBackend>(
    model: &BertForTokenClassification<B>,
    batch: TagBatch<B>,
) -> TaskOutput<B> {
    let logits = model.forward(batch.inputs);
    let loss = model.head.loss(logits.clone(), batch.tags.clone());
    TaskOutput::Tags(SequenceOutput::new(loss, logits, None, batch.tags))
}

/// Held-out figures of a model (the fields that apply to its task).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeldOut {
    /// Examples (texts, pairs or sentences) scored.
    pub examples: usize,
    /// Mean loss (cross-entropy, binary cross-entropy or squared error).
    pub loss: f64,
    /// Share of examples whose best label is right (single-label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Mean of the labels' F1 (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// F1 of all labels' pooled counts (multi-label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_f1: Option<f64>,
    /// Pearson's correlation of predicted and true values (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pearson: Option<f64>,
    /// Entity-level precision, as seqeval computes it (tagging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_precision: Option<f64>,
    /// Entity-level recall (tagging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_recall: Option<f64>,
    /// Entity-level F1 (tagging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_f1: Option<f64>,
    /// Share of question windows whose predicted first and last answer tokens are both right
    /// (question answering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_match: Option<f64>,
    /// SQuAD's exact match of the answers the question-answering pipeline gives (question
    /// answering; over questions, not windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    /// SQuAD's token F1 of those answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// `exp` of the mean next-token negative log-likelihood (language modelling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Share of next tokens that are the model's most likely (language modelling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token_accuracy: Option<f64>,
    /// Share of target positions the greedy output gets right (sequence to sequence; exact
    /// match is then the share of whole outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_accuracy: Option<f64>,
    /// Precision, recall, F1 and support per label (per entity type for tagging).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<ClassScores>,
    /// Confusion counts `[true][predicted]` (single-label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<Vec<usize>>>,
}

/// Sums of held-out outputs.
struct Tally {
    labels: Vec<String>,
    examples: usize,
    /// The sum of the batches' losses, each times its [`TaskOutput::loss_weight`].
    loss: f64,
    loss_weight: usize,
    outcomes: ClassOutcomes,
    confusion: Option<Vec<Vec<usize>>>,
    correlation: Option<Correlation>,
    entities: Option<EntityCounts>,
    spans: Option<SpanMatches>,
    tokens: Option<TokenCounts>,
    decoded: Option<crate::eval::DecodeCounts>,
    multi_label: bool,
}

impl Tally {
    fn new(task: FineTuneTask, labels: &[String]) -> Self {
        let n = labels.len();
        Self {
            labels: labels.to_vec(),
            examples: 0,
            loss: 0.0,
            loss_weight: 0,
            outcomes: ClassOutcomes::default(),
            confusion: matches!(task, FineTuneTask::Classify | FineTuneTask::Pair)
                .then(|| vec![vec![0; n]; n]),
            correlation: (task == FineTuneTask::Regress).then(Correlation::default),
            entities: (task == FineTuneTask::Tag).then(EntityCounts::default),
            spans: (task == FineTuneTask::Qa).then(SpanMatches::default),
            tokens: (task == FineTuneTask::Lm).then(TokenCounts::default),
            decoded: (task == FineTuneTask::Seq2Seq).then(Default::default),
            multi_label: task == FineTuneTask::MultiLabel,
        }
    }

    fn add(&mut self, output: TaskOutput<Flex>, examples: usize) {
        let loss: f64 = output.loss().into_scalar().into();
        let weight = output.loss_weight();
        self.loss += loss * weight as f64;
        self.loss_weight += weight;
        self.examples += examples;
        match &output {
            TaskOutput::Class(o) => {
                let (targets, predicted) = class_ids(o);
                if let Some(confusion) = &mut self.confusion {
                    for (&t, &p) in targets.iter().zip(&predicted) {
                        confusion[t][p] += 1;
                    }
                }
                let classes = o.output.dims()[1];
                self.outcomes
                    .add(&ClassOutcomes::single_label(&targets, &predicted, classes));
            }
            TaskOutput::MultiLabel(o) => self.outcomes.add(&o.adapt()),
            TaskOutput::Regression(o) => {
                let pairs: RegressionPairs = o.adapt();
                if let Some(c) = &mut self.correlation {
                    c.add(&pairs.predicted, &pairs.targets);
                }
            }
            TaskOutput::Spans(..) => {
                let matches: SpanMatches = output.adapt();
                if let Some(s) = &mut self.spans {
                    s.add(&matches);
                }
            }
            TaskOutput::Tags(o) => {
                let sequences: TagSequences = o.adapt();
                if let Some(e) = &mut self.entities {
                    e.merge(&EntityF1Metric::count(&self.labels, &sequences));
                }
            }
            TaskOutput::Seq2Seq(_, _, counts) => {
                if let Some(d) = &mut self.decoded {
                    d.add(counts);
                }
            }
            TaskOutput::Lm(_, counts) => {
                if let Some(t) = &mut self.tokens {
                    t.add(counts);
                }
            }
        }
    }

    fn finish(self) -> HeldOut {
        let mut held_out = HeldOut {
            examples: self.examples,
            loss: self.loss / self.loss_weight.max(1) as f64,
            ..HeldOut::default()
        };
        if let Some(decoded) = &self.decoded {
            let metrics = decoded.metrics();
            held_out.exact_match = Some(metrics.exact_match);
            held_out.token_accuracy = Some(metrics.token_accuracy);
        } else if let Some(tokens) = &self.tokens {
            held_out.perplexity = Some(tokens.perplexity());
            held_out.next_token_accuracy = Some(tokens.accuracy());
        } else if let Some(spans) = &self.spans {
            held_out.span_match = Some(spans.share());
        } else if let Some(correlation) = &self.correlation {
            held_out.pearson = Some(correlation.pearson());
        } else if let Some(entities) = &self.entities {
            let (p, r, f1) = entities.scores();
            held_out.entity_precision = Some(p);
            held_out.entity_recall = Some(r);
            held_out.entity_f1 = Some(f1);
            held_out.per_class = entities.per_type();
        } else {
            held_out.macro_f1 = Some(self.outcomes.macro_f1());
            held_out.per_class = self.outcomes.per_class(&self.labels);
            if self.multi_label {
                held_out.micro_f1 = Some(self.outcomes.micro_f1());
            } else {
                held_out.accuracy = Some(self.outcomes.accuracy());
                held_out.confusion = self.confusion;
            }
        }
        held_out
    }
}

/// Held-out figures of `model` on `examples`.
pub(crate) fn evaluate<B, M, I, Bt>(
    model: &M,
    batcher: &Bt,
    examples: &dyn Dataset<I>,
    config: &FineTuneConfig,
    labels: &[String],
    device: &B::Device,
) -> HeldOut
where
    B: Backend,
    M: InferenceStep<Output = TaskOutput<B>>,
    Bt: Batcher<B, I, M::Input>,
    I: Clone,
{
    let mut tally = Tally::new(config.task, labels);
    for chunk in batches_of(examples, config.batch_size) {
        let n = chunk.len();
        tally.add(model.step(batcher.batch(chunk, device)).sync(), n);
    }
    tally.finish()
}

/// burn-train's epoch figures, as the renderer saw them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// The training loss of each optimizer batch: `(batch, loss)`, counted from 1 over the run.
    pub steps: Vec<(usize, f64)>,
    /// Per epoch, the means of its batches (weighted by batch size) of each metric.
    pub epochs: Vec<EpochFigures>,
}

/// One epoch's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochFigures {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Batches trained so far in the run.
    pub step: usize,
    /// Optimizer steps taken so far in the run, as counted when they ran.
    #[serde(default)]
    pub optimizer_steps: usize,
    /// Training metrics (percent for accuracy and F1).
    pub train: BTreeMap<String, f64>,
    /// Validation metrics.
    pub valid: BTreeMap<String, f64>,
}

impl History {
    /// The loss curve: the training loss per batch, and both splits' epoch means.
    pub fn loss_chart(&self) -> Result<Vec<u8>, plots::PlotError> {
        let epoch = |valid: bool| Series {
            name: format!(
                "{} loss (epoch mean)",
                if valid { "valid" } else { "train" }
            ),
            points: self
                .epochs
                .iter()
                .filter_map(|e| {
                    let split = if valid { &e.valid } else { &e.train };
                    split.get("Loss").map(|&v| (e.step as f64, v))
                })
                .collect(),
        };
        let steps = Series {
            name: "train loss (batch)".to_string(),
            points: self.steps.iter().map(|&(s, l)| (s as f64, l)).collect(),
        };
        plots::line_chart("loss", "batch", "loss", &[steps, epoch(false), epoch(true)])
    }

    /// The metrics other than the loss per epoch, both splits: one panel per metric, each on
    /// its own scale (percentages, a perplexity and a correlation do not share an axis).
    pub fn metrics_chart(&self) -> Result<Vec<u8>, plots::PlotError> {
        let mut names: Vec<&String> = self
            .epochs
            .iter()
            .flat_map(|e| e.valid.keys().chain(e.train.keys()))
            .filter(|n| *n != "Loss")
            .collect();
        names.sort();
        names.dedup();
        let panels: Vec<plots::Panel> = names
            .into_iter()
            .map(|name| {
                // The first series of a chart is drawn thin (a per-batch curve): none here.
                let mut series = vec![Series::default()];
                for valid in [true, false] {
                    series.push(Series {
                        name: format!("{} {name}", if valid { "valid" } else { "train" }),
                        points: self
                            .epochs
                            .iter()
                            .filter_map(|e| {
                                let split = if valid { &e.valid } else { &e.train };
                                split.get(name).map(|&v| (e.epoch as f64, v))
                            })
                            .collect(),
                    });
                }
                plots::Panel {
                    title: format!("{name} per epoch"),
                    y_name: name.clone(),
                    series,
                }
            })
            .collect();
        plots::panel_chart("epoch", &panels)
    }
}

/// burn-train's renderer for Focal: keeps the [`History`], prints one line per epoch on
/// standard error when asked (`epoch 2/3: train loss 0.4100 accuracy 81.2% | valid …`; burn's
/// plain renderer prints every batch on standard output, which belongs to results), and
/// refreshes `loss.png` and `metrics.png` in `pictures` after every evaluation. Epoch figures
/// are the means of the batches' entries weighted by their counts, as burn-train's store
/// computes them.
struct EpochRenderer {
    print: bool,
    epochs: usize,
    pictures: Option<PathBuf>,
    names: std::collections::HashMap<burn::train::metric::MetricId, (String, bool)>,
    train: BTreeMap<String, (f64, usize)>,
    valid: BTreeMap<String, (f64, usize)>,
    batches: usize,
    /// The optimizer's step counter ([`CountingOptimizer`]).
    optimizer_steps: Arc<std::sync::atomic::AtomicUsize>,
    history: Arc<Mutex<History>>,
    /// The run's working directory and settings: its state is written there after every
    /// epoch, for `resume`.
    state: (PathBuf, serde_json::Value),
    /// A progress bar over the epoch's examples, with the loss and the pace, when standard
    /// error is a terminal.
    bar: Option<indicatif::ProgressBar>,
    last_loss: f64,
    started: std::time::Instant,
}

/// An `indicatif` bar on standard error, when it is a terminal and `print` is asked.
fn progress_bar(print: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !print || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
        )
        .expect("progress template is valid")
        .progress_chars("=> "),
    );
    Some(bar)
}

/// Fault injection for tests: `FOCAL_TEST_ABORT_AFTER_BATCH=N` aborts the process once the
/// N-th training batch of the run (counted over the run, resumed or not) is done, as a kill
/// would. Unset (always, outside tests), nothing happens.
fn test_abort_after(batch: usize) {
    static ABORT_AFTER: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let abort_after = *ABORT_AFTER.get_or_init(|| {
        std::env::var("FOCAL_TEST_ABORT_AFTER_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if abort_after == Some(batch) {
        std::process::abort();
    }
}

impl EpochRenderer {
    fn record(&mut self, valid: bool, state: MetricState) {
        let MetricState::Numeric(entry, value) = state else {
            return;
        };
        let Some((name, _)) = self.names.get(&entry.metric_id) else {
            return;
        };
        let (v, n) = match value {
            NumericEntry::Value(v) => (v, 1),
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => (aggregated_value, count),
        };
        if !valid && name == "Loss" {
            self.last_loss = v;
            self.batches += 1;
            if let Ok(mut history) = self.history.lock() {
                history.steps.push((self.batches, v));
            }
            test_abort_after(self.batches);
        }
        let split = if valid {
            &mut self.valid
        } else {
            &mut self.train
        };
        let (sum, count) = split.entry(name.clone()).or_default();
        *sum += v * n as f64;
        *count += n;
    }

    fn means(split: &BTreeMap<String, (f64, usize)>) -> BTreeMap<String, f64> {
        split
            .iter()
            .map(|(name, &(sum, count))| (name.clone(), sum / count.max(1) as f64))
            .collect()
    }

    fn line(&self, means: &BTreeMap<String, f64>) -> String {
        means
            .iter()
            .map(|(name, v)| {
                let percent = self
                    .names
                    .values()
                    .any(|(n, percent)| n == name && *percent);
                if percent {
                    format!("{} {v:.1}%", name.to_lowercase())
                } else {
                    format!("{} {v:.4}", name.to_lowercase())
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl MetricsRendererTraining for EpochRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(false, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(true, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        let (Some(bar), Some(progress)) = (&self.bar, &item.progress) else {
            return;
        };
        bar.set_length(progress.items_total as u64);
        bar.set_position(progress.items_processed as u64);
        bar.set_message(format!(
            "epoch {}/{} · loss {:.4} · {} batches in {:.0} s",
            item.global_progress.items_processed,
            self.epochs,
            self.last_loss,
            self.batches,
            self.started.elapsed().as_secs_f64()
        ));
    }

    fn render_valid(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let done = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        let Ok(mut history) = self.history.lock() else {
            return;
        };
        if !done || history.epochs.last().is_some_and(|e| e.epoch >= epoch) {
            return;
        }
        let figures = EpochFigures {
            epoch,
            step: self.batches,
            optimizer_steps: self
                .optimizer_steps
                .load(std::sync::atomic::Ordering::SeqCst),
            train: Self::means(&self.train),
            valid: Self::means(&self.valid),
        };
        if self.print {
            let line = format!(
                "epoch {epoch}/{}: train {} | valid {}",
                self.epochs,
                self.line(&figures.train),
                self.line(&figures.valid)
            );
            match &self.bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }
        history.epochs.push(figures);
        let state = RunState {
            run: self.state.1.clone(),
            history: history.clone(),
        };
        if let Err(e) = state.write(&self.state.0) {
            tracing::warn!("the run's state (for --resume) could not be written: {e}");
        }
        if let Some(dir) = &self.pictures {
            // Pictures while training are a convenience: a failure to draw one is reported once
            // per epoch and the run goes on.
            for (name, picture) in [
                ("loss.png", history.loss_chart()),
                ("metrics.png", history.metrics_chart()),
            ] {
                match picture {
                    Ok(bytes) => {
                        if let Err(e) = plots::write_picture(&dir.join(name), &bytes) {
                            tracing::warn!("{name}: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("{name}: {e}"),
                }
            }
        }
        self.train.clear();
        self.valid.clear();
    }

    fn on_train_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for EpochRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
    fn render_test(&mut self, _item: EvaluationProgress, _progress: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: burn::train::metric::MetricDefinition) {
        let percent = matches!(
            &definition.attributes,
            burn::train::metric::MetricAttributes::Numeric(a) if a.unit.as_deref() == Some("%")
        );
        self.names
            .insert(definition.metric_id, (definition.name, percent));
    }
}

/// What [`fine_tune`] reports (also written as `metrics.json`).
#[derive(Clone, Debug, Serialize)]
pub struct FineTuneReport {
    /// The labels (tags), by id; empty for regression.
    pub labels: Vec<String>,
    /// Training examples.
    pub train_examples: usize,
    /// Malformed rows skipped (with `skip_bad_rows`) and the first one's error.
    pub bad_rows: BadRows,
    /// The settings.
    pub config: FineTuneConfig,
    /// Epochs run (fewer than asked when early stopping ended the run), those of a killed run
    /// that this one resumed included.
    pub epochs_run: usize,
    /// The epoch after which this run resumed a killed one (0: it started afresh).
    pub resumed_from_epoch: usize,
    /// The epoch whose weights were kept: the best by the watched validation metric.
    pub best_epoch: usize,
    /// Optimizer steps of the whole run.
    pub optimizer_steps: usize,
    /// Seconds of training (of this process, when resumed).
    pub seconds: f64,
    /// Training examples per second (over the epochs this process ran).
    pub examples_per_second: f64,
    /// Held-out figures before training.
    pub before: HeldOut,
    /// Held-out figures of the kept weights.
    pub after: HeldOut,
    /// burn-train's figures per epoch and the loss per batch.
    pub history: History,
}

/// What [`engine`] returns: the kept weights and how the run went.
pub(crate) struct Learned<M> {
    pub(crate) model: M,
    pub(crate) history: History,
    pub(crate) best_epoch: usize,
    /// The epoch a resumed run continued after (0: a fresh run).
    pub(crate) resumed_from: usize,
    /// The optimizer steps taken, counted as they ran (those of a resumed run included).
    pub(crate) optimizer_steps: usize,
    pub(crate) seconds: f64,
}

/// The burn-train components of every Focal run: Focal's `FusedAdamW`, its steps counted, and
/// the schedule `S`.
pub(crate) type Components<B, S, M> =
    LearningComponentsMarker<B, S, M, CountingOptimizer<OptimizerAdaptor<FusedAdamW, M, B>>>;

/// What [`engine`] needs to know of a run besides its model, data and schedule.
pub(crate) struct EngineSettings<'a> {
    pub(crate) epochs: usize,
    pub(crate) grad_accum: usize,
    pub(crate) early_stopping: Option<usize>,
    /// The validation metric that picks the kept epoch (and stops early).
    pub(crate) watched: &'static str,
    /// Whether lower is better for the watched metric.
    pub(crate) lower_is_better: bool,
    pub(crate) progress: bool,
    pub(crate) resume: bool,
    /// The run's working directory (burn-train's checkpoints and logs, the state).
    pub(crate) scratch: &'a Path,
    /// The settings, files and data sizes of the run, written with its state after every epoch
    /// and compared by `resume`.
    pub(crate) run: serde_json::Value,
    /// What stops the run early (a row that cannot be read back: [`RowFailure`]).
    pub(crate) interrupter: Option<burn::train::Interrupter>,
}

/// Runs fine-tuning on burn-train: the task's schedule, loaders and metrics, then [`engine`].
#[allow(clippy::too_many_arguments)]
fn learn<B, M, I, Bt>(
    model: M,
    batcher: &Bt,
    (train, valid): (Examples<I>, Examples<I>),
    config: &FineTuneConfig,
    labels: &[String],
    scratch: &Path,
    devices: &[B::Device],
    run: serde_json::Value,
    optimizer: FusedAdamWConfig,
    interrupter: burn::train::Interrupter,
) -> Result<Learned<M::InnerModule>, FineTuneError>
where
    B: FusedAutodiffBackend,
    I: Clone + Send + Sync + std::fmt::Debug + 'static,
    M: TrainStep<Output = TaskOutput<B>> + AutodiffModule<B> + std::fmt::Display + 'static,
    M::InnerModule: InferenceStep<Output = TaskOutput<B::InnerBackend>>,
    M::Input: Send + Clone + std::fmt::Debug + 'static,
    <M::InnerModule as InferenceStep>::Input: Send + Clone + std::fmt::Debug + 'static,
    Bt: Batcher<B, I, M::Input>
        + Batcher<B::InnerBackend, I, <M::InnerModule as InferenceStep>::Input>
        + Clone
        + 'static,
{
    // burn-train asks for a learning rate once per batch on one device, once per round of
    // batches (one on each replica) on several; it drops the gradients of an epoch's last
    // rounds that do not fill an optimizer step, so an epoch of fewer rounds than the
    // accumulation trains nothing.
    let device = &devices[0];
    let batches = train.len().div_ceil(config.batch_size);
    let rounds = batches.div_ceil(devices.len());
    if rounds < config.grad_accum {
        let on = if devices.len() > 1 {
            format!(" ({rounds} rounds on {} devices)", devices.len())
        } else {
            String::new()
        };
        return Err(ConfigError::new(
            "FineTuneConfig",
            format!(
                "an epoch of {} training examples makes {batches} batches of {}{on}, fewer than \
                 grad_accum {}: no optimizer step would ever run; lower grad_accum or batch_size",
                train.len(),
                config.batch_size,
                config.grad_accum
            ),
        )
        .into());
    }
    let schedule = WarmupLinear::for_epochs(
        config.learning_rate,
        config.warmup,
        config.epochs,
        rounds,
        config.grad_accum,
    );
    let train_loader = |epochs_done| -> Arc<dyn DataLoader<B, M::Input>> {
        Arc::new(EpochLoader::new(
            train,
            Arc::new(batcher.clone()),
            config.batch_size,
            config.seed,
            epochs_done,
            device.clone(),
        ))
    };
    let valid_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size)
        .num_workers(1)
        .set_device(device.clone())
        .build(valid);
    // Each metric on both splits.
    macro_rules! both {
        ($training:expr, $($metric:expr),+) => {
            $training$(.metric_train_numeric($metric).metric_valid_numeric($metric))+
        };
    }
    let metrics = |training: SupervisedTraining<Components<B, WarmupLinear, M>>| match config.task {
        FineTuneTask::Classify | FineTuneTask::Pair => {
            both!(
                training,
                OutcomeMetric::accuracy(),
                OutcomeMetric::macro_f1()
            )
        }
        FineTuneTask::MultiLabel => {
            both!(
                training,
                OutcomeMetric::micro_f1(),
                OutcomeMetric::macro_f1()
            )
        }
        FineTuneTask::Regress => both!(training, PearsonMetric::new()),
        FineTuneTask::Tag => both!(training, EntityF1Metric::new(labels.to_vec())),
        FineTuneTask::Qa => both!(training, SpanMatchMetric::span_match()),
        FineTuneTask::Lm => both!(training, LmMetric::perplexity(), LmMetric::accuracy()),
        // Greedy decoding runs in validation only.
        FineTuneTask::Seq2Seq => training
            .metric_valid_numeric(crate::metrics::DecodeMetric::exact_match())
            .metric_valid_numeric(crate::metrics::DecodeMetric::token_accuracy()),
    };
    let settings = EngineSettings {
        epochs: config.epochs,
        grad_accum: config.grad_accum,
        early_stopping: config.early_stopping,
        watched: config.task.watched(),
        lower_is_better: config.task.lower_is_better(),
        progress: config.progress,
        resume: config.resume,
        scratch,
        run,
        interrupter: Some(interrupter),
    };
    let optimizer = optimizer.init::<B, M>();
    engine(
        model,
        (train_loader, valid_loader),
        schedule,
        optimizer,
        metrics,
        settings,
        devices,
    )
}

/// Focal's one training engine: burn-train's `SupervisedTraining` on `model` with the loaders
/// (the training loader made for the epochs already done), `schedule`, `optimizer` and the
/// task's `metrics` (the loss is always there); the file checkpointer (atomic files, the last
/// two epochs and the best by `settings.watched`), early stopping, several devices, the epoch
/// renderer, and `resume`. Returns the weights of the best epoch by the watched validation
/// metric, the history and the seconds taken.
#[allow(clippy::type_complexity)]
pub(crate) fn engine<B, M, S, L>(
    model: M,
    (train_loader, valid_loader): (
        L,
        Arc<dyn DataLoader<B::InnerBackend, <M::InnerModule as InferenceStep>::Input>>,
    ),
    schedule: S,
    optimizer: OptimizerAdaptor<FusedAdamW, M, B>,
    metrics: impl FnOnce(
        SupervisedTraining<Components<B, S, M>>,
    ) -> SupervisedTraining<Components<B, S, M>>,
    settings: EngineSettings,
    devices: &[B::Device],
) -> Result<Learned<M::InnerModule>, FineTuneError>
where
    B: FusedAutodiffBackend,
    S: burn::lr_scheduler::LrScheduler + 'static,
    L: FnOnce(usize) -> Arc<dyn DataLoader<B, M::Input>>,
    M: TrainStep<Output = TaskOutput<B>> + AutodiffModule<B> + std::fmt::Display + 'static,
    M::InnerModule: InferenceStep<Output = TaskOutput<B::InnerBackend>>,
    M::Input: Send + Clone + std::fmt::Debug + 'static,
    <M::InnerModule as InferenceStep>::Input: Send + Clone + std::fmt::Debug + 'static,
{
    let EngineSettings {
        epochs,
        grad_accum,
        early_stopping,
        watched,
        lower_is_better,
        progress,
        resume,
        scratch,
        run,
        interrupter,
    } = settings;
    let device = &devices[0];
    let resumed = if resume {
        RunState::read(scratch, &run)?
    } else {
        None
    };
    let (resumed_from, history) = match resumed {
        Some(state) => {
            let mut history = state.history;
            let epoch = crate::resume::last_checkpoint(scratch, history.epochs.len());
            history.epochs.truncate(epoch);
            let step = history.epochs.last().map_or(0, |e| e.step);
            history.steps.retain(|&(batch, _)| batch <= step);
            (epoch, history)
        }
        None => (0, History::default()),
    };
    if resume && progress {
        if resumed_from == 0 {
            eprintln!("no epoch of the killed run was saved: starting again");
        } else {
            eprintln!("resuming after epoch {resumed_from}");
        }
    }

    let batches = history.epochs.last().map_or(0, |e| e.step);
    let optimizer = CountingOptimizer::new(
        optimizer,
        history.epochs.last().map_or(0, |e| e.optimizer_steps),
    );
    let optimizer_steps = optimizer.counter();
    let history = Arc::new(Mutex::new(history));
    let recorder = AtomicRecorder::default();
    let mut training: SupervisedTraining<Components<B, S, M>> =
        SupervisedTraining::new(scratch, train_loader(resumed_from), valid_loader)
            .metric_train_numeric(LossMetric::new())
            .metric_valid_numeric(LossMetric::new())
            .with_file_checkpointer(recorder.clone())
            .renderer(EpochRenderer {
                print: progress,
                epochs,
                pictures: Some(scratch.to_path_buf()),
                names: Default::default(),
                train: Default::default(),
                valid: Default::default(),
                batches,
                optimizer_steps: optimizer_steps.clone(),
                history: history.clone(),
                state: (scratch.to_path_buf(), run),
                bar: progress_bar(progress),
                last_loss: f64::NAN,
                started: std::time::Instant::now(),
            })
            // The process's own `tracing` subscriber (the CLI's) stays; burn-train would try to
            // install a second one.
            .with_application_logger(None)
            .num_epochs(epochs);
    if grad_accum > 1 {
        training = training.grads_accumulation(grad_accum);
    }
    if let Some(interrupter) = interrupter {
        training = training.with_interrupter(interrupter);
    }
    if devices.len() > 1 {
        training = training.with_training_strategy(
            ExecutionStrategy::MultiDevice(devices.to_vec(), MultiDeviceOptim::OptimMainDevice)
                .into(),
        );
    }
    training = metrics(training);
    let watched = Watched {
        history: history.clone(),
        metric: watched,
        lower_is_better,
    };
    let best = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    training = training.with_checkpointing_strategy(KeepBest {
        watched: watched.clone(),
        best: best.clone(),
        saved: (1..=resumed_from)
            .filter(|&e| crate::resume::has_checkpoint(scratch, e))
            .collect(),
    });
    if let Some(patience) = early_stopping {
        training = training.early_stopping(StopWhenFlat { watched, patience });
    }
    if resumed_from > 0 {
        training = training.checkpoint(resumed_from);
    }
    let started = std::time::Instant::now();
    let result = training.launch(Learner::new(model, optimizer, schedule));
    let seconds = started.elapsed().as_secs_f64();
    let history = history.lock().map(|h| h.clone()).unwrap_or_default();
    let mut trained = result.model;
    // The epoch the checkpointer kept as the best; the last when it never ran.
    let best = match best.load(std::sync::atomic::Ordering::SeqCst) {
        0 => history.epochs.len(),
        kept => kept,
    };
    if best != history.epochs.len() {
        let path = scratch.join("checkpoint").join(format!("model-{best}"));
        match trained.clone().load_file(&path, &recorder, &device.clone()) {
            Ok(model) => trained = model,
            Err(e) => tracing::warn!(
                "the best epoch's weights ({}) could not be read, the last epoch's are kept: {e}",
                path.display()
            ),
        }
    }
    Ok(Learned {
        model: trained,
        history,
        best_epoch: best,
        resumed_from,
        optimizer_steps: optimizer_steps.load(std::sync::atomic::Ordering::SeqCst),
        seconds,
    })
}

/// The run's own record of the watched metric, shared by the checkpointer and early stopping.
///
/// burn-train's own strategies read its metric store, which a separate thread fills from
/// the epoch's events and which a resumed run reads back from log files that a kill may have
/// cut short; so on a tie, or after a resume, they could pick another epoch than the figures
/// Focal reports (and delete the checkpoint Focal then loads). These read the epoch figures
/// the renderer records, restored from `focal-run.json` on resume.
#[derive(Clone)]
struct Watched {
    history: Arc<Mutex<History>>,
    metric: &'static str,
    lower_is_better: bool,
}

impl Watched {
    /// The epoch figures up to `epoch`, once the renderer has recorded that epoch (it runs on
    /// burn-train's event thread, shortly after the validation ends).
    fn figures(&self, epoch: usize) -> Vec<Option<f64>> {
        let started = std::time::Instant::now();
        loop {
            if let Ok(history) = self.history.lock()
                && (history.epochs.last().is_some_and(|e| e.epoch >= epoch)
                    || started.elapsed() > std::time::Duration::from_secs(60))
            {
                return history
                    .epochs
                    .iter()
                    .filter(|e| e.epoch <= epoch)
                    .map(|e| e.valid.get(self.metric).copied())
                    .collect();
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The best epoch (from 1) up to `epoch` (the earliest of a tie); `epoch` when none has
    /// the metric.
    fn best(&self, epoch: usize) -> usize {
        best_of(&self.figures(epoch), self.lower_is_better).unwrap_or(epoch)
    }
}

/// The index from 1 of the best figure (the highest, or the lowest; the earliest of a tie).
fn best_of(figures: &[Option<f64>], lower_is_better: bool) -> Option<usize> {
    let sign = if lower_is_better { -1.0 } else { 1.0 };
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in figures.iter().enumerate() {
        if let Some(v) = v
            && best.is_none_or(|(_, b)| sign * v > b)
        {
            best = Some((i + 1, sign * v));
        }
    }
    best.map(|(i, _)| i)
}

/// burn-train checkpointing strategy: keep the last two epochs (while an epoch's files are
/// written, the previous epoch's set stays whole) and the best by the watched validation
/// metric, which it shares in `best` for the run to load at the end.
struct KeepBest {
    watched: Watched,
    best: Arc<std::sync::atomic::AtomicUsize>,
    /// Epochs whose checkpoints are on disk.
    saved: std::collections::BTreeSet<usize>,
}

impl CheckpointingStrategy for KeepBest {
    fn checkpointing(
        &mut self,
        epoch: usize,
        _store: &burn::train::metric::store::EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let best = self.watched.best(epoch);
        self.best.store(best, std::sync::atomic::Ordering::SeqCst);
        self.saved.insert(epoch);
        let mut actions = vec![CheckpointingAction::Save];
        let stale: Vec<usize> = self
            .saved
            .iter()
            .copied()
            .filter(|&e| e != best && e + 2 <= epoch)
            .collect();
        for e in stale {
            self.saved.remove(&e);
            actions.push(CheckpointingAction::Delete(e));
        }
        actions
    }
}

/// burn-train early stopping: stop when the watched metric has not improved for `patience`
/// epochs.
#[derive(Clone)]
struct StopWhenFlat {
    watched: Watched,
    patience: usize,
}

impl burn::train::EarlyStoppingStrategy for StopWhenFlat {
    fn should_stop(
        &mut self,
        epoch: usize,
        _store: &burn::train::metric::store::EventStoreClient,
    ) -> bool {
        epoch >= self.watched.best(epoch) + self.patience
    }
}

/// The first error of a row read back while a run goes (its file changed under the run, or
/// the tokenizer refused the text), carried out of burn's loaders, which cannot return one:
/// the row is left out, burn-train is interrupted (it stops after the batch, before any
/// further checkpoint), and the run returns the error naming the file and line.
#[derive(Clone)]
pub(crate) struct RowFailure {
    error: Arc<Mutex<Option<FineTuneError>>>,
    interrupter: burn::train::Interrupter,
}

impl Default for RowFailure {
    fn default() -> Self {
        Self {
            error: Arc::default(),
            interrupter: burn::train::Interrupter::new(),
        }
    }
}

impl RowFailure {
    /// Records `error` (the first one is kept) and interrupts the run.
    fn fail(&self, error: FineTuneError) {
        self.interrupter.stop(Some("a row could not be read"));
        if let Ok(mut slot) = self.error.lock()
            && slot.is_none()
        {
            *slot = Some(error);
        }
    }

    /// The recorded error, if a row failed.
    pub(crate) fn check(&self) -> Result<(), FineTuneError> {
        match self.error.lock().ok().and_then(|mut slot| slot.take()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The rows of a sequence task as a dataset: an example is read back from its file and
/// tokenised when a loader asks for it, its target taken from the index, so that nothing of
/// the file but the index is held in memory.
struct TextRows {
    rows: LabelledRows,
    /// The target of each of the file's distinct labels (none for values: the index holds
    /// them; none for a label outside the training labels, whose rows are left out).
    targets: Vec<Option<Target>>,
    tokenizer: Arc<TextTokenizer>,
    /// Where a row that no longer reads, or that the tokenizer refuses, goes.
    failure: RowFailure,
}

impl TextRows {
    /// The rows whose labels are among `labels`; a row with another label is an error naming
    /// the file and the line (or left out and counted, by `bad`).
    fn new(
        rows: LabelledRows,
        labels: &[String],
        tokenizer: Arc<TextTokenizer>,
        bad: &mut BadRows,
        failure: RowFailure,
    ) -> Result<Self, FineTuneError> {
        // A length that leaves no room for text beside the special tokens would fail on every
        // row (inside the tokenizer): refused here, before any row is read.
        tokenizer.check_room(rows.has_pairs())?;
        let class = |label: &str| labels.iter().position(|l| l == label);
        let targets: Vec<Result<Target, String>> = rows
            .names()
            .iter()
            .map(|name| match rows.kind() {
                LabelKind::Classes => {
                    let mut on = vec![0.0; labels.len()];
                    for label in label_list(name) {
                        on[class(label).ok_or_else(|| label.to_string())?] = 1.0;
                    }
                    Ok(Target::Labels(on))
                }
                _ => class(name).map(Target::Class).ok_or_else(|| name.clone()),
            })
            .collect();
        let mut kept = Vec::with_capacity(rows.len());
        for entry in rows.entries() {
            if rows.kind() != LabelKind::Value
                && let Err(label) = &targets[entry.label as usize]
            {
                bad.handle(FineTuneError::Data {
                    path: rows.path().to_path_buf(),
                    line: entry.line as usize,
                    reason: format!(
                        "label \"{label}\" is not one of the training labels {labels:?}"
                    ),
                })?;
                continue;
            }
            kept.push(*entry);
        }
        Ok(Self {
            rows: if kept.len() == rows.len() {
                rows
            } else {
                rows.with_entries(kept)
            },
            targets: targets.into_iter().map(Result::ok).collect(),
            tokenizer,
            failure,
        })
    }
}

impl Dataset<TextExample> for TextRows {
    /// Example `index`. A row that no longer reads (its file changed under the run), or that
    /// the tokenizer refuses, goes to the run's [`RowFailure`] with the file and line, and is
    /// left out: burn's loaders have no way to return an error.
    fn get(&self, index: usize) -> Option<TextExample> {
        let entry = *self.rows.entries().get(index)?;
        let failed = |reason: String| {
            self.failure.fail(FineTuneError::Data {
                path: self.rows.path().to_path_buf(),
                line: entry.line as usize,
                reason,
            });
        };
        let row = match self.rows.row(index) {
            Ok(row) => row,
            Err(e) => {
                failed(format!(
                    "the row no longer reads as when the file was indexed ({e}); was the file \
                     changed during the run?"
                ));
                return None;
            }
        };
        let encodings = match self.tokenizer.encode(
            std::slice::from_ref(&row.text),
            row.pair.as_ref().map(std::slice::from_ref),
        ) {
            Ok(encodings) => encodings,
            Err(e) => {
                failed(e.to_string());
                return None;
            }
        };
        let target = match self.rows.kind() {
            LabelKind::Value => Target::Value(f32::from_bits(entry.label)),
            _ => self.targets[entry.label as usize]
                .clone()
                .expect("rows with labels outside the training labels are left out"),
        };
        Some(TextExample {
            tokens: Tokens::of(&encodings[0]),
            target,
        })
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// Tagged sentences tokenised once (as pre-split words), their tags on each word's first piece.
///
/// Words past the longest input are cut, as transformers' token-classification recipe cuts
/// them: they are left out of the loss and of entity F1. That is said once, as a warning with
/// the counts ([`CutWords`]), so that a model scored on shortened sentences is not taken for
/// one scored on whole ones.
fn tag_examples(
    sentences: Vec<TaggedSentence>,
    tags: &[String],
    tokenizer: &TextTokenizer,
    path: &Path,
    bad: &mut BadRows,
) -> Result<Vec<TagExample>, FineTuneError> {
    let mut examples = Vec::with_capacity(sentences.len());
    let mut cut = CutWords::default();
    for sentence in sentences {
        match tag_example(&sentence, tags, tokenizer, path) {
            Ok((example, words)) => {
                cut.add(&sentence, words);
                examples.push(example);
            }
            Err(e) => bad.handle(e)?,
        }
    }
    if cut.sentences > 0 {
        tracing::warn!(
            "{}: {} sentences are longer than the longest input ({} tokens): their last {} \
             words, {} of them tagged as entities, are left out of training and of entity F1",
            path.display(),
            cut.sentences,
            tokenizer.max_len(),
            cut.words,
            cut.entity_words
        );
    }
    Ok(examples)
}

/// What truncation to the longest input cut from tagged sentences.
#[derive(Debug, Default, PartialEq)]
struct CutWords {
    /// Sentences cut.
    sentences: usize,
    /// Words cut.
    words: usize,
    /// Of those, words tagged other than `O`.
    entity_words: usize,
}

impl CutWords {
    /// Counts `sentence`, of which the first `kept` words survived truncation.
    fn add(&mut self, sentence: &TaggedSentence, kept: usize) {
        let lost = &sentence.tags[kept.min(sentence.tags.len())..];
        if !lost.is_empty() {
            self.sentences += 1;
            self.words += lost.len();
            self.entity_words += lost.iter().filter(|t| *t != "O").count();
        }
    }
}

/// One tagged sentence tokenised, and how many of its words kept a piece within the longest
/// input; or why it cannot be.
fn tag_example(
    sentence: &TaggedSentence,
    tags: &[String],
    tokenizer: &TextTokenizer,
    path: &Path,
) -> Result<(TagExample, usize), FineTuneError> {
    {
        let error = |reason: String| FineTuneError::Data {
            path: path.to_path_buf(),
            line: sentence.line,
            reason,
        };
        let ids = sentence
            .tags
            .iter()
            .map(|t| {
                tags.iter()
                    .position(|known| known == t)
                    .map(|i| i as i64)
                    .ok_or_else(|| {
                        error(format!(
                            "tag \"{t}\" is not one of the training tags {tags:?}"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let words: Vec<&str> = sentence.words.iter().map(String::as_str).collect();
        let encoding = tokenizer
            .tokenizer()
            .encode(words.as_slice(), true)
            .map_err(|e| error(e.to_string()))?;
        let tokens = Tokens::of(&encoding);
        let word_ids: Vec<Option<usize>> = encoding.get_word_ids()[..tokens.ids.len()]
            .iter()
            .map(|w| w.map(|w| w as usize))
            .collect();
        let aligned = align_word_labels(&word_ids, &ids).map_err(error)?;
        let kept = word_ids.iter().flatten().max().map_or(0, |&w| w + 1);
        Ok((
            TagExample {
                tokens,
                tags: aligned,
            },
            kept,
        ))
    }
}

/// The file in a run's working directory that the run holds an advisory lock on for its whole
/// life: the system releases it when the process ends, however it ends (a kill included, and
/// before the process is reaped), so a directory whose lock can be taken belongs to no live
/// run. Process ids cannot say that: a restarted container's `focal` is PID 1 again.
const LOCK_FILE: &str = "run.lock";

/// A run's working directory and the lock that marks it live ([`LOCK_FILE`]), held until
/// this is dropped.
pub(crate) struct Scratch {
    path: PathBuf,
    _lock: std::fs::File,
}

impl Scratch {
    /// Creates (or adopts) `path` and locks it for this process.
    fn lock(path: PathBuf) -> Result<Self, FineTuneError> {
        let file_error = |path: &Path, e: std::io::Error| FineTuneError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&path).map_err(|e| file_error(&path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| file_error(&lock_path, e))?;
        lock.try_lock().map_err(|e| FineTuneError::File {
            path: lock_path.clone(),
            reason: format!("another run holds this working directory ({e})"),
        })?;
        Ok(Self { path, _lock: lock })
    }
}

/// Whether the run that worked in `dir` is dead: no process holds its lock (a directory
/// without a lock file was left by a run that predates the lock, which is dead too).
fn run_is_dead(dir: &Path) -> bool {
    match std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(LOCK_FILE))
    {
        Ok(file) => file.try_lock().is_ok(),
        Err(_) => true,
    }
}

/// The directory burn-train works in during a run: beside `out`, named after it and the
/// process (`.NAME.learner-PID`), locked for the run's life ([`LOCK_FILE`]). With `resume`,
/// the newest directory of a killed run becomes this run's. Without, a killed run's
/// directory that holds checkpoints is refused unless `overwrite` (it is what `--resume`
/// would continue); other dead runs' directories are removed.
fn scratch_dir(out: &Path, resume: bool, overwrite: bool) -> Result<Scratch, FineTuneError> {
    let (parent, name) = out_parts(out);
    let parent = parent.as_path();
    std::fs::create_dir_all(parent).map_err(|e| FineTuneError::File {
        path: parent.to_path_buf(),
        reason: e.to_string(),
    })?;
    let scratch = parent.join(format!(".{name}.learner-{}", std::process::id()));
    let mut stale = stale_scratch(parent, &name);
    // Newest last.
    stale.sort_by_key(|dir| {
        std::fs::metadata(dir.join(crate::resume::STATE_FILE))
            .or_else(|_| std::fs::metadata(dir))
            .and_then(|m| m.modified())
            .ok()
    });
    if resume {
        // The newest killed run's directory is continued; older ones go.
        let Some(newest) = stale.pop() else {
            return Err(no_killed_run(out, parent, &name));
        };
        std::fs::rename(&newest, &scratch).map_err(|e| FineTuneError::File {
            path: newest.clone(),
            reason: e.to_string(),
        })?;
    } else if !overwrite
        && let Some(saved) = stale
            .iter()
            .rev()
            .find(|dir| dir.join(crate::resume::STATE_FILE).is_file())
    {
        return Err(FineTuneError::Resume(format!(
            "a killed run of {} left its checkpoints in {}: continue it with --resume, or \
             pass --overwrite to start afresh and delete them",
            out.display(),
            saved.display()
        )));
    }
    for dir in stale {
        let _ = std::fs::remove_dir_all(dir);
    }
    Scratch::lock(scratch)
}

/// Whether a killed run that was to write `out` left its working directory, for `resume`
/// (what a run with `resume` checks first; callers may check before announcing the run).
pub fn check_resumable(out: &Path) -> Result<(), FineTuneError> {
    let (parent, name) = out_parts(out);
    if stale_scratch(&parent, &name).is_empty() {
        return Err(no_killed_run(out, &parent, &name));
    }
    Ok(())
}

fn out_parts(out: &Path) -> (PathBuf, String) {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent.to_path_buf(), name)
}

fn no_killed_run(out: &Path, parent: &Path, name: &str) -> FineTuneError {
    FineTuneError::Resume(format!(
        "no killed run of {} to continue (its working directory .{name}.learner-PID would be \
         in {})",
        out.display(),
        parent.display()
    ))
}

/// The working directories that killed runs left beside `out` (`.NAME.learner-PID` whose
/// lock no process holds: [`run_is_dead`]).
fn stale_scratch(parent: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!(".{name}.learner-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            file_name
                .strip_prefix(&prefix)
                .is_some_and(|pid| pid.parse::<u32>().is_ok())
                && run_is_dead(&entry.path())
        })
        .map(|entry| entry.path())
        .collect()
}

/// Fine-tunes a model for `config.task` on burn-train's `Learner` and saves it at `out` as a
/// Hugging Face directory (`BertForSequenceClassification` or `BertForTokenClassification`)
/// with `metrics.json`, `loss.png`, `metrics.png` and, for single-label classification,
/// `confusion.png`.
///
/// - `init`: a BERT or sentence-transformers directory (a new head on its encoder), or a
///   directory of the task's architecture with the same labels;
/// - `train`, `valid`: `.csv`, `.tsv` or `.jsonl` rows (see [`LabelledRows`], read as a
///   stream), or CoNLL files for `tag` (see [`read_conll`]); the labels are those of `train`,
///   sorted;
/// - the weights kept are those of the epoch with the best watched validation metric
///   ([`FineTuneTask::watched`]); burn-train's checkpoints and the pictures of the run in
///   progress live in a directory beside `out` (`.NAME.learner-PID`), removed at the end;
/// - `config.devices` replicas of `device` train data-parallel (see [`fine_tune_on`] for
///   several devices).
pub fn fine_tune<B: FusedAutodiffBackend>(
    init: &Path,
    train: &Path,
    valid: Option<&Path>,
    out: &Path,
    config: &FineTuneConfig,
    device: &B::Device,
) -> Result<FineTuneReport, FineTuneError> {
    let devices = vec![device.clone(); config.devices.max(1)];
    fine_tune_on::<B>(init, train, valid, out, config, &devices)
}

/// [`fine_tune`] data-parallel on `devices` (e.g. two GPUs: `WgpuDevice::DiscreteGpu(0)` and
/// `(1)`), through burn-train's multi-device strategy (`ExecutionStrategy::MultiDevice` with
/// `MultiDeviceOptim::OptimMainDevice`): each optimizer step runs one batch on each device and
/// sums their gradients on the first, where the optimizer, evaluation and saving run.
/// `config.devices` is not used; an empty `devices` is refused.
pub fn fine_tune_on<B: FusedAutodiffBackend>(
    init: &Path,
    train: &Path,
    valid: Option<&Path>,
    out: &Path,
    config: &FineTuneConfig,
    devices: &[B::Device],
) -> Result<FineTuneReport, FineTuneError> {
    config.validate()?;
    let config = &config.with_task_columns();
    let Some(device) = devices.first() else {
        return Err(ConfigError::new("fine_tune_on", "no device given").into());
    };
    if config.task == FineTuneTask::Seq2Seq {
        return Err(ConfigError::new(
            "fine_tune_on",
            "seq2seq trains an encoder-decoder from scratch: call trainer::train_seq2seq",
        )
        .into());
    }
    // The new head's initialisation and dropout draw from the backend's generator.
    focal_backend::seed::<B>(device, config.seed);
    in_scratch(out, (config.resume, config.overwrite), |scratch| {
        let mut run = Run {
            init,
            size: None,
            train,
            valid,
            scratch,
            config,
            optimizer: trainer_optimizer(config),
            bad: config.bad_rows(),
            failure: RowFailure::default(),
        };
        if config.task == FineTuneTask::Lm {
            fine_tune_lm::<B>(&mut run, out, devices)
        } else if config.task == FineTuneTask::Qa {
            fine_tune_qa::<B>(&mut run, out, devices)
        } else if config.task == FineTuneTask::Tag {
            fine_tune_tagger::<B>(&mut run, out, devices)
        } else if config.linear_probe {
            fine_tune_probe::<B>(&mut run, out, devices)
        } else {
            fine_tune_sequence::<B>(&mut run, out, devices)
        }
    })
}

/// The optimizer of every fine-tuning run: transformers' `Trainer` recipe (4.57: AdamW with
/// β₁ 0.9, β₂ 0.999, ε 1e-8; the gradients' global norm clipped at 1.0; the decoupled weight
/// decay `config.weight_decay` on every parameter but biases and LayerNorm weights, which
/// `Trainer.get_decay_parameter_names` leaves out: here every vector parameter).
pub(crate) fn trainer_optimizer(config: &FineTuneConfig) -> FusedAdamWConfig {
    FusedAdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(config.weight_decay as f32)
        .with_decay_vectors(false)
        .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(1.0)))
}

/// An error that can say the run's checkpoints were kept, and how to continue ([`in_scratch`]).
pub(crate) trait CheckpointsKept {
    /// This error, saying that the checkpoints in `dir` are kept for `--resume`.
    fn kept(self, dir: &Path) -> Self;
}

impl CheckpointsKept for FineTuneError {
    fn kept(self, dir: &Path) -> Self {
        Self::CheckpointsKept {
            cause: Box::new(self),
            dir: dir.to_path_buf(),
        }
    }
}

/// Runs `work` in the run's working directory beside `out` ([`scratch_dir`]), removed when
/// the run succeeds. When it fails after saving a checkpoint (in training, evaluating or
/// writing `out`: a full disk, say), the checkpoints stay, and the error says so and how to
/// continue with `--resume`; a failure before any checkpoint of this run (a resume refused
/// for other settings included) leaves the directory as it was, and one with nothing saved
/// is removed.
pub(crate) fn in_scratch<T, E: From<FineTuneError> + CheckpointsKept>(
    out: &Path,
    (resume, overwrite): (bool, bool),
    work: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let scratch = scratch_dir(out, resume, overwrite)?;
    let state = scratch.path.join(crate::resume::STATE_FILE);
    let saved = || std::fs::metadata(&state).and_then(|m| m.modified()).ok();
    let before = saved();
    let result = work(&scratch.path);
    match result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&scratch.path);
            result
        }
        Err(e) if saved().is_some() && saved() != before => Err(e.kept(&scratch.path)),
        Err(e) => {
            if saved().is_none() {
                let _ = std::fs::remove_dir_all(&scratch.path);
            }
            Err(e)
        }
    }
}

/// What every task's run reads and where it works.
pub(crate) struct Run<'a> {
    /// The directory the model starts from (none for a model trained from scratch).
    pub(crate) init: &'a Path,
    /// The size of a model trained from scratch.
    pub(crate) size: Option<crate::trainer::ModelSize>,
    pub(crate) train: &'a Path,
    pub(crate) valid: Option<&'a Path>,
    pub(crate) scratch: &'a Path,
    pub(crate) config: &'a FineTuneConfig,
    pub(crate) optimizer: FusedAdamWConfig,
    pub(crate) bad: BadRows,
    /// Rows read back during the run that failed ([`RowFailure`]).
    pub(crate) failure: RowFailure,
}

impl Run<'_> {
    /// Scores `model` on the held-out examples, trains it on burn-train's `Learner`, and scores
    /// the kept weights: those weights and the report.
    pub(crate) fn fit<B, M, I, Bt>(
        &mut self,
        model: M,
        batcher: &Bt,
        (train, valid): (Examples<I>, Examples<I>),
        labels: Vec<String>,
        devices: &[B::Device],
    ) -> Result<(M::InnerModule, FineTuneReport), FineTuneError>
    where
        B: FusedAutodiffBackend,
        I: Clone + Send + Sync + std::fmt::Debug + 'static,
        M: TrainStep<Output = TaskOutput<B>> + AutodiffModule<B> + std::fmt::Display + 'static,
        M::InnerModule: InferenceStep<Output = TaskOutput<B::InnerBackend>>,
        M::Input: Send + Clone + std::fmt::Debug + 'static,
        <M::InnerModule as InferenceStep>::Input: Send + Clone + std::fmt::Debug + 'static,
        Bt: Batcher<B, I, M::Input>
            + Batcher<B::InnerBackend, I, <M::InnerModule as InferenceStep>::Input>
            + Clone
            + 'static,
    {
        let config = self.config;
        let device = &devices[0];
        // Skipped rows (or a held-out file whose rows all have labels the training file lacks)
        // can leave a side empty: nothing to train on, or no figure to keep an epoch by.
        for (examples, path, side) in [
            (train.len(), self.train, "training"),
            (valid.len(), self.valid.unwrap_or(self.train), "held-out"),
        ] {
            if examples == 0 {
                return Err(FineTuneError::File {
                    path: path.to_path_buf(),
                    reason: format!(
                        "no {side} examples left after reading ({} bad rows skipped)",
                        self.bad.count
                    ),
                });
            }
        }
        let before = evaluate(&model.valid(), batcher, &*valid, config, &labels, device);
        self.failure.check()?;
        let train_examples = train.len();
        let run = serde_json::json!({
            "config": config,
            "init": self.init,
            "size": self.size,
            "train": self.train,
            "valid": self.valid,
            "train_examples": train_examples,
            "valid_examples": valid.len(),
            "labels": labels,
            "devices": devices.len(),
        });
        let Learned {
            model: trained,
            history,
            best_epoch,
            resumed_from,
            optimizer_steps,
            seconds,
        } = learn(
            model,
            batcher,
            (train, valid.clone()),
            config,
            &labels,
            self.scratch,
            devices,
            run,
            self.optimizer.clone(),
            self.failure.interrupter.clone(),
        )?;
        self.failure.check()?;
        let after = evaluate(&trained, batcher, &*valid, config, &labels, device);
        self.failure.check()?;
        let epochs_run = history.epochs.len();
        let report = FineTuneReport {
            labels: if config.task == FineTuneTask::Regress {
                Vec::new()
            } else {
                labels
            },
            bad_rows: std::mem::take(&mut self.bad),
            train_examples,
            config: config.clone(),
            epochs_run,
            resumed_from_epoch: resumed_from,
            best_epoch,
            optimizer_steps,
            seconds,
            examples_per_second: (train_examples * epochs_run.saturating_sub(resumed_from)) as f64
                / seconds.max(1e-9),
            before,
            after,
            history,
        };
        Ok((trained, report))
    }

    /// The rows of a sequence task as examples ([`TextRows`]).
    fn text_examples(
        &mut self,
        (train_rows, valid_rows): (LabelledRows, LabelledRows),
        labels: &[String],
        tokenizer: TextTokenizer,
    ) -> Result<(Examples<TextExample>, Examples<TextExample>), FineTuneError> {
        let tokenizer = Arc::new(tokenizer);
        let failure = &self.failure;
        let train = TextRows::new(
            train_rows,
            labels,
            tokenizer.clone(),
            &mut self.bad,
            failure.clone(),
        )?;
        let valid = TextRows::new(
            valid_rows,
            labels,
            tokenizer,
            &mut self.bad,
            failure.clone(),
        )?;
        Ok((Arc::new(train), Arc::new(valid)))
    }

    /// A sequence task's rows, labels and problem type ([`sequence_rows`]) and its model.
    #[allow(clippy::type_complexity)]
    fn sequence_model<B: FusedAutodiffBackend>(
        &mut self,
        device: &B::Device,
    ) -> Result<
        (
            (LabelledRows, LabelledRows),
            Vec<String>,
            BertForSequenceClassification<B>,
            TaskConfig,
        ),
        FineTuneError,
    > {
        let (train_rows, valid_rows, labels, problem_type) =
            sequence_rows(self.train, self.valid, self.config, &mut self.bad)?;
        let (model, task) = BertForSequenceClassification::<B>::for_labels(
            self.init,
            labels.clone(),
            problem_type,
            device,
        )?;
        Ok(((train_rows, valid_rows), labels, model, task))
    }
}

/// The tokenizer of `init` for the model `task` describes.
fn tokenizer_for(
    init: &Path,
    task: &TaskConfig,
    max_length: usize,
) -> Result<TextTokenizer, FineTuneError> {
    Ok(TextTokenizer::load_padded(
        init,
        max_length.min(task.bert.max_position_embeddings),
        task.bert.vocab_size,
        task.bert.pad_token_id as u32,
    )?)
}

/// The pictures and `metrics.json` of a run, as files of the output directory.
pub(crate) fn run_files(
    report: &FineTuneReport,
) -> Result<Vec<(&'static str, Vec<u8>)>, FineTuneError> {
    let mut files = vec![
        (
            "metrics.json",
            serde_json::to_vec_pretty(report).expect("the report serialises"),
        ),
        ("loss.png", report.history.loss_chart()?),
        ("metrics.png", report.history.metrics_chart()?),
    ];
    if let Some(confusion) = &report.after.confusion {
        files.push((
            "confusion.png",
            plots::confusion_chart(&report.labels, confusion)?,
        ));
    }
    Ok(files)
}

/// The rows of a sequence task's training and held-out files, its labels (sorted; one
/// `LABEL_0` output for regression) and problem type.
type SequenceRows = (LabelledRows, LabelledRows, Vec<String>, ProblemType);

/// Splits `config.valid_split` of `rows` (at least one, drawn with the seed) off for
/// validation; the rest train. Too few rows to leave both parts some is an error.
///
/// The split is stratified by `stratum` (a row's label; one stratum for rows without a class):
/// the rows are shuffled with the seed, each row placed at the middle of its share of its own
/// stratum (`(rank + ½) / size`), and the last rows of that order held out, so that each label
/// keeps about the same share on both sides. With one stratum this is a plain shuffled split.
pub(crate) fn split_off<T, K: Ord>(
    rows: Vec<T>,
    config: &FineTuneConfig,
    path: &Path,
    stratum: impl Fn(&T) -> K,
) -> Result<(Vec<T>, Vec<T>), FineTuneError> {
    let n = rows.len();
    let held = ((n as f64) * config.valid_split).ceil() as usize;
    if held == 0 || held >= n {
        return Err(FineTuneError::File {
            path: path.to_path_buf(),
            reason: format!(
                "{n} examples cannot give {} of them for validation and keep some to train: give a validation file",
                config.valid_split
            ),
        });
    }
    let order = stratified_order(&rows, config.seed, stratum);
    let mut rows: Vec<Option<T>> = rows.into_iter().map(Some).collect();
    let mut take = |indices: &[usize]| -> Vec<T> {
        indices
            .iter()
            .map(|&i| rows[i].take().expect("each row is taken once"))
            .collect()
    };
    let (train, valid) = order.split_at(n - held);
    Ok((take(train), take(valid)))
}

/// The indices of `rows` in [`split_off`]'s order: shuffled with `seed`, then ordered by each
/// row's place in its stratum (`(rank + ½) / size`), ties in the shuffled order.
fn stratified_order<T, K: Ord>(rows: &[T], seed: u64, stratum: impl Fn(&T) -> K) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut sizes: BTreeMap<K, usize> = BTreeMap::new();
    for row in rows {
        *sizes.entry(stratum(row)).or_default() += 1;
    }
    let mut ranks: BTreeMap<K, usize> = BTreeMap::new();
    let mut place = vec![0.0f64; rows.len()];
    for &i in &order {
        let key = stratum(&rows[i]);
        let size = sizes[&key] as f64;
        let rank = ranks.entry(key).or_default();
        place[i] = (*rank as f64 + 0.5) / size;
        *rank += 1;
    }
    // A stable sort: rows at the same place keep the shuffled order.
    order.sort_by(|&a, &b| place[a].total_cmp(&place[b]));
    order
}

/// What the label column of a sequence task's files holds.
fn label_kind(task: FineTuneTask) -> LabelKind {
    match task {
        FineTuneTask::Regress => LabelKind::Value,
        FineTuneTask::MultiLabel => LabelKind::Classes,
        _ => LabelKind::Class,
    }
}

/// Indexes a sequence task's files ([`SequenceRows`]).
fn sequence_rows(
    train: &Path,
    valid: Option<&Path>,
    config: &FineTuneConfig,
    bad: &mut BadRows,
) -> Result<SequenceRows, FineTuneError> {
    let columns = &config.columns;
    let kind = label_kind(config.task);
    let rows = LabelledRows::read(train, columns, kind, bad)?;
    // The labels are those of the whole training file: a rare label whose rows all fall in the
    // held-out part is still one the model learns to give.
    let file_labels = rows.label_set();
    let (train_rows, valid_rows) = match valid {
        Some(valid) => (rows, LabelledRows::read(valid, columns, kind, bad)?),
        None => {
            // Regression values are not classes: one stratum.
            let stratum = |entry: &crate::data::RowEntry| match kind {
                LabelKind::Value => 0,
                _ => entry.label,
            };
            let (train_entries, valid_entries) =
                split_off(rows.entries().to_vec(), config, train, stratum)?;
            (
                rows.with_entries(train_entries),
                rows.with_entries(valid_entries),
            )
        }
    };
    let (labels, problem_type) = match config.task {
        FineTuneTask::Regress => (vec!["LABEL_0".to_string()], ProblemType::Regression),
        FineTuneTask::MultiLabel => (file_labels, ProblemType::MultiLabel),
        _ => (file_labels, ProblemType::SingleLabel),
    };
    let multi = config.task == FineTuneTask::MultiLabel;
    let least = if multi { 1 } else { 2 };
    if config.task != FineTuneTask::Regress && labels.len() < least {
        return Err(FineTuneError::File {
            path: train.to_path_buf(),
            reason: format!(
                "labels {labels:?}: a {} classifier needs at least {least}",
                config.task
            ),
        });
    }
    Ok((train_rows, valid_rows, labels, problem_type))
}

/// A linear probe: the encoder of `init` is frozen and run once over the rows (mean-pooled
/// states), and a linear head is trained on those embeddings on burn-train's `Learner`. The
/// directory written is the encoder with that head, pooling by the mean.
fn fine_tune_probe<B: FusedAutodiffBackend>(
    run: &mut Run,
    out: &Path,
    devices: &[B::Device],
) -> Result<FineTuneReport, FineTuneError> {
    let device = &devices[0];
    let config = run.config;
    let (rows, labels, model, task) = run.sequence_model::<B>(device)?;
    let probe = ProbeTraining {
        classifier: model.head.classifier.clone(),
    };
    let mut encoder = model.valid();
    let mut head = SequenceClassifierConfig::new(task.bert.hidden_size, labels.len())
        .with_problem_type(task.problem_type)
        .with_pooling(ClassifierPooling::Mean)
        .try_init::<B::InnerBackend>(device)?;
    head.classifier = encoder.head.classifier.clone();
    encoder.head = head;
    let tokenizer = tokenizer_for(run.init, &task, config.max_length)?;
    let batcher = PadBatcher {
        pad_id: task.bert.pad_token_id as u32,
    };
    let embed = |examples: Examples<TextExample>| -> Vec<FeatureExample> {
        let mut features = Vec::with_capacity(examples.len());
        for chunk in batches_of(&*examples, config.batch_size) {
            let targets: Vec<Target> = chunk.iter().map(|e| e.target.clone()).collect();
            let batch: TextBatch<B::InnerBackend> = batcher.batch(chunk, device);
            let pooled = encoder.features(batch.inputs);
            let [_, d] = pooled.dims();
            let values: Vec<f32> = pooled
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 features");
            for (target, row) in targets.into_iter().zip(values.chunks(d.max(1))) {
                features.push(FeatureExample {
                    features: row.to_vec(),
                    target,
                });
            }
        }
        features
    };
    let (train, valid) = run.text_examples(rows, &labels, tokenizer)?;
    let examples = in_memory((embed(train), embed(valid)));
    let (trained, report) = run.fit(probe, &batcher, examples, labels, devices)?;
    encoder.head.classifier = trained.classifier;
    encoder.save_pretrained_with(out, &task, &run_files(&report)?)?;
    Ok(report)
}

/// The blocks of `block` tokens of a plain-text file, as transformers' `run_clm.py` makes
/// them: every line (its line break kept) tokenised without special tokens, the ids
/// concatenated and cut into blocks, the remainder dropped.
fn lm_blocks(
    path: &Path,
    tokenizer: &tokenizers::Tokenizer,
    block: usize,
) -> Result<Vec<LmExample>, FineTuneError> {
    let file_error = |reason: String| FineTuneError::File {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        FineTuneError::Data {
            path: path.to_path_buf(),
            line,
            reason: "not UTF-8 text".to_string(),
        }
    })?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let encodings = tokenizer
        .encode_batch(lines, false)
        .map_err(|e| file_error(format!("tokenizing: {e}")))?;
    let ids: Vec<u32> = encodings
        .iter()
        .flat_map(|e| e.get_ids().iter().copied())
        .collect();
    if ids.len() < block {
        return Err(file_error(format!(
            "{} tokens, fewer than one block of {block} (--max-length, at most the model's \
             positions)",
            ids.len()
        )));
    }
    Ok(ids
        .chunks_exact(block)
        .map(|chunk| LmExample {
            ids: chunk.to_vec(),
        })
        .collect())
}

/// `init`'s `tokenizer.json`, without truncation or padding (a text file's lines are cut into
/// blocks after tokenising).
fn lm_tokenizer(init: &Path) -> Result<tokenizers::Tokenizer, FineTuneError> {
    let path = init.join("tokenizer.json");
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(&path).map_err(|e| FineTuneError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    tokenizer
        .with_truncation(None)
        .map_err(|e| FineTuneError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Causal language modelling of a GPT-2 directory on plain text.
fn fine_tune_lm<B: FusedAutodiffBackend>(
    run: &mut Run,
    out: &Path,
    devices: &[B::Device],
) -> Result<FineTuneReport, FineTuneError> {
    let device = &devices[0];
    let config = run.config;
    let (model, _) = focal_pretrained::Gpt2::<B>::load(run.init, device)?;
    let block = config.max_length.min(model.positions());
    let tokenizer = lm_tokenizer(run.init)?;
    let blocks = lm_blocks(run.train, &tokenizer, block)?;
    let examples = match run.valid {
        Some(valid) => (blocks, lm_blocks(valid, &tokenizer, block)?),
        None => split_off(blocks, config, run.train, |_| ())?,
    };
    let (trained, report) = run.fit(
        LmTraining { model },
        &PadBatcher { pad_id: 0 },
        in_memory(examples),
        Vec::new(),
        devices,
    )?;
    trained
        .model
        .save_pretrained_with(out, run.init, &run_files(&report)?)?;
    Ok(report)
}

fn fine_tune_sequence<B: FusedAutodiffBackend>(
    run: &mut Run,
    out: &Path,
    devices: &[B::Device],
) -> Result<FineTuneReport, FineTuneError> {
    let device = &devices[0];
    let (rows, labels, model, task) = run.sequence_model::<B>(device)?;
    let tokenizer = tokenizer_for(run.init, &task, run.config.max_length)?;
    let examples = run.text_examples(rows, &labels, tokenizer)?;
    let batcher = PadBatcher {
        pad_id: task.bert.pad_token_id as u32,
    };
    let (trained, report) = run.fit(
        SequenceTraining { model },
        &batcher,
        examples,
        labels,
        devices,
    )?;
    trained
        .model
        .save_pretrained_with(out, &task, &run_files(&report)?)?;
    Ok(report)
}

fn fine_tune_tagger<B: FusedAutodiffBackend>(
    run: &mut Run,
    out: &Path,
    devices: &[B::Device],
) -> Result<FineTuneReport, FineTuneError> {
    let device = &devices[0];
    let config = run.config;
    let sentences = read_conll(run.train, &mut run.bad)?;
    // The tags of the whole training file, held-out sentences included.
    let tags = tag_set(&sentences);
    let (train_sentences, valid_sentences) = match run.valid {
        Some(valid) => (sentences, read_conll(valid, &mut run.bad)?),
        None => split_off(sentences, config, run.train, |_| ())?,
    };
    let (model, task) =
        BertForTokenClassification::<B>::for_labels(run.init, tags.clone(), device)?;
    let tokenizer = tokenizer_for(run.init, &task, config.max_length)?;
    let valid_path = run.valid.unwrap_or(run.train);
    let train = tag_examples(train_sentences, &tags, &tokenizer, run.train, &mut run.bad)?;
    let valid = tag_examples(valid_sentences, &tags, &tokenizer, valid_path, &mut run.bad)?;
    let batcher = PadBatcher {
        pad_id: task.bert.pad_token_id as u32,
    };
    let (trained, report) = run.fit(
        TagTraining { model },
        &batcher,
        in_memory((train, valid)),
        tags,
        devices,
    )?;
    trained
        .model
        .save_pretrained_with(out, &task, &run_files(&report)?)?;
    Ok(report)
}

/// Question windows of SQuAD questions: each question and its context cut as the
/// question-answering pipeline cuts them (`max_len` tokens, `stride` shared), the first
/// answer's first and last token in each window that holds it, `[CLS]` in the others (as
/// transformers' `run_qa` prepares them). A question the tokenizer refuses goes to `bad`.
fn qa_examples(
    questions: &[SquadQuestion],
    tokenizer: &TextTokenizer,
    (max_len, stride): (usize, usize),
    path: &Path,
    bad: &mut BadRows,
) -> Result<Vec<QaExample>, FineTuneError> {
    let mut examples = Vec::new();
    for q in questions {
        let windows = match tokenizer.encode_windows(&q.question, &q.context, max_len, stride) {
            Ok(windows) => windows,
            Err(e) => {
                bad.handle(FineTuneError::Question {
                    path: path.to_path_buf(),
                    id: q.id.clone(),
                    reason: e.to_string(),
                })?;
                continue;
            }
        };
        for encoding in &windows {
            let (start, end) = match q.answers.first() {
                None => (0, 0),
                Some((text, at)) => {
                    answer_tokens(encoding, *at, at + text.chars().count()).unwrap_or((0, 0))
                }
            };
            examples.push(QaExample {
                tokens: Tokens::of(encoding),
                start: start as i64,
                end: end as i64,
            });
        }
    }
    Ok(examples)
}

/// The first and last context token of the characters `[start, end)`, when the window holds
/// them all.
fn answer_tokens(
    encoding: &tokenizers::Encoding,
    start: usize,
    end: usize,
) -> Option<(usize, usize)> {
    let sequence = encoding.get_sequence_ids();
    let offsets = encoding.get_offsets();
    let context: Vec<usize> = (0..encoding.len())
        .filter(|&i| sequence[i] == Some(1))
        .collect();
    let (&first, &last) = (context.first()?, context.last()?);
    if offsets[first].0 > start || offsets[last].1 < end {
        return None;
    }
    let from = context.iter().copied().rfind(|&i| offsets[i].0 <= start)?;
    let to = context
        .iter()
        .copied()
        .find(|&i| i >= from && offsets[i].1 >= end)?;
    Some((from, to))
}

/// The windows of questions and contexts: `max_length` tokens (at most the model's positions),
/// and the pipeline's default stride (half a window, at most 128).
fn qa_window(max_length: usize, task: &TaskConfig) -> (usize, usize) {
    let max_len = max_length.min(task.bert.max_position_embeddings);
    (max_len, (max_len / 2).min(128))
}

/// SQuAD exact match and F1 of the answers the question-answering pipeline gives with
/// `answerer`'s model, windows of `(max_len, stride)`; "no answer" competes when some question
/// is unanswerable (SQuAD 2.0).
fn squad_figures<B: FusedAttentionBackend>(
    answerer: &focal_pretrained::QuestionAnswerer<B>,
    questions: &[SquadQuestion],
    (max_len, stride): (usize, usize),
) -> Result<(f64, f64), FineTuneError> {
    let settings = &focal_pretrained::QaSettings {
        search: focal_heads::AnswerSearch {
            handle_impossible_answer: questions.iter().any(|q| q.answers.is_empty()),
            ..Default::default()
        },
        max_seq_len: Some(max_len),
        doc_stride: Some(stride),
    };
    let (mut exact, mut f1) = (0.0, 0.0);
    for q in questions {
        let answers = answerer.answer(&q.question, &q.context, settings)?;
        let predicted = answers.first().map_or("", |a| a.answer.as_str());
        let gold: Vec<String> = q.answers.iter().map(|(t, _)| t.clone()).collect();
        let (e, f) = squad_scores(predicted, &gold);
        exact += e;
        f1 += f;
    }
    let n = questions.len().max(1) as f64;
    Ok((exact / n, f1 / n))
}

/// Fine-tunes a span question-answering head on SQuAD questions; the held-out figures add
/// SQuAD's exact match and F1 of the pipeline's answers before and after.
fn fine_tune_qa<B: FusedAutodiffBackend>(
    run: &mut Run,
    out: &Path,
    devices: &[B::Device],
) -> Result<FineTuneReport, FineTuneError> {
    let device = &devices[0];
    let config = run.config;
    let questions = read_squad(run.train, &mut run.bad)?;
    let (train_questions, valid_questions) = match run.valid {
        Some(valid) => (questions, read_squad(valid, &mut run.bad)?),
        None => split_off(questions, config, run.train, |_| ())?,
    };
    let (model, task) = BertForQuestionAnswering::<B>::for_answers(run.init, device)?;
    let tokenizer = tokenizer_for(run.init, &task, config.max_length)?;
    let window = qa_window(config.max_length, &task);
    let valid_path = run.valid.unwrap_or(run.train);
    let train = qa_examples(
        &train_questions,
        &tokenizer,
        window,
        run.train,
        &mut run.bad,
    )?;
    let valid = qa_examples(
        &valid_questions,
        &tokenizer,
        window,
        valid_path,
        &mut run.bad,
    )?;
    let pipeline = |model| {
        focal_pretrained::QuestionAnswerer::<B::InnerBackend>::from_parts(
            model,
            task.clone(),
            tokenizer.clone(),
            device.clone(),
        )
    };
    let before = squad_figures(&pipeline(model.valid()), &valid_questions, window)?;
    let batcher = PadBatcher {
        pad_id: task.bert.pad_token_id as u32,
    };
    let (trained, mut report) = run.fit(
        QaTraining { model },
        &batcher,
        in_memory((train, valid)),
        Vec::new(),
        devices,
    )?;
    let answerer = pipeline(trained.model);
    let after = squad_figures(&answerer, &valid_questions, window)?;
    (report.before.exact_match, report.before.f1) = (Some(before.0), Some(before.1));
    (report.after.exact_match, report.after.f1) = (Some(after.0), Some(after.1));
    answerer
        .model
        .save_pretrained_with(out, &task, &run_files(&report)?)?;
    Ok(report)
}

/// A fine-tuned model's figures on a labelled file ([`evaluate_model`]).
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// The task, from the directory's architecture and problem type.
    pub task: FineTuneTask,
    /// The model's labels (tags), by id; empty for regression.
    pub labels: Vec<String>,
    /// The figures.
    pub held_out: HeldOut,
}

/// The settings that change a model's figures on a file: `columns` and `max_length` where
/// given, or else those the run that wrote `dir` used (the settings stored in its
/// `metrics.json`), or else the defaults.
fn scoring_settings(
    dir: &Path,
    columns: Option<&Columns>,
    max_length: Option<usize>,
) -> (Columns, usize) {
    let report: serde_json::Value = std::fs::read(dir.join("metrics.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let stored = &report["config"];
    let trained_columns = || -> Option<Columns> {
        let c = &stored["columns"];
        Some(Columns {
            text: c["text"].as_str()?.to_string(),
            pair: c["pair"].as_str().map(str::to_string),
            label: c["label"].as_str()?.to_string(),
        })
    };
    let columns = columns
        .cloned()
        .or_else(trained_columns)
        .unwrap_or_default();
    let max_length = max_length
        .or_else(|| {
            stored["max_length"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
        })
        .unwrap_or(FineTuneConfig::default().max_length);
    (columns, max_length)
}

/// Each attention head's importance to a classifier on a labelled file ([`head_importance`]).
#[derive(Clone, Debug, Serialize)]
pub struct HeadImportance {
    /// The rows scored.
    pub rows: usize,
    /// `[layer][head]`: the mean over the rows of `|∂loss/∂ξ|`, the gradient of the row's own
    /// loss with respect to the head's mask `ξ` at 1 (Michel et al. 2019, `I_h`).
    pub importance: Vec<Vec<f64>>,
    /// `[layer][head]`: `importance` divided by its layer's ℓ2 norm (the paper's §4.2), so that
    /// heads compare across layers; the order to prune them in is from the smallest.
    pub normalised: Vec<Vec<f64>>,
}

/// The importance of each attention head of the `BertForSequenceClassification` in `dir`
/// (single-label, pair, multi-label or regression, as [`evaluate_model`] reads it) on the
/// labelled rows of `data`: Michel et al. (2019)'s `I_h = E_x |∂L(x)/∂ξ_h|`, where `ξ_h` scales
/// head `h`'s attention probabilities (transformers' `head_mask`) and `L(x)` is the row's own
/// loss (cross-entropy, binary cross-entropy or squared error). Each row of a batch gets its
/// own mask, so one backward pass gives every row's gradient; transformers' `run_bertology.py`
/// instead takes the absolute value of a whole batch's summed gradient, which equals this only
/// in batches of one. Dropout is off.
pub fn head_importance<B: FusedAutodiffBackend>(
    dir: &Path,
    data: &Path,
    columns: Option<&Columns>,
    batch_size: usize,
    max_length: Option<usize>,
    device: &B::Device,
) -> Result<HeadImportance, FineTuneError> {
    let (columns, max_length) = scoring_settings(dir, columns, max_length);
    let mut settings = FineTuneConfig {
        batch_size,
        max_length,
        columns,
        ..FineTuneConfig::default()
    };
    settings.validate()?;
    let (model, task) = BertForSequenceClassification::<B>::load_without_dropout(dir, device)?;
    settings.task = match task.problem_type {
        ProblemType::Regression => FineTuneTask::Regress,
        ProblemType::MultiLabel => FineTuneTask::MultiLabel,
        ProblemType::SingleLabel if settings.columns.pair.is_some() => FineTuneTask::Pair,
        ProblemType::SingleLabel => FineTuneTask::Classify,
    };
    let mut bad = BadRows::strict();
    let rows = LabelledRows::read(data, &settings.columns, label_kind(settings.task), &mut bad)?;
    let tokenizer = Arc::new(tokenizer_for(dir, &task, max_length)?);
    let failure = RowFailure::default();
    let examples = TextRows::new(rows, &task.labels, tokenizer, &mut bad, failure.clone())?;
    let batcher = PadBatcher {
        pad_id: task.bert.pad_token_id as u32,
    };
    let (layers, heads) = (task.bert.num_hidden_layers, task.bert.num_attention_heads);
    let mut total = Tensor::<B::InnerBackend, 2>::zeros([layers, heads], device);
    let n = examples.len();
    for start in (0..n).step_by(batch_size) {
        let items: Vec<TextExample> = (start..(start + batch_size).min(n))
            .filter_map(|i| examples.get(i))
            .collect();
        let b = items.len();
        let batch: TextBatch<B> = batcher.batch(items, device);
        let mask = Tensor::<B, 3>::ones([b, layers, heads], device).require_grad();
        let scales = BertScales {
            heads: Some(mask.clone()),
            ..BertScales::default()
        };
        let logits = model.forward_scaled(batch.inputs, scales);
        // The batch's mean loss times its size: the sum of the rows' own losses.
        let loss = class_output(logits, batch.targets).loss() * b as f32;
        let gradients = loss.backward();
        let gradient = mask
            .grad(&gradients)
            .expect("the mask takes part in the loss");
        total = total + gradient.abs().sum_dim(0).reshape([layers, heads]);
    }
    failure.check()?;
    let values: Vec<f64> = total
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("f64 values");
    let importance: Vec<Vec<f64>> = values
        .chunks(heads)
        .map(|layer| layer.iter().map(|v| v / n.max(1) as f64).collect())
        .collect();
    let normalised = importance
        .iter()
        .map(|layer| {
            let norm = layer.iter().map(|v| v * v).sum::<f64>().sqrt();
            layer.iter().map(|v| v / (norm + 1e-20)).collect()
        })
        .collect();
    Ok(HeadImportance {
        rows: n,
        importance,
        normalised,
    })
}

/// Scores the model in `dir` (e.g. written by [`fine_tune`]) on the file `data`:
///
/// - a `BertForSequenceClassification` directory on labelled rows ([`LabelledRows`], read as a
///   stream); a single-label model reading pairs is the `pair` task;
/// - a `BertForTokenClassification` directory on a CoNLL file;
/// - a `BertForQuestionAnswering` directory on a SQuAD file;
/// - a `GPT2LMHeadModel` directory on plain text, cut into blocks of `max_length` tokens as
///   training cuts them (perplexity, next-token accuracy);
/// - a Focal sequence-to-sequence directory (`--task seq2seq` or `reverse`) on pairs of texts
///   (greedy decoding's exact match and token accuracy).
///
/// The columns and the longest input are `columns` and `max_length`, or else those the run that
/// wrote `dir` used (its `metrics.json`), or else the defaults (128 tokens), so that a run's
/// directory scores its held-out file as training reported. A label (or word) the model does
/// not have is an error naming the line.
pub fn evaluate_model<B: FusedAttentionBackend>(
    dir: &Path,
    data: &Path,
    columns: Option<&Columns>,
    batch_size: usize,
    max_length: Option<usize>,
    device: &B::Device,
) -> Result<Evaluation, FineTuneError> {
    let config_path = dir.join("config.json");
    let config: serde_json::Value = std::fs::read(&config_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let is = |architecture: &str| {
        config["architectures"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == architecture))
    };
    let (columns, max_length) = scoring_settings(dir, columns, max_length);
    let mut settings = FineTuneConfig {
        batch_size,
        max_length,
        columns,
        ..FineTuneConfig::default()
    };
    settings.validate()?;
    if is("GPT2LMHeadModel") {
        settings.task = FineTuneTask::Lm;
        let (model, _) = focal_pretrained::Gpt2::<B>::load(dir, device)?;
        let blocks = lm_blocks(data, &lm_tokenizer(dir)?, max_length.min(model.positions()))?;
        let held_out = evaluate(
            &LmTraining { model },
            &PadBatcher { pad_id: 0 },
            &InMemory(blocks),
            &settings,
            &[],
            device,
        );
        return Ok(Evaluation {
            task: settings.task,
            labels: Vec::new(),
            held_out,
        });
    }
    if config["format"] == crate::checkpoint::FORMAT {
        settings.task = FineTuneTask::Seq2Seq;
        let held_out = crate::trainer::evaluate_seq2seq::<B>(dir, data, &settings, device)?;
        return Ok(Evaluation {
            task: settings.task,
            labels: Vec::new(),
            held_out,
        });
    }
    if is("BertForQuestionAnswering") {
        settings.task = FineTuneTask::Qa;
        let (model, task) = BertForQuestionAnswering::<B>::load(dir, device)?;
        let tokenizer = tokenizer_for(dir, &task, max_length)?;
        let questions = read_squad(data, &mut BadRows::strict())?;
        let window = qa_window(max_length, &task);
        let examples = qa_examples(&questions, &tokenizer, window, data, &mut BadRows::strict())?;
        let pad_id = task.bert.pad_token_id as u32;
        let answerer = focal_pretrained::QuestionAnswerer::<B>::from_parts(
            model,
            task,
            tokenizer,
            device.clone(),
        );
        let training = QaTraining {
            model: answerer.model.clone(),
        };
        let mut held_out = evaluate(
            &training,
            &PadBatcher { pad_id },
            &InMemory(examples),
            &settings,
            &[],
            device,
        );
        let (exact, f1) = squad_figures(&answerer, &questions, window)?;
        (held_out.exact_match, held_out.f1) = (Some(exact), Some(f1));
        return Ok(Evaluation {
            task: settings.task,
            labels: Vec::new(),
            held_out,
        });
    }
    if is("BertForTokenClassification") {
        settings.task = FineTuneTask::Tag;
        let (model, task) = BertForTokenClassification::<B>::load(dir, device)?;
        let tokenizer = tokenizer_for(dir, &task, max_length)?;
        let mut bad = BadRows::strict();
        let sentences = read_conll(data, &mut bad)?;
        let examples = tag_examples(sentences, &task.labels, &tokenizer, data, &mut bad)?;
        let pad_id = task.bert.pad_token_id as u32;
        let held_out = evaluate(
            &TagTraining { model },
            &PadBatcher { pad_id },
            &InMemory(examples),
            &settings,
            &task.labels,
            device,
        );
        return Ok(Evaluation {
            task: settings.task,
            labels: task.labels,
            held_out,
        });
    }
    let (model, task) = BertForSequenceClassification::<B>::load(dir, device)?;
    settings.task = match task.problem_type {
        ProblemType::Regression => FineTuneTask::Regress,
        ProblemType::MultiLabel => FineTuneTask::MultiLabel,
        ProblemType::SingleLabel if settings.columns.pair.is_some() => FineTuneTask::Pair,
        ProblemType::SingleLabel => FineTuneTask::Classify,
    };
    let mut bad = BadRows::strict();
    let rows = LabelledRows::read(data, &settings.columns, label_kind(settings.task), &mut bad)?;
    let tokenizer = Arc::new(tokenizer_for(dir, &task, max_length)?);
    let failure = RowFailure::default();
    let examples = TextRows::new(rows, &task.labels, tokenizer, &mut bad, failure.clone())?;
    let pad_id = task.bert.pad_token_id as u32;
    let held_out = evaluate(
        &SequenceTraining { model },
        &PadBatcher { pad_id },
        &examples,
        &settings,
        &task.labels,
        device,
    );
    failure.check()?;
    let labels = if settings.task == FineTuneTask::Regress {
        Vec::new()
    } else {
        task.labels
    };
    Ok(Evaluation {
        task: settings.task,
        labels,
        held_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use focal_pretrained::{Tagger, TextClassifier};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
    }

    /// Fine-tunes the tiny BERT fixture on the committed files of `task`
    /// (`tests/fixtures/train/generate_tasks.py`), into a temporary directory.
    fn run<B: FusedAttentionBackend>(
        config: FineTuneConfig,
        files: (&str, &str),
        device: &B::Device,
    ) -> (FineTuneReport, tempfile::TempDir) {
        let out = tempfile::tempdir().unwrap();
        let train = fixtures().join("train").join(files.0);
        let valid = fixtures().join("train").join(files.1);
        let report = fine_tune::<Autodiff<B>>(
            &fixtures().join("bert"),
            &train,
            Some(&valid),
            &out.path().join("model"),
            &config,
            device,
        )
        .unwrap();
        (report, out)
    }

    fn settings(task: FineTuneTask, epochs: usize, learning_rate: f64) -> FineTuneConfig {
        FineTuneConfig {
            task,
            epochs,
            batch_size: 16,
            learning_rate,
            max_length: 32,
            seed: 3,
            ..FineTuneConfig::default()
        }
    }

    /// [`fine_tune`] of the tiny BERT fixture on ndarray, as it returns.
    fn fine_tune_bert(
        train: &Path,
        valid: Option<&Path>,
        out: &Path,
        config: &FineTuneConfig,
    ) -> Result<FineTuneReport, FineTuneError> {
        fine_tune::<Autodiff<focal_backend::NdArray>>(
            &fixtures().join("bert"),
            train,
            valid,
            out,
            config,
            &Default::default(),
        )
    }

    /// The directory holds the model, `metrics.json` and the pictures, and nothing is left
    /// beside it (burn-train's working directory is gone).
    fn check_written(out: &tempfile::TempDir, pictures: &[&str]) {
        let dir = out.path().join("model");
        for name in ["config.json", "model.safetensors", "metrics.json"]
            .iter()
            .chain(pictures)
        {
            assert!(dir.join(name).is_file(), "{name} missing");
        }
        for picture in pictures {
            let bytes = std::fs::read(dir.join(picture)).unwrap();
            assert_eq!(&bytes[..4], b"\x89PNG", "{picture}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["model"]);
    }

    /// A classifier learns place vs person sentences: held-out loss falls, accuracy reaches
    /// 90%, and the directory is a Hugging Face classifier that Focal's pipeline loads.
    fn classify_learns_the_labels<B: FusedAttentionBackend>(device: &B::Device) {
        let _rng = crate::rng_lock();
        let config = settings(FineTuneTask::Classify, 12, 3e-3);
        let (report, out) = run::<B>(config, ("classify_train.csv", "classify_valid.csv"), device);
        assert_eq!(report.labels, ["person", "place"]);
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(after.accuracy.unwrap() >= 0.9, "{before:?} -> {after:?}");
        let confusion = after.confusion.as_ref().unwrap();
        assert_eq!(confusion.iter().flatten().sum::<usize>(), 32);
        check_written(&out, &["loss.png", "metrics.png", "confusion.png"]);
        let dir = out.path().join("model");
        let classifier = TextClassifier::<B>::load(&dir, device).unwrap();
        assert_eq!(classifier.config.labels, ["person", "place"]);
        let best = classifier
            .classify(&["paris was great .".to_string()], None, Some(1))
            .unwrap();
        assert_eq!(best[0][0].label, "place");
        // Scoring the directory again on the held-out file gives the figures of the report.
        let evaluation = evaluate_model::<B>(
            &dir,
            &fixtures().join("train/classify_valid.csv"),
            None,
            16,
            Some(32),
            device,
        )
        .unwrap();
        assert_eq!(evaluation.task, FineTuneTask::Classify);
        assert_eq!(evaluation.held_out.confusion, report.after.confusion);
        assert!((evaluation.held_out.loss - report.after.loss).abs() < 1e-5);
    }

    focal_backend::backend_tests!(classify_learns_the_labels);

    /// Head importance equals transformers' `head_mask` gradients, taken one row at a time
    /// (`tests/fixtures/interpret/generate_head_importance.py`, transformers 4.57.1), to 1e-4
    /// of the largest score and 1e-4 after the per-layer normalisation, in batches of 4 (a
    /// padded, short last batch included).
    fn head_importance_matches_transformers<B: FusedAttentionBackend>(device: &B::Device) {
        let here = fixtures().join("interpret");
        let reference: serde_json::Value = serde_json::from_slice(
            &std::fs::read(here.join("head_importance_reference.json")).unwrap(),
        )
        .unwrap();
        let scores = head_importance::<Autodiff<B>>(
            &fixtures().join("heads/classify"),
            &here.join("head_importance_data.csv"),
            None,
            4,
            Some(32),
            device,
        )
        .unwrap();
        assert_eq!(scores.rows, 10);
        let expected = |name: &str| -> Vec<Vec<f64>> {
            serde_json::from_value(reference[name].clone()).unwrap()
        };
        let largest = expected("importance")
            .iter()
            .flatten()
            .fold(0.0f64, |a, &v| a.max(v));
        for (name, got, tolerance) in [
            ("importance", &scores.importance, 1e-4 * largest),
            ("normalised", &scores.normalised, 1e-4),
        ] {
            let want = expected(name);
            assert_eq!((got.len(), got[0].len()), (2, 4));
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!(
                    (g - w).abs() <= tolerance,
                    "{name}: {got:?} against {want:?}"
                );
            }
        }
    }

    focal_backend::backend_tests!(head_importance_matches_transformers);

    /// The kept weights are the best epoch's: their held-out macro-F1, computed again after
    /// training, equals the epoch figure burn-train logged for that epoch (so the epoch figures
    /// are the epoch's macro-F1, not a mean of batches'), and it is the best of the run.
    /// Early stopping ends a run whose metric stops improving.
    #[test]
    fn best_epoch_is_kept_and_early_stopping_stops() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let mut config = settings(FineTuneTask::Classify, 30, 3e-3);
        config.early_stopping = Some(2);
        config.batch_size = 10;
        config.grad_accum = 2;
        config.warmup = 0.1;
        let (report, _out) = run::<focal_backend::NdArray>(
            config,
            ("classify_train.csv", "classify_valid.csv"),
            &device,
        );
        let history = &report.history;
        assert_eq!(history.epochs.len(), report.epochs_run);
        assert!(report.epochs_run < 30, "early stopping never stopped");
        let valid = |e: &EpochFigures| e.valid["Macro F1"];
        let best = history.epochs.iter().map(valid).fold(f64::MIN, f64::max);
        let kept = valid(&history.epochs[report.best_epoch - 1]);
        assert_eq!(kept, best);
        let after = report.after.macro_f1.unwrap() * 100.0;
        assert!((after - kept).abs() < 1e-6, "after {after}, logged {kept}");
        // 96 rows in batches of 10: 10 batches, 5 optimizer steps per epoch, counted as the
        // optimizer took them.
        assert_eq!(report.optimizer_steps, 5 * report.epochs_run);
        let counted: Vec<usize> = history.epochs.iter().map(|e| e.optimizer_steps).collect();
        let expected: Vec<usize> = (1..=report.epochs_run).map(|e| 5 * e).collect();
        assert_eq!(counted, expected);
        assert_eq!(history.steps.len(), 10 * report.epochs_run);
    }

    /// An epoch with fewer batches than the gradient accumulation would never step the
    /// optimizer (burn-train drops an epoch's unfilled accumulation): refused with the numbers
    /// before anything trains. With 96 rows in batches of 64, 2 batches fill one step of 2, and
    /// the optimizer steps once an epoch.
    #[test]
    fn an_epoch_must_fill_an_optimizer_step() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let out = tempfile::tempdir().unwrap();
        let mut config = settings(FineTuneTask::Classify, 2, 3e-3);
        config.batch_size = 97;
        config.grad_accum = 2;
        let train = fixtures().join("train/classify_train.csv");
        let valid = fixtures().join("train/classify_valid.csv");
        let err = fine_tune_bert(&train, Some(&valid), &out.path().join("model"), &config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("96 training examples makes 1 batches of 97")
                && err.contains("grad_accum 2"),
            "{err}"
        );
        assert!(!out.path().join("model").exists());
        config.batch_size = 64;
        let (report, _out) = run::<focal_backend::NdArray>(
            config,
            ("classify_train.csv", "classify_valid.csv"),
            &device,
        );
        assert_eq!(report.optimizer_steps, 2);
    }

    /// Sentence pairs: the kind of the second sentence, whatever the first.
    #[test]
    fn pairs_learn() {
        let _rng = crate::rng_lock();
        let (report, out) = run::<focal_backend::NdArray>(
            settings(FineTuneTask::Pair, 15, 3e-3),
            ("pair_train.csv", "pair_valid.csv"),
            &Default::default(),
        );
        assert_eq!(report.labels, ["person", "place"]);
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(after.accuracy.unwrap() >= 0.75, "{before:?} -> {after:?}");
        check_written(&out, &["loss.png", "metrics.png", "confusion.png"]);
        // The run stored the second text's column it read (the default, `text_pair`), so that
        // scoring its directory again reads pairs and gives training's held-out figures.
        let evaluation = evaluate_model::<focal_backend::NdArray>(
            &out.path().join("model"),
            &fixtures().join("train/pair_valid.csv"),
            None,
            16,
            None,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(evaluation.task, FineTuneTask::Pair);
        assert_eq!(evaluation.held_out.confusion, after.confusion);
        assert!((evaluation.held_out.loss - after.loss).abs() < 1e-5);
    }

    /// Multi-label rows (JSON Lines lists, some empty).
    #[test]
    fn multilabel_learns() {
        let _rng = crate::rng_lock();
        let (report, out) = run::<focal_backend::NdArray>(
            settings(FineTuneTask::MultiLabel, 30, 5e-3),
            ("multilabel_train.jsonl", "multilabel_valid.jsonl"),
            &Default::default(),
        );
        assert_eq!(report.labels, ["person", "place"]);
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(after.macro_f1.unwrap() >= 0.9, "{before:?} -> {after:?}");
        assert!(after.micro_f1.is_some() && after.confusion.is_none());
        check_written(&out, &["loss.png", "metrics.png"]);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("model/config.json")).unwrap())
                .unwrap();
        assert_eq!(config["problem_type"], "multi_label_classification");
    }

    /// Regression: the number of places a sentence names.
    #[test]
    fn regression_learns() {
        let _rng = crate::rng_lock();
        let (report, out) = run::<focal_backend::NdArray>(
            settings(FineTuneTask::Regress, 15, 3e-3),
            ("regress_train.tsv", "regress_valid.tsv"),
            &Default::default(),
        );
        assert!(report.labels.is_empty());
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss / 4.0, "{before:?} -> {after:?}");
        assert!(after.pearson.unwrap() >= 0.9, "{before:?} -> {after:?}");
        check_written(&out, &["loss.png", "metrics.png"]);
    }

    /// Tagging from CoNLL files: entity F1 as seqeval computes it rises, and the directory is a
    /// token classifier Focal's tagger loads.
    #[test]
    fn tagging_learns() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let (report, out) = run::<focal_backend::NdArray>(
            settings(FineTuneTask::Tag, 15, 3e-3),
            ("tag_train.conll", "tag_valid.conll"),
            &device,
        );
        assert_eq!(report.labels, ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]);
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(after.entity_f1.unwrap() >= 0.9, "{before:?} -> {after:?}");
        let types: Vec<_> = after.per_class.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(types, ["LOC", "PER"]);
        check_written(&out, &["loss.png", "metrics.png"]);
        let tagger =
            Tagger::<focal_backend::NdArray>::load(&out.path().join("model"), &device).unwrap();
        let entities = tagger.tag(&["paris was great .".to_string()]).unwrap();
        assert_eq!(entities[0][0].entity_group, "LOC");
    }

    /// Causal language modelling of the tiny GPT-2 fixture on plain text: the blocks are
    /// transformers' (`run_clm.py`'s), the untrained model's held-out loss, perplexity and
    /// next-token accuracy are transformers' (`tests/fixtures/train/generate_lm_reference.py`,
    /// versions pinned there; 1e-5), training lowers the perplexity, and the directory written
    /// is a GPT-2 directory Focal loads again to the same figures.
    #[test]
    fn language_model_learns_and_matches_transformers() {
        let _rng = crate::rng_lock();
        type B = focal_backend::NdArray;
        let device = Default::default();
        let reference: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures().join("train/lm_reference.json")).unwrap(),
        )
        .unwrap();
        let block = reference["block"].as_u64().unwrap() as usize;
        let gpt2 = fixtures().join("gpt2");
        let valid = fixtures().join("train/lm_valid.txt");
        let blocks = lm_blocks(&valid, &lm_tokenizer(&gpt2).unwrap(), block).unwrap();
        assert_eq!(blocks.len() as u64, reference["blocks"].as_u64().unwrap());
        let first: Vec<u32> = serde_json::from_value(reference["first_block"].clone()).unwrap();
        assert_eq!(blocks[0].ids, first);

        let config = FineTuneConfig {
            max_length: block,
            learning_rate: 3e-3,
            ..settings(FineTuneTask::Lm, 4, 3e-3)
        };
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("model");
        let report = fine_tune::<Autodiff<B>>(
            &gpt2,
            &fixtures().join("train/lm_train.txt"),
            Some(&valid),
            &dir,
            &config,
            &device,
        )
        .unwrap();
        let (before, after) = (&report.before, &report.after);
        let close = |got: f64, key: &str| {
            let want = reference[key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{key}: {got} vs {want}"
            );
        };
        close(before.loss, "loss");
        close(before.perplexity.unwrap(), "perplexity");
        close(before.next_token_accuracy.unwrap(), "next_token_accuracy");
        assert!(
            after.perplexity.unwrap() < before.perplexity.unwrap() / 10.0,
            "{before:?} -> {after:?}"
        );
        assert!(after.next_token_accuracy.unwrap() > 0.4, "{after:?}");
        check_written(&out, &["loss.png", "metrics.png"]);
        for file in ["tokenizer.json", "vocab.json", "merges.txt"] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        // `evaluate_model` takes the run's block length from its settings (not the default of
        // 128 tokens), so it scores the held-out file as training reported.
        let evaluation = evaluate_model::<B>(&dir, &valid, None, 16, None, &device).unwrap();
        assert!(
            (evaluation.held_out.loss - after.loss).abs() < 1e-5,
            "{:?} vs {after:?}",
            evaluation.held_out
        );
        // The directory loads again and scores what the report says.
        let (model, _) = focal_pretrained::Gpt2::<B>::load(&dir, &device).unwrap();
        let again = evaluate(
            &LmTraining { model },
            &PadBatcher { pad_id: 0 },
            &InMemory(blocks),
            &config,
            &[],
            &device,
        );
        assert!(
            (again.loss - after.loss).abs() < 1e-6,
            "{again:?} vs {after:?}"
        );
    }

    /// The kept epoch: the highest (or, for perplexity, the lowest) figure, the earliest of a
    /// tie; epochs without the figure are passed over.
    #[test]
    fn the_best_epoch_is_the_earliest_of_a_tie() {
        let figures = [Some(0.5), Some(0.7), None, Some(0.7), Some(0.2)];
        assert_eq!(best_of(&figures, false), Some(2));
        assert_eq!(best_of(&figures, true), Some(5));
        assert_eq!(best_of(&[None, None], false), None);
        assert_eq!(best_of(&[Some(1.0), Some(1.0)], true), Some(1));
    }

    /// A linear probe trains the head only, on mean-pooled embeddings of the frozen encoder:
    /// the encoder's weights are written unchanged, the directory pools by the mean and loads
    /// again with the same figures.
    #[test]
    fn linear_probe_trains_the_head_on_frozen_embeddings() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let mut config = settings(FineTuneTask::Classify, 30, 3e-2);
        config.linear_probe = true;
        let (report, out) = run::<focal_backend::NdArray>(
            config,
            ("classify_train.csv", "classify_valid.csv"),
            &device,
        );
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(after.accuracy.unwrap() >= 0.75, "{before:?} -> {after:?}");
        check_written(&out, &["loss.png", "metrics.png", "confusion.png"]);
        let dir = out.path().join("model");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config[focal_pretrained::POOLING_KEY], "mean");
        let read = |path: PathBuf| std::fs::read(path).unwrap();
        let saved = read(dir.join("model.safetensors"));
        let saved = safetensors::SafeTensors::deserialize(&saved).unwrap();
        let original = read(fixtures().join("bert/model.safetensors"));
        let original = safetensors::SafeTensors::deserialize(&original).unwrap();
        assert!(saved.tensor("bert.pooler.dense.weight").is_err());
        for name in [
            "bert.embeddings.word_embeddings.weight",
            "bert.encoder.layer.1.output.dense.weight",
        ] {
            let unprefixed = name.trim_start_matches("bert.");
            let want = original
                .tensor(name)
                .or_else(|_| original.tensor(unprefixed))
                .unwrap();
            assert_eq!(saved.tensor(name).unwrap().data(), want.data(), "{name}");
        }
        let evaluation = evaluate_model::<focal_backend::NdArray>(
            &dir,
            &fixtures().join("train/classify_valid.csv"),
            None,
            16,
            Some(32),
            &device,
        )
        .unwrap();
        assert!((evaluation.held_out.loss - after.loss).abs() < 1e-5);
        assert_eq!(evaluation.held_out.confusion, after.confusion);
    }

    /// Without a validation file, a share of the training rows is held out (drawn with the
    /// seed: the same rows each time), and a file too small to split is refused.
    #[test]
    fn validation_rows_are_split_off_without_a_file() {
        let _rng = crate::rng_lock();
        let out = tempfile::tempdir().unwrap();
        let train = fixtures().join("train/classify_train.csv");
        let config = settings(FineTuneTask::Classify, 2, 3e-3);
        let run = |dir: &str| fine_tune_bert(&train, None, &out.path().join(dir), &config).unwrap();
        let (first, second) = (run("a"), run("b"));
        // 96 rows: 10 held out (a tenth, rounded up), 86 to train.
        assert_eq!((first.train_examples, first.before.examples), (86, 10));
        assert_eq!(first.before.confusion, second.before.confusion);
        let tiny = out.path().join("tiny.csv");
        std::fs::write(&tiny, "text,label\nparis .,place\n").unwrap();
        let err = fine_tune_bert(&tiny, None, &out.path().join("c"), &config).unwrap_err();
        assert!(err.to_string().contains("give a validation file"), "{err}");
    }

    /// A run's liveness is its working directory's lock, not a process id: a directory named
    /// after a live PID (this process's own, as a restarted container's PID 1 sees its killed
    /// run's) whose lock nobody holds is a dead run's, and resumable; one whose lock is held
    /// is a live run's, left alone.
    #[test]
    fn a_run_is_alive_while_it_holds_its_lock() {
        let parent = tempfile::tempdir().unwrap();
        let out = parent.path().join("model");
        let dir = parent
            .path()
            .join(format!(".model.learner-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "").unwrap();
        assert_eq!(
            stale_scratch(parent.path(), "model"),
            std::slice::from_ref(&dir)
        );
        check_resumable(&out).unwrap();
        let held = Scratch::lock(dir.clone()).unwrap();
        assert!(stale_scratch(parent.path(), "model").is_empty());
        assert!(check_resumable(&out).is_err());
        drop(held);
        assert_eq!(stale_scratch(parent.path(), "model"), [dir]);
    }

    /// Output places that cannot be created (under `/proc`, a name longer than the file
    /// system takes, a path longer than the system takes) are one error naming the path,
    /// before training (burn-train's file logger used to panic on them).
    #[test]
    fn output_places_that_cannot_be_created_are_refused() {
        let parent = tempfile::tempdir().unwrap();
        let deep: PathBuf = std::iter::repeat_n("d".repeat(200), 25).collect();
        for out in [
            PathBuf::from("/proc/focal-test/model"),
            parent.path().join("x".repeat(300)),
            parent.path().join(deep).join("model"),
        ] {
            let err = fine_tune_bert(
                &fixtures().join("train/classify_train.csv"),
                Some(&fixtures().join("train/classify_valid.csv")),
                &out,
                &settings(FineTuneTask::Classify, 1, 3e-3),
            )
            .unwrap_err();
            assert!(
                matches!(err, FineTuneError::File { .. }),
                "{}: {err}",
                out.display()
            );
        }
    }

    /// A run that fails after training (here its output path is a file, so writing the model
    /// fails, as a full disk would) keeps its checkpoints; a fresh run refuses to delete them,
    /// naming `--resume` and `--overwrite`; `resume` continues from the last epoch and writes
    /// the model.
    #[test]
    fn checkpoints_survive_a_failed_save() {
        let _rng = crate::rng_lock();
        let parent = tempfile::tempdir().unwrap();
        let out = parent.path().join("model");
        std::fs::write(&out, "in the way").unwrap();
        let mut config = settings(FineTuneTask::Classify, 2, 3e-3);
        let train = |config: &FineTuneConfig| {
            fine_tune_bert(
                &fixtures().join("train/classify_train.csv"),
                Some(&fixtures().join("train/classify_valid.csv")),
                &out,
                config,
            )
        };
        let failed = train(&config).unwrap_err().to_string();
        assert!(
            failed.contains("checkpoints are kept in") && failed.contains("--resume"),
            "{failed}"
        );
        assert_eq!(stale_scratch(parent.path(), "model").len(), 1);
        let refused = train(&config).unwrap_err().to_string();
        assert!(
            refused.contains("left its checkpoints")
                && refused.contains("--resume")
                && refused.contains("--overwrite"),
            "{refused}"
        );
        assert_eq!(stale_scratch(parent.path(), "model").len(), 1);
        std::fs::remove_file(&out).unwrap();
        config.resume = true;
        let report = train(&config).unwrap();
        assert_eq!(report.resumed_from_epoch, 2);
        assert!(out.join("model.safetensors").is_file());
        assert!(stale_scratch(parent.path(), "model").is_empty());
    }

    /// A rows file changed under a run: the row that no longer reads is left out and its
    /// error, naming the file and line, is carried to the run (it used to panic inside burn's
    /// loader with a byte offset).
    #[test]
    fn a_row_that_no_longer_reads_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        let rows = crate::data::class_rows(
            &path,
            "text,label\nparis was great .,place\nthe man is old .,person\n",
        );
        let labels = ["person".to_string(), "place".to_string()];
        let (_, task) = BertForSequenceClassification::<focal_backend::NdArray>::for_labels(
            &fixtures().join("bert"),
            labels.to_vec(),
            ProblemType::SingleLabel,
            &Default::default(),
        )
        .unwrap();
        let tokenizer = Arc::new(tokenizer_for(&fixtures().join("bert"), &task, 32).unwrap());
        let failure = RowFailure::default();
        let examples = TextRows::new(
            rows,
            &labels,
            tokenizer,
            &mut BadRows::strict(),
            failure.clone(),
        )
        .unwrap();
        assert!(examples.get(1).is_some());
        failure.check().unwrap();
        std::fs::write(&path, "text,label\n").unwrap();
        assert!(examples.get(1).is_none());
        let err = failure.check().unwrap_err().to_string();
        assert!(
            err.contains("rows.csv, line 3: the row no longer reads") && err.contains("changed"),
            "{err}"
        );
        assert!(failure.interrupter.should_stop());
    }

    /// Tagged sentences longer than the longest input lose their last words; the words and the
    /// entity words lost are counted (and said as a warning) rather than vanishing silently.
    #[test]
    fn cut_tagged_words_are_counted() {
        let labels = ["O".to_string(), "B-LOC".to_string()];
        let (_, task) = BertForTokenClassification::<focal_backend::NdArray>::for_labels(
            &fixtures().join("bert"),
            labels.to_vec(),
            &Default::default(),
        )
        .unwrap();
        let tokenizer = tokenizer_for(&fixtures().join("bert"), &task, 6).unwrap();
        let sentence = |words: &[&str], tags: &[&str]| TaggedSentence {
            words: words.iter().map(|w| w.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            line: 1,
        };
        let short = sentence(&["paris", "."], &["B-LOC", "O"]);
        let long = sentence(
            &["the", "man", "was", "in", "paris", "."],
            &["O", "O", "O", "O", "B-LOC", "O"],
        );
        let mut cut = CutWords::default();
        for s in [&short, &long] {
            let (_, kept) = tag_example(s, &labels, &tokenizer, Path::new("x")).unwrap();
            cut.add(s, kept);
        }
        // Six tokens with [CLS] and [SEP] keep four words of the long sentence.
        assert_eq!(
            cut,
            CutWords {
                sentences: 1,
                words: 2,
                entity_words: 1
            }
        );
    }

    /// A longest input with no room for text beside the special tokens is refused before
    /// training (it underflowed inside the tokenizer): 2 for texts, 3 for pairs.
    #[test]
    fn a_max_length_without_room_for_text_is_refused() {
        for (task, files, max_length) in [
            (
                FineTuneTask::Classify,
                ("classify_train.csv", "classify_valid.csv"),
                2,
            ),
            (FineTuneTask::Pair, ("pair_train.csv", "pair_valid.csv"), 3),
        ] {
            let out = tempfile::tempdir().unwrap();
            let config = FineTuneConfig {
                max_length,
                ..settings(task, 1, 3e-3)
            };
            let err = fine_tune_bert(
                &fixtures().join("train").join(files.0),
                Some(&fixtures().join("train").join(files.1)),
                &out.path().join("model"),
                &config,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!("it must be at least {}", max_length + 1)),
                "{task}: {err}"
            );
        }
    }

    /// The held-out rows of a split are the same for the same seed, and each label keeps its
    /// share on both sides (stratified): of 1000 rows, 50 of them `b`, a fifth held out holds
    /// exactly 10 `b`, whatever the seed (a plain shuffle holds 10 only about one time in
    /// eight).
    #[test]
    fn the_split_is_reproducible_and_stratified() {
        let rows: Vec<(usize, char)> = (0..1000)
            .map(|i| (i, if i % 20 == 3 { 'b' } else { 'a' }))
            .collect();
        for seed in 0..6 {
            let config = FineTuneConfig {
                seed,
                valid_split: 0.2,
                ..FineTuneConfig::default()
            };
            let split = || split_off(rows.clone(), &config, Path::new("x"), |r| r.1).unwrap();
            let ((train, valid), (_, again)) = (split(), split());
            assert_eq!(valid, again);
            assert_eq!((train.len(), valid.len()), (800, 200));
            let held_b = valid.iter().filter(|r| r.1 == 'b').count();
            assert_eq!(held_b, 10, "seed {seed}");
            let mut all: Vec<usize> = train.iter().chain(&valid).map(|r| r.0).collect();
            all.sort_unstable();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
            // Another seed holds out other rows.
            let other = FineTuneConfig {
                seed: seed + 100,
                ..config.clone()
            };
            let (_, moved) = split_off(rows.clone(), &other, Path::new("x"), |r| r.1).unwrap();
            assert_ne!(moved, valid);
        }
    }

    /// Loss figures are means over examples, or over tokens for token tasks (transformers'):
    /// a batch's mean loss counts as many times as it has items, both in burn-train's epoch
    /// figure (the loss metric's input is that long) and in the held-out figures. Two tagging
    /// batches of one sentence each, with 1 and 3 labelled tokens and mean losses 1 and 3,
    /// give (1 + 9) / 4 = 2.5, not the mean of the batches' means (2).
    #[test]
    fn losses_are_weighted_by_examples_or_tokens() {
        type B = Flex;
        let device = Default::default();
        let tags = |labels: [i64; 4], loss: f32| {
            let targets =
                Tensor::<B, 2, Int>::from_data(TensorData::new(labels.to_vec(), [1, 4]), &device);
            TaskOutput::Tags(SequenceOutput::new(
                Tensor::from_floats([loss], &device),
                Tensor::zeros([1, 4, 2], &device),
                None,
                targets,
            ))
        };
        let ignore = focal_heads::loss::IGNORE_INDEX;
        let first = tags([0, ignore, ignore, ignore], 1.0);
        let second = tags([0, 1, 1, ignore], 3.0);
        assert_eq!((first.loss_weight(), second.loss_weight()), (1, 3));
        // burn-train's loss metric over the epoch, as the renderer reads it.
        use burn::train::metric::{Metric, MetricMetadata, Numeric};
        let progress = || burn::data::dataloader::Progress {
            items_processed: 1,
            items_total: 1,
        };
        let metadata = MetricMetadata {
            progress: progress(),
            global_progress: progress(),
            iteration: None,
            lr: None,
        };
        let mut metric = LossMetric::<B>::new();
        for output in [&first, &second] {
            let input: LossInput<B> = output.adapt();
            metric.update(&input, &metadata);
        }
        match metric.running_value() {
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => {
                assert_eq!(count, 4);
                assert!((aggregated_value - 2.5).abs() < 1e-9, "{aggregated_value}");
            }
            other => panic!("{other:?}"),
        }
        let mut tally = Tally::new(FineTuneTask::Tag, &["O".to_string(), "B-LOC".to_string()]);
        tally.add(first, 1);
        tally.add(second, 1);
        let held_out = tally.finish();
        assert_eq!(held_out.examples, 2);
        assert!((held_out.loss - 2.5).abs() < 1e-9, "{}", held_out.loss);
        // A classification batch weighs its examples.
        let class = TaskOutput::Class(ClassificationOutput::new(
            Tensor::<B, 1>::from_floats([0.5], &device),
            Tensor::zeros([3, 2], &device),
            Tensor::<B, 1, Int>::from_ints([0, 1, 1], &device),
        ));
        assert_eq!(class.loss_weight(), 3);
    }

    /// Without a validation file the labels are the whole training file's: a label whose only
    /// row is held out is still a label of the model (not an error naming the user's line).
    #[test]
    fn labels_come_from_the_whole_training_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        let mut text = String::from("text,label\n");
        for i in 0..6 {
            text.push_str(&format!(
                "row {i},{}\n",
                if i % 2 == 0 { "even" } else { "odd" }
            ));
        }
        text.push_str("the one,rare\n");
        std::fs::write(&path, text).unwrap();
        // Held out: more than half, so the single `rare` row (placed at the middle of its
        // stratum) falls in the held-out part.
        let config = FineTuneConfig {
            valid_split: 0.6,
            ..FineTuneConfig::default()
        };
        let (train, valid, labels, _) =
            sequence_rows(&path, None, &config, &mut BadRows::strict()).unwrap();
        assert_eq!(labels, ["even", "odd", "rare"]);
        assert!(train.to_vec().unwrap().iter().all(|r| r.label != "rare"));
        assert!(valid.to_vec().unwrap().iter().any(|r| r.label == "rare"));
    }

    /// A held-out file none of whose rows can be used (here, skipped for labels the training
    /// file lacks) is refused before training, naming the file.
    #[test]
    fn an_empty_held_out_set_is_refused() {
        let _rng = crate::rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let valid = dir.path().join("valid.csv");
        std::fs::write(&valid, "text,label\nthe cat .,animal\n").unwrap();
        let config = FineTuneConfig {
            skip_bad_rows: true,
            ..settings(FineTuneTask::Classify, 1, 3e-3)
        };
        let err = fine_tune_bert(
            &fixtures().join("train/classify_train.csv"),
            Some(&valid),
            &dir.path().join("model"),
            &config,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("valid.csv: no held-out examples left after reading (1 bad rows skipped)"),
            "{err}"
        );
    }

    /// Two data-parallel replicas on the CPU (burn-train's multi-device strategy): each
    /// optimizer step takes a batch on each, the run learns, and the step count halves. The
    /// replicas' threads draw dropout from the process's one generator in no fixed order, so
    /// the run is not reproducible and the bar is lower than on one device.
    #[test]
    fn two_replicas_train_data_parallel() {
        let _rng = crate::rng_lock();
        let mut config = settings(FineTuneTask::Classify, 15, 3e-3);
        config.devices = 2;
        let (report, out) = run::<focal_backend::NdArray>(
            config,
            ("classify_train.csv", "classify_valid.csv"),
            &Default::default(),
        );
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(
            after.accuracy.unwrap() >= 0.75 && after.accuracy > before.accuracy,
            "{before:?} -> {after:?}"
        );
        // 96 rows in batches of 16: 6 batches, 3 rounds of two per epoch.
        assert_eq!(report.optimizer_steps, 3 * report.epochs_run);
        assert_eq!(report.history.steps.len(), 6 * report.epochs_run);
        check_written(&out, &["loss.png", "metrics.png", "confusion.png"]);
    }

    /// Question answering from a SQuAD file: the share of windows with the exact span rises,
    /// and so do SQuAD's exact match and F1 of the pipeline's answers; the directory is a
    /// `BertForQuestionAnswering` that Focal's question answerer loads.
    #[test]
    fn question_answering_learns() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let (report, out) = run::<focal_backend::NdArray>(
            settings(FineTuneTask::Qa, 40, 5e-3),
            ("qa_train.json", "qa_valid.json"),
            &device,
        );
        let (before, after) = (&report.before, &report.after);
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(after.span_match.unwrap() >= 0.8, "{before:?} -> {after:?}");
        assert!(
            after.exact_match.unwrap() >= 0.8 && after.exact_match > before.exact_match,
            "{before:?} -> {after:?}"
        );
        assert!(after.f1.unwrap() >= after.exact_match.unwrap());
        check_written(&out, &["loss.png", "metrics.png"]);
        let answerer = focal_pretrained::QuestionAnswerer::<focal_backend::NdArray>::load(
            &out.path().join("model"),
            &device,
        )
        .unwrap();
        let answers = answerer
            .answer(
                "where was it ?",
                "the man is old . paris was great .",
                &Default::default(),
            )
            .unwrap();
        assert_eq!(answers[0].answer, "paris");
        let evaluation = evaluate_model::<focal_backend::NdArray>(
            &out.path().join("model"),
            &fixtures().join("train/qa_valid.json"),
            None,
            16,
            Some(32),
            &device,
        )
        .unwrap();
        assert_eq!(evaluation.task, FineTuneTask::Qa);
        assert_eq!(evaluation.held_out.exact_match, after.exact_match);
    }

    /// Fine-tuning optimizes as transformers' `Trainer` does by default: AdamW's ε 1e-8, the
    /// gradient norm clipped at 1.0, the user's weight decay on weights but not on biases and
    /// norm weights.
    #[test]
    fn the_optimizer_is_transformers_trainers() {
        let config = FineTuneConfig {
            weight_decay: 0.01,
            ..FineTuneConfig::default()
        };
        let optimizer = trainer_optimizer(&config);
        assert_eq!(optimizer.epsilon, 1e-8);
        assert_eq!((optimizer.beta_1, optimizer.beta_2), (0.9, 0.999));
        assert_eq!(optimizer.weight_decay, 0.01);
        assert!(!optimizer.decay_vectors);
        assert!(matches!(
            optimizer.grad_clipping,
            Some(burn::grad_clipping::GradientClippingConfig::Norm(n)) if n == 1.0
        ));
        assert_eq!(FineTuneConfig::default().weight_decay, 0.0);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let mut config = FineTuneConfig {
            warmup: 1.0,
            ..FineTuneConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("warmup")
        );
        config.warmup = 0.0;
        config.grad_accum = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("grad_accum")
        );
        assert_eq!(
            "ner".parse::<FineTuneTask>().unwrap_err(),
            "unknown task \"ner\" (known: classify, pair, multilabel, regress, tag, qa, lm, seq2seq)"
        );
    }
}

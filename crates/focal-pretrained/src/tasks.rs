//! BERT with a task head: `BertForSequenceClassification`, `BertForTokenClassification`,
//! `BertForQuestionAnswering` directories, with their labels.

use crate::PretrainedError;
use crate::bert::{Bert, BertConfig, BertScales};
use crate::hf::{file, read_json};
use burn::module::Module;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use focal_attention::{FusedAttentionBackend, PytorchImportError, WeightLayout};
use focal_heads::{
    ClassifierPooling, ProblemType, SequenceClassifier, SequenceClassifierConfig,
    SpanQuestionAnswering, SpanQuestionAnsweringConfig, TokenClassifier, TokenClassifierConfig,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The task of a BERT directory: which head it has, by transformers' architecture name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BertTask {
    /// `BertForSequenceClassification`: texts or text pairs → labels or values.
    SequenceClassification,
    /// `BertForTokenClassification`: a label per token.
    TokenClassification,
    /// `BertForQuestionAnswering`: an answer span in a context.
    QuestionAnswering,
}

impl BertTask {
    /// transformers' class name, as `config.json`'s `architectures` lists it.
    pub fn architecture(self) -> &'static str {
        match self {
            Self::SequenceClassification => "BertForSequenceClassification",
            Self::TokenClassification => "BertForTokenClassification",
            Self::QuestionAnswering => "BertForQuestionAnswering",
        }
    }
}

/// The task fields of a `config.json`.
#[derive(Deserialize)]
struct TaskFields {
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    problem_type: Option<String>,
    #[serde(default)]
    classifier_dropout: Option<f64>,
    /// Focal's own key for a classifier over the mean of the tokens' states (see
    /// [`POOLING_KEY`]).
    #[serde(default)]
    focal_classifier_pooling: Option<String>,
}

/// The `config.json` key of a sequence classifier that pools by the mean of the real tokens'
/// states (value `"mean"`), as a linear probe over sentence-transformers embeddings does.
/// transformers' `BertForSequenceClassification` always pools with `[CLS]` and its pooler, so it
/// ignores the key and does not reproduce such a model: the directory is for Focal.
pub const POOLING_KEY: &str = "focal_classifier_pooling";

impl TaskFields {
    /// The head's dropout: `classifier_dropout`, else the encoder's `hidden_dropout_prob`, as
    /// transformers chooses it.
    fn dropout(&self, config: &BertConfig) -> f64 {
        self.classifier_dropout
            .unwrap_or(config.hidden_dropout_prob)
    }
}

/// What transformers' `text-classification` pipeline applies to a classifier's logits
/// (`function_to_apply`), chosen from the configuration as the pipeline chooses it: a stated
/// `regression` gives the raw values, a stated multi-label problem or a single output a sigmoid,
/// and several outputs a softmax. So a one-output classifier without `problem_type` trains as a
/// regression (transformers infers MSE for its loss) but the pipeline scores it by a sigmoid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineFunction {
    /// `softmax` over the labels.
    Softmax,
    /// `sigmoid` of each output.
    Sigmoid,
    /// The raw outputs.
    Identity,
}

impl PipelineFunction {
    /// The function for a classifier of `num_labels` outputs whose `config.json` states
    /// `problem_type` (or none), as transformers 4.57's `TextClassificationPipeline` picks it.
    pub fn for_classifier(problem_type: Option<ProblemType>, num_labels: usize) -> Self {
        match problem_type {
            Some(ProblemType::Regression) => Self::Identity,
            Some(ProblemType::MultiLabel) => Self::Sigmoid,
            _ if num_labels == 1 => Self::Sigmoid,
            _ => Self::Softmax,
        }
    }

    /// The function applied to logits `[b, n]`.
    pub fn apply<B: Backend>(self, logits: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Softmax => burn::tensor::activation::softmax(logits, 1),
            Self::Sigmoid => burn::tensor::activation::sigmoid(logits),
            Self::Identity => logits,
        }
    }
}

/// What a task directory's `config.json` says beyond the encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskConfig {
    /// The encoder's configuration.
    pub bert: BertConfig,
    /// Label names by id (`id2label`); for question answering, empty.
    pub labels: Vec<String>,
    /// What a sequence classifier's outputs mean (single-label for the other tasks).
    pub problem_type: ProblemType,
    /// What the text-classification pipeline applies to a sequence classifier's logits
    /// (softmax for the other tasks).
    pub pipeline_function: PipelineFunction,
    /// The `config.json` read.
    pub path: PathBuf,
}

/// Labels by id from `id2label` (keys `"0"`, `"1"`, … without gaps), or transformers' default
/// names `LABEL_0`, `LABEL_1`, … for `rows` outputs when the config has none (said once as a
/// warning).
fn labels(
    id2label: Option<BTreeMap<String, String>>,
    rows: usize,
    path: &Path,
) -> Result<Vec<String>, PretrainedError> {
    let unsupported = |value: String| PretrainedError::Unsupported {
        path: path.to_path_buf(),
        option: "id2label".to_string(),
        value,
    };
    let Some(id2label) = id2label else {
        tracing::warn!(
            "{}: no id2label; the {rows} outputs are named LABEL_0 … LABEL_{}",
            path.display(),
            rows.saturating_sub(1)
        );
        return Ok((0..rows).map(|i| format!("LABEL_{i}")).collect());
    };
    let mut by_id = vec![None; id2label.len()];
    for (key, label) in id2label {
        let id: usize = key
            .parse()
            .map_err(|_| unsupported(format!("key \"{key}\" (ids must be 0, 1, 2, …)")))?;
        let slot = by_id
            .get_mut(id)
            .ok_or_else(|| unsupported(format!("id {id} (ids must be 0, 1, 2, … without gaps)")))?;
        *slot = Some(label);
    }
    let labels: Vec<String> = by_id.into_iter().flatten().collect();
    if labels.len() != rows {
        return Err(unsupported(format!(
            "{} labels, but the classifier has {rows} outputs",
            labels.len()
        )));
    }
    Ok(labels)
}

/// Reads the task fields of `dir/config.json`, refusing a directory whose `architectures`
/// names another task.
fn task_fields(dir: &Path, task: BertTask) -> Result<(TaskFields, PathBuf), PretrainedError> {
    let path = file(dir, "config.json", "config.json")?;
    let fields: TaskFields = read_json(&path)?;
    if let Some(found) = &fields.architectures
        && !found.iter().any(|a| a == task.architecture())
    {
        return Err(PretrainedError::Architecture {
            path,
            found: found.join(", "),
            expected: task.architecture(),
        });
    }
    Ok((fields, path))
}

/// Output rows of the linear layer `{key}.weight` `[out, in]` in the checkpoint.
fn rows(state: &focal_attention::StateDict<'_>, key: &str) -> Result<usize, PytorchImportError> {
    state
        .shape(&format!("{key}.weight"))
        .and_then(|shape| shape.first().copied())
        .ok_or_else(|| PytorchImportError::Missing(format!("{key}.weight")))
}

/// A BERT task model read from a directory with its [`TaskConfig`] (for
/// [`crate::pipelines::Pipeline::load`]).
pub trait TaskModel<B: Backend>: Sized {
    /// Reads a directory of this task.
    fn load(dir: &Path, device: &B::Device) -> Result<(Self, TaskConfig), PretrainedError>;
}

/// Ids, token types and the padding mask of a batch, as [`Bert::forward`] takes them.
pub type BertInputs<B> = (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2, Bool>);

/// `BertForSequenceClassification`: BERT, its pooler and a classifier over the pooled `[CLS]`.
#[derive(Module, Debug)]
pub struct BertForSequenceClassification<B: Backend> {
    /// The encoder (its pooler moved into the head).
    pub bert: Bert<B>,
    /// The pooler and classifier.
    pub head: SequenceClassifier<B>,
}

/// `BertForTokenClassification`: BERT and a per-token classifier.
#[derive(Module, Debug)]
pub struct BertForTokenClassification<B: Backend> {
    /// The encoder.
    pub bert: Bert<B>,
    /// The classifier.
    pub head: TokenClassifier<B>,
}

/// `BertForQuestionAnswering`: BERT and the start/end span head.
#[derive(Module, Debug)]
pub struct BertForQuestionAnswering<B: Backend> {
    /// The encoder.
    pub bert: Bert<B>,
    /// The span head.
    pub head: SpanQuestionAnswering<B>,
}

impl<B: Backend> BertForSequenceClassification<B> {
    /// Reads a `BertForSequenceClassification` directory: the encoder as [`Bert::load`], the
    /// pooler (`bert.pooler.dense`), the classifier (`classifier`, `[num_labels, d]`), the labels
    /// (`id2label`) and the problem type (`problem_type`, else inferred from the number of
    /// labels, as transformers does).
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, TaskConfig), PretrainedError> {
        Self::load_dropout(dir, device, None)
    }

    /// [`Self::load`] with every dropout off, for gradients through a fixed model (head
    /// importance, token attribution): burn's `Dropout` is on whenever the backend is an
    /// autodiff one. The returned config keeps the directory's dropout.
    pub fn load_without_dropout(
        dir: &Path,
        device: &B::Device,
    ) -> Result<(Self, TaskConfig), PretrainedError> {
        Self::load_dropout(dir, device, Some(0.0))
    }

    fn load_dropout(
        dir: &Path,
        device: &B::Device,
        dropout: Option<f64>,
    ) -> Result<(Self, TaskConfig), PretrainedError> {
        let task = BertTask::SequenceClassification;
        let (mut fields, path) = task_fields(dir, task)?;
        if dropout.is_some() {
            fields.classifier_dropout = dropout;
        }
        let mut kept = None;
        let adjust = |config: &mut BertConfig| {
            if let Some(p) = dropout {
                kept = Some((
                    config.hidden_dropout_prob,
                    config.attention_probs_dropout_prob,
                ));
                config.hidden_dropout_prob = p;
                config.attention_probs_dropout_prob = p;
            }
        };
        let (mut bert, mut config, (mut head, n)) =
            Bert::load_adjusted(dir, device, adjust, |state, config| {
                let n = rows(state, "classifier")?;
                let problem_type = ProblemType::infer(fields.problem_type.as_deref(), n)
                    .map_err(PytorchImportError::Unsupported)?;
                let dropout = fields.dropout(config);
                let d = config.hidden_size;
                let pooling = match fields.focal_classifier_pooling.as_deref() {
                    None => ClassifierPooling::Pooler,
                    Some("mean") => ClassifierPooling::Mean,
                    Some(other) => {
                        return Err(PytorchImportError::Unsupported(format!(
                            "{POOLING_KEY} \"{other}\" (Focal knows \"mean\")"
                        )));
                    }
                };
                let mut head = SequenceClassifierConfig::new(d, n)
                    .with_problem_type(problem_type)
                    .with_pooling(pooling)
                    .with_dropout(dropout)
                    .try_init::<B>(device)?;
                head.classifier = state.linear::<B>("classifier", [d, n], device)?;
                Ok((head, n))
            })?;
        let pooler = bert.pooler.take();
        if head.pooling() == ClassifierPooling::Pooler {
            head.pooler = Some(pooler.ok_or_else(|| PretrainedError::Tensors {
                path: dir.join("model.safetensors"),
                cause: PytorchImportError::Missing("bert.pooler.dense.weight".to_string()),
            })?);
        }
        if let Some((hidden, attention)) = kept {
            config.hidden_dropout_prob = hidden;
            config.attention_probs_dropout_prob = attention;
        }
        let labels = labels(fields.id2label, n, &path)?;
        let problem_type = head.problem_type();
        let stated = fields.problem_type.is_some().then_some(problem_type);
        Ok((
            Self { bert, head },
            TaskConfig {
                bert: config,
                labels,
                problem_type,
                pipeline_function: PipelineFunction::for_classifier(stated, n),
                path,
            },
        ))
    }
}

impl<B: Backend> BertForSequenceClassification<B> {
    /// A classifier for `labels` to fine-tune from a directory: a `BertForSequenceClassification`
    /// directory with these labels is loaded as it is; any other BERT or sentence-transformers
    /// directory gives its encoder and pooler (a new pooler when it has none) under a new
    /// classifier (burn's initialisation), as transformers'
    /// `AutoModelForSequenceClassification.from_pretrained(dir, num_labels=…)` does.
    pub fn for_labels(
        dir: &Path,
        labels: Vec<String>,
        problem_type: ProblemType,
        device: &B::Device,
    ) -> Result<(Self, TaskConfig), PretrainedError> {
        let (fields, path) = match continued(dir, BertTask::SequenceClassification)? {
            Continue::Task => {
                let (model, config) = Self::load(dir, device)?;
                return same_labels(model, config, &labels);
            }
            Continue::Encoder(fields, path) => (fields, path),
        };
        let (mut bert, config) = Bert::load(dir, device)?;
        bert.mlm = None;
        let invalid = |cause| PretrainedError::Config {
            path: path.clone(),
            cause,
        };
        let dropout = fields.dropout(&config);
        let mut head = SequenceClassifierConfig::new(config.hidden_size, labels.len())
            .with_problem_type(problem_type)
            .with_dropout(dropout)
            .try_init::<B>(device)
            .map_err(invalid)?;
        if let Some(pooler) = bert.pooler.take() {
            head.pooler = Some(pooler);
        }
        Ok((
            Self { bert, head },
            TaskConfig {
                bert: config,
                pipeline_function: PipelineFunction::for_classifier(
                    Some(problem_type),
                    labels.len(),
                ),
                labels,
                problem_type,
                path,
            },
        ))
    }
}

impl<B: Backend> BertForTokenClassification<B> {
    /// Reads a `BertForTokenClassification` directory: the encoder as [`Bert::load`] (no
    /// pooler), the classifier (`classifier`, `[num_labels, d]`) and the labels (`id2label`).
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, TaskConfig), PretrainedError> {
        let (fields, path) = task_fields(dir, BertTask::TokenClassification)?;
        let (bert, config, (head, n)) = Bert::load_with(dir, device, |state, config| {
            let n = rows(state, "classifier")?;
            let d = config.hidden_size;
            let dropout = fields.dropout(config);
            let mut head = TokenClassifierConfig::new(d, n)
                .with_dropout(dropout)
                .try_init::<B>(device)?;
            head.classifier = state.linear::<B>("classifier", [d, n], device)?;
            Ok((head, n))
        })?;
        let labels = labels(fields.id2label, n, &path)?;
        Ok((
            Self { bert, head },
            TaskConfig {
                bert: config,
                labels,
                problem_type: ProblemType::SingleLabel,
                pipeline_function: PipelineFunction::Softmax,
                path,
            },
        ))
    }
}

impl<B: Backend> BertForTokenClassification<B> {
    /// A tagger for `labels` to fine-tune, as `AutoModelForTokenClassification.from_pretrained(dir,
    /// num_labels=…)` builds it: the encoder of a BERT or sentence-transformers directory (no
    /// pooler) and a new classifier; or, from a `BertForTokenClassification` directory, that
    /// model, whose labels must then equal `labels`.
    pub fn for_labels(
        dir: &Path,
        labels: Vec<String>,
        device: &B::Device,
    ) -> Result<(Self, TaskConfig), PretrainedError> {
        let (fields, path) = match continued(dir, BertTask::TokenClassification)? {
            Continue::Task => {
                let (model, config) = Self::load(dir, device)?;
                return same_labels(model, config, &labels);
            }
            Continue::Encoder(fields, path) => (fields, path),
        };
        let (mut bert, config) = Bert::load(dir, device)?;
        bert.mlm = None;
        bert.pooler = None;
        let head = TokenClassifierConfig::new(config.hidden_size, labels.len())
            .with_dropout(fields.dropout(&config))
            .try_init::<B>(device)
            .map_err(|cause| PretrainedError::Config {
                path: path.clone(),
                cause,
            })?;
        Ok((
            Self { bert, head },
            TaskConfig {
                bert: config,
                labels,
                problem_type: ProblemType::SingleLabel,
                pipeline_function: PipelineFunction::Softmax,
                path,
            },
        ))
    }
}

/// Where fine-tuning from a directory starts.
enum Continue {
    /// The directory is already the task's model.
    Task,
    /// An encoder (its config fields and `config.json`'s path) to put a new head on.
    Encoder(TaskFields, PathBuf),
}

fn continued(dir: &Path, task: BertTask) -> Result<Continue, PretrainedError> {
    let path = file(dir, "config.json", "config.json")?;
    let fields: TaskFields = read_json(&path)?;
    let is_task = fields
        .architectures
        .as_ref()
        .is_some_and(|found| found.iter().any(|a| a == task.architecture()));
    Ok(if is_task {
        Continue::Task
    } else {
        Continue::Encoder(fields, path)
    })
}

/// A loaded task model to continue from, if its labels are the data's.
fn same_labels<M>(
    model: M,
    config: TaskConfig,
    labels: &[String],
) -> Result<(M, TaskConfig), PretrainedError> {
    if config.labels != labels {
        return Err(PretrainedError::Unsupported {
            path: config.path.clone(),
            option: "id2label".to_string(),
            value: format!(
                "{:?}, but the data's labels are {labels:?} (start from the encoder's directory to train a new head)",
                config.labels
            ),
        });
    }
    Ok((model, config))
}

impl<B: Backend> BertForQuestionAnswering<B> {
    /// A span head to fine-tune, as `AutoModelForQuestionAnswering.from_pretrained(dir)` builds
    /// it: the encoder of a BERT or sentence-transformers directory (no pooler) and a new
    /// `qa_outputs`; or, from a `BertForQuestionAnswering` directory, that model.
    pub fn for_answers(
        dir: &Path,
        device: &B::Device,
    ) -> Result<(Self, TaskConfig), PretrainedError> {
        let path = match continued(dir, BertTask::QuestionAnswering)? {
            Continue::Task => return Self::load(dir, device),
            Continue::Encoder(_, path) => path,
        };
        let (mut bert, config) = Bert::load(dir, device)?;
        bert.mlm = None;
        bert.pooler = None;
        let head = SpanQuestionAnsweringConfig::new(config.hidden_size)
            .try_init::<B>(device)
            .map_err(|cause| PretrainedError::Config {
                path: path.clone(),
                cause,
            })?;
        Ok((
            Self { bert, head },
            TaskConfig {
                bert: config,
                labels: Vec::new(),
                problem_type: ProblemType::SingleLabel,
                pipeline_function: PipelineFunction::Softmax,
                path,
            },
        ))
    }
}

impl<B: Backend> BertForQuestionAnswering<B> {
    /// Reads a `BertForQuestionAnswering` directory: the encoder as [`Bert::load`] (no pooler)
    /// and the span head (`qa_outputs`, `[2, d]`).
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, TaskConfig), PretrainedError> {
        let (_, path) = task_fields(dir, BertTask::QuestionAnswering)?;
        let (bert, config, head) = Bert::load_with(dir, device, |state, config| {
            let d = config.hidden_size;
            let mut head = SpanQuestionAnsweringConfig::new(d).try_init::<B>(device)?;
            head.qa_outputs = state.linear::<B>("qa_outputs", [d, 2], device)?;
            Ok(head)
        })?;
        Ok((
            Self { bert, head },
            TaskConfig {
                bert: config,
                labels: Vec::new(),
                problem_type: ProblemType::SingleLabel,
                pipeline_function: PipelineFunction::Softmax,
                path,
            },
        ))
    }
}

impl<B: FusedAttentionBackend> BertForSequenceClassification<B> {
    /// Logits `[b, num_labels]` of a batch (ids, token types, valid `[b, l]`).
    pub fn forward(&self, (ids, types, valid): BertInputs<B>) -> Tensor<B, 2> {
        let hidden = self
            .bert
            .forward(ids, types, valid.clone())
            .last_hidden_state;
        self.head.forward(hidden, valid)
    }

    /// [`Self::forward`] with the multipliers of `scales` inside the encoder (see
    /// [`Bert::forward_scaled`]).
    pub fn forward_scaled(
        &self,
        (ids, types, valid): BertInputs<B>,
        scales: BertScales<B>,
    ) -> Tensor<B, 2> {
        let hidden = self
            .bert
            .forward_scaled(ids, types, valid.clone(), scales)
            .last_hidden_state;
        self.head.forward(hidden, valid)
    }

    /// The pooled features `[b, d]` the classifier reads (see [`SequenceClassifier::pool`]).
    pub fn features(&self, (ids, types, valid): BertInputs<B>) -> Tensor<B, 2> {
        let hidden = self
            .bert
            .forward(ids, types, valid.clone())
            .last_hidden_state;
        self.head.pool(hidden, valid)
    }
}

impl<B: FusedAttentionBackend> BertForTokenClassification<B> {
    /// Logits `[b, l, num_labels]` of a batch (ids, token types, valid `[b, l]`).
    pub fn forward(&self, (ids, types, valid): BertInputs<B>) -> Tensor<B, 3> {
        self.head
            .forward(self.bert.forward(ids, types, valid).last_hidden_state)
    }
}

impl<B: FusedAttentionBackend> BertForQuestionAnswering<B> {
    /// Start and end logits `[b, l]` of a batch (ids, token types, valid `[b, l]`).
    pub fn forward(&self, (ids, types, valid): BertInputs<B>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        self.head
            .forward(self.bert.forward(ids, types, valid).last_hidden_state)
    }
}

/// A tensor to save: transformers' key, values, shape.
pub(crate) type Saved = (String, Vec<f32>, Vec<usize>);

pub(crate) fn values<B: Backend, const D: usize>(key: String, x: Tensor<B, D>) -> Saved {
    let shape = x.dims().to_vec();
    let data = x.into_data().convert::<f32>();
    (key, data.to_vec().expect("f32 after convert"), shape)
}

/// A linear layer under PyTorch's names (`weight`, `bias`), its weight stored in `layout`
/// (`[out, in]` for `nn.Linear`, `[in, out]` for GPT-2's `Conv1D`), as the loaders read it.
pub(crate) fn linear_tensors<B: Backend>(
    key: &str,
    layer: &burn::nn::Linear<B>,
    layout: WeightLayout,
) -> Vec<Saved> {
    let weight = layer.weight.val();
    let weight = match layout {
        WeightLayout::OutIn => weight.transpose(),
        WeightLayout::InOut => weight,
    };
    let mut out = vec![values(format!("{key}.weight"), weight)];
    if let Some(bias) = &layer.bias {
        out.push(values(format!("{key}.bias"), bias.val()));
    }
    out
}

pub(crate) fn norm_tensors<B: Backend>(key: &str, norm: &focal_blocks::Norm<B>) -> Vec<Saved> {
    match norm {
        focal_blocks::Norm::LayerNorm(ln) => {
            let mut out = vec![values(format!("{key}.weight"), ln.gamma.val())];
            if let Some(beta) = &ln.beta {
                out.push(values(format!("{key}.bias"), beta.val()));
            }
            out
        }
        focal_blocks::Norm::RmsNorm(rms) => vec![values(format!("{key}.weight"), rms.gamma.val())],
    }
}

/// The encoder's tensors under transformers' names with the `bert.` prefix (the inverse of
/// [`Bert::load`]'s key map); the pooler when it has one.
fn bert_tensors<B: Backend>(bert: &Bert<B>) -> Vec<Saved> {
    let p = "bert.embeddings";
    let mut out = vec![values(
        format!("{p}.word_embeddings.weight"),
        bert.embedding.tokens.weight.val(),
    )];
    if let Some(focal_blocks::Positions::Learned(positions)) = &bert.embedding.positions {
        out.push(values(
            format!("{p}.position_embeddings.weight"),
            positions.positions.weight.val(),
        ));
    }
    if let Some(segments) = &bert.embedding.segments {
        out.push(values(
            format!("{p}.token_type_embeddings.weight"),
            segments.weight.val(),
        ));
    }
    out.extend(norm_tensors(
        &format!("{p}.LayerNorm"),
        &bert.embedding_norm,
    ));
    for (i, layer) in bert.encoder.layers.iter().enumerate() {
        let key = |name: &str| format!("bert.encoder.layer.{i}.{name}");
        let [query, k, v, o] = layer.self_attention.projections();
        for (name, linear) in [
            ("attention.self.query", query),
            ("attention.self.key", k),
            ("attention.self.value", v),
            ("attention.output.dense", o),
            ("intermediate.dense", &layer.feed_forward.expand),
            ("output.dense", &layer.feed_forward.contract),
        ] {
            out.extend(linear_tensors(&key(name), linear, WeightLayout::OutIn));
        }
        out.extend(norm_tensors(
            &key("attention.output.LayerNorm"),
            &layer.self_attention_residual.norm,
        ));
        out.extend(norm_tensors(
            &key("output.LayerNorm"),
            &layer.feed_forward_residual.norm,
        ));
    }
    if let Some(pooler) = &bert.pooler {
        out.extend(linear_tensors(
            "bert.pooler.dense",
            pooler,
            WeightLayout::OutIn,
        ));
    }
    out
}

/// Files of a tokenizer directory copied along with a saved model, when the source has them.
pub(crate) const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
];

/// Writes a Hugging Face directory: `config.json` (the source's, with the encoder's settings,
/// `architectures`, labels and problem type set), `model.safetensors` with transformers' names,
/// and the tokenizer files of the source directory; as a whole, atomically.
fn save_task_dir(
    dir: &Path,
    config: &TaskConfig,
    task: BertTask,
    tensors: Vec<Saved>,
    extra: &[(&str, Vec<u8>)],
    focal_key: Option<(&str, serde_json::Value)>,
) -> Result<(), PretrainedError> {
    let mut json: serde_json::Map<String, serde_json::Value> =
        match read_json::<serde_json::Value>(&config.path) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
    // A key of Focal's from the source directory (a probe fine-tuned further) goes unless the
    // model saved has it.
    json.remove(POOLING_KEY);
    if let Some((key, value)) = focal_key {
        json.insert(key.to_string(), value);
    }
    let bert = &config.bert;
    for (key, value) in [
        ("model_type", serde_json::json!("bert")),
        ("architectures", serde_json::json!([task.architecture()])),
        ("vocab_size", serde_json::json!(bert.vocab_size)),
        ("hidden_size", serde_json::json!(bert.hidden_size)),
        (
            "num_hidden_layers",
            serde_json::json!(bert.num_hidden_layers),
        ),
        (
            "num_attention_heads",
            serde_json::json!(bert.num_attention_heads),
        ),
        (
            "intermediate_size",
            serde_json::json!(bert.intermediate_size),
        ),
        ("hidden_act", serde_json::json!(bert.hidden_act)),
        (
            "hidden_dropout_prob",
            serde_json::json!(bert.hidden_dropout_prob),
        ),
        (
            "attention_probs_dropout_prob",
            serde_json::json!(bert.attention_probs_dropout_prob),
        ),
        (
            "max_position_embeddings",
            serde_json::json!(bert.max_position_embeddings),
        ),
        ("type_vocab_size", serde_json::json!(bert.type_vocab_size)),
        ("layer_norm_eps", serde_json::json!(bert.layer_norm_eps)),
        (
            "position_embedding_type",
            serde_json::json!(bert.position_embedding_type),
        ),
        ("pad_token_id", serde_json::json!(bert.pad_token_id)),
    ] {
        json.insert(key.to_string(), value);
    }
    if task != BertTask::QuestionAnswering {
        let id2label: serde_json::Map<String, serde_json::Value> = config
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
            .collect();
        let label2id: serde_json::Map<String, serde_json::Value> = config
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), serde_json::json!(i)))
            .collect();
        json.insert("id2label".into(), id2label.into());
        json.insert("label2id".into(), label2id.into());
    }
    if task == BertTask::SequenceClassification {
        json.insert(
            "problem_type".into(),
            serde_json::json!(config.problem_type.name()),
        );
    }
    let config_bytes =
        serde_json::to_vec_pretty(&serde_json::Value::Object(json)).expect("JSON serialises");
    let source = config.path.parent().unwrap_or(Path::new("."));
    write_model_dir(dir, source, &config_bytes, tensors, extra)
}

/// Writes `config.json`, `model.safetensors` (transformers' `format: pt` metadata), the
/// tokenizer files `source` has, and `extra`, as one directory, atomically.
pub(crate) fn write_model_dir(
    dir: &Path,
    source: &Path,
    config_bytes: &[u8],
    tensors: Vec<Saved>,
    extra: &[(&str, Vec<u8>)],
) -> Result<(), PretrainedError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| PretrainedError::Io { path, cause }
    };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(key, v, shape)| (key, v.iter().flat_map(|x| x.to_le_bytes()).collect(), shape))
        .collect();
    let views = bytes
        .iter()
        .map(|(key, data, shape)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|view| (key.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PretrainedError::Weights {
            path: dir.join("model.safetensors"),
            message: e.to_string(),
        })?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let weights =
        safetensors::serialize(views, metadata).map_err(|e| PretrainedError::Weights {
            path: dir.join("model.safetensors"),
            message: e.to_string(),
        })?;
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let path = source.join(name);
        if path.is_file() {
            copied.push((name, std::fs::read(&path).map_err(io(&path))?));
        }
    }
    let mut files: Vec<(&str, &[u8])> = vec![
        ("config.json", config_bytes),
        ("model.safetensors", &weights),
    ];
    files.extend(copied.iter().map(|(name, bytes)| (*name, bytes.as_slice())));
    files.extend(extra.iter().map(|(name, bytes)| (*name, bytes.as_slice())));
    focal_backend::write_dir_atomic(dir, &files).map_err(|e| PretrainedError::Io {
        path: e.path,
        cause: e.source,
    })
}

impl<B: Backend> BertForSequenceClassification<B> {
    /// Saves the model as a Hugging Face `BertForSequenceClassification` directory that
    /// transformers' `AutoModelForSequenceClassification.from_pretrained` loads (see
    /// [`BertForSequenceClassification::load`] for the names), with `config`'s labels and
    /// problem type and the tokenizer of the directory `config` was read from.
    pub fn save_pretrained(&self, dir: &Path, config: &TaskConfig) -> Result<(), PretrainedError> {
        self.save_pretrained_with(dir, config, &[])
    }

    /// [`Self::save_pretrained`] with `extra` files (name, contents) in the same directory,
    /// written with it as a whole (e.g. `metrics.json` of a training run).
    pub fn save_pretrained_with(
        &self,
        dir: &Path,
        config: &TaskConfig,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<(), PretrainedError> {
        let mut tensors = bert_tensors(&self.bert);
        if let Some(pooler) = &self.head.pooler {
            tensors.extend(linear_tensors(
                "bert.pooler.dense",
                pooler,
                WeightLayout::OutIn,
            ));
        }
        tensors.extend(linear_tensors(
            "classifier",
            &self.head.classifier,
            WeightLayout::OutIn,
        ));
        let mean = self.head.pooling() == ClassifierPooling::Mean;
        save_task_dir(
            dir,
            config,
            BertTask::SequenceClassification,
            tensors,
            extra,
            mean.then_some((POOLING_KEY, serde_json::json!("mean"))),
        )
    }
}

impl<B: Backend> BertForTokenClassification<B> {
    /// Saves the model as a Hugging Face `BertForTokenClassification` directory (see
    /// [`BertForSequenceClassification::save_pretrained`]).
    pub fn save_pretrained(&self, dir: &Path, config: &TaskConfig) -> Result<(), PretrainedError> {
        self.save_pretrained_with(dir, config, &[])
    }

    /// [`Self::save_pretrained`] with `extra` files (see
    /// [`BertForSequenceClassification::save_pretrained_with`]).
    pub fn save_pretrained_with(
        &self,
        dir: &Path,
        config: &TaskConfig,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<(), PretrainedError> {
        let mut tensors = bert_tensors(&self.bert);
        tensors.extend(linear_tensors(
            "classifier",
            &self.head.classifier,
            WeightLayout::OutIn,
        ));
        save_task_dir(
            dir,
            config,
            BertTask::TokenClassification,
            tensors,
            extra,
            None,
        )
    }
}

impl<B: Backend> BertForQuestionAnswering<B> {
    /// Saves the model as a Hugging Face `BertForQuestionAnswering` directory (see
    /// [`BertForSequenceClassification::save_pretrained`]).
    pub fn save_pretrained(&self, dir: &Path, config: &TaskConfig) -> Result<(), PretrainedError> {
        self.save_pretrained_with(dir, config, &[])
    }

    /// [`Self::save_pretrained`] with `extra` files (see
    /// [`BertForSequenceClassification::save_pretrained_with`]).
    pub fn save_pretrained_with(
        &self,
        dir: &Path,
        config: &TaskConfig,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<(), PretrainedError> {
        let mut tensors = bert_tensors(&self.bert);
        tensors.extend(linear_tensors(
            "qa_outputs",
            &self.head.qa_outputs,
            WeightLayout::OutIn,
        ));
        save_task_dir(
            dir,
            config,
            BertTask::QuestionAnswering,
            tensors,
            extra,
            None,
        )
    }
}

impl<B: Backend> TaskModel<B> for BertForSequenceClassification<B> {
    fn load(dir: &Path, device: &B::Device) -> Result<(Self, TaskConfig), PretrainedError> {
        BertForSequenceClassification::load(dir, device)
    }
}

impl<B: Backend> TaskModel<B> for BertForTokenClassification<B> {
    fn load(dir: &Path, device: &B::Device) -> Result<(Self, TaskConfig), PretrainedError> {
        BertForTokenClassification::load(dir, device)
    }
}

impl<B: Backend> TaskModel<B> for BertForQuestionAnswering<B> {
    fn load(dir: &Path, device: &B::Device) -> Result<(Self, TaskConfig), PretrainedError> {
        BertForQuestionAnswering::load(dir, device)
    }
}

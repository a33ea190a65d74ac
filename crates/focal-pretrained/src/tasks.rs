//! BERT with a task head: `BertForSequenceClassification`, `BertForTokenClassification`,
//! `BertForQuestionAnswering` directories, with their labels.

use crate::PretrainedError;
use crate::bert::{Bert, BertConfig};
use crate::hf::{file, read_json};
use burn::module::Module;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use focal_attention::{FusedAttentionBackend, PytorchImportError};
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
        let task = BertTask::SequenceClassification;
        let (fields, path) = task_fields(dir, task)?;
        let (mut bert, config, (mut head, n)) = Bert::load_with(dir, device, |state, config| {
            let n = rows(state, "classifier")?;
            let problem_type = ProblemType::infer(fields.problem_type.as_deref(), n)
                .map_err(PytorchImportError::Unsupported)?;
            let dropout = fields
                .classifier_dropout
                .unwrap_or(config.hidden_dropout_prob);
            let d = config.hidden_size;
            let mut head = SequenceClassifierConfig::new(d, n)
                .with_problem_type(problem_type)
                .with_pooling(ClassifierPooling::Pooler)
                .with_dropout(dropout)
                .try_init::<B>(device)?;
            head.classifier = state.linear::<B>("classifier", [d, n], device)?;
            Ok((head, n))
        })?;
        head.pooler = Some(bert.pooler.take().ok_or_else(|| PretrainedError::Tensors {
            path: dir.join("model.safetensors"),
            cause: PytorchImportError::Missing("bert.pooler.dense.weight".to_string()),
        })?);
        let labels = labels(fields.id2label, n, &path)?;
        let problem_type = head.problem_type();
        Ok((
            Self { bert, head },
            TaskConfig {
                bert: config,
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
            let dropout = fields
                .classifier_dropout
                .unwrap_or(config.hidden_dropout_prob);
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

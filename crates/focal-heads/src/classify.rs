//! Sequence classification: single-label, multi-label and regression heads over pooled hidden
//! states, as transformers' `…ForSequenceClassification`, and its pipeline's scores.

use crate::loss::{binary_cross_entropy_with_logits, cross_entropy, mean_squared_error};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use focal_attention::{FusedAttentionBackend, project};
use focal_backend::ConfigError;
use serde::{Deserialize, Serialize};

/// What a sequence classifier predicts, and so its loss and its pipeline's scores (transformers'
/// `problem_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProblemType {
    /// One label of several: softmax scores, cross-entropy loss.
    #[serde(rename = "single_label_classification")]
    SingleLabel,
    /// Any subset of the labels: one sigmoid per label, binary cross-entropy loss.
    #[serde(rename = "multi_label_classification")]
    MultiLabel,
    /// A real value per output (`num_labels` outputs, usually one): raw scores, mean squared
    /// error loss.
    #[serde(rename = "regression")]
    Regression,
}

impl ProblemType {
    /// The problem type of a transformers config: its `problem_type` when set, else what
    /// transformers infers (regression for one label, single-label classification otherwise).
    pub fn infer(problem_type: Option<&str>, num_labels: usize) -> Result<Self, String> {
        match problem_type {
            Some("single_label_classification") => Ok(Self::SingleLabel),
            Some("multi_label_classification") => Ok(Self::MultiLabel),
            Some("regression") => Ok(Self::Regression),
            Some(other) => Err(format!(
                "unknown problem_type \"{other}\" (expected single_label_classification, multi_label_classification or regression)"
            )),
            None if num_labels == 1 => Ok(Self::Regression),
            None => Ok(Self::SingleLabel),
        }
    }

    /// transformers' name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleLabel => "single_label_classification",
            Self::MultiLabel => "multi_label_classification",
            Self::Regression => "regression",
        }
    }
}

/// How the token states of a sequence become one vector for the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassifierPooling {
    /// BERT's pooler: `tanh(dense(h[:, 0]))`, the first token (`[CLS]`) through a learned
    /// `d → d` projection (transformers' `BertForSequenceClassification`).
    Pooler,
    /// The mean of the real tokens' states (padding excluded), as sentence-transformers pools.
    Mean,
}

/// Configuration of [`SequenceClassifier`].
#[derive(Config, Debug)]
pub struct SequenceClassifierConfig {
    /// Width `d` of the encoder's hidden states.
    pub d_model: usize,
    /// Outputs: classes, labels (multi-label) or regression targets.
    pub num_labels: usize,
    /// What the outputs mean. Default single-label classification.
    #[config(default = "ProblemType::SingleLabel")]
    pub problem_type: ProblemType,
    /// Pooling. Default BERT's pooler.
    #[config(default = "ClassifierPooling::Pooler")]
    pub pooling: ClassifierPooling,
    /// Dropout on the pooled vector before the classifier (training only; transformers'
    /// `classifier_dropout`, else `hidden_dropout_prob`). Default 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl SequenceClassifierConfig {
    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "SequenceClassifierConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_positive(NAME, "num_labels", self.num_labels)?;
        ConfigError::ensure(
            self.problem_type != ProblemType::SingleLabel || self.num_labels >= 2,
            NAME,
            || {
                format!(
                    "single-label classification needs at least 2 labels, got num_labels = {}",
                    self.num_labels
                )
            },
        )?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)
    }

    /// Builds the head, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<SequenceClassifier<B>, ConfigError> {
        self.validate()?;
        Ok(SequenceClassifier {
            pooler: (self.pooling == ClassifierPooling::Pooler)
                .then(|| LinearConfig::new(self.d_model, self.d_model).init(device)),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(self.d_model, self.num_labels).init(device),
            problem_type: self.problem_type,
            pooling: self.pooling,
        })
    }

    /// Builds the head.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SequenceClassifier<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A sequence classification head: `classifier(dropout(pool(h)))` (see
/// [`SequenceClassifierConfig`]). Sentence pairs (a cross-encoder) go through the same head: the
/// encoder sees both texts with their segment ids.
#[derive(Module, Debug)]
pub struct SequenceClassifier<B: Backend> {
    /// BERT's pooler `d → d` (with [`ClassifierPooling::Pooler`]); transformers'
    /// `bert.pooler.dense`.
    pub pooler: Option<Linear<B>>,
    dropout: Dropout,
    /// `d → num_labels`; transformers' `classifier`.
    pub classifier: Linear<B>,
    #[module(skip)]
    problem_type: ProblemType,
    #[module(skip)]
    pooling: ClassifierPooling,
}

/// The targets of a batch for [`SequenceClassifier::loss`].
#[derive(Clone, Debug)]
pub enum ClassTargets<B: Backend> {
    /// Class ids `[b]` (single-label).
    Classes(Tensor<B, 1, Int>),
    /// 0/1 per label `[b, num_labels]` (multi-label), or values `[b, num_labels]` (regression).
    Values(Tensor<B, 2>),
}

impl<B: Backend> SequenceClassifier<B> {
    /// What the outputs mean.
    pub fn problem_type(&self) -> ProblemType {
        self.problem_type
    }

    /// The pooling.
    pub fn pooling(&self) -> ClassifierPooling {
        self.pooling
    }

    /// Outputs of the head.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// The loss of logits `[b, n]` against targets, as transformers computes it: cross-entropy
    /// (single-label, class ids), binary cross-entropy with logits (multi-label), mean squared
    /// error (regression). A target of the wrong kind for the problem type is an error.
    pub fn loss(
        &self,
        logits: Tensor<B, 2>,
        targets: ClassTargets<B>,
    ) -> Result<Tensor<B, 1>, ConfigError> {
        const NAME: &str = "SequenceClassifier::loss";
        match (self.problem_type, targets) {
            (ProblemType::SingleLabel, ClassTargets::Classes(classes)) => {
                Ok(cross_entropy(logits, classes))
            }
            (ProblemType::MultiLabel, ClassTargets::Values(values)) => {
                Ok(binary_cross_entropy_with_logits(logits, values))
            }
            (ProblemType::Regression, ClassTargets::Values(values)) => {
                Ok(mean_squared_error(logits, values))
            }
            (problem, _) => Err(ConfigError::new(
                NAME,
                format!(
                    "{} needs {} targets",
                    problem.name(),
                    if problem == ProblemType::SingleLabel {
                        "class-id"
                    } else {
                        "value"
                    }
                ),
            )),
        }
    }
}

impl<B: FusedAttentionBackend> SequenceClassifier<B> {
    /// Logits of the sequences.
    ///
    /// # Shapes
    ///
    /// - hidden `[b, l, d]` (the encoder's last states), valid `[b, l]` (`true` = real token)
    /// - returns `[b, num_labels]`
    pub fn forward(&self, hidden: Tensor<B, 3>, valid: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
        let pooled = self.pool(hidden, valid);
        project(&self.classifier, self.dropout.forward(pooled))
    }

    /// The pooled features `[b, d]` the classifier reads (before dropout): the pooler's output
    /// or the mean of the real tokens' states.
    pub fn pool(&self, hidden: Tensor<B, 3>, valid: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
        let [b, _, d] = hidden.dims();
        match (self.pooling, &self.pooler) {
            (ClassifierPooling::Pooler, Some(pooler)) => {
                let first = hidden.slice([0..b, 0..1, 0..d]).reshape([b, d]);
                project(pooler, first).tanh()
            }
            (ClassifierPooling::Pooler, None) => hidden.slice([0..b, 0..1, 0..d]).reshape([b, d]),
            (ClassifierPooling::Mean, _) => focal_backend::math::masked_mean(hidden, valid),
        }
    }
}

/// A label and its score, as transformers' text-classification pipeline returns them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label's name (`id2label`).
    pub label: String,
    /// Its score.
    pub score: f32,
}

/// The pipeline's answer for one row of scores: the labels sorted by score, highest first
/// (a stable sort, so equal scores keep the label order), the first `top_k` of them (all when
/// `None`).
pub fn rank_labels(scores: &[f32], labels: &[String], top_k: Option<usize>) -> Vec<LabelScore> {
    let mut ranked: Vec<LabelScore> = scores
        .iter()
        .zip(labels)
        .map(|(&score, label)| LabelScore {
            label: label.clone(),
            score,
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked.truncate(top_k.unwrap_or(usize::MAX));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_type_is_inferred_as_transformers_does() {
        assert_eq!(ProblemType::infer(None, 1), Ok(ProblemType::Regression));
        assert_eq!(ProblemType::infer(None, 3), Ok(ProblemType::SingleLabel));
        assert_eq!(
            ProblemType::infer(Some("multi_label_classification"), 1),
            Ok(ProblemType::MultiLabel)
        );
        assert!(
            ProblemType::infer(Some("ranking"), 3)
                .unwrap_err()
                .contains("ranking")
        );
    }

    #[test]
    fn invalid_configs_are_refused_with_their_values() {
        let err = SequenceClassifierConfig::new(8, 1).validate().unwrap_err();
        assert!(err.to_string().contains("num_labels = 1"), "{err}");
        let err = SequenceClassifierConfig::new(8, 0).validate().unwrap_err();
        assert!(err.to_string().contains("num_labels"), "{err}");
        assert!(
            SequenceClassifierConfig::new(8, 1)
                .with_problem_type(ProblemType::Regression)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn labels_are_ranked_stably() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let ranked = rank_labels(&[0.2, 0.5, 0.2], &labels, None);
        let names: Vec<&str> = ranked.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(rank_labels(&[0.2, 0.5, 0.2], &labels, Some(1)).len(), 1);
    }
}

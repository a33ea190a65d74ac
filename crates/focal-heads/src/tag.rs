//! Token classification (tagging, named entities): a per-token linear head as transformers'
//! `…ForTokenClassification`, the alignment of word labels to word pieces, and the grouping of
//! tagged tokens into entity spans of transformers' token-classification pipeline
//! (`aggregation_strategy="simple"`).

use crate::loss::{IGNORE_INDEX, cross_entropy};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, backend::Backend};
use focal_attention::{FusedAttentionBackend, project};
use focal_backend::ConfigError;
use serde::{Deserialize, Serialize};

/// Configuration of [`TokenClassifier`].
#[derive(Config, Debug)]
pub struct TokenClassifierConfig {
    /// Width `d` of the encoder's hidden states.
    pub d_model: usize,
    /// Tags, e.g. `O`, `B-PER`, `I-PER`, ….
    pub num_labels: usize,
    /// Dropout on the states before the classifier (training only). Default 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl TokenClassifierConfig {
    /// Builds the head, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<TokenClassifier<B>, ConfigError> {
        const NAME: &str = "TokenClassifierConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_positive(NAME, "num_labels", self.num_labels)?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)?;
        Ok(TokenClassifier {
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(self.d_model, self.num_labels).init(device),
        })
    }
}

/// A per-token classification head: `classifier(dropout(h))`.
#[derive(Module, Debug)]
pub struct TokenClassifier<B: Backend> {
    dropout: Dropout,
    /// `d → num_labels`; transformers' `classifier`.
    pub classifier: Linear<B>,
}

impl<B: Backend> TokenClassifier<B> {
    /// Tags of the head.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Cross-entropy of logits `[b, l, n]` against tag ids `[b, l]`, averaged over the positions
    /// whose id is not [`IGNORE_INDEX`] (special tokens, padding, later word pieces).
    pub fn loss(&self, logits: Tensor<B, 3>, tags: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [b, l, n] = logits.dims();
        cross_entropy(logits.reshape([b * l, n]), tags.reshape([b * l]))
    }
}

impl<B: FusedAttentionBackend> TokenClassifier<B> {
    /// Logits per token.
    ///
    /// # Shapes
    ///
    /// - hidden `[b, l, d]` → `[b, l, num_labels]`
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        project(&self.classifier, self.dropout.forward(hidden))
    }
}

/// Word labels onto word pieces, as transformers' token-classification recipe does: the label of
/// a word goes on its first piece; later pieces of the word and tokens of no word (special
/// tokens, padding; `None` in `word_ids`) get [`IGNORE_INDEX`].
///
/// `word_ids[i]` is the word of token `i` (the tokenizer's `word_ids()`). A word id without a
/// label is an error naming it.
pub fn align_word_labels(word_ids: &[Option<usize>], labels: &[i64]) -> Result<Vec<i64>, String> {
    let mut previous = None;
    word_ids
        .iter()
        .map(|&word| {
            let label = match word {
                None => IGNORE_INDEX,
                Some(w) if Some(w) == previous => IGNORE_INDEX,
                Some(w) => *labels.get(w).ok_or_else(|| {
                    format!("token of word {w}, but only {} word labels", labels.len())
                })?,
            };
            previous = word;
            Ok(label)
        })
        .collect()
}

/// One token of a tagged text, for [`group_entities`].
#[derive(Clone, Debug, PartialEq)]
pub struct TaggedToken {
    /// The token as the vocabulary writes it (`##ing`); for an unknown token, the text it
    /// covers.
    pub token: String,
    /// Character offsets `[start, end)` in the text.
    pub start: usize,
    /// End offset.
    pub end: usize,
    /// The tag's probabilities (softmax of the logits), one per label.
    pub scores: Vec<f32>,
}

/// An entity: adjacent tokens of one type, as the pipeline's `simple` aggregation returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The type, without its `B-` / `I-` prefix.
    pub entity_group: String,
    /// Mean of the tokens' winning probabilities.
    pub score: f32,
    /// The tokens joined as the tokenizer's decoder joins them.
    pub word: String,
    /// Character offset of the first token.
    pub start: usize,
    /// Character end of the last token.
    pub end: usize,
}

/// `B-X` → (`B`, `X`), `I-X` → (`I`, `X`), anything else (`O`, `X`) → (`I`, itself).
fn tag(label: &str) -> (bool, &str) {
    if let Some(rest) = label.strip_prefix("B-") {
        (true, rest)
    } else if let Some(rest) = label.strip_prefix("I-") {
        (false, rest)
    } else {
        (false, label)
    }
}

/// Groups the tokens of one text (special tokens and padding already left out) into entities,
/// as transformers' token-classification pipeline with `aggregation_strategy="simple"`: each
/// token takes its most likely tag; adjacent tokens of the same type merge unless the later one
/// is a `B-` tag; groups whose type is in `ignore` (by default `O`) are dropped. `labels` are the
/// tag names by id; `join` joins tokens into the entity's text (the tokenizer's decoder).
pub fn group_entities(
    tokens: &[TaggedToken],
    labels: &[String],
    ignore: &[&str],
    join: impl Fn(&[String]) -> String,
) -> Vec<Entity> {
    let mut entities = Vec::new();
    let mut group: Vec<(&TaggedToken, &str, f32)> = Vec::new();
    let mut close = |group: &mut Vec<(&TaggedToken, &str, f32)>| {
        let Some(&(first, label, _)) = group.first() else {
            return;
        };
        let kind = label.split_once('-').map_or(label, |(_, rest)| rest);
        let words: Vec<String> = group.iter().map(|(t, _, _)| t.token.clone()).collect();
        let score = group.iter().map(|&(_, _, s)| f64::from(s)).sum::<f64>() / group.len() as f64;
        let last = group[group.len() - 1].0;
        if !ignore.contains(&kind) {
            entities.push(Entity {
                entity_group: kind.to_string(),
                score: score as f32,
                word: join(&words),
                start: first.start,
                end: last.end,
            });
        }
        group.clear();
    };
    for token in tokens {
        let (best, score) =
            token
                .scores
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bs), (i, &s)| {
                    if s > bs { (i, s) } else { (bi, bs) }
                });
        let label = labels.get(best).map_or("O", String::as_str);
        if let Some(&(_, last, _)) = group.last() {
            let (begins, kind) = tag(label);
            if begins || tag(last).1 != kind {
                close(&mut group);
            }
        }
        group.push((token, label, score));
    }
    close(&mut group);
    entities
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str, start: usize, scores: &[f32]) -> TaggedToken {
        TaggedToken {
            token: text.to_string(),
            start,
            end: start + text.trim_start_matches("##").len(),
            scores: scores.to_vec(),
        }
    }

    #[test]
    fn word_labels_go_on_first_pieces() {
        let words = [None, Some(0), Some(1), Some(1), Some(2), None];
        assert_eq!(
            align_word_labels(&words, &[3, 1, 0]).unwrap(),
            [-100, 3, 1, -100, 0, -100]
        );
        assert!(
            align_word_labels(&words, &[3])
                .unwrap_err()
                .contains("word 1")
        );
    }

    #[test]
    fn tokens_group_as_the_simple_strategy_does() {
        let labels: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let tokens = [
            token("ada", 0, &[0.1, 0.8, 0.1, 0.0]),
            token("love", 4, &[0.1, 0.1, 0.6, 0.2]),
            token("##lace", 8, &[0.2, 0.0, 0.7, 0.1]),
            token("in", 13, &[0.9, 0.0, 0.1, 0.0]),
            token("paris", 16, &[0.0, 0.0, 0.1, 0.9]),
            token("london", 22, &[0.0, 0.0, 0.1, 0.9]),
        ];
        let join = |t: &[String]| t.join(" ").replace(" ##", "");
        let entities = group_entities(&tokens, &labels, &["O"], join);
        let spans: Vec<(&str, &str, usize, usize)> = entities
            .iter()
            .map(|e| (e.entity_group.as_str(), e.word.as_str(), e.start, e.end))
            .collect();
        // B-LOC after B-LOC starts a new entity; I-PER continues B-PER.
        assert_eq!(
            spans,
            [
                ("PER", "ada lovelace", 0, 12),
                ("LOC", "paris", 16, 21),
                ("LOC", "london", 22, 28)
            ]
        );
        assert!((entities[0].score - 0.7).abs() < 1e-6);
    }
}

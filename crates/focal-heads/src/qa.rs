//! Extractive question answering: start/end logits as transformers'
//! `…ForQuestionAnswering`, and the answer search of its question-answering pipeline.

use crate::loss::cross_entropy_ignoring;
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Int, Tensor, backend::Backend};
use focal_attention::{FusedAttentionBackend, project};
use focal_backend::ConfigError;
use serde::{Deserialize, Serialize};

/// Configuration of [`SpanQuestionAnswering`].
#[derive(Config, Debug)]
pub struct SpanQuestionAnsweringConfig {
    /// Width `d` of the encoder's hidden states.
    pub d_model: usize,
}

impl SpanQuestionAnsweringConfig {
    /// Builds the head, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<SpanQuestionAnswering<B>, ConfigError> {
        ConfigError::ensure_positive("SpanQuestionAnsweringConfig", "d_model", self.d_model)?;
        Ok(SpanQuestionAnswering {
            qa_outputs: LinearConfig::new(self.d_model, 2).init(device),
        })
    }
}

/// The span head: one linear map `d → 2` giving each token a start and an end logit.
#[derive(Module, Debug)]
pub struct SpanQuestionAnswering<B: Backend> {
    /// `d → 2` (start, end); transformers' `qa_outputs`.
    pub qa_outputs: Linear<B>,
}

impl<B: FusedAttentionBackend> SpanQuestionAnswering<B> {
    /// Start and end logits.
    ///
    /// # Shapes
    ///
    /// - hidden `[b, l, d]` → (start `[b, l]`, end `[b, l]`)
    pub fn forward(&self, hidden: Tensor<B, 3>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let logits = project(&self.qa_outputs, hidden); // [b, l, 2]
        let [b, l, _] = logits.dims();
        let start = logits.clone().slice([0..b, 0..l, 0..1]).reshape([b, l]);
        let end = logits.slice([0..b, 0..l, 1..2]).reshape([b, l]);
        (start, end)
    }
}

impl<B: Backend> SpanQuestionAnswering<B> {
    /// transformers' loss: the mean of the start and end cross-entropies against token
    /// positions `[b]`; a position outside the sequence (an answer cut away) is ignored.
    pub fn loss(
        &self,
        start_logits: Tensor<B, 2>,
        end_logits: Tensor<B, 2>,
        start_positions: Tensor<B, 1, Int>,
        end_positions: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let [_, l] = start_logits.dims();
        let ignored = l as i64;
        let clamp = |p: Tensor<B, 1, Int>| p.clamp(0, ignored);
        (cross_entropy_ignoring(start_logits, clamp(start_positions), ignored)
            + cross_entropy_ignoring(end_logits, clamp(end_positions), ignored))
            / 2.0
    }
}

/// Settings of the answer search (transformers' question-answering pipeline arguments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerSearch {
    /// Answers to return. Default 1.
    pub top_k: usize,
    /// Longest answer in tokens. Default 15.
    pub max_answer_len: usize,
    /// Whether "no answer" (the `[CLS]` token's start × end probability) competes.
    /// Default false.
    pub handle_impossible_answer: bool,
}

impl Default for AnswerSearch {
    fn default() -> Self {
        Self {
            top_k: 1,
            max_answer_len: 15,
            handle_impossible_answer: false,
        }
    }
}

impl AnswerSearch {
    /// Checks the settings; the error names the offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::ensure_positive("AnswerSearch", "top_k", self.top_k)?;
        ConfigError::ensure_positive("AnswerSearch", "max_answer_len", self.max_answer_len)
    }
}

/// One window of the context (the document stride splits a long context into several), with
/// its logits and where its tokens are in the context.
#[derive(Clone, Debug, PartialEq)]
pub struct QaWindow {
    /// Start logits `[l]`.
    pub start_logits: Vec<f32>,
    /// End logits `[l]`.
    pub end_logits: Vec<f32>,
    /// Whether each token may be part of an answer: the context's tokens and the `[CLS]` token
    /// (which stands for "no answer"), not the question, special tokens or padding.
    pub candidate: Vec<bool>,
    /// Character span `[start, end)` in the context of the word each token belongs to (for
    /// answers aligned to whole words), `None` for tokens of no word.
    pub word_chars: Vec<Option<(usize, usize)>>,
    /// Character offsets of each token in the context (used when a token has no word).
    pub offsets: Vec<(usize, usize)>,
}

/// An answer: a span of the context and its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Start probability × end probability, summed over the windows and spans that give the
    /// same text (compared ignoring case), as transformers does.
    pub score: f64,
    /// Character offset of the answer in the context (0 for "no answer").
    pub start: usize,
    /// Character end (0 for "no answer").
    pub end: usize,
    /// The answer's text (empty for "no answer").
    pub answer: String,
}

/// Probabilities of the logits with the non-candidates set to -10000 first (so that they take no
/// mass), in `f32` as NumPy computes the pipeline's.
fn masked_softmax(logits: &[f32], candidate: &[bool]) -> Vec<f32> {
    let masked: Vec<f32> = logits
        .iter()
        .zip(candidate)
        .map(|(&x, &c)| if c { x } else { -10000.0 })
        .collect();
    focal_backend::math::softmax(&masked)
}

/// The answers to a question over the windows of one context, best first: transformers'
/// question-answering pipeline (`select_starts_ends`, `decode_spans`, alignment to words, and
/// merging of equal answers). Per window, the `2 top_k + 10` best spans of at most
/// `max_answer_len` tokens (start ≤ end) by start × end probability are taken, those not wholly
/// in the context dropped, and each span widened to whole words; answers with the same text
/// (ignoring case) add their scores; with `handle_impossible_answer`, "no answer" competes with
/// the smallest `[CLS]` score of the windows.
pub fn search_answers(windows: &[QaWindow], context: &str, settings: &AnswerSearch) -> Vec<Answer> {
    let chars: Vec<usize> = context
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(context.len()))
        .collect();
    let slice = |start: usize, end: usize| {
        let (a, b) = (
            chars[start.min(chars.len() - 1)],
            chars[end.min(chars.len() - 1)],
        );
        context.get(a..b.max(a)).unwrap_or_default().to_string()
    };
    let pre_top_k = settings.top_k * 2 + 10;
    let mut answers: Vec<Answer> = Vec::new();
    let mut min_null = 1_000_000f64;
    for window in windows {
        let l = window.start_logits.len();
        if l == 0 {
            continue;
        }
        let mut start = masked_softmax(&window.start_logits, &window.candidate);
        let mut end = masked_softmax(&window.end_logits, &window.candidate);
        if settings.handle_impossible_answer {
            min_null = min_null.min(f64::from(start[0] * end[0]));
        }
        start[0] = 0.0;
        end[0] = 0.0;
        // Every (s, e) of the l × l product, zero outside s ≤ e < s + max_answer_len, ranked
        // by score (ties by position), as NumPy's flattened top-k.
        let score = |s: usize, e: usize| {
            if e >= s && e - s < settings.max_answer_len {
                start[s] * end[e]
            } else {
                0.0
            }
        };
        let mut spans: Vec<(usize, usize)> = (0..l)
            .flat_map(|s| (0..l).map(move |e| (s, e)))
            .filter(|&(s, e)| score(s, e) > 0.0)
            .collect();
        spans.sort_by(|&(s1, e1), &(s2, e2)| score(s2, e2).total_cmp(&score(s1, e1)));
        if spans.len() < pre_top_k {
            // NumPy would fill the top-k with zero-score spans; only those inside the context
            // would be kept, in an order NumPy leaves unspecified.
            let zeros = (0..l)
                .flat_map(|s| (0..l).map(move |e| (s, e)))
                .filter(|&(s, e)| score(s, e) <= 0.0);
            spans.extend(zeros.take(pre_top_k - spans.len()));
        }
        spans.truncate(pre_top_k);
        for (s, e) in spans {
            if !(window.candidate[s] && window.candidate[e]) {
                continue;
            }
            let (from, to) = match (window.word_chars[s], window.word_chars[e]) {
                (Some((from, _)), Some((_, to))) => (from, to),
                _ => (window.offsets[s].0, window.offsets[e].1),
            };
            let text = slice(from, to);
            let value = f64::from(score(s, e));
            if let Some(same) = answers
                .iter_mut()
                .find(|a| a.answer.to_lowercase() == text.to_lowercase())
            {
                same.score += value;
            } else {
                answers.push(Answer {
                    score: value,
                    start: from,
                    end: to,
                    answer: text,
                });
            }
        }
    }
    if settings.handle_impossible_answer {
        answers.push(Answer {
            score: min_null,
            start: 0,
            end: 0,
            answer: String::new(),
        });
    }
    answers.sort_by(|a, b| b.score.total_cmp(&a.score));
    answers.truncate(settings.top_k);
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_span_inside_the_context_wins() {
        // [CLS] q [SEP] paris is big [SEP]
        let context = "paris is big";
        let window = QaWindow {
            start_logits: vec![0.0, 9.0, 0.0, 4.0, 1.0, 0.0, 0.0],
            end_logits: vec![0.0, 9.0, 0.0, 1.0, 1.0, 3.0, 0.0],
            candidate: vec![true, false, false, true, true, true, false],
            word_chars: vec![
                None,
                None,
                None,
                Some((0, 5)),
                Some((6, 8)),
                Some((9, 12)),
                None,
            ],
            offsets: vec![(0, 0), (0, 0), (0, 0), (0, 5), (6, 8), (9, 12), (0, 0)],
        };
        let settings = AnswerSearch {
            top_k: 2,
            max_answer_len: 3,
            handle_impossible_answer: true,
        };
        let answers = search_answers(&[window], context, &settings);
        assert_eq!(answers[0].answer, "paris is big");
        assert_eq!((answers[0].start, answers[0].end), (0, 12));
        assert_eq!(answers.len(), 2);
        assert!(answers[0].score > answers[1].score);
    }
}

//! Task models on top of the Transformer blocks.
//!
//! - [`Seq2SeqTransformer`]: an encoder-decoder Transformer (Vaswani et al., 2017) with teacher
//!   forced training and batched greedy decoding.
//! - [`Vocabulary`]: a word-level vocabulary with padding, begin and end tokens, which turns
//!   whitespace-separated text into ids and back, refusing unknown tokens.
//! - Task heads over any encoder's hidden states, as transformers' `…For…` models and their
//!   pipelines: [`SequenceClassifier`] (single-label, multi-label, regression; sentence pairs),
//!   [`TokenClassifier`] (tagging, with [`align_word_labels`] and [`group_entities`]),
//!   [`SpanQuestionAnswering`] (with [`search_answers`]), and [`Matcher`] (top-k candidates by
//!   cosine similarity).
//! - [`generate()`]: text generation for any [`CausalLm`]: greedy, sampling (temperature, top-k,
//!   top-p, min-p), repetition penalty, no-repeat n-grams, beam search, stop tokens, streaming.

mod classify;
pub mod generate;
pub mod loss;
mod matcher;
mod qa;
mod seq2seq;
mod tag;
mod vocab;

pub use classify::{
    ClassTargets, ClassifierPooling, LabelScore, ProblemType, SequenceClassifier,
    SequenceClassifierConfig, rank_labels,
};
pub use matcher::{Match, Matcher};
pub use qa::{
    Answer, AnswerSearch, QaWindow, SpanQuestionAnswering, SpanQuestionAnsweringConfig,
    search_answers,
};
pub use tag::{
    Entity, TaggedToken, TokenClassifier, TokenClassifierConfig, align_word_labels, group_entities,
};

pub use generate::{
    BeamHypothesis, CausalLm, EarlyStopping, GenerationConfig, GenerationError, Strategy,
    beam_search, generate,
};
pub use seq2seq::{
    Seq2SeqAttentions, Seq2SeqCache, Seq2SeqConfig, Seq2SeqSource, Seq2SeqTransformer,
};
pub use vocab::{SpecialTokens, Vocabulary, VocabularyError};

focal_backend::crate_checks!();

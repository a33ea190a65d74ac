//! Task models on top of the Transformer blocks.
//!
//! - [`Seq2SeqTransformer`]: an encoder-decoder Transformer (Vaswani et al., 2017) with teacher
//!   forced training and batched greedy decoding.
//! - [`Vocabulary`]: a word-level vocabulary with padding, begin and end tokens, which turns
//!   whitespace-separated text into ids and back, refusing unknown tokens.
//! - [`generate()`]: text generation for any [`CausalLm`]: greedy, sampling (temperature, top-k,
//!   top-p, min-p), repetition penalty, no-repeat n-grams, beam search, stop tokens, streaming.

pub mod generate;
mod seq2seq;
mod vocab;

pub use generate::{
    BeamHypothesis, CausalLm, EarlyStopping, GenerationConfig, GenerationError, Strategy,
    beam_search, generate,
};
pub use seq2seq::{Seq2SeqCache, Seq2SeqConfig, Seq2SeqSource, Seq2SeqTransformer};
pub use vocab::{SpecialTokens, Vocabulary, VocabularyError};

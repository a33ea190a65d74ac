//! Hugging Face model directories into Focal's models.
//!
//! A directory as the Hub stores it — `config.json`, `model.safetensors` (or
//! `pytorch_model.bin`), `tokenizer.json` — is read as it is, locally (nothing is downloaded):
//!
//! - [`Bert`]: `model_type` `bert` (`BertModel` with its pooler, `BertForMaskedLM` with its
//!   masked-LM head), and sentence-transformers directories ([`SentenceEmbedder`]).
//! - Task models: [`BertForSequenceClassification`], [`BertForTokenClassification`],
//!   [`BertForQuestionAnswering`], with their labels ([`TaskConfig`]), and transformers'
//!   pipelines on them ([`TextClassifier`], [`Tagger`], [`QuestionAnswerer`], [`TextMatcher`]).
//! - [`Gpt2`]: `model_type` `gpt2` (`GPT2LMHeadModel`), a [`focal_heads::CausalLm`] for
//!   [`focal_heads::generate()`].
//!
//! Each family has one key map (Hugging Face name ↔ Focal module), documented on its loader.
//! After loading, every tensor of the file is used and every parameter of the model is filled,
//! or loading fails with a typed [`PretrainedError`] naming the file and the tensors.

mod bert;
mod error;
mod explain;
mod gpt2;
pub mod hf;
pub mod pipelines;
mod tasks;

pub use bert::{Bert, BertConfig, BertOutput, BertScales, MaskedLmHead, Pooling, SentenceEmbedder};
pub use error::PretrainedError;
pub use explain::{TokenAttribution, explain};
pub use gpt2::{Gpt2, Gpt2Config};
pub use hf::{EncodedBatch, Encoding, TextTokenizer};
pub use pipelines::{Pipeline, QaSettings, QuestionAnswerer, Tagger, TextClassifier, TextMatcher};
pub use tasks::{
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    BertInputs, BertTask, POOLING_KEY, PipelineFunction, TaskConfig, TaskModel,
};

focal_backend::crate_checks!();

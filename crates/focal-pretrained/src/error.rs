//! Why a model directory could not be loaded.

use focal_attention::PytorchImportError;
use focal_backend::ConfigError;
use std::path::PathBuf;

/// Why a Hugging Face directory could not be loaded. Each message is one line naming the file
/// (and the tensor or option); the underlying error is part of the message (`cause`), not a
/// separate `source`, so that printing the chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// A file the directory needs is absent.
    #[error("{path}: not found (a model directory needs {what})")]
    MissingFile {
        /// The path looked for.
        path: PathBuf,
        /// What was needed.
        what: &'static str,
    },
    /// A file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// A JSON file does not parse or lacks a field.
    #[error("{path}: {cause}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The error.
        cause: serde_json::Error,
    },
    /// `config.json` names a model type this loader does not read.
    #[error("{path}: model_type '{found}' is not supported here (expected {expected})")]
    ModelType {
        /// The config file.
        path: PathBuf,
        /// The model type found.
        found: String,
        /// The model types accepted.
        expected: &'static str,
    },
    /// `config.json`'s `architectures` names a model of another task than the one asked for.
    #[error("{path}: the model is {found}, not {expected} (a directory of another task)")]
    Architecture {
        /// The config file.
        path: PathBuf,
        /// The architectures listed.
        found: String,
        /// The architecture needed.
        expected: &'static str,
    },
    /// `config.json` sets an option Focal does not implement.
    #[error("{path}: unsupported option {option} = {value}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// The option.
        option: String,
        /// Its value.
        value: String,
    },
    /// The configuration does not make a valid model.
    #[error("{path}: {cause}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is invalid.
        cause: ConfigError,
    },
    /// The weights file cannot be read (truncated, corrupt, wrong format).
    #[error("{path}: cannot read the weights: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// The weights do not fit the model: a tensor is missing, unexpected or mis-shaped.
    #[error("{path}: {cause}")]
    Tensors {
        /// The weights file.
        path: PathBuf,
        /// Which tensor and why.
        cause: PytorchImportError,
    },
    /// `tokenizer.json` cannot be read.
    #[error("{path}: cannot read the tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizer's message.
        message: String,
    },
}

//! Reading a Hugging Face model directory as it is: `config.json`, the weights
//! (`model.safetensors`, else `pytorch_model.bin`, both through burn-store's readers) and
//! `tokenizer.json` (through the `tokenizers` crate).

use crate::PretrainedError;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleStore, SafetensorsStore, TensorSnapshot};
use focal_attention::{PytorchImportError, StateDict};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
pub use tokenizers::Encoding;
use tokenizers::{
    EncodeInput, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams, TruncationStrategy,
};

/// `dir/name`, which must exist.
pub(crate) fn file(dir: &Path, name: &str, what: &'static str) -> Result<PathBuf, PretrainedError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PretrainedError::MissingFile { path, what })
    }
}

/// A JSON file parsed into `T` (a missing field or a wrong type is a `Json` error naming the
/// file).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PretrainedError> {
    let text = std::fs::read_to_string(path).map_err(|cause| PretrainedError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    serde_json::from_str(&text).map_err(|cause| PretrainedError::Json {
        path: path.to_path_buf(),
        cause,
    })
}

/// [`read_json`] for a file that must hold one JSON object (a configuration): anything else (an
/// array, which serde would otherwise read field by field into a struct) is refused, naming
/// the file.
pub fn read_json_object<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PretrainedError> {
    let json_error = |cause| PretrainedError::Json {
        path: path.to_path_buf(),
        cause,
    };
    let value: serde_json::Value = read_json(path)?;
    if !value.is_object() {
        return Err(json_error(<serde_json::Error as serde::de::Error>::custom(
            "expected a JSON object",
        )));
    }
    serde_json::from_value(value).map_err(json_error)
}

/// Refuses, by name, the first of a configuration's switches that is on (`options`: name and
/// value) that the family's model does not implement; `why` follows the value in the error.
pub fn refuse_switches(
    path: &Path,
    options: &[(&str, bool)],
    why: &str,
) -> Result<(), PretrainedError> {
    match options.iter().find(|(_, on)| *on) {
        Some((option, _)) => Err(PretrainedError::Unsupported {
            path: path.to_path_buf(),
            option: option.to_string(),
            value: format!("true{why}"),
        }),
        None => Ok(()),
    }
}

/// `dir/config.json` parsed into a family's struct, after checking its `model_type`; also
/// returns the file's path for later errors.
pub fn read_config<T: serde::de::DeserializeOwned>(
    dir: &Path,
    model_type: &'static str,
) -> Result<(T, PathBuf), PretrainedError> {
    let path = file(dir, "config.json", "config.json")?;
    let json: serde_json::Value = read_json(&path)?;
    let found = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if found != model_type {
        return Err(PretrainedError::ModelType {
            path,
            found: found.to_string(),
            expected: model_type,
        });
    }
    let config = serde_json::from_value(json).map_err(|cause| PretrainedError::Json {
        path: path.clone(),
        cause,
    })?;
    Ok((config, path))
}

/// Every tensor of the directory's weights, by Hugging Face name, and the file read.
pub fn read_weights(dir: &Path) -> Result<(HashMap<String, TensorData>, PathBuf), PretrainedError> {
    let safetensors = dir.join("model.safetensors");
    let bin = dir.join("pytorch_model.bin");
    let weights_error = |path: &Path, message: String| PretrainedError::Weights {
        path: path.to_path_buf(),
        message,
    };
    // Every snapshot read into memory; a truncated or corrupt file fails here.
    let data = |path: &Path, name: &str, snapshot: &TensorSnapshot| {
        snapshot
            .to_data()
            .map_err(|e| weights_error(path, format!("tensor '{name}': {e}")))
    };
    if safetensors.is_file() {
        let mut store = SafetensorsStore::from_file(&safetensors);
        let snapshots = store
            .get_all_snapshots()
            .map_err(|e| weights_error(&safetensors, e.to_string()))?;
        let tensors = snapshots
            .iter()
            .map(|(name, s)| Ok((name.clone(), data(&safetensors, name, s)?)))
            .collect::<Result<_, PretrainedError>>()?;
        Ok((tensors, safetensors))
    } else if bin.is_file() {
        let reader = PytorchReader::new(&bin).map_err(|e| weights_error(&bin, e.to_string()))?;
        let tensors = reader
            .tensors()
            .iter()
            .map(|(name, s)| Ok((name.clone(), data(&bin, name, s)?)))
            .collect::<Result<_, PretrainedError>>()?;
        Ok((tensors, bin))
    } else {
        Err(PretrainedError::MissingFile {
            path: safetensors,
            what: "model.safetensors or pytorch_model.bin",
        })
    }
}

/// `dir/tokenizer.json`, truncating to `max_len` tokens (specials included) and padding
/// batches to their longest sequence with `pad_id` (without `pad`, not padding, whatever the
/// file says: a fixed padding longer than the model would not fit it).
///
/// Every id the tokenizer can produce (its vocabulary, added and special tokens, and `pad_id`)
/// must be below `vocab_size`, the model's embedding rows; the error names the first token
/// that is not.
pub fn read_tokenizer(
    dir: &Path,
    max_len: usize,
    vocab_size: usize,
    pad: Option<(u32, String)>,
) -> Result<Tokenizer, PretrainedError> {
    let path = file(dir, "tokenizer.json", "tokenizer.json")?;
    let error = |message: String| PretrainedError::Tokenizer {
        path: path.clone(),
        message,
    };
    let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| error(e.to_string()))?;
    if let Some((token, id)) = tokenizer
        .get_vocab(true)
        .into_iter()
        .filter(|(_, id)| *id as usize >= vocab_size)
        .min_by_key(|(_, id)| *id)
    {
        return Err(error(format!(
            "token {token:?} has id {id}, but the model's embedding table has {vocab_size} rows (vocab_size in config.json)"
        )));
    }
    // The post-processor's special tokens carry ids of their own (a template's `[CLS]`),
    // which the vocabulary need not list: an empty text and an empty pair show them all.
    for input in [
        EncodeInput::Single("".into()),
        EncodeInput::Dual("".into(), "".into()),
    ] {
        let Ok(encoding) = tokenizer.encode(input, true) else {
            continue;
        };
        if let Some((id, token)) = encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .find(|(id, _)| **id as usize >= vocab_size)
        {
            return Err(error(format!(
                "the special token {token:?} that the post-processor adds has id {id}, but the model's embedding table has {vocab_size} rows (vocab_size in config.json)"
            )));
        }
    }
    if let Some((pad_id, pad_token)) = &pad
        && *pad_id as usize >= vocab_size
    {
        return Err(error(format!(
            "padding token {pad_token:?} has id {pad_id}, but the model's embedding table has {vocab_size} rows"
        )));
    }
    // Truncation to fewer tokens than a text's special tokens underflows inside tokenizers.
    room(max_len, added_tokens(&tokenizer, false), false).map_err(error)?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .map_err(|e| error(e.to_string()))?;
    tokenizer.with_padding(pad.map(|(pad_id, pad_token)| batch_padding(pad_id, pad_token)));
    Ok(tokenizer)
}

/// Padding of a batch to its longest row with the token `pad_token` of id `pad_id`.
fn batch_padding(pad_id: u32, pad_token: String) -> PaddingParams {
    PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id,
        pad_token,
        ..Default::default()
    }
}

/// Checks that the checkpoint's copy `key` of a tied tensor equals `tied` (the tensor it is
/// tied to) element for element, and records it as used; `what` names the untied layer in the
/// error. A NaN anywhere is a mismatch (NaN equals nothing), so a corrupt copy cannot pass.
pub(crate) fn check_tied<B: Backend, const D: usize>(
    state: &StateDict<'_>,
    key: &str,
    tied: Tensor<B, D>,
    what: &str,
) -> Result<(), PytorchImportError> {
    let copy = state.tensor::<B, D>(key, tied.dims(), &tied.device())?;
    let values = focal_backend::math::to_vec::<B, D>;
    let (copy, tied) = (values(copy), values(tied));
    // The shapes agree (checked by `state.tensor`), so the values pair up one to one.
    if let Some((at, (a, b))) = copy
        .iter()
        .zip(&tied)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        return Err(PytorchImportError::Unsupported(format!(
            "{key} differs from the tensor it should be tied to ({what}): element {at} is {a} instead of {b}"
        )));
    }
    Ok(())
}

/// A batch of encoded texts, padded to its longest row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Token ids `[b][l]`.
    pub ids: Vec<Vec<u32>>,
    /// Token types (segments) `[b][l]`.
    pub type_ids: Vec<Vec<u32>>,
    /// 1 for real tokens, 0 for padding, `[b][l]`.
    pub attention_mask: Vec<Vec<u32>>,
}

impl EncodedBatch {
    /// The ids, token types and attention masks of encodings (padded alike).
    pub fn from_encodings(encodings: &[Encoding]) -> Self {
        let take = |f: fn(&Encoding) -> &[u32]| {
            encodings.iter().map(|e| f(e).to_vec()).collect::<Vec<_>>()
        };
        Self {
            ids: take(Encoding::get_ids),
            type_ids: take(Encoding::get_type_ids),
            attention_mask: take(Encoding::get_attention_mask),
        }
    }
}

/// The special tokens `tokenizer`'s post-processor adds to a text, or to a pair when `pairs`.
fn added_tokens(tokenizer: &Tokenizer, pairs: bool) -> usize {
    tokenizer
        .get_post_processor()
        .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, pairs))
}

/// Whether a longest input of `max_len` tokens leaves room for text beside the `added` special
/// tokens of a text (or of a pair, when `pairs`); else the message saying so.
fn room(max_len: usize, added: usize, pairs: bool) -> Result<(), String> {
    if max_len > added {
        return Ok(());
    }
    Err(format!(
        "a longest input of {max_len} tokens leaves no room for the text beside the {added} \
         special tokens of a {}: it must be at least {}",
        if pairs { "pair" } else { "text" },
        added + 1
    ))
}

/// A directory's `tokenizer.json` with truncation to the model's length and batch padding.
#[derive(Clone, Debug)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_len: usize,
}

impl TextTokenizer {
    /// Reads `dir/tokenizer.json` for a model of `max_len` positions and `vocab_size`
    /// embedding rows (see [`read_tokenizer`]).
    pub fn load(
        dir: &Path,
        max_len: usize,
        vocab_size: usize,
        pad: Option<(u32, String)>,
    ) -> Result<Self, PretrainedError> {
        Ok(Self {
            tokenizer: read_tokenizer(dir, max_len, vocab_size, pad)?,
            path: dir.join("tokenizer.json"),
            max_len,
        })
    }

    fn error(&self, message: impl ToString) -> PretrainedError {
        PretrainedError::Tokenizer {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// Reads `dir/tokenizer.json` as [`TextTokenizer::load`], padding batches with the token of
    /// id `pad_id` (the model's `pad_token_id`).
    pub fn load_padded(
        dir: &Path,
        max_len: usize,
        vocab_size: usize,
        pad_id: u32,
    ) -> Result<Self, PretrainedError> {
        let mut loaded = Self::load(dir, max_len, vocab_size, None)?;
        // A token of the vocabulary has an id below `vocab_size` (checked by `load`).
        let pad_token = loaded.tokenizer.id_to_token(pad_id).ok_or_else(|| {
            loaded.error(format!(
                "the padding id {pad_id} (pad_token_id in config.json) is no token of the vocabulary"
            ))
        })?;
        loaded
            .tokenizer
            .with_padding(Some(batch_padding(pad_id, pad_token)));
        Ok(loaded)
    }

    /// The longest input in tokens (special tokens included) it truncates to.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Checks that `max_len` leaves room for text beside the special tokens the tokenizer adds
    /// to a single text, or to a pair when `pairs` (BERT: 2 and 3): below that, truncation
    /// cannot fit them, and the tokenizer fails inside (or wraps around).
    pub fn check_room(&self, pairs: bool) -> Result<(), PretrainedError> {
        room(self.max_len, added_tokens(&self.tokenizer, pairs), pairs)
            .map_err(|message| self.error(message))
    }

    /// Encodes texts with the tokenizer's special tokens, truncated and padded.
    pub fn encode_batch(&self, texts: &[String]) -> Result<EncodedBatch, PretrainedError> {
        Ok(EncodedBatch::from_encodings(&self.encode(texts, None)?))
    }

    /// The tokenizer's encodings of texts, or of text pairs (`pairs[i]` the second text of
    /// `texts[i]`, with token type 1), truncated and padded, with character offsets.
    pub fn encode(
        &self,
        texts: &[String],
        pairs: Option<&[String]>,
    ) -> Result<Vec<Encoding>, PretrainedError> {
        self.check_room(pairs.is_some())?;
        let inputs: Vec<EncodeInput<'_>> = match pairs {
            Some(pairs) => {
                if pairs.len() != texts.len() {
                    return Err(self.error(format!(
                        "{} texts but {} second texts of pairs",
                        texts.len(),
                        pairs.len()
                    )));
                }
                texts
                    .iter()
                    .zip(pairs)
                    .map(|(a, b)| EncodeInput::Dual(a.as_str().into(), b.as_str().into()))
                    .collect()
            }
            None => texts
                .iter()
                .map(|t| EncodeInput::Single(t.as_str().into()))
                .collect(),
        };
        let encodings = self
            .tokenizer
            .encode_batch_char_offsets(inputs, true)
            .map_err(|e| self.error(e))?;
        // Truncation cannot shorten below the special tokens a template adds.
        if let Some(long) = encodings.iter().find(|e| e.len() > self.max_len) {
            return Err(self.error(format!(
                "an input became {} tokens, more than the model's {} positions (the tokenizer cannot truncate it further)",
                long.len(),
                self.max_len
            )));
        }
        // Inputs longer than the model are cut to its positions; say so once per process.
        if encodings.iter().any(|e| !e.get_overflowing().is_empty()) {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    max_len = self.max_len,
                    "an input was longer than the model's {} positions and was cut to them",
                    self.max_len
                );
            });
        }
        Ok(encodings)
    }

    /// The windows of a question and a long context, as transformers' question-answering
    /// pipeline makes them: `[CLS] question [SEP] context part [SEP]`, at most `max_len` tokens
    /// each, the context cut into parts that overlap by `stride` tokens (the question is never
    /// cut). Not padded; character offsets.
    pub fn encode_windows(
        &self,
        question: &str,
        context: &str,
        max_len: usize,
        stride: usize,
    ) -> Result<Vec<Encoding>, PretrainedError> {
        let mut tokenizer = self.tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len.min(self.max_len),
                stride,
                strategy: TruncationStrategy::OnlySecond,
                ..Default::default()
            }))
            .map_err(|e| self.error(e))?;
        tokenizer.with_padding(None);
        let mut encoding = tokenizer
            .encode_char_offsets(EncodeInput::Dual(question.into(), context.into()), true)
            .map_err(|e| {
                self.error(format!(
                    "{e} (the question must leave room for the context and the stride of {stride} tokens in {max_len})"
                ))
            })?;
        if encoding.len() > self.max_len {
            return Err(self.error(format!(
                "the question takes {} tokens with the context's first part, more than the model's {} positions",
                encoding.len(),
                self.max_len
            )));
        }
        let overflowing = encoding.take_overflowing();
        Ok(std::iter::once(encoding).chain(overflowing).collect())
    }

    /// The tokenizer read from `tokenizer.json` (with Focal's truncation and padding).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokens joined into text as the tokenizer's decoder joins them (`["paris", "##s"]` →
    /// `"pariss"` for WordPiece), as transformers' `convert_tokens_to_string`.
    pub fn join_tokens(&self, tokens: &[String]) -> String {
        use tokenizers::Decoder;
        match self.tokenizer.get_decoder() {
            Some(decoder) => decoder
                .decode(tokens.to_vec())
                .unwrap_or_else(|_| tokens.join(" ")),
            None => tokens.join(" "),
        }
    }

    /// The id of a token of the vocabulary, e.g. `[MASK]`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Text of ids, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, PretrainedError> {
        self.tokenizer.decode(ids, true).map_err(|e| self.error(e))
    }
}

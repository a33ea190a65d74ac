//! The model directory: `config.json` + `model.safetensors` (+ `metrics.json`), written
//! atomically and loaded with typed errors.

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use focal_attention::{PytorchImportError, checked_f32};
use focal_backend::FileError;
pub use focal_backend::files::{recover_dir, write_atomic, write_dir_atomic};
use focal_heads::{Seq2SeqConfig, Seq2SeqTransformer, Vocabulary};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The name of the model description inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The name of the training metrics inside a model directory.
pub const METRICS_FILE: &str = "metrics.json";

pub(crate) const FORMAT: &str = "focal-seq2seq";
const FORMAT_VERSION: u32 = 1;

/// Everything needed to rebuild a trained model besides its weights: `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// Always `focal-seq2seq`.
    pub format: String,
    /// The version of this layout.
    pub format_version: u32,
    /// The task the model was trained on.
    pub task: String,
    /// The model's configuration.
    pub model: Seq2SeqConfig,
    /// Source and target vocabulary.
    pub vocabulary: Vocabulary,
    /// The longest input (in tokens) the model was trained on; longer inputs are refused.
    pub max_input_len: usize,
    /// The longest output decoding produces.
    pub max_output_len: usize,
}

impl ModelArtifact {
    /// Describes a model trained on `task` with inputs of at most `max_input_len` tokens, whose
    /// outputs are cut at `max_output_len` tokens.
    pub fn new(
        task: &str,
        model: Seq2SeqConfig,
        vocabulary: Vocabulary,
        max_input_len: usize,
        max_output_len: usize,
    ) -> Self {
        Self {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            task: task.to_string(),
            model,
            vocabulary,
            max_input_len,
            max_output_len,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT || self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format '{}' version {} is not {FORMAT} version {FORMAT_VERSION}",
                self.format, self.format_version
            ));
        }
        self.model.validate().map_err(|e| e.to_string())?;
        let vocab = self.vocabulary.len();
        if self.model.src_vocab_size != vocab || self.model.tgt_vocab_size != vocab {
            return Err(format!(
                "the vocabulary has {vocab} tokens but the model expects {} source and {} target tokens",
                self.model.src_vocab_size, self.model.tgt_vocab_size
            ));
        }
        // Sources get an <eos>, targets a <bos>: both must leave one position free.
        for (name, len) in [
            ("max_input_len", self.max_input_len),
            ("max_output_len", self.max_output_len),
        ] {
            if len == 0 {
                return Err(format!("{name} must be at least 1, got 0"));
            }
            if len >= self.model.max_len {
                return Err(format!(
                    "{name} ({len}) must be below the model's max_len ({})",
                    self.model.max_len
                ));
            }
        }
        Ok(())
    }
}

/// Why a model directory could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The directory does not exist.
    #[error("model directory {0} does not exist")]
    MissingDirectory(PathBuf),
    /// A file the directory must hold is absent.
    #[error(
        "{0} is missing (a model directory holds config.json and model.safetensors, as written by `focal train`)"
    )]
    MissingFile(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `config.json` is not a valid model description.
    #[error("{path}: invalid model config: {reason}")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `model.safetensors` cannot be parsed or serialised.
    #[error("{path}: corrupt weights: {reason}")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of the weights cannot be used: not floating point, or not finite.
    #[error("{path}: {cause}")]
    InvalidTensor {
        /// The file.
        path: PathBuf,
        /// What is wrong with which tensor.
        cause: PytorchImportError,
    },
    /// The weights do not fit the model described by `config.json`.
    #[error("{path}: weights do not match config.json: {details}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The missing, unexpected and mis-shaped tensors.
        details: String,
    },
}

impl From<FileError> for CheckpointError {
    fn from(FileError { path, source }: FileError) -> Self {
        Self::Io { path, source }
    }
}

/// The error of an I/O operation on `path`.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { path, source }
}

/// Saves the model directory `dir`: `config.json` and `model.safetensors` (see
/// [`save_run`]).
pub fn save_checkpoint<B: Backend>(
    dir: &Path,
    artifact: &ModelArtifact,
    model: &Seq2SeqTransformer<B>,
) -> Result<(), CheckpointError> {
    save_run(dir, artifact, model, &[])
}

/// Saves the model directory `dir` as a whole: `config.json`, `model.safetensors` and the
/// `extra` files (name, contents) are written and flushed into a temporary sibling directory,
/// which then replaces `dir` by renames (see [`write_dir_atomic`]). At any instant `dir` is
/// absent, the previous complete directory or the new complete one.
pub fn save_run<B: Backend>(
    dir: &Path,
    artifact: &ModelArtifact,
    model: &Seq2SeqTransformer<B>,
    extra: &[(&str, Vec<u8>)],
) -> Result<(), CheckpointError> {
    let corrupt = |reason: String| CheckpointError::CorruptWeights {
        path: dir.join(WEIGHTS_FILE),
        reason,
    };
    let mut store = SafetensorsStore::from_bytes(None).metadata("focal_format", FORMAT);
    model
        .save_into(&mut store)
        .map_err(|e| corrupt(e.to_string()))?;
    let weights = store.get_bytes().map_err(|e| corrupt(e.to_string()))?;
    let config = serde_json::to_vec_pretty(artifact).expect("model artifact serialises to JSON");
    let mut files: Vec<(&str, &[u8])> = vec![(WEIGHTS_FILE, &weights), (CONFIG_FILE, &config)];
    files.extend(extra.iter().map(|(name, bytes)| (*name, bytes.as_slice())));
    Ok(write_dir_atomic(dir, &files)?)
}

/// Reads `config.json` of a model directory.
pub fn load_artifact(dir: &Path) -> Result<ModelArtifact, CheckpointError> {
    if !dir.is_dir() {
        return Err(CheckpointError::MissingDirectory(dir.to_path_buf()));
    }
    let path = dir.join(CONFIG_FILE);
    let bytes = read(&path)?;
    // JSON is UTF-8 throughout; serde_json does not check the strings it skips (fields of
    // no use here), so the whole text is checked first.
    let text = std::str::from_utf8(&bytes).map_err(|e| CheckpointError::InvalidConfig {
        path: path.clone(),
        reason: format!("not UTF-8 text ({e})"),
    })?;
    let artifact: ModelArtifact =
        serde_json::from_str(text).map_err(|e| CheckpointError::InvalidConfig {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    artifact
        .check()
        .map_err(|reason| CheckpointError::InvalidConfig { path, reason })?;
    Ok(artifact)
}

/// Loads a model directory written by [`save_checkpoint`] onto `device`.
///
/// Every tensor of the file must fill a parameter of the model, with the right shape, and every
/// parameter must be filled; otherwise the error lists what is missing, unexpected or
/// mis-shaped.
pub fn load_checkpoint<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ModelArtifact, Seq2SeqTransformer<B>), CheckpointError> {
    let artifact = load_artifact(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = checked_weights(&path, read(&path)?)?;
    let mut model = artifact.model.init::<B>(device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .validate(false)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| CheckpointError::CorruptWeights {
            path: path.clone(),
            reason: one_line(&e.to_string()),
        })?;

    let mut problems = Vec::new();
    if !result.missing.is_empty() {
        let names: Vec<_> = result
            .missing
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        problems.push(format!("missing {}", names.join(", ")));
    }
    if !result.unused.is_empty() {
        problems.push(format!("unexpected {}", result.unused.join(", ")));
    }
    if !result.errors.is_empty() {
        let errors: Vec<_> = result
            .errors
            .iter()
            .map(|e| one_line(&e.to_string()))
            .collect();
        problems.push(errors.join("; "));
    }
    if !problems.is_empty() {
        return Err(CheckpointError::Mismatch {
            path,
            details: problems.join("; "),
        });
    }
    Ok((artifact, model))
}

/// The weights file's bytes with every tensor in `f32`: floating-point tensors of other widths
/// are converted (the file is rewritten in memory only then), other element types and
/// non-finite values are refused naming the tensor, before anything reaches the backend (whose
/// kernels would panic on them or compute garbage).
fn checked_weights(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::CorruptWeights {
        path: path.to_path_buf(),
        reason,
    };
    let invalid = |cause| CheckpointError::InvalidTensor {
        path: path.to_path_buf(),
        cause,
    };
    let file = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut tensors = Vec::new();
    for (name, view) in file.iter() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(invalid(PytorchImportError::DType {
                    key: name.to_string(),
                    found: other.to_string(),
                }));
            }
        };
        let data = TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
        let data = checked_f32(name, data).map_err(invalid)?;
        tensors.push((name.to_string(), dtype, data));
    }
    if tensors.iter().all(|(_, dtype, _)| *dtype == DType::F32) {
        return Ok(bytes);
    }
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let views = tensors
        .iter()
        .map(|(name, _, data)| {
            let view = safetensors::tensor::TensorView::new(
                Dtype::F32,
                data.shape.to_vec(),
                data.as_bytes(),
            )
            .map_err(|e| corrupt(format!("tensor '{name}': {e}")))?;
            Ok((name.as_str(), view))
        })
        .collect::<Result<Vec<_>, CheckpointError>>()?;
    safetensors::serialize(views, metadata.metadata().clone()).map_err(|e| corrupt(e.to_string()))
}

/// A file's bytes; only regular files are read (a named pipe would block, a directory fail
/// obscurely).
fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    if let Ok(metadata) = std::fs::metadata(path)
        && !metadata.is_file()
    {
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CheckpointError::MissingFile(path.to_path_buf())
        } else {
            CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReverseTask, Seq2SeqTask};
    use burn::tensor::{Int, Tensor};
    use focal_attention::padding_mask_from_lengths;
    use focal_backend::{NdArray, assert_close};

    fn artifact() -> ModelArtifact {
        let task = ReverseTask::default();
        let vocabulary = task.vocabulary();
        let model = Seq2SeqConfig::new(vocabulary.len(), vocabulary.len())
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_ff(32)
            .with_n_encoder_layers(1)
            .with_n_decoder_layers(1)
            .with_max_len(16);
        ModelArtifact::new("reverse", model, vocabulary, 12, 13)
    }

    #[test]
    fn round_trip_restores_the_same_outputs() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let artifact = artifact();
        let model = artifact.model.init::<NdArray>(&device);
        save_checkpoint(dir.path(), &artifact, &model).unwrap();
        let (loaded_artifact, loaded) = load_checkpoint::<NdArray>(dir.path(), &device).unwrap();
        assert_eq!(loaded_artifact.vocabulary, artifact.vocabulary);

        let src = Tensor::<NdArray, 2, Int>::from_ints([[4, 5, 6]], &device);
        let valid = padding_mask_from_lengths::<NdArray>(&[3], 3, &device);
        let tgt = Tensor::<NdArray, 2, Int>::from_ints([[1, 6]], &device);
        assert_close(
            loaded.forward(src.clone(), valid.clone(), tgt.clone()),
            model.forward(src, valid, tgt),
            0.0,
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn missing_directory_and_files_are_named() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let err = load_checkpoint::<NdArray>(Path::new("/nonexistent/focal"), &device).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model directory /nonexistent/focal does not exist"
        );

        let dir = tempfile::tempdir().unwrap();
        let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
        assert!(
            matches!(err, CheckpointError::MissingFile(ref p) if p.ends_with(CONFIG_FILE)),
            "{err}"
        );
    }

    #[test]
    fn corrupt_or_mismatched_weights_are_typed_errors() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let artifact = artifact();
        let model = artifact.model.init::<NdArray>(&device);
        save_checkpoint(dir.path(), &artifact, &model).unwrap();

        // A config whose width disagrees with the weights.
        let mut wider = artifact.clone();
        wider.model.d_model = 32;
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            serde_json::to_vec(&wider).unwrap(),
        )
        .unwrap();
        let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
        assert!(matches!(err, CheckpointError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("Shape mismatch"), "{err}");
        assert!(!err.to_string().contains('\n'));

        // Truncated weights.
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            serde_json::to_vec(&artifact).unwrap(),
        )
        .unwrap();
        let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), &bytes[..bytes.len() / 2]).unwrap();
        let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
        assert!(
            matches!(err, CheckpointError::CorruptWeights { .. }),
            "{err}"
        );

        // A config that is not JSON.
        std::fs::write(dir.path().join(CONFIG_FILE), b"{ not json").unwrap();
        let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
        assert!(
            matches!(err, CheckpointError::InvalidConfig { .. }),
            "{err}"
        );

        // A config with bytes that are not UTF-8 inside a string of a field no one reads.
        let mut text = serde_json::to_vec(&artifact).unwrap();
        text.truncate(text.len() - 1);
        text.extend_from_slice(b",\"note\":\"\xff\xfe\"}");
        std::fs::write(dir.path().join(CONFIG_FILE), &text).unwrap();
        let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
        assert!(
            matches!(err, CheckpointError::InvalidConfig { .. })
                && err.to_string().contains("not UTF-8"),
            "{err}"
        );

        // A config refused by validation names the values.
        let mut bad = artifact;
        bad.model.n_heads = 3;
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            serde_json::to_vec(&bad).unwrap(),
        )
        .unwrap();
        let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
        assert!(
            err.to_string()
                .contains("d_model (16) is not divisible by n_heads (3)"),
            "{err}"
        );
    }

    /// The weights file of a saved model rewritten tensor by tensor: `change` gets each
    /// tensor's name and `f32` values and returns the element type and bytes to store.
    fn rewrite(dir: &Path, mut change: impl FnMut(&str, &[usize], Vec<f32>) -> (Dtype, Vec<u8>)) {
        let path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = Vec::new();
        for (name, view) in file.iter() {
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let (dtype, data) = change(name, view.shape(), values);
            tensors.push((name.to_string(), view.shape().to_vec(), dtype, data));
        }
        let views: Vec<_> = tensors
            .iter()
            .map(|(name, shape, dtype, data)| {
                let view =
                    safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
                (name.as_str(), view)
            })
            .collect();
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn stored(values: Vec<f32>, shape: &[usize], dtype: DType) -> Vec<u8> {
        TensorData::new(values, shape.to_vec())
            .convert_dtype(dtype)
            .as_bytes()
            .to_vec()
    }

    /// Weights in every element type: floating point ones load (F64 exactly, F16 and BF16
    /// within their precision), the others are refused naming the tensor and the type.
    #[test]
    fn weights_of_every_dtype_load_or_are_refused_by_name() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let artifact = artifact();
        let model = artifact.model.init::<NdArray>(&device);
        let src = Tensor::<NdArray, 2, Int>::from_ints([[4, 5, 6]], &device);
        let valid = padding_mask_from_lengths::<NdArray>(&[3], 3, &device);
        let tgt = Tensor::<NdArray, 2, Int>::from_ints([[1, 6]], &device);
        let want = model.forward(src.clone(), valid.clone(), tgt.clone());
        for (dtype, stored_as, tolerance) in [
            (DType::F64, Dtype::F64, 0.0),
            (DType::F16, Dtype::F16, 2e-2),
            (DType::BF16, Dtype::BF16, 1e-1),
        ] {
            let dir = tempfile::tempdir().unwrap();
            save_checkpoint(dir.path(), &artifact, &model).unwrap();
            rewrite(dir.path(), |_, shape, values| {
                (stored_as, stored(values, shape, dtype))
            });
            let (_, loaded) = load_checkpoint::<NdArray>(dir.path(), &device)
                .unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
            assert_close(
                loaded.forward(src.clone(), valid.clone(), tgt.clone()),
                want.clone(),
                tolerance,
            );
        }
        for (dtype, stored_as) in [
            (DType::I64, Dtype::I64),
            (DType::I32, Dtype::I32),
            (DType::U8, Dtype::U8),
            (DType::U8, Dtype::BOOL),
        ] {
            let dir = tempfile::tempdir().unwrap();
            save_checkpoint(dir.path(), &artifact, &model).unwrap();
            rewrite(dir.path(), |name, shape, values| {
                if name.ends_with("bias") {
                    (stored_as, stored(values, shape, dtype))
                } else {
                    (Dtype::F32, stored(values, shape, DType::F32))
                }
            });
            let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
            assert!(
                matches!(err, CheckpointError::InvalidTensor { .. })
                    && err.to_string().contains("bias' holds")
                    && err.to_string().contains(&format!("{stored_as}")),
                "{dtype:?}: {err}"
            );
        }
    }

    /// NaN and infinities in any tensor are refused with its name and the element.
    #[test]
    fn non_finite_weights_are_refused_by_name() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let artifact = artifact();
        let model = artifact.model.init::<NdArray>(&device);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let dir = tempfile::tempdir().unwrap();
            save_checkpoint(dir.path(), &artifact, &model).unwrap();
            let mut victim = None;
            rewrite(dir.path(), |name, shape, mut values| {
                if victim.is_none() {
                    victim = Some(name.to_string());
                    values[1] = bad;
                }
                (Dtype::F32, stored(values, shape, DType::F32))
            });
            let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
            let victim = victim.unwrap();
            assert!(
                matches!(err, CheckpointError::InvalidTensor { .. })
                    && err.to_string().contains(&format!(
                        "tensor '{victim}' holds a non-finite value ({bad} at element 1)"
                    )),
                "{err}"
            );
        }
    }

    /// The weights file cut at 300 offsets and flipped at 300 bytes: a typed error (or, for a
    /// flip inside the values, a model), never a panic.
    #[test]
    fn truncated_or_flipped_weights_never_panic() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let artifact = artifact();
        let model = artifact.model.init::<NdArray>(&device);
        let dir = tempfile::tempdir().unwrap();
        save_checkpoint(dir.path(), &artifact, &model).unwrap();
        let path = dir.path().join(WEIGHTS_FILE);
        let good = std::fs::read(&path).unwrap();
        let offsets: Vec<usize> = (0..300).map(|i| i * good.len() / 300).collect();
        let mut errors = 0;
        for &at in &offsets {
            std::fs::write(&path, &good[..at]).unwrap();
            assert!(
                load_checkpoint::<NdArray>(dir.path(), &device).is_err(),
                "cut at {at}"
            );
            errors += 1;
        }
        for &at in &offsets {
            let mut flipped = good.clone();
            flipped[at] ^= 0xA5;
            std::fs::write(&path, &flipped).unwrap();
            if load_checkpoint::<NdArray>(dir.path(), &device).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 300, "{errors}");
    }

    /// Only regular files are read: a named pipe in place of config.json or the weights is an
    /// error at once (reading it would block forever), and so is a directory.
    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_not_read() {
        let _rng = crate::rng_lock();
        let device = Default::default();
        let artifact = artifact();
        let model = artifact.model.init::<NdArray>(&device);
        for name in [CONFIG_FILE, WEIGHTS_FILE] {
            let dir = tempfile::tempdir().unwrap();
            save_checkpoint(dir.path(), &artifact, &model).unwrap();
            let path = dir.path().join(name);
            std::fs::remove_file(&path).unwrap();
            let status = std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success());
            let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
            std::fs::remove_file(&path).unwrap();
            std::fs::create_dir(&path).unwrap();
            let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }

    /// Lengths of 0 are refused when config.json is read.
    #[test]
    fn zero_lengths_are_refused() {
        let _rng = crate::rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let mut artifact = artifact();
        let model = artifact.model.init::<NdArray>(&device);
        artifact.max_output_len = 0;
        save_checkpoint(dir.path(), &artifact, &model).unwrap();
        let err = load_checkpoint::<NdArray>(dir.path(), &device).unwrap_err();
        assert!(
            err.to_string()
                .contains("max_output_len must be at least 1, got 0"),
            "{err}"
        );
    }

    /// The directory is replaced as a whole; a run killed between the two renames (the old
    /// directory set aside, the new one not yet in place) is recovered on the next write, and
    /// temporary directories of killed writes are removed.
    #[test]
    fn directories_are_replaced_whole_and_killed_writes_recovered() {
        let _rng = crate::rng_lock();
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("run");
        write_dir_atomic(&dir, &[("a", b"1"), ("b", b"2")]).unwrap();
        write_dir_atomic(&dir, &[("a", b"3")]).unwrap();
        let names = |path: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&dir), ["a"]);
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"3");
        assert_eq!(names(parent.path()), ["run"]);

        // Killed between the renames: `run` missing, the previous one set aside, a half-written
        // new one beside it.
        std::fs::rename(&dir, parent.path().join(".run.old-999")).unwrap();
        std::fs::create_dir(parent.path().join(".run.tmp-999")).unwrap();
        std::fs::write(parent.path().join(".run.tmp-999/a"), b"half").unwrap();
        let acted = recover_dir(&dir).unwrap();
        assert_eq!(acted.len(), 2, "{acted:?}");
        assert_eq!(names(parent.path()), ["run"]);
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"3");

        // A file where the directory should be is an error, and nothing is left behind.
        let file = parent.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = write_dir_atomic(&file, &[("a", b"1")]).unwrap_err();
        assert!(
            err.to_string().contains("exists and is not a directory"),
            "{err}"
        );
        assert_eq!(names(parent.path()), ["file", "run"]);
    }
}

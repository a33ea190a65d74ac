//! A state dict (tensors by key, e.g. read from a safetensors file) consumed by importers.

use crate::PytorchImportError;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// How a checkpoint stores a linear layer's weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in]`: PyTorch's `nn.Linear` (transposed on load).
    OutIn,
    /// `[in, out]`: GPT-2's `Conv1D`, and burn's own layout.
    InOut,
}

impl WeightLayout {
    /// The other layout: a matrix stored in `self` is its transpose stored in the result.
    pub fn transposed(self) -> Self {
        match self {
            Self::OutIn => Self::InOut,
            Self::InOut => Self::OutIn,
        }
    }
}

/// A state dict being consumed: tensors are taken by key with their expected shapes, and
/// [`StateDict::finish`] fails when some were never taken. Loaders of other checkpoint formats
/// (PyTorch modules, Hugging Face directories) build on it.
pub struct StateDict<'a> {
    tensors: &'a HashMap<String, TensorData>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> StateDict<'a> {
    /// Starts consuming `tensors`.
    pub fn new(tensors: &'a HashMap<String, TensorData>) -> Self {
        Self {
            tensors,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// The tensor `key`, which must have `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, PytorchImportError> {
        let data = self
            .tensors
            .get(key)
            .ok_or_else(|| PytorchImportError::Missing(key.to_string()))?;
        if data.shape.as_slice() != shape {
            return Err(PytorchImportError::Shape {
                key: key.to_string(),
                expected: shape.to_vec(),
                found: data.shape.to_vec(),
            });
        }
        let data = checked_f32(key, data.clone())?;
        self.used.borrow_mut().insert(key.to_string());
        Ok(Tensor::from_data(data, device))
    }

    /// PyTorch's `nn.Linear` `{prefix}.weight` `[out, in]` and `{prefix}.bias`.
    pub fn linear<B: Backend>(
        &self,
        prefix: &str,
        dims: [usize; 2],
        device: &B::Device,
    ) -> Result<Linear<B>, PytorchImportError> {
        self.linear_with(prefix, dims, WeightLayout::OutIn, true, device)
    }

    /// A linear layer `d_in → d_out` from `{prefix}.weight` stored in `layout` and, when `bias`,
    /// `{prefix}.bias`.
    pub fn linear_with<B: Backend>(
        &self,
        prefix: &str,
        [d_in, d_out]: [usize; 2],
        layout: WeightLayout,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>, PytorchImportError> {
        let key = format!("{prefix}.weight");
        let weight = match layout {
            WeightLayout::OutIn => self
                .tensor::<B, 2>(&key, [d_out, d_in], device)?
                .transpose(),
            WeightLayout::InOut => self.tensor::<B, 2>(&key, [d_in, d_out], device)?,
        };
        let bias = if bias {
            Some(Param::from_tensor(self.tensor::<B, 1>(
                &format!("{prefix}.bias"),
                [d_out],
                device,
            )?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
        })
    }

    /// The shape of the tensor `key`, when there is one (not counted as used).
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|data| data.shape.to_vec())
    }

    /// Counts `key` as used without reading it as a weight (buffers checked by the caller).
    pub fn mark_used(&self, key: &str) {
        self.used.borrow_mut().insert(key.to_string());
    }

    /// Fails when some tensors were not used, naming them.
    pub fn finish(self) -> Result<(), PytorchImportError> {
        let used = self.used.into_inner();
        let mut unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        unexpected.sort();
        Err(PytorchImportError::Unexpected(unexpected))
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A checkpoint tensor as `f32`, checked: a floating-point tensor (F64, F16, BF16) is
/// converted, any other element type is refused, and so is a value that is NaN or infinite
/// (the error names the tensor, the first such element and its value). Every loader reads
/// weights through it, so that a model never computes on values it cannot represent.
pub fn checked_f32(key: &str, data: TensorData) -> Result<TensorData, PytorchImportError> {
    let data = match data.dtype {
        DType::F32 => data,
        DType::F64 | DType::F16 | DType::BF16 => data.convert::<f32>(),
        other => {
            return Err(PytorchImportError::DType {
                key: key.to_string(),
                found: format!("{other:?}"),
            });
        }
    };
    if let Some((index, value)) = data.iter::<f32>().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(PytorchImportError::NonFinite {
            key: key.to_string(),
            index,
            value,
        });
    }
    Ok(data)
}

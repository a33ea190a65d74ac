//! Importing PyTorch `nn.Transformer*` weights.
//!
//! The state dict is given as its keys and tensors (read from a safetensors file written with
//! `safetensors.torch.save_file(module.state_dict(), ...)`). PyTorch stores `Linear` weights
//! `[out, in]`; they are transposed to burn's `[in, out]`. Every tensor the configuration needs
//! must be present with the right shape, and every tensor given must be used; otherwise the
//! error names the key and the shapes.
//!
//! | PyTorch key (relative to the module)            | Focal                                   |
//! |-------------------------------------------------|-----------------------------------------|
//! | `self_attn.{in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias}` | `self_attention` |
//! | `multihead_attn.*` (decoder layer)              | `cross_attention.attention`             |
//! | `linear1.{weight, bias}`                        | `feed_forward.expand`                   |
//! | `linear2.{weight, bias}`                        | `feed_forward.contract`                 |
//! | `norm1.{weight, bias}`                          | `self_attention_residual.norm`          |
//! | `norm2` (encoder layer)                         | `feed_forward_residual.norm`            |
//! | `norm2` (decoder layer)                         | `cross_attention.residual.norm`         |
//! | `norm3` (decoder layer)                         | `feed_forward_residual.norm`            |
//! | `layers.{i}.*` (`nn.TransformerEncoder` / `Decoder`) | `layers[i]`                        |
//! | `norm.{weight, bias}` (`nn.TransformerEncoder` / `Decoder`) | `final_norm`               |
//! | `encoder.*`, `decoder.*` (`nn.Transformer`)     | `encoder`, `decoder`                    |
//!
//! The configuration must be one PyTorch can express: LayerNorm, ReLU or exact GELU, not
//! gated, standard multi-head attention with biases, no rotary encoding or position bias.

use crate::{
    Activation, LayerKind, Norm, NormKind, Transformer, TransformerConfig, TransformerLayer,
    TransformerLayerConfig, TransformerStack, TransformerStackConfig,
};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use focal_attention::{MultiHeadAttention, MultiHeadAttentionConfig, PytorchImportError};
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

/// A state dict being consumed: tensors are taken by key with their expected shapes, and
/// [`StateDict::finish`] fails when some were never taken. Loaders of other checkpoint formats
/// (Hugging Face directories) build on it.
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
        self.used.borrow_mut().insert(key.to_string());
        Ok(Tensor::from_data(data.clone().convert::<f32>(), device))
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

    /// A LayerNorm's `{prefix}.weight` and `{prefix}.bias` into `norm` (which must be a
    /// LayerNorm).
    pub fn layer_norm<B: Backend>(
        &self,
        prefix: &str,
        norm: Norm<B>,
        d: usize,
    ) -> Result<Norm<B>, PytorchImportError> {
        let Norm::LayerNorm(mut layer_norm) = norm else {
            return Err(PytorchImportError::Unsupported(format!(
                "'{prefix}' is a LayerNorm in the checkpoint, not in the configuration"
            )));
        };
        let device = layer_norm.gamma.device();
        layer_norm.gamma =
            Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d], &device)?);
        layer_norm.beta = Some(Param::from_tensor(self.tensor(
            &format!("{prefix}.bias"),
            [d],
            &device,
        )?));
        Ok(Norm::LayerNorm(layer_norm))
    }

    /// An `nn.MultiheadAttention` under `prefix` (its keys handed over without the prefix).
    pub fn attention<B: Backend>(
        &self,
        prefix: &str,
        config: &MultiHeadAttentionConfig,
        device: &B::Device,
    ) -> Result<MultiHeadAttention<B>, PytorchImportError> {
        let start = format!("{prefix}.");
        let sub: HashMap<String, TensorData> = self
            .tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&start)
                    .map(|rest| (rest.to_string(), v.clone()))
            })
            .collect();
        let attention =
            MultiHeadAttention::from_pytorch(config, &sub, device).map_err(|e| match e {
                PytorchImportError::Missing(k) => {
                    PytorchImportError::Missing(format!("{start}{k}"))
                }
                PytorchImportError::Shape {
                    key,
                    expected,
                    found,
                } => PytorchImportError::Shape {
                    key: format!("{start}{key}"),
                    expected,
                    found,
                },
                other => other,
            })?;
        self.used
            .borrow_mut()
            .extend(sub.into_keys().map(|k| format!("{start}{k}")));
        Ok(attention)
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

/// Refuses configurations PyTorch's Transformer modules cannot express.
fn supported(config: &TransformerLayerConfig) -> Result<(), PytorchImportError> {
    let unsupported = |what: &str| Err(PytorchImportError::Unsupported(what.to_string()));
    if config.norm_kind != NormKind::LayerNorm {
        return unsupported("PyTorch's Transformer layers use LayerNorm, not RMSNorm");
    }
    if !matches!(config.activation, Activation::Relu | Activation::Gelu) || config.gated {
        return unsupported("PyTorch's Transformer layers use ReLU or exact GELU, not gated");
    }
    if !config.bias || config.rotary.is_some() || config.n_kv_heads.is_some() {
        return unsupported(
            "PyTorch's Transformer layers have biases, no rotary encoding and no grouped-query heads",
        );
    }
    if config.kind == LayerKind::DecoderOnly {
        return unsupported(
            "PyTorch has no decoder-only layer; use an Encoder layer with a causal mask",
        );
    }
    Ok(())
}

fn import_layer<B: Backend>(
    state: &StateDict<'_>,
    prefix: &str,
    config: &TransformerLayerConfig,
    device: &B::Device,
) -> Result<TransformerLayer<B>, PytorchImportError> {
    supported(config)?;
    let key = |name: &str| format!("{prefix}{name}");
    let d = config.d_model;
    let mut layer = config.try_init::<B>(device)?;
    layer.self_attention = state.attention(&key("self_attn"), &config.self_attention(), device)?;
    layer.feed_forward.expand = state.linear(&key("linear1"), [d, config.d_ff], device)?;
    layer.feed_forward.contract = state.linear(&key("linear2"), [config.d_ff, d], device)?;
    layer.self_attention_residual.norm =
        state.layer_norm(&key("norm1"), layer.self_attention_residual.norm, d)?;
    match (&mut layer.cross_attention, config.cross_attention()) {
        (Some(cross), Some(cross_config)) => {
            cross.attention = state.attention(&key("multihead_attn"), &cross_config, device)?;
            let norm = cross.residual.norm.clone();
            cross.residual.norm = state.layer_norm(&key("norm2"), norm, d)?;
            layer.feed_forward_residual.norm =
                state.layer_norm(&key("norm3"), layer.feed_forward_residual.norm, d)?;
        }
        _ => {
            layer.feed_forward_residual.norm =
                state.layer_norm(&key("norm2"), layer.feed_forward_residual.norm, d)?;
        }
    }
    Ok(layer)
}

fn import_stack<B: Backend>(
    state: &StateDict<'_>,
    prefix: &str,
    config: &TransformerStackConfig,
    device: &B::Device,
) -> Result<TransformerStack<B>, PytorchImportError> {
    if config.alibi || config.relative_bias.is_some() {
        return Err(PytorchImportError::Unsupported(
            "PyTorch's Transformer stacks have no position bias".to_string(),
        ));
    }
    let mut stack = config.try_init::<B>(device)?;
    for (i, layer) in stack.layers.iter_mut().enumerate() {
        *layer = import_layer(
            state,
            &format!("{prefix}layers.{i}."),
            &config.layer,
            device,
        )?;
    }
    if let Some(norm) = stack.final_norm.take() {
        stack.final_norm =
            Some(state.layer_norm(&format!("{prefix}norm"), norm, config.layer.d_model)?);
    }
    Ok(stack)
}

impl<B: Backend> TransformerLayer<B> {
    /// Builds the layer from the state dict of a PyTorch `nn.TransformerEncoderLayer`
    /// (`kind` Encoder) or `nn.TransformerDecoderLayer` (`kind` Decoder); see the key table
    /// in this module's documentation.
    pub fn from_pytorch(
        config: &TransformerLayerConfig,
        state: &HashMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, PytorchImportError> {
        let state = StateDict::new(state);
        let layer = import_layer(&state, "", config, device)?;
        state.finish()?;
        Ok(layer)
    }
}

impl<B: Backend> TransformerStack<B> {
    /// Builds the stack from the state dict of a PyTorch `nn.TransformerEncoder` or
    /// `nn.TransformerDecoder` (with `norm` when `final_norm` is set).
    pub fn from_pytorch(
        config: &TransformerStackConfig,
        state: &HashMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, PytorchImportError> {
        let state = StateDict::new(state);
        let stack = import_stack(&state, "", config, device)?;
        state.finish()?;
        Ok(stack)
    }
}

impl<B: Backend> Transformer<B> {
    /// Builds the model from the state dict of a PyTorch `nn.Transformer` (whose stacks always
    /// have a final norm: set `final_norm` on both).
    pub fn from_pytorch(
        config: &TransformerConfig,
        state: &HashMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, PytorchImportError> {
        config.validate()?;
        let state = StateDict::new(state);
        let model = Transformer {
            encoder: import_stack(&state, "encoder.", &config.encoder, device)?,
            decoder: import_stack(&state, "decoder.", &config.decoder, device)?,
        };
        state.finish()?;
        Ok(model)
    }
}

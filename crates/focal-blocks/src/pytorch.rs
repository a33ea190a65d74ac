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
use burn::tensor::{TensorData, backend::Backend};
use focal_attention::{MultiHeadAttention, PytorchImportError};
use std::collections::HashMap;

pub use focal_attention::{StateDict, WeightLayout};

/// Reading norms from a [`StateDict`] (the norms live in this crate, the state dict below it).
pub trait NormWeights {
    /// A LayerNorm's `{prefix}.weight` and `{prefix}.bias` into `norm` (which must be a
    /// LayerNorm).
    fn layer_norm<B: Backend>(
        &self,
        prefix: &str,
        norm: Norm<B>,
        d: usize,
    ) -> Result<Norm<B>, PytorchImportError>;
}

impl NormWeights for StateDict<'_> {
    fn layer_norm<B: Backend>(
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
    layer.self_attention =
        MultiHeadAttention::from_state(&config.self_attention(), state, &key("self_attn"), device)?;
    layer.feed_forward.expand = state.linear(&key("linear1"), [d, config.d_ff], device)?;
    layer.feed_forward.contract = state.linear(&key("linear2"), [config.d_ff, d], device)?;
    layer.self_attention_residual.norm =
        state.layer_norm(&key("norm1"), layer.self_attention_residual.norm, d)?;
    match (&mut layer.cross_attention, config.cross_attention()) {
        (Some(cross), Some(cross_config)) => {
            cross.attention = MultiHeadAttention::from_state(
                &cross_config,
                state,
                &key("multihead_attn"),
                device,
            )?;
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

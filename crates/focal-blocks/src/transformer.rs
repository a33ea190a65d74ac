//! The encoder-decoder Transformer.

use crate::{
    LayerKind, StackCache, StackInput, StackOutput, TransformerStack, TransformerStackConfig,
};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use focal_attention::{AttentionMask, FusedAttentionBackend};
use focal_backend::ConfigError;

/// Configuration of [`Transformer`]: an encoder stack and a decoder stack whose cross-attention
/// reads the encoder's width.
#[derive(Config, Debug)]
pub struct TransformerConfig {
    /// The encoder (its layers' kind must be `Encoder`).
    pub encoder: TransformerStackConfig,
    /// The decoder (kind `Decoder`, `d_memory` equal to the encoder's `d_model`).
    pub decoder: TransformerStackConfig,
}

impl TransformerConfig {
    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "TransformerConfig";
        self.encoder.validate()?;
        self.decoder.validate()?;
        let (encoder, decoder) = (&self.encoder.layer, &self.decoder.layer);
        ConfigError::ensure(encoder.kind == LayerKind::Encoder, NAME, || {
            format!(
                "encoder layers must be of kind Encoder, got {:?}",
                encoder.kind
            )
        })?;
        ConfigError::ensure(decoder.kind == LayerKind::Decoder, NAME, || {
            format!(
                "decoder layers must be of kind Decoder, got {:?}",
                decoder.kind
            )
        })?;
        ConfigError::ensure(decoder.d_memory == Some(encoder.d_model), NAME, || {
            format!(
                "the decoder's d_memory ({:?}) must be the encoder's d_model ({})",
                decoder.d_memory, encoder.d_model
            )
        })
    }

    /// Builds the model, or says which value is wrong.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<Transformer<B>, ConfigError> {
        self.validate()?;
        Ok(Transformer {
            encoder: self.encoder.try_init(device)?,
            decoder: self.decoder.try_init(device)?,
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Transformer<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The encoder-decoder Transformer over embedded sequences (PyTorch's `nn.Transformer`).
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// The encoder stack.
    pub encoder: TransformerStack<B>,
    /// The decoder stack.
    pub decoder: TransformerStack<B>,
}

impl<B: FusedAttentionBackend> Transformer<B> {
    /// Encodes the source and decodes the target against it.
    ///
    /// `source_mask` restricts the encoder's self-attention and the decoder's cross-attention
    /// (typically the source's key padding); `target_mask` the decoder's self-attention (its
    /// causal rule is built in).
    ///
    /// # Shapes
    ///
    /// - source `[b, s, d]`, target `[b, l, d]` → `[b, l, d]`
    pub fn forward(
        &self,
        source: Tensor<B, 3>,
        source_mask: AttentionMask<B>,
        target: Tensor<B, 3>,
        target_mask: AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let memory = self.encode(StackInput::new(source).mask(source_mask.clone()));
        self.decoder
            .forward(
                StackInput::new(target)
                    .mask(target_mask)
                    .memory(memory.hidden)
                    .memory_mask(source_mask),
            )
            .hidden
    }

    /// The encoder stack over the source.
    pub fn encode(&self, input: StackInput<B>) -> StackOutput<B> {
        self.encoder.forward(input)
    }

    /// The decoder stack over a target, with the memory (the encoder's output) in the input.
    pub fn decode(&self, input: StackInput<B>) -> StackOutput<B> {
        self.decoder.forward(input)
    }

    /// A decoding cache holding the memory `[b, s, d]`'s cross-attention keys and values,
    /// projected once for every layer.
    pub fn new_cache(&self, memory: Tensor<B, 3>, capacity: usize) -> StackCache<B> {
        let [b, _, _] = memory.dims();
        let device = memory.device();
        self.decoder.new_cache(b, capacity, Some(memory), &device)
    }

    /// Decodes `n` new target positions against the cache (see
    /// [`TransformerStack::forward_cached`]); the input's memory mask is the source's.
    pub fn decode_cached(&self, input: StackInput<B>, cache: &mut StackCache<B>) -> StackOutput<B> {
        self.decoder.forward_cached(input, cache)
    }
}

//! One Transformer layer: encoder, decoder or decoder-only.

use crate::{Activation, FeedForward, FeedForwardConfig};
use crate::{NormConfig, NormKind, NormPlacement, ResidualNorm, ResidualNormConfig};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use focal_attention::{
    AttentionMask, AttentionScales, FusedAttentionBackend, KvCache, MhaInput, MhaOutput,
    MultiHeadAttention, MultiHeadAttentionConfig, ProjectedMemory, RotaryEncodingConfig,
    WeightsMode,
};
use focal_backend::ConfigError;

/// What a layer attends to.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Bidirectional self-attention, then feed-forward (BERT; PyTorch's
    /// `nn.TransformerEncoderLayer`).
    Encoder,
    /// Causal self-attention, cross-attention to a memory (the encoder's output), then
    /// feed-forward (PyTorch's `nn.TransformerDecoderLayer`).
    Decoder,
    /// Causal self-attention, then feed-forward, no cross-attention (GPT).
    DecoderOnly,
}

impl LayerKind {
    /// Whether self-attention is causal.
    pub fn is_causal(self) -> bool {
        self != LayerKind::Encoder
    }
}

/// The hyper-parameters of one Transformer layer (PyTorch's `nn.TransformerEncoderLayer` /
/// `nn.TransformerDecoderLayer` and the modern variants).
#[derive(Config, Debug)]
pub struct TransformerLayerConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Attention heads `h`; must divide `d_model`.
    pub n_heads: usize,
    /// Feed-forward width (see [`FeedForwardConfig::d_ff`]).
    pub d_ff: usize,
    /// Encoder, decoder or decoder-only. Default encoder.
    #[config(default = "LayerKind::Encoder")]
    pub kind: LayerKind,
    /// Width of the memory the decoder's cross-attention reads (the encoder's `d_model`);
    /// required for [`LayerKind::Decoder`], refused for the others. Default none.
    #[config(default = "None")]
    pub d_memory: Option<usize>,
    /// Key/value heads for grouped-query attention (dividing `n_heads`); default `n_heads`.
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// Dropout on attention probabilities, inside the feed-forward, and on each sublayer's output
    /// before the residual addition, unless `attention_dropout` / `feed_forward_dropout` say
    /// otherwise. Default 0.1, as in PyTorch.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Dropout on the attention probabilities (BERT's `attention_probs_dropout_prob`, GPT-2's
    /// `attn_pdrop`). Default `None`: `dropout`, as PyTorch's layers use one rate.
    #[config(default = "None")]
    pub attention_dropout: Option<f64>,
    /// Dropout inside the feed-forward, after the activation. Default `None`: `dropout`, as
    /// PyTorch's `nn.TransformerEncoderLayer`; BERT and GPT-2 have none there (`Some(0.0)`).
    #[config(default = "None")]
    pub feed_forward_dropout: Option<f64>,
    /// Feed-forward activation. Default ReLU.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Gated feed-forward (GEGLU / SwiGLU). Default false.
    #[config(default = false)]
    pub gated: bool,
    /// Pre- or post-norm. Default post-norm, as in PyTorch.
    #[config(default = "NormPlacement::Post")]
    pub norm: NormPlacement,
    /// LayerNorm or RMSNorm. Default LayerNorm.
    #[config(default = "NormKind::LayerNorm")]
    pub norm_kind: NormKind,
    /// Norm epsilon. Default 1e-5.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Biases in the attention projections and the feed-forward. Default true.
    #[config(default = true)]
    pub bias: bool,
    /// Rotary position encoding in self-attention. Default none.
    #[config(default = "None")]
    pub rotary: Option<RotaryEncodingConfig>,
    /// Self-attention window: each query sees itself and the `window - 1` keys before it
    /// (causal kinds, Mistral) or the keys less than `window` away on either side (encoder).
    /// Default none (unlimited).
    #[config(default = "None")]
    pub window: Option<usize>,
    /// Attention without weights takes the memory-efficient path from this many keys on.
    /// Default 1024.
    #[config(default = 1024)]
    pub memory_efficient_from: usize,
    /// Factor on the attention scores `q kᵀ` of self- and cross-attention (see
    /// [`MultiHeadAttentionConfig::scale`]). Default `None`: `1 / sqrt(d_h)`; T5 uses `Some(1.0)`.
    #[config(default = "None")]
    pub attention_scale: Option<f64>,
}

impl TransformerLayerConfig {
    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "TransformerLayerConfig";
        match (self.kind, self.d_memory) {
            (LayerKind::Decoder, None) => {
                return Err(ConfigError::new(
                    NAME,
                    "kind Decoder has cross-attention and needs d_memory (the encoder's width), got none",
                ));
            }
            (LayerKind::Encoder | LayerKind::DecoderOnly, Some(d)) => {
                return Err(ConfigError::new(
                    NAME,
                    format!(
                        "d_memory ({d}) is for cross-attention, which a {:?} layer does not have",
                        self.kind
                    ),
                ));
            }
            (LayerKind::Decoder, Some(d)) => ConfigError::ensure_positive(NAME, "d_memory", d)?,
            _ => {}
        }
        if let Some(window) = self.window {
            ConfigError::ensure_positive(NAME, "window", window)?;
        }
        self.self_attention().validate()?;
        self.feed_forward().validate()?;
        self.residual().validate()
    }

    /// Builds the layer, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<TransformerLayer<B>, ConfigError> {
        self.validate()?;
        Ok(TransformerLayer {
            self_attention: self.self_attention().init(device),
            self_attention_residual: self.residual().init(device),
            cross_attention: self.cross_attention().map(|config| CrossAttention {
                attention: config.init(device),
                residual: self.residual().init(device),
            }),
            feed_forward: self.feed_forward().init(device),
            feed_forward_residual: self.residual().init(device),
            kind: self.kind,
            window: self.window,
        })
    }

    /// Builds the layer.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerLayer<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    fn attention(&self) -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
            .with_n_kv_heads(self.n_kv_heads)
            .with_dropout(self.attention_dropout.unwrap_or(self.dropout))
            .with_bias(self.bias)
            .with_memory_efficient_from(self.memory_efficient_from)
            .with_scale(self.attention_scale)
    }

    /// The self-attention's configuration.
    pub fn self_attention(&self) -> MultiHeadAttentionConfig {
        self.attention().with_rotary(self.rotary.clone())
    }

    /// The cross-attention's configuration (decoder layers).
    pub fn cross_attention(&self) -> Option<MultiHeadAttentionConfig> {
        (self.kind == LayerKind::Decoder).then(|| {
            self.attention()
                .with_kdim(self.d_memory)
                .with_vdim(self.d_memory)
        })
    }

    /// The feed-forward network's configuration.
    pub fn feed_forward(&self) -> FeedForwardConfig {
        FeedForwardConfig::new(self.d_model, self.d_ff)
            .with_activation(self.activation)
            .with_gated(self.gated)
            .with_bias(self.bias)
            .with_dropout(self.feed_forward_dropout.unwrap_or(self.dropout))
    }

    /// The norms' configuration.
    pub fn norm_config(&self) -> NormConfig {
        NormConfig::new(self.d_model)
            .with_kind(self.norm_kind)
            .with_eps(self.norm_eps)
    }

    fn residual(&self) -> ResidualNormConfig {
        ResidualNormConfig::new(self.norm_config())
            .with_placement(self.norm)
            .with_dropout(self.dropout)
    }
}

/// Cross-attention and its residual wiring.
#[derive(Module, Debug)]
pub struct CrossAttention<B: Backend> {
    /// The attention (queries from the layer, keys and values from the memory).
    pub attention: MultiHeadAttention<B>,
    /// Residual wiring and norm around it.
    pub residual: ResidualNorm<B>,
}

/// One Transformer layer: self-attention, cross-attention (decoders), feed-forward, each in a
/// [`ResidualNorm`]; dropout on the attention probabilities, inside the feed-forward after the
/// activation and on each sublayer's output before the residual addition, as PyTorch places it
/// (each rate set apart by [`TransformerLayerConfig`]).
#[derive(Module, Debug)]
pub struct TransformerLayer<B: Backend> {
    /// Self-attention.
    pub self_attention: MultiHeadAttention<B>,
    /// Residual wiring and norm around self-attention.
    pub self_attention_residual: ResidualNorm<B>,
    /// Cross-attention to the memory (decoder layers).
    pub cross_attention: Option<CrossAttention<B>>,
    /// The feed-forward network.
    pub feed_forward: FeedForward<B>,
    /// Residual wiring and norm around the feed-forward network.
    pub feed_forward_residual: ResidualNorm<B>,
    #[module(skip)]
    kind: LayerKind,
    #[module(skip)]
    window: Option<usize>,
}

/// What a layer returns.
#[derive(Clone, Debug)]
pub struct LayerOutput<B: Backend> {
    /// The layer's output `[b, l, d]`.
    pub hidden: Tensor<B, 3>,
    /// Self-attention probabilities `[b, h, l, s]`, when requested.
    pub self_attention: Option<Tensor<B, 4>>,
    /// Cross-attention probabilities `[b, h, l, s_memory]`, when requested (decoders).
    pub cross_attention: Option<Tensor<B, 4>>,
}

/// The decoding state of one layer: its self-attention keys and values so far, and (decoders)
/// the memory's keys and values, projected once.
#[derive(Clone, Debug)]
pub struct LayerCache<B: Backend> {
    pub(crate) self_attention: KvCache<B>,
    pub(crate) memory: Option<ProjectedMemory<B>>,
}

impl<B: Backend> LayerCache<B> {
    /// The self-attention cache.
    pub fn self_attention(&self) -> &KvCache<B> {
        &self.self_attention
    }

    /// Keeps the sequences `rows` of the batch (see [`KvCache::select_batch`]).
    pub fn select_batch(&mut self, rows: &[usize]) {
        self.self_attention.select_batch(rows);
        if let Some(memory) = &mut self.memory {
            memory.select_batch(rows);
        }
    }
}

/// The memory a decoder layer reads, raw or already projected.
enum Memory<'a, B: Backend> {
    Raw(Tensor<B, 3>),
    Projected(&'a ProjectedMemory<B>),
}

impl<B: Backend> TransformerLayer<B> {
    /// Encoder, decoder or decoder-only.
    pub fn kind(&self) -> LayerKind {
        self.kind
    }

    /// The self-attention mask: `mask`, and the causal rule and the window of this layer.
    fn self_mask(&self, mask: &AttentionMask<B>) -> AttentionMask<B> {
        let mut mask = mask.clone();
        if self.kind.is_causal() {
            mask = mask.and(AttentionMask::causal());
        }
        match self.window {
            Some(w) if self.kind.is_causal() => mask.and(AttentionMask::sliding_window(w)),
            Some(w) => mask.and(AttentionMask::bidirectional_window(w)),
            None => mask,
        }
    }
}

impl<B: FusedAttentionBackend> TransformerLayer<B> {
    /// An empty cache for decoding `batch` sequences of up to `capacity` positions; a decoder
    /// layer projects `memory` `[b, s, d_memory]` into it once.
    ///
    /// # Panics
    ///
    /// When a decoder layer gets no memory or another kind gets one.
    pub fn new_cache(
        &self,
        batch: usize,
        capacity: usize,
        memory: Option<Tensor<B, 3>>,
        device: &B::Device,
    ) -> LayerCache<B> {
        let memory = match (&self.cross_attention, memory) {
            (Some(cross), Some(memory)) => Some(cross.attention.project_memory(memory)),
            (None, None) => None,
            (Some(_), None) => panic!("a Decoder layer needs the memory (the encoder's output)"),
            (None, Some(_)) => panic!("a {:?} layer has no cross-attention: no memory", self.kind),
        };
        let mut self_attention = self.self_attention.new_cache(batch, capacity, device);
        if self.window.is_some_and(|w| w <= capacity) && self.kind.is_causal() {
            self_attention = self_attention.rolling();
        }
        LayerCache {
            self_attention,
            memory,
        }
    }

    /// The layer over a whole sequence.
    ///
    /// `mask` restricts self-attention (key padding, additive position biases; the causal rule
    /// of decoder kinds and the window are added here); `memory` is the encoder's output with
    /// its mask (key padding of the source) for decoder layers and `None` otherwise; `weights`
    /// asks for attention probabilities (which takes the plain attention path).
    ///
    /// # Shapes
    ///
    /// - x `[b, l, d]`, memory `[b, s, d_memory]` → hidden `[b, l, d]`
    /// - `mask` fits `[b, h, l, l]`, the memory mask `[b, h, l, s]`
    ///
    /// # Panics
    ///
    /// When a decoder layer gets no memory or another kind gets one, or shapes disagree.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: &AttentionMask<B>,
        memory: Option<(Tensor<B, 3>, &AttentionMask<B>)>,
        weights: WeightsMode,
    ) -> LayerOutput<B> {
        self.forward_scaled(x, mask, memory, weights, AttentionScales::default())
    }

    /// [`Self::forward`] with the self-attention's heads or probabilities multiplied by
    /// `scales` (see [`MhaInput::head_mask`] and [`MhaInput::probability_scale`]).
    pub fn forward_scaled(
        &self,
        x: Tensor<B, 3>,
        mask: &AttentionMask<B>,
        memory: Option<(Tensor<B, 3>, &AttentionMask<B>)>,
        weights: WeightsMode,
        scales: AttentionScales<B>,
    ) -> LayerOutput<B> {
        let self_mask = self.self_mask(mask);
        self.sublayers(
            x,
            |x| {
                self.self_attention.forward(
                    MhaInput::self_attn(x)
                        .mask(self_mask)
                        .weights(weights)
                        .scales(scales),
                )
            },
            memory.map(|(m, mask)| (Memory::Raw(m), mask)),
            weights,
        )
    }

    /// The layer over `n` new positions, attending to the cached ones: equal to the rows of
    /// [`Self::forward`] over the whole sequence. `mask` fits `[b, h, n, len]` where `len` is
    /// the cached length after this step ([`KvCache::len_after`]); `memory_mask` fits
    /// `[b, h, n, s]`.
    ///
    /// # Shapes
    ///
    /// - x `[b, n, d]` → hidden `[b, n, d]`
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        mask: &AttentionMask<B>,
        cache: &mut LayerCache<B>,
        memory_mask: &AttentionMask<B>,
        weights: WeightsMode,
    ) -> LayerOutput<B> {
        let self_mask = self.self_mask(mask);
        let LayerCache {
            self_attention,
            memory,
        } = cache;
        self.sublayers(
            x,
            |x| {
                self.self_attention.forward_cached(
                    MhaInput::self_attn(x).mask(self_mask).weights(weights),
                    self_attention,
                )
            },
            memory.as_ref().map(|m| (Memory::Projected(m), memory_mask)),
            weights,
        )
    }

    /// Self-attention (given), cross-attention, feed-forward, each with its residual wiring.
    fn sublayers(
        &self,
        x: Tensor<B, 3>,
        self_attend: impl FnOnce(Tensor<B, 3>) -> MhaOutput<B>,
        memory: Option<(Memory<'_, B>, &AttentionMask<B>)>,
        weights: WeightsMode,
    ) -> LayerOutput<B> {
        let (x, self_weights) = self.self_attention_residual.forward(x, |x| {
            let out = self_attend(x);
            (out.context, out.weights)
        });
        let (x, cross_weights) = match (&self.cross_attention, memory) {
            (Some(cross), Some((memory, mask))) => cross.residual.forward(x, |x| {
                let out = match memory {
                    Memory::Raw(memory) => cross.attention.forward(
                        MhaInput::cross(x, memory)
                            .mask(mask.clone())
                            .weights(weights),
                    ),
                    Memory::Projected(memory) => {
                        cross
                            .attention
                            .forward_memory(x, memory, mask.clone(), weights)
                    }
                };
                (out.context, out.weights)
            }),
            (None, None) => (x, None),
            (Some(_), None) => panic!("a Decoder layer needs the memory (the encoder's output)"),
            (None, Some(_)) => panic!("a {:?} layer has no cross-attention: no memory", self.kind),
        };
        let (hidden, ()) = self
            .feed_forward_residual
            .forward(x, |x| (self.feed_forward.forward(x), ()));
        LayerOutput {
            hidden,
            self_attention: self_weights,
            cross_attention: cross_weights,
        }
    }
}

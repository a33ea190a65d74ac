//! Multi-head attention: projections around scaled dot-product attention.

use crate::fused::FusedAttentionBackend;
use crate::state_dict::StateDict;
use crate::{
    AttentionInput, AttentionMask, AttentionOutput, KvCache, RotaryEncoding, RotaryEncodingConfig,
    ScaledDotProductAttention, ScaledDotProductAttentionConfig,
};
use burn::config::Config;
use burn::module::Module;
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use focal_backend::ConfigError;
use std::collections::HashMap;

/// Configuration of [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    /// Model width `d`: the width of the query input and of the output.
    pub d_model: usize,
    /// Number of query heads `h`; `d_model` must be divisible by it (`d_h = d_model / h`).
    pub n_heads: usize,
    /// Number of key/value heads `h_kv`, dividing `n_heads`: `n_heads` for standard attention
    /// (the default, `None`), fewer for grouped-query attention, 1 for multi-query attention.
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// Width of the key input (PyTorch's `kdim`). Default `d_model`.
    #[config(default = "None")]
    pub kdim: Option<usize>,
    /// Width of the value input (PyTorch's `vdim`). Default `d_model`.
    #[config(default = "None")]
    pub vdim: Option<usize>,
    /// Dropout on the attention probabilities (after softmax). Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Whether the projections have a bias, unless overridden below. Default true, as in
    /// PyTorch.
    #[config(default = true)]
    pub bias: bool,
    /// Bias of the query projection; `None` (default) follows `bias`.
    #[config(default = "None")]
    pub query_bias: Option<bool>,
    /// Bias of the key projection (Whisper has none); `None` (default) follows `bias`.
    #[config(default = "None")]
    pub key_bias: Option<bool>,
    /// Bias of the value projection; `None` (default) follows `bias`.
    #[config(default = "None")]
    pub value_bias: Option<bool>,
    /// Bias of the output projection; `None` (default) follows `bias`.
    #[config(default = "None")]
    pub output_bias: Option<bool>,
    /// Rotary position encoding of queries and keys (RoPE); its `d_head` must be
    /// `d_model / n_heads`. Default none.
    #[config(default = "None")]
    pub rotary: Option<RotaryEncodingConfig>,
    /// Without weights, attention takes the memory-efficient path from this many keys on (see
    /// [`ScaledDotProductAttentionConfig::memory_efficient_from`]). Default 1024.
    #[config(default = 1024)]
    pub memory_efficient_from: usize,
    /// Factor on the scores `q kᵀ`. Default `None`: `1 / sqrt(d_h)`. T5 uses 1 (its
    /// initialisation folds the scale into the query weights), as does GPT-2 with
    /// `scale_attn_weights = false`; must be finite and positive.
    #[config(default = "None")]
    pub scale: Option<f64>,
}

impl MultiHeadAttentionConfig {
    fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "MultiHeadAttentionConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_positive(NAME, "n_heads", self.n_heads)?;
        ConfigError::ensure(self.d_model.is_multiple_of(self.n_heads), NAME, || {
            format!(
                "d_model ({}) is not divisible by n_heads ({})",
                self.d_model, self.n_heads
            )
        })?;
        ConfigError::ensure_positive(NAME, "n_kv_heads", self.kv_heads())?;
        ConfigError::ensure(self.n_heads.is_multiple_of(self.kv_heads()), NAME, || {
            format!(
                "n_heads ({}) is not divisible by n_kv_heads ({})",
                self.n_heads,
                self.kv_heads()
            )
        })?;
        ConfigError::ensure_positive(NAME, "kdim", self.kdim.unwrap_or(self.d_model))?;
        ConfigError::ensure_positive(NAME, "vdim", self.vdim.unwrap_or(self.d_model))?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)?;
        if let Some(scale) = self.scale {
            ConfigError::ensure(scale.is_finite() && scale > 0.0, NAME, || {
                format!("scale ({scale}) must be finite and positive")
            })?;
        }
        if let Some(rotary) = &self.rotary {
            rotary.validate()?;
            ConfigError::ensure(rotary.d_head == self.head_dim(), NAME, || {
                format!(
                    "rotary.d_head ({}) differs from the head width d_model / n_heads ({} / {} = {})",
                    rotary.d_head,
                    self.d_model,
                    self.n_heads,
                    self.head_dim()
                )
            })?;
        }
        Ok(())
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<MultiHeadAttention<B>, ConfigError> {
        self.validate()?;
        let linear = |d_in: usize, d_out: usize, bias: Option<bool>| {
            LinearConfig::new(d_in, d_out)
                .with_bias(bias.unwrap_or(self.bias))
                .init(device)
        };
        let kv_width = self.kv_heads() * self.head_dim();
        Ok(MultiHeadAttention {
            query: linear(self.d_model, self.d_model, self.query_bias),
            key: linear(self.kdim.unwrap_or(self.d_model), kv_width, self.key_bias),
            value: linear(self.vdim.unwrap_or(self.d_model), kv_width, self.value_bias),
            output: linear(self.d_model, self.d_model, self.output_bias),
            attention: ScaledDotProductAttentionConfig::new()
                .with_dropout(self.dropout)
                .with_memory_efficient_from(self.memory_efficient_from)
                .init(),
            rotary: self.rotary.as_ref().map(|r| r.init(device)),
            n_heads: self.n_heads,
            n_kv_heads: self.kv_heads(),
            scale: self.scale,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid (see [`Self::validate`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadAttention<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Multi-head attention (Vaswani et al., 2017), for self- and cross-attention, with optional
/// grouped-query key/value heads.
///
/// Projects the query to `h` heads and key and value to `h_kv` heads of width
/// `d_h = d / h`, attends with [`ScaledDotProductAttention`] in each head, concatenates the
/// heads and projects back to `d`.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    output: Linear<B>,
    attention: ScaledDotProductAttention,
    rotary: Option<RotaryEncoding<B>>,
    n_heads: usize,
    n_kv_heads: usize,
    /// The factor on `q kᵀ`; `None` for `1 / sqrt(d_h)`.
    #[module(skip)]
    scale: Option<f64>,
}

/// The key and value heads of a memory, projected once by
/// [`MultiHeadAttention::project_memory`].
#[derive(Clone, Debug)]
pub struct ProjectedMemory<B: Backend> {
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
}

impl<B: Backend> ProjectedMemory<B> {
    /// Number of memory positions `s`.
    pub fn len(&self) -> usize {
        self.key.dims()[2]
    }

    /// Whether the memory has no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the sequences `rows` of the batch, in that order (repeats allowed).
    pub fn select_batch(&mut self, rows: &[usize]) {
        (self.key, self.value) =
            crate::kv_cache::select_rows(self.key.clone(), self.value.clone(), rows);
    }
}

/// Which attention weights [`MultiHeadAttention`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightsMode {
    /// None (the default; the cheaper path).
    #[default]
    None,
    /// One `[l, s]` matrix per head: `[b, h, l, s]`.
    PerHead,
    /// The mean over heads: `[b, 1, l, s]` (PyTorch's `average_attn_weights=True`).
    Averaged,
}

/// The input of [`MultiHeadAttention::forward`].
#[derive(Clone, Debug)]
pub struct MhaInput<B: Backend> {
    query: Tensor<B, 3>,
    key: Tensor<B, 3>,
    value: Tensor<B, 3>,
    mask: AttentionMask<B>,
    weights: WeightsMode,
    scales: AttentionScales<B>,
}

impl<B: Backend> MhaInput<B> {
    /// Self-attention: query, key and value are all `x` `[b, l, d]`.
    pub fn self_attn(x: Tensor<B, 3>) -> Self {
        Self::new(x.clone(), x.clone(), x)
    }

    /// Cross-attention: queries `[b, l, d]` attend to `memory` `[b, s, d]` (keys and values).
    pub fn cross(query: Tensor<B, 3>, memory: Tensor<B, 3>) -> Self {
        Self::new(query, memory.clone(), memory)
    }

    /// Separate query `[b, l, d]`, key `[b, s, kdim]` and value `[b, s, vdim]`.
    pub fn new(query: Tensor<B, 3>, key: Tensor<B, 3>, value: Tensor<B, 3>) -> Self {
        Self {
            query,
            key,
            value,
            mask: AttentionMask::none(),
            weights: WeightsMode::None,
            scales: AttentionScales::default(),
        }
    }

    /// Restricts which pairs may attend.
    pub fn mask(mut self, mask: AttentionMask<B>) -> Self {
        self.mask = mask;
        self
    }

    /// Also returns the attention weights, per head or averaged over heads.
    pub fn weights(mut self, mode: WeightsMode) -> Self {
        self.weights = mode;
        self
    }

    /// Scales each head's attention probabilities by `mask` `[b, h]` (Hugging Face's
    /// `head_mask`; Michel et al. 2019): 0 removes a head, and the gradient of a loss with
    /// respect to a mask of ones is each head's importance. Returned weights are scaled too.
    pub fn head_mask(mut self, mask: Tensor<B, 2>) -> Self {
        self.scales.heads = Some(mask);
        self
    }

    /// Multiplies each head's probabilities by `scale` `[b, h, l, s]` (see
    /// [`AttentionInput::probability_scale`]): with ones, its gradient is `P ⊙ ∂loss/∂P`, what
    /// attention × gradient explanations read. Takes the plain attention path.
    pub fn probability_scale(mut self, scale: Tensor<B, 4>) -> Self {
        self.scales.probabilities = Some(scale);
        self
    }

    /// Both multipliers at once ([`Self::head_mask`], [`Self::probability_scale`]).
    pub fn scales(mut self, scales: AttentionScales<B>) -> Self {
        self.scales = scales;
        self
    }
}

/// Multipliers of an attention's heads and probabilities: each head's `[b, h]` (transformers'
/// `head_mask`) and each probability's `[b, h, l, s]`. With ones, their gradients are the heads'
/// importance and `P ⊙ ∂loss/∂P`; see [`MhaInput::head_mask`] and
/// [`MhaInput::probability_scale`].
#[derive(Clone, Debug)]
pub struct AttentionScales<B: Backend> {
    /// `[b, h]`, on each head's output.
    pub heads: Option<Tensor<B, 2>>,
    /// `[b, h, l, s]`, on the probabilities (the plain path).
    pub probabilities: Option<Tensor<B, 4>>,
}

impl<B: Backend> Default for AttentionScales<B> {
    fn default() -> Self {
        Self {
            heads: None,
            probabilities: None,
        }
    }
}

/// The output of [`MultiHeadAttention::forward`].
#[derive(Clone, Debug)]
pub struct MhaOutput<B: Backend> {
    /// The attended values after the output projection, `[b, l, d]`.
    pub context: Tensor<B, 3>,
    /// Attention probabilities: `[b, h, l, s]` per head or `[b, 1, l, s]` averaged, when
    /// requested.
    pub weights: Option<Tensor<B, 4>>,
}

impl<B: FusedAttentionBackend> MultiHeadAttention<B> {
    /// Attends the queries to the keys.
    ///
    /// # Shapes
    ///
    /// - query `[b, l, d]`, key `[b, s, kdim]`, value `[b, s, vdim]`
    /// - context `[b, l, d]`; weights `[b, h, l, s]` or `[b, 1, l, s]`
    ///
    /// # Panics
    ///
    /// When the inputs' shapes disagree with each other, the configured widths, or the mask.
    pub fn forward(&self, input: MhaInput<B>) -> MhaOutput<B> {
        let [b, l, d] = input.query.dims();
        let [kb, s, _] = input.key.dims();
        let [vb, vs, _] = input.value.dims();
        assert!(
            kb == b && [vb, vs] == [b, s],
            "multi-head attention shapes disagree: query {:?} [b, l, d], key {:?} [b, s, kdim], value {:?} [b, s, vdim]",
            input.query.dims(),
            input.key.dims(),
            input.value.dims()
        );
        let (q, k, v) = self.project(input.query, input.key, input.value);
        let (q, k) = (self.rotated(q, 0), self.rotated(k, 0));
        self.attend(
            q,
            k,
            v,
            (input.mask, input.scales),
            input.weights,
            [b, l, d],
        )
    }

    /// Cross-attention to a memory projected once with [`Self::project_memory`]: equal to
    /// `forward(MhaInput::cross(query, memory))`, without projecting the memory again (the
    /// encoder-decoder's decoding steps reuse it).
    ///
    /// # Shapes
    ///
    /// - query `[b, l, d]`; context `[b, l, d]`; weights `[b, h, l, s]` or `[b, 1, l, s]`
    ///
    /// # Panics
    ///
    /// When the query's batch differs from the memory's, or the mask does not fit.
    pub fn forward_memory(
        &self,
        query: Tensor<B, 3>,
        memory: &ProjectedMemory<B>,
        mask: AttentionMask<B>,
        weights: WeightsMode,
    ) -> MhaOutput<B> {
        let [b, l, d] = query.dims();
        let q = split_heads(crate::project(&self.query, query), self.n_heads);
        // As in `forward`: queries rotated from position 0 (the memory's keys were rotated by
        // `project_memory`).
        let q = self.rotated(q, 0);
        self.attend(
            q,
            memory.key.clone(),
            memory.value.clone(),
            (mask, AttentionScales::default()),
            weights,
            [b, l, d],
        )
    }

    /// Scaled dot-product attention over projected heads (each head's output scaled by the
    /// head mask `[b, h]`, if any), then the output projection.
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        (mask, scales): (AttentionMask<B>, AttentionScales<B>),
        weights: WeightsMode,
        dims: [usize; 3],
    ) -> MhaOutput<B> {
        let mut input = AttentionInput::new(q, k, v)
            .mask(mask)
            .need_weights(weights != WeightsMode::None);
        if let Some(scale) = self.scale {
            input = input.scale(scale);
        }
        if let Some(scale) = scales.probabilities {
            input = input.probability_scale(scale);
        }
        let mut attended = self.attention.forward(input);
        if let Some(head_mask) = scales.heads {
            let [b, h] = head_mask.dims();
            assert!(
                [b, h] == [dims[0], self.n_heads],
                "head mask {:?}: expected [b, h] = [{}, {}]",
                [b, h],
                dims[0],
                self.n_heads
            );
            // (m · P) V = m · (P V): scaling a head's output scales its probabilities.
            let scale = head_mask.reshape([b, h, 1, 1]);
            attended.context = attended.context * scale.clone();
            attended.weights = attended.weights.map(|w| w * scale);
        }
        self.merge_heads(attended, weights, dims)
    }

    /// Causal self-attention for incremental decoding: projects only the `n` new positions,
    /// appends their keys and values to `cache`, and attends the new queries to every cached
    /// position. The causal rule is applied (bottom-right aligned, so new positions see the
    /// whole cache and each other causally); `input`'s mask is combined with it and must fit
    /// `[b, h, n, cache.len()]` after the append.
    ///
    /// Decoding a sequence position by position this way gives the same outputs as one causal
    /// pass over it, at a cost per step that grows linearly with the cached length.
    ///
    /// # Shapes
    ///
    /// - input: self-attention on x `[b, n, d]` (query, key and value the same)
    /// - context `[b, n, d]`; weights `[b, h, n, len]`
    ///
    /// # Panics
    ///
    /// As [`Self::forward`], and when the cache's shape does not fit the module.
    pub fn forward_cached(&self, input: MhaInput<B>, cache: &mut KvCache<B>) -> MhaOutput<B> {
        let [b, n, d] = input.query.dims();
        let (q, k, v) = self.project(input.query, input.key, input.value); // n new positions
        let offset = cache.position();
        let (q, k) = (self.rotated(q, offset), self.rotated(k, offset));
        let (k, v) = cache.append(k, v); // [b, h_kv, len, d_h]
        let mut mask = input.mask.and(AttentionMask::causal());
        if cache.is_rolling() {
            // A rolling cache of capacity c is a sliding window of c; a step of several
            // positions holds more keys than its later queries may see.
            mask = mask.and(AttentionMask::sliding_window(cache.capacity()));
        }
        self.attend(q, k, v, (mask, input.scales), input.weights, [b, n, d])
    }

    /// Projects a memory (e.g. the encoder's output) into key and value heads once, for
    /// [`Self::forward_memory`]. With a rotary encoding the keys are rotated from position 0,
    /// as [`Self::forward`] rotates them, so that `forward_memory` equals `forward` on
    /// `MhaInput::cross`.
    ///
    /// # Shapes
    ///
    /// - memory `[b, s, kdim]` (with `kdim == vdim`) → key and value `[b, h_kv, s, d_h]`
    pub fn project_memory(&self, memory: Tensor<B, 3>) -> ProjectedMemory<B> {
        // Through the backend's linear kernel, as `forward`'s projections.
        let key = split_heads(crate::project(&self.key, memory.clone()), self.n_kv_heads);
        ProjectedMemory {
            key: self.rotated(key, 0),
            value: split_heads(crate::project(&self.value, memory), self.n_kv_heads),
        }
    }

    /// Projects and splits into heads: query `[b, l, d]` → `[b, h, l, d_h]`, key
    /// `[b, s, kdim]` and value `[b, s, vdim]` → `[b, h_kv, s, d_h]`.
    fn project(
        &self,
        query: Tensor<B, 3>,
        key: Tensor<B, 3>,
        value: Tensor<B, 3>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        (
            split_heads(crate::project(&self.query, query), self.n_heads),
            split_heads(crate::project(&self.key, key), self.n_kv_heads),
            split_heads(crate::project(&self.value, value), self.n_kv_heads),
        )
    }

    /// Concatenates the heads `[b, h, l, d_h]` → `[b, l, d]`, projects them, and shapes the
    /// weights as requested.
    fn merge_heads(
        &self,
        attended: AttentionOutput<B>,
        mode: WeightsMode,
        [b, l, d]: [usize; 3],
    ) -> MhaOutput<B> {
        let context = B::merge_heads(attended.context); // [b, l, d]
        debug_assert_eq!(context.dims(), [b, l, d]);
        let weights = match mode {
            WeightsMode::None => None,
            WeightsMode::PerHead => attended.weights,
            WeightsMode::Averaged => attended.weights.map(|w| w.mean_dim(1)),
        };
        MhaOutput {
            context: crate::project(&self.output, context),
            weights,
        }
    }
}

impl<B: Backend> MultiHeadAttention<B> {
    /// Number of heads `h`.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// The query, key, value and output projections, in that order.
    pub fn projections(&self) -> [&Linear<B>; 4] {
        [&self.query, &self.key, &self.value, &self.output]
    }

    /// Applies the rotary encoding, if any, to heads `[b, heads, n, d_h]` (queries or keys)
    /// whose first row sits at position `offset`.
    fn rotated(&self, x: Tensor<B, 4>, offset: usize) -> Tensor<B, 4> {
        match &self.rotary {
            Some(rope) => rope.forward(x, offset),
            None => x,
        }
    }

    /// An empty [`KvCache`] sized for this module: `batch` sequences, `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize, device: &B::Device) -> KvCache<B> {
        let [_, d] = self.query.weight.dims();
        let d_h = d / self.n_heads;
        KvCache::new(batch, self.n_kv_heads, capacity, d_h, d_h, device)
    }

    /// Builds the module from the state dict of a PyTorch `nn.MultiheadAttention`, given as
    /// its keys and tensors: `in_proj_weight` (packed `[3d, d]`, split into query, key and
    /// value) or `q_proj_weight` / `k_proj_weight` / `v_proj_weight` (when `kdim` or `vdim`
    /// differ from `d`), `in_proj_bias` (packed), `out_proj.weight`, `out_proj.bias`. PyTorch
    /// stores linear weights as `[out, in]`; they are transposed to burn's `[in, out]`.
    ///
    /// Every tensor the configuration needs must be present with the right shape, and every
    /// tensor given must be used; otherwise the error names the key and both shapes.
    pub fn from_pytorch(
        config: &MultiHeadAttentionConfig,
        state: &HashMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, PytorchImportError> {
        let state = StateDict::new(state);
        let attention = Self::from_state(config, &state, "", device)?;
        state.finish()?;
        Ok(attention)
    }

    /// As [`Self::from_pytorch`], reading the module's tensors under `prefix` (e.g.
    /// `layers.0.self_attn`; empty for none) of a larger state dict, which then records them as
    /// used.
    pub fn from_state(
        config: &MultiHeadAttentionConfig,
        state: &StateDict<'_>,
        prefix: &str,
        device: &B::Device,
    ) -> Result<Self, PytorchImportError> {
        config.validate()?;
        if config.kv_heads() != config.n_heads {
            return Err(PytorchImportError::Unsupported(format!(
                "nn.MultiheadAttention has no grouped-query attention (n_kv_heads {} != n_heads {})",
                config.kv_heads(),
                config.n_heads
            )));
        }
        let overrides = [
            config.query_bias,
            config.key_bias,
            config.value_bias,
            config.output_bias,
        ];
        if overrides.iter().flatten().any(|&b| b != config.bias) {
            return Err(PytorchImportError::Unsupported(
                "nn.MultiheadAttention has one bias switch for all projections; per-projection biases differ".to_string(),
            ));
        }
        let d = config.d_model;
        let (kdim, vdim) = (config.kdim.unwrap_or(d), config.vdim.unwrap_or(d));
        let key = |name: &str| crate::state_dict::join(prefix, name);
        let take2 = |name: &str, shape| state.tensor::<B, 2>(&key(name), shape, device);
        let take1 = |name: &str, shape| state.tensor::<B, 1>(&key(name), shape, device);

        let packed = kdim == d && vdim == d;
        let (wq, wk, wv) = if packed {
            let w = take2("in_proj_weight", [3 * d, d])?;
            (
                w.clone().slice([0..d, 0..d]),
                w.clone().slice([d..2 * d, 0..d]),
                w.slice([2 * d..3 * d, 0..d]),
            )
        } else {
            (
                take2("q_proj_weight", [d, d])?,
                take2("k_proj_weight", [d, kdim])?,
                take2("v_proj_weight", [d, vdim])?,
            )
        };
        let wo = take2("out_proj.weight", [d, d])?;
        let (bq, bk, bv, bo) = if config.bias {
            let b_in = take1("in_proj_bias", [3 * d])?;
            (
                Some(b_in.clone().narrow(0, 0, d)),
                Some(b_in.clone().narrow(0, d, d)),
                Some(b_in.narrow(0, 2 * d, d)),
                Some(take1("out_proj.bias", [d])?),
            )
        } else {
            (None, None, None, None)
        };
        let linear = |w: Tensor<B, 2>, b: Option<Tensor<B, 1>>| Linear {
            weight: Param::from_tensor(w.transpose()), // [out, in] -> [in, out]
            bias: b.map(Param::from_tensor),
        };
        Self::from_projections(
            config,
            [
                linear(wq, bq),
                linear(wk, bk),
                linear(wv, bv),
                linear(wo, bo),
            ],
            device,
        )
    }

    /// Builds the module around given query, key, value and output projections (burn's `[in,
    /// out]` layout), e.g. weights read from a checkpoint. Each projection's weight shape and
    /// bias presence must be what the configuration implies; the error names the projection.
    pub fn from_projections(
        config: &MultiHeadAttentionConfig,
        [query, key, value, output]: [Linear<B>; 4],
        device: &B::Device,
    ) -> Result<Self, PytorchImportError> {
        // Everything but the projections as `init` builds it; burn initialises parameters
        // lazily, so the replaced ones are never computed.
        let built = config.try_init(device)?;
        for (name, given, expected) in [
            ("query", &query, &built.query),
            ("key", &key, &built.key),
            ("value", &value, &built.value),
            ("output", &output, &built.output),
        ] {
            let (found, want) = (
                given.weight.dims().to_vec(),
                expected.weight.dims().to_vec(),
            );
            if found != want {
                return Err(PytorchImportError::Shape {
                    key: format!("{name} projection weight ([in, out])"),
                    expected: want,
                    found,
                });
            }
            if given.bias.is_some() != expected.bias.is_some() {
                return Err(PytorchImportError::Unsupported(format!(
                    "the {name} projection {} a bias, the configuration {}",
                    if given.bias.is_some() {
                        "has"
                    } else {
                        "has no"
                    },
                    if expected.bias.is_some() {
                        "wants one"
                    } else {
                        "none"
                    }
                )));
            }
        }
        Ok(Self {
            query,
            key,
            value,
            output,
            ..built
        })
    }
}

/// `[b, n, heads · d_h]` → `[b, heads, n, d_h]`.
fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, width] = x.dims();
    x.reshape([b, n, heads, width / heads]) // [b, n, heads, d_h]
        .swap_dims(1, 2) // [b, heads, n, d_h]
}

/// Why PyTorch `nn.MultiheadAttention` weights could not be imported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PytorchImportError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration has no PyTorch counterpart.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A tensor the configuration needs is absent.
    #[error("missing tensor '{0}'")]
    Missing(String),
    /// A tensor has the wrong shape.
    #[error("tensor '{key}' has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The state-dict key.
        key: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// Tensors were given that the configuration does not use.
    #[error("unexpected tensors: {}", .0.join(", "))]
    Unexpected(Vec<String>),
    /// A tensor's elements are not floating point.
    #[error(
        "tensor '{key}' holds {found} values; weights must be floating point (F32, or F64, F16 and BF16, converted)"
    )]
    DType {
        /// The state-dict key.
        key: String,
        /// The element type found.
        found: String,
    },
    /// A tensor holds NaN or an infinity.
    #[error(
        "tensor '{key}' holds a non-finite value ({value} at element {index}); the checkpoint is corrupt or was saved after training diverged"
    )]
    NonFinite {
        /// The state-dict key.
        key: String,
        /// The first such element (row-major).
        index: usize,
        /// Its value.
        value: f32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FusedAttentionBackend;
    use crate::padding_mask_from_lengths;
    use burn::tensor::Distribution;
    use focal_backend::assert_close;

    fn config() -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(16, 4)
    }

    /// Per-head weights are a distribution, and their mean is what `Averaged` returns.
    fn weights_per_head_and_averaged<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 10);
        let mha = config().init::<B>(device);
        let x = Tensor::<B, 3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), device);
        let per_head = mha
            .forward(MhaInput::self_attn(x.clone()).weights(WeightsMode::PerHead))
            .weights
            .unwrap();
        assert_eq!(per_head.dims(), [2, 4, 5, 5]);
        assert_close(
            per_head.clone().sum_dim(3),
            Tensor::ones([2, 4, 5, 1], device),
            1e-5,
        );
        let averaged = mha
            .forward(MhaInput::self_attn(x).weights(WeightsMode::Averaged))
            .weights
            .unwrap();
        assert_close(averaged, per_head.mean_dim(1), 1e-6);
    }

    /// Cross-attention: changing padded memory positions changes nothing.
    fn cross_attention_padding_invariance<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 11);
        let mha = config().init::<B>(device);
        let n = Distribution::Normal(0.0, 1.0);
        let query = Tensor::<B, 3>::random([2, 3, 16], n, device);
        let memory = Tensor::<B, 3>::random([2, 6, 16], n, device);
        let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[6, 2], 6, device));
        let out = mha.forward(MhaInput::cross(query.clone(), memory.clone()).mask(mask.clone()));
        let noise = Tensor::<B, 3>::random([1, 4, 16], Distribution::Normal(0.0, 5.0), device);
        let memory2 = memory.slice_assign([1..2, 2..6, 0..16], noise);
        let out2 = mha.forward(MhaInput::cross(query, memory2).mask(mask));
        assert_close(out.context, out2.context, 1e-5);
    }

    /// Causal self-attention: the outputs of a prefix do not depend on later positions.
    fn causal_self_attention_ignores_the_future<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 12);
        let mha = config().init::<B>(device);
        let x = Tensor::<B, 3>::random([1, 6, 16], Distribution::Normal(0.0, 1.0), device);
        let full = mha.forward(MhaInput::self_attn(x.clone()).mask(AttentionMask::causal()));
        let prefix = mha.forward(
            MhaInput::self_attn(x.slice([0..1, 0..4, 0..16])).mask(AttentionMask::causal()),
        );
        assert_close(
            full.context.slice([0..1, 0..4, 0..16]),
            prefix.context,
            1e-5,
        );
    }

    /// Decoding position by position with the cache equals one causal pass, at every step.
    fn cached_decoding_equals_the_full_pass<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 13);
        // Without and with rotary positions (applied at each step's absolute position).
        for rotary in [None, Some(RotaryEncodingConfig::new(4).with_max_len(16))] {
            let mha = MultiHeadAttentionConfig::new(16, 4)
                .with_n_kv_heads(Some(2))
                .with_rotary(rotary)
                .init::<B>(device);
            let x = Tensor::<B, 3>::random([2, 7, 16], Distribution::Normal(0.0, 1.0), device);
            let full = mha
                .forward(MhaInput::self_attn(x.clone()).mask(AttentionMask::causal()))
                .context;
            let mut cache = mha.new_cache(2, 8, device);
            // A prompt of 3 positions at once, then one position per step.
            let prompt = mha.forward_cached(
                MhaInput::self_attn(x.clone().slice([0..2, 0..3, 0..16])),
                &mut cache,
            );
            assert_close(
                prompt.context,
                full.clone().slice([0..2, 0..3, 0..16]),
                1e-5,
            );
            for t in 3..7 {
                let step = mha.forward_cached(
                    MhaInput::self_attn(x.clone().slice([0..2, t..t + 1, 0..16])),
                    &mut cache,
                );
                assert_close(
                    step.context,
                    full.clone().slice([0..2, t..t + 1, 0..16]),
                    1e-5,
                );
            }
            assert_eq!((cache.len(), cache.position()), (7, 7));
        }
    }

    /// Cross-attention to a memory projected once equals cross-attention to the memory,
    /// without and with rotary positions (rotated from position 0 in both).
    fn projected_memory_equals_cross_attention<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 16);
        for rotary in [None, Some(RotaryEncodingConfig::new(4).with_max_len(16))] {
            let mha = MultiHeadAttentionConfig::new(16, 4)
                .with_kdim(Some(6))
                .with_vdim(Some(6))
                .with_rotary(rotary)
                .init::<B>(device);
            let n = Distribution::Normal(0.0, 1.0);
            let query = Tensor::<B, 3>::random([2, 3, 16], n, device);
            let memory = Tensor::<B, 3>::random([2, 5, 6], n, device);
            let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[5, 2], 5, device));
            let direct = mha.forward(
                MhaInput::cross(query.clone(), memory.clone())
                    .mask(mask.clone())
                    .weights(WeightsMode::PerHead),
            );
            let projected = mha.project_memory(memory);
            assert_eq!(projected.len(), 5);
            let reused = mha.forward_memory(query, &projected, mask, WeightsMode::PerHead);
            assert_close(reused.context, direct.context, 1e-6);
            assert_close(reused.weights.unwrap(), direct.weights.unwrap(), 1e-6);
        }
    }

    /// A custom scale multiplies `q kᵀ`: scale 1 with the query projection halved equals the
    /// default `1 / sqrt(d_h) = 1 / 2` (d_h = 4), on the kernel path and with weights.
    fn a_custom_scale_replaces_the_default<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 17);
        // Parameters initialise lazily: fix their values before sharing them between modules.
        let fixed = |linear: &Linear<B>, factor: f64| Linear {
            weight: Param::from_tensor(linear.weight.val().mul_scalar(factor)),
            bias: linear
                .bias
                .as_ref()
                .map(|b| Param::from_tensor(b.val().mul_scalar(factor))),
        };
        let built = config().init::<B>(device);
        let default = MultiHeadAttention {
            query: fixed(&built.query, 1.0),
            key: fixed(&built.key, 1.0),
            value: fixed(&built.value, 1.0),
            output: fixed(&built.output, 1.0),
            ..built
        };
        let unscaled = MultiHeadAttention {
            query: fixed(&default.query, 0.5),
            scale: Some(1.0),
            ..default.clone()
        };
        let x = Tensor::<B, 3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), device);
        for weights in [WeightsMode::None, WeightsMode::PerHead] {
            let input = MhaInput::self_attn(x.clone())
                .mask(AttentionMask::causal())
                .weights(weights);
            let (a, b) = (default.forward(input.clone()), unscaled.forward(input));
            assert_close(a.context, b.context, 1e-5);
        }
        // Without the halved weights, the unscaled scores differ.
        let plain_unscaled = MultiHeadAttention {
            scale: Some(1.0),
            ..default.clone()
        };
        let diff = (default.forward(MhaInput::self_attn(x.clone())).context
            - plain_unscaled.forward(MhaInput::self_attn(x)).context)
            .abs()
            .max()
            .into_scalar();
        assert!(burn::tensor::ElementConversion::elem::<f32>(diff) > 1e-3);
    }

    /// A rolling cache of 3 positions equals one pass with a causal sliding window of 3, one
    /// position per step and, once the cache is full, steps of 2 and 3 positions (whose first
    /// queries need keys from before the step).
    fn rolling_cache_equals_a_sliding_window<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 14);
        let mha = config().init::<B>(device);
        let x = Tensor::<B, 3>::random([1, 12, 16], Distribution::Normal(0.0, 1.0), device);
        let full = mha
            .forward(MhaInput::self_attn(x.clone()).mask(AttentionMask::sliding_window(3)))
            .context;
        let mut cache = mha.new_cache(1, 3, device).rolling();
        let mut t = 0;
        for n in [1, 1, 1, 1, 2, 1, 3] {
            assert_eq!(cache.len_after(n), if t + n <= 3 { t + n } else { 2 + n });
            let step = mha.forward_cached(
                MhaInput::self_attn(x.clone().slice([0..1, t..t + n, 0..16])),
                &mut cache,
            );
            assert_close(
                step.context,
                full.clone().slice([0..1, t..t + n, 0..16]),
                1e-5,
            );
            t += n;
        }
        assert_eq!((cache.len(), cache.position()), (3, 10));
    }

    focal_backend::backend_tests!(
        cached_decoding_equals_the_full_pass,
        projected_memory_equals_cross_attention,
        a_custom_scale_replaces_the_default,
        rolling_cache_equals_a_sliding_window,
        weights_per_head_and_averaged,
        cross_attention_padding_invariance,
        causal_self_attention_ignores_the_future
    );

    #[test]
    fn indivisible_width_is_refused_with_values() {
        let err = MultiHeadAttentionConfig::new(100, 8)
            .try_init::<focal_backend::NdArray>(&Default::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid MultiHeadAttentionConfig: d_model (100) is not divisible by n_heads (8)"
        );
    }

    #[test]
    #[should_panic(expected = "KvCache overflow: 2 cached + 1 new positions exceed the capacity 2")]
    fn full_cache_without_rolling_window_panics_with_its_sizes() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        let mha = config().init::<B>(&device);
        let mut cache = mha.new_cache(1, 2, &device);
        for _ in 0..3 {
            mha.forward_cached(
                MhaInput::self_attn(Tensor::zeros([1, 1, 16], &device)),
                &mut cache,
            );
        }
    }

    #[test]
    fn biases_can_be_switched_per_projection() {
        type B = focal_backend::NdArray;
        let mha = MultiHeadAttentionConfig::new(8, 2)
            .with_key_bias(Some(false))
            .init::<B>(&Default::default());
        assert!(mha.query.bias.is_some() && mha.value.bias.is_some() && mha.output.bias.is_some());
        assert!(mha.key.bias.is_none());
        let mha = MultiHeadAttentionConfig::new(8, 2)
            .with_bias(false)
            .with_output_bias(Some(true))
            .init::<B>(&Default::default());
        assert!(mha.query.bias.is_none() && mha.output.bias.is_some());
    }

    #[test]
    fn a_scale_that_is_not_finite_and_positive_is_refused() {
        for (scale, shown) in [(0.0, "0"), (-1.0, "-1"), (f64::NAN, "NaN")] {
            let err = config().with_scale(Some(scale)).validate().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid MultiHeadAttentionConfig: scale ({shown}) must be finite and positive"
                )
            );
        }
    }

    #[test]
    fn kv_heads_must_divide_heads() {
        let err = MultiHeadAttentionConfig::new(24, 6)
            .with_n_kv_heads(Some(4))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid MultiHeadAttentionConfig: n_heads (6) is not divisible by n_kv_heads (4)"
        );
    }

    #[test]
    fn pytorch_import_names_missing_misshaped_and_unexpected_tensors() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        let config = MultiHeadAttentionConfig::new(4, 2);
        let zeros =
            |shape: &[usize]| TensorData::new(vec![0f32; shape.iter().product()], shape.to_vec());
        let mut state: HashMap<String, TensorData> = [
            ("in_proj_weight", zeros(&[12, 4])),
            ("in_proj_bias", zeros(&[12])),
            ("out_proj.weight", zeros(&[4, 4])),
            ("out_proj.bias", zeros(&[4])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert!(MultiHeadAttention::<B>::from_pytorch(&config, &state, &device).is_ok());

        state.insert("extra".into(), zeros(&[1]));
        let err = MultiHeadAttention::<B>::from_pytorch(&config, &state, &device).unwrap_err();
        assert_eq!(err.to_string(), "unexpected tensors: extra");
        state.remove("extra");

        state.insert("out_proj.weight".into(), zeros(&[4, 5]));
        let err = MultiHeadAttention::<B>::from_pytorch(&config, &state, &device).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor 'out_proj.weight' has shape [4, 5], expected [4, 4]"
        );

        state.remove("in_proj_bias");
        let no_bias = config.clone().with_bias(false);
        let err = MultiHeadAttention::<B>::from_pytorch(&no_bias, &state, &device).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor 'out_proj.weight' has shape [4, 5], expected [4, 4]"
        );
        let err = MultiHeadAttention::<B>::from_pytorch(&config, &state, &device).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor 'out_proj.weight' has shape [4, 5], expected [4, 4]"
        );
        state.insert("out_proj.weight".into(), zeros(&[4, 4]));
        let err = MultiHeadAttention::<B>::from_pytorch(&config, &state, &device).unwrap_err();
        assert_eq!(err, PytorchImportError::Missing("in_proj_bias".into()));
    }

    #[test]
    #[should_panic(expected = "d_model (10) is not divisible by n_heads (4)")]
    fn init_panics_with_the_same_message() {
        MultiHeadAttentionConfig::new(10, 4).init::<focal_backend::NdArray>(&Default::default());
    }
}

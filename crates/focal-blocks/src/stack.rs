//! Stacks of layers: encoder, decoder and decoder-only.

use crate::{
    AttentionScales, LayerCache, LayerKind, Norm, TransformerLayer, TransformerLayerConfig,
};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use focal_attention::{
    AttentionMask, FusedAttentionBackend, RelativePositionBias, RelativePositionBiasConfig,
    WeightsMode, alibi_bias,
};
use focal_backend::ConfigError;

/// Configuration of [`TransformerStack`].
#[derive(Config, Debug)]
pub struct TransformerStackConfig {
    /// Every layer's configuration (its `kind` makes the stack an encoder, a decoder or a
    /// decoder-only stack).
    pub layer: TransformerLayerConfig,
    /// Number of layers.
    pub n_layers: usize,
    /// A norm after the last layer (needed with pre-norm; PyTorch's `nn.Transformer` always has
    /// one). Default false.
    #[config(default = false)]
    pub final_norm: bool,
    /// ALiBi biases on self-attention (Press et al., slopes for any head count). Default false.
    #[config(default = false)]
    pub alibi: bool,
    /// T5's learned, bucketed relative position bias on self-attention, one table shared by all
    /// layers (its `n_heads` must be the layers'). Default none.
    #[config(default = "None")]
    pub relative_bias: Option<RelativePositionBiasConfig>,
}

impl TransformerStackConfig {
    /// An encoder stack: bidirectional self-attention.
    pub fn encoder(layer: TransformerLayerConfig, n_layers: usize) -> Self {
        Self::new(layer.with_kind(LayerKind::Encoder), n_layers)
    }

    /// A decoder stack: causal self-attention and cross-attention to a memory of width
    /// `d_memory` (the encoder's `d_model`).
    pub fn decoder(layer: TransformerLayerConfig, d_memory: usize, n_layers: usize) -> Self {
        let layer = layer
            .with_kind(LayerKind::Decoder)
            .with_d_memory(Some(d_memory));
        Self::new(layer, n_layers)
    }

    /// A decoder-only stack (GPT): causal self-attention, no cross-attention.
    pub fn decoder_only(layer: TransformerLayerConfig, n_layers: usize) -> Self {
        Self::new(layer.with_kind(LayerKind::DecoderOnly), n_layers)
    }

    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "TransformerStackConfig";
        ConfigError::ensure_positive(NAME, "n_layers", self.n_layers)?;
        self.layer.validate()?;
        // At least the projections (4·d²) and the feed-forward (2·d·d_ff) of every layer.
        let (d, d_ff) = (self.layer.d_model, self.layer.d_ff);
        let per_layer = focal_backend::checked_product(&[4, d, d]).and_then(|attention| {
            attention.checked_add(focal_backend::checked_product(&[2, d, d_ff])?)
        });
        ConfigError::ensure_fits(
            NAME,
            &format!(
                "the weights of {} layers (d_model {d}, d_ff {d_ff})",
                self.n_layers
            ),
            per_layer.and_then(|p| p.checked_mul(self.n_layers as u128)),
        )?;
        if let Some(relative) = &self.relative_bias {
            ConfigError::ensure(!self.alibi, NAME, || {
                "alibi and relative_bias are two position biases; choose one".to_string()
            })?;
            ConfigError::ensure(relative.n_heads == self.layer.n_heads, NAME, || {
                format!(
                    "relative_bias.n_heads ({}) differs from the layers' n_heads ({})",
                    relative.n_heads, self.layer.n_heads
                )
            })?;
            relative.validate()?;
        }
        Ok(())
    }

    /// Builds the stack, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<TransformerStack<B>, ConfigError> {
        self.validate()?;
        Ok(TransformerStack {
            layers: (0..self.n_layers)
                .map(|_| self.layer.init(device))
                .collect(),
            final_norm: self
                .final_norm
                .then(|| self.layer.norm_config().init(device)),
            relative_bias: self.relative_bias.as_ref().map(|c| c.init(device)),
            alibi: self.alibi,
            n_heads: self.layer.n_heads,
            kind: self.layer.kind,
        })
    }

    /// Builds the stack.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerStack<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A stack of [`TransformerLayer`]s of one kind, with an optional final norm and an optional
/// position bias shared by the layers.
#[derive(Module, Debug)]
pub struct TransformerStack<B: Backend> {
    /// The layers, first first.
    pub layers: Vec<TransformerLayer<B>>,
    /// The norm after the last layer.
    pub final_norm: Option<Norm<B>>,
    /// T5's relative position bias, shared by the layers.
    pub relative_bias: Option<RelativePositionBias<B>>,
    alibi: bool,
    n_heads: usize,
    #[module(skip)]
    kind: LayerKind,
}

/// The input of [`TransformerStack::forward`] and [`TransformerStack::forward_cached`].
#[derive(Clone, Debug)]
pub struct StackInput<B: Backend> {
    x: Tensor<B, 3>,
    mask: AttentionMask<B>,
    memory: Option<Tensor<B, 3>>,
    memory_mask: AttentionMask<B>,
    hidden_states: bool,
    attentions: bool,
    head_mask: Option<Tensor<B, 3>>,
    probability_scales: Option<Vec<Tensor<B, 4>>>,
}

impl<B: Backend> StackInput<B> {
    /// The embedded sequence `[b, l, d]`; no mask, no memory, no per-layer outputs.
    pub fn new(x: Tensor<B, 3>) -> Self {
        Self {
            x,
            mask: AttentionMask::none(),
            memory: None,
            memory_mask: AttentionMask::none(),
            hidden_states: false,
            attentions: false,
            head_mask: None,
            probability_scales: None,
        }
    }

    /// Restricts self-attention (typically the key padding of `x`); decoder kinds add the
    /// causal rule themselves.
    pub fn mask(mut self, mask: AttentionMask<B>) -> Self {
        self.mask = mask;
        self
    }

    /// The memory `[b, s, d_memory]` that a decoder stack cross-attends to (the encoder's
    /// output). With cached decoding the memory is projected once into the cache instead.
    pub fn memory(mut self, memory: Tensor<B, 3>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Restricts cross-attention (typically the key padding of the source).
    pub fn memory_mask(mut self, mask: AttentionMask<B>) -> Self {
        self.memory_mask = mask;
        self
    }

    /// Also return each layer's output (Hugging Face's `output_hidden_states`).
    pub fn output_hidden_states(mut self, on: bool) -> Self {
        self.hidden_states = on;
        self
    }

    /// Also return each layer's attention probabilities per head (Hugging Face's
    /// `output_attentions`); this takes the plain attention path, which materialises them.
    pub fn output_attentions(mut self, on: bool) -> Self {
        self.attentions = on;
        self
    }

    /// Scales each layer's self-attention heads by `mask` `[b, layers, heads]` (Hugging Face's
    /// `head_mask`, per sequence): 0 removes a head, and the gradient of a loss with respect
    /// to a mask of ones is each head's importance (Michel et al. 2019). Whole-sequence
    /// passes only: [`TransformerStack::forward_cached`] refuses it.
    pub fn head_mask(mut self, mask: Tensor<B, 3>) -> Self {
        self.head_mask = Some(mask);
        self
    }

    /// Multiplies each layer's self-attention probabilities by its scale `[b, h, l, l]`, one a
    /// layer, first layer first (see `MhaInput::probability_scale`): with ones, their
    /// gradients are each layer's `P ⊙ ∂loss/∂P` (attention × gradient, Chefer et al. 2021).
    /// Takes the plain attention path; whole-sequence passes only.
    pub fn probability_scales(mut self, scales: Vec<Tensor<B, 4>>) -> Self {
        self.probability_scales = Some(scales);
        self
    }
}

/// What a stack returns. The per-layer lists are `None` unless requested, and cost nothing then.
#[derive(Clone, Debug)]
pub struct StackOutput<B: Backend> {
    /// The last layer's output, after the final norm if any: `[b, l, d]`.
    pub hidden: Tensor<B, 3>,
    /// Each layer's output `[b, l, d]`, first layer first (before the final norm); `n_layers`
    /// entries.
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
    /// Each layer's self-attention probabilities `[b, h, l, s]`.
    pub self_attentions: Option<Vec<Tensor<B, 4>>>,
    /// Each decoder layer's cross-attention probabilities `[b, h, l, s_memory]`.
    pub cross_attentions: Option<Vec<Tensor<B, 4>>>,
}

/// The decoding state of a stack: one [`LayerCache`] per layer.
#[derive(Clone, Debug)]
pub struct StackCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
}

impl<B: Backend> StackCache<B> {
    /// Positions cached so far (the same in every layer).
    pub fn len(&self) -> usize {
        self.layers[0].self_attention().len()
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions decoded so far, evicted ones included: the position of the next token.
    pub fn position(&self) -> usize {
        self.layers[0].self_attention().position()
    }

    /// The cache of each layer.
    pub fn layers(&self) -> &[LayerCache<B>] {
        &self.layers
    }

    /// Keeps the sequences `rows` of the batch, in that order (repeats allowed), in every layer
    /// (the memory too): beam search reorders its hypotheses this way.
    pub fn select_batch(&mut self, rows: &[usize]) {
        for layer in &mut self.layers {
            layer.select_batch(rows);
        }
    }
}

impl<B: Backend> TransformerStack<B> {
    /// The layers.
    pub fn layers(&self) -> &[TransformerLayer<B>] {
        &self.layers
    }

    /// Encoder, decoder or decoder-only.
    pub fn kind(&self) -> LayerKind {
        self.kind
    }

    /// `mask` and the stack's position bias for `l` queries against `s` keys.
    fn self_mask(
        &self,
        mask: AttentionMask<B>,
        l: usize,
        s: usize,
        device: &B::Device,
    ) -> AttentionMask<B> {
        let bias = match &self.relative_bias {
            Some(relative) => Some(relative.forward(l, s, device)),
            None if self.alibi => Some(alibi_bias(self.n_heads, l, s, device)),
            None => None,
        };
        match bias {
            Some(bias) => mask.and(AttentionMask::additive(bias)),
            None => mask,
        }
    }
}

impl<B: FusedAttentionBackend> TransformerStack<B> {
    /// An empty cache for decoding `batch` sequences of up to `capacity` positions; a decoder
    /// stack projects `memory` `[b, s, d_memory]` into every layer's cache once, so decoding
    /// steps never project it again.
    ///
    /// # Panics
    ///
    /// When a decoder stack gets no memory or another kind gets one.
    pub fn new_cache(
        &self,
        batch: usize,
        capacity: usize,
        memory: Option<Tensor<B, 3>>,
        device: &B::Device,
    ) -> StackCache<B> {
        StackCache {
            layers: self
                .layers
                .iter()
                .map(|layer| layer.new_cache(batch, capacity, memory.clone(), device))
                .collect(),
        }
    }

    fn finish(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.final_norm {
            Some(norm) => norm.forward(hidden),
            None => hidden,
        }
    }

    /// The stack over a whole sequence.
    ///
    /// # Shapes
    ///
    /// - x `[b, l, d]`, memory `[b, s, d_memory]` → hidden `[b, l, d]`
    /// - the mask fits `[b, h, l, l]`, the memory mask `[b, h, l, s]`
    ///
    /// # Panics
    ///
    /// When a decoder stack gets no memory or another kind gets one, or shapes disagree.
    pub fn forward(&self, input: StackInput<B>) -> StackOutput<B> {
        let [_, l, _] = input.x.dims();
        let device = input.x.device();
        let mask = self.self_mask(input.mask, l, l, &device);
        let memory_mask = input.memory_mask;
        let memory = input.memory;
        let head_mask = input.head_mask;
        if let Some(head_mask) = &head_mask {
            let [b, _, _] = input.x.dims();
            let expected = [b, self.layers.len(), self.n_heads];
            assert!(
                head_mask.dims() == expected,
                "head mask {:?}: expected [b, layers, heads] = {expected:?}",
                head_mask.dims()
            );
        }
        let probability_scales = input.probability_scales;
        if let Some(scales) = &probability_scales {
            assert!(
                scales.len() == self.layers.len(),
                "{} probability scales for {} layers",
                scales.len(),
                self.layers.len()
            );
        }
        self.run(
            input.x,
            input.hidden_states,
            input.attentions,
            |k, layer, x, weights| {
                let memory = memory.clone().map(|m| (m, &memory_mask));
                let heads = head_mask.as_ref().map(|m| {
                    let [b, _, h] = m.dims();
                    m.clone().slice([0..b, k..k + 1, 0..h]).reshape([b, h])
                });
                let probabilities = probability_scales.as_ref().map(|s| s[k].clone());
                let scales = AttentionScales {
                    heads,
                    probabilities,
                };
                layer.forward_scaled(x, &mask, memory, weights, scales)
            },
        )
    }

    /// The stack over `n` new positions, attending to the positions cached in `cache` (and to
    /// the memory projected into it): equal to the last `n` rows of [`Self::forward`] over the
    /// whole sequence, at a cost per step linear in the cached length. The input's mask fits
    /// `[b, h, n, len]` with `len` the cached length after this step; its memory must be unset
    /// (it lives in the cache).
    ///
    /// # Shapes
    ///
    /// - x `[b, n, d]` → hidden `[b, n, d]`
    ///
    /// # Panics
    ///
    /// When the input carries a memory or a head mask, or shapes disagree with the cache.
    pub fn forward_cached(
        &self,
        input: StackInput<B>,
        cache: &mut StackCache<B>,
    ) -> StackOutput<B> {
        assert!(
            input.memory.is_none(),
            "with cached decoding the memory is projected once by new_cache, not passed at each step"
        );
        assert!(
            input.head_mask.is_none() && input.probability_scales.is_none(),
            "head masks and probability scales are for whole-sequence passes (forward), not cached decoding"
        );
        let [_, n, _] = input.x.dims();
        let device = input.x.device();
        let s = cache.layers[0].self_attention().len_after(n);
        let mask = self.self_mask(input.mask, n, s, &device);
        let memory_mask = input.memory_mask;
        let mut caches = cache.layers.iter_mut();
        self.run(
            input.x,
            input.hidden_states,
            input.attentions,
            |_, layer, x, weights| {
                let cache = caches.next().expect("one cache per layer");
                layer.forward_cached(x, &mask, cache, &memory_mask, weights)
            },
        )
    }

    /// Runs `layer_forward` through the layers, collecting what was asked for.
    fn run(
        &self,
        x: Tensor<B, 3>,
        hidden_states: bool,
        attentions: bool,
        mut layer_forward: impl FnMut(
            usize,
            &TransformerLayer<B>,
            Tensor<B, 3>,
            WeightsMode,
        ) -> crate::LayerOutput<B>,
    ) -> StackOutput<B> {
        let weights = if attentions {
            WeightsMode::PerHead
        } else {
            WeightsMode::None
        };
        let mut states = hidden_states.then(Vec::new);
        let mut self_attentions = attentions.then(Vec::new);
        let mut cross_attentions = (attentions && self.kind == LayerKind::Decoder).then(Vec::new);
        let mut x = x;
        for (k, layer) in self.layers.iter().enumerate() {
            let out = layer_forward(k, layer, x, weights);
            x = out.hidden;
            if let Some(states) = &mut states {
                states.push(x.clone());
            }
            if let (Some(list), Some(w)) = (&mut self_attentions, out.self_attention) {
                list.push(w);
            }
            if let (Some(list), Some(w)) = (&mut cross_attentions, out.cross_attention) {
                list.push(w);
            }
        }
        StackOutput {
            hidden: self.finish(x),
            hidden_states: states,
            self_attentions,
            cross_attentions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, NormKind, NormPlacement};
    use burn::tensor::Distribution;
    use focal_attention::{RotaryEncodingConfig, padding_mask_from_lengths};
    use focal_backend::assert_close;

    fn layer() -> TransformerLayerConfig {
        TransformerLayerConfig::new(16, 4, 32).with_dropout(0.0)
    }

    fn normal<B: Backend>(shape: [usize; 3], device: &B::Device) -> Tensor<B, 3> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// Every stack kind, with a different attention option each, decodes token by token with
    /// the cache exactly as the full pass: a 2-layer decoder (cross-attention to a padded
    /// memory, GQA), a 2-layer decoder-only stack (RoPE, SwiGLU, RMSNorm, pre-norm, final norm)
    /// and one with ALiBi and a sliding window, and one with T5's relative bias.
    fn cached_decoding_equals_the_full_pass<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 30);
        let (b, l, s) = (2, 6, 5);
        let memory = normal::<B>([b, s, 12], device);
        let memory_mask = AttentionMask::key_padding(padding_mask_from_lengths(&[5, 3], s, device));
        let stacks = [
            TransformerStackConfig::decoder(layer().with_n_kv_heads(Some(2)), 12, 2),
            TransformerStackConfig::decoder_only(
                layer()
                    .with_rotary(Some(RotaryEncodingConfig::new(4).with_max_len(16)))
                    .with_activation(Activation::Silu)
                    .with_gated(true)
                    .with_norm_kind(NormKind::RmsNorm)
                    .with_norm(NormPlacement::Pre),
                2,
            )
            .with_final_norm(true),
            TransformerStackConfig::decoder_only(layer().with_window(Some(3)), 2).with_alibi(true),
            TransformerStackConfig::decoder_only(layer(), 2).with_relative_bias(Some(
                RelativePositionBiasConfig::new(4).with_bidirectional(false),
            )),
        ];
        for config in stacks {
            let stack = config.init::<B>(device);
            let x = normal::<B>([b, l, 16], device);
            let decoder = config.layer.kind == LayerKind::Decoder;
            let mut input = StackInput::new(x.clone());
            if decoder {
                input = input
                    .memory(memory.clone())
                    .memory_mask(memory_mask.clone());
            }
            let full = stack.forward(input).hidden;

            let mut cache = stack.new_cache(b, l, decoder.then(|| memory.clone()), device);
            // A prompt of 2 positions, then one position per step.
            let mut start = 0;
            for end in [2, 3, 4, 5, 6] {
                let step = stack.forward_cached(
                    StackInput::new(x.clone().slice([0..b, start..end, 0..16]))
                        .memory_mask(memory_mask.clone()),
                    &mut cache,
                );
                assert_close(
                    step.hidden,
                    full.clone().slice([0..b, start..end, 0..16]),
                    1e-5,
                );
                start = end;
            }
            assert_eq!(cache.len(), l);
        }
    }

    /// Changing padded positions of the input changes nothing at the real positions, through
    /// an encoder stack (key padding) and a decoder stack (padded memory).
    fn padding_invariance_through_the_stacks<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 31);
        let encoder = TransformerStackConfig::encoder(layer(), 2)
            .with_final_norm(true)
            .init::<B>(device);
        let x = normal::<B>([2, 5, 16], device);
        let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[5, 3], 5, device));
        let out = encoder
            .forward(StackInput::new(x.clone()).mask(mask.clone()))
            .hidden;
        let noise = normal::<B>([1, 2, 16], device) * 10.0;
        let x2 = x.slice_assign([1..2, 3..5, 0..16], noise);
        let out2 = encoder
            .forward(StackInput::new(x2.clone()).mask(mask.clone()))
            .hidden;
        assert_close(
            out.clone().slice([1..2, 0..3, 0..16]),
            out2.clone().slice([1..2, 0..3, 0..16]),
            1e-5,
        );
        assert_close(
            out.clone().narrow(0, 0, 1),
            out2.clone().narrow(0, 0, 1),
            1e-5,
        );

        let decoder = TransformerStackConfig::decoder(layer(), 16, 2).init::<B>(device);
        let y = normal::<B>([2, 4, 16], device);
        let decode = |memory: Tensor<B, 3>| {
            decoder
                .forward(
                    StackInput::new(y.clone())
                        .memory(memory)
                        .memory_mask(mask.clone()),
                )
                .hidden
        };
        assert_close(decode(out), decode(out2), 1e-5);
    }

    /// Per-layer outputs: one hidden state and one attention map per layer, with the right
    /// shapes, equal to what running the layers one by one gives; the final output is the last
    /// state after the final norm.
    fn per_layer_outputs_equal_the_layer_by_layer_pass<B: FusedAttentionBackend>(
        device: &B::Device,
    ) {
        focal_backend::seed::<B>(device, 32);
        let config = TransformerStackConfig::decoder(layer(), 12, 3).with_final_norm(true);
        let stack = config.init::<B>(device);
        let (x, memory) = (
            normal::<B>([2, 4, 16], device),
            normal::<B>([2, 5, 12], device),
        );
        let out = stack.forward(
            StackInput::new(x.clone())
                .memory(memory.clone())
                .output_hidden_states(true)
                .output_attentions(true),
        );
        let states = out.hidden_states.unwrap();
        let selfs = out.self_attentions.unwrap();
        let crosses = out.cross_attentions.unwrap();
        assert_eq!((states.len(), selfs.len(), crosses.len()), (3, 3, 3));
        let mut h = x;
        for (i, layer) in stack.layers().iter().enumerate() {
            let o = layer.forward(
                h,
                &AttentionMask::none(),
                Some((memory.clone(), &AttentionMask::none())),
                WeightsMode::PerHead,
            );
            h = o.hidden;
            assert_eq!(states[i].dims(), [2, 4, 16]);
            assert_eq!(selfs[i].dims(), [2, 4, 4, 4]);
            assert_eq!(crosses[i].dims(), [2, 4, 4, 5]);
            assert_close(states[i].clone(), h.clone(), 1e-5);
            assert_close(selfs[i].clone(), o.self_attention.unwrap(), 1e-5);
            assert_close(crosses[i].clone(), o.cross_attention.unwrap(), 1e-5);
        }
        assert_close(
            out.hidden,
            stack.final_norm.as_ref().unwrap().forward(h),
            1e-5,
        );

        // Off by default: nothing collected.
        let plain = stack.forward(StackInput::new(normal::<B>([2, 4, 16], device)).memory(memory));
        assert!(plain.hidden_states.is_none() && plain.self_attentions.is_none());
    }

    focal_backend::backend_tests!(
        cached_decoding_equals_the_full_pass,
        padding_invariance_through_the_stacks,
        per_layer_outputs_equal_the_layer_by_layer_pass
    );

    /// A learned relative position bias trains under `Autodiff<NdArray>`, whose attention runs
    /// the CPU kernel: one backward pass gives its table a gradient, equal to the one of the
    /// generic tensor-op path. (Before the kernel had a bias gradient, the table got none.)
    #[cfg(feature = "ndarray")]
    #[test]
    fn a_relative_position_bias_trains_through_the_cpu_kernel() {
        type A = burn::backend::Autodiff<focal_backend::NdArray>;
        let device = Default::default();
        focal_backend::seed::<A>(&device, 33);
        let stack = TransformerStackConfig::encoder(layer(), 2)
            .with_relative_bias(Some(RelativePositionBiasConfig::new(4).with_num_buckets(8)))
            .init::<A>(&device);
        let x = normal::<A>([2, 9, 16], &device);
        // A random projection of the output (the sum of squares of a LayerNorm's output is
        // constant, so its gradient would vanish).
        let weights = normal::<A>([2, 9, 16], &device);
        let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[9, 6], 9, &device));
        let gradient = || {
            let input = StackInput::new(x.clone()).mask(mask.clone());
            let loss = (stack.forward(input).hidden * weights.clone()).sum();
            let grads = loss.backward();
            let table = stack.relative_bias.as_ref().expect("a bias").table();
            table
                .grad(&grads)
                .expect("the relative bias table has a gradient")
        };
        let kernel = gradient();
        let generic = focal_attention::without_cpu_kernel(gradient);
        assert_eq!(kernel.dims(), [8, 4]);
        assert!(kernel.clone().abs().max().into_scalar() > 1e-4);
        assert_close(kernel, generic, 1e-4);
    }

    #[test]
    fn invalid_combinations_are_refused_with_their_values() {
        let cases = [
            (
                layer().with_kind(LayerKind::Decoder).validate(),
                "invalid TransformerLayerConfig: kind Decoder has cross-attention and needs d_memory (the encoder's width), got none",
            ),
            (
                layer().with_d_memory(Some(8)).validate(),
                "invalid TransformerLayerConfig: d_memory (8) is for cross-attention, which a Encoder layer does not have",
            ),
            (
                TransformerLayerConfig::new(16, 4, 33)
                    .with_gated(true)
                    .validate(),
                "invalid FeedForwardConfig: d_ff (33) must be even for a gated feed-forward (it packs the gate and value halves)",
            ),
            (
                layer().with_dropout(-0.1).validate(),
                "invalid MultiHeadAttentionConfig: dropout (-0.1) must be in [0, 1)",
            ),
            (
                layer().with_window(Some(0)).validate(),
                "invalid TransformerLayerConfig: window must be at least 1, got 0",
            ),
            (
                layer().with_n_kv_heads(Some(3)).validate(),
                "invalid MultiHeadAttentionConfig: n_heads (4) is not divisible by n_kv_heads (3)",
            ),
            (
                layer()
                    .with_rotary(Some(RotaryEncodingConfig::new(8)))
                    .validate(),
                "invalid MultiHeadAttentionConfig: rotary.d_head (8) differs from the head width d_model / n_heads (16 / 4 = 4)",
            ),
            (
                TransformerStackConfig::encoder(layer(), 0).validate(),
                "invalid TransformerStackConfig: n_layers must be at least 1, got 0",
            ),
            (
                TransformerStackConfig::encoder(layer(), 1)
                    .with_relative_bias(Some(RelativePositionBiasConfig::new(2)))
                    .validate(),
                "invalid TransformerStackConfig: relative_bias.n_heads (2) differs from the layers' n_heads (4)",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
    }
}

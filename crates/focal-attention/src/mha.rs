//! Multi-head attention: projections around scaled dot-product attention.

use crate::{
    AttentionInput, AttentionMask, ScaledDotProductAttention, ScaledDotProductAttentionConfig,
};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
use focal_backend::ConfigError;

/// Configuration of [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    /// Model width `d`: the width of the input and of the output.
    pub d_model: usize,
    /// Number of heads `h`; `d_model` must be divisible by it (`d_h = d_model / h`).
    pub n_heads: usize,
    /// Dropout on the attention probabilities (after softmax). Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Whether the four projections have a bias. Default true, as in PyTorch.
    #[config(default = true)]
    pub bias: bool,
}

impl MultiHeadAttentionConfig {
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
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<MultiHeadAttention<B>, ConfigError> {
        self.validate()?;
        let linear = || {
            LinearConfig::new(self.d_model, self.d_model)
                .with_bias(self.bias)
                .init(device)
        };
        Ok(MultiHeadAttention {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            attention: ScaledDotProductAttentionConfig::new()
                .with_dropout(self.dropout)
                .init(),
            n_heads: self.n_heads,
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

/// Multi-head attention (Vaswani et al., 2017), for self- and cross-attention.
///
/// Projects query, key and value to `h` heads of width `d_h = d / h`, attends with
/// [`ScaledDotProductAttention`] in each head, concatenates the heads and projects back to `d`.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    output: Linear<B>,
    attention: ScaledDotProductAttention,
    n_heads: usize,
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

    /// Separate query `[b, l, d]`, key `[b, s, d]` and value `[b, s, d]`.
    pub fn new(query: Tensor<B, 3>, key: Tensor<B, 3>, value: Tensor<B, 3>) -> Self {
        Self {
            query,
            key,
            value,
            mask: AttentionMask::none(),
            weights: WeightsMode::None,
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

impl<B: Backend> MultiHeadAttention<B> {
    /// Number of heads `h`.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Attends the queries to the keys.
    ///
    /// # Shapes
    ///
    /// - query `[b, l, d]`, key `[b, s, d]`, value `[b, s, d]`
    /// - context `[b, l, d]`; weights `[b, h, l, s]` or `[b, 1, l, s]`
    ///
    /// # Panics
    ///
    /// When the inputs' shapes disagree with each other or with the mask.
    pub fn forward(&self, input: MhaInput<B>) -> MhaOutput<B> {
        let [b, l, d] = input.query.dims();
        let [kb, s, kd] = input.key.dims();
        assert!(
            [kb, kd] == [b, d] && input.value.dims() == [b, s, d],
            "multi-head attention shapes disagree: query {:?} [b, l, d], key {:?} [b, s, d], value {:?} [b, s, d]",
            input.query.dims(),
            input.key.dims(),
            input.value.dims()
        );
        let q = self.split_heads(self.query.forward(input.query)); // [b, h, l, d_h]
        let k = self.split_heads(self.key.forward(input.key)); // [b, h, s, d_h]
        let v = self.split_heads(self.value.forward(input.value)); // [b, h, s, d_h]

        let attended = self.attention.forward(
            AttentionInput::new(q, k, v)
                .mask(input.mask)
                .need_weights(input.weights != WeightsMode::None),
        );
        let context = attended.context.swap_dims(1, 2).reshape([b, l, d]); // [b, l, d]
        let weights = match input.weights {
            WeightsMode::None => None,
            WeightsMode::PerHead => attended.weights,
            WeightsMode::Averaged => attended.weights.map(|w| w.mean_dim(1)),
        };
        MhaOutput {
            context: self.output.forward(context),
            weights,
        }
    }

    /// `[b, n, d]` → `[b, h, n, d_h]`.
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, d] = x.dims();
        x.reshape([b, n, self.n_heads, d / self.n_heads]) // [b, n, h, d_h]
            .swap_dims(1, 2) // [b, h, n, d_h]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::padding_mask_from_lengths;
    use burn::tensor::Distribution;
    use focal_backend::assert_close;

    fn config() -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(16, 4)
    }

    /// Per-head weights are a distribution, and their mean is what `Averaged` returns.
    fn weights_per_head_and_averaged<B: Backend>(device: &B::Device) {
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
    fn cross_attention_padding_invariance<B: Backend>(device: &B::Device) {
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
    fn causal_self_attention_ignores_the_future<B: Backend>(device: &B::Device) {
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

    focal_backend::backend_tests!(
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
    #[should_panic(expected = "d_model (10) is not divisible by n_heads (4)")]
    fn init_panics_with_the_same_message() {
        MultiHeadAttentionConfig::new(10, 4).init::<focal_backend::NdArray>(&Default::default());
    }
}

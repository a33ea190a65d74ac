//! Scaled dot-product attention.

use crate::AttentionMask;
use crate::fused::{FusedAttentionBackend, FusedAttentionOptions};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Tensor, backend::Backend};
use focal_backend::ConfigError;
use std::ops::Range;

/// Score given to masked pairs before the softmax: `-inf`, so that a masked pair takes no
/// weight whatever the allowed scores are (even `f32::MIN`). A row with no allowed key has a
/// maximum of `-inf`; the softmax shifts such a row by 0 instead ([`finite_shift`]), so it
/// gives zeros, never `-inf - (-inf) = NaN`.
pub(crate) const MASKED_SCORE: f32 = f32::NEG_INFINITY;

/// The shift a softmax subtracts from each row: the row's maximum `max` (`[.., 1]`), or 0
/// where the maximum is `-inf` (no allowed key), so that `exp(score - shift)` is 0 there
/// instead of NaN. Detached, as burn's own softmax detaches its maximum: the softmax does not
/// depend on it.
fn finite_shift<B: Backend>(max: Tensor<B, 4>) -> Tensor<B, 4> {
    let max = max.detach();
    max.clone()
        .mask_fill(max.equal_elem(f32::NEG_INFINITY), 0.0)
}

/// The softmax over the keys (last dimension) of scores whose masked pairs are `-inf`: those
/// get probability 0, and a row with no allowed key gets zeros.
///
/// # Shapes
///
/// - scores `[b, h, l, s]` → probabilities `[b, h, l, s]`
fn masked_softmax<B: Backend>(scores: Tensor<B, 4>) -> Tensor<B, 4> {
    let shift = finite_shift(scores.clone().max_dim(3)); // [b, h, l, 1]
    let weights = (scores - shift).exp();
    let sum = weights.clone().sum_dim(3).clamp_min(f32::MIN_POSITIVE);
    weights / sum
}

/// Configuration of [`ScaledDotProductAttention`].
#[derive(Config, Debug)]
pub struct ScaledDotProductAttentionConfig {
    /// Dropout probability on the attention probabilities (after softmax), in training only.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The memory-efficient path is taken when weights are not requested and there are at least
    /// this many keys. Default 1024; 0 always takes it, `usize::MAX` never.
    #[config(default = 1024)]
    pub memory_efficient_from: usize,
    /// Keys per block of the memory-efficient path. Default 256.
    #[config(default = 256)]
    pub key_block: usize,
}

impl ScaledDotProductAttentionConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "ScaledDotProductAttentionConfig";
        ConfigError::ensure_positive(NAME, "key_block", self.key_block)?;
        ConfigError::ensure_dropout(NAME, "dropout", self.dropout)
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init(&self) -> Result<ScaledDotProductAttention, ConfigError> {
        self.validate()?;
        Ok(ScaledDotProductAttention {
            dropout: DropoutConfig::new(self.dropout).init(),
            memory_efficient_from: self.memory_efficient_from,
            key_block: self.key_block,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid (see [`Self::validate`]).
    pub fn init(&self) -> ScaledDotProductAttention {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `softmax(softcap(q kᵀ · scale) + additive mask) v` over heads, with boolean masks.
///
/// Semantics (PyTorch's `scaled_dot_product_attention` unless noted):
/// - the default scale is `1 / sqrt(d_h)`;
/// - masked pairs get probability exactly 0, and a query whose keys are all masked gets a zero
///   output row and zero gradients (PyTorch gives NaN there; burn-nn's `MultiHeadAttention`
///   fills masked scores with -10000 and so spreads such a row uniformly over the masked keys);
/// - dropout is applied to the probabilities after softmax and only when autodiff is enabled
///   (training). burn-nn's `MultiHeadAttention` drops out the scores *before* the softmax,
///   which neither keeps rows summing to one in expectation nor matches the Transformer paper;
/// - the returned weights are the probabilities before dropout.
#[derive(Module, Clone, Debug)]
pub struct ScaledDotProductAttention {
    dropout: Dropout,
    memory_efficient_from: usize,
    key_block: usize,
}

/// The input of [`ScaledDotProductAttention::forward`]: query, key, value and options.
#[derive(Clone, Debug)]
pub struct AttentionInput<B: Backend> {
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    mask: AttentionMask<B>,
    scale: Option<f64>,
    softcap: Option<f64>,
    need_weights: bool,
    probability_scale: Option<Tensor<B, 4>>,
}

impl<B: Backend> AttentionInput<B> {
    /// Query `[b, h, l, d_h]`, key `[b, h_kv, s, d_h]`, value `[b, h_kv, s, d_v]`; no mask.
    ///
    /// With `h_kv < h` (grouped-query or multi-query attention) each key/value head serves
    /// `h / h_kv` consecutive query heads.
    pub fn new(query: Tensor<B, 4>, key: Tensor<B, 4>, value: Tensor<B, 4>) -> Self {
        Self {
            query,
            key,
            value,
            mask: AttentionMask::none(),
            scale: None,
            softcap: None,
            need_weights: false,
            probability_scale: None,
        }
    }

    /// Restricts which pairs may attend.
    pub fn mask(mut self, mask: AttentionMask<B>) -> Self {
        self.mask = mask;
        self
    }

    /// Replaces the default scale `1 / sqrt(d_h)`.
    pub fn scale(mut self, scale: f64) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Soft-caps the scaled scores to `(-cap, cap)` with `cap · tanh(score / cap)` before masks
    /// and biases are added (Gemma 2).
    ///
    /// # Panics
    ///
    /// When `cap` is not positive.
    pub fn softcap(mut self, cap: f64) -> Self {
        assert!(cap > 0.0, "softcap must be positive, got {cap}");
        self.softcap = Some(cap);
        self
    }

    /// Also returns the attention probabilities `[b, h, l, s]`.
    pub fn need_weights(mut self, need: bool) -> Self {
        self.need_weights = need;
        self
    }

    /// Multiplies the probabilities by `scale` (broadcast to `[b, h, l, s]`) before they weight
    /// the values; returned weights are the scaled ones. With a scale of ones, the gradient of
    /// a loss with respect to it is `P ⊙ ∂loss/∂P`, what attention × gradient explanations
    /// read (Chefer et al. 2021). This takes the plain path, which materialises `P`.
    pub fn probability_scale(mut self, scale: Tensor<B, 4>) -> Self {
        self.probability_scale = Some(scale);
        self
    }

    /// Query, key, value, mask and whether weights are wanted (for attention variants that do
    /// not use the scaled dot product's scale and soft-cap).
    ///
    /// # Panics
    ///
    /// When a probability scale, a scale or a soft-cap is set: only scaled dot-product
    /// attention takes them, and ignoring one would be a silent wrong result.
    pub(crate) fn into_parts(
        self,
    ) -> (
        Tensor<B, 4>,
        Tensor<B, 4>,
        Tensor<B, 4>,
        AttentionMask<B>,
        bool,
    ) {
        for (option, set) in [
            ("a probability scale", self.probability_scale.is_some()),
            ("a scale (AttentionInput::scale)", self.scale.is_some()),
            (
                "a soft-cap (AttentionInput::softcap)",
                self.softcap.is_some(),
            ),
        ] {
            assert!(
                !set,
                "{option} is taken by scaled dot-product attention only: a score function \
                 scores by its own parameters"
            );
        }
        (
            self.query,
            self.key,
            self.value,
            self.mask,
            self.need_weights,
        )
    }
}

/// The output of attention.
#[derive(Clone, Debug)]
pub struct AttentionOutput<B: Backend> {
    /// The attended values, `[b, h, l, d_v]`.
    pub context: Tensor<B, 4>,
    /// The attention probabilities `[b, h, l, s]`, when requested.
    pub weights: Option<Tensor<B, 4>>,
}

impl ScaledDotProductAttention {
    /// Attends each query to the keys and returns the weighted values.
    ///
    /// # Shapes
    ///
    /// - query `[b, h, l, d_h]`, key `[b, h_kv, s, d_h]`, value `[b, h_kv, s, d_v]` (`h_kv`
    ///   divides `h`)
    /// - context `[b, h, l, d_v]`, weights `[b, h, l, s]`
    ///
    /// # Panics
    ///
    /// When the shapes of query, key, value or mask disagree; the message names them.
    pub fn forward<B: FusedAttentionBackend>(
        &self,
        input: AttentionInput<B>,
    ) -> AttentionOutput<B> {
        let [_, _, _, d_h] = input.query.dims();
        let scale = input.scale.unwrap_or(1.0 / (d_h as f64).sqrt());
        if !input.need_weights && input.probability_scale.is_none() {
            let context = B::fused_attention(
                input.query,
                input.key,
                input.value,
                FusedAttentionOptions {
                    mask: &input.mask,
                    scale,
                    softcap: input.softcap,
                    dropout: &self.dropout,
                    memory_efficient_from: self.memory_efficient_from,
                    key_block: self.key_block,
                },
            );
            return AttentionOutput {
                context,
                weights: None,
            };
        }
        let (key, value) = shared_kv_heads(&input.query, input.key, input.value); // [b, h, s, _]
        let scores = scaled_scores(input.query, key, scale, input.softcap); // [b, h, l, s]
        attend_scaled(
            scores,
            value,
            &input.mask,
            &self.dropout,
            input.need_weights,
            input.probability_scale,
        )
    }
}

/// `softcap(q kᵀ · scale)`: `[b, h, l, d_h] × [b, h, s, d_h] → [b, h, l, s]`.
pub(crate) fn scaled_scores<B: Backend>(
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    scale: f64,
    softcap: Option<f64>,
) -> Tensor<B, 4> {
    let scores = query.matmul(key.swap_dims(2, 3)).mul_scalar(scale);
    match softcap {
        Some(cap) => scores.div_scalar(cap).tanh().mul_scalar(cap),
        None => scores,
    }
}

/// Attention over blocks of `block` keys with an online softmax (running maximum and running
/// sum per query, as FlashAttention), so that no `[l, s]` matrix exists: memory is
/// `O(l · (block + d_v))` per head instead of `O(l · s)`. Gives the plain path's results, with
/// its masking rules (masked pairs get probability 0, a query with no allowed key gets zeros)
/// and dropout on the probabilities.
///
/// Built from tensor ops, so it runs and differentiates on every backend; autodiff still keeps
/// each block's intermediates for the backward pass.
///
/// # Shapes
///
/// - query `[b, h, l, d_h]`, key `[b, h, s, d_h]`, value `[b, h, s, d_v]` → `[b, h, l, d_v]`
pub(crate) fn memory_efficient<B: Backend>(
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    score: impl Fn(Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
    dropout: &Dropout,
    block: usize,
) -> Tensor<B, 4> {
    let [b, h, l, d_k] = query.dims();
    let [_, _, s, d_v] = value.dims();
    let device = query.device();
    // The running maximum starts at -inf (no key seen yet), as the CPU kernel's does: a finite
    // start would be taken for a score and zero every row whose allowed scores lie below it.
    let mut running_max = Tensor::<B, 4>::full([b, h, l, 1], MASKED_SCORE, &device);
    let mut running_sum = Tensor::<B, 4>::zeros([b, h, l, 1], &device);
    let mut context = Tensor::<B, 4>::zeros([b, h, l, d_v], &device);
    for start in (0..s).step_by(block) {
        let keys = start..(start + block).min(s);
        let k = key.clone().slice([0..b, 0..h, keys.clone(), 0..d_k]);
        let v = value.clone().slice([0..b, 0..h, keys.clone(), 0..d_v]);
        let scores = apply_mask(score(query.clone(), k), mask, s, keys); // [b, h, l, n]
        let new_max = running_max
            .clone()
            .max_pair(scores.clone().detach().max_dim(3)); // [b, h, l, 1]
        // Rows with no allowed key so far have new_max = -inf: shifted by 0, their masked
        // pairs' exp(-inf) and their correction exp(-inf) are 0.
        let shift = finite_shift(new_max.clone());
        let p = (scores - shift.clone()).exp(); // [b, h, l, n]
        let correction = (running_max - shift).exp();
        running_sum = running_sum * correction.clone() + p.clone().sum_dim(3);
        context = context * correction + dropout.forward(p).matmul(v);
        running_max = new_max;
    }
    // A query with no allowed key has a zero sum and a zero context: it stays zero.
    context / running_sum.clamp_min(f32::MIN_POSITIVE)
}

/// The part every attention shares once scores exist: additive mask parts, boolean masks
/// (masked pairs get probability 0; fully masked rows give zeros), softmax, dropout on the
/// probabilities, and the weighted sum of the values.
///
/// # Shapes
///
/// - scores `[b, h, l, s]`, value `[b, h, s, d_v]` → context `[b, h, l, d_v]`
pub(crate) fn attend<B: Backend>(
    scores: Tensor<B, 4>,
    value: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    dropout: &Dropout,
    need_weights: bool,
) -> AttentionOutput<B> {
    attend_scaled(scores, value, mask, dropout, need_weights, None)
}

/// [`attend`], the probabilities multiplied by `scale` (broadcast) after the dropout, before
/// they weight the values.
fn attend_scaled<B: Backend>(
    scores: Tensor<B, 4>,
    value: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    dropout: &Dropout,
    need_weights: bool,
    scale: Option<Tensor<B, 4>>,
) -> AttentionOutput<B> {
    let [_, _, _, s] = scores.dims();
    let probs = masked_softmax(apply_mask(scores, mask, s, 0..s));
    // Returned weights are the probabilities before dropout, or the scaled ones when scaled.
    let (weights, probs) = match scale {
        None => (need_weights.then(|| probs.clone()), dropout.forward(probs)),
        Some(scale) => {
            let scaled = dropout.forward(probs) * scale;
            (need_weights.then(|| scaled.clone()), scaled)
        }
    };
    AttentionOutput {
        context: probs.matmul(value), // [b, h, l, d_v]
        weights,
    }
}

/// Applies `mask` to the scores of the keys `keys` (of `s`): adds its additive parts and gives
/// blocked pairs [`MASKED_SCORE`] (`-inf`).
///
/// # Shapes
///
/// - scores `[b, h, l, n]` with `n = keys.len()`
fn apply_mask<B: Backend>(
    scores: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    s: usize,
    keys: Range<usize>,
) -> Tensor<B, 4> {
    let [b, h, l, _] = scores.dims();
    let device = scores.device();
    let scores = match mask.materialize_additive_keys(b, h, l, s, keys.clone()) {
        Some(bias) => scores + bias,
        None => scores,
    };
    match mask.materialize_keys(b, h, l, s, keys, &device) {
        Some(allowed) => scores.mask_fill(allowed.bool_not(), MASKED_SCORE),
        None => scores,
    }
}

/// Checks query `[b, h, l, d_h]`, key `[b, h_kv, s, d_h]` and value `[b, h_kv, s, d_v]`
/// (`h_kv` dividing `h`) and gives key and value `h` heads (see [`repeat_kv_heads`]).
///
/// # Panics
///
/// When the shapes disagree; the message names all three.
pub(crate) fn shared_kv_heads<B: Backend>(
    query: &Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [_, h, _, _] = query.dims();
    let [_, h_kv, _, _] = key.dims();
    assert!(
        kv_shapes_agree(query.dims(), key.dims(), value.dims()),
        "attention shapes disagree: query {:?} [b, h, l, d_h], key {:?} [b, h_kv, s, d_h], value {:?} [b, h_kv, s, d_v], with h_kv dividing h",
        query.dims(),
        key.dims(),
        value.dims()
    );
    (
        repeat_kv_heads(key, h / h_kv),
        repeat_kv_heads(value, h / h_kv),
    )
}

/// Whether query `[b, h, l, d_h]`, key `[b, h_kv, s, d_h]` and value `[b, h_kv, s, d_v]` fit
/// together, with `h_kv` dividing `h`.
pub(crate) fn kv_shapes_agree(
    [b, h, _, d_h]: [usize; 4],
    [kb, h_kv, s, kd]: [usize; 4],
    [vb, vh, vs, _]: [usize; 4],
) -> bool {
    [kb, kd] == [b, d_h] && [vb, vh, vs] == [b, h_kv, s] && h_kv > 0 && h.is_multiple_of(h_kv)
}

/// Grouped-query attention: each key/value head serves `groups` consecutive query heads
/// (query head `i` uses key/value head `i / groups`, as PyTorch's `enable_gqa`).
///
/// `[b, h_kv, s, d]` → `[b, h_kv · groups, s, d]`; a no-op when `groups == 1`.
fn repeat_kv_heads<B: Backend>(x: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return x;
    }
    let [b, h_kv, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2) // [b, h_kv, 1, s, d]
        .expand([b, h_kv, groups, s, d])
        .reshape([b, h_kv * groups, s, d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FusedAttentionBackend;
    use crate::padding_mask_from_lengths;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, Element, ElementConversion, TensorData};
    use focal_backend::{Tolerance, assert_close};

    fn qkv<B: FusedAttentionBackend>(
        b: usize,
        h: usize,
        l: usize,
        s: usize,
        d: usize,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let n = Distribution::Normal(0.0, 1.0);
        (
            Tensor::random([b, h, l, d], n, device),
            Tensor::random([b, h, s, d], n, device),
            Tensor::random([b, h, s, d], n, device),
        )
    }

    /// A hand-computed case: one query, two keys, scale 1/sqrt(2).
    fn matches_hand_computed_values<B: FusedAttentionBackend>(device: &B::Device) {
        let q = Tensor::<B, 4>::from_floats([[[[1.0, 0.0]]]], device);
        let k = Tensor::<B, 4>::from_floats([[[[1.0, 0.0], [0.0, 1.0]]]], device);
        let v = Tensor::<B, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], device);
        let out = ScaledDotProductAttentionConfig::new()
            .init()
            .forward(AttentionInput::new(q, k, v).need_weights(true));
        // p = softmax([1/sqrt2, 0]) = [0.66976155, 0.33023845]
        let p0 = 0.669_761_55_f32;
        let expected_w = Tensor::<B, 4>::from_floats([[[[p0, 1.0 - p0]]]], device);
        assert_close(out.weights.unwrap(), expected_w, 1e-6);
        let expected = Tensor::<B, 4>::from_floats(
            [[[[p0 + 3.0 * (1.0 - p0), 2.0 * p0 + 4.0 * (1.0 - p0)]]]],
            device,
        );
        assert_close(out.context, expected, 1e-5);
    }

    /// Changing the keys and values at padded positions changes nothing.
    fn padding_invariance<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 1);
        let (q, k, v) = qkv::<B>(2, 2, 3, 5, 4, device);
        let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[5, 3], 5, device));
        let attn = ScaledDotProductAttentionConfig::new().init();
        let out =
            attn.forward(AttentionInput::new(q.clone(), k.clone(), v.clone()).mask(mask.clone()));

        let noise = Tensor::<B, 4>::random([1, 2, 2, 4], Distribution::Normal(0.0, 10.0), device);
        let k2 = k.slice_assign([1..2, 0..2, 3..5, 0..4], noise.clone());
        let v2 = v.slice_assign([1..2, 0..2, 3..5, 0..4], noise);
        let out2 = attn.forward(AttentionInput::new(q, k2, v2).mask(mask));
        assert_close(out.context, out2.context, 1e-6);
    }

    /// A query with every key masked gets zeros, and zero gradients, never NaN.
    fn fully_masked_row_gives_zeros<B: FusedAttentionBackend>(device: &B::Device) {
        type A<B> = Autodiff<B>;
        focal_backend::seed::<B>(device, 2);
        let (q, k, v) = qkv::<A<B>>(1, 2, 3, 2, 4, device);
        let (q, k, v) = (q.require_grad(), k.require_grad(), v.require_grad());
        // s < l with a causal mask: query 0 sees no key.
        let out = ScaledDotProductAttentionConfig::new().init().forward(
            AttentionInput::new(q.clone(), k.clone(), v.clone())
                .mask(AttentionMask::causal())
                .need_weights(true),
        );
        let row0 = out.context.clone().slice([0..1, 0..2, 0..1, 0..4]);
        assert_close(row0.inner(), Tensor::zeros([1, 2, 1, 4], device), 0.0);
        let w0 = out.weights.unwrap().slice([0..1, 0..2, 0..1, 0..2]);
        assert_close(w0.inner(), Tensor::zeros([1, 2, 1, 2], device), 0.0);

        let grads = out.context.sum().backward();
        let gq = q.grad(&grads).unwrap();
        let gq0 = gq.clone().slice([0..1, 0..2, 0..1, 0..4]);
        assert_close(gq0, Tensor::zeros([1, 2, 1, 4], device), 0.0);
        for g in [gq, k.grad(&grads).unwrap(), v.grad(&grads).unwrap()] {
            let finite = g
                .into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|x| x.is_finite());
            assert!(finite, "gradient has non-finite values");
        }
    }

    /// Weights are a distribution over the allowed keys.
    fn weights_sum_to_one_over_allowed_keys<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 3);
        let (q, k, v) = qkv::<B>(2, 3, 4, 4, 8, device);
        let out = ScaledDotProductAttentionConfig::new().init().forward(
            AttentionInput::new(q, k, v)
                .mask(AttentionMask::causal())
                .need_weights(true),
        );
        let w = out.weights.unwrap();
        assert_close(
            w.clone().sum_dim(3),
            Tensor::ones([2, 3, 4, 1], device),
            1e-5,
        );
        // Nothing above the diagonal.
        let upper = w.slice([0..2, 0..3, 0..1, 1..4]);
        assert_close(upper, Tensor::zeros([2, 3, 1, 3], device), 0.0);
    }

    /// Grouped-query attention equals standard attention with each key/value head repeated for
    /// its group of query heads.
    fn grouped_query_attention_equals_repeated_heads<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 5);
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([2, 4, 3, 8], n, device);
        let k = Tensor::<B, 4>::random([2, 2, 5, 8], n, device);
        let v = Tensor::<B, 4>::random([2, 2, 5, 8], n, device);
        let attn = ScaledDotProductAttentionConfig::new().init();
        let grouped = attn.forward(AttentionInput::new(q.clone(), k.clone(), v.clone()));
        let repeat = |t: Tensor<B, 4>| {
            let heads: Vec<_> = (0..4)
                .map(|i| t.clone().slice([0..2, i / 2..i / 2 + 1, 0..5, 0..8]))
                .collect();
            Tensor::cat(heads, 1)
        };
        let full = attn.forward(AttentionInput::new(q, repeat(k), repeat(v)));
        assert_close(grouped.context, full.context, 1e-6);
    }

    /// An additive mask is added to the scaled scores: a bias of `ln 2` on one key doubles its
    /// unnormalised weight.
    fn additive_mask_is_added_to_the_scores<B: FusedAttentionBackend>(device: &B::Device) {
        let q = Tensor::<B, 4>::zeros([1, 1, 1, 2], device);
        let k = Tensor::<B, 4>::zeros([1, 1, 2, 2], device);
        let v = Tensor::<B, 4>::from_floats([[[[0.0, 0.0], [3.0, 3.0]]]], device);
        let bias = Tensor::<B, 4>::from_floats([[[[0.0, std::f32::consts::LN_2]]]], device);
        let out = ScaledDotProductAttentionConfig::new().init().forward(
            AttentionInput::new(q, k, v)
                .mask(AttentionMask::additive(bias))
                .need_weights(true),
        );
        let third = 1.0 / 3.0;
        assert_close(
            out.weights.unwrap(),
            Tensor::from_floats([[[[third, 2.0 * third]]]], device),
            1e-6,
        );
        assert_close(
            out.context,
            Tensor::from_floats([[[[2.0, 2.0]]]], device),
            1e-5,
        );
    }

    /// Soft-capping bounds the scores: with a cap of 1, a huge score difference gives weights of
    /// at most `e^1 / (e^1 + e^-1)`.
    fn softcap_bounds_the_scores<B: FusedAttentionBackend>(device: &B::Device) {
        let q = Tensor::<B, 4>::from_floats([[[[100.0]]]], device);
        let k = Tensor::<B, 4>::from_floats([[[[1.0], [-1.0]]]], device);
        let v = Tensor::<B, 4>::from_floats([[[[1.0], [0.0]]]], device);
        let out = ScaledDotProductAttentionConfig::new()
            .init()
            .forward(AttentionInput::new(q, k, v).softcap(1.0).need_weights(true));
        // tanh(±100) = ±1 (in f32): weights softmax([1, -1]).
        let e = std::f32::consts::E;
        let top = e / (e + 1.0 / e);
        assert_close(
            out.weights.unwrap(),
            Tensor::from_floats([[[[top, 1.0 - top]]]], device),
            1e-6,
        );
    }

    /// Compares autodiff gradients of `sum(attention(q, k, v) ⊙ r)` with central finite
    /// differences, for every element of q, k and v, with key padding, a causal mask, grouped
    /// key/value heads and soft-capping all active.
    fn check_gradients<B: FusedAttentionBackend>(device: &B::Device, eps: f64, tolerance: f64) {
        type A<B> = Autodiff<B>;
        focal_backend::seed::<B>(device, 15);
        // burn 0.21 keeps one default float dtype per device for the whole process, shared by
        // NdArray<f32> and NdArray<f64>: create every tensor with the backend's own dtype.
        let dtype = <B::FloatElem as Element>::dtype();
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([2, 2, 3, 4], n, (device, dtype));
        let k = Tensor::<B, 4>::random([2, 1, 4, 4], n, (device, dtype));
        let v = Tensor::<B, 4>::random([2, 1, 4, 4], n, (device, dtype));
        let r = Tensor::<B, 4>::random([2, 2, 3, 4], n, (device, dtype));
        let attention = ScaledDotProductAttentionConfig::new().init();
        let loss = |q: Tensor<A<B>, 4>, k: Tensor<A<B>, 4>, v: Tensor<A<B>, 4>| {
            let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[4, 2], 4, device))
                .and(AttentionMask::causal());
            let out = attention.forward(AttentionInput::new(q, k, v).mask(mask).softcap(2.0));
            (out.context * Tensor::from_inner(r.clone())).sum()
        };
        let (qa, ka, va) = (
            Tensor::<A<B>, 4>::from_inner(q.clone()).require_grad(),
            Tensor::<A<B>, 4>::from_inner(k.clone()).require_grad(),
            Tensor::<A<B>, 4>::from_inner(v.clone()).require_grad(),
        );
        let grads = loss(qa.clone(), ka.clone(), va.clone()).backward();
        let analytic = [
            qa.grad(&grads).unwrap(),
            ka.grad(&grads).unwrap(),
            va.grad(&grads).unwrap(),
        ];
        let inputs = [q, k, v];
        let value = |inputs: &[Tensor<B, 4>; 3]| -> f64 {
            let [q, k, v] = inputs.clone().map(Tensor::<A<B>, 4>::from_inner);
            loss(q, k, v).inner().into_scalar().elem()
        };
        for (which, gradient) in analytic.into_iter().enumerate() {
            let shape = inputs[which].dims();
            let base: Vec<f64> = inputs[which].to_data().convert::<f64>().to_vec().unwrap();
            let mut numeric = Vec::with_capacity(base.len());
            for i in 0..base.len() {
                let at = |delta: f64| {
                    let mut values = base.clone();
                    values[i] += delta;
                    let mut perturbed = inputs.clone();
                    perturbed[which] =
                        Tensor::from_data(TensorData::new(values, shape), (device, dtype));
                    value(&perturbed)
                };
                numeric.push((at(eps) - at(-eps)) / (2.0 * eps));
            }
            let numeric =
                Tensor::<B, 4>::from_data(TensorData::new(numeric, shape), (device, dtype));
            assert_close(gradient, numeric, Tolerance::new(tolerance, tolerance));
        }
    }

    /// Without weights every backend runs its own route (ndarray: the CPU kernel; wgpu: burn's
    /// fused op for no mask or causal with `l = s` and the default scale, the generic path
    /// otherwise); all equal the plain path: no mask, causal with `l = s` and `l != s`, GQA,
    /// a custom scale.
    fn fused_path_equals_the_plain_path_for_the_common_masks<B: FusedAttentionBackend>(
        device: &B::Device,
    ) {
        focal_backend::seed::<B>(device, 19);
        let n = Distribution::Normal(0.0, 1.0);
        let attention = ScaledDotProductAttentionConfig::new().init();
        for (l, s, h_kv, causal, scale) in [
            (7, 7, 2, false, None),
            (7, 7, 2, true, None),
            (5, 9, 1, true, None),
            (9, 9, 1, true, Some(0.2)),
        ] {
            let q = Tensor::<B, 4>::random([2, 2, l, 8], n, device);
            let k = Tensor::<B, 4>::random([2, h_kv, s, 8], n, device);
            let v = Tensor::<B, 4>::random([2, h_kv, s, 4], n, device);
            let mask = if causal {
                AttentionMask::causal()
            } else {
                AttentionMask::none()
            };
            let mut input = AttentionInput::new(q, k, v).mask(mask);
            if let Some(scale) = scale {
                input = input.scale(scale);
            }
            let fused = attention.forward(input.clone()).context;
            let plain = attention.forward(input.need_weights(true)).context;
            assert_close(fused, plain, 1e-5);
        }
    }

    /// In f32 the central difference with `eps = 1e-2` has a truncation error of order
    /// `eps² · f'''` ≈ 1e-4 and a rounding error of order `1e-7 / eps` = 1e-5 on values of order
    /// one; 2e-3 (absolute and relative) leaves a margin of ten over both.
    fn gradients_match_finite_differences<B: FusedAttentionBackend>(device: &B::Device) {
        check_gradients::<B>(device, 1e-2, 2e-3);
    }

    /// The memory-efficient path gives the plain path's outputs and gradients, with every mask
    /// kind (none, causal, key padding with a sliding window, explicit with additive,
    /// block-sparse, bidirectional window), soft-capping, grouped heads, `l != s`, blocks that do not divide `s`, and a query
    /// with no allowed key. (The CPU kernel is off here, so ndarray runs the generic paths too.)
    fn memory_efficient_path_equals_the_plain_path<B: FusedAttentionBackend>(device: &B::Device) {
        crate::without_cpu_kernel(|| {
            memory_efficient_path_equals_the_plain_path_inner::<B>(device)
        });
    }

    fn memory_efficient_path_equals_the_plain_path_inner<B: FusedAttentionBackend>(
        device: &B::Device,
    ) {
        type A<B> = Autodiff<B>;
        focal_backend::seed::<B>(device, 18);
        let n = Distribution::Normal(0.0, 1.0);
        let (b, l, s) = (2, 5, 11);
        let q = Tensor::<A<B>, 4>::random([b, 4, l, 8], n, device).require_grad();
        let k = Tensor::<A<B>, 4>::random([b, 2, s, 8], n, device).require_grad();
        let v = Tensor::<A<B>, 4>::random([b, 2, s, 6], n, device).require_grad();
        let bias = Tensor::<A<B>, 4>::random([1, 4, l, s], n, device);
        let mut explicit =
            Tensor::<A<B>, 4>::random([b, 1, l, s], Distribution::Uniform(0.0, 1.0), device)
                .greater_elem(0.2);
        // Query 0 of batch 0 may attend nothing.
        explicit = explicit.slice_assign(
            [0..1, 0..1, 0..1, 0..s],
            Tensor::<A<B>, 4>::zeros([1, 1, 1, s], device).greater_elem(1.0),
        );
        let masks = [
            AttentionMask::none(),
            AttentionMask::causal(),
            AttentionMask::key_padding(padding_mask_from_lengths(&[11, 6], s, device))
                .and(AttentionMask::sliding_window(4)),
            AttentionMask::explicit(explicit).and(AttentionMask::additive(bias)),
            AttentionMask::block_sparse(3, 1).and(AttentionMask::causal()),
            AttentionMask::bidirectional_window(3),
        ];
        for (i, mask) in masks.into_iter().enumerate() {
            let run = |from: usize| {
                let attention = ScaledDotProductAttentionConfig::new()
                    .with_memory_efficient_from(from)
                    .with_key_block(4)
                    .init();
                let out = attention.forward(
                    AttentionInput::new(q.clone(), k.clone(), v.clone())
                        .mask(mask.clone())
                        .softcap(3.0),
                );
                let grads = (out.context.clone() * out.context.clone()).sum().backward();
                let g = |t: &Tensor<A<B>, 4>| t.grad(&grads).unwrap();
                (out.context.inner(), g(&q), g(&k), g(&v))
            };
            let (plain, pq, pk, pv) = run(usize::MAX);
            let (blocked, bq, bk, bv) = run(0);
            if i == 3 {
                let row = blocked.clone().slice([0..1, 0..4, 0..1, 0..6]);
                assert_close(row, Tensor::zeros([1, 4, 1, 6], device), 0.0);
            }
            assert_close(blocked, plain, 1e-5);
            assert_close(bq, pq, 1e-4);
            assert_close(bk, pk, 1e-4);
            assert_close(bv, pv, 1e-4);
        }
    }

    /// Rows at the edges of the float range agree on every path (the plain softmax, the fused
    /// call, the chunked online softmax, and on ndarray the CPU kernel and the generic paths
    /// with it off): a query whose allowed scores are all `f32::MIN` (an additive mask) attends
    /// uniformly, a query with no allowed key gets zeros, and an ordinary query its softmax.
    /// A finite starting maximum (-1e30) once zeroed the first row on the chunked path only.
    fn extreme_rows_agree_on_every_path<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 23);
        let (h, l, s, d) = (2, 3, 5, 4);
        let (q, k, v) = qkv::<B>(1, h, l, s, d, device);
        let mut bias = Tensor::<B, 4>::zeros([1, 1, l, s], device);
        bias = bias.slice_assign(
            [0..1, 0..1, 0..1, 0..s],
            Tensor::full([1, 1, 1, s], f32::MIN, device),
        );
        let mut allowed = Tensor::<B, 4>::ones([1, 1, l, s], device).greater_elem(0.5);
        allowed = allowed.slice_assign(
            [0..1, 0..1, 1..2, 0..s],
            Tensor::<B, 4>::zeros([1, 1, 1, s], device).greater_elem(0.5),
        );
        let mask = AttentionMask::additive(bias).and(AttentionMask::explicit(allowed));
        let uniform = v.clone().mean_dim(2); // [1, h, 1, d]
        let run = |from: usize, need_weights: bool| {
            ScaledDotProductAttentionConfig::new()
                .with_memory_efficient_from(from)
                .with_key_block(3)
                .init()
                .forward(
                    AttentionInput::new(q.clone(), k.clone(), v.clone())
                        .mask(mask.clone())
                        .need_weights(need_weights),
                )
        };
        let plain = run(usize::MAX, true);
        let weights = plain.weights.unwrap().slice([0..1, 0..h, 0..1, 0..s]);
        assert_close(
            weights,
            Tensor::full([1, h, 1, s], 1.0 / s as f32, device),
            1e-6,
        );
        let reference = plain.context;
        let paths = [
            ("fused", run(usize::MAX, false).context),
            ("chunked", run(0, false).context),
            (
                "fused, kernel off",
                crate::without_cpu_kernel(|| run(usize::MAX, false).context),
            ),
            (
                "chunked, kernel off",
                crate::without_cpu_kernel(|| run(0, false).context),
            ),
        ];
        for (path, context) in std::iter::once(("plain", reference.clone())).chain(paths) {
            let values: Vec<f32> = context.clone().into_data().to_vec().unwrap();
            assert!(values.iter().all(|x| x.is_finite()), "{path}: {values:?}");
            let row = |i: usize| context.clone().slice([0..1, 0..h, i..i + 1, 0..d]);
            assert_close(row(0), uniform.clone(), 1e-5);
            assert_close(row(1), Tensor::zeros([1, h, 1, d], device), 0.0);
            assert_close(context, reference.clone(), 1e-5);
        }
    }

    focal_backend::backend_tests!(
        extreme_rows_agree_on_every_path,
        fused_path_equals_the_plain_path_for_the_common_masks,
        memory_efficient_path_equals_the_plain_path,
        gradients_match_finite_differences,
        softcap_bounds_the_scores,
        grouped_query_attention_equals_repeated_heads,
        additive_mask_is_added_to_the_scores,
        matches_hand_computed_values,
        padding_invariance,
        fully_masked_row_gives_zeros,
        weights_sum_to_one_over_allowed_keys
    );

    #[test]
    fn dropout_is_applied_after_softmax_only_in_training() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        focal_backend::seed::<B>(&device, 4);
        let (q, k, v) = qkv::<B>(1, 1, 4, 4, 4, &device);
        let attn = ScaledDotProductAttentionConfig::new()
            .with_dropout(0.5)
            .init();
        // Without autodiff (inference) dropout is the identity.
        let plain = ScaledDotProductAttentionConfig::new().init();
        let a = attn.forward(AttentionInput::new(q.clone(), k.clone(), v.clone()));
        let b = plain.forward(AttentionInput::new(q.clone(), k.clone(), v.clone()));
        assert_close(a.context, b.context, 0.0);

        // With autodiff, dropped probabilities are 0 and kept ones are scaled by 2: with
        // v = identity the context equals the dropped-out probability matrix.
        type A = Autodiff<B>;
        let eye = Tensor::<A, 2>::from_data(
            TensorData::new(
                (0..16)
                    .map(|i| if i % 5 == 0 { 1.0f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
                [4, 4],
            ),
            &device,
        )
        .reshape([1, 1, 4, 4]);
        let out = attn.forward(
            AttentionInput::new(Tensor::<A, 4>::from_inner(q), Tensor::from_inner(k), eye)
                .need_weights(true),
        );
        let probs = out
            .weights
            .unwrap()
            .inner()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let ctx = out.context.inner().into_data().to_vec::<f32>().unwrap();
        let mut dropped = 0;
        for (c, p) in ctx.iter().zip(&probs) {
            if *c == 0.0 {
                dropped += 1;
            } else {
                assert!(
                    (c - 2.0 * p).abs() < 1e-5,
                    "kept probability {p} became {c}"
                );
            }
        }
        assert!((1..16).contains(&dropped), "{dropped} of 16 dropped");
    }

    /// In f64 the central difference is accurate to about 1e-9 with `eps = 1e-5`.
    #[test]
    fn gradients_match_finite_differences_in_f64() {
        check_gradients::<burn::backend::NdArray<f64>>(&Default::default(), 1e-5, 1e-7);
    }

    #[test]
    #[should_panic(expected = "attention shapes disagree")]
    fn mismatched_shapes_are_named() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        let (q, k, _) = qkv::<B>(1, 2, 3, 4, 8, &device);
        let v = Tensor::zeros([1, 2, 5, 8], &device);
        ScaledDotProductAttentionConfig::new()
            .init()
            .forward(AttentionInput::new(q, k, v));
    }

    #[test]
    fn negative_dropout_is_refused() {
        let err = ScaledDotProductAttentionConfig::new()
            .with_dropout(-0.1)
            .try_init()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ScaledDotProductAttentionConfig: dropout (-0.1) must be in [0, 1)"
        );
    }
}

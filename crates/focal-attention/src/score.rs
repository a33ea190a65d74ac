//! Score functions: how a query is compared with a key, and attention built on any of them.

use crate::sdpa::{attend, shared_kv_heads};
use crate::{AttentionInput, AttentionOutput};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
use focal_backend::ConfigError;

/// How queries are compared with keys: `[b, h, l, d_h] × [b, h, s, d_h] → [b, h, l, s]`.
#[derive(Config, Debug, PartialEq)]
pub enum ScoreKind {
    /// `q · k` (Luong "dot").
    Dot,
    /// `q · k / √d_h` (the Transformer's).
    ScaledDot,
    /// `cos(q, k) / τ`: cosine similarity with a temperature, fixed or learned (Swin V2,
    /// cosine attention). Scores lie in `[-1/τ, 1/τ]`.
    Cosine {
        /// The initial (or fixed) temperature `τ > 0`.
        temperature: f64,
        /// Whether `τ` is a trained parameter.
        learnable: bool,
    },
    /// `vᵀ tanh(W_q q + W_k k)` (Bahdanau, "additive"), with an inner width `d_attention`.
    Additive {
        /// Width of the hidden layer.
        d_attention: usize,
    },
    /// `qᵀ W k` with a learned `[d_h, d_h]` matrix (Luong "general").
    Bilinear,
}

/// Configuration of [`ScoreFunction`].
#[derive(Config, Debug)]
pub struct ScoreFunctionConfig {
    /// Width of queries and keys `d_h`.
    pub d_head: usize,
    /// The score.
    pub kind: ScoreKind,
}

impl ScoreFunctionConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "ScoreFunctionConfig";
        ConfigError::ensure_positive(NAME, "d_head", self.d_head)?;
        match self.kind {
            ScoreKind::Cosine { temperature, .. } => {
                ConfigError::ensure(temperature > 0.0, NAME, || {
                    format!("cosine temperature ({temperature}) must be positive")
                })
            }
            ScoreKind::Additive { d_attention } => {
                ConfigError::ensure_positive(NAME, "d_attention", d_attention)
            }
            _ => Ok(()),
        }
    }

    /// Builds the score function, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<ScoreFunction<B>, ConfigError> {
        self.validate()?;
        let d = self.d_head;
        let mut score = ScoreFunction {
            kind: self.kind.clone(),
            temperature: None,
            query_projection: None,
            key_projection: None,
            energy: None,
            bilinear: None,
        };
        match self.kind {
            ScoreKind::Cosine {
                temperature,
                learnable: true,
            } => {
                score.temperature = Some(Param::from_tensor(Tensor::from_floats(
                    [temperature as f32],
                    device,
                )))
            }
            ScoreKind::Additive { d_attention } => {
                score.query_projection = Some(LinearConfig::new(d, d_attention).init(device));
                score.key_projection = Some(
                    LinearConfig::new(d, d_attention)
                        .with_bias(false)
                        .init(device),
                );
                score.energy = Some(
                    LinearConfig::new(d_attention, 1)
                        .with_bias(false)
                        .init(device),
                );
            }
            ScoreKind::Bilinear => {
                let w = Initializer::XavierUniform { gain: 1.0 }.init_with(
                    [d, d],
                    Some(d),
                    Some(d),
                    device,
                );
                score.bilinear = Some(w);
            }
            _ => {}
        }
        Ok(score)
    }

    /// Builds the score function.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ScoreFunction<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A score function with its parameters (none for dot products).
#[derive(Module, Debug)]
pub struct ScoreFunction<B: Backend> {
    #[module(skip)]
    kind: ScoreKind,
    temperature: Option<Param<Tensor<B, 1>>>,
    query_projection: Option<Linear<B>>,
    key_projection: Option<Linear<B>>,
    energy: Option<Linear<B>>,
    bilinear: Option<Param<Tensor<B, 2>>>,
}

impl<B: Backend> ScoreFunction<B> {
    /// Scores every query against every key.
    ///
    /// # Shapes
    ///
    /// - query `[b, h, l, d_h]`, key `[b, h, s, d_h]` → scores `[b, h, l, s]`
    pub fn forward(&self, query: Tensor<B, 4>, key: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, l, d] = query.dims();
        let [_, _, s, _] = key.dims();
        match &self.kind {
            ScoreKind::Dot => query.matmul(key.swap_dims(2, 3)),
            ScoreKind::ScaledDot => query
                .matmul(key.swap_dims(2, 3))
                .div_scalar((d as f64).sqrt()),
            ScoreKind::Cosine { temperature, .. } => {
                let unit = focal_backend::math::l2_normalize::<B, 4>;
                let cosine = unit(query).matmul(unit(key).swap_dims(2, 3)); // [b, h, l, s]
                match &self.temperature {
                    Some(tau) => cosine / tau.val().reshape([1, 1, 1, 1]),
                    None => cosine.div_scalar(*temperature),
                }
            }
            ScoreKind::Additive { .. } => {
                let (wq, wk, v) = (
                    self.query_projection
                        .as_ref()
                        .expect("additive score has W_q"),
                    self.key_projection
                        .as_ref()
                        .expect("additive score has W_k"),
                    self.energy.as_ref().expect("additive score has v"),
                );
                let q = wq.forward(query).unsqueeze_dim::<5>(3); // [b, h, l, 1, a]
                let k = wk.forward(key).unsqueeze_dim::<5>(2); // [b, h, 1, s, a]
                v.forward((q + k).tanh()).reshape([b, h, l, s]) // [b, h, l, s]
            }
            ScoreKind::Bilinear => {
                let w = self.bilinear.as_ref().expect("bilinear score has W").val();
                let w = w.reshape([1, 1, d, d]).expand([b, h, d, d]);
                query.matmul(w).matmul(key.swap_dims(2, 3))
            }
        }
    }
}

/// Configuration of [`ScoredAttention`].
#[derive(Config, Debug)]
pub struct ScoredAttentionConfig {
    /// The score function.
    pub score: ScoreFunctionConfig,
    /// Dropout on the attention probabilities (after softmax). Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl ScoredAttentionConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.score.validate()?;
        ConfigError::ensure_dropout("ScoredAttentionConfig", "dropout", self.dropout)
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<ScoredAttention<B>, ConfigError> {
        self.validate()?;
        Ok(ScoredAttention {
            score: self.score.init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ScoredAttention<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Attention with any [`ScoreFunction`], with the same masking, fully-masked-row, dropout and
/// weights semantics as [`ScaledDotProductAttention`](crate::ScaledDotProductAttention).
/// `AttentionInput`'s scale, soft-cap and probability scale belong to the scaled dot product
/// and are refused here (a score function scales by its own parameters, e.g. the cosine's
/// temperature).
#[derive(Module, Debug)]
pub struct ScoredAttention<B: Backend> {
    score: ScoreFunction<B>,
    dropout: Dropout,
}

impl<B: Backend> ScoredAttention<B> {
    /// # Shapes
    ///
    /// - query `[b, h, l, d_h]`, key `[b, h_kv, s, d_h]`, value `[b, h_kv, s, d_v]`
    /// - context `[b, h, l, d_v]`, weights `[b, h, l, s]`
    ///
    /// # Panics
    ///
    /// When the shapes disagree, or the input sets a scale, a soft-cap or a probability scale
    /// (the message names it).
    pub fn forward(&self, input: AttentionInput<B>) -> AttentionOutput<B> {
        let (query, key, value, mask, need_weights) = input.into_parts();
        let (key, value) = shared_kv_heads(&query, key, value);
        let scores = self.score.forward(query, key);
        attend(scores, value, &mask, &self.dropout, need_weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FusedAttentionBackend;
    use crate::{AttentionMask, ScaledDotProductAttentionConfig, padding_mask_from_lengths};
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;
    use focal_backend::assert_close;

    fn score<B: FusedAttentionBackend>(
        kind: ScoreKind,
        d: usize,
        device: &B::Device,
    ) -> ScoreFunction<B> {
        ScoreFunctionConfig::new(d, kind).init(device)
    }

    fn dot_scores_follow_their_formulas<B: FusedAttentionBackend>(device: &B::Device) {
        let q = Tensor::<B, 4>::from_floats([[[[1.0, 2.0, 0.0, 0.0]]]], device);
        let k =
            Tensor::<B, 4>::from_floats([[[[3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]]], device);
        let dot = score::<B>(ScoreKind::Dot, 4, device).forward(q.clone(), k.clone());
        assert_close(dot, Tensor::from_floats([[[[5.0, 0.0]]]], device), 1e-6);
        let scaled = score::<B>(ScoreKind::ScaledDot, 4, device).forward(q, k);
        assert_close(scaled, Tensor::from_floats([[[[2.5, 0.0]]]], device), 1e-6);
    }

    fn cosine_scores_are_bounded_by_the_temperature<B: FusedAttentionBackend>(device: &B::Device) {
        let q = Tensor::<B, 4>::from_floats([[[[2.0, 0.0]]]], device);
        let k = Tensor::<B, 4>::from_floats([[[[5.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]]], device);
        let kind = ScoreKind::Cosine {
            temperature: 0.5,
            learnable: false,
        };
        let cosine = score::<B>(kind, 2, device).forward(q, k);
        assert_close(
            cosine,
            Tensor::from_floats([[[[2.0, 0.0, -2.0]]]], device),
            1e-6,
        );
    }

    /// The learned temperature receives a gradient.
    fn learnable_temperature_is_trained<B: FusedAttentionBackend>(device: &B::Device) {
        type A<B> = Autodiff<B>;
        let kind = ScoreKind::Cosine {
            temperature: 1.0,
            learnable: true,
        };
        let cosine = score::<A<B>>(kind, 2, device);
        let q = Tensor::<A<B>, 4>::from_floats([[[[1.0, 0.0]]]], device);
        let k = Tensor::<A<B>, 4>::from_floats([[[[1.0, 0.0]]]], device);
        let grads = cosine.forward(q, k).sum().backward();
        let g = cosine.temperature.as_ref().unwrap().grad(&grads).unwrap();
        // d(1/τ)/dτ = -1/τ² = -1 at τ = 1.
        assert_close(g, Tensor::from_floats([-1.0], device), 1e-6);
    }

    /// Additive scores equal `vᵀ tanh(W_q q + W_k k)` computed pair by pair.
    fn additive_scores_follow_bahdanau<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 16);
        let additive = score::<B>(ScoreKind::Additive { d_attention: 5 }, 3, device);
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([1, 1, 2, 3], n, device);
        let k = Tensor::<B, 4>::random([1, 1, 3, 3], n, device);
        let scores = additive.forward(q.clone(), k.clone());
        let (wq, wk, v) = (
            additive.query_projection.as_ref().unwrap(),
            additive.key_projection.as_ref().unwrap(),
            additive.energy.as_ref().unwrap(),
        );
        for i in 0..2 {
            for j in 0..3 {
                let qi = wq.forward(q.clone().slice([0..1, 0..1, i..i + 1, 0..3]));
                let kj = wk.forward(k.clone().slice([0..1, 0..1, j..j + 1, 0..3]));
                let expected = v.forward((qi + kj).tanh()); // [1, 1, 1, 1]
                let actual = scores.clone().slice([0..1, 0..1, i..i + 1, j..j + 1]);
                assert_close(actual, expected, 1e-6);
            }
        }
    }

    /// With `W = I` the bilinear score is the dot product.
    fn bilinear_with_identity_is_the_dot_product<B: FusedAttentionBackend>(device: &B::Device) {
        let mut bilinear = score::<B>(ScoreKind::Bilinear, 4, device);
        let eye = Tensor::<B, 2>::from_floats(
            [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            device,
        );
        bilinear.bilinear = Some(Param::from_tensor(eye));
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([2, 2, 3, 4], n, device);
        let k = Tensor::<B, 4>::random([2, 2, 5, 4], n, device);
        let expected = score::<B>(ScoreKind::Dot, 4, device).forward(q.clone(), k.clone());
        assert_close(bilinear.forward(q, k), expected, 1e-5);
    }

    /// Scored attention with the scaled dot product is scaled dot-product attention.
    fn scaled_dot_scored_attention_equals_sdpa<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 17);
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([2, 4, 3, 8], n, device);
        let k = Tensor::<B, 4>::random([2, 2, 5, 8], n, device);
        let v = Tensor::<B, 4>::random([2, 2, 5, 8], n, device);
        let input = || {
            AttentionInput::new(q.clone(), k.clone(), v.clone())
                .mask(AttentionMask::causal())
                .need_weights(true)
        };
        let scored = ScoredAttentionConfig::new(ScoreFunctionConfig::new(8, ScoreKind::ScaledDot))
            .init::<B>(device)
            .forward(input());
        let plain = ScaledDotProductAttentionConfig::new()
            .init()
            .forward(input());
        assert_close(scored.context, plain.context, 1e-6);
        assert_close(scored.weights.unwrap(), plain.weights.unwrap(), 1e-6);
    }

    /// For every score kind: changing padded keys and values changes nothing, and a query with
    /// no allowed key gets zeros.
    fn every_score_kind_respects_masks<B: FusedAttentionBackend>(device: &B::Device) {
        let kinds = [
            ScoreKind::Dot,
            ScoreKind::ScaledDot,
            ScoreKind::Cosine {
                temperature: 0.2,
                learnable: true,
            },
            ScoreKind::Additive { d_attention: 6 },
            ScoreKind::Bilinear,
        ];
        for kind in kinds {
            focal_backend::seed::<B>(device, 19);
            let attention = ScoredAttentionConfig::new(ScoreFunctionConfig::new(4, kind.clone()))
                .init::<B>(device);
            let n = Distribution::Normal(0.0, 1.0);
            let q = Tensor::<B, 4>::random([2, 2, 4, 4], n, device);
            let k = Tensor::<B, 4>::random([2, 2, 3, 4], n, device);
            let v = Tensor::<B, 4>::random([2, 2, 3, 4], n, device);
            // Batch 1 has one real key; with causal s < l, query 0 sees no key at all.
            let mask = AttentionMask::key_padding(padding_mask_from_lengths(&[3, 1], 3, device))
                .and(AttentionMask::causal());
            let out = attention
                .forward(AttentionInput::new(q.clone(), k.clone(), v.clone()).mask(mask.clone()));
            let noise =
                Tensor::<B, 4>::random([1, 2, 2, 4], Distribution::Normal(0.0, 9.0), device);
            let k2 = k.slice_assign([1..2, 0..2, 1..3, 0..4], noise.clone());
            let v2 = v.slice_assign([1..2, 0..2, 1..3, 0..4], noise);
            let out2 = attention.forward(AttentionInput::new(q, k2, v2).mask(mask));
            assert_close(out.context.clone(), out2.context, 1e-5);
            let first_row = out.context.slice([0..2, 0..2, 0..1, 0..4]);
            assert_close(first_row, Tensor::zeros([2, 2, 1, 4], device), 0.0);
        }
    }

    focal_backend::backend_tests!(
        every_score_kind_respects_masks,
        dot_scores_follow_their_formulas,
        cosine_scores_are_bounded_by_the_temperature,
        learnable_temperature_is_trained,
        additive_scores_follow_bahdanau,
        bilinear_with_identity_is_the_dot_product,
        scaled_dot_scored_attention_equals_sdpa
    );

    /// The scaled dot product's scale and soft-cap are not silently dropped by a score
    /// function: each is refused, by name.
    #[test]
    fn scale_and_softcap_are_refused() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        let attention = ScoredAttentionConfig::new(ScoreFunctionConfig::new(4, ScoreKind::Dot))
            .init::<B>(&device);
        let input = || {
            let x = Tensor::<B, 4>::ones([1, 1, 2, 4], &device);
            AttentionInput::new(x.clone(), x.clone(), x)
        };
        for (input, option) in [
            (input().scale(0.5), "a scale (AttentionInput::scale)"),
            (
                input().softcap(30.0),
                "a soft-cap (AttentionInput::softcap)",
            ),
        ] {
            let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                attention.forward(input);
            }))
            .unwrap_err();
            let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(message.starts_with(option), "{message}");
        }
        // Without them it runs.
        assert_eq!(attention.forward(input()).context.dims(), [1, 1, 2, 4]);
    }

    #[test]
    fn non_positive_temperature_is_refused() {
        let kind = ScoreKind::Cosine {
            temperature: 0.0,
            learnable: false,
        };
        let err = ScoreFunctionConfig::new(4, kind).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ScoreFunctionConfig: cosine temperature (0) must be positive"
        );
    }
}

//! Normalisation layers: LayerNorm and RMSNorm, and the residual wiring around a sublayer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{Tensor, backend::Backend};
use focal_attention::FusedAttentionBackend;
use focal_backend::ConfigError;

/// Which normalisation a block uses.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// LayerNorm: `(x - mean) / sqrt(var + eps) · γ + β` (Transformer, BERT, GPT-2).
    LayerNorm,
    /// RMSNorm: `x / sqrt(mean(x²) + eps) · γ`, no centring and no bias (T5, LLaMA).
    RmsNorm,
}

/// Configuration of [`Norm`].
#[derive(Config, Debug)]
pub struct NormConfig {
    /// Width `d` of the normalised last dimension.
    pub d_model: usize,
    /// LayerNorm or RMSNorm. Default LayerNorm.
    #[config(default = "NormKind::LayerNorm")]
    pub kind: NormKind,
    /// Epsilon under the square root. Default 1e-5, as in PyTorch.
    #[config(default = 1e-5)]
    pub eps: f64,
}

impl NormConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "NormConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure(self.eps > 0.0, NAME, || {
            format!("eps ({}) must be positive", self.eps)
        })
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<Norm<B>, ConfigError> {
        self.validate()?;
        Ok(match self.kind {
            NormKind::LayerNorm => Norm::LayerNorm(
                LayerNormConfig::new(self.d_model)
                    .with_epsilon(self.eps)
                    .init(device),
            ),
            NormKind::RmsNorm => Norm::RmsNorm(
                RmsNormConfig::new(self.d_model)
                    .with_epsilon(self.eps)
                    .init(device),
            ),
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid (see [`Self::try_init`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Norm<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A LayerNorm or an RMSNorm (burn-nn's), over the last dimension.
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    /// burn-nn's LayerNorm.
    LayerNorm(LayerNorm<B>),
    /// burn-nn's RMSNorm.
    RmsNorm(RmsNorm<B>),
}

impl<B: FusedAttentionBackend> Norm<B> {
    /// # Shapes
    ///
    /// - x `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_residual(x, None)
    }

    /// `norm(x + residual)`, in one pass on backends with a fused norm (Focal's CPU kernel on
    /// ndarray, forward and backward); otherwise burn-nn's module on the sum.
    ///
    /// # Shapes
    ///
    /// - x, residual `[..., d]` → `[..., d]`
    pub fn forward_residual<const D: usize>(
        &self,
        x: Tensor<B, D>,
        residual: Option<Tensor<B, D>>,
    ) -> Tensor<B, D> {
        let (gamma, beta, eps, centered) = match self {
            Norm::LayerNorm(norm) => match layer_norm_epsilon(norm) {
                Some(eps) => (&norm.gamma, norm.beta.as_ref(), eps, true),
                None => return norm.forward(sum(x, residual)),
            },
            Norm::RmsNorm(norm) => (&norm.gamma, None, norm.epsilon, false),
        };
        B::fused_norm(
            x,
            residual,
            gamma.val(),
            beta.map(|b| b.val()),
            eps,
            centered,
        )
    }
}

/// `x + residual`, or `x`.
fn sum<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    residual: Option<Tensor<B, D>>,
) -> Tensor<B, D> {
    match residual {
        Some(residual) => x + residual,
        None => x,
    }
}

/// A burn-nn LayerNorm's epsilon, which it keeps private but shows in its module display
/// (Rust's shortest round-trip formatting, so the value is exact). `None` if burn ever shows it
/// otherwise: the caller then uses the module itself.
fn layer_norm_epsilon<B: Backend>(norm: &LayerNorm<B>) -> Option<f64> {
    use burn::module::{Content, DisplaySettings, ModuleDisplay};
    let content = norm.custom_content(Content::new(DisplaySettings::default()))?;
    let attribute = content.attributes.iter().find(|a| a.name == "epsilon")?;
    attribute.value.parse().ok()
}

/// Where the norm sits relative to the residual connection.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `norm(x + dropout(f(x)))`: the original Transformer and BERT (PyTorch `norm_first=False`).
    Post,
    /// `x + dropout(f(norm(x)))`: GPT-2 and most modern models (PyTorch `norm_first=True`);
    /// usually paired with a final norm after the stack.
    Pre,
}

/// Configuration of [`ResidualNorm`].
#[derive(Config, Debug)]
pub struct ResidualNormConfig {
    /// The norm.
    pub norm: NormConfig,
    /// Pre- or post-norm. Default post-norm.
    #[config(default = "NormPlacement::Post")]
    pub placement: NormPlacement,
    /// Dropout on the sublayer's output before the addition. Default 0.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl ResidualNormConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.norm.validate()?;
        ConfigError::ensure_dropout("ResidualNormConfig", "dropout", self.dropout)
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<ResidualNorm<B>, ConfigError> {
        self.validate()?;
        Ok(ResidualNorm {
            norm: self.norm.try_init(device)?,
            dropout: DropoutConfig::new(self.dropout).init(),
            placement: self.placement,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid (see [`Self::try_init`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResidualNorm<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A sublayer wrapped in a residual connection and a norm, pre- or post-norm.
#[derive(Module, Debug)]
pub struct ResidualNorm<B: Backend> {
    /// The norm.
    pub norm: Norm<B>,
    dropout: Dropout,
    #[module(skip)]
    placement: NormPlacement,
}

impl<B: FusedAttentionBackend> ResidualNorm<B> {
    /// Applies `sublayer` with the residual connection and norm; the sublayer may return an extra
    /// value (e.g. attention weights), which is passed through.
    ///
    /// # Shapes
    ///
    /// - x `[b, l, d]`; `sublayer` maps `[b, l, d]` → `[b, l, d]`; output `[b, l, d]`
    pub fn forward<T>(
        &self,
        x: Tensor<B, 3>,
        sublayer: impl FnOnce(Tensor<B, 3>) -> (Tensor<B, 3>, T),
    ) -> (Tensor<B, 3>, T) {
        match self.placement {
            NormPlacement::Post => {
                let (y, extra) = sublayer(x.clone());
                let y = self.dropout.forward(y);
                (self.norm.forward_residual(y, Some(x)), extra)
            }
            NormPlacement::Pre => {
                let (y, extra) = sublayer(self.norm.forward(x.clone()));
                (x + self.dropout.forward(y), extra)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use focal_backend::assert_close;

    fn post_and_pre_norm_wiring<B: FusedAttentionBackend>(device: &B::Device) {
        let x = Tensor::<B, 3>::random([2, 3, 4], Distribution::Normal(0.0, 1.0), device);
        let double = |t: Tensor<B, 3>| (t.clone() * 2.0, ());
        let post = ResidualNormConfig::new(NormConfig::new(4)).init::<B>(device);
        let (y, ()) = post.forward(x.clone(), double);
        // A fresh LayerNorm has γ = 1, β = 0: post-norm gives norm(3x).
        assert_close(y, post.norm.forward(x.clone() * 3.0), 1e-6);

        let pre = ResidualNormConfig::new(NormConfig::new(4))
            .with_placement(NormPlacement::Pre)
            .init::<B>(device);
        let (y, ()) = pre.forward(x.clone(), double);
        assert_close(y, x.clone() + pre.norm.forward(x) * 2.0, 1e-6);
    }

    /// RMSNorm of `[3, 4]` with γ = 1: `x / sqrt((9 + 16) / 2 + eps)`.
    fn rms_norm_matches_its_formula<B: FusedAttentionBackend>(device: &B::Device) {
        let norm = NormConfig::new(2)
            .with_kind(NormKind::RmsNorm)
            .with_eps(1e-6)
            .init::<B>(device);
        let x = Tensor::<B, 2>::from_floats([[3.0, 4.0]], device);
        let rms = (12.5f32 + 1e-6).sqrt();
        assert_close(
            norm.forward(x),
            Tensor::from_floats([[3.0 / rms, 4.0 / rms]], device),
            1e-6,
        );
    }

    /// The fused norm (Focal's CPU kernel on ndarray) equals burn-nn's modules on `x +
    /// residual`, values and the gradients of the input, the residual, γ and β, for LayerNorm
    /// (BERT's eps 1e-12 and 1e-5, with and without β) and RMSNorm, with random γ and β.
    fn fused_norm_equals_burn_nn<B: FusedAttentionBackend>(device: &B::Device) {
        use burn::backend::Autodiff;
        use burn::module::Param;
        type A<B> = Autodiff<B>;
        let normal = Distribution::Normal(0.0, 1.0);
        for (kind, eps, bias, d) in [
            (NormKind::LayerNorm, 1e-12, true, 384),
            (NormKind::LayerNorm, 1e-5, false, 7),
            (NormKind::RmsNorm, 1e-6, false, 33),
        ] {
            let mut norm = NormConfig::new(d)
                .with_kind(kind)
                .with_eps(eps)
                .init::<A<B>>(device);
            let gamma = Tensor::<A<B>, 1>::random([d], normal, device);
            let beta = Tensor::<A<B>, 1>::random([d], normal, device);
            match &mut norm {
                Norm::LayerNorm(n) => {
                    n.gamma = Param::from_tensor(gamma.clone());
                    n.beta = bias.then(|| Param::from_tensor(beta.clone()));
                }
                Norm::RmsNorm(n) => n.gamma = Param::from_tensor(gamma.clone()),
            }
            let x = Tensor::<A<B>, 3>::random([2, 5, d], normal, device).mul_scalar(3.0);
            let r = Tensor::<A<B>, 3>::random([2, 5, d], normal, device);
            let upstream = Tensor::<A<B>, 3>::random([2, 5, d], normal, device);
            let run = |fused: bool| {
                let (x, r) = (x.clone().require_grad(), r.clone().require_grad());
                let y = if fused {
                    norm.forward_residual(x.clone(), Some(r.clone()))
                } else {
                    match &norm {
                        Norm::LayerNorm(n) => n.forward(x.clone() + r.clone()),
                        Norm::RmsNorm(n) => n.forward(x.clone() + r.clone()),
                    }
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let (gamma, beta) = match &norm {
                    Norm::LayerNorm(n) => (&n.gamma, n.beta.as_ref()),
                    Norm::RmsNorm(n) => (&n.gamma, None),
                };
                (
                    y.inner(),
                    x.grad(&grads).unwrap(),
                    r.grad(&grads).unwrap(),
                    gamma.grad(&grads).unwrap(),
                    beta.map(|b| b.grad(&grads).unwrap()),
                )
            };
            let (fused, plain) = (run(true), run(false));
            assert_close(fused.0, plain.0, 1e-5);
            assert_close(fused.1, plain.1, 1e-4);
            assert_close(fused.2, plain.2, 1e-4);
            assert_close(fused.3, plain.3, 1e-4);
            if let (Some(f), Some(p)) = (fused.4, plain.4) {
                assert_close(f, p, 1e-4);
            }
        }
    }

    focal_backend::backend_tests!(
        post_and_pre_norm_wiring,
        rms_norm_matches_its_formula,
        fused_norm_equals_burn_nn
    );

    /// The epsilon is read back exactly from burn-nn's LayerNorm (a change in how burn shows it
    /// fails here, not silently: the norm would fall back to burn's module).
    #[test]
    fn layer_norm_epsilon_is_read_exactly() {
        for eps in [1e-5, 1e-12, 1e-6, 0.1, 1.234_567_890_123e-7] {
            let norm = burn::nn::LayerNormConfig::new(4)
                .with_epsilon(eps)
                .init::<focal_backend::NdArray>(&Default::default());
            assert_eq!(layer_norm_epsilon(&norm), Some(eps));
        }
    }

    /// `try_init` returns the error `validate` gives instead of panicking.
    #[cfg(feature = "ndarray")]
    #[test]
    fn try_init_returns_the_configuration_error() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        let err = NormConfig::new(0).try_init::<B>(&device).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid NormConfig: d_model must be at least 1, got 0"
        );
        let err = ResidualNormConfig::new(NormConfig::new(4))
            .with_dropout(1.5)
            .try_init::<B>(&device)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ResidualNormConfig: dropout (1.5) must be in [0, 1)"
        );
        assert!(
            ResidualNormConfig::new(NormConfig::new(4))
                .try_init::<B>(&device)
                .is_ok()
        );
    }

    #[test]
    fn non_positive_eps_is_refused() {
        let err = NormConfig::new(4).with_eps(0.0).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid NormConfig: eps (0) must be positive"
        );
    }
}

//! Normalisation layers: LayerNorm and RMSNorm, and the residual wiring around a sublayer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{Tensor, backend::Backend};
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

impl<B: Backend> Norm<B> {
    /// # Shapes
    ///
    /// - x `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Norm::LayerNorm(norm) => norm.forward(x),
            Norm::RmsNorm(norm) => norm.forward(x),
        }
    }
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

impl<B: Backend> ResidualNorm<B> {
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
                (self.norm.forward(x + self.dropout.forward(y)), extra)
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

    fn post_and_pre_norm_wiring<B: Backend>(device: &B::Device) {
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
    fn rms_norm_matches_its_formula<B: Backend>(device: &B::Device) {
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

    focal_backend::backend_tests!(post_and_pre_norm_wiring, rms_norm_matches_its_formula);

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

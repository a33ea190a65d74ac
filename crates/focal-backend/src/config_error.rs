//! The error a configuration gives when it is refused.

/// A configuration refused at construction: which config and why, with the offending values.
///
/// Every `XConfig` in Focal has `validate() -> Result<(), ConfigError>`; its `init` panics with
/// this message and its `try_init` returns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {config}: {message}")]
pub struct ConfigError {
    /// The config type that was refused, e.g. `MultiHeadAttentionConfig`.
    pub config: &'static str,
    /// What is wrong, naming the values, e.g. `d_model (100) is not divisible by n_heads (8)`.
    pub message: String,
}

impl ConfigError {
    /// A refusal of `config` with a message that names the offending values.
    pub fn new(config: &'static str, message: impl Into<String>) -> Self {
        Self {
            config,
            message: message.into(),
        }
    }

    /// Returns `Err` with `message` when `condition` is false.
    ///
    /// ```
    /// # use focal_backend::ConfigError;
    /// let (d, h) = (100, 8);
    /// let err = ConfigError::ensure(d % h == 0, "Cfg", || format!("{d} % {h} != 0")).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid Cfg: 100 % 8 != 0");
    /// ```
    pub fn ensure(
        condition: bool,
        config: &'static str,
        message: impl FnOnce() -> String,
    ) -> Result<(), Self> {
        if condition {
            Ok(())
        } else {
            Err(Self::new(config, message()))
        }
    }

    /// Checks that a dropout probability lies in `[0, 1)`.
    pub fn ensure_dropout(config: &'static str, name: &str, p: f64) -> Result<(), Self> {
        Self::ensure((0.0..1.0).contains(&p), config, || {
            format!("{name} ({p}) must be in [0, 1)")
        })
    }

    /// Checks that a size is at least one.
    pub fn ensure_positive(config: &'static str, name: &str, value: usize) -> Result<(), Self> {
        Self::ensure(value > 0, config, || {
            format!("{name} must be at least 1, got {value}")
        })
    }
}

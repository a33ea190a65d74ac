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

/// The memory of this machine in bytes (`MemTotal` of `/proc/meminfo`), or `None` where it is
/// not known (other systems); read once.
pub fn machine_memory() -> Option<u64> {
    static MEMORY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// `bytes` for people: `512` → `"512 B"`, `1536` → `"1.5 KiB"`.
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The product of `factors`, or `None` when it overflows 128 bits.
pub fn checked_product(factors: &[usize]) -> Option<u128> {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(f as u128))
}

impl ConfigError {
    /// Refuses sizes whose tensors cannot be allocated, before anything is: `floats` is the
    /// number of `f32` values `what` would hold (`None` when counting them overflowed). More
    /// bytes than this machine's memory (or, where that is unknown, than 2⁶⁴) is an error that
    /// names the estimate, instead of an abort inside the allocator.
    ///
    /// ```
    /// # use focal_backend::ConfigError;
    /// let err = ConfigError::ensure_fits("Cfg", "the weights", Some(1 << 70)).unwrap_err();
    /// assert!(err.to_string().starts_with("invalid Cfg: the weights would need 4.0 ZiB"));
    /// ```
    pub fn ensure_fits(config: &'static str, what: &str, floats: Option<u128>) -> Result<(), Self> {
        let limit = machine_memory().map_or(u64::MAX as u128, u128::from);
        let bytes = floats.and_then(|n| n.checked_mul(4));
        match bytes {
            Some(bytes) if bytes <= limit => Ok(()),
            _ => {
                let needed = bytes.map_or_else(|| "more than 2¹²⁸ bytes".to_string(), format_bytes);
                let memory = machine_memory().map_or_else(
                    || "what any machine has".to_string(),
                    |m| format!("this machine's {}", format_bytes(m.into())),
                );
                Err(Self::new(
                    config,
                    format!("{what} would need {needed} of memory, more than {memory}"),
                ))
            }
        }
    }
}

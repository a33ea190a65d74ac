//! T5-style bucketed relative position bias (Raffel et al., 2020).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use focal_backend::ConfigError;

/// The bucket of a relative position `key - query`, as in T5 (Hugging Face's
/// `T5Attention._relative_position_bucket`): half the buckets hold exact small distances, the
/// rest logarithmically larger ones up to `max_distance`, beyond which all share the last
/// bucket. Bidirectional bucketing gives keys after the query their own half of the buckets;
/// causal bucketing maps every key after the query to bucket 0.
///
/// The logarithm is taken in `f32`, as PyTorch does, so that buckets match at the boundaries.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative_position > 0 {
            bucket += buckets;
        }
        relative_position.abs()
    } else {
        -relative_position.min(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let scaled = (distance as f32 / max_exact as f32).ln()
            / (max_distance as f32 / max_exact as f32).ln()
            * (buckets - max_exact) as f32;
        bucket += (max_exact + scaled as i64).min(buckets - 1);
    }
    bucket as usize
}

/// Configuration of [`RelativePositionBias`].
#[derive(Config, Debug)]
pub struct RelativePositionBiasConfig {
    /// Number of heads `h`: one learned scalar per head and bucket.
    pub n_heads: usize,
    /// Bidirectional (encoder) or causal (decoder) bucketing. Default bidirectional.
    #[config(default = true)]
    pub bidirectional: bool,
    /// Number of buckets. Default 32, as T5.
    #[config(default = 32)]
    pub num_buckets: usize,
    /// Distances from this on share the last bucket. Default 128, as T5.
    #[config(default = 128)]
    pub max_distance: usize,
}

impl RelativePositionBiasConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "RelativePositionBiasConfig";
        ConfigError::ensure_positive(NAME, "n_heads", self.n_heads)?;
        let minimum = if self.bidirectional { 4 } else { 2 };
        ConfigError::ensure(self.num_buckets >= minimum, NAME, || {
            format!(
                "num_buckets ({}) must be at least {minimum} with bidirectional = {}",
                self.num_buckets, self.bidirectional
            )
        })?;
        let exact = self.num_buckets / if self.bidirectional { 4 } else { 2 };
        ConfigError::ensure(self.max_distance > exact, NAME, || {
            format!(
                "max_distance ({}) must exceed the {exact} exactly-bucketed distances",
                self.max_distance
            )
        })
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<RelativePositionBias<B>, ConfigError> {
        self.validate()?;
        Ok(RelativePositionBias {
            buckets: EmbeddingConfig::new(self.num_buckets, self.n_heads).init(device),
            bidirectional: self.bidirectional,
            num_buckets: self.num_buckets,
            max_distance: self.max_distance,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RelativePositionBias<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A learned bias per head and relative-position bucket, added to the attention scores
/// (`AttentionMask::additive`).
#[derive(Module, Debug)]
pub struct RelativePositionBias<B: Backend> {
    buckets: Embedding<B>,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl<B: Backend> RelativePositionBias<B> {
    /// The learned table, one scalar per bucket and head.
    ///
    /// # Shapes
    ///
    /// - output `[num_buckets, h]`
    pub fn table(&self) -> Tensor<B, 2> {
        self.buckets.weight.val()
    }

    /// The bias for `l` queries and `s` keys, queries aligned bottom-right (query `i` at key
    /// position `i + s - l`, so a cached decoding step of `l = 1` is the last row of the full
    /// `[s, s]` bias).
    ///
    /// # Shapes
    ///
    /// - output `[1, h, l, s]`
    pub fn forward(&self, l: usize, s: usize, device: &B::Device) -> Tensor<B, 4> {
        let offset = s as i64 - l as i64;
        let ids: Vec<i64> = (0..l as i64)
            .flat_map(|i| {
                (0..s as i64).map(move |j| {
                    relative_position_bucket(
                        j - (i + offset),
                        self.bidirectional,
                        self.num_buckets,
                        self.max_distance,
                    ) as i64
                })
            })
            .collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [l, s]), device);
        self.buckets
            .forward(ids) // [l, s, h]
            .permute([2, 0, 1]) // [h, l, s]
            .unsqueeze::<4>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_backend::assert_close;

    #[test]
    fn buckets_are_exact_near_and_logarithmic_far() {
        // Bidirectional, 32 buckets: 16 per direction, 8 exact.
        assert_eq!(relative_position_bucket(0, true, 32, 128), 0);
        assert_eq!(relative_position_bucket(-7, true, 32, 128), 7);
        assert_eq!(relative_position_bucket(7, true, 32, 128), 16 + 7);
        assert_eq!(relative_position_bucket(-1000, true, 32, 128), 15);
        // Causal: keys after the query share bucket 0.
        assert_eq!(relative_position_bucket(5, false, 32, 128), 0);
        assert_eq!(relative_position_bucket(-1000, false, 32, 128), 31);
    }

    /// The last row of the full bias is the bias of a single query (cached decoding).
    fn single_query_is_the_last_row<B: Backend>(device: &B::Device) {
        let bias = RelativePositionBiasConfig::new(3)
            .with_bidirectional(false)
            .init::<B>(device);
        let full = bias.forward(5, 5, device);
        let last = bias.forward(1, 5, device);
        assert_eq!(full.dims(), [1, 3, 5, 5]);
        assert_close(full.slice([0..1, 0..3, 4..5, 0..5]), last, 0.0);
    }

    focal_backend::backend_tests!(single_query_is_the_last_row);

    #[test]
    fn too_few_buckets_are_refused() {
        let err = RelativePositionBiasConfig::new(2)
            .with_num_buckets(2)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid RelativePositionBiasConfig: num_buckets (2) must be at least 4 with bidirectional = true"
        );
    }
}

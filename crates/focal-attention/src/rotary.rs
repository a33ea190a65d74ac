//! Rotary position embeddings (RoPE, Su et al., 2021).

use crate::positional::position_rows;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use focal_backend::ConfigError;

/// Configuration of [`RotaryEncoding`].
#[derive(Config, Debug)]
pub struct RotaryEncodingConfig {
    /// Width of one head `d_h`; must be even.
    pub d_head: usize,
    /// The longest sequence (plus offset) the encoding will be asked for. Default 2048.
    #[config(default = 2048)]
    pub max_len: usize,
    /// Base of the frequencies `θ_i = base^(-2i / d_h)`. Default 10000.
    #[config(default = 10000.0)]
    pub base: f64,
}

impl RotaryEncodingConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "RotaryEncodingConfig";
        ConfigError::ensure_positive(NAME, "d_head", self.d_head)?;
        ConfigError::ensure(self.d_head.is_multiple_of(2), NAME, || {
            format!("d_head ({}) must be even", self.d_head)
        })?;
        ConfigError::ensure_positive(NAME, "max_len", self.max_len)?;
        ConfigError::ensure(self.base > 1.0, NAME, || {
            format!("base ({}) must be greater than 1", self.base)
        })
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<RotaryEncoding<B>, ConfigError> {
        self.validate()?;
        let half = self.d_head / 2;
        // Angles in f64 on the host: position · θ_i, repeated over both halves ([p, d_h]).
        let mut cos = Vec::with_capacity(self.max_len * self.d_head);
        let mut sin = Vec::with_capacity(self.max_len * self.d_head);
        for position in 0..self.max_len {
            for dim in 0..self.d_head {
                let i = (dim % half) as f64;
                let angle = position as f64 * self.base.powf(-2.0 * i / self.d_head as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = [self.max_len, self.d_head];
        Ok(RotaryEncoding {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RotaryEncoding<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Rotates each pair of features of queries and keys by an angle proportional to the position,
/// so that `q · k` depends on the positions only through their difference.
///
/// Uses the "rotate half" layout of GPT-NeoX and Hugging Face's LLaMA: feature `i` is paired
/// with feature `i + d_h / 2`. The cos/sin tables are constants, moved with the module and not
/// saved.
#[derive(Module, Debug)]
pub struct RotaryEncoding<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> RotaryEncoding<B> {
    /// Rotates `x` as if its `l` rows sat at positions `offset .. offset + l` (the offset is the
    /// number of cached positions during decoding).
    ///
    /// # Shapes
    ///
    /// - x `[b, h, l, d_h]` → `[b, h, l, d_h]`
    ///
    /// # Panics
    ///
    /// When `offset + l` exceeds `max_len` or the head width differs from the configured one.
    pub fn forward(&self, x: Tensor<B, 4>, offset: usize) -> Tensor<B, 4> {
        let [b, h, l, d] = x.dims();
        let rows = |table: &Tensor<B, 2>| {
            position_rows("rotary encoding", table.clone(), offset, l, d).reshape([1, 1, l, d])
        };
        let (cos, sin) = (rows(&self.cos), rows(&self.sin));
        let half = d / 2;
        let first = x.clone().slice([0..b, 0..h, 0..l, 0..half]);
        let second = x.clone().slice([0..b, 0..h, 0..l, half..d]);
        let rotated = Tensor::cat(vec![second.neg(), first], 3); // [-x2, x1], [b, h, l, d_h]
        x * cos + rotated * sin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use focal_backend::assert_close;

    /// Scores of rotated queries and keys depend only on the distance between positions.
    fn scores_depend_on_relative_position_only<B: Backend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 6);
        let rope = RotaryEncodingConfig::new(8)
            .with_max_len(32)
            .init::<B>(device);
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([1, 1, 1, 8], n, device);
        let k = Tensor::<B, 4>::random([1, 1, 1, 8], n, device);
        let score = |pq: usize, pk: usize| {
            let q = rope.forward(q.clone(), pq);
            let k = rope.forward(k.clone(), pk);
            q.matmul(k.swap_dims(2, 3)).reshape([1])
        };
        assert_close(score(5, 2), score(13, 10), 1e-5);
        assert_close(score(0, 0), score(20, 20), 1e-5);
    }

    /// Rotating a sequence with an offset equals rotating the longer sequence and slicing it.
    fn offset_equals_slicing_the_full_pass<B: Backend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 7);
        let rope = RotaryEncodingConfig::new(4)
            .with_max_len(16)
            .init::<B>(device);
        let x = Tensor::<B, 4>::random([2, 3, 6, 4], Distribution::Normal(0.0, 1.0), device);
        let full = rope.forward(x.clone(), 0);
        let tail = rope.forward(x.slice([0..2, 0..3, 4..6, 0..4]), 4);
        assert_close(full.slice([0..2, 0..3, 4..6, 0..4]), tail, 1e-6);
    }

    focal_backend::backend_tests!(
        scores_depend_on_relative_position_only,
        offset_equals_slicing_the_full_pass
    );

    #[test]
    fn odd_head_width_is_refused() {
        assert_eq!(
            RotaryEncodingConfig::new(7)
                .validate()
                .unwrap_err()
                .to_string(),
            "invalid RotaryEncodingConfig: d_head (7) must be even"
        );
    }
}

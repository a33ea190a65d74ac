//! Absolute positional encodings: fixed sinusoidal and learned.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use focal_backend::ConfigError;

/// The `[max_len, d_model]` sinusoidal table of "Attention Is All You Need" (section 3.5):
/// `PE[p, 2i] = sin(p / 10000^(2i/d))`, `PE[p, 2i+1] = cos(p / 10000^(2i/d))`.
///
/// Computed in `f64` on the host and then stored as `f32`, so the values are the same on every
/// backend.
pub fn sinusoidal_table<B: Backend>(
    max_len: usize,
    d_model: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut values = Vec::with_capacity(max_len * d_model);
    for position in 0..max_len {
        for dim in 0..d_model {
            let pair = (dim / 2) as f64;
            let angle = position as f64 / 10_000f64.powf(2.0 * pair / d_model as f64);
            values.push(if dim % 2 == 0 {
                angle.sin()
            } else {
                angle.cos()
            } as f32);
        }
    }
    Tensor::from_data(TensorData::new(values, [max_len, d_model]), device)
}

/// Rows `offset .. offset + l` of a `[max_len, d]` table of positions: `[l, d]`.
///
/// # Panics
///
/// When `offset + l` exceeds `max_len` or the table's width is not `d`; the message starts
/// with `what`.
pub(crate) fn position_rows<B: Backend>(
    what: &str,
    table: Tensor<B, 2>,
    offset: usize,
    l: usize,
    d: usize,
) -> Tensor<B, 2> {
    let [max_len, d_table] = table.dims();
    assert!(
        offset + l <= max_len && d == d_table,
        "{what}: positions {offset}..{} of width {d} requested, table has {max_len} positions of width {d_table}",
        offset + l
    );
    table.slice([offset..offset + l, 0..d])
}

/// Configuration of [`SinusoidalPositionalEncoding`].
#[derive(Config, Debug)]
pub struct SinusoidalPositionalEncodingConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// The longest sequence (plus offset) the encoding will be asked for. Default 512.
    #[config(default = 512)]
    pub max_len: usize,
}

impl SinusoidalPositionalEncodingConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "SinusoidalPositionalEncodingConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_positive(NAME, "max_len", self.max_len)
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<SinusoidalPositionalEncoding<B>, ConfigError> {
        self.validate()?;
        Ok(SinusoidalPositionalEncoding {
            table: sinusoidal_table(self.max_len, self.d_model, device),
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SinusoidalPositionalEncoding<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Adds fixed sinusoidal positions to a sequence of embeddings. Has no parameters; the table is
/// a constant that moves with the module but is not saved.
#[derive(Module, Debug)]
pub struct SinusoidalPositionalEncoding<B: Backend> {
    table: Tensor<B, 2>,
}

impl<B: Backend> SinusoidalPositionalEncoding<B> {
    /// Adds the encodings of positions `offset .. offset + l` to `x`.
    ///
    /// # Shapes
    ///
    /// - x `[b, l, d]` → `[b, l, d]`
    ///
    /// # Panics
    ///
    /// When `offset + l` exceeds `max_len` or the widths differ.
    pub fn forward(&self, x: Tensor<B, 3>, offset: usize) -> Tensor<B, 3> {
        let [_, l, d] = x.dims();
        let rows = position_rows("positional encoding", self.table.clone(), offset, l, d);
        x + rows.unsqueeze::<3>() // [1, l, d] broadcast over the batch
    }
}

/// Configuration of [`LearnedPositionalEmbedding`].
#[derive(Config, Debug)]
pub struct LearnedPositionalEmbeddingConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Number of positions (the longest sequence plus offset).
    pub max_len: usize,
    /// Standard deviation of the normal initialisation. Default 0.02 (BERT, GPT-2).
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl LearnedPositionalEmbeddingConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "LearnedPositionalEmbeddingConfig";
        ConfigError::ensure_positive(NAME, "d_model", self.d_model)?;
        ConfigError::ensure_positive(NAME, "max_len", self.max_len)?;
        ConfigError::ensure(self.init_std > 0.0, NAME, || {
            format!("init_std ({}) must be positive", self.init_std)
        })
    }

    /// Builds the module, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<LearnedPositionalEmbedding<B>, ConfigError> {
        self.validate()?;
        Ok(LearnedPositionalEmbedding {
            positions: EmbeddingConfig::new(self.max_len, self.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: self.init_std,
                })
                .init(device),
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LearnedPositionalEmbedding<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Adds a learned vector per absolute position (BERT, GPT-2).
#[derive(Module, Debug)]
pub struct LearnedPositionalEmbedding<B: Backend> {
    /// The table `[max_len, d]`, one row per position.
    pub positions: Embedding<B>,
}

impl<B: Backend> LearnedPositionalEmbedding<B> {
    /// Adds the embeddings of positions `offset .. offset + l` to `x`.
    ///
    /// # Shapes
    ///
    /// - x `[b, l, d]` → `[b, l, d]`
    ///
    /// # Panics
    ///
    /// When `offset + l` exceeds `max_len` or the widths differ.
    pub fn forward(&self, x: Tensor<B, 3>, offset: usize) -> Tensor<B, 3> {
        let [_, l, d] = x.dims();
        let rows = position_rows(
            "learned positions",
            self.positions.weight.val(),
            offset,
            l,
            d,
        );
        x + rows.unsqueeze::<3>() // [1, l, d] broadcast over the batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_backend::assert_close;

    fn table_matches_the_formula<B: Backend>(device: &B::Device) {
        let table = sinusoidal_table::<B>(3, 4, device);
        // p = 2: [sin 2, cos 2, sin(2/100), cos(2/100)]
        let row = table.slice([2..3, 0..4]);
        let expected = Tensor::<B, 2>::from_floats(
            [[2f32.sin(), 2f32.cos(), 0.02f32.sin(), 0.02f32.cos()]],
            device,
        );
        assert_close(row, expected, 1e-6);
    }

    fn offset_selects_later_positions<B: Backend>(device: &B::Device) {
        let pe = SinusoidalPositionalEncodingConfig::new(4)
            .with_max_len(8)
            .init::<B>(device);
        let zeros = Tensor::<B, 3>::zeros([1, 2, 4], device);
        let late = pe.forward(zeros.clone(), 3);
        let all = pe.forward(Tensor::zeros([1, 5, 4], device), 0);
        assert_close(late, all.slice([0..1, 3..5, 0..4]), 1e-7);
    }

    /// Learned positions are added row by row, from the offset on, and receive gradients.
    fn learned_positions_are_added_and_trained<B: Backend>(device: &B::Device) {
        type A<B> = burn::backend::Autodiff<B>;
        let positions = LearnedPositionalEmbeddingConfig::new(4, 6).init::<A<B>>(device);
        let x = Tensor::<A<B>, 3>::zeros([2, 3, 4], device);
        let y = positions.forward(x, 2);
        let table = positions.positions.weight.val().slice([2..5, 0..4]);
        assert_close(
            y.clone().slice([1..2, 0..3, 0..4]).inner(),
            table.inner().unsqueeze(),
            0.0,
        );
        let grads = y.sum().backward();
        let grad = positions.positions.weight.grad(&grads).unwrap(); // [6, 4]
        // Rows 2..5 were used by both batch rows; rows 0, 1 and 5 not at all.
        assert_close(
            grad.clone().slice([2..5, 0..4]),
            Tensor::full([3, 4], 2.0, device),
            0.0,
        );
        assert_close(grad.slice([0..2, 0..4]), Tensor::zeros([2, 4], device), 0.0);
    }

    focal_backend::backend_tests!(
        table_matches_the_formula,
        offset_selects_later_positions,
        learned_positions_are_added_and_trained
    );
}

//! ALiBi: attention with linear biases (Press et al., 2022).

use crate::mask::aligned_positions;
use burn::tensor::{Tensor, TensorData, backend::Backend};

/// The ALiBi slope of every head, as in the paper's reference code: for `n` a power of two, the
/// geometric sequence starting at `2^(-8/n)` with that ratio; otherwise the slopes of the
/// closest smaller power of two `m`, followed by every other slope of `2m`.
///
/// # Panics
///
/// When `n_heads` is 0.
pub fn alibi_slopes(n_heads: usize) -> Vec<f64> {
    assert!(n_heads > 0, "ALiBi needs at least one head");
    fn power_of_two(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|i| start.powi(i as i32)).collect()
    }
    if n_heads.is_power_of_two() {
        return power_of_two(n_heads);
    }
    let closest = 1usize << n_heads.ilog2();
    let mut slopes = power_of_two(closest);
    slopes.extend(
        power_of_two(2 * closest)
            .into_iter()
            .step_by(2)
            .take(n_heads - closest),
    );
    slopes
}

/// The ALiBi bias `[1, h, l, s]`: `-slope_h · |p - j|` for query position `p` and key `j`,
/// with queries aligned bottom-right (`p = i + s - l`, as the causal mask). For keys at or
/// before the query (the causal case of the paper) this is the paper's `-m · (p - j)`; keys
/// after the query, in bidirectional use, are penalised symmetrically.
///
/// Add it with `AttentionMask::additive`.
pub fn alibi_bias<B: Backend>(
    n_heads: usize,
    l: usize,
    s: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let slopes: Vec<f32> = alibi_slopes(n_heads)
        .into_iter()
        .map(|m| m as f32)
        .collect();
    let slopes = Tensor::<B, 1>::from_data(TensorData::new(slopes, [n_heads]), device)
        .reshape([1, n_heads, 1, 1]);
    let (query, key) = aligned_positions::<B>(l, s, 0..s, device);
    let distance = (query - key).abs().float().reshape([1, 1, l, s]); // |p - j|
    slopes.neg() * distance
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_backend::assert_close;

    #[test]
    fn slopes_follow_the_paper() {
        // n = 8: 1/2, 1/4, ..., 1/256.
        let eight = alibi_slopes(8);
        assert_eq!(eight[0], 0.5);
        assert_eq!(eight[7], 1.0 / 256.0);
        // n = 6: the 4 slopes of n = 4, then slopes 1 and 3 of n = 8.
        let four = alibi_slopes(4);
        let six = alibi_slopes(6);
        assert_eq!(&six[..4], &four[..]);
        assert_eq!(six[4], eight[0]);
        assert_eq!(six[5], eight[2]);
    }

    fn bias_is_minus_slope_times_distance<B: Backend>(device: &B::Device) {
        let bias = alibi_bias::<B>(2, 2, 3, device); // slopes 1/16, 1/256
        let m = 1.0 / 16.0;
        let expected_head0 =
            Tensor::<B, 2>::from_floats([[-m, 0.0, -m], [-2.0 * m, -m, 0.0]], device);
        assert_close(
            bias.slice([0..1, 0..1, 0..2, 0..3]).reshape([2, 3]),
            expected_head0,
            1e-7,
        );
    }

    focal_backend::backend_tests!(bias_is_minus_slope_times_distance);
}

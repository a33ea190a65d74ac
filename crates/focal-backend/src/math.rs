//! The small pieces of math that heads, pipelines and interpretation share, in one place:
//! reading a tensor back to the host, and softmax, log-softmax and argmax of a host row (as
//! NumPy and PyTorch compute them in `f32`), and on tensors masked mean pooling and ℓ2
//! normalisation (as sentence-transformers and `torch.nn.functional.normalize` do).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

/// The values of a float tensor on the host, in `f32` (whatever the backend's float type),
/// row-major.
pub fn to_vec<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 values after convert")
}

/// The probabilities of a row of scores: the exp of the scores less their maximum, over their
/// sum (as NumPy computes transformers' pipelines' softmax, in `f32`).
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = max(scores);
    let exp: Vec<f32> = scores.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|&e| e / sum).collect()
}

/// The log-probabilities of a row of scores: each score less the log of the sum of their exps
/// (computed after taking out the maximum, so no exp overflows).
pub fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let max = max(scores);
    let log_sum = scores.iter().map(|s| (s - max).exp()).sum::<f32>().ln() + max;
    scores.iter().map(|s| s - log_sum).collect()
}

/// The index of the first maximum of a row (as `torch.argmax`); 0 for an empty row.
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

fn max(scores: &[f32]) -> f32 {
    scores.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// The mean of the states `[b, l, d]` of the positions where `valid` `[b, l]` is true: `[b, d]`
/// (sentence-transformers' mean pooling; a row without a valid position gives zeros).
pub fn masked_mean<B: Backend>(hidden: Tensor<B, 3>, valid: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
    let [b, l, d] = hidden.dims();
    let weights = valid.float().reshape([b, l, 1]);
    let counts = weights.clone().sum_dim(1).clamp_min(1e-9); // [b, 1, 1]
    (hidden * weights).sum_dim(1).div(counts).reshape([b, d])
}

/// `x` divided by its ℓ2 norm along the last dimension, the norm at least 1e-12 so that a zero
/// vector stays zero (`torch.nn.functional.normalize`).
pub fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x
        .clone()
        .powi_scalar(2)
        .sum_dim(D - 1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_math_matches_hand_computed_values() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        let want = [0.090_030_57, 0.244_728_48, 0.665_240_94];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-7, "{p:?}");
        }
        let log = log_softmax(&[1.0, 2.0, 3.0]);
        for (a, b) in log.iter().zip(want) {
            assert!((a - b.ln()).abs() < 1e-6, "{log:?}");
        }
        // No overflow far from zero; the first of equal maxima wins.
        assert_eq!(softmax(&[1000.0, 1000.0]), [0.5, 0.5]);
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn pooling_and_normalising_match_hand_computed_values() {
        type B = crate::NdArray;
        let device = Default::default();
        let hidden = Tensor::<B, 3>::from_floats(
            [
                [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]],
            ],
            &device,
        );
        let valid = Tensor::<B, 2, Bool>::from_bool(
            burn::tensor::TensorData::from([[true, true, false], [false, false, false]]),
            &device,
        );
        // The padded position is left out; a row without a valid position gives zeros.
        assert_eq!(to_vec(masked_mean(hidden, valid)), [2.0, 3.0, 0.0, 0.0]);
        let x = Tensor::<B, 2>::from_floats([[3.0, 4.0], [0.0, 0.0]], &device);
        assert_eq!(to_vec(l2_normalize(x)), [0.6, 0.8, 0.0, 0.0]);
    }
}

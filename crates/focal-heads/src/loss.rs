//! The losses of the task heads, as PyTorch computes them (mean reduction).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

/// The target value PyTorch's cross-entropy ignores by default (`ignore_index = -100`), used
/// for the word-piece positions that carry no label.
pub const IGNORE_INDEX: i64 = -100;

/// Cross-entropy of logits `[n, c]` against class ids `[n]`, averaged over the rows whose id is
/// not [`IGNORE_INDEX`] (PyTorch's `cross_entropy`; NaN when every row is ignored, as there).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    cross_entropy_ignoring(logits, targets, IGNORE_INDEX)
}

/// [`cross_entropy`] with another ignored id (transformers' question answering ignores the
/// sequence length).
pub fn cross_entropy_ignoring<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    ignore: i64,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let kept = targets.clone().not_equal_elem(ignore); // [n]
    let safe = targets
        .mask_fill(kept.clone().bool_not(), 0)
        .reshape([n, 1]);
    let picked = log_softmax(logits, 1).gather(1, safe).reshape([n]); // log p(target)
    let kept = kept.float();
    -(picked * kept.clone()).sum() / kept.sum()
}

/// Binary cross-entropy of logits against 0/1 targets of the same shape, averaged over all
/// elements, in PyTorch's stable form `max(x, 0) - x t + log(1 + exp(-|x|))`.
pub fn binary_cross_entropy_with_logits<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let loss =
        logits.clone().clamp_min(0.0) - logits.clone() * targets + logits.abs().neg().exp().log1p();
    loss.mean()
}

/// Mean squared error over all elements.
pub fn mean_squared_error<B: Backend>(
    outputs: Tensor<B, 2>,
    targets: Tensor<B, 2>,
) -> Tensor<B, 1> {
    (outputs - targets).powi_scalar(2).mean()
}

//! Linear layers through the backend's fast path.
//!
//! Every Focal layer that projects (attention projections, feed-forward, heads, tied output
//! embeddings) calls [`project`] or [`project_transposed`] instead of burn-nn's
//! `Linear::forward`. Both go through [`FusedAttentionBackend::fused_linear`]: burn's `linear` op on
//! most backends (cubecl's autotuned matmul on wgpu), Focal's `gemm` kernel on ndarray. The
//! parameters stay burn-nn's `Linear`, so records and optimizers see the same module.

use crate::{Activation, FusedAttentionBackend, WeightLayout};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `x · W + b` for a burn-nn [`Linear`] (weight `[in, out]`), through the backend's fast path.
/// Results equal `layer.forward(x)` up to float reordering.
///
/// # Shapes
///
/// - x `[..., in]` → `[..., out]`
pub fn project<B: FusedAttentionBackend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    B::fused_linear(
        x,
        layer.weight.val(),
        layer.bias.as_ref().map(|b| b.val()),
        WeightLayout::InOut,
        None,
    )
}

/// `act(x · W + b)` for a burn-nn [`Linear`]: on ndarray the activation is applied in place to
/// the product's output (and its derivative folded into the same backward node), instead of
/// burn's element-wise ops (a libm call per element for the exact GELU, six passes for the
/// tanh form). Results equal `activation.apply(layer.forward(x))` within float rounding.
///
/// # Shapes
///
/// - x `[..., in]` → `[..., out]`
pub fn project_activated<B: FusedAttentionBackend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
    activation: Activation,
) -> Tensor<B, D> {
    B::fused_linear(
        x,
        layer.weight.val(),
        layer.bias.as_ref().map(|b| b.val()),
        WeightLayout::InOut,
        Some(activation),
    )
}

/// `x · Wᵀ` for a weight stored `[out, in]`: the output layer tied to an embedding table
/// `[vocab, d]` (logits), or a PyTorch-layout weight used as is.
///
/// # Shapes
///
/// - x `[..., in]`, weight `[out, in]` → `[..., out]`
pub fn project_transposed<B: FusedAttentionBackend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
) -> Tensor<B, D> {
    B::fused_linear(x, weight, None, WeightLayout::OutIn, None)
}

/// The same `[in, out]` weight with its values stored `[out, in]`: a transposed view of a
/// row-major `[out, in]` tensor. Values and shape are unchanged; the CPU linear kernel then
/// reads each output's weights as one contiguous row, which is what single-row products
/// (decoding) stream fastest. Loaders of decoding models call it once per weight (PyTorch-layout
/// weights are stored this way already). The transpose is a blocked copy on the host.
pub fn store_out_in<B: Backend>(weight: Tensor<B, 2>) -> Tensor<B, 2> {
    let [d_in, d_out] = weight.dims();
    let device = weight.device();
    let data = weight.into_data();
    let values: Vec<f32> = match data.to_vec::<f32>() {
        Ok(values) => values,
        Err(_) => data.convert::<f32>().to_vec().expect("converted to f32"),
    };
    let mut stored = vec![0.0f32; values.len()];
    const BLOCK: usize = 32;
    for i0 in (0..d_in).step_by(BLOCK) {
        for j0 in (0..d_out).step_by(BLOCK) {
            for i in i0..(i0 + BLOCK).min(d_in) {
                for j in j0..(j0 + BLOCK).min(d_out) {
                    stored[j * d_in + i] = values[i * d_out + j];
                }
            }
        }
    }
    Tensor::<B, 2>::from_data(
        burn::tensor::TensorData::new(stored, [d_out, d_in]),
        &device,
    )
    .transpose()
}

/// The tensor-op implementation of [`FusedAttentionBackend::fused_linear`]: burn's `linear` op.
pub fn generic_linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    layout: WeightLayout,
) -> Tensor<B, D> {
    if let Some(problem) = LinearShape::mismatch(&x, &weight, bias.as_ref(), layout) {
        panic!("linear: {problem}");
    }
    let weight = match layout {
        WeightLayout::InOut => weight,
        WeightLayout::OutIn => weight.transpose(),
    };
    burn::tensor::module::linear(x, weight, bias)
}

/// The shapes of one linear call, checked.
#[derive(Clone, Debug)]
pub(crate) struct LinearShape<const D: usize> {
    /// Rows of `x` (all axes but the last, multiplied).
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
    /// The output's dimensions.
    pub output: [usize; D],
}

impl<const D: usize> LinearShape<D> {
    /// The shapes when they agree and are not empty, `None` otherwise (the generic path then
    /// reports or handles them).
    pub fn of<B: Backend>(
        x: &Tensor<B, D>,
        weight: &Tensor<B, 2>,
        bias: Option<&Tensor<B, 1>>,
        layout: WeightLayout,
    ) -> Option<Self> {
        if D == 0 || Self::mismatch(x, weight, bias, layout).is_some() {
            return None;
        }
        let dims = x.dims();
        let [d_in, d_out] = in_out(weight.dims(), layout);
        let mut output = dims;
        output[D - 1] = d_out;
        let rows = dims[..D - 1].iter().product::<usize>();
        (rows > 0 && d_in > 0 && d_out > 0).then_some(Self {
            rows,
            d_in,
            d_out,
            output,
        })
    }

    /// What is wrong with the shapes, if anything.
    fn mismatch<B: Backend>(
        x: &Tensor<B, D>,
        weight: &Tensor<B, 2>,
        bias: Option<&Tensor<B, 1>>,
        layout: WeightLayout,
    ) -> Option<String> {
        let [d_in, d_out] = in_out(weight.dims(), layout);
        let x_in = x.dims().last().copied().unwrap_or(0);
        let bias_len = bias.map(|b| b.dims()[0]);
        (x_in != d_in || bias_len.is_some_and(|len| len != d_out)).then(|| {
            format!(
                "input {:?}, weight {:?} ({layout:?}), bias {:?}: the input's last axis must \
                 be the weight's input width {d_in} and the bias must have {d_out} values",
                x.dims(),
                weight.dims(),
                bias.map(Tensor::dims),
            )
        })
    }

    /// The CPU kernel's description, with the weight in `layout`.
    #[allow(dead_code)] // unused when ndarray is off
    pub fn kernel(&self, layout: WeightLayout) -> crate::cpu::linear::Linear {
        crate::cpu::linear::Linear {
            m: self.rows,
            k: self.d_in,
            n: self.d_out,
            layout,
        }
    }
}

/// `[in, out]` of a weight stored in `layout`.
fn in_out([a, b]: [usize; 2], layout: WeightLayout) -> [usize; 2] {
    match layout {
        WeightLayout::InOut => [a, b],
        WeightLayout::OutIn => [b, a],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;
    use focal_backend::{Tolerance, assert_close};

    /// The backend's path (Focal's `gemm` kernel on ndarray) equals burn's `linear` op, values
    /// and gradients, on shapes that reach every branch of the kernel: one row against a wide
    /// output (columns split among threads), a few rows, tall-skinny, sizes that are not
    /// multiples of any block, a batch of sequences; with `x` a strided (swapped-axes) view and
    /// the weight a transposed view (shared in place with the other layout) or row-major, in
    /// both layouts, with and without bias, with each fused activation.
    ///
    /// The inputs come from a host generator of the test's own, not the backend's global one,
    /// which the tests running beside it draw from in whatever order they run: the values, and
    /// so the largest difference, are the same in every run.
    fn fast_path_equals_burn_linear<B: FusedAttentionBackend>(device: &B::Device) {
        use rand::Rng;
        type A<B> = Autodiff<B>;
        let mut rng = focal_backend::seed::<B>(device, 11);
        // Standard normal values (Box-Muller) in a tensor of `shape`.
        let mut random = |shape: Vec<usize>| -> burn::tensor::TensorData {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                })
                .collect();
            burn::tensor::TensorData::new(values, shape)
        };
        let mut case = 0;
        for (a, b, d_in, d_out) in [
            (1, 1, 64, 3001),
            (1, 3, 129, 700),
            (2, 150, 48, 3),
            (4, 37, 129, 70),
            (2, 3, 5, 7),
            (1, 1, 1, 1),
        ] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                for (with_bias, strided) in [(false, false), (true, true), (true, false)] {
                    // Every activation (and none) in turn.
                    case += 1;
                    let activation = [
                        None,
                        Some(Activation::Relu),
                        Some(Activation::Gelu),
                        Some(Activation::GeluTanh),
                        Some(Activation::Silu),
                    ][case % 5];
                    let x = if strided {
                        Tensor::<A<B>, 3>::from_data(random(vec![a, d_in, b]), device)
                            .swap_dims(1, 2)
                    } else {
                        Tensor::<A<B>, 3>::from_data(random(vec![a, b, d_in]), device)
                    };
                    let [rows, cols] = match layout {
                        WeightLayout::InOut => [d_in, d_out],
                        WeightLayout::OutIn => [d_out, d_in],
                    };
                    // Strided: the weight is the transposed view of a row-major leaf.
                    let stored = if strided { [cols, rows] } else { [rows, cols] };
                    let w = Tensor::<A<B>, 2>::from_data(random(stored.to_vec()), device);
                    let bias = with_bias
                        .then(|| Tensor::<A<B>, 1>::from_data(random(vec![d_out]), device));
                    let upstream = Tensor::<A<B>, 3>::from_data(random(vec![a, b, d_out]), device);
                    let run = |fast: bool| {
                        let x = Tensor::from_data(x.to_data(), device).require_grad();
                        let leaf = Tensor::from_data(w.to_data(), device).require_grad();
                        let w = if strided {
                            leaf.clone().transpose()
                        } else {
                            leaf.clone()
                        };
                        let bias = bias
                            .as_ref()
                            .map(|b| Tensor::from_data(b.to_data(), device).require_grad());
                        let y = if fast {
                            A::<B>::fused_linear(x.clone(), w, bias.clone(), layout, activation)
                        } else {
                            let y = generic_linear(x.clone(), w, bias.clone(), layout);
                            activation.map_or(y.clone(), |a| a.apply(y))
                        };
                        let grads = (y.clone() * upstream.clone()).sum().backward();
                        (
                            y.inner(),
                            x.grad(&grads).unwrap(),
                            leaf.grad(&grads).unwrap(),
                            bias.map(|b| b.grad(&grads).unwrap()),
                        )
                    };
                    let (fast, plain) = (run(true), run(false));
                    let tolerance = |k: usize| Tolerance::new(1e-5 * (k as f64).sqrt(), 1e-5);
                    assert_close(fast.0, plain.0, tolerance(d_in));
                    assert_close(fast.1, plain.1, tolerance(d_out));
                    assert_close(fast.2, plain.2, tolerance(a * b));
                    if let (Some(f), Some(p)) = (fast.3, plain.3) {
                        assert_close(f, p, tolerance(a * b));
                    }
                }
            }
        }
    }

    /// `merge_heads` (a parallel copy on ndarray) equals swapping and reshaping, for a
    /// standard and a permuted input.
    fn merged_heads_equal_swap_and_reshape<B: FusedAttentionBackend>(device: &B::Device) {
        let x = Tensor::<B, 4>::random([2, 3, 4, 5], Distribution::Normal(0.0, 1.0), device);
        for x in [
            x.clone(),
            x.clone().swap_dims(0, 1).swap_dims(0, 1),
            x.swap_dims(2, 3).swap_dims(2, 3),
        ] {
            let expected = x.clone().swap_dims(1, 2).reshape([2, 4, 15]);
            assert_close(B::merge_heads(x), expected, 0.0);
        }
        let permuted = Tensor::<B, 4>::random([2, 4, 3, 5], Distribution::Normal(0.0, 1.0), device)
            .swap_dims(1, 2);
        let expected = permuted.clone().swap_dims(1, 2).reshape([2, 4, 15]);
        assert_close(B::merge_heads(permuted), expected, 0.0);
    }

    /// `store_out_in` changes the storage, not the values.
    fn stored_out_in_keeps_the_values<B: FusedAttentionBackend>(device: &B::Device) {
        let w = Tensor::<B, 2>::random([37, 70], Distribution::Normal(0.0, 1.0), device);
        let stored = store_out_in(w.clone());
        assert_eq!(stored.dims(), [37, 70]);
        assert_close(stored.clone(), w.clone(), 0.0);
        let x = Tensor::<B, 2>::random([3, 37], Distribution::Normal(0.0, 1.0), device);
        assert_close(
            B::fused_linear(x.clone(), stored, None, WeightLayout::InOut, None),
            generic_linear(x, w, None, WeightLayout::InOut),
            Tolerance::new(1e-5, 1e-5),
        );
    }

    /// A mismatched input width is reported with every shape, on every backend.
    fn mismatched_shapes_are_named<B: FusedAttentionBackend>(device: &B::Device) {
        let x = Tensor::<B, 2>::zeros([2, 5], device);
        let w = Tensor::<B, 2>::zeros([4, 3], device);
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            B::fused_linear(x, w, None, WeightLayout::InOut, None)
        }))
        .unwrap_err();
        let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("input [2, 5], weight [4, 3] (InOut)"),
            "{message}"
        );
    }

    focal_backend::backend_tests!(
        fast_path_equals_burn_linear,
        stored_out_in_keeps_the_values,
        merged_heads_equal_swap_and_reshape,
        mismatched_shapes_are_named
    );
}

//! The backend extension behind attention without weights.
//!
//! Every attention call that does not ask for the probabilities goes through
//! [`FusedAttentionBackend::fused_attention`]. Its default implementation, shared by every
//! backend, is built from tensor ops: the plain path for short key sequences and the chunked
//! online-softmax path ([`memory_efficient`](crate::sdpa)) from
//! [`FusedAttentionOptions::memory_efficient_from`] keys on. A backend with its own kernel
//! (a hand-written CPU kernel for ndarray, burn's fused `attention` op on wgpu) overrides the
//! method and falls back to [`generic_fused_attention`] for the options it does not handle; the
//! callers (`ScaledDotProductAttention`, `MultiHeadAttention` and everything built on them) do
//! not change.
//!
//! Code that is generic over the backend and runs attention names `B: FusedAttentionBackend`
//! instead of `B: Backend`; training code names [`FusedAutodiffBackend`].
//!
//! The trait gathers Focal's other kernel extensions too, so that one bound covers a whole
//! model: [`FusedAttentionBackend::fused_linear`] (every projection, with an optional fused
//! activation; see [`project`](crate::project)) and [`FusedAttentionBackend::fused_norm`]
//! (residual + LayerNorm/RMSNorm in one pass) and [`FusedAttentionBackend::fused_adamw`] (one
//! AdamW step per parameter, the optimizer's whole update in one pass), each with a tensor-op
//! default.

use crate::adamw::{AdamWMoments, AdamWStep, AdamWTensors, generic_adamw};
use crate::linear::{LinearShape, generic_linear};
use crate::sdpa::{attend, kv_shapes_agree, memory_efficient, scaled_scores, shared_kv_heads};
use crate::{Activation, AttentionMask, WeightLayout};
use burn::nn::Dropout;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// Everything attention needs besides query, key and value when no weights are returned.
#[derive(Clone, Copy, Debug)]
pub struct FusedAttentionOptions<'a, B: Backend> {
    /// Which pairs may attend, and additive biases.
    pub mask: &'a AttentionMask<B>,
    /// Factor on `q kᵀ` (usually `1 / sqrt(d_h)`).
    pub scale: f64,
    /// Soft-capping of the scaled scores, `cap · tanh(score / cap)`, before masks and biases.
    pub softcap: Option<f64>,
    /// Dropout on the probabilities (active only under autodiff).
    pub dropout: &'a Dropout,
    /// The generic implementation switches from the plain path to the chunked one at this many
    /// keys; kernels with their own memory behaviour may ignore it.
    pub memory_efficient_from: usize,
    /// Keys per block of the chunked path.
    pub key_block: usize,
}

/// A backend that can run attention without returning weights, possibly with its own kernel.
///
/// The default method is correct on every backend; implementing the trait with an empty body
/// (`impl FusedAttentionBackend for MyBackend {}`) is enough to run Focal's models on it.
pub trait FusedAttentionBackend: Backend {
    /// Whether this backend's float tensors are host memory that Focal's CPU kernel computes
    /// on, forward and backward (`true` for `NdArray<f32>`). `Autodiff<B>` reads it to put the
    /// kernel's backward in the graph.
    const CPU_KERNEL: bool = false;

    /// A float tensor's values as row-major `f32` on the host, for the CPU kernel: shared
    /// without a copy where the backend allows it (ndarray's contiguous tensors), read back
    /// otherwise.
    #[doc(hidden)]
    fn host_values<const D: usize>(tensor: Tensor<Self, D>) -> HostValues {
        HostValues::Owned(crate::cpu::train::read(tensor))
    }

    /// A weight's values for the CPU linear kernel and the layout they are in: a weight that
    /// is the transposed view of a row-major matrix (a lazily transposed PyTorch weight) is
    /// shared in place with the other layout instead of copied.
    #[doc(hidden)]
    fn host_weight(weight: Tensor<Self, 2>, layout: WeightLayout) -> (HostValues, WeightLayout) {
        (Self::host_values(weight), layout)
    }

    /// Attention heads `[b, h, l, d]` concatenated per position, `[b, l, h·d]`: what
    /// multi-head attention feeds its output projection. The default swaps and reshapes;
    /// ndarray copies the rows in parallel (its reshape of the swapped view would copy element by
    /// element).
    #[doc(hidden)]
    fn merge_heads(x: Tensor<Self, 4>) -> Tensor<Self, 3> {
        let [b, h, l, d] = x.dims();
        x.swap_dims(1, 2).reshape([b, l, h * d])
    }

    /// `y = act(x · W + b)` over the last axis of `x` (`act` the identity when `activation` is
    /// `None`), with `W` `[in, out]`
    /// ([`WeightLayout::InOut`], burn's `Linear`) or `[out, in]` ([`WeightLayout::OutIn`],
    /// PyTorch's layout and a tied embedding table). Layers call it through [`project`] and
    /// [`project_transposed`].
    ///
    /// The default is burn's `linear` op (the backend's matmul) and [`Activation::apply`].
    /// ndarray overrides it with `gemm` on every thread and the activation applied in place
    /// (forward and, under `Autodiff<NdArray>`, one backward node for `dx`, `dW` and `db`); see
    /// `cpu/linear.rs`.
    ///
    /// # Shapes
    ///
    /// - x `[..., in]`, weight `[in, out]` or `[out, in]`, bias `[out]` → `[..., out]`
    ///
    /// # Panics
    ///
    /// When the shapes disagree; the message names them.
    ///
    /// [`project`]: crate::project
    /// [`project_transposed`]: crate::project_transposed
    fn fused_linear<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
        layout: WeightLayout,
        activation: Option<Activation>,
    ) -> Tensor<Self, D> {
        activated(generic_linear(x, weight, bias, layout), activation)
    }

    /// `norm(x + residual) · γ + β` over the last axis: LayerNorm when `centered`, RMSNorm
    /// (no mean subtracted, no `β`) otherwise. Layers call it through `focal_blocks::Norm`.
    ///
    /// The default is [`generic_norm`], burn-nn's formula. ndarray overrides it with one pass
    /// per row (and, under `Autodiff<NdArray>`, one backward node for the input, the residual,
    /// `γ` and `β`); see `cpu/norm.rs`.
    ///
    /// # Shapes
    ///
    /// - x, residual `[..., d]`, γ, β `[d]` → `[..., d]`
    fn fused_norm<const D: usize>(
        x: Tensor<Self, D>,
        residual: Option<Tensor<Self, D>>,
        gamma: Tensor<Self, 1>,
        beta: Option<Tensor<Self, 1>>,
        eps: f64,
        centered: bool,
    ) -> Tensor<Self, D> {
        generic_norm(x, residual, gamma, beta, eps, centered)
    }

    /// One AdamW step of one parameter: the new parameter and moments from the parameter, its
    /// gradient and the previous moments (`None` on the first step). Optimizers call it
    /// through `focal_train::FusedAdamW`.
    ///
    /// The default is [`generic_adamw`], burn's `AdamW` op for op. ndarray overrides it with
    /// one parallel pass, in place where the arrays are not shared, bit-identical to burn's;
    /// see `cpu/adamw.rs`.
    ///
    /// # Shapes
    ///
    /// - param, grad and every moment of one shape
    fn fused_adamw<const D: usize>(
        step: AdamWStep,
        param: Tensor<Self, D>,
        grad: Tensor<Self, D>,
        previous: Option<AdamWMoments<Self, D>>,
    ) -> AdamWTensors<Self, D> {
        generic_adamw(step, param, grad, previous)
    }

    /// `softmax(softcap(q kᵀ · scale) + bias, masked) v` without materialising weights.
    ///
    /// Semantics are those of [`ScaledDotProductAttention`](crate::ScaledDotProductAttention):
    /// masked pairs get probability 0, a query with no allowed key gets a zero row (and zero
    /// gradients), dropout acts on the probabilities.
    ///
    /// # Shapes
    ///
    /// - query `[b, h, l, d_h]`, key `[b, h_kv, s, d_h]`, value `[b, h_kv, s, d_v]`, with
    ///   `h_kv` dividing `h` (each key/value head serves `h / h_kv` consecutive query heads)
    /// - returns `[b, h, l, d_v]`
    ///
    /// # Panics
    ///
    /// When the shapes disagree; the message names all three.
    fn fused_attention(
        query: Tensor<Self, 4>,
        key: Tensor<Self, 4>,
        value: Tensor<Self, 4>,
        options: FusedAttentionOptions<'_, Self>,
    ) -> Tensor<Self, 4> {
        generic_fused_attention(query, key, value, options)
    }
}

/// `activation.apply(y)`, or `y` without one.
fn activated<B: Backend, const D: usize>(
    y: Tensor<B, D>,
    activation: Option<Activation>,
) -> Tensor<B, D> {
    match activation {
        Some(activation) => activation.apply(y),
        None => y,
    }
}

static CPU_KERNEL_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Switches Focal's CPU kernels (attention, linear layers with their activations, norms) on or
/// off for the whole process (on by default). Off, backends with the kernels run the generic
/// tensor-op paths ([`generic_fused_attention`], [`generic_linear`](crate::generic_linear),
/// [`generic_norm`]) and their autodiff instead: for before/after measurements and for ruling
/// the kernels out when debugging. Results agree within float rounding either way.
pub fn set_cpu_kernel(enabled: bool) {
    CPU_KERNEL_ON.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

std::thread_local! {
    static CPU_KERNEL_OFF_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with Focal's CPU kernels off for the calls made on this thread
/// (other threads are not affected; see [`set_cpu_kernel`] for the whole process). Tests use it
/// to reach the generic path on ndarray. The previous setting is restored when `f` returns or
/// panics, so a failed test cannot leave the kernel off for the next one on the same thread.
pub fn without_cpu_kernel<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the thread's setting back on drop, including while unwinding.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CPU_KERNEL_OFF_HERE.set(self.0);
        }
    }
    let _restore = Restore(CPU_KERNEL_OFF_HERE.replace(true));
    f()
}

/// Whether Focal's CPU kernels are on for calls made on this thread (see
/// [`set_cpu_kernel`] and [`without_cpu_kernel`]).
pub fn cpu_kernel_enabled() -> bool {
    CPU_KERNEL_ON.load(std::sync::atomic::Ordering::Relaxed) && !CPU_KERNEL_OFF_HERE.get()
}

/// Row-major `f32` values of a tensor on the host (see
/// [`FusedAttentionBackend::host_values`]).
#[doc(hidden)]
#[derive(Clone, Debug)]
pub enum HostValues {
    /// A copy.
    Owned(Vec<f32>),
    /// Shared with a standard-layout ndarray tensor.
    Shared(ndarray::ArcArray<f32, ndarray::IxDyn>),
}

impl HostValues {
    /// The values as a vector of their own: the array's own buffer when nothing else holds
    /// it, a copy otherwise.
    pub fn into_vec(self) -> Vec<f32> {
        match self {
            Self::Owned(values) => values,
            Self::Shared(array) => {
                let len = array.len();
                match array.into_owned().into_raw_vec_and_offset() {
                    (values, Some(0) | None) if values.len() == len => values,
                    (values, offset) => {
                        let start = offset.unwrap_or(0);
                        values[start..start + len].to_vec()
                    }
                }
            }
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Self::Owned(values) => values,
            Self::Shared(array) => array
                .as_slice()
                .expect("only standard-layout arrays are shared"),
        }
    }
}

/// The tensor-op implementation of [`FusedAttentionBackend::fused_attention`], for every
/// backend: the plain path below [`FusedAttentionOptions::memory_efficient_from`] keys, the
/// chunked online-softmax path from there on (memory `O(l · (key_block + d_v))` per head
/// instead of `O(l · s)`). Kernels call it for the options they do not support.
pub fn generic_fused_attention<B: Backend>(
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    options: FusedAttentionOptions<'_, B>,
) -> Tensor<B, 4> {
    let (key, value) = shared_kv_heads(&query, key, value); // [b, h, s, _]
    let [_, _, s, _] = key.dims();
    let score = |q, k| scaled_scores(q, k, options.scale, options.softcap);
    if s >= options.memory_efficient_from {
        memory_efficient(
            query,
            key,
            value,
            options.mask,
            score,
            options.dropout,
            options.key_block,
        )
    } else {
        attend(
            score(query, key),
            value,
            options.mask,
            options.dropout,
            false,
        )
        .context
    }
}

/// An autodiff backend whose forward and inner (inference) backends both run fused attention:
/// the bound for training code. Implemented for every such backend.
pub trait FusedAutodiffBackend:
    AutodiffBackend<InnerBackend: FusedAttentionBackend> + FusedAttentionBackend
{
}

impl<B> FusedAutodiffBackend for B
where
    B: AutodiffBackend + FusedAttentionBackend,
    B::InnerBackend: FusedAttentionBackend,
{
}

/// A seed for the kernel's dropout from the backend's random generator, so that
/// `focal_backend::seed` makes training runs reproducible.
///
/// # Panics
///
/// When the backend's random integers cannot be read back (a backend defect): a constant seed
/// would drop the same positions at every call, so there is no silent fallback.
fn random_seed<B: Backend>(device: &B::Device) -> u64 {
    let halves = Tensor::<B, 1, burn::tensor::Int>::random(
        [2],
        burn::tensor::Distribution::Uniform(0.0, 4_294_967_296.0),
        device,
    )
    .into_data();
    seed_from_halves(halves).unwrap_or_else(|e| panic!("attention dropout seed: {e}"))
}

/// Two random 32-bit halves as one 64-bit seed.
fn seed_from_halves(halves: burn::tensor::TensorData) -> Result<u64, String> {
    let values = halves
        .convert::<i64>()
        .into_vec::<i64>()
        .map_err(|e| format!("cannot read the random integers: {e:?}"))?;
    match values[..] {
        [high, low] => Ok(((high as u64) << 32) ^ low as u64),
        _ => Err(format!("expected 2 random integers, got {}", values.len())),
    }
}

/// Under autodiff, a backend with the CPU kernel ([`FusedAttentionBackend::CPU_KERNEL`]) runs
/// it forward and registers the kernel's own backward (FlashAttention-2: probabilities
/// recomputed block by block, no `l × s` matrix; dropout replayed from a seed). The node's
/// parents are query, key, value and the sum of the additive mask parts, so a bias computed
/// from parameters (a T5 relative position bias, trained ALiBi slopes) gets its gradient too.
/// Every other case differentiates the generic path's tensor ops.
impl<B: FusedAttentionBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    FusedAttentionBackend for burn::backend::Autodiff<B, C>
{
    fn fused_attention(
        query: Tensor<Self, 4>,
        key: Tensor<Self, 4>,
        value: Tensor<Self, 4>,
        options: FusedAttentionOptions<'_, Self>,
    ) -> Tensor<Self, 4> {
        if B::CPU_KERNEL
            && cpu_kernel_enabled()
            && let Some((mut problem, bias)) = cpu_problem(&query, &key, &value, &options)
        {
            let prob = options.dropout.prob;
            if prob > 0.0 && Self::ad_enabled(&query.device()) {
                problem.dropout = Some(crate::cpu::DropoutMask {
                    prob: prob as f32,
                    seed: random_seed::<B>(&query.device()),
                });
            }
            return crate::cpu::train::attention(problem, query, key, value, bias);
        }
        generic_fused_attention(query, key, value, options)
    }

    fn fused_linear<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
        layout: WeightLayout,
        activation: Option<Activation>,
    ) -> Tensor<Self, D> {
        match LinearShape::of(&x, &weight, bias.as_ref(), layout) {
            Some(shape) if B::CPU_KERNEL && cpu_kernel_enabled() => {
                crate::cpu::train::linear(shape, x, weight, bias, layout, activation)
            }
            _ => activated(generic_linear(x, weight, bias, layout), activation),
        }
    }

    fn fused_norm<const D: usize>(
        x: Tensor<Self, D>,
        residual: Option<Tensor<Self, D>>,
        gamma: Tensor<Self, 1>,
        beta: Option<Tensor<Self, 1>>,
        eps: f64,
        centered: bool,
    ) -> Tensor<Self, D> {
        match norm_shape(&x, residual.as_ref(), &gamma, beta.as_ref(), eps, centered) {
            Some(shape) if B::CPU_KERNEL && cpu_kernel_enabled() => {
                crate::cpu::train::norm(shape, x, residual, gamma, beta)
            }
            _ => generic_norm(x, residual, gamma, beta, eps, centered),
        }
    }
}

/// The CPU norm's description of a call, or `None` when the shapes disagree (the generic path
/// then reports them) or a row is empty.
fn norm_shape<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    residual: Option<&Tensor<B, D>>,
    gamma: &Tensor<B, 1>,
    beta: Option<&Tensor<B, 1>>,
    eps: f64,
    centered: bool,
) -> Option<crate::cpu::norm::NormShape> {
    let dims = x.dims();
    let d = *dims.last()?;
    let agree = residual.is_none_or(|r| r.dims() == dims)
        && gamma.dims() == [d]
        && beta.is_none_or(|b| b.dims() == [d]);
    (agree && d > 0).then(|| crate::cpu::norm::NormShape {
        rows: dims[..D - 1].iter().product(),
        d,
        eps: eps as f32,
        centered,
    })
}

/// The tensor-op implementation of [`FusedAttentionBackend::fused_norm`]: burn-nn's LayerNorm
/// (burn's `layer_norm` op) or RMSNorm formula on `x + residual`.
pub fn generic_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    residual: Option<Tensor<B, D>>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
    centered: bool,
) -> Tensor<B, D> {
    let x = match residual {
        Some(residual) => x + residual,
        None => x,
    };
    if centered {
        // What burn-nn's `LayerNorm::forward` calls.
        Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            gamma.into_primitive().tensor(),
            beta.map(|b| b.into_primitive().tensor()),
            eps,
        )))
    } else {
        let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
        let y = (x / rms) * gamma.unsqueeze();
        match beta {
            Some(beta) => y + beta.unsqueeze(),
            None => y,
        }
    }
}

// The backends are those focal-backend was built with (its cfg, not this crate's: another
// crate of the build may switch a backend on in focal-backend alone).
focal_backend::if_ndarray! {
    /// ndarray runs the tiled CPU kernel of `cpu/` for every mask, scale and soft-cap (and,
    /// under `Autodiff<NdArray>`, its backward, dropout included).
    impl FusedAttentionBackend for burn::backend::NdArray<f32> {
        const CPU_KERNEL: bool = true;

        fn host_values<const D: usize>(tensor: Tensor<Self, D>) -> HostValues {
            // burn-ndarray's `into_data` copies a shared tensor element by element through a
            // dynamic-rank iterator (tens of ns per element); borrowing the array avoids it.
            match tensor.into_primitive().tensor() {
                burn::backend::ndarray::NdArrayTensor::F32(storage) => {
                    let array = storage.into_shared();
                    if array.is_standard_layout() {
                        HostValues::Shared(array)
                    } else {
                        HostValues::Owned(standard_copy(array.view()))
                    }
                }
                other => HostValues::Owned(crate::cpu::train::read(Tensor::<Self, D>::from_primitive(
                    burn::tensor::TensorPrimitive::Float(other),
                ))),
            }
        }

        fn host_weight(weight: Tensor<Self, 2>, layout: WeightLayout) -> (HostValues, WeightLayout) {
            match weight.into_primitive().tensor() {
                burn::backend::ndarray::NdArrayTensor::F32(storage) => {
                    let array = storage.into_shared();
                    if array.is_standard_layout() {
                        (HostValues::Shared(array), layout)
                    } else if array.t().is_standard_layout() {
                        (HostValues::Shared(array.reversed_axes()), layout.transposed())
                    } else {
                        (HostValues::Owned(standard_copy(array.view())), layout)
                    }
                }
                other => (
                    Self::host_values(Tensor::<Self, 2>::from_primitive(
                        burn::tensor::TensorPrimitive::Float(other),
                    )),
                    layout,
                ),
            }
        }

        fn fused_linear<const D: usize>(
            x: Tensor<Self, D>,
            weight: Tensor<Self, 2>,
            bias: Option<Tensor<Self, 1>>,
            layout: WeightLayout,
            activation: Option<Activation>,
        ) -> Tensor<Self, D> {
            match LinearShape::of(&x, &weight, bias.as_ref(), layout) {
                Some(shape) if cpu_kernel_enabled() => {
                    let device = x.device();
                    let (w, layout) = Self::host_weight(weight, layout);
                    let x = Self::host_values(x);
                    let b = bias.map(Self::host_values);
                    let mut y = shape.kernel(layout).forward(
                        x.as_slice(),
                        w.as_slice(),
                        b.as_ref().map(HostValues::as_slice),
                    );
                    if let Some(activation) = activation {
                        crate::cpu::activation::forward(activation, &mut y);
                    }
                    Tensor::from_data(burn::tensor::TensorData::new(y, shape.output), &device)
                }
                _ => activated(generic_linear(x, weight, bias, layout), activation),
            }
        }

        fn merge_heads(x: Tensor<Self, 4>) -> Tensor<Self, 3> {
            // `host_values` copies the swapped view `[b, l, h, d]` row by row, in parallel.
            let [b, h, l, d] = x.dims();
            let device = x.device();
            let merged = Self::host_values(x.swap_dims(1, 2)).into_vec();
            Tensor::from_data(burn::tensor::TensorData::new(merged, [b, l, h * d]), &device)
        }

        fn fused_norm<const D: usize>(
            x: Tensor<Self, D>,
            residual: Option<Tensor<Self, D>>,
            gamma: Tensor<Self, 1>,
            beta: Option<Tensor<Self, 1>>,
            eps: f64,
            centered: bool,
        ) -> Tensor<Self, D> {
            match norm_shape(&x, residual.as_ref(), &gamma, beta.as_ref(), eps, centered) {
                Some(shape) if cpu_kernel_enabled() => {
                    let device = x.device();
                    let dims = x.dims();
                    let x = Self::host_values(x);
                    let residual = residual.map(Self::host_values);
                    let gamma = Self::host_values(gamma);
                    let beta = beta.map(Self::host_values);
                    let out = shape
                        .forward(
                            x.as_slice(),
                            residual.as_ref().map(HostValues::as_slice),
                            gamma.as_slice(),
                            beta.as_ref().map(HostValues::as_slice),
                        )
                        .out;
                    Tensor::from_data(burn::tensor::TensorData::new(out, dims), &device)
                }
                _ => generic_norm(x, residual, gamma, beta, eps, centered),
            }
        }

        fn fused_adamw<const D: usize>(
            step: AdamWStep,
            param: Tensor<Self, D>,
            grad: Tensor<Self, D>,
            previous: Option<AdamWMoments<Self, D>>,
        ) -> AdamWTensors<Self, D> {
            let dims = param.dims();
            let fits = |t: &Tensor<Self, D>| {
                t.dims() == dims && t.dtype() == burn::tensor::DType::F32
            };
            let agree = fits(&param)
                && fits(&grad)
                && previous.as_ref().is_none_or(|p| {
                    fits(&p.moment_1)
                        && fits(&p.moment_2)
                        && p.max_moment_2.as_ref().is_none_or(fits)
                });
            if !agree || !cpu_kernel_enabled() {
                return generic_adamw(step, param, grad, previous);
            }
            let device = param.device();
            let n = dims.iter().product::<usize>();
            let mut p = Self::host_values(param).into_vec();
            let g = Self::host_values(grad);
            let (mut m, mut v, max, first) = match previous {
                Some(previous) => (
                    Self::host_values(previous.moment_1).into_vec(),
                    Self::host_values(previous.moment_2).into_vec(),
                    previous
                        .max_moment_2
                        .map(|max| Self::host_values(max).into_vec()),
                    false,
                ),
                None => (vec![0.0; n], vec![0.0; n], None, true),
            };
            // Without AMSGrad a running maximum is carried along untouched, as burn does.
            let (mut max, kept, fresh_max) = match (step.amsgrad, max) {
                (true, Some(max)) => (Some(max), None, false),
                (true, None) => (Some(vec![0.0; n]), None, true),
                (false, kept) => (None, kept, false),
            };
            crate::cpu::adamw::step(
                &step,
                crate::cpu::adamw::AdamWSlices {
                    param: &mut p,
                    grad: g.as_slice(),
                    moment_1: &mut m,
                    moment_2: &mut v,
                    max_moment_2: max.as_deref_mut(),
                    first,
                    fresh_max,
                },
            );
            let tensor = |values: Vec<f32>| {
                Tensor::from_data(burn::tensor::TensorData::new(values, dims), &device)
            };
            AdamWTensors {
                param: tensor(p),
                moment_1: tensor(m),
                moment_2: tensor(v),
                max_moment_2: max.or(kept).map(tensor),
            }
        }

        fn fused_attention(
            query: Tensor<Self, 4>,
            key: Tensor<Self, 4>,
            value: Tensor<Self, 4>,
            options: FusedAttentionOptions<'_, Self>,
        ) -> Tensor<Self, 4> {
            let problem = cpu_kernel_enabled()
                .then(|| cpu_problem(&query, &key, &value, &options))
                .flatten();
            match problem {
                Some((problem, _)) => {
                    let [b, h, l, _] = query.dims();
                    let device = query.device();
                    let [q, k, v] = [query, key, value].map(Self::host_values);
                    let out =
                        crate::cpu::forward(&problem, q.as_slice(), k.as_slice(), v.as_slice()).out;
                    Tensor::from_data(
                        burn::tensor::TensorData::new(out, [b, h, l, problem.d_v]),
                        &device,
                    )
                }
                None => generic_fused_attention(query, key, value, options),
            }
        }
    }
    impl FusedAttentionBackend for burn::backend::NdArray<f64> {}

    /// A row-major copy of a strided array (permuted heads, `[b, l, h, d]` viewed as
    /// `[b, h, l, d]`), through a fixed-rank view where the rank allows: it iterates an order of
    /// magnitude faster than the dynamic-rank one.
    fn standard_copy(view: ndarray::ArrayViewD<'_, f32>) -> Vec<f32> {
        fn fixed<D: ndarray::Dimension>(view: ndarray::ArrayViewD<'_, f32>) -> Option<Vec<f32>> {
            let view = view.into_dimensionality::<D>().ok()?;
            Some(view.as_standard_layout().into_owned().into_raw_vec_and_offset().0)
        }
        match view.ndim() {
            2 => fixed::<ndarray::Ix2>(view.clone()),
            3 => fixed::<ndarray::Ix3>(view.clone()),
            4 => rows_copy(view.clone()),
            _ => None,
        }
        .unwrap_or_else(|| view.iter().copied().collect())
    }

    /// A 4-D view whose last axis is contiguous (split heads: `[b, l, h, d]` viewed as
    /// `[b, h, l, d]`) copied row by row, each row one `memcpy`, the outer pairs in parallel.
    fn rows_copy(view: ndarray::ArrayViewD<'_, f32>) -> Option<Vec<f32>> {
        use ndarray::Axis;
        use rayon::prelude::*;
        let view = view.into_dimensionality::<ndarray::Ix4>().ok()?;
        let [n0, n1, n2, d] = [0, 1, 2, 3].map(|a| view.len_of(Axis(a)));
        if view.strides()[3] != 1 || n0 * n1 * n2 * d == 0 {
            return Some(view.as_standard_layout().into_owned().into_raw_vec_and_offset().0);
        }
        let mut out = vec![0.0f32; n0 * n1 * n2 * d];
        out.par_chunks_mut(n2 * d).enumerate().for_each(|(k, block)| {
            let plane = view.index_axis(Axis(0), k / n1);
            let plane = plane.index_axis(Axis(0), k % n1); // [n2, d]
            for (to, from) in block.chunks_exact_mut(d).zip(plane.rows()) {
                match from.as_slice() {
                    Some(from) => to.copy_from_slice(from),
                    None => to.iter_mut().zip(from.iter()).for_each(|(t, f)| *t = *f),
                }
            }
        });
        Some(out)
    }
}

/// The CPU kernel's description of a call and the sum of the additive mask parts as a tensor
/// (`[b|1, h|1, l, s]`, for the bias gradient), or `None` when the shapes disagree (the generic
/// path then reports them), a head has width 0, or the mask has a part the kernel cannot take.
#[allow(dead_code)] // unused when ndarray is off
fn cpu_problem<B: Backend>(
    query: &Tensor<B, 4>,
    key: &Tensor<B, 4>,
    value: &Tensor<B, 4>,
    options: &FusedAttentionOptions<'_, B>,
) -> Option<(crate::cpu::Problem, Option<Tensor<B, 4>>)> {
    let [b, h, l, d_k] = query.dims();
    let [_, h_kv, s, _] = key.dims();
    let [_, _, _, d_v] = value.dims();
    if !kv_shapes_agree(query.dims(), key.dims(), value.dims()) || d_k == 0 || d_v == 0 {
        return None; // zero-width heads are left to the tensor ops
    }
    let mask = options.mask.kernel_form([b, h, l, s], &query.device())?;
    let problem = crate::cpu::Problem {
        b,
        h,
        h_kv,
        l,
        s,
        d_k,
        d_v,
        scale: options.scale as f32,
        softcap: options.softcap.map(|c| c as f32),
        causal: mask.causal,
        window: mask.window,
        key_valid: mask.key_valid,
        allowed: mask.allowed,
        bias: mask.bias,
        dropout: None,
    };
    Some((problem, mask.bias_tensor))
}

focal_backend::if_wgpu! {
    /// wgpu hands the calls burn's fused `attention` op can take to it (see `burn_op_form`);
    /// the others run the generic path.
    impl FusedAttentionBackend for focal_backend::Wgpu {
        fn fused_attention(
            query: Tensor<Self, 4>,
            key: Tensor<Self, 4>,
            value: Tensor<Self, 4>,
            options: FusedAttentionOptions<'_, Self>,
        ) -> Tensor<Self, 4> {
            match burn_op_form(&query, &key, &value, &options) {
                Some(op_options) => {
                    let (key, value) = shared_kv_heads(&query, key, value);
                    burn::tensor::module::attention(query, key, value, None, None, op_options)
                }
                None => generic_fused_attention(query, key, value, options),
            }
        }
    }
}

/// burn's `attention` op options for this call, when the op computes exactly what Focal's
/// semantics ask and is no worse in memory: no dropout, no soft-cap, the default scale
/// `1 / sqrt(d_h)`, no mask or only the causal rule with `l = s` (burn aligns causal masks
/// top-left, Focal bottom-right; they agree when `l = s`), and fewer keys than
/// `memory_efficient_from` (burn's op materialises the scores unless its autotuned flash
/// kernel is picked, so long sequences stay on the chunked path). Key/value heads are expanded
/// for grouped-query attention, which the op does not take.
#[allow(dead_code)] // unused when wgpu is off
fn burn_op_form<B: Backend>(
    query: &Tensor<B, 4>,
    key: &Tensor<B, 4>,
    value: &Tensor<B, 4>,
    options: &FusedAttentionOptions<'_, B>,
) -> Option<burn::tensor::ops::AttentionModuleOptions> {
    let [_, _, l, d_k] = query.dims();
    let [_, _, s, _] = key.dims();
    let default_scale = 1.0 / (d_k as f64).sqrt();
    let plain = kv_shapes_agree(query.dims(), key.dims(), value.dims())
        && options.dropout.prob == 0.0
        && options.softcap.is_none()
        && (options.scale - default_scale).abs() <= 1e-12 * default_scale
        && s > 0
        && s < options.memory_efficient_from;
    let is_causal = options.mask.causal_only()?;
    (plain && (!is_causal || l == s)).then_some(burn::tensor::ops::AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    focal_backend::if_ndarray! {
        /// burn-ndarray's contiguous tensors reach the CPU kernel without a copy. This needs
        /// focal-attention's `ndarray` dependency to be the version burn-ndarray uses (0.17 for
        /// burn 0.21): otherwise the array types differ and this crate does not build.
        #[test]
        fn ndarray_tensors_are_read_in_place() {
            type B = burn::backend::NdArray<f32>;
            let device = Default::default();
            let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
            let tensor = Tensor::<B, 4>::from_data(
                burn::tensor::TensorData::new(values.clone(), [1, 2, 3, 4]),
                &device,
            );
            let host = B::host_values(tensor.clone());
            assert!(matches!(host, HostValues::Shared(_)), "contiguous tensors are shared");
            assert_eq!(host.as_slice(), values.as_slice());
            // A permuted view is copied into row-major order.
            let permuted = B::host_values(tensor.clone().swap_dims(1, 2));
            assert!(matches!(permuted, HostValues::Owned(_)));
            let expected: Vec<f32> = tensor.clone().swap_dims(1, 2).into_data().to_vec().unwrap();
            assert_eq!(permuted.as_slice(), expected.as_slice());
            // And one whose last axis is strided (the row-by-row copy does not apply).
            let transposed = B::host_values(tensor.clone().swap_dims(2, 3));
            let expected: Vec<f32> = tensor.swap_dims(2, 3).into_data().to_vec().unwrap();
            assert_eq!(transposed.as_slice(), expected.as_slice());
        }
    }

    /// A dropout seed that cannot be read is an error, never a constant seed.
    #[test]
    fn an_unreadable_dropout_seed_is_an_error_not_zero() {
        use burn::tensor::TensorData;
        assert!(seed_from_halves(TensorData::new(vec![7i64], [1])).is_err());
        assert!(seed_from_halves(TensorData::new(Vec::<i64>::new(), [0])).is_err());
        assert_eq!(
            seed_from_halves(TensorData::new(vec![1i64, 2], [2])),
            Ok((1u64 << 32) ^ 2)
        );
    }

    #[test]
    fn without_cpu_kernel_restores_the_setting_after_a_panic() {
        let before = CPU_KERNEL_OFF_HERE.get();
        let caught = std::panic::catch_unwind(|| {
            without_cpu_kernel(|| {
                assert!(!cpu_kernel_enabled());
                panic!("a failing test body");
            })
        });
        assert!(caught.is_err());
        assert_eq!(CPU_KERNEL_OFF_HERE.get(), before);
        // Nested calls restore the outer setting, not "on".
        without_cpu_kernel(|| {
            without_cpu_kernel(|| assert!(!cpu_kernel_enabled()));
            assert!(!cpu_kernel_enabled());
        });
        assert_eq!(CPU_KERNEL_OFF_HERE.get(), before);
    }
}

//! The CPU kernel under `Autodiff`: its forward as one graph node whose backward is
//! [`super::backward`]. The node's parents are query, key, value and the sum of the additive mask
//! parts, so a bias computed from parameters is trained like the projections.

use super::{Forward, Problem};
use crate::fused::{FusedAttentionBackend, HostValues};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use std::sync::Arc;

/// A tensor's values as `f32`, row-major.
pub(crate) fn read<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
}

/// The values of an inner-backend primitive (see [`FusedAttentionBackend::host_values`]).
fn values<B: FusedAttentionBackend, const D: usize>(
    primitive: B::FloatTensorPrimitive,
) -> HostValues {
    B::host_values(Tensor::<B, D>::from_primitive(TensorPrimitive::Float(
        primitive,
    )))
}

/// An inner-backend primitive holding row-major `values` of shape `dims`.
fn primitive<B: Backend, const D: usize>(
    values: Vec<f32>,
    dims: [usize; D],
    device: &B::Device,
) -> B::FloatTensorPrimitive {
    Tensor::<B, D>::from_data(TensorData::new(values, dims), device)
        .into_primitive()
        .tensor()
}

/// A node's incoming gradient (as `grads.consume` returns it) on the host, and its device.
fn upstream<B: FusedAttentionBackend, const D: usize>(
    gradient: B::FloatTensorPrimitive,
) -> (HostValues, B::Device) {
    let gradient = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(gradient));
    let device = gradient.device();
    (B::host_values(gradient), device)
}

/// An untracked tensor standing in for an absent parent of a node (it gets no gradient).
fn stand_in<B: Backend, C: CheckpointStrategy>(
    device: &B::Device,
) -> <Autodiff<B, C> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive {
    Tensor::<Autodiff<B, C>, 1>::zeros([1], device)
        .into_primitive()
        .tensor()
}

/// Everything the backward needs: the inputs and the forward's output and log-sum-exp.
struct Saved {
    problem: Problem,
    q: HostValues,
    k: HostValues,
    v: HostValues,
    forward: Forward,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedAttentionBackend> Backward<B, 4> for AttentionBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v, node_bias] = ops.parents;
        let (d_out, device) = upstream::<B, 4>(grads.consume::<B>(&ops.node));
        let saved = ops.state;
        let p = &saved.problem;
        let [q, k, v] = [&saved.q, &saved.k, &saved.v].map(HostValues::as_slice);
        let g = super::backward(
            p,
            q,
            k,
            v,
            &saved.forward,
            d_out.as_slice(),
            node_bias.is_some(),
        );
        let tensor = |data: Vec<f32>, shape: [usize; 4]| primitive::<B, 4>(data, shape, &device);
        if let Some(node) = node_q {
            grads.register::<B>(node.id, tensor(g.dq, [p.b, p.h, p.l, p.d_k]));
        }
        if let Some(node) = node_k {
            grads.register::<B>(node.id, tensor(g.dk, [p.b, p.h_kv, p.s, p.d_k]));
        }
        if let Some(node) = node_v {
            grads.register::<B>(node.id, tensor(g.dv, [p.b, p.h_kv, p.s, p.d_v]));
        }
        if let (Some(node), Some(d_bias), Some(bias)) = (node_bias, g.d_bias, &p.bias) {
            grads.register::<B>(node.id, tensor(d_bias, [bias.batch, bias.heads, p.l, p.s]));
        }
    }
}

/// Runs the kernel forward on the values of `query`, `key`, `value` and, when any of them or
/// `bias` (the sum of the additive mask parts, whose values `problem.bias` holds) is tracked,
/// records [`AttentionBackward`] with what it needs.
pub(crate) fn attention<B: FusedAttentionBackend, C: CheckpointStrategy>(
    problem: Problem,
    query: Tensor<Autodiff<B, C>, 4>,
    key: Tensor<Autodiff<B, C>, 4>,
    value: Tensor<Autodiff<B, C>, 4>,
    bias: Option<Tensor<Autodiff<B, C>, 4>>,
) -> Tensor<Autodiff<B, C>, 4> {
    let device = query.device();
    // Without a bias, an untracked stand-in fills the fourth parent (it gets no gradient).
    let bias = match bias {
        Some(bias) => bias.into_primitive().tensor().node,
        None => stand_in::<B, C>(&device).node,
    };
    let [q, k, v] = [query, key, value].map(|t| t.into_primitive().tensor());
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone(), bias];
    let [q_data, k_data, v_data] = [q, k, v].map(|t| values::<B, 4>(t.primitive));
    let forward = super::forward(
        &problem,
        q_data.as_slice(),
        k_data.as_slice(),
        v_data.as_slice(),
    );
    let shape = [problem.b, problem.h, problem.l, problem.d_v];
    let out = primitive::<B, 4>(forward.out.clone(), shape, &device);
    let out = match AttentionBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            Arc::new(Saved {
                problem,
                q: q_data,
                k: k_data,
                v: v_data,
                forward,
            }),
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// What the linear backward needs: the product's shapes and its saved input and weight.
struct LinearSaved<const D: usize> {
    /// Its layout is the one `w` is stored in.
    kernel: super::linear::Linear,
    x: HostValues,
    w: HostValues,
    x_dims: [usize; D],
    /// The layout of the weight's parent node: the stored one, or its transpose when a
    /// transposed view was shared in place.
    layout: crate::WeightLayout,
    /// The fused activation and its input (the product plus bias).
    activation: Option<(crate::Activation, Vec<f32>)>,
}

impl<const D: usize> std::fmt::Debug for LinearSaved<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinearSaved")
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct LinearBackward<const D: usize>;

impl<B: FusedAttentionBackend, const D: usize> Backward<B, 3> for LinearBackward<D> {
    type State = Arc<LinearSaved<D>>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let (dy, device) = upstream::<B, D>(grads.consume::<B>(&ops.node));
        let saved = ops.state;
        let kernel = &saved.kernel;
        // Through the activation first: dz = dy ∘ act'(z).
        let dz = saved.activation.as_ref().map(|(activation, z)| {
            let mut dz = dy.as_slice().to_vec();
            super::activation::backward(*activation, z, &mut dz);
            dz
        });
        let dy = dz.as_deref().unwrap_or(dy.as_slice());
        let needed = [node_x.is_some(), node_w.is_some(), node_b.is_some()];
        let [dx, dw, db] = kernel.backward(saved.x.as_slice(), saved.w.as_slice(), dy, needed);
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, primitive::<B, D>(dx, saved.x_dims, &device));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            // dW in the stored layout, transposed back when the parent has the other one.
            let stored = match kernel.layout {
                crate::WeightLayout::InOut => [kernel.k, kernel.n],
                crate::WeightLayout::OutIn => [kernel.n, kernel.k],
            };
            let dw = Tensor::<B, 2>::from_data(TensorData::new(dw, stored), &device);
            let dw = if kernel.layout == saved.layout {
                dw
            } else {
                dw.transpose()
            };
            grads.register::<B>(node.id, dw.into_primitive().tensor());
        }
        if let (Some(node), Some(db)) = (node_b, db) {
            grads.register::<B>(node.id, primitive::<B, 1>(db, [kernel.n], &device));
        }
    }
}

/// `x · W + b` on the CPU linear kernel, recorded as one node whose backward gives `dx`, `dW`
/// and `db` from the saved `x` and `W` (each only when its parent is tracked).
pub(crate) fn linear<B: FusedAttentionBackend, C: CheckpointStrategy, const D: usize>(
    shape: crate::linear::LinearShape<D>,
    x: Tensor<Autodiff<B, C>, D>,
    weight: Tensor<Autodiff<B, C>, 2>,
    bias: Option<Tensor<Autodiff<B, C>, 1>>,
    layout: crate::WeightLayout,
    activation: Option<crate::Activation>,
) -> Tensor<Autodiff<B, C>, D> {
    let device = x.device();
    let x_dims = x.dims();
    let [x, w] = [
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    ];
    let bias = bias.map(|b| b.into_primitive().tensor());
    let nodes = [
        x.node.clone(),
        w.node.clone(),
        bias.as_ref()
            .map_or_else(|| stand_in::<B, C>(&device).node, |b| b.node.clone()),
    ];
    let bias_values = bias.map(|b| values::<B, 1>(b.primitive));
    let x_values = values::<B, D>(x.primitive);
    let (w_values, stored) = B::host_weight(
        Tensor::from_primitive(TensorPrimitive::Float(w.primitive)),
        layout,
    );
    let kernel = shape.kernel(stored);
    let z = kernel.forward(
        x_values.as_slice(),
        w_values.as_slice(),
        bias_values.as_ref().map(HostValues::as_slice),
    );
    // With an activation, `z` is kept for the backward and the output is a copy.
    let (y, activation) = match activation {
        Some(activation) => {
            let mut y = z.clone();
            super::activation::forward(activation, &mut y);
            (y, Some((activation, z)))
        }
        None => (z, None),
    };
    let out = primitive::<B, D>(y, shape.output, &device);
    let out = match LinearBackward::<D>
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            Arc::new(LinearSaved {
                kernel,
                x: x_values,
                w: w_values,
                x_dims,
                layout,
                activation,
            }),
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// What the norm backward needs.
struct NormSaved<const D: usize> {
    shape: super::norm::NormShape,
    /// The normalised input (`x + residual`).
    input: HostValues,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    gamma: HostValues,
    dims: [usize; D],
}

impl<const D: usize> std::fmt::Debug for NormSaved<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormSaved")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct NormBackward<const D: usize>;

impl<B: FusedAttentionBackend, const D: usize> Backward<B, 4> for NormBackward<D> {
    type State = Arc<NormSaved<D>>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_residual, node_gamma, node_beta] = ops.parents;
        let (dy, device) = upstream::<B, D>(grads.consume::<B>(&ops.node));
        let saved = ops.state;
        let (dx, d_gamma, d_beta) = saved.shape.backward(
            saved.input.as_slice(),
            &saved.mean,
            &saved.rstd,
            saved.gamma.as_slice(),
            dy.as_slice(),
        );
        let d = saved.shape.d;
        let dx = Tensor::<B, D>::from_data(TensorData::new(dx, saved.dims), &device);
        // The residual enters the sum as `x` does: the same gradient.
        if let Some(node) = node_residual {
            grads.register::<B>(node.id, dx.clone().into_primitive().tensor());
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx.into_primitive().tensor());
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, primitive::<B, 1>(d_gamma, [d], &device));
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, primitive::<B, 1>(d_beta, [d], &device));
        }
    }
}

/// `norm(x + residual) · γ + β` on the CPU, recorded as one node whose backward gives the
/// gradients of `x`, the residual, `γ` and `β` (each only when its parent is tracked).
pub(crate) fn norm<B: FusedAttentionBackend, C: CheckpointStrategy, const D: usize>(
    shape: super::norm::NormShape,
    x: Tensor<Autodiff<B, C>, D>,
    residual: Option<Tensor<Autodiff<B, C>, D>>,
    gamma: Tensor<Autodiff<B, C>, 1>,
    beta: Option<Tensor<Autodiff<B, C>, 1>>,
) -> Tensor<Autodiff<B, C>, D> {
    let device = x.device();
    let dims = x.dims();
    let stand_in = || stand_in::<B, C>(&device).node;
    let [x, gamma] = [x.into_primitive().tensor(), gamma.into_primitive().tensor()];
    let residual = residual.map(|r| r.into_primitive().tensor());
    let beta = beta.map(|b| b.into_primitive().tensor());
    let nodes = [
        x.node.clone(),
        residual.as_ref().map_or_else(stand_in, |r| r.node.clone()),
        gamma.node.clone(),
        beta.as_ref().map_or_else(stand_in, |b| b.node.clone()),
    ];
    let x_values = values::<B, D>(x.primitive);
    let residual_values = residual.map(|r| values::<B, D>(r.primitive));
    let gamma_values = values::<B, 1>(gamma.primitive);
    let beta_values = beta.map(|b| values::<B, 1>(b.primitive));
    let forward = shape.forward(
        x_values.as_slice(),
        residual_values.as_ref().map(HostValues::as_slice),
        gamma_values.as_slice(),
        beta_values.as_ref().map(HostValues::as_slice),
    );
    let out = primitive::<B, D>(forward.out, dims, &device);
    let out = match NormBackward::<D>
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = if residual_values.is_some() {
                HostValues::Owned(forward.sum)
            } else {
                x_values
            };
            prep.finish(
                Arc::new(NormSaved {
                    shape,
                    input,
                    mean: forward.mean,
                    rstd: forward.rstd,
                    gamma: gamma_values,
                    dims,
                }),
                out,
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

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
        let d_out =
            Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(grads.consume::<B>(&ops.node)));
        let device = d_out.device();
        let saved = ops.state;
        let p = &saved.problem;
        let d_out = B::host_values(d_out);
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
        let tensor = |data: Vec<f32>, shape: [usize; 4]| {
            Tensor::<B, 4>::from_data(TensorData::new(data, shape), &device)
                .into_primitive()
                .tensor()
        };
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
    let bias = bias
        .unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &device))
        .into_primitive()
        .tensor()
        .node;
    let [q, k, v] = [query, key, value].map(|t| t.into_primitive().tensor());
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone(), bias];
    let [q_data, k_data, v_data] = [q, k, v]
        .map(|t| B::host_values(Tensor::from_primitive(TensorPrimitive::Float(t.primitive))));
    let forward = super::forward(
        &problem,
        q_data.as_slice(),
        k_data.as_slice(),
        v_data.as_slice(),
    );
    let shape = [problem.b, problem.h, problem.l, problem.d_v];
    let out = Tensor::<B, 4>::from_data(TensorData::new(forward.out.clone(), shape), &device)
        .into_primitive()
        .tensor();
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

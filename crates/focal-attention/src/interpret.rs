//! What a model's attention says about its inputs, across layers: attention rollout and
//! attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").
//!
//! Both start from each layer's attention probabilities `[b, heads, l, l]` (a stack's
//! `output_attentions`), average the heads, and account for the residual connection as the
//! paper does: a layer's output is half its attention and half its input, `0.5 A + 0.5 I`
//! (computed as `A + I` with rows renormalised, as the paper's code does). Row `i` of a result
//! says how much of output position `i` comes from each input position; every row sums to 1.
//!
//! - [`attention_rollout`] multiplies those matrices from the first layer up;
//! - [`attention_flow`] treats them as capacities of a layered graph (one node per position and
//!   layer) and takes the maximum flow from each output position to each input position, each
//!   output's flows normalised to sum to 1. Flow costs one maximum-flow problem per pair of
//!   positions, so it is refused for long inputs ([`MAX_FLOW_WORK`]).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Why attention weights cannot be combined.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpretError {
    /// No layers were given.
    #[error("no layers of attention weights")]
    NoLayers,
    /// A layer is not `[batch, heads, l, l]` like the first.
    #[error(
        "layer {layer}'s attention weights are {dims:?}; every layer must be [batch, heads, l, l] with the first layer's shape {first:?}"
    )]
    Shape {
        /// The layer (from 0).
        layer: usize,
        /// Its shape.
        dims: [usize; 4],
        /// The first layer's shape.
        first: [usize; 4],
    },
    /// Attention flow over this many positions would take too long.
    #[error(
        "attention flow over {positions} positions and {layers} layers is {positions}² maximum-flow problems on {layers}×{positions}² edges, past the limit of layers × positions⁴ = {MAX_FLOW_WORK} (about a second): use rollout, or a shorter input"
    )]
    TooLong {
        /// Positions.
        positions: usize,
        /// Layers.
        layers: usize,
    },
}

/// The largest `layers × positions⁴` [`attention_flow`] takes on: 6 layers of up to 68
/// positions, 12 layers of up to 57 (6 layers of 64 took about a second).
pub const MAX_FLOW_WORK: usize = 1 << 27;

/// Each layer's attention with its heads averaged and the residual connection added,
/// `[b, l, l]`: `(A + I)` with its rows renormalised, i.e. `0.5 A + 0.5 I` for attention rows
/// that sum to 1.
pub fn residual_attention<B: Backend>(
    attentions: &[Tensor<B, 4>],
) -> Result<Vec<Tensor<B, 3>>, InterpretError> {
    let first = attentions.first().ok_or(InterpretError::NoLayers)?.dims();
    let [b, _, l, s] = first;
    if l != s {
        return Err(InterpretError::Shape {
            layer: 0,
            dims: first,
            first,
        });
    }
    let device = attentions[0].device();
    let eye = Tensor::<B, 2>::eye(l, &device)
        .unsqueeze::<3>()
        .expand([b, l, l]);
    attentions
        .iter()
        .enumerate()
        .map(|(layer, a)| {
            let dims = a.dims();
            if dims != first {
                return Err(InterpretError::Shape { layer, dims, first });
            }
            let a = a.clone().mean_dim(1).squeeze_dim::<3>(1) + eye.clone();
            Ok(a.clone() / a.sum_dim(2))
        })
        .collect()
}

/// Attention rollout `[b, l, l]`: the residual attentions ([`residual_attention`]) multiplied
/// from the first layer up, `Â_L ⋯ Â_1`. Row `i` is how much of the last layer's position `i`
/// comes from each input position.
///
/// ```
/// # use burn::tensor::Tensor;
/// # type B = focal_backend::NdArray;
/// # let device = Default::default();
/// use focal_attention::{attention_flow, attention_rollout};
/// // Two layers of one head over 2 positions: position 1 attends to position 0 only.
/// let layer = Tensor::<B, 1>::from_floats([1.0, 0.0, 1.0, 0.0], &device).reshape([1, 1, 2, 2]);
/// let layers = [layer.clone(), layer];
/// let rollout = attention_rollout(&layers).unwrap(); // [b, l, l]
/// // Each layer keeps half of position 1 and takes half from position 0: a quarter is left.
/// let row: Vec<f32> = rollout.into_data().to_vec().unwrap();
/// assert!((row[3] - 0.25).abs() < 1e-6);
/// assert_eq!(attention_flow(&layers).unwrap().dims(), [1, 2, 2]);
/// ```
pub fn attention_rollout<B: Backend>(
    attentions: &[Tensor<B, 4>],
) -> Result<Tensor<B, 3>, InterpretError> {
    let layers = residual_attention(attentions)?;
    Ok(layers
        .into_iter()
        .reduce(|joint, layer| layer.matmul(joint))
        .expect("at least one layer"))
}

/// Attention flow `[b, l, l]`: in the graph with a node per position at every layer boundary
/// (the inputs, then each layer's outputs) and an edge from output position `i` of layer `k`
/// to its input position `j` of capacity `Â_k[i, j]` ([`residual_attention`]), the maximum
/// flow from each last-layer position to each input position, each row normalised to sum to 1.
/// Refused for inputs longer than [`MAX_FLOW_WORK`] allows.
pub fn attention_flow<B: Backend>(
    attentions: &[Tensor<B, 4>],
) -> Result<Tensor<B, 3>, InterpretError> {
    let layers = residual_attention(attentions)?;
    let [b, l, _] = layers[0].dims();
    let depth = layers.len();
    if depth.saturating_mul(l.saturating_pow(4)) > MAX_FLOW_WORK {
        return Err(InterpretError::TooLong {
            positions: l,
            layers: depth,
        });
    }
    let device = layers[0].device();
    let values: Vec<Vec<f64>> = layers
        .into_iter()
        .map(|layer| {
            layer
                .into_data()
                .convert::<f64>()
                .to_vec()
                .expect("f64 attention")
        })
        .collect();
    let mut flows = Vec::with_capacity(b * l * l);
    for sequence in 0..b {
        let mut graph = FlowGraph::new((depth + 1) * l);
        for (k, layer) in values.iter().enumerate() {
            let layer = &layer[sequence * l * l..(sequence + 1) * l * l];
            for i in 0..l {
                for j in 0..l {
                    graph.add_edge((k + 1) * l + i, k * l + j, layer[i * l + j]);
                }
            }
        }
        for output in 0..l {
            let row: Vec<f64> = (0..l)
                .map(|input| graph.max_flow(depth * l + output, input))
                .collect();
            let total: f64 = row.iter().sum();
            flows.extend(row.iter().map(|f| (f / total) as f32));
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(flows, [b, l, l]),
        &device,
    ))
}

/// A directed graph with real capacities, for maximum flows (Dinic's algorithm). Edges are
/// stored in pairs: edge `e` and its residual twin `e ^ 1`.
struct FlowGraph {
    edges_of: Vec<Vec<usize>>,
    to: Vec<usize>,
    capacity: Vec<f64>,
}

/// Flows below this are none.
const EPSILON: f64 = 1e-12;

impl FlowGraph {
    fn new(nodes: usize) -> Self {
        Self {
            edges_of: vec![Vec::new(); nodes],
            to: Vec::new(),
            capacity: Vec::new(),
        }
    }

    fn add_edge(&mut self, from: usize, to: usize, capacity: f64) {
        if capacity <= EPSILON {
            return;
        }
        self.edges_of[from].push(self.to.len());
        self.to.push(to);
        self.capacity.push(capacity);
        self.edges_of[to].push(self.to.len());
        self.to.push(from);
        self.capacity.push(0.0);
    }

    /// The maximum flow from `source` to `sink`; the graph is left as it was.
    fn max_flow(&self, source: usize, sink: usize) -> f64 {
        let mut residual = self.capacity.clone();
        let nodes = self.edges_of.len();
        let mut total = 0.0;
        loop {
            // Levels by breadth-first search over edges with capacity left.
            let mut level = vec![usize::MAX; nodes];
            level[source] = 0;
            let mut queue = std::collections::VecDeque::from([source]);
            while let Some(node) = queue.pop_front() {
                for &e in &self.edges_of[node] {
                    let next = self.to[e];
                    if residual[e] > EPSILON && level[next] == usize::MAX {
                        level[next] = level[node] + 1;
                        queue.push_back(next);
                    }
                }
            }
            if level[sink] == usize::MAX {
                return total;
            }
            // A blocking flow along edges that go one level down.
            let mut next_edge = vec![0; nodes];
            loop {
                let pushed = self.push(
                    source,
                    sink,
                    f64::INFINITY,
                    &level,
                    &mut next_edge,
                    &mut residual,
                );
                if pushed <= EPSILON {
                    break;
                }
                total += pushed;
            }
        }
    }

    fn push(
        &self,
        node: usize,
        sink: usize,
        limit: f64,
        level: &[usize],
        next_edge: &mut [usize],
        residual: &mut [f64],
    ) -> f64 {
        if node == sink {
            return limit;
        }
        while next_edge[node] < self.edges_of[node].len() {
            let e = self.edges_of[node][next_edge[node]];
            let next = self.to[e];
            if residual[e] > EPSILON && level[next] == level[node] + 1 {
                let pushed = self.push(
                    next,
                    sink,
                    limit.min(residual[e]),
                    level,
                    next_edge,
                    residual,
                );
                if pushed > EPSILON {
                    residual[e] -= pushed;
                    residual[e ^ 1] += pushed;
                    return pushed;
                }
            }
            next_edge[node] += 1;
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_backend::assert_close;

    fn reference() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/interpret/rollout_flow_reference.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn floats(value: &serde_json::Value) -> Vec<f32> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }

    /// Rollout and flow equal the paper's code (numpy, networkx's Edmonds-Karp) on fixed
    /// attention weights, to 1e-5. Regenerate the reference with
    /// `python3 tests/fixtures/interpret/generate_rollout_flow.py`.
    fn rollout_and_flow_equal_the_papers_code<B: Backend>(device: &B::Device) {
        let reference = reference();
        let count = |key: &str| reference[key].as_u64().unwrap() as usize;
        let (layers, heads, l) = (count("layers"), count("heads"), count("tokens"));
        let all = Tensor::<B, 1>::from_floats(floats(&reference["attentions"]).as_slice(), device)
            .reshape([2, layers, heads, l, l]);
        let attentions: Vec<Tensor<B, 4>> = (0..layers)
            .map(|k| {
                all.clone()
                    .slice([0..2, k..k + 1, 0..heads, 0..l, 0..l])
                    .squeeze_dim::<4>(1)
            })
            .collect();
        let expected = |key: &str| {
            let rows: Vec<f32> = reference[key]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(floats)
                .collect();
            Tensor::<B, 1>::from_floats(rows.as_slice(), device).reshape([2, l, l])
        };
        let rollout = attention_rollout(&attentions).unwrap();
        assert_close(rollout.clone(), expected("rollout"), 1e-5);
        let flow = attention_flow(&attentions).unwrap();
        assert_close(flow.clone(), expected("flow"), 1e-5);
        // Rows are distributions.
        for result in [rollout, flow] {
            assert_close(result.sum_dim(2), Tensor::ones([2, l, 1], device), 1e-5);
        }
    }

    /// No layers, mismatched layers, non-square weights and inputs too long for flow are
    /// errors that say so.
    fn bad_weights_are_refused<B: Backend>(device: &B::Device) {
        assert_eq!(
            attention_rollout::<B>(&[]).unwrap_err(),
            InterpretError::NoLayers
        );
        let uniform = |l: usize, s: usize| Tensor::<B, 4>::ones([1, 2, l, s], device) / s as f32;
        let err = attention_flow(&[uniform(3, 3), uniform(4, 4)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("layer 1's attention weights are [1, 2, 4, 4]"),
            "{err}"
        );
        assert!(matches!(
            attention_rollout(&[uniform(3, 4)]),
            Err(InterpretError::Shape { layer: 0, .. })
        ));
        let err = attention_flow(&vec![uniform(70, 70); 6]).unwrap_err();
        assert!(
            err.to_string().contains("use rollout, or a shorter input"),
            "{err}"
        );
        // Two layers of uniform attention over 3 positions: each residual layer keeps 2/3 at
        // its own position and passes 1/6 to each other; through both, (2/3)² + 2·(1/6)² = 1/2
        // stays and 2·(2/3)(1/6) + (1/6)² = 1/4 comes from each other position, by rollout
        // and by flow alike.
        let expected = Tensor::<B, 1>::from_floats(
            [0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.5],
            device,
        )
        .reshape([1, 3, 3]);
        let layers = [uniform(3, 3), uniform(3, 3)];
        assert_close(attention_rollout(&layers).unwrap(), expected.clone(), 1e-6);
        assert_close(attention_flow(&layers).unwrap(), expected, 1e-6);
    }

    focal_backend::backend_tests!(
        rollout_and_flow_equal_the_papers_code,
        bad_weights_are_refused
    );
}

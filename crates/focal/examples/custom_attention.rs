//! A custom attention layer built from Focal's primitives, run on burn-ndarray and, with the
//! `wgpu` feature, on burn-wgpu with the same weights and input.
//!
//! The layer is multi-head self-attention with cosine scores and a learned temperature (as in
//! Swin Transformer V2), an ALiBi position bias and a causal sliding window: three pieces of
//! `focal::attention` that no ready-made layer combines.
//!
//! ```sh
//! cargo run -p focal --example custom_attention                   # ndarray
//! cargo run -p focal --example custom_attention --features wgpu   # ndarray and wgpu, compared
//! ```

use focal::attention::{
    AttentionInput, AttentionMask, ScoreFunctionConfig, ScoreKind, ScoredAttention,
    ScoredAttentionConfig, alibi_bias,
};
use focal::burn::module::Module;
use focal::burn::nn::{Linear, LinearConfig};
use focal::burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use focal::burn::tensor::{Tensor, TensorData, backend::Backend};

/// Cosine-score self-attention with ALiBi and a sliding window.
#[derive(Module, Debug)]
struct WindowedCosineAttention<B: Backend> {
    /// Queries, keys and values from one projection `d → 3d`.
    qkv: Linear<B>,
    /// The heads, concatenated, back to `d`.
    out: Linear<B>,
    /// Cosine scores with a learned temperature, softmax, dropout after it.
    attention: ScoredAttention<B>,
    heads: usize,
    window: usize,
}

impl<B: Backend> WindowedCosineAttention<B> {
    fn new(d_model: usize, heads: usize, window: usize, device: &B::Device) -> Self {
        let d_head = d_model / heads;
        let score = ScoreFunctionConfig::new(
            d_head,
            ScoreKind::Cosine {
                temperature: 0.1,
                learnable: true,
            },
        );
        Self {
            qkv: LinearConfig::new(d_model, 3 * d_model).init(device),
            out: LinearConfig::new(d_model, d_model).init(device),
            attention: ScoredAttentionConfig::new(score).init(device),
            heads,
            window,
        }
    }

    /// `x [b, l, d]` → `(output [b, l, d], attention weights [b, h, l, l])`.
    fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [b, l, d] = x.dims();
        let d_head = d / self.heads;
        // [b, l, 3d] → three [b, h, l, d_h]
        let heads = self
            .qkv
            .forward(x)
            .reshape([b, l, 3, self.heads, d_head])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| heads.clone().narrow(0, i, 1).squeeze::<4>();
        let mask = AttentionMask::sliding_window(self.window).and(AttentionMask::additive(
            alibi_bias(self.heads, l, l, &part(0).device()),
        ));
        let attended = self.attention.forward(
            AttentionInput::new(part(0), part(1), part(2))
                .mask(mask)
                .need_weights(true),
        );
        let context = attended.context.swap_dims(1, 2).reshape([b, l, d]);
        let weights = attended.weights.expect("weights were asked for");
        (self.out.forward(context), weights)
    }
}

const D_MODEL: usize = 64;
const HEADS: usize = 4;
const WINDOW: usize = 4;
const LENGTH: usize = 12;

/// The same input on every backend: a smooth pattern, no random generator involved.
fn input<B: Backend>(device: &B::Device) -> Tensor<B, 3> {
    let values: Vec<f32> = (0..2 * LENGTH * D_MODEL)
        .map(|i| ((i as f32) * 0.37).sin())
        .collect();
    Tensor::from_data(TensorData::new(values, [2, LENGTH, D_MODEL]), device)
}

/// Runs the layer whose weights are `weights` (burn's binary record) on backend `B`.
fn run_on<B: Backend>(weights: &[u8], device: &B::Device) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let record = BinBytesRecorder::<FullPrecisionSettings>::default()
        .load(weights.to_vec(), device)
        .expect("a record this program wrote");
    let layer =
        WindowedCosineAttention::<B>::new(D_MODEL, HEADS, WINDOW, device).load_record(record);
    layer.forward(input(device))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    type Cpu = focal::backend::NdArray;
    let cpu = Default::default();
    let layer = WindowedCosineAttention::<Cpu>::new(D_MODEL, HEADS, WINDOW, &cpu);
    let weights =
        BinBytesRecorder::<FullPrecisionSettings>::default().record(layer.into_record(), ())?;

    let (out, attention) = run_on::<Cpu>(&weights, &cpu);
    println!(
        "ndarray: output {:?}, attention {:?}",
        out.dims(),
        attention.dims()
    );
    // Each query sees at most WINDOW keys, itself and the ones just before it.
    let last_row = attention
        .clone()
        .slice([0..1, 0..1, LENGTH - 1..LENGTH])
        .flatten::<1>(0, 3);
    let row: Vec<f32> = last_row.into_data().to_vec()?;
    let seen = row.iter().filter(|&&p| p > 0.0).count();
    println!(
        "head 0, last query: {seen} keys with weight > 0, {:.3} on itself",
        row[LENGTH - 1]
    );
    assert_eq!(seen, WINDOW);
    let total: f32 = row.iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "a row sums to {total}");

    #[cfg(feature = "wgpu")]
    {
        type Gpu = focal::backend::Wgpu;
        let gpu = Default::default();
        match focal::backend::wgpu_adapter_info() {
            Ok(adapter) => println!("wgpu adapter: {adapter}"),
            Err(e) => return Err(format!("wgpu could not start: {e}").into()),
        }
        let (gpu_out, _) = run_on::<Gpu>(&weights, &gpu);
        let gpu_out: Vec<f32> = gpu_out.into_data().to_vec()?;
        let cpu_out: Vec<f32> = out.into_data().to_vec()?;
        let gap = cpu_out
            .iter()
            .zip(&gpu_out)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("wgpu: the same output within {gap:.2e} of ndarray's");
        assert!(gap < 1e-4, "the backends disagree by {gap}");
    }
    #[cfg(not(feature = "wgpu"))]
    println!("(run with --features wgpu to compare with burn-wgpu)");
    Ok(())
}

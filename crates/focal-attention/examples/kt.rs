use burn::tensor::{Distribution, Tensor};
use focal_attention::{AttentionInput, AttentionMask, ScaledDotProductAttentionConfig};
type B = burn::backend::NdArray<f32>;
fn main() {
    let device = Default::default();
    let att = ScaledDotProductAttentionConfig::new().init();
    for &l in &[2048usize] {
        for causal in [false] {
            let n = Distribution::Normal(0.0, 1.0);
            let q = Tensor::<B, 4>::random([1, 8, l, 64], n, &device);
            let k = Tensor::<B, 4>::random([1, 8, l, 64], n, &device);
            let v = Tensor::<B, 4>::random([1, 8, l, 64], n, &device);
            let mut best = f64::MAX;
            for _ in 0..10 {
                let t = std::time::Instant::now();
                let mut inp = AttentionInput::new(q.clone(), k.clone(), v.clone());
                if causal {
                    inp = inp.mask(AttentionMask::causal());
                }
                let _ = att.forward(inp).context.into_data();
                best = best.min(t.elapsed().as_secs_f64());
            }
            let fl = 4.0 * 8.0 * (l * l * 64) as f64 / if causal { 2.0 } else { 1.0 };
            println!(
                "l {l} causal {causal}: {:.2} ms {:.1} GFLOP/s",
                best * 1e3,
                fl / best / 1e9
            );
        }
    }
}

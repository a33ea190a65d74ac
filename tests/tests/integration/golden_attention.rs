//! Golden parity with PyTorch: scaled dot-product attention and `nn.MultiheadAttention`.
//!
//! The fixture `tests/fixtures/attention.safetensors` holds inputs, weights and PyTorch's
//! outputs; `tests/fixtures/alibi_reference.safetensors` holds BLOOM's ALiBi tensors.
//! Regenerate them from the repository root with
//!
//! ```sh
//! pip install torch safetensors
//! python tests/fixtures/generate_attention.py
//! pip install "transformers==4.57.1"
//! python tests/fixtures/generate_alibi.py
//! ```
//!
//! Mask conventions are converted here: PyTorch's `key_padding_mask` and boolean `attn_mask` of
//! `nn.MultiheadAttention` mean `true` = masked; Focal's mean `true` = may attend.

use focal::attention::{
    AttentionInput, AttentionMask, FusedAttentionBackend, MhaInput, MultiHeadAttention,
    MultiHeadAttentionConfig, ScaledDotProductAttentionConfig, WeightsMode,
};
use focal::backend::{Tolerance, assert_close};
use focal::burn::tensor::{Bool, Tensor, TensorData, backend::Backend};
use std::collections::HashMap;
use std::sync::OnceLock;

const TOLERANCE: f64 = 1e-5;

use crate::common;

fn fixture() -> &'static common::Fixture {
    static FIXTURE: OnceLock<common::Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        common::Fixture::parse(include_bytes!("../../fixtures/attention.safetensors"))
    })
}

fn tensor<B: Backend, const D: usize>(key: &str, device: &B::Device) -> Tensor<B, D> {
    fixture().tensor(key, device)
}

fn flag<B: Backend, const D: usize>(key: &str, device: &B::Device) -> Tensor<B, D, Bool> {
    fixture().flag(key, device)
}

fn state(prefix: &str) -> HashMap<String, TensorData> {
    fixture().state(prefix)
}

fn sdpa<B: FusedAttentionBackend>(
    case: &str,
    device: &B::Device,
    build: impl FnOnce(AttentionInput<B>) -> AttentionInput<B>,
) {
    let input = AttentionInput::new(
        tensor(&format!("{case}.q"), device),
        tensor(&format!("{case}.k"), device),
        tensor(&format!("{case}.v"), device),
    );
    let out = ScaledDotProductAttentionConfig::new()
        .init()
        .forward(build(input));
    assert_close(
        out.context,
        tensor(&format!("{case}.out"), device),
        TOLERANCE,
    );
}

fn sdpa_bool_mask_matches_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    let allowed = flag::<B, 4>("sdpa_bool.mask", device);
    sdpa::<B>("sdpa_bool", device, |i| {
        i.mask(AttentionMask::explicit(allowed))
    });
}

fn sdpa_float_mask_matches_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    let bias = tensor::<B, 4>("sdpa_float.mask", device);
    sdpa::<B>("sdpa_float", device, |i| {
        i.mask(AttentionMask::additive(bias))
    });
}

/// Bottom-right causal with l < s, as PyTorch's `causal_lower_right`.
fn sdpa_causal_with_fewer_queries_matches_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    sdpa::<B>("sdpa_causal", device, |i| i.mask(AttentionMask::causal()));
}

fn sdpa_custom_scale_matches_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    sdpa::<B>("sdpa_scale", device, |i| i.scale(0.3));
}

fn sdpa_grouped_query_matches_pytorch_enable_gqa<B: FusedAttentionBackend>(device: &B::Device) {
    sdpa::<B>("sdpa_gqa", device, |i| i);
}

/// `nn.MultiheadAttention` with PyTorch's weights: key padding plus a boolean attention mask.
fn mha<B: FusedAttentionBackend>(
    case: &str,
    config: MultiHeadAttentionConfig,
    weights: WeightsMode,
    device: &B::Device,
) {
    let mha = MultiHeadAttention::<B>::from_pytorch(&config, &state(case), device)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let key_padding = flag::<B, 2>(&format!("{case}.key_padding_mask"), device).bool_not();
    let [l, s] = tensor::<B, 2>(&format!("{case}.attn_mask"), device).dims();
    let allowed = flag::<B, 2>(&format!("{case}.attn_mask"), device)
        .bool_not()
        .reshape([1, 1, l, s]);
    let mask = AttentionMask::key_padding(key_padding).and(AttentionMask::explicit(allowed));
    let out = mha.forward(
        MhaInput::new(
            tensor(&format!("{case}.query"), device),
            tensor(&format!("{case}.key"), device),
            tensor(&format!("{case}.value"), device),
        )
        .mask(mask)
        .weights(weights),
    );
    let tolerance = Tolerance::new(TOLERANCE, 1e-5);
    assert_close(
        out.context,
        tensor(&format!("{case}.context"), device),
        tolerance,
    );
    let expected: Tensor<B, 4> = match weights {
        // PyTorch averages to [b, l, s]; ours keeps the head axis: [b, 1, l, s].
        WeightsMode::Averaged => {
            tensor::<B, 3>(&format!("{case}.weights"), device).unsqueeze_dim(1)
        }
        _ => tensor(&format!("{case}.weights"), device),
    };
    assert_close(out.weights.unwrap(), expected, tolerance);
}

fn mha_with_bias_and_averaged_weights_matches_pytorch<B: FusedAttentionBackend>(
    device: &B::Device,
) {
    mha::<B>(
        "mha_bias",
        MultiHeadAttentionConfig::new(16, 4),
        WeightsMode::Averaged,
        device,
    );
}

fn mha_kdim_vdim_without_bias_matches_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    let config = MultiHeadAttentionConfig::new(16, 2)
        .with_bias(false)
        .with_kdim(Some(12))
        .with_vdim(Some(10));
    mha::<B>("mha_kdim_vdim", config, WeightsMode::PerHead, device);
}

focal::backend::backend_tests!(
    sdpa_bool_mask_matches_pytorch,
    sdpa_float_mask_matches_pytorch,
    sdpa_causal_with_fewer_queries_matches_pytorch,
    sdpa_custom_scale_matches_pytorch,
    sdpa_grouped_query_matches_pytorch_enable_gqa,
    mha_with_bias_and_averaged_weights_matches_pytorch,
    mha_kdim_vdim_without_bias_matches_pytorch,
);

/// RoPE at positions 3..8 against the rotate-half formula (Hugging Face LLaMA / GPT-NeoX).
fn rope_with_offset_matches_the_reference<B: Backend>(device: &B::Device) {
    let rope = focal::attention::RotaryEncodingConfig::new(8)
        .with_max_len(16)
        .init::<B>(device);
    let out = rope.forward(tensor("rope.x", device), 3);
    assert_close(out, tensor("rope.out", device), TOLERANCE);
}

/// ALiBi slopes and bias for a power-of-two and another head count, against the paper's code.
fn alibi_matches_the_reference<B: Backend>(device: &B::Device) {
    for heads in [8, 6] {
        let slopes: Vec<f32> = focal::attention::alibi_slopes(heads)
            .into_iter()
            .map(|m| m as f32)
            .collect();
        let slopes = Tensor::<B, 1>::from_data(TensorData::new(slopes, [heads]), device);
        assert_close(
            slopes,
            tensor(&format!("alibi{heads}.slopes"), device),
            1e-7,
        );
        let bias = focal::attention::alibi_bias::<B>(heads, 3, 5, device);
        assert_close(bias, tensor(&format!("alibi{heads}.bias"), device), 1e-7);
    }
}

/// ALiBi against an independent implementation, transformers' BLOOM `build_alibi_tensor`
/// (`tests/fixtures/generate_alibi.py`, transformers 4.57.1), for 6, 8 and 12 heads. BLOOM's
/// causal form gives key `j` the bias `slope · j` for every query; Focal's `-slope · (p - j)`
/// must equal `bloom[j] - bloom[p]` on the keys a causal query sees (the difference is the
/// constant per row that the softmax cancels): the full `[7, 7]` bias, and one query at the end
/// of 7 keys (cached decoding, bottom-right aligned).
fn alibi_matches_bloom<B: Backend>(device: &B::Device) {
    let bloom =
        common::Fixture::parse(include_bytes!("../../fixtures/alibi_reference.safetensors"));
    for heads in [6, 8, 12] {
        let name = format!("bloom{heads}");
        let (reference, s) = (bloom.values(&name), bloom.shape(&name)[1]);
        for l in [s, 1] {
            let ours: Vec<f32> = focal::attention::alibi_bias::<B>(heads, l, s, device)
                .into_data()
                .to_vec()
                .unwrap();
            let mut compared = 0;
            for h in 0..heads {
                let key = |j: usize| reference[h * s + j];
                for i in 0..l {
                    let p = i + s - l; // the query's position among the keys
                    for j in 0..=p {
                        let (got, want) = (ours[(h * l + i) * s + j], key(j) - key(p));
                        assert!(
                            (got - want).abs() <= 1e-5,
                            "{heads} heads, head {h}, query {i} of {l}, key {j}: {got} vs BLOOM's {want}"
                        );
                        compared += 1;
                    }
                }
            }
            assert!(compared >= heads * l);
        }
    }
}

focal::backend::backend_tests!(
    rope_with_offset_matches_the_reference,
    alibi_matches_the_reference,
    alibi_matches_bloom
);

/// T5 buckets for relative positions -300..=300 against Hugging Face's formula, both
/// directions, T5's default sizes and a small configuration.
#[test]
fn t5_relative_position_buckets_match_hugging_face() {
    for bidirectional in [true, false] {
        for (buckets, distance) in [(32, 128), (16, 20)] {
            let name = format!(
                "t5_buckets_{}_{buckets}_{distance}",
                if bidirectional { "bi" } else { "causal" }
            );
            let relative = fixture().values(&format!("{name}.relative"));
            let expected = fixture().values(&format!("{name}.buckets"));
            for (&r, &e) in relative.iter().zip(&expected) {
                let ours = focal::attention::relative_position_bucket(
                    r as i64,
                    bidirectional,
                    buckets,
                    distance,
                );
                assert_eq!(ours, e as usize, "{name}: relative position {r}");
            }
        }
    }
}

//! Golden parity with PyTorch: `nn.TransformerEncoderLayer`, `nn.TransformerDecoderLayer` and
//! `nn.Transformer`, with weights imported from their state dicts.
//!
//! The fixture `tests/fixtures/blocks.safetensors` holds state dicts, inputs and PyTorch's
//! outputs (computed in float64, stored as float32). Regenerate it from the repository root with
//!
//! ```sh
//! pip install torch safetensors
//! python tests/fixtures/generate_blocks.py
//! ```

use focal::attention::{AttentionMask, FusedAttentionBackend, WeightsMode};
use focal::backend::assert_close;
use focal::blocks::{
    Activation, LayerKind, NormPlacement, StackInput, Transformer, TransformerConfig,
    TransformerLayer, TransformerLayerConfig, TransformerStackConfig,
};
use std::sync::OnceLock;

use crate::common;

const TOLERANCE: f64 = 1e-5;

fn fixture() -> &'static common::Fixture {
    static FIXTURE: OnceLock<common::Fixture> = OnceLock::new();
    FIXTURE
        .get_or_init(|| common::Fixture::parse(include_bytes!("../../fixtures/blocks.safetensors")))
}

/// PyTorch's layer hyper-parameters: d 16, 4 heads, feed-forward 32, dropout 0.
fn layer(kind: LayerKind, norm: NormPlacement, activation: Activation) -> TransformerLayerConfig {
    let config = TransformerLayerConfig::new(16, 4, 32)
        .with_kind(kind)
        .with_norm(norm)
        .with_activation(activation)
        .with_dropout(0.0);
    match kind {
        LayerKind::Decoder => config.with_d_memory(Some(16)),
        _ => config,
    }
}

const CASES: [(&str, NormPlacement, Activation); 4] = [
    ("post_relu", NormPlacement::Post, Activation::Relu),
    ("post_gelu", NormPlacement::Post, Activation::Gelu),
    ("pre_relu", NormPlacement::Pre, Activation::Relu),
    ("pre_gelu", NormPlacement::Pre, Activation::Gelu),
];

/// Encoder layers with key padding, and with key padding plus a causal mask.
fn encoder_layers_match_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    let f = fixture();
    for (name, norm, activation) in CASES {
        let case = format!("encoder_{name}");
        let config = layer(LayerKind::Encoder, norm, activation);
        let layer = TransformerLayer::<B>::from_pytorch(&config, &f.state(&case), device)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let x = f.tensor::<B, 3>(&format!("{case}.x"), device);
        let padding = AttentionMask::key_padding(f.flag(&format!("{case}.valid"), device));
        let out = layer.forward(x.clone(), &padding, None, WeightsMode::None);
        assert_close(
            out.hidden,
            f.tensor(&format!("{case}.out"), device),
            TOLERANCE,
        );
        let causal = padding.and(AttentionMask::causal());
        let out = layer.forward(x, &causal, None, WeightsMode::None);
        assert_close(
            out.hidden,
            f.tensor(&format!("{case}.out_causal"), device),
            TOLERANCE,
        );
    }
}

/// Decoder layers: causal self-attention with target padding, cross-attention with memory
/// padding.
fn decoder_layers_match_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    let f = fixture();
    for (name, norm, activation) in CASES {
        let case = format!("decoder_{name}");
        let config = layer(LayerKind::Decoder, norm, activation);
        let layer = TransformerLayer::<B>::from_pytorch(&config, &f.state(&case), device)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let key = |k: &str| format!("{case}.{k}");
        let padding = AttentionMask::key_padding(f.flag(&key("valid"), device));
        let memory_padding = AttentionMask::key_padding(f.flag(&key("memory_valid"), device));
        let out = layer.forward(
            f.tensor(&key("x"), device),
            &padding,
            Some((f.tensor(&key("memory"), device), &memory_padding)),
            WeightsMode::None,
        );
        assert_close(out.hidden, f.tensor(&key("out"), device), TOLERANCE);
    }
}

/// A 2-layer `nn.Transformer` end to end, final norms included.
fn transformer_matches_pytorch<B: FusedAttentionBackend>(device: &B::Device) {
    let f = fixture();
    let config = TransformerConfig::new(
        TransformerStackConfig::encoder(
            layer(LayerKind::Encoder, NormPlacement::Post, Activation::Relu),
            2,
        )
        .with_final_norm(true),
        TransformerStackConfig::decoder(
            layer(LayerKind::Decoder, NormPlacement::Post, Activation::Relu),
            16,
            2,
        )
        .with_final_norm(true),
    );
    let model = Transformer::<B>::from_pytorch(&config, &f.state("transformer"), device)
        .unwrap_or_else(|e| panic!("transformer: {e}"));
    let source_padding = AttentionMask::key_padding(f.flag("transformer.src_valid", device));
    let target_padding = AttentionMask::key_padding(f.flag("transformer.tgt_valid", device));
    let out = model.forward(
        f.tensor("transformer.src", device),
        source_padding.clone(),
        f.tensor("transformer.tgt", device),
        target_padding.clone(),
    );
    assert_close(out, f.tensor("transformer.out", device), TOLERANCE);

    // The same through the stacks' inputs, and decoded token by token with the cache.
    let memory = model
        .encode(StackInput::new(f.tensor("transformer.src", device)).mask(source_padding.clone()))
        .hidden;
    let tgt = f.tensor::<B, 3>("transformer.tgt", device);
    let [b, l, d] = tgt.dims();
    let mut cache = model.new_cache(memory, l);
    for t in 0..l {
        // Target padding of the keys decoded so far.
        let valid = f
            .flag::<B, 2>("transformer.tgt_valid", device)
            .slice([0..b, 0..t + 1]);
        let step = model.decode_cached(
            StackInput::new(tgt.clone().slice([0..b, t..t + 1, 0..d]))
                .mask(AttentionMask::key_padding(valid))
                .memory_mask(source_padding.clone()),
            &mut cache,
        );
        assert_close(
            step.hidden,
            f.tensor::<B, 3>("transformer.out", device)
                .slice([0..b, t..t + 1, 0..d]),
            TOLERANCE,
        );
    }
}

focal::backend::backend_tests!(
    encoder_layers_match_pytorch,
    decoder_layers_match_pytorch,
    transformer_matches_pytorch
);

#[test]
fn import_errors_name_the_tensor() {
    type B = focal::backend::NdArray;
    let device = Default::default();
    let f = fixture();
    let config = layer(LayerKind::Encoder, NormPlacement::Post, Activation::Relu);

    let mut missing = f.state("encoder_post_relu");
    missing.remove("linear2.bias");
    let err = TransformerLayer::<B>::from_pytorch(&config, &missing, &device).unwrap_err();
    assert_eq!(err.to_string(), "missing tensor 'linear2.bias'");

    let mut extra = f.state("encoder_post_relu");
    extra.insert("norm3.weight".into(), extra["norm1.weight"].clone());
    let err = TransformerLayer::<B>::from_pytorch(&config, &extra, &device).unwrap_err();
    assert_eq!(err.to_string(), "unexpected tensors: norm3.weight");

    let wide = TransformerLayerConfig::new(16, 4, 64).with_dropout(0.0);
    let err = TransformerLayer::<B>::from_pytorch(&wide, &f.state("encoder_post_relu"), &device)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 'linear1.weight' has shape [32, 16], expected [64, 16]"
    );

    let gated = config.clone().with_gated(true);
    let err = TransformerLayer::<B>::from_pytorch(&gated, &f.state("encoder_post_relu"), &device)
        .unwrap_err();
    assert!(err.to_string().starts_with("unsupported: "), "{err}");
}

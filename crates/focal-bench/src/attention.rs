//! `cargo xtask bench attention`: scaled dot-product attention at growing lengths.
//!
//! For `b = 1, h = 8, d_h = 64` and `l = s` in the chosen lengths, one process measures:
//!
//! - Focal's fused path: `ScaledDotProductAttention` without weights, i.e. the backend's
//!   `FusedAttentionBackend` implementation (the tiled CPU kernel on ndarray);
//! - Focal's plain path (the `[l, s]` scores materialised, as with `need_weights`);
//! - Focal's memory-efficient path (keys in blocks of 256 with an online softmax), which is what
//!   `ScaledDotProductAttention` runs without weights from 1024 keys on;
//! - burn's `module::attention` op, the baseline for the two rows above;
//! - burn-nn's `MultiHeadAttention` and Focal's `MultiHeadAttention` (d 512 = 8 × 64, so the
//!   same attention core plus the four projections), the baseline being burn-nn's.
//!
//! Peak memory is what the operation allocated above what existed before it (the inputs), as
//! counted by the process's allocator; it is exact on ndarray and not available on wgpu.

use crate::measure::{Measurement, format_bytes, format_seconds, measure};
use burn::nn::DropoutConfig;
use burn::nn::attention::{
    MhaInput as NnMhaInput, MultiHeadAttentionConfig as NnMultiHeadAttentionConfig,
};
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use focal::attention::{
    AttentionInput, AttentionMask, FusedAttentionBackend, FusedAttentionOptions, MhaInput,
    MultiHeadAttentionConfig, ScaledDotProductAttentionConfig, generic_fused_attention,
};
use serde::Serialize;
use std::time::Duration;

const BATCH: usize = 1;
const HEADS: usize = 8;
const HEAD_DIM: usize = 64;
const D_MODEL: usize = HEADS * HEAD_DIM;

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What ran.
    pub method: &'static str,
    /// `l = s`.
    pub length: usize,
    /// Time and memory.
    pub measurement: Measurement,
    /// Floating-point operations of one run (`4 b h l s d_h` for attention, plus `8 b l d²` for
    /// the projections of the multi-head rows).
    pub flops: f64,
    /// The row this one is compared with.
    pub baseline: &'static str,
    /// This row's time divided by the baseline's (below 1 = faster).
    pub time_vs_baseline: f64,
    /// This row's peak memory divided by the baseline's.
    pub memory_vs_baseline: f64,
}

const FUSED: &str = "focal fused (backend kernel)";
const PLAIN: &str = "focal plain";
const CHUNKED: &str = "focal memory-efficient";
const BURN_OP: &str = "burn module::attention";
const BURN_NN_MHA: &str = "burn-nn MultiHeadAttention";
const FOCAL_MHA: &str = "focal MultiHeadAttention";

/// Measures every method at every length on backend `B`.
pub fn run<B: FusedAttentionBackend>(
    lengths: &[usize],
    budget: Duration,
    device: &B::Device,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for &length in lengths {
        eprintln!("attention: l = s = {length}");
        let n = Distribution::Normal(0.0, 1.0);
        let shape = [BATCH, HEADS, length, HEAD_DIM];
        let q = Tensor::<B, 4>::random(shape, n, device);
        let k = Tensor::<B, 4>::random(shape, n, device);
        let v = Tensor::<B, 4>::random(shape, n, device);
        let x = Tensor::<B, 3>::random([BATCH, length, D_MODEL], n, device);
        let attention_flops = 4.0 * (BATCH * HEADS * length * length * HEAD_DIM) as f64;
        let projection_flops = 8.0 * (BATCH * length * D_MODEL * D_MODEL) as f64;

        // The generic tensor-op paths, called directly (the backend's own kernel, if any, is
        // the "focal fused" row).
        let generic = |from: usize| {
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            let (mask, dropout) = (AttentionMask::none(), DropoutConfig::new(0.0).init());
            measure(budget, move || {
                let options = FusedAttentionOptions {
                    mask: &mask,
                    scale: 1.0 / (HEAD_DIM as f64).sqrt(),
                    softcap: None,
                    dropout: &dropout,
                    memory_efficient_from: from,
                    key_block: 256,
                };
                generic_fused_attention(q.clone(), k.clone(), v.clone(), options).into_data();
            })
        };
        let plain = generic(usize::MAX);
        let chunked = generic(0);
        let fused = {
            let attention = ScaledDotProductAttentionConfig::new().init();
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            measure(budget, move || {
                let out = attention.forward(AttentionInput::new(q.clone(), k.clone(), v.clone()));
                out.context.into_data();
            })
        };
        let burn_op = {
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            measure(budget, move || {
                let out = burn_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    None,
                    None,
                    AttentionModuleOptions::default(),
                );
                out.into_data();
            })
        };
        let nn_mha = {
            let mha = NnMultiHeadAttentionConfig::new(D_MODEL, HEADS)
                .with_dropout(0.0)
                .init::<B>(device);
            let x = x.clone();
            measure(budget, move || {
                mha.forward(NnMhaInput::self_attn(x.clone()))
                    .context
                    .into_data();
            })
        };
        let focal_mha = {
            let mha = MultiHeadAttentionConfig::new(D_MODEL, HEADS).init::<B>(device);
            measure(budget, move || {
                mha.forward(MhaInput::self_attn(x.clone()))
                    .context
                    .into_data();
            })
        };

        let row = |method, measurement: &Measurement, flops, baseline, base: &Measurement| Row {
            method,
            length,
            measurement: measurement.clone(),
            flops,
            baseline,
            time_vs_baseline: measurement.seconds / base.seconds,
            memory_vs_baseline: measurement.peak_bytes as f64 / base.peak_bytes.max(1) as f64,
        };
        let mha_flops = attention_flops + projection_flops;
        rows.push(row(FUSED, &fused, attention_flops, BURN_OP, &burn_op));
        rows.push(row(PLAIN, &plain, attention_flops, BURN_OP, &burn_op));
        rows.push(row(CHUNKED, &chunked, attention_flops, BURN_OP, &burn_op));
        rows.push(row(BURN_OP, &burn_op, attention_flops, BURN_OP, &burn_op));
        rows.push(row(BURN_NN_MHA, &nn_mha, mha_flops, BURN_NN_MHA, &nn_mha));
        rows.push(row(FOCAL_MHA, &focal_mha, mha_flops, BURN_NN_MHA, &nn_mha));
    }
    rows
}

/// The rows as a markdown table, followed by how the memory-efficient path's peak memory grows
/// with the length.
pub fn markdown(rows: &[Row], backend: &str, memory_counted: bool) -> String {
    let mut out = format!(
        "Attention forward, b = {BATCH}, h = {HEADS}, d_h = {HEAD_DIM}, l = s, f32, {backend}; \
         multi-head rows with d = {D_MODEL} (projections included).\n\n\
         | method | l = s | time | GFLOP/s | peak memory | time vs baseline | memory vs baseline | baseline |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n"
    );
    for r in rows {
        let m = &r.measurement;
        let (memory, memory_ratio) = if memory_counted {
            (
                format_bytes(m.peak_bytes),
                format!("{:.3}×", r.memory_vs_baseline),
            )
        } else {
            ("n/a".to_string(), "n/a".to_string())
        };
        out += &format!(
            "| {} | {} | {} | {:.1} | {} | {:.2}× | {} | {} |\n",
            r.method,
            r.length,
            format_seconds(m.seconds),
            r.flops / m.seconds / 1e9,
            memory,
            r.time_vs_baseline,
            memory_ratio,
            r.baseline
        );
    }
    if memory_counted {
        let chunked: Vec<&Row> = rows.iter().filter(|r| r.method == CHUNKED).collect();
        for pair in chunked.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            out += &format!(
                "\nMemory-efficient path, l {} → {} ({:.1}× longer): peak memory × {:.2} \
                 (linear growth would be × {:.1}, quadratic × {:.1}).\n",
                a.length,
                b.length,
                b.length as f64 / a.length as f64,
                b.measurement.peak_bytes as f64 / a.measurement.peak_bytes.max(1) as f64,
                b.length as f64 / a.length as f64,
                (b.length as f64 / a.length as f64).powi(2),
            );
        }
    }
    out
}

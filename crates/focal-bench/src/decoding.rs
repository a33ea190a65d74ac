//! `cargo xtask bench decoding`: per-token time of cached decoding through a decoder stack.
//!
//! A 6-layer decoder (d 512, 8 heads, feed-forward 2048, post-norm, cross-attention to a memory
//! of 64 positions), batch 1. At each position `p` the cache is first filled with `p` target
//! positions in one call, then `steps` single-token steps are timed and averaged. Each
//! decoder is measured once untimed (warm-up: first-touch page faults, allocator growth), then
//! twice, in alternating order (Focal first, then burn-nn first), and the faster of its two
//! timed runs is reported, so neither decoder profits from running second. Focal's
//! `TransformerStack::forward_cached` appends each token's keys and values to preallocated
//! caches and attends one query row (per-token cost linear in `p`); burn-nn's
//! `TransformerDecoder::forward_autoregressive_inference` is given the whole target so far at
//! each step, as its API requires, and caches the layers' outputs.

use crate::measure::format_seconds;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerDecoderConfig as NnDecoderConfig, TransformerDecoderInput as NnDecoderInput,
};
use burn::tensor::{Distribution, Tensor};
use focal::attention::FusedAttentionBackend;
use focal::blocks::{StackInput, TransformerLayerConfig, TransformerStackConfig};
use serde::Serialize;
use std::time::Instant;

const D_MODEL: usize = 512;
const HEADS: usize = 8;
const D_FF: usize = 2048;
const LAYERS: usize = 6;
const MEMORY: usize = 64;

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Target positions already decoded.
    pub position: usize,
    /// Focal's mean seconds per token.
    pub focal_seconds: f64,
    /// burn-nn's mean seconds per token.
    pub burn_nn_seconds: f64,
    /// burn-nn's time over Focal's.
    pub speedup: f64,
    /// Tokens timed per measurement (each figure is the faster of two measurements after a
    /// warm-up).
    pub steps: usize,
}

/// Measures both decoders at every position on backend `B`.
pub fn run<B: FusedAttentionBackend>(
    positions: &[usize],
    steps: usize,
    device: &B::Device,
) -> Vec<Row> {
    let n = Distribution::Normal(0.0, 1.0);
    let longest = positions.iter().max().copied().unwrap_or(0) + steps;
    let target = Tensor::<B, 3>::random([1, longest, D_MODEL], n, device);
    let memory = Tensor::<B, 3>::random([1, MEMORY, D_MODEL], n, device);

    let layer = TransformerLayerConfig::new(D_MODEL, HEADS, D_FF).with_dropout(0.0);
    let ours = TransformerStackConfig::decoder(layer, D_MODEL, LAYERS).init::<B>(device);
    let theirs = NnDecoderConfig::new(D_MODEL, D_FF, HEADS, LAYERS)
        .with_dropout(0.0)
        .init::<B>(device);

    let rows_of = |range: std::ops::Range<usize>| target.clone().slice([0..1, range, 0..D_MODEL]);
    // Mean seconds per token of `steps` single-token steps after `p` cached positions.
    let focal = |p: usize| {
        let mut cache = ours.new_cache(1, p + steps, Some(memory.clone()), device);
        if p > 0 {
            ours.forward_cached(StackInput::new(rows_of(0..p)), &mut cache)
                .hidden
                .into_data();
        }
        let started = Instant::now();
        for t in p..p + steps {
            ours.forward_cached(StackInput::new(rows_of(t..t + 1)), &mut cache)
                .hidden
                .into_data();
        }
        started.elapsed().as_secs_f64() / steps as f64
    };
    // burn-nn: its cache takes the whole target so far at every call.
    let burn_nn = |p: usize| {
        let mut cache = theirs.new_autoregressive_cache();
        let input = |len: usize| {
            NnDecoderInput::new(rows_of(0..len), memory.clone())
                .target_mask_attn(generate_autoregressive_mask(1, len, device))
        };
        if p > 0 {
            theirs
                .forward_autoregressive_inference(input(p), &mut cache)
                .into_data();
        }
        let started = Instant::now();
        for t in p..p + steps {
            theirs
                .forward_autoregressive_inference(input(t + 1), &mut cache)
                .into_data();
        }
        started.elapsed().as_secs_f64() / steps as f64
    };
    let mut rows = Vec::new();
    for &p in positions {
        eprintln!("decoding: position {p}");
        focal(p); // warm-up
        burn_nn(p);
        let (focal_1, burn_1) = (focal(p), burn_nn(p));
        let (burn_2, focal_2) = (burn_nn(p), focal(p));
        let focal_seconds = focal_1.min(focal_2);
        let burn_nn_seconds = burn_1.min(burn_2);
        rows.push(Row {
            position: p,
            focal_seconds,
            burn_nn_seconds,
            speedup: burn_nn_seconds / focal_seconds,
            steps,
        });
    }
    rows
}

/// The rows as a markdown table.
pub fn markdown(rows: &[Row], backend: &str) -> String {
    let mut out = format!(
        "Per-token decoding, decoder of {LAYERS} layers (d = {D_MODEL}, {HEADS} heads, \
         feed-forward {D_FF}, memory of {MEMORY} positions), batch 1, f32, {backend}.\n\n\
         | position | Focal (cached stack) | burn-nn TransformerDecoder (autoregressive cache) | burn-nn / Focal |\n\
         |---:|---:|---:|---:|\n"
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {:.1}× |\n",
            r.position,
            format_seconds(r.focal_seconds),
            format_seconds(r.burn_nn_seconds),
            r.speedup
        );
    }
    out
}

/// The rows as figures for `--backend all`: each decoder's time per token.
pub fn figures(rows: &[Row]) -> Vec<crate::swap::Figure> {
    rows.iter()
        .flat_map(|r| {
            [
                ("Focal cached stack", r.focal_seconds),
                ("burn-nn TransformerDecoder", r.burn_nn_seconds),
            ]
            .map(|(who, seconds)| {
                crate::swap::Figure::time(
                    format!("{who}, per token at position {}", r.position),
                    Some(seconds),
                )
            })
        })
        .collect()
}

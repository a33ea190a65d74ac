//! `cargo xtask bench attention`: scaled dot-product attention, forward and forward+backward.
//!
//! For `b = 1, h = 8, d_h = 64`, `l = s` in the chosen lengths, causal off and on, one process
//! measures, forward (inference backend) and forward+backward (its autodiff backend, gradients
//! of `sum(out)` with respect to q, k and v):
//!
//! - **focal kernel**: `ScaledDotProductAttention` without weights, i.e. the backend's
//!   `FusedAttentionBackend` implementation (on ndarray the tiled CPU kernel, with its own
//!   FlashAttention-2 backward under autodiff);
//! - **focal generic chunked**: `generic_fused_attention` with every key block chunked (the
//!   tensor-op online-softmax path every backend has), differentiated by burn's autodiff;
//! - **burn `module::attention`**: burn's attention op (`is_causal` for the causal rows), the
//!   baseline of every ratio;
//! - **burn-nn `MultiHeadAttention`** (d 512 = 8 × 64, projections included; an autoregressive
//!   `mask_attn` for the causal rows);
//! - **matmul ceiling**: one `n × n` by `n × n` f32 product by the `gemm` crate on all cores,
//!   with `2 n³` as close as possible to the forward's FLOPs: what the machine's matrix
//!   multiply reaches at this size (a CPU figure whatever the backend); and the same product
//!   through burn's `matmul` on the backend.
//!
//! Then a long-sequence row (kernel only, forward+backward), the kernel's forward+backward
//! with one key/value head (multi-query) against eight, and a Transformer encoder layer
//! (d 512, 8 heads, ffn 2048, b 8, l 128) forward with the CPU kernel switched off (before)
//! and on (after).
//!
//! FLOPs: `4 b h l s d_h` for the forward (half with a causal mask), 2.5 times that more for
//! the backward (five block products instead of two; recomputation not counted), plus
//! `8 b l d²` forward / `24 b l d²` forward+backward for the projections of burn-nn's rows.
//!
//! With `--python`, PyTorch's `scaled_dot_product_attention` joins the main table
//! (`torch_sdpa.py`, run by the bench after its own rows on the same threads, budget and
//! lengths, with the same statistic), compared with burn's op as every other row; its memory is
//! another process's and not counted.
//!
//! Peak memory is what the operation allocated above what existed before it (the inputs), as
//! counted by the process's allocator; it is exact on ndarray and not available on wgpu.
//! Methods whose memory grows with `l · s` run forward+backward only up to
//! `--max-quadratic-backward` (their memory beyond it is computed in the table instead).

use crate::measure::{Measurement, format_bytes, format_seconds, measure};
use crate::torch::Torch;
use anyhow::Context;
use burn::nn::DropoutConfig;
use burn::nn::attention::{
    MhaInput as NnMhaInput, MultiHeadAttentionConfig as NnMultiHeadAttentionConfig,
    generate_autoregressive_mask,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use focal::attention::{
    AttentionInput, AttentionMask, FusedAttentionBackend, FusedAttentionOptions,
    FusedAutodiffBackend, ScaledDotProductAttentionConfig, generic_fused_attention, set_cpu_kernel,
};
use focal::blocks::TransformerLayerConfig;
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
    /// Causal mask.
    pub causal: bool,
    /// `"forward"` or `"forward+backward"`.
    pub pass: &'static str,
    /// Time and memory; `None` when not run (see `note`).
    pub measurement: Option<Measurement>,
    /// Floating-point operations of one run.
    pub flops: f64,
    /// The row this one is compared with.
    pub baseline: &'static str,
    /// This row's time divided by the baseline's (below 1 = faster).
    pub time_vs_baseline: Option<f64>,
    /// This row's peak memory divided by the baseline's.
    pub memory_vs_baseline: Option<f64>,
    /// Why a row was not run, or what it is.
    pub note: String,
}

const KERNEL: &str = "focal kernel";
const CHUNKED: &str = "focal generic chunked";
const BURN_OP: &str = "burn module::attention";
const BURN_NN_MHA: &str = "burn-nn MultiHeadAttention";
const CEILING: &str = "matmul ceiling (gemm, all cores)";
const BURN_MATMUL: &str = "burn matmul";
const PYTORCH: &str = "PyTorch scaled_dot_product_attention";
const FORWARD: &str = "forward";
const BOTH: &str = "forward+backward";
const ENCODER_BEFORE: &str = "encoder layer, burn ops";
const ENCODER_AFTER: &str = "encoder layer, focal kernels";
const KERNEL_MHA: &str = "focal kernel, 8 key/value heads";
const KERNEL_MQA: &str = "focal kernel, 1 key/value head";

/// Options of the attention bench.
pub struct Options {
    /// Lengths `l = s` of the main table.
    pub lengths: Vec<usize>,
    /// Lengths of the kernel-only forward+backward rows.
    pub long: Vec<usize>,
    /// Longest length at which methods with `l · s` memory run forward+backward.
    pub max_quadratic_backward: usize,
    /// Lengths of the multi-query rows (kernel forward+backward with one key/value head vs
    /// eight).
    pub multi_query: Vec<usize>,
    /// Seconds of repeated runs per measurement.
    pub budget: Duration,
}

/// What one method does, forward or forward+backward, at one length.
type Job<'a> = Box<dyn FnMut() + 'a>;

/// Measures every row on the autodiff backend `A` and its inference backend.
pub fn run<A: FusedAutodiffBackend>(options: &Options, device: &A::Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for &length in &options.lengths {
        for causal in [false, true] {
            eprintln!("attention: l = s = {length}, causal {causal}");
            rows.extend(one_length::<A>(options, length, causal, device));
        }
    }
    for &length in &options.long {
        eprintln!("attention: l = s = {length}, kernel forward+backward");
        let q = inputs::<A::InnerBackend>(length, device);
        let m = measure(options.budget, kernel_backward::<A>(&q, false));
        rows.push(Row {
            method: KERNEL,
            length,
            causal: false,
            pass: BOTH,
            flops: 3.5 * attention_flops(length, false),
            measurement: Some(m),
            baseline: KERNEL,
            time_vs_baseline: None,
            memory_vs_baseline: None,
            note: format!(
                "plain autodiff would hold several [b, h, l, s] f32 score tensors: {} each",
                format_bytes((BATCH * HEADS * length * length * 4) as u128)
            ),
        });
    }
    for &length in &options.multi_query {
        for causal in [false, true] {
            eprintln!("attention: l = s = {length}, causal {causal}, multi-query");
            rows.extend(multi_query::<A>(options.budget, length, causal, device));
        }
    }
    rows.extend(encoder_layer::<A::InnerBackend>(options.budget, device));
    rows
}

/// The kernel's forward+backward with one key/value head for the 8 query heads (multi-query
/// attention) against 8 key/value heads, same FLOPs: with b = 1 the backward has a single
/// (batch, key/value head) task, which it splits into key ranges to use every core.
fn multi_query<A: FusedAutodiffBackend>(
    budget: Duration,
    length: usize,
    causal: bool,
    device: &A::Device,
) -> Vec<Row> {
    let mha = inputs::<A::InnerBackend>(length, device);
    let n = Distribution::Normal(0.0, 1.0);
    let q = mha[0].clone();
    let shared = [1, 1, length, HEAD_DIM];
    let mqa = [
        q,
        Tensor::random(shared, n, device),
        Tensor::random(shared, n, device),
    ];
    let base = measure(budget, kernel_backward::<A>(&mha, causal));
    let m = measure(budget, kernel_backward::<A>(&mqa, causal));
    let note = if causal { "causal" } else { "" };
    [(KERNEL_MHA, &base), (KERNEL_MQA, &m)]
        .into_iter()
        .map(|(method, m)| Row {
            method,
            length,
            causal,
            pass: BOTH,
            measurement: Some(m.clone()),
            flops: 3.5 * attention_flops(length, causal),
            baseline: KERNEL_MHA,
            time_vs_baseline: Some(m.seconds / base.seconds),
            memory_vs_baseline: Some(m.peak_bytes as f64 / base.peak_bytes.max(1) as f64),
            note: note.into(),
        })
        .collect()
}

fn attention_flops(length: usize, causal: bool) -> f64 {
    let full = 4.0 * (BATCH * HEADS * length * length * HEAD_DIM) as f64;
    if causal { full / 2.0 } else { full }
}

/// Random q, k, v `[b, h, l, d_h]`.
fn inputs<B: Backend>(length: usize, device: &B::Device) -> [Tensor<B, 4>; 3] {
    let n = Distribution::Normal(0.0, 1.0);
    let shape = [BATCH, HEADS, length, HEAD_DIM];
    [(); 3].map(|_| Tensor::<B, 4>::random(shape, n, device))
}

fn focal_mask<B: Backend>(causal: bool) -> AttentionMask<B> {
    if causal {
        AttentionMask::causal()
    } else {
        AttentionMask::none()
    }
}

/// Forward and backward of `f` over fresh leaves holding `qkv`, reading the gradients back.
fn with_grads<'a, A: AutodiffBackend>(
    qkv: &'a [Tensor<A::InnerBackend, 4>; 3],
    f: impl Fn([Tensor<A, 4>; 3]) -> Tensor<A, 4> + 'a,
) -> Job<'a> {
    Box::new(move || {
        let leaves = qkv
            .clone()
            .map(|t| Tensor::<A, 4>::from_inner(t).require_grad());
        let mut grads = f(leaves.clone()).sum().backward();
        // `grad_remove` hands over the only reference: burn-ndarray copies a shared tensor
        // element by element in `into_data`, which would add tens of ms to every row.
        for leaf in &leaves {
            leaf.grad_remove(&mut grads).expect("gradient").into_data();
        }
    })
}

fn kernel_forward<B: FusedAttentionBackend>(qkv: &[Tensor<B, 4>; 3], causal: bool) -> Job<'_> {
    let attention = ScaledDotProductAttentionConfig::new().init();
    Box::new(move || {
        let [q, k, v] = qkv.clone();
        let input = AttentionInput::new(q, k, v).mask(focal_mask(causal));
        attention.forward(input).context.into_data();
    })
}

fn kernel_backward<A: FusedAutodiffBackend>(
    qkv: &[Tensor<A::InnerBackend, 4>; 3],
    causal: bool,
) -> Job<'_> {
    let attention = ScaledDotProductAttentionConfig::new().init();
    with_grads::<A>(qkv, move |[q, k, v]| {
        let input = AttentionInput::new(q, k, v).mask(focal_mask(causal));
        attention.forward(input).context
    })
}

/// The generic tensor-op path with every key block chunked.
fn chunked<B: FusedAttentionBackend>(qkv: [Tensor<B, 4>; 3], causal: bool) -> Tensor<B, 4> {
    let [q, k, v] = qkv;
    let (mask, dropout) = (focal_mask(causal), DropoutConfig::new(0.0).init());
    let options = FusedAttentionOptions {
        mask: &mask,
        scale: 1.0 / (HEAD_DIM as f64).sqrt(),
        softcap: None,
        dropout: &dropout,
        memory_efficient_from: 0,
        key_block: 256,
    };
    generic_fused_attention(q, k, v, options)
}

fn burn_op<B: Backend>(qkv: [Tensor<B, 4>; 3], causal: bool) -> Tensor<B, 4> {
    let [q, k, v] = qkv;
    let options = AttentionModuleOptions {
        is_causal: causal,
        ..Default::default()
    };
    burn_attention(q, k, v, None, None, options)
}

fn burn_nn_mha<B: Backend>(x: Tensor<B, 3>, causal: bool, device: &B::Device) -> Job<'static> {
    let mha = NnMultiHeadAttentionConfig::new(D_MODEL, HEADS)
        .with_dropout(0.0)
        .init::<B>(device);
    let length = x.dims()[1];
    let mask = causal.then(|| generate_autoregressive_mask::<B>(BATCH, length, device));
    Box::new(move || {
        let mut input = NnMhaInput::self_attn(x.clone());
        if let Some(mask) = &mask {
            input = input.mask_attn(mask.clone());
        }
        mha.forward(input).context.into_data();
    })
}

fn burn_nn_mha_backward<A: AutodiffBackend>(
    x: Tensor<A::InnerBackend, 3>,
    causal: bool,
    device: &A::Device,
) -> Job<'static> {
    let mha = NnMultiHeadAttentionConfig::new(D_MODEL, HEADS)
        .with_dropout(0.0)
        .init::<A>(device);
    let length = x.dims()[1];
    let mask = causal.then(|| generate_autoregressive_mask::<A>(BATCH, length, device));
    Box::new(move || {
        let x = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
        let mut input = NnMhaInput::self_attn(x.clone());
        if let Some(mask) = &mask {
            input = input.mask_attn(mask.clone());
        }
        let mut grads = mha.forward(input).context.sum().backward();
        x.grad_remove(&mut grads).expect("gradient").into_data();
    })
}

fn one_length<A: FusedAutodiffBackend>(
    options: &Options,
    length: usize,
    causal: bool,
    device: &A::Device,
) -> Vec<Row> {
    type Inner<A> = <A as AutodiffBackend>::InnerBackend;
    let budget = options.budget;
    let qkv = inputs::<Inner<A>>(length, device);
    let x = Tensor::<Inner<A>, 3>::random(
        [BATCH, length, D_MODEL],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let flops = attention_flops(length, causal);
    let projections = 8.0 * (BATCH * length * D_MODEL * D_MODEL) as f64;
    let quadratic_backward = length <= options.max_quadratic_backward;
    let score_bytes = BATCH * HEADS * length * length * 4;

    let mut measured: Vec<(&'static str, &'static str, f64, Option<Measurement>, String)> =
        Vec::new();
    let mut add = |method, pass, flops, job: Option<Job<'_>>, note: String| {
        let m = job.map(|job| measure(budget, job));
        measured.push((method, pass, flops, m, note));
    };
    let skipped = || {
        format!(
            "not run above l = {}: [b, h, l, s] scores are {} per tensor",
            options.max_quadratic_backward,
            format_bytes(score_bytes as u128)
        )
    };

    add(
        KERNEL,
        FORWARD,
        flops,
        Some(kernel_forward(&qkv, causal)),
        String::new(),
    );
    add(
        CHUNKED,
        FORWARD,
        flops,
        Some(Box::new(|| {
            chunked(qkv.clone(), causal).into_data();
        })),
        String::new(),
    );
    add(
        BURN_OP,
        FORWARD,
        flops,
        Some(Box::new(|| {
            burn_op(qkv.clone(), causal).into_data();
        })),
        String::new(),
    );
    add(
        BURN_NN_MHA,
        FORWARD,
        flops + projections,
        Some(burn_nn_mha(x.clone(), causal, device)),
        "projections included".into(),
    );
    // The ceiling: an n × n product with 2 n³ ≈ the forward's FLOPs (causal rows reuse it).
    let n = (flops * if causal { 2.0 } else { 1.0 } / 2.0)
        .cbrt()
        .round() as usize;
    add(
        CEILING,
        FORWARD,
        2.0 * (n as f64).powi(3),
        Some(gemm_ceiling(n)),
        format!("{n} × {n} · {n} × {n}"),
    );
    let a = Tensor::<Inner<A>, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    add(
        BURN_MATMUL,
        FORWARD,
        2.0 * (n as f64).powi(3),
        Some(Box::new(move || {
            a.clone().matmul(a.clone()).into_data();
        })),
        format!("{n} × {n} · {n} × {n}"),
    );

    add(
        KERNEL,
        BOTH,
        3.5 * flops,
        Some(kernel_backward::<A>(&qkv, causal)),
        String::new(),
    );
    let quadratic = |job: Job<'static>| quadratic_backward.then_some(job);
    let chunked_job = with_grads::<A>(&qkv, move |qkv| chunked(qkv, causal));
    add(
        CHUNKED,
        BOTH,
        3.5 * flops,
        quadratic_backward.then_some(chunked_job),
        if quadratic_backward {
            String::new()
        } else {
            skipped()
        },
    );
    let burn_job = with_grads::<A>(&qkv, move |qkv| burn_op(qkv, causal));
    add(
        BURN_OP,
        BOTH,
        3.5 * flops,
        quadratic_backward.then_some(burn_job),
        if quadratic_backward {
            String::new()
        } else {
            skipped()
        },
    );
    add(
        BURN_NN_MHA,
        BOTH,
        3.5 * flops + 3.0 * projections,
        quadratic(burn_nn_mha_backward::<A>(x.clone(), causal, device)),
        if quadratic_backward {
            "projections included".into()
        } else {
            skipped()
        },
    );

    let baseline = |pass: &str| {
        measured
            .iter()
            .find(|(method, p, ..)| *method == BURN_OP && *p == pass)
            .and_then(|(.., m, _)| m.clone())
    };
    let (base_forward, base_both) = (baseline(FORWARD), baseline(BOTH));
    measured
        .iter()
        .map(|(method, pass, flops, m, note)| {
            let base = if *pass == FORWARD {
                &base_forward
            } else {
                &base_both
            };
            let ratio = |f: fn(&Measurement) -> f64| match (m, base) {
                (Some(m), Some(b)) => Some(f(m) / f(b).max(f64::MIN_POSITIVE)),
                _ => None,
            };
            Row {
                method,
                length,
                causal,
                pass,
                measurement: m.clone(),
                flops: *flops,
                baseline: BURN_OP,
                time_vs_baseline: ratio(|m| m.seconds),
                memory_vs_baseline: ratio(|m| m.peak_bytes.max(1) as f64),
                note: note.clone(),
            }
        })
        .collect()
}

/// `c = a · a` for an `n × n` matrix `a` through the `gemm` crate, parallel over all cores.
fn gemm_ceiling(n: usize) -> Job<'static> {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let mut c = vec![0.0f32; n * n];
    Box::new(move || {
        // SAFETY: `a` and `c` hold `n * n` elements each and are read/written row-major with
        // row stride `n` and column stride 1, so every index `gemm` touches (`i * n + j`,
        // `i, j < n`) is in bounds; `c` is a distinct allocation from `a`.
        #[allow(unsafe_code)]
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                a.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        std::hint::black_box(&c);
    })
}

/// A Transformer encoder layer (d 512, 8 heads, ffn 2048, b 8, l 128) forward, with Focal's CPU
/// kernels (attention, linear layers, norms) off and on; `cargo xtask bench models` has the
/// same layer against PyTorch, with a per-part profile.
fn encoder_layer<B: FusedAttentionBackend>(budget: Duration, device: &B::Device) -> Vec<Row> {
    let (batch, length) = (8, 128);
    let layer = TransformerLayerConfig::new(D_MODEL, HEADS, 2048)
        .with_dropout(0.0)
        .init::<B>(device);
    let x = Tensor::<B, 3>::random(
        [batch, length, D_MODEL],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let flops = (batch * length) as f64
        * (8.0 * (D_MODEL * D_MODEL) as f64
            + 4.0 * (length * D_MODEL) as f64
            + 4.0 * (D_MODEL * 2048) as f64);
    let run = |enabled: bool| {
        set_cpu_kernel(enabled);
        let m = measure(budget, || {
            layer
                .forward(x.clone(), &AttentionMask::none(), None, Default::default())
                .hidden
                .into_data();
        });
        set_cpu_kernel(true);
        m
    };
    let (before, after) = (run(false), run(true));
    [(ENCODER_BEFORE, &before), (ENCODER_AFTER, &after)]
        .into_iter()
        .map(|(method, m)| Row {
            method,
            length,
            causal: false,
            pass: FORWARD,
            measurement: Some(m.clone()),
            flops,
            baseline: ENCODER_BEFORE,
            time_vs_baseline: Some(m.seconds / before.seconds),
            memory_vs_baseline: Some(m.peak_bytes as f64 / before.peak_bytes.max(1) as f64),
            note: "d 512, 8 heads, ffn 2048, b 8".into(),
        })
        .collect()
}

/// The rows as markdown tables (one per pass), then the long, multi-query and encoder rows.
/// One row of `torch_sdpa.py`'s figures.
#[derive(serde::Deserialize)]
struct TorchRow {
    length: usize,
    causal: bool,
    pass: String,
    seconds: f64,
    runs: usize,
}

/// Runs `torch_sdpa.py` at `lengths` (with `--python`) and puts a PyTorch row after burn's op
/// at each length, mask and pass; returns where PyTorch's figures come from.
pub fn add_pytorch(
    rows: &mut Vec<Row>,
    torch: &Torch,
    lengths: &[usize],
) -> anyhow::Result<String> {
    let lengths: Vec<String> = lengths.iter().map(usize::to_string).collect();
    let args = [
        "--budget".into(),
        torch.budget.to_string().into(),
        "--lengths".into(),
        lengths.join(",").into(),
    ];
    let value = torch.run("torch_sdpa.py", "attention", &args)?;
    let source = Torch::source(value.as_ref(), "torch_sdpa.py");
    let Some(value) = value else {
        return Ok(source);
    };
    let theirs: Vec<TorchRow> =
        serde_json::from_value(value["rows"].clone()).context("torch_sdpa.py wrote no rows")?;
    for t in theirs {
        let pass = if t.pass == FORWARD { FORWARD } else { BOTH };
        let same = |r: &Row| r.length == t.length && r.causal == t.causal && r.pass == pass;
        let burn = rows
            .iter()
            .find(|r| same(r) && r.method == BURN_OP)
            .and_then(|r| r.measurement.as_ref().map(|m| m.seconds));
        let flops = attention_flops(t.length, t.causal) * if pass == BOTH { 3.5 } else { 1.0 };
        let row = Row {
            method: PYTORCH,
            length: t.length,
            causal: t.causal,
            pass,
            measurement: Some(Measurement {
                seconds: t.seconds,
                runs: t.runs,
                peak_bytes: 0,
            }),
            flops,
            baseline: BURN_OP,
            time_vs_baseline: burn.map(|b| t.seconds / b),
            memory_vs_baseline: None,
            note: "another process: memory not counted".into(),
        };
        let at = rows
            .iter()
            .rposition(|r| same(r) && r.baseline == BURN_OP)
            .map_or(rows.len(), |i| i + 1);
        rows.insert(at, row);
    }
    Ok(source)
}

pub fn markdown(rows: &[Row], backend: &str, memory_counted: bool) -> String {
    let mut out = format!(
        "Attention, b = {BATCH}, h = {HEADS}, d_h = {HEAD_DIM}, l = s, f32, {backend}. Ratios \
         against burn's `module::attention` at the same length, mask and pass, measured in \
         the same process.\n"
    );
    let cell = |r: &Row| -> [String; 5] {
        match &r.measurement {
            Some(m) => [
                format_seconds(m.seconds),
                format!("{:.1}", r.flops / m.seconds / 1e9),
                if memory_counted && r.method != PYTORCH {
                    format_bytes(m.peak_bytes as u128)
                } else {
                    "n/a".into()
                },
                r.time_vs_baseline.map_or("".into(), |x| format!("{x:.3}×")),
                match (memory_counted && r.method != PYTORCH, r.memory_vs_baseline) {
                    (true, Some(x)) => format!("{x:.3}×"),
                    _ => "".into(),
                },
            ],
            None => ["not run".into(), "".into(), "".into(), "".into(), "".into()],
        }
    };
    for pass in [FORWARD, BOTH] {
        out += &format!(
            "\n### {pass}\n\n| method | l = s | causal | time | GFLOP/s | peak memory | time vs burn op | memory vs burn op | note |\n\
             |---|---:|---|---:|---:|---:|---:|---:|---|\n"
        );
        for r in rows
            .iter()
            .filter(|r| r.pass == pass && r.baseline == BURN_OP)
        {
            let [time, gflops, memory, time_ratio, memory_ratio] = cell(r);
            out += &format!(
                "| {} | {} | {} | {time} | {gflops} | {memory} | {time_ratio} | {memory_ratio} | {} |\n",
                r.method,
                r.length,
                if r.causal { "yes" } else { "no" },
                r.note
            );
        }
    }
    let others: Vec<&Row> = rows.iter().filter(|r| r.baseline != BURN_OP).collect();
    if !others.is_empty() {
        out += "\n### Long sequences, multi-query and a whole layer\n\n| method | pass | l = s | time | GFLOP/s | peak memory | time vs baseline | note |\n|---|---|---:|---:|---:|---:|---:|---|\n";
        for r in others {
            let [time, gflops, memory, time_ratio, _] = cell(r);
            let ratio = if r.baseline == r.method && r.method == KERNEL {
                "".into()
            } else {
                format!("{time_ratio} ({})", r.baseline)
            };
            out += &format!(
                "| {} | {} | {} | {time} | {gflops} | {memory} | {ratio} | {} |\n",
                r.method, r.pass, r.length, r.note
            );
        }
    }
    out
}

/// The rows as figures for `--backend all`; the `gemm` ceiling and PyTorch, the same on every
/// backend, are left out.
pub fn figures(rows: &[Row]) -> Vec<crate::swap::Figure> {
    rows.iter()
        .filter(|r| r.method != CEILING && r.method != PYTORCH)
        .map(|r| {
            let mask = if r.causal { "causal" } else { "full" };
            crate::swap::Figure::time(
                format!("{} · l {} · {mask} · {}", r.method, r.length, r.pass),
                r.measurement.as_ref().map(|m| m.seconds),
            )
        })
        .collect()
}

//! `cargo xtask bench models`: whole models on the CPU, Focal's kernels against burn's own ops
//! in the same process, and against PyTorch through `crates/focal-bench/torch_models.py`.
//!
//! Rows (f32, batch and shapes as in issue 14):
//!
//! - one encoder layer (d 512, 8 heads, ffn 2048, post-norm, ReLU, b 8, l 128): forward, and a
//!   training step (forward, backward, AdamW);
//! - GPT-2-small shape (12 layers, d 768, vocab 50257, seeded random weights written once to
//!   `--gpt2` as a Hugging Face directory, so that PyTorch loads the very same model): greedy
//!   decoding of `--new-tokens` tokens after a 16-token prompt, tokens/s, next to this
//!   machine's memory bandwidth (a streaming read on every thread) and the tokens/s it allows
//!   when every weight is read once per token;
//! - all-MiniLM-L6-v2 sentence embeddings (`--minilm DIR`, skipped without it) of the 256
//!   sentences of `crates/focal-bench/sentences.txt`, batch 32, sorted by length as
//!   sentence-transformers does.
//!
//! "burn ops" is the same model with Focal's CPU kernels off (`set_cpu_kernel(false)`: burn's
//! matmul for every projection, burn's tensor ops for attention). With `--python` the bench
//! then runs `torch_models.py` on the same threads, budget, model directories and prompt
//! ([`crate::torch`]); its figures join the table with the ratio, and greedy tokens that differ
//! from Focal's fail the bench.
//!
//! Both sides use one statistic per row: the encoder rows the median of the runs that fit in
//! `--budget` after one untimed run (at most 25, [`measure`]); decoding and MiniLM the median
//! of [`RUNS`] timed runs after one untimed run (a 4-token decode, a pass over the sentences).
//!
//! A profile follows: the share of each part of one encoder layer forward and of one decoding
//! step, each part timed alone at the model's shapes.

use crate::measure::{format_seconds, measure};
use crate::torch::{Torch, median};
use anyhow::{Context, bail};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};
use focal::attention::{
    AttentionMask, FusedAttentionBackend, FusedAttentionOptions, FusedAutodiffBackend, project,
    project_transposed, set_cpu_kernel,
};
use focal::blocks::{TransformerLayer, TransformerLayerConfig};
use focal::heads::{GenerationConfig, generate};
use focal::pretrained::{Gpt2, SentenceEmbedder, TextTokenizer};
use focal::train::FusedAdamWConfig;
use serde::Serialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to run.
pub struct Options {
    pub budget: Duration,
    /// GPT-2-small-shaped random model directory (written when absent).
    pub gpt2: PathBuf,
    /// all-MiniLM-L6-v2 directory.
    pub minilm: Option<PathBuf>,
    /// Tokens decoded by Focal.
    pub new_tokens: usize,
    /// Tokens decoded with the kernels off (slow; fewer).
    pub baseline_tokens: usize,
    /// Workloads to run (`encoder`, `training`, `decoding`, `minilm`); empty: all.
    pub only: Vec<String>,
    /// The largest buffer the device can hold (wgpu's adapter limit); `None` on the CPU.
    pub max_buffer_bytes: Option<u64>,
}

impl Options {
    fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

/// One workload.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    /// `ms` (lower is better) or a rate (higher is better).
    pub unit: String,
    pub focal: f64,
    pub burn_ops: Option<f64>,
    pub pytorch: Option<f64>,
    pub note: String,
}

/// One part of a profile.
#[derive(Clone, Debug, Serialize)]
pub struct Part {
    pub whole: String,
    pub part: String,
    pub seconds: f64,
}

/// Everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub profile: Vec<Part>,
    /// Streaming read bandwidth, bytes per second.
    pub bandwidth: f64,
    /// Where PyTorch's figures come from (or why there are none).
    pub torch_source: String,
    /// Workloads not run on this device, and why.
    pub skipped: Vec<String>,
    /// What the PyTorch side is run on.
    #[serde(skip)]
    settings: TorchSettings,
}

/// What `torch_models.py` needs to run the same workloads.
#[derive(Clone, Debug)]
struct TorchSettings {
    gpt2: PathBuf,
    minilm: Option<PathBuf>,
    new_tokens: usize,
    only: Vec<String>,
    /// Focal's greedy tokens after [`prompt`], when it decoded.
    tokens: Option<Vec<usize>>,
}

/// Timed runs of the decoding and MiniLM rows, on both sides (their median is shown).
pub const RUNS: usize = 3;

impl Report {
    /// Runs `torch_models.py` (with `--python`) and puts its figures next to Focal's; an error
    /// when its greedy tokens differ from Focal's.
    pub fn compare_with(&mut self, torch: &Torch) -> anyhow::Result<()> {
        let settings = &self.settings;
        let mut args: Vec<OsString> = vec![
            "--budget".into(),
            torch.budget.to_string().into(),
            "--gpt2".into(),
            settings.gpt2.clone().into(),
            "--new-tokens".into(),
            settings.new_tokens.to_string().into(),
            "--runs".into(),
            RUNS.to_string().into(),
            "--prompt".into(),
            prompt()
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
                .into(),
        ];
        if let Some(dir) = &settings.minilm {
            args.extend(["--minilm".into(), dir.clone().into()]);
        }
        if !settings.only.is_empty() {
            args.extend(["--only".into(), settings.only.join(",").into()]);
        }
        let value = torch.run("torch_models.py", "models", &args)?;
        self.torch_source = Torch::source(value.as_ref(), "torch_models.py");
        let Some(value) = value else {
            return Ok(());
        };
        if let Some(focal) = &settings.tokens {
            let theirs: Vec<usize> = serde_json::from_value(value["gpt2_tokens"].clone())
                .context("torch_models.py wrote no gpt2_tokens")?;
            if let Some(i) =
                (0..focal.len().max(theirs.len())).find(|&i| focal.get(i) != theirs.get(i))
            {
                bail!(
                    "GPT-2 greedy tokens differ from transformers' at new token {i} (Focal {:?}, \
                     transformers {:?}; {} and {} tokens): the decoding comparison is void",
                    focal.get(i),
                    theirs.get(i),
                    focal.len(),
                    theirs.len()
                );
            }
            eprintln!(
                "GPT-2 greedy tokens equal to transformers': {} of {}",
                focal.len(),
                theirs.len()
            );
        }
        for row in &mut self.rows {
            row.pytorch = value["figures"][&row.workload].as_f64();
        }
        Ok(())
    }
}

/// The 16-token prompt of the decoding row.
fn prompt() -> Vec<usize> {
    (0..16).map(|i| (i * 3119 + 17) % VOCAB).collect()
}

const ENCODER_FORWARD: &str = "encoder layer forward (d 512, 8 heads, ffn 2048, b 8, l 128)";
const ENCODER_TRAIN: &str = "encoder layer training step (forward, backward, AdamW)";
const GPT2_DECODE: &str = "GPT-2-small greedy decoding after a 16-token prompt";
/// The wholes of the profile.
const ENCODER_PROFILE: &str = "encoder layer forward";
const DECODING_PROFILE: &str = "GPT-2-small decoding step";
const MINILM: &str = "all-MiniLM-L6-v2 embeddings, 256 sentences, batch 32";

pub fn run<A: FusedAutodiffBackend>(
    options: &Options,
    device: &A::Device,
) -> anyhow::Result<Report> {
    let mut rows = Vec::new();
    let mut profile = Vec::new();
    if options.runs("encoder") {
        let (forward, parts) = encoder_forward::<A::InnerBackend>(options.budget, device);
        rows.push(forward);
        profile.extend(parts);
    }
    if options.runs("training") {
        rows.push(encoder_training::<A>(options.budget, device));
    }
    let bandwidth = streaming_bandwidth();
    let mut skipped = Vec::new();
    let mut tokens = None;
    // burn-wgpu panics on a tensor larger than the adapter's largest buffer (lavapipe's is
    // 128 MiB, GPT-2's token embedding 154 MB), so such a model is not loaded there.
    let embedding = (VOCAB * D * 4) as u64;
    if options.runs("decoding") {
        match options.max_buffer_bytes.filter(|&limit| embedding > limit) {
            Some(limit) => skipped.push(format!(
                "{GPT2_DECODE}: not run, its token embedding ({:.0} MB) is larger than this \
                 device's largest buffer ({:.0} MB)",
                embedding as f64 / 1e6,
                limit as f64 / 1e6
            )),
            None => {
                let (decode, parts, decoded) =
                    gpt2_decoding::<A::InnerBackend>(options, bandwidth, device)?;
                rows.push(decode);
                profile.extend(parts);
                tokens = Some(decoded);
            }
        }
    }
    if let Some(dir) = options.minilm.as_ref().filter(|_| options.runs("minilm")) {
        rows.push(minilm::<A::InnerBackend>(dir, device)?);
    }
    Ok(Report {
        rows,
        profile,
        bandwidth,
        torch_source: crate::torch::NOT_MEASURED.to_string(),
        skipped,
        settings: TorchSettings {
            gpt2: options.gpt2.clone(),
            minilm: options.minilm.clone(),
            new_tokens: options.new_tokens,
            only: options.only.clone(),
            tokens,
        },
    })
}

/// Runs `f` with Focal's CPU kernels off, then back on.
fn kernels_off<R>(f: impl FnOnce() -> R) -> R {
    set_cpu_kernel(false);
    let out = f();
    set_cpu_kernel(true);
    out
}

fn encoder_layer<B: FusedAttentionBackend>(device: &B::Device) -> TransformerLayer<B> {
    TransformerLayerConfig::new(512, 8, 2048)
        .with_dropout(0.0)
        .init::<B>(device)
}

fn encoder_forward<B: FusedAttentionBackend>(
    budget: Duration,
    device: &B::Device,
) -> (Row, Vec<Part>) {
    let layer = encoder_layer::<B>(device);
    let x = Tensor::<B, 3>::random([8, 128, 512], Distribution::Normal(0.0, 1.0), device);
    let time = |f: &mut dyn FnMut()| measure(budget, f).seconds;
    let mut forward = || {
        layer
            .forward(x.clone(), &AttentionMask::none(), None, Default::default())
            .hidden
            .into_data();
    };
    let baseline = kernels_off(|| time(&mut forward));
    let focal = time(&mut forward);

    // The parts, each alone at the layer's shapes.
    let attention = &layer.self_attention;
    let q = Tensor::<B, 4>::random([8, 8, 128, 64], Distribution::Normal(0.0, 1.0), device);
    let dropout = burn::nn::DropoutConfig::new(0.0).init();
    let none = AttentionMask::none();
    let norm = &layer.self_attention_residual.norm;
    let mut parts = vec![(
        "q, k, v and output projections (4 × 512→512)",
        time(&mut || {
            for i in 0..4 {
                project(attention_linear(attention, i), x.clone()).into_data();
            }
        }),
    )];
    parts.push((
        "attention kernel (8 heads × 128 × 128), heads merged",
        time(&mut || {
            let options = FusedAttentionOptions {
                mask: &none,
                scale: 0.125,
                softcap: None,
                dropout: &dropout,
                memory_efficient_from: usize::MAX,
                key_block: 128,
            };
            // Heads merged back to `[b, l, d]` by swapping and reshaping (the layer itself
            // merges through `merge_heads`, a parallel copy on ndarray).
            B::fused_attention(q.clone(), q.clone(), q.clone(), options)
                .swap_dims(1, 2)
                .reshape([8, 128, 512])
                .into_data();
        }),
    ));
    parts.push((
        "feed-forward (512→2048, ReLU, 2048→512)",
        time(&mut || {
            layer.feed_forward.forward(x.clone()).into_data();
        }),
    ));
    parts.push((
        "2 × residual + LayerNorm",
        time(&mut || {
            for _ in 0..2 {
                norm.forward(x.clone() + x.clone()).into_data();
            }
        }),
    ));
    let parts = profile(
        ENCODER_PROFILE,
        parts,
        "the rest (head split/merge copies, reads)",
        focal,
    );
    let row = Row {
        workload: ENCODER_FORWARD.into(),
        unit: "ms".into(),
        focal: focal * 1e3,
        burn_ops: Some(baseline * 1e3),
        pytorch: None,
        note: String::new(),
    };
    (row, parts)
}

/// The parts of `whole` as profile rows, and `rest`: what `total` leaves after them.
fn profile<'a>(
    whole: &str,
    mut parts: Vec<(&'a str, f64)>,
    rest: &'a str,
    total: f64,
) -> Vec<Part> {
    let named: f64 = parts.iter().map(|(_, s)| s).sum();
    parts.push((rest, (total - named).max(0.0)));
    parts
        .into_iter()
        .map(|(part, seconds)| Part {
            whole: whole.into(),
            part: part.into(),
            seconds,
        })
        .collect()
}

/// The query, key, value or output projection of a multi-head attention.
fn attention_linear<B: FusedAttentionBackend>(
    attention: &focal::attention::MultiHeadAttention<B>,
    which: usize,
) -> &burn::nn::Linear<B> {
    attention.projections()[which]
}

fn encoder_training<A: FusedAutodiffBackend>(budget: Duration, device: &A::Device) -> Row {
    let x = Tensor::<A, 3>::random([8, 128, 512], Distribution::Normal(0.0, 1.0), device);
    let target = Tensor::<A, 3>::random([8, 128, 512], Distribution::Normal(0.0, 1.0), device);
    let time = || {
        let mut layer = Some(encoder_layer::<A>(device));
        let mut optimizer = FusedAdamWConfig::new().init::<A, TransformerLayer<A>>();
        measure(budget, || {
            let current = layer.take().expect("the layer is put back after each step");
            let y = current
                .forward(x.clone(), &AttentionMask::none(), None, Default::default())
                .hidden;
            let loss = (y - target.clone()).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &current);
            let next = optimizer.step(1e-4, current, grads);
            // Wait for the update: read one parameter back.
            next.feed_forward
                .contract
                .weight
                .val()
                .inner()
                .slice([0..1, 0..1])
                .into_data();
            layer = Some(next);
        })
        .seconds
    };
    set_cpu_kernel(false);
    let baseline = time();
    set_cpu_kernel(true);
    let focal = time();
    Row {
        workload: ENCODER_TRAIN.into(),
        unit: "ms".into(),
        focal: focal * 1e3,
        burn_ops: Some(baseline * 1e3),
        pytorch: None,
        note: "loss: mean squared error against a random target".into(),
    }
}

/// Bytes per second of a streaming read of 1 GiB on every rayon thread (the sum is kept so
/// nothing is optimised away), the best of three.
fn streaming_bandwidth() -> f64 {
    use rayon::prelude::*;
    let values = vec![1.0f32; 1 << 28];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let sum: f32 = values
            .par_chunks(1 << 16)
            .map(|chunk| {
                let mut lanes = [0.0f32; 16];
                for block in chunk.chunks_exact(16) {
                    for (lane, v) in lanes.iter_mut().zip(block) {
                        *lane += v;
                    }
                }
                lanes.iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(sum);
        best = best.min(started.elapsed().as_secs_f64());
    }
    (values.len() * 4) as f64 / best
}

/// Tokens per second of greedy decoding, Focal's tokens, and a profile of one step.
fn gpt2_decoding<B: FusedAttentionBackend>(
    options: &Options,
    bandwidth: f64,
    device: &B::Device,
) -> anyhow::Result<(Row, Vec<Part>, Vec<usize>)> {
    if !options.gpt2.join("model.safetensors").is_file() {
        write_random_gpt2(&options.gpt2)?;
    }
    let (model, _) = Gpt2::<B>::load(&options.gpt2, device)
        .with_context(|| format!("loading {}", options.gpt2.display()))?;
    let prompt = prompt();
    let decode = |tokens: usize| {
        let config = GenerationConfig {
            max_new_tokens: tokens,
            ..Default::default()
        };
        let started = Instant::now();
        let out = generate(&model, &prompt, &config, device, |_| {}).expect("the request fits");
        (tokens as f64 / started.elapsed().as_secs_f64(), out)
    };
    decode(4); // warm-up: first-touch page faults of the weights and caches
    let median_rate = |tokens: usize| {
        let mut rates: Vec<f64> = (0..RUNS).map(|_| decode(tokens).0).collect();
        median(&mut rates).expect("RUNS > 0")
    };
    let baseline = kernels_off(|| median_rate(options.baseline_tokens));
    let focal = median_rate(options.new_tokens);
    let tokens = decode(options.new_tokens).1;
    let weight_bytes = (model_parameters() * 4) as f64;
    let limit = bandwidth / weight_bytes;
    let row = Row {
        workload: GPT2_DECODE.into(),
        unit: "tokens/s".into(),
        focal,
        burn_ops: Some(baseline),
        pytorch: None,
        note: format!(
            "{} new tokens ({} with burn ops), median of {RUNS} runs; memory-bandwidth limit {:.1} tokens/s \
             ({:.1} GB/s read, {:.0} MB of weights per token): Focal at {:.0} % of it",
            options.new_tokens,
            options.baseline_tokens,
            limit,
            bandwidth / 1e9,
            weight_bytes / 1e6,
            100.0 * focal / limit
        ),
    };

    // One decoding step's parts: each layer's projections (1 row), the LM head.
    let time = |f: &mut dyn FnMut()| measure(options.budget, f).seconds;
    let row_input = Tensor::<B, 3>::random([1, 1, D], Distribution::Normal(0.0, 1.0), device);
    // Every layer's weights, as a step reads them (one layer's alone would stay in the cache).
    let layers = &model.decoder.layers;
    let step = 1.0 / focal;
    let projections = time(&mut || {
        for layer in layers {
            for i in 0..4 {
                project(
                    attention_linear(&layer.self_attention, i),
                    row_input.clone(),
                )
                .into_data();
            }
        }
    });
    let feed_forward = time(&mut || {
        for layer in layers {
            layer.feed_forward.forward(row_input.clone()).into_data();
        }
    });
    let head = time(&mut || {
        project_transposed(row_input.clone(), model.embedding.tokens.weight.val()).into_data();
    });
    let parts = profile(
        DECODING_PROFILE,
        vec![
            ("12 × q, k, v, output projections (768→768)", projections),
            ("12 × feed-forward (768→3072, GELU, 3072→768)", feed_forward),
            ("LM head (768→50257, tied)", head),
        ],
        "the rest (attention over the cache, norms, argmax)",
        step,
    );
    Ok((row, parts, tokens))
}

const VOCAB: usize = 50257;
const D: usize = 768;
const LAYERS: usize = 12;
const POSITIONS: usize = 1024;

/// Parameters of the GPT-2-small shape (the LM head is the token table).
fn model_parameters() -> usize {
    let layer = 4 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D);
    VOCAB * D + POSITIONS * D + LAYERS * layer + 2 * D
}

/// Writes a GPT-2-small-shaped Hugging Face directory with seeded random weights (normal,
/// std 0.02, as transformers initialises GPT-2; norms 1 and biases 0).
fn write_random_gpt2(dir: &Path) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    use safetensors::{Dtype, tensor::TensorView};
    eprintln!("writing a random GPT-2-small model to {}", dir.display());
    std::fs::create_dir_all(dir)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, init: &str| {
        let len: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            "normal" => (0..len)
                .map(|_| {
                    // Box-Muller
                    let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                    0.02 * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                })
                .collect(),
            "ones" => vec![1.0; len],
            _ => vec![0.0; len],
        };
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, shape, bytes));
    };
    add("wte.weight".into(), vec![VOCAB, D], "normal");
    add("wpe.weight".into(), vec![POSITIONS, D], "normal");
    for i in 0..LAYERS {
        let key = |k: &str| format!("h.{i}.{k}");
        for (name, shape, init) in [
            ("ln_1.weight", vec![D], "ones"),
            ("ln_1.bias", vec![D], "zeros"),
            ("attn.c_attn.weight", vec![D, 3 * D], "normal"),
            ("attn.c_attn.bias", vec![3 * D], "zeros"),
            ("attn.c_proj.weight", vec![D, D], "normal"),
            ("attn.c_proj.bias", vec![D], "zeros"),
            ("ln_2.weight", vec![D], "ones"),
            ("ln_2.bias", vec![D], "zeros"),
            ("mlp.c_fc.weight", vec![D, 4 * D], "normal"),
            ("mlp.c_fc.bias", vec![4 * D], "zeros"),
            ("mlp.c_proj.weight", vec![4 * D, D], "normal"),
            ("mlp.c_proj.bias", vec![D], "zeros"),
        ] {
            add(key(name), shape, init);
        }
    }
    add("ln_f.weight".into(), vec![D], "ones");
    add("ln_f.bias".into(), vec![D], "zeros");
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, None)?;
    focal::train::write_atomic(&dir.join("model.safetensors"), &bytes)?;
    let config = serde_json::json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": VOCAB,
        "n_positions": POSITIONS,
        "n_embd": D,
        "n_layer": LAYERS,
        "n_head": 12,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    });
    focal::train::write_atomic(&dir.join("config.json"), config.to_string().as_bytes())?;
    Ok(())
}

fn minilm<B: FusedAttentionBackend>(dir: &Path, device: &B::Device) -> anyhow::Result<Row> {
    let embedder = SentenceEmbedder::<B>::load(dir, device)
        .with_context(|| format!("loading {}", dir.display()))?;
    let tokenizer = TextTokenizer::load(
        dir,
        embedder.max_len,
        embedder.bert.vocab_size(),
        Some((0, "[PAD]".into())),
    )?;
    let sentences: Vec<String> = include_str!("../sentences.txt")
        .lines()
        .map(str::to_string)
        .collect();
    // sentence-transformers sorts by length (longest first) before batching.
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sentences[i].len()));
    let sorted: Vec<String> = order.iter().map(|&i| sentences[i].clone()).collect();
    let embed_all = || -> anyhow::Result<()> {
        for batch in sorted.chunks(32) {
            let encoded = tokenizer.encode_batch(batch)?;
            let ids = matrix::<B, Int>(&encoded.ids, device);
            let types = matrix::<B, Int>(&encoded.type_ids, device);
            let valid = matrix::<B, Int>(&encoded.attention_mask, device).equal_elem(1);
            let valid: Tensor<B, 2, Bool> = valid;
            embedder.embed(ids, types, valid).into_data();
        }
        Ok(())
    };
    embed_all()?; // warm-up
    // The median of RUNS passes, as sentence-transformers' side is measured.
    let rate = || -> anyhow::Result<f64> {
        let mut rates = Vec::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            embed_all()?;
            rates.push(sentences.len() as f64 / started.elapsed().as_secs_f64());
        }
        Ok(median(&mut rates).expect("RUNS > 0"))
    };
    let baseline = kernels_off(rate)?;
    let focal = rate()?;
    Ok(Row {
        workload: MINILM.into(),
        unit: "sentences/s".into(),
        focal,
        burn_ops: Some(baseline),
        pytorch: None,
        note: format!(
            "{}, tokenisation included, median of {RUNS} passes",
            dir.display()
        ),
    })
}

fn matrix<B: FusedAttentionBackend, K: burn::tensor::TensorKind<B> + burn::tensor::BasicOps<B>>(
    rows: &[Vec<u32>],
    device: &B::Device,
) -> Tensor<B, 2, K> {
    let width = rows[0].len();
    let values: Vec<i64> = rows.iter().flatten().map(|&v| i64::from(v)).collect();
    Tensor::from_data(TensorData::new(values, [rows.len(), width]), device)
}

/// The report as markdown.
pub fn markdown(report: &Report, backend: &str) -> String {
    let mut out = format!(
        "Whole models, f32, {backend}, {} rayon threads. \"burn ops\": the same model with \
         Focal's CPU kernels off. PyTorch: {}.\n\n\
         | workload | unit | Focal | burn ops | Focal vs burn ops | PyTorch | Focal vs PyTorch |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
        rayon::current_num_threads(),
        report.torch_source
    );
    for row in &report.rows {
        let higher_is_better = row.unit != "ms";
        // "n× faster" in both cases.
        let speedup = |other: f64| {
            if higher_is_better {
                row.focal / other
            } else {
                other / row.focal
            }
        };
        let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
        let ratio = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.2}×", speedup(v)));
        out += &format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |\n",
            row.workload,
            row.unit,
            row.focal,
            cell(row.burn_ops),
            ratio(row.burn_ops),
            cell(row.pytorch),
            ratio(row.pytorch)
        );
    }
    out += "\nRatios are speed-ups (above 1: Focal is faster).\n";
    for row in report.rows.iter().filter(|r| !r.note.is_empty()) {
        out += &format!("\n- {}: {}", row.workload, row.note);
    }
    for reason in &report.skipped {
        out += &format!("\n- {reason}");
    }
    out += &format!(
        "\n\nStreaming read: {:.1} GB/s.\n\n| profile | part | time | share |\n|---|---|---:|---:|\n",
        report.bandwidth / 1e9
    );
    for whole in [ENCODER_PROFILE, DECODING_PROFILE] {
        let parts: Vec<&Part> = report.profile.iter().filter(|p| p.whole == whole).collect();
        let total: f64 = parts.iter().map(|p| p.seconds).sum();
        for p in parts {
            out += &format!(
                "| {} | {} | {} | {:.0} % |\n",
                p.whole,
                p.part,
                format_seconds(p.seconds),
                100.0 * p.seconds / total
            );
        }
    }
    out
}

/// The rows as figures for `--backend all`: Focal's, and the same model on burn's ops
/// (PyTorch's figures, the same whatever the backend, are left out).
pub fn figures(report: &Report) -> Vec<crate::swap::Figure> {
    report
        .rows
        .iter()
        .flat_map(|row| {
            let figure = |workload: String, value| crate::swap::Figure {
                workload,
                unit: row.unit.clone(),
                value,
            };
            [
                figure(row.workload.clone(), Some(row.focal)),
                figure(format!("{} (burn ops)", row.workload), row.burn_ops),
            ]
        })
        .collect()
}

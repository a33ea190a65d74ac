//! `focal embed`, `focal fill-mask`, `focal generate`: Hugging Face model directories.

use crate::output;
use crate::tasks::{Inputs, for_each_batch, line_field};
use anyhow::{Context, bail};
use clap::Args;
use focal::attention::FusedAutodiffBackend;
use focal::backend::{BackendJob, BackendKind, RunOn};
use focal::burn::tensor::activation::softmax;
use focal::heads::{EarlyStopping, GenerationConfig, Strategy, generate};
use focal::pretrained::pipelines::bert_inputs;
use focal::pretrained::{Bert, Gpt2, Pooling, TextMatcher, TextTokenizer};
use serde_json::json;
use std::path::PathBuf;

/// A BERT directory's encoder and its tokenizer (truncating to the model's positions, no
/// padding).
pub(crate) fn bert_with_tokenizer<B: focal::attention::FusedAttentionBackend>(
    dir: &std::path::Path,
    device: &B::Device,
) -> anyhow::Result<(Bert<B>, TextTokenizer)> {
    let (bert, config) = Bert::<B>::load(dir, device)?;
    let tokenizer =
        TextTokenizer::load(dir, config.max_position_embeddings, config.vocab_size, None)?;
    Ok((bert, tokenizer))
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A BERT or sentence-transformers model directory.
    #[arg(long)]
    model: PathBuf,
    /// Pooling: mean, cls or max (default: the directory's sentence-transformers pooling, else
    /// mean).
    #[arg(long)]
    pooling: Option<Pooling>,
    /// L2-normalise the embeddings (also on when the directory lists a Normalize module).
    #[arg(long)]
    normalize: bool,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Texts to embed (none: one per line of standard input).
    text: Vec<String>,
}

#[derive(Args, Debug)]
pub struct FillMaskArgs {
    /// A BERT masked-LM directory (`BertForMaskedLM`).
    #[arg(long)]
    model: PathBuf,
    /// Candidates to print.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// A text with one `[MASK]`.
    text: String,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A GPT-2 model directory.
    #[arg(long)]
    model: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// greedy, sample or beam.
    #[arg(long, default_value = "greedy")]
    strategy: String,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f64>,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long)]
    min_p: Option<f64>,
    /// Repetition penalty (1 = none).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Forbid repeating n-grams of this size (0 = off).
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram_size: usize,
    /// Beams for --strategy beam.
    #[arg(long, default_value_t = 4)]
    beams: usize,
    /// Beam search: exponent of the length normalisation of finished hypotheses.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f64,
    /// Beam search: when-full (transformers' True), heuristic (False) or never.
    #[arg(long, default_value = "when-full")]
    early_stopping: String,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct EmbedJob {
    args: EmbedArgs,
    json: bool,
}

impl BackendJob for EmbedJob {
    type Output = anyhow::Result<()>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for EmbedJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = self.args;
        // The matcher's encoder and tokenizer, without candidates.
        let mut encoder = TextMatcher::<B::InnerBackend>::load(&args.model, &device)?;
        if let Some(pooling) = args.pooling {
            encoder.embedder.pooling = pooling;
        }
        encoder.embedder.normalize |= args.normalize;
        let inputs = Inputs::new(args.text);
        let streaming = inputs.streaming();
        for_each_batch(inputs, args.batch_size, |batch| {
            let (numbers, texts): (Vec<usize>, Vec<String>) = batch.into_iter().unzip();
            let embeddings = encoder.embed(&texts)?;
            let [_, d] = embeddings.dims();
            let values = focal::backend::math::to_vec(embeddings);
            output::ensure_finite("embedding", values.iter().map(|&v| f64::from(v)))?;
            for ((number, text), e) in numbers.iter().zip(&texts).zip(values.chunks(d)) {
                if self.json {
                    let line = line_field(streaming, *number);
                    output::line(json!({"line": line, "text": text, "embedding": e}))?;
                } else {
                    let shown: Vec<String> = e.iter().take(8).map(|x| format!("{x:.6}")).collect();
                    output::line(format_args!(
                        "{text}\t[{}{}] ({} dims)",
                        shown.join(", "),
                        if e.len() > 8 { ", …" } else { "" },
                        e.len()
                    ))?;
                }
            }
            Ok(())
        })
    }
}

pub fn embed(backend: BackendKind, args: EmbedArgs, json: bool) -> anyhow::Result<()> {
    backend.run(EmbedJob { args, json })?
}

struct FillMaskJob(FillMaskArgs);

impl BackendJob for FillMaskJob {
    type Output = anyhow::Result<Vec<(String, f32, String)>>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for FillMaskJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = self.0;
        let (bert, tokenizer) = bert_with_tokenizer::<B::InnerBackend>(&args.model, &device)?;
        if bert.mlm.is_none() {
            bail!(
                "{}: this BERT has no masked-LM head (cls.predictions); fill-mask needs a BertForMaskedLM directory",
                args.model.display()
            );
        }
        let mask_id = tokenizer.token_id("[MASK]").with_context(|| {
            format!(
                "{}: the tokenizer has no [MASK] token",
                args.model.display()
            )
        })?;
        let batch = tokenizer.encode_batch(std::slice::from_ref(&args.text))?;
        let positions: Vec<usize> = batch.ids[0]
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == mask_id)
            .map(|(i, _)| i)
            .collect();
        let &[position] = positions.as_slice() else {
            bail!(
                "the text must contain exactly one [MASK], found {}",
                positions.len()
            );
        };
        let (ids, types, valid) = bert_inputs::<B::InnerBackend>(&batch, &device);
        let h = bert.forward(ids, types, valid).last_hidden_state;
        let logits = bert.mlm_logits(h); // [1, l, V]
        let [_, _, vocab] = logits.dims();
        let probs = focal::backend::math::to_vec(softmax(
            logits.slice([0..1, position..position + 1, 0..vocab]),
            2,
        ));
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut out = Vec::new();
        for &id in order.iter().take(args.top_k) {
            let token = tokenizer.decode(&[id as u32])?;
            let mut filled = batch.ids[0].clone();
            filled[position] = id as u32;
            out.push((token, probs[id], tokenizer.decode(&filled)?));
        }
        Ok(out)
    }
}

pub fn fill_mask(backend: BackendKind, args: FillMaskArgs, json_out: bool) -> anyhow::Result<()> {
    let model = args.model.clone();
    let candidates = backend.run(FillMaskJob(args))??;
    output::ensure_finite(
        "score",
        candidates.iter().map(|(_, score, _)| f64::from(*score)),
    )?;
    if json_out {
        let items: Vec<_> = candidates
            .iter()
            .map(|(token, score, sequence)| json!({"token": token, "score": score, "sequence": sequence}))
            .collect();
        output::line(json!({"model": model, "candidates": items}))?;
    } else {
        for (token, score, sequence) in candidates {
            output::line(format_args!("{score:.4}\t{token}\t{sequence}"))?;
        }
    }
    Ok(())
}

struct GenerateJob {
    args: GenerateArgs,
    json: bool,
}

impl BackendJob for GenerateJob {
    type Output = anyhow::Result<(String, Vec<usize>)>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for GenerateJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let (gpt2, config) = Gpt2::<B::InnerBackend>::load(&args.model, &device)?;
        let tokenizer =
            TextTokenizer::load(&args.model, config.n_positions, config.vocab_size, None)?;
        let prompt: Vec<usize> = tokenizer
            .encode_batch(std::slice::from_ref(&args.prompt))?
            .ids[0]
            .iter()
            .map(|&t| t as usize)
            .collect();
        let strategy = match args.strategy.as_str() {
            "greedy" => Strategy::Greedy,
            "sample" => Strategy::Sample,
            "beam" => Strategy::Beam {
                beams: args.beams,
                length_penalty: args.length_penalty,
                early_stopping: match args.early_stopping.as_str() {
                    "when-full" => EarlyStopping::WhenFull,
                    "heuristic" => EarlyStopping::Heuristic,
                    "never" => EarlyStopping::Never,
                    other => bail!(
                        "unknown --early-stopping '{other}': expected when-full, heuristic or never"
                    ),
                },
            },
            other => bail!("unknown strategy '{other}': expected greedy, sample or beam"),
        };
        // The key/value cache of every beam over every position it may reach, and a row of
        // logits per beam, must fit before any is allocated.
        let beams = match strategy {
            Strategy::Beam { beams, .. } => beams,
            _ => 1,
        };
        let positions = prompt
            .len()
            .saturating_add(args.max_new_tokens)
            .min(config.n_positions);
        let cache =
            focal::backend::checked_product(&[beams, positions, config.n_layer, 2, config.n_embd]);
        let logits = focal::backend::checked_product(&[beams, config.vocab_size]);
        focal::backend::ConfigError::ensure_fits(
            "GenerationConfig",
            &format!("the key/value cache and logits of {beams} beams over {positions} positions"),
            cache.zip(logits).and_then(|(c, l)| c.checked_add(l)),
        )?;
        let options = GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            strategy,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            no_repeat_ngram_size: args.no_repeat_ngram_size,
            stop_tokens: config.eos_token_id.into_iter().collect(),
            seed: args.seed,
        };
        // Stream the text as it grows: decode everything so far and print what is new (a
        // token may be part of a multi-byte character, which decodes only once complete).
        let mut ids: Vec<u32> = Vec::new();
        let mut printed = String::new();
        let stream = !self.json;
        // A write that fails ends the printing; generation cannot be stopped from here, so
        // the error is returned when it ends (a closed pipe ends the process at once). The
        // prompt is printed with the first token, so that a request refused before
        // generating prints nothing on stdout.
        let mut failed: Option<anyhow::Error> = None;
        let generated = generate(&gpt2, &prompt, &options, &device, |token| {
            if !stream || failed.is_some() {
                return;
            }
            if ids.is_empty()
                && let Err(err) = output::stream(&args.prompt).map_err(end_if_broken_pipe)
            {
                failed = Some(err);
                return;
            }
            ids.push(token as u32);
            if let Ok(text) = tokenizer.decode(&ids)
                && !text.ends_with('\u{FFFD}')
                && let Some(new) = text.strip_prefix(printed.as_str())
            {
                if let Err(err) = output::stream(new).map_err(end_if_broken_pipe) {
                    failed = Some(err);
                }
                printed = text;
            }
        })?;
        if let Some(err) = failed {
            return Err(err);
        }
        if stream {
            if generated.is_empty() {
                output::stream(&args.prompt).map_err(end_if_broken_pipe)?;
            }
            output::line("").map_err(end_if_broken_pipe)?;
        }
        let ids: Vec<u32> = generated.iter().map(|&t| t as u32).collect();
        Ok((tokenizer.decode(&ids)?, generated))
    }
}

pub fn generate_text(
    backend: BackendKind,
    args: GenerateArgs,
    json_out: bool,
) -> anyhow::Result<()> {
    let (model, prompt) = (args.model.clone(), args.prompt.clone());
    let (text, ids) = backend.run(GenerateJob {
        args,
        json: json_out,
    })??;
    if json_out {
        output::line(
            json!({"model": model, "prompt": prompt, "completion": text, "token_ids": ids}),
        )?;
    }
    Ok(())
}

/// Ends the process as a closed pipe ends `cat` (see [`output::BROKEN_PIPE_STATUS`]) when the
/// error is one; returns it otherwise. Streaming runs inside the backend's job, where the
/// error cannot stop the generation loop early.
fn end_if_broken_pipe(err: anyhow::Error) -> anyhow::Error {
    if output::is_broken_pipe(&err) {
        std::process::exit(output::BROKEN_PIPE_STATUS.into());
    }
    err
}

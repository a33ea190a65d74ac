//! `focal attention`: what a model attends to, per layer and head (`raw`), or combined over the
//! layers (`rollout`, `flow`: Abnar & Zuidema 2020).

use crate::output;
use anyhow::{Context, bail};
use clap::Args;
use focal::attention::{FusedAutodiffBackend, attention_flow, attention_rollout};
use focal::backend::{BackendJob, BackendKind, RunOn};
use focal::burn::tensor::{Int, Tensor, TensorData};
use focal::pretrained::pipelines::bert_inputs;
use focal::pretrained::{
    Bert, BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    EncodedBatch, Gpt2, TaskConfig, TextTokenizer, TokenAttribution, explain,
};
use focal::train::plots::{AttentionPage, CombinedMap, PageView, TokenScores};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AttentionArgs {
    /// A BERT-style encoder (BERT, sentence-transformers) or GPT-2 directory.
    #[arg(long)]
    model: PathBuf,
    /// The text.
    text: String,
    /// A second text, for a BERT pair (token type 1).
    #[arg(long)]
    pair: Option<String>,
    /// raw (each layer's heads), rollout or flow (the layers combined, residual included).
    #[arg(long, default_value = "raw")]
    method: String,
    /// raw: the layer shown (from 0; default the last). With --json and neither --layer nor
    /// --head, every layer and head.
    #[arg(long)]
    layer: Option<usize>,
    /// raw: the head shown (from 0; default the mean of the layer's heads).
    #[arg(long)]
    head: Option<usize>,
    /// Also draw the weights into this file. FILE.png: for raw, a grid of every layer (rows)
    /// and head (columns), or the one map --layer / --head choose; else the combined map.
    /// FILE.html: one self-contained interactive page with every layer and head and the
    /// rollout (and the flow with --method flow), opening on the view asked for.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What `focal attention` shows: the tokens, the JSON report, the `[l][l]` view the text
/// output lists, and the named maps a picture draws with the maps per row.
struct Shown {
    tokens: Vec<String>,
    /// The tokens of the maps' columns (the tokens, but for cross-attention the source's).
    keys: Vec<String>,
    report: serde_json::Value,
    view: Vec<Vec<f32>>,
    maps: Vec<(String, Vec<Vec<f32>>)>,
    columns: usize,
    page: Option<AttentionPage>,
    /// A classifier's label and why: its name and the tokens' scores.
    prediction: Option<(String, TokenAttribution)>,
    /// A line the text output starts with (what a sequence-to-sequence model wrote).
    header: Option<String>,
}

/// A model's attention over one input: its tokens, and each layer's probabilities
/// `[heads][l][l]` (rows the query positions).
struct Attentions<B: focal::burn::tensor::backend::Backend> {
    tokens: Vec<String>,
    layers: Vec<Tensor<B, 4>>,
    /// Whether the model is a `BertForSequenceClassification` (whose label can be explained).
    classifier: bool,
}

struct AttentionJob {
    args: AttentionArgs,
}

impl BackendJob for AttentionJob {
    type Output = anyhow::Result<Shown>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for AttentionJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        if read_config(&args.model)?.0["format"] == "focal-seq2seq" {
            return seq2seq::<B::InnerBackend>(args, &device);
        }
        let Attentions {
            tokens,
            layers,
            classifier,
        } = attentions::<B::InnerBackend>(args, &device)?;
        let prediction = if classifier {
            Some(attribution::<B>(args, &device)?)
        } else {
            None
        };
        let [_, heads, l, _] = layers[0].dims();
        let rows = |x: Tensor<B::InnerBackend, 2>| -> Vec<Vec<f32>> {
            let values = focal::backend::math::to_vec(x);
            values.chunks(l.max(1)).map(<[f32]>::to_vec).collect()
        };
        let combined = |result: Result<Tensor<B::InnerBackend, 3>, _>| -> anyhow::Result<_> {
            Ok(rows(result?.squeeze_dim::<2>(0)))
        };
        if args.method != "raw" && (args.layer.is_some() || args.head.is_some()) {
            bail!(
                "--layer and --head choose what --method raw shows; rollout and flow combine every layer and head"
            );
        }
        let html = wants_page(args);
        // Every layer's heads read back once, when the raw view or the page needs them (a long
        // GPT-2 input is 10⁸ values).
        let per_head = if args.method == "raw" || html {
            maps_per_head(&layers)
        } else {
            Vec::new()
        };
        let mut combined_maps = Vec::new();
        let (weights, view, maps, columns) = match args.method.as_str() {
            "rollout" | "flow" => {
                let (name, result) = if args.method == "rollout" {
                    ("attention rollout", attention_rollout(&layers))
                } else {
                    ("attention flow", attention_flow(&layers))
                };
                let view = combined(result)?;
                combined_maps.push(CombinedMap {
                    name: name.to_string(),
                    weights: view.clone(),
                });
                let maps = vec![(name.to_string(), view.clone())];
                (json!(view), view, maps, 1)
            }
            "raw" => raw_choice(args, &per_head, "model", "")?,
            other => bail!("unknown --method \"{other}\": expected raw, rollout or flow"),
        };
        let page = if html {
            // The page always offers the rollout; the flow only when asked for (it is slow).
            if args.method != "rollout" {
                combined_maps.insert(
                    0,
                    CombinedMap {
                        name: "attention rollout".to_string(),
                        weights: combined(attention_rollout(&layers))?,
                    },
                );
            }
            let start = match args.method.as_str() {
                "raw" => args.layer,
                "rollout" => Some(layers.len()),
                _ => Some(layers.len() + 1),
            };
            let mut title = args.text.clone();
            if let Some(pair) = &args.pair {
                title = format!("{title} / {pair}");
            }
            Some(AttentionPage {
                title: format!("{}: {title}", args.model.display()),
                tokens: tokens.clone(),
                layers: per_head,
                combined: combined_maps,
                views: Vec::new(),
                attributions: prediction
                    .iter()
                    .flat_map(|(label, a)| {
                        // Relevance without the identity the first token starts with.
                        let mut relevance = a.attention_gradient.clone();
                        relevance[0] -= 1.0;
                        [
                            TokenScores {
                                name: format!("gradient × input for \"{label}\" (red for, blue against)"),
                                scores: a.gradient_input.clone(),
                            },
                            TokenScores {
                                name: format!("attention × gradient for \"{label}\" (Chefer et al. 2021; the first token's own 1 left out)"),
                                scores: relevance,
                            },
                        ]
                    })
                    .collect(),
                start,
            })
        } else {
            None
        };
        let report = json!({
            "tokens": tokens,
            "method": args.method,
            "layers": layers.len(),
            "heads": heads,
            "layer": args.layer,
            "head": args.head,
            "weights": weights,
            "prediction": prediction.as_ref().map(|(label, a)| json!({
                "label": label,
                "class": a.class,
                "logit": a.logit,
                "gradient_input": a.gradient_input,
                "attention_gradient": a.attention_gradient,
            })),
        });
        Ok(Shown {
            keys: tokens.clone(),
            tokens,
            report,
            view,
            maps,
            columns,
            page,
            prediction,
            header: None,
        })
    }
}

/// A model directory's `config.json` and its path.
fn read_config(dir: &std::path::Path) -> anyhow::Result<(serde_json::Value, PathBuf)> {
    let path = dir.join("config.json");
    let config = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("{}", path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    Ok((config, path))
}

/// A Focal sequence-to-sequence directory's attention while it translates `args.text`
/// greedily: the encoder's self-attention, the decoder's, and its cross-attention from each
/// target position (`<bos>` and the words written, each predicting the next) to the source.
/// The text, the JSON's view, the picture and the page's first view are the cross-attention.
fn seq2seq<B: focal::attention::FusedAttentionBackend>(
    args: &AttentionArgs,
    device: &B::Device,
) -> anyhow::Result<Shown> {
    if args.pair.is_some() {
        bail!("--pair: a sequence-to-sequence model reads one text (its output is decoded)");
    }
    if args.method != "raw" {
        bail!(
            "--method {}: rollout and flow combine one stack's self-attention; a sequence-to-sequence model shows its cross-attention (--method raw)",
            args.method
        );
    }
    let (artifact, model) = focal::train::load_checkpoint::<B>(&args.model, device)?;
    let vocabulary = &artifact.vocabulary;
    let source = vocabulary
        .encode(&args.text)
        .with_context(|| format!("the text {}", output::echo(&args.text)))?;
    if source.len() > artifact.max_input_len {
        bail!(
            "the text has {} tokens; this model takes at most {}",
            source.len(),
            artifact.max_input_len
        );
    }
    let specials = vocabulary.specials();
    let (src, valid) =
        focal::train::batch::source_tensors::<B>(&[source.as_slice()], specials, device);
    let output = model.greedy_decode(
        src.clone(),
        valid.clone(),
        specials,
        artifact.max_output_len,
    );
    let target: Vec<usize> = std::iter::once(specials.bos)
        .chain(output[0].iter().copied())
        .collect();
    let name = |id: usize| vocabulary.token(id).unwrap_or("?").to_string();
    let keys: Vec<String> = source
        .iter()
        .copied()
        .chain(std::iter::once(specials.eos))
        .map(name)
        .collect();
    let queries: Vec<String> = target.iter().copied().map(name).collect();
    let ids: Vec<i64> = target.iter().map(|&t| t as i64).collect();
    let l = ids.len();
    let tgt = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, l]), device);
    let attentions = model.attentions(src, valid, tgt);
    let (encoder, decoder, cross) = (
        maps_per_head(&attentions.encoder),
        maps_per_head(&attentions.decoder),
        maps_per_head(&attentions.cross),
    );
    let count = cross.len();
    let heads = cross[0].len();
    let layer = args.layer.unwrap_or(count - 1);
    let (weights, view, maps, columns) = raw_choice(args, &cross, "decoder", "cross-attention, ")?;
    let page = wants_page(args).then(|| {
        let views = (0..count)
            .map(|k| PageView {
                name: format!("cross-attention, layer {k}"),
                queries: queries.clone(),
                keys: keys.clone(),
                heads: cross[k].clone(),
            })
            .chain(decoder.iter().enumerate().map(|(k, heads)| PageView {
                name: format!("decoder self-attention, layer {k}"),
                queries: queries.clone(),
                keys: queries.clone(),
                heads: heads.clone(),
            }))
            .collect();
        AttentionPage {
            title: format!(
                "{}: {} → {}",
                args.model.display(),
                args.text,
                vocabulary.decode(&output[0])
            ),
            tokens: keys.clone(),
            layers: encoder.clone(),
            combined: Vec::new(),
            views,
            attributions: Vec::new(),
            start: Some(encoder.len() + layer),
        }
    });
    let report = json!({
        "source": keys,
        "target": queries,
        "output": vocabulary.decode(&output[0]),
        "layers": count,
        "heads": heads,
        "layer": args.layer,
        "head": args.head,
        "weights": weights,
        "encoder": encoder,
        "decoder": decoder,
    });
    Ok(Shown {
        tokens: queries,
        keys,
        report,
        view,
        maps,
        columns,
        page,
        prediction: None,
        header: Some(format!(
            "{} → {} (cross-attention: each target position, which predicts the next word, to the source)",
            args.text,
            vocabulary.decode(&output[0])
        )),
    })
}

/// Whether `--out` asks for the interactive page.
fn wants_page(args: &AttentionArgs) -> bool {
    args.out.as_ref().is_some_and(|p| {
        p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html"))
    })
}

/// Each layer's heads `[1, h, q, k]` as `[layer][head][query][key]` values.
fn maps_per_head<B: focal::burn::tensor::backend::Backend>(
    layers: &[Tensor<B, 4>],
) -> Vec<Vec<Vec<Vec<f32>>>> {
    layers
        .iter()
        .map(|a| {
            let [_, heads, q, k] = a.dims();
            (0..heads)
                .map(|h| {
                    let values: Vec<f32> = a
                        .clone()
                        .slice([0..1, h..h + 1, 0..q, 0..k])
                        .into_data()
                        .convert::<f32>()
                        .to_vec()
                        .expect("f32");
                    values.chunks(k.max(1)).map(<[f32]>::to_vec).collect()
                })
                .collect()
        })
        .collect()
}

/// What `--method raw` shows of `all` (`[layer][head][query][key]`): the JSON weights (every
/// layer and head unless `--layer` or `--head` chooses), the view the text lists (the chosen
/// layer's head, or its heads averaged; the last layer by default), the named maps a picture
/// draws, and the maps per row of the picture. `stack` names what has the layers in errors,
/// `prefix` starts each map's name.
#[allow(clippy::type_complexity)]
fn raw_choice(
    args: &AttentionArgs,
    all: &[Vec<Vec<Vec<f32>>>],
    stack: &str,
    prefix: &str,
) -> anyhow::Result<(
    serde_json::Value,
    Vec<Vec<f32>>,
    Vec<(String, Vec<Vec<f32>>)>,
    usize,
)> {
    let count = all.len();
    let heads = all[0].len();
    let layer = args.layer.unwrap_or(count - 1);
    if layer >= count {
        bail!(
            "--layer {layer}: the {stack} has {count} layers (0 to {})",
            count - 1
        );
    }
    if let Some(head) = args.head
        && head >= heads
    {
        bail!(
            "--head {head}: the model has {heads} heads (0 to {})",
            heads - 1
        );
    }
    let view: Vec<Vec<f32>> = match args.head {
        Some(head) => all[layer][head].clone(),
        None => {
            let maps = &all[layer];
            (0..maps[0].len())
                .map(|i| {
                    (0..maps[0][i].len())
                        .map(|j| maps.iter().map(|m| m[i][j]).sum::<f32>() / heads as f32)
                        .collect()
                })
                .collect()
        }
    };
    if args.layer.is_none() && args.head.is_none() {
        let maps = all
            .iter()
            .enumerate()
            .flat_map(|(k, maps)| {
                maps.iter()
                    .enumerate()
                    .map(move |(h, map)| (format!("{prefix}layer {k}, head {h}"), map.clone()))
            })
            .collect();
        return Ok((json!(all), view, maps, heads));
    }
    let name = match args.head {
        Some(head) => format!("{prefix}layer {layer}, head {head}"),
        None => format!("{prefix}layer {layer}, heads averaged"),
    };
    Ok((json!(view), view.clone(), vec![(name, view)], 1))
}

/// The first of a `config.json`'s `architectures` ("" when it names none).
fn architecture(config: &serde_json::Value) -> &str {
    config["architectures"][0].as_str().unwrap_or_default()
}

/// Gradient × input and attention × gradient of the label a `BertForSequenceClassification`
/// in `args.model` predicts for `args.text` (and `args.pair`), with the label's name.
fn attribution<B: FusedAutodiffBackend>(
    args: &AttentionArgs,
    device: &B::Device,
) -> anyhow::Result<(String, TokenAttribution)> {
    let (model, task) =
        BertForSequenceClassification::<B>::load_without_dropout(&args.model, device)?;
    let tokenizer = TextTokenizer::load(
        &args.model,
        task.bert.max_position_embeddings,
        task.bert.vocab_size,
        None,
    )?;
    let encodings = tokenizer.encode(
        std::slice::from_ref(&args.text),
        args.pair.as_ref().map(std::slice::from_ref),
    )?;
    let batch = EncodedBatch::from_encodings(&encodings);
    let attribution = explain(&model, bert_inputs::<B>(&batch, device), None);
    let label = task
        .labels
        .get(attribution.class)
        .cloned()
        .unwrap_or_else(|| attribution.class.to_string());
    Ok((label, attribution))
}

/// The tokens of `args.text` (and `args.pair`) and the attention of the model in `args.model`
/// over them, by the family its `config.json` names (a task directory's encoder for BERT task
/// models).
fn attentions<B: focal::attention::FusedAttentionBackend>(
    args: &AttentionArgs,
    device: &B::Device,
) -> anyhow::Result<Attentions<B>> {
    let (config, config_path) = read_config(&args.model)?;
    let encode = |tokenizer: &TextTokenizer| -> anyhow::Result<(Vec<String>, EncodedBatch)> {
        let encodings = tokenizer.encode(
            std::slice::from_ref(&args.text),
            args.pair.as_ref().map(std::slice::from_ref),
        )?;
        Ok((
            encodings[0].get_tokens().to_vec(),
            EncodedBatch::from_encodings(&encodings),
        ))
    };
    match config["model_type"].as_str().unwrap_or_default() {
        "bert" => {
            let task_encoder = |(bert, task): (Bert<B>, TaskConfig)| -> anyhow::Result<_> {
                let tokenizer = TextTokenizer::load(
                    &args.model,
                    task.bert.max_position_embeddings,
                    task.bert.vocab_size,
                    None,
                )?;
                Ok((bert, tokenizer))
            };
            let (bert, tokenizer) = match architecture(&config) {
                "BertForSequenceClassification" => task_encoder(
                    BertForSequenceClassification::<B>::load(&args.model, device)
                        .map(|(m, task)| (m.bert, task))?,
                )?,
                "BertForTokenClassification" => task_encoder(
                    BertForTokenClassification::<B>::load(&args.model, device)
                        .map(|(m, task)| (m.bert, task))?,
                )?,
                "BertForQuestionAnswering" => task_encoder(
                    BertForQuestionAnswering::<B>::load(&args.model, device)
                        .map(|(m, task)| (m.bert, task))?,
                )?,
                _ => crate::pretrained::bert_with_tokenizer::<B>(&args.model, device)?,
            };
            let (tokens, batch) = encode(&tokenizer)?;
            let (ids, types, valid) = bert_inputs::<B>(&batch, device);
            let (_, layers) = bert.forward_with_attentions(ids, types, valid);
            Ok(Attentions {
                tokens,
                layers,
                classifier: architecture(&config) == "BertForSequenceClassification",
            })
        }
        "gpt2" => {
            if args.pair.is_some() {
                bail!("--pair: a GPT-2 reads one text");
            }
            let (gpt2, config) = Gpt2::<B>::load(&args.model, device)?;
            let tokenizer =
                TextTokenizer::load(&args.model, config.n_positions, config.vocab_size, None)?;
            let (tokens, batch) = encode(&tokenizer)?;
            let ids: Vec<i64> = batch.ids[0].iter().map(|&t| i64::from(t)).collect();
            let l = ids.len();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, l]), device);
            Ok(Attentions {
                tokens,
                layers: gpt2.attentions(ids),
                classifier: false,
            })
        }
        other => bail!(
            "{}: model_type \"{other}\": focal attention reads BERT-style encoders and GPT-2 decoders",
            config_path.display()
        ),
    }
}

/// `focal attention`: prints, for each token, the tokens it attends to most (or the weights as
/// JSON).
pub fn attention(backend: BackendKind, args: AttentionArgs, json: bool) -> anyhow::Result<()> {
    if !args.model.is_dir() {
        bail!("--model {}: no such directory", args.model.display());
    }
    if args.text.trim().is_empty() {
        bail!("the text is empty");
    }
    let out = args.out.clone();
    if let Some(path) = &out {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if !matches!(extension.as_deref(), Some("png" | "html")) {
            bail!(
                "--out {}: the file must end in .png (heatmaps) or .html (the interactive page)",
                path.display()
            );
        }
    }
    let Shown {
        tokens,
        keys,
        report,
        view,
        maps,
        columns,
        page,
        prediction,
        header,
    } = backend.run(AttentionJob { args })??;
    if let Some(path) = &out {
        let bytes = match page {
            Some(page) => focal::train::plots::attention_page(&page)?.into_bytes(),
            None => {
                focal::train::plots::attention_heatmaps_between(&tokens, &keys, &maps, columns)?
            }
        };
        focal::train::plots::write_picture(path, &bytes)?;
    }
    if json {
        return output::line(serde_json::to_string(&report)?);
    }
    if let Some(header) = header {
        output::line(header)?;
    }
    let width = tokens.iter().map(|t| t.chars().count()).max().unwrap_or(1);
    for (i, (token, row)) in tokens.iter().zip(&view).enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&j| format!("{} {:.3}", keys[j], row[j]))
            .collect();
        output::line(format_args!("{i:>3} {token:<width$}  → {}", top.join(", ")))?;
    }
    if let Some((label, a)) = &prediction {
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by(|&x, &y| {
            a.gradient_input[y]
                .abs()
                .total_cmp(&a.gradient_input[x].abs())
        });
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&i| format!("{} {:+.3}", tokens[i], a.gradient_input[i]))
            .collect();
        output::line(format_args!(
            "predicted \"{label}\" (logit {:.3}); gradient × input, largest: {}",
            a.logit,
            top.join(", ")
        ))?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct HeadsArgs {
    /// A BertForSequenceClassification directory (single-label, pair, multi-label or
    /// regression), e.g. written by `focal train`.
    #[arg(long)]
    model: PathBuf,
    /// Labelled rows (.csv, .tsv, .jsonl) to score the heads on.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    columns: crate::tasks::ColumnArgs,
    /// Also draw the normalised scores into this PNG file (a row per layer, a column per head).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Examples per forward and backward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Longest input in tokens (default: the one the model was trained with, from its
    /// `metrics.json`; else 128).
    #[arg(long)]
    max_length: Option<usize>,
}

struct HeadsJob {
    args: HeadsArgs,
}

impl BackendJob for HeadsJob {
    type Output = Result<focal::train::HeadImportance, focal::train::FineTuneError>;
}

impl<B: FusedAutodiffBackend> RunOn<B> for HeadsJob {
    fn run(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        focal::train::head_importance::<B>(
            &args.model,
            &args.data,
            args.columns.columns().as_ref(),
            args.batch_size,
            args.max_length,
            &device,
        )
    }
}

/// `focal heads`: each attention head's importance (Michel et al. 2019) to a classifier on a
/// labelled file, as a table of layers × heads (normalised per layer), and the order to prune
/// them in.
pub fn heads(backend: BackendKind, args: HeadsArgs, json: bool) -> anyhow::Result<()> {
    crate::tasks::model_and_data(&args.model, &args.data)?;
    if let Some(path) = &args.out
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        bail!("--out {}: the file must end in .png", path.display());
    }
    let out = args.out.clone();
    let scores = backend.run(HeadsJob { args })??;
    if let Some(path) = &out {
        let picture = focal::train::plots::head_importance_chart(
            "head importance (normalised per layer)",
            &scores.normalised,
        )?;
        focal::train::plots::write_picture(path, &picture)?;
    }
    if json {
        return output::line(serde_json::to_string(&scores)?);
    }
    let heads = scores.normalised.first().map_or(0, Vec::len);
    let header: Vec<String> = (0..heads).map(|h| format!("{h:>6}")).collect();
    output::line(format_args!(
        "head importance on {} rows (normalised per layer; columns are heads)\n{:>7} {}",
        scores.rows,
        "layer",
        header.join("")
    ))?;
    for (k, layer) in scores.normalised.iter().enumerate() {
        let cells: Vec<String> = layer.iter().map(|v| format!("{v:>6.3}")).collect();
        output::line(format_args!("{k:>7} {}", cells.join("")))?;
    }
    let mut order: Vec<(usize, usize, f64)> = scores
        .normalised
        .iter()
        .enumerate()
        .flat_map(|(k, layer)| layer.iter().enumerate().map(move |(h, &v)| (k, h, v)))
        .collect();
    order.sort_by(|a, b| a.2.total_cmp(&b.2));
    let least: Vec<String> = order
        .iter()
        .take(5)
        .map(|(k, h, v)| format!("{k}.{h} ({v:.3})"))
        .collect();
    output::line(format_args!(
        "least important first (layer.head): {}",
        least.join(", ")
    ))
}

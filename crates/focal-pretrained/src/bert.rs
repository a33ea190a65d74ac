//! BERT: embeddings, post-norm encoder, pooler, masked-LM head; sentence-transformers pooling.

use crate::PretrainedError;
use crate::hf::{
    check_tied, file, read_config, read_json, read_json_object, read_weights, refuse_switches,
};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use focal_attention::{AttentionMask, FusedAttentionBackend, PytorchImportError};
use focal_blocks::pytorch::{NormWeights, StateDict};
use focal_blocks::{
    Activation, Norm, NormConfig, PositionKind, Positions, StackInput, TokenEmbedding,
    TokenEmbeddingConfig, TransformerLayerConfig, TransformerStack, TransformerStackConfig,
};
use serde::Deserialize;
use std::path::Path;

fn default_act() -> String {
    "gelu".to_string()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_positions() -> String {
    "absolute".to_string()
}

/// BERT's `config.json`, with Hugging Face's field names.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Feed-forward activation: `gelu` (exact), `gelu_new` / `gelu_pytorch_tanh`, `relu`,
    /// `silu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout on the embeddings (after their LayerNorm) and on sublayer outputs (training
    /// only).
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    /// Dropout on the attention probabilities (training only).
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default = "default_positions")]
    pub position_embedding_type: String,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: usize,
    /// A decoder (causal self-attention, transformers' `BertLMHeadModel`): refused, as Focal's
    /// BERT is an encoder (the field is read so that it is not silently dropped).
    #[serde(default)]
    pub is_decoder: bool,
    /// Cross-attention layers to an encoder's output: refused, as `is_decoder`.
    #[serde(default)]
    pub add_cross_attention: bool,
}

/// Hugging Face's activation names.
pub(crate) fn activation(
    name: &str,
    path: &Path,
    option: &str,
) -> Result<Activation, PretrainedError> {
    Ok(match name {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => {
            return Err(PretrainedError::Unsupported {
                path: path.to_path_buf(),
                option: option.to_string(),
                value: format!("\"{other}\""),
            });
        }
    })
}

impl BertConfig {
    fn embedding(&self) -> TokenEmbeddingConfig {
        TokenEmbeddingConfig::new(self.vocab_size, self.hidden_size)
            .with_max_len(self.max_position_embeddings)
            .with_scale_by_sqrt_d(false)
            .with_positions(PositionKind::Learned)
            .with_n_segments(self.type_vocab_size)
            // transformers drops out after the embeddings' LayerNorm (`Bert::embedding_dropout`),
            // not before it.
            .with_dropout(0.0)
    }

    fn encoder(&self, activation: Activation) -> TransformerStackConfig {
        let layer = TransformerLayerConfig::new(
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
        )
        .with_activation(activation)
        .with_norm_eps(self.layer_norm_eps)
        .with_dropout(self.hidden_dropout_prob)
        .with_attention_dropout(Some(self.attention_probs_dropout_prob))
        // BERT's feed-forward has no dropout between its two projections.
        .with_feed_forward_dropout(Some(0.0));
        TransformerStackConfig::encoder(layer, self.num_hidden_layers)
    }

    fn norm(&self) -> NormConfig {
        NormConfig::new(self.hidden_size).with_eps(self.layer_norm_eps)
    }
}

/// The masked-LM head: `dense → activation → LayerNorm → tied decoder + bias`.
#[derive(Module, Debug)]
pub struct MaskedLmHead<B: Backend> {
    /// `cls.predictions.transform.dense`.
    pub transform: Linear<B>,
    /// `cls.predictions.transform.LayerNorm`.
    pub norm: Norm<B>,
    /// `cls.predictions.bias`, `[vocab]`.
    pub bias: Param<Tensor<B, 1>>,
    #[module(skip)]
    activation: Activation,
}

/// BERT (`BertModel`, optionally with its pooler and the masked-LM head of `BertForMaskedLM`).
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    /// Word, position and token-type embeddings.
    pub embedding: TokenEmbedding<B>,
    /// `embeddings.LayerNorm`.
    pub embedding_norm: Norm<B>,
    /// Dropout after the embeddings' LayerNorm (`hidden_dropout_prob`), as transformers'
    /// `BertEmbeddings` places it.
    pub embedding_dropout: Dropout,
    /// The post-norm encoder.
    pub encoder: TransformerStack<B>,
    /// `pooler.dense` (tanh of the first token's state), when the checkpoint has it.
    pub pooler: Option<Linear<B>>,
    /// The masked-LM head, when the checkpoint has it.
    pub mlm: Option<MaskedLmHead<B>>,
    max_len: usize,
    vocab_size: usize,
}

/// Multipliers inside a BERT ([`Bert::forward_scaled`]): with ones the output is unchanged, and
/// the gradient of a loss with respect to each explains it.
#[derive(Clone, Debug)]
pub struct BertScales<B: Backend> {
    /// `[b, l]`, on each token's word embedding: its gradient is gradient × input.
    pub tokens: Option<Tensor<B, 2>>,
    /// `[b, layers, heads]`, on each head (transformers' `head_mask`, per sequence): its
    /// gradient is the head's importance (Michel et al. 2019); 0 removes the head.
    pub heads: Option<Tensor<B, 3>>,
    /// One `[b, heads, l, l]` a layer, on its attention probabilities: its gradient is
    /// `P ⊙ ∂loss/∂P` (attention × gradient, Chefer et al. 2021). Takes the plain path.
    pub probabilities: Option<Vec<Tensor<B, 4>>>,
}

impl<B: Backend> Default for BertScales<B> {
    fn default() -> Self {
        Self {
            tokens: None,
            heads: None,
            probabilities: None,
        }
    }
}

/// What [`Bert::forward`] returns.
#[derive(Clone, Debug)]
pub struct BertOutput<B: Backend> {
    /// `[b, l, d]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `tanh(dense(h[:, 0]))`, `[b, d]`, when the model has a pooler.
    pub pooler_output: Option<Tensor<B, 2>>,
}

impl<B: Backend> Bert<B> {
    /// Reads a Hugging Face BERT directory (`config.json`, `model.safetensors` or
    /// `pytorch_model.bin`).
    ///
    /// Key map (Hugging Face name, with an optional `bert.` prefix → Focal module):
    ///
    /// | Hugging Face | Focal |
    /// |---|---|
    /// | `embeddings.word_embeddings.weight` | `embedding.tokens` |
    /// | `embeddings.position_embeddings.weight` | `embedding.positions` |
    /// | `embeddings.token_type_embeddings.weight` | `embedding.segments` |
    /// | `embeddings.LayerNorm` | `embedding_norm` |
    /// | `encoder.layer.{i}.attention.self.{query,key,value}` | `encoder.layers[i].self_attention` projections (transposed) |
    /// | `encoder.layer.{i}.attention.output.dense` | `encoder.layers[i].self_attention` output projection |
    /// | `encoder.layer.{i}.attention.output.LayerNorm` | `encoder.layers[i].self_attention_residual.norm` |
    /// | `encoder.layer.{i}.intermediate.dense` | `encoder.layers[i].feed_forward.expand` |
    /// | `encoder.layer.{i}.output.dense` | `encoder.layers[i].feed_forward.contract` |
    /// | `encoder.layer.{i}.output.LayerNorm` | `encoder.layers[i].feed_forward_residual.norm` |
    /// | `pooler.dense` | `pooler` |
    /// | `cls.predictions.transform.dense` / `.LayerNorm` | `mlm.transform` / `mlm.norm` |
    /// | `cls.predictions.bias` (and `decoder.bias`, which must equal it) | `mlm.bias` |
    /// | `cls.predictions.decoder.weight` | tied to `embedding.tokens` (must equal it) |
    /// | `embeddings.position_ids` | a buffer of old checkpoints (must be 0, 1, 2, …), not a weight |
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, BertConfig), PretrainedError> {
        let (bert, config, ()) = Self::load_with(dir, device, |_, _| Ok(()))?;
        Ok((bert, config))
    }

    /// [`Bert::load`], with a task head read from the same weights by `head` (given the state
    /// dict and the config); every tensor must be used by the encoder or the head.
    pub(crate) fn load_with<H>(
        dir: &Path,
        device: &B::Device,
        head: impl FnOnce(&StateDict<'_>, &BertConfig) -> Result<H, PytorchImportError>,
    ) -> Result<(Self, BertConfig, H), PretrainedError> {
        Self::load_adjusted(dir, device, |_| {}, head)
    }

    /// [`Self::load_with`], with the config changed by `adjust` after reading (dropout off,
    /// say).
    pub(crate) fn load_adjusted<H>(
        dir: &Path,
        device: &B::Device,
        adjust: impl FnOnce(&mut BertConfig),
        head: impl FnOnce(&StateDict<'_>, &BertConfig) -> Result<H, PytorchImportError>,
    ) -> Result<(Self, BertConfig, H), PretrainedError> {
        let (mut config, config_path): (BertConfig, _) = read_config(dir, "bert")?;
        adjust(&mut config);
        if config.position_embedding_type != "absolute" {
            return Err(PretrainedError::Unsupported {
                path: config_path,
                option: "position_embedding_type".to_string(),
                value: format!("\"{}\"", config.position_embedding_type),
            });
        }
        refuse_switches(
            &config_path,
            &[
                ("is_decoder", config.is_decoder),
                ("add_cross_attention", config.add_cross_attention),
            ],
            " (Focal's BERT is an encoder)",
        )?;
        let act = activation(&config.hidden_act, &config_path, "hidden_act")?;
        let invalid = |cause| PretrainedError::Config {
            path: config_path.clone(),
            cause,
        };
        let mut embedding = config.embedding().try_init::<B>(device).map_err(invalid)?;
        let mut encoder = config.encoder(act).try_init::<B>(device).map_err(invalid)?;

        let (tensors, weights_path) = read_weights(dir)?;
        let state = StateDict::new(&tensors);
        let fill = || -> Result<(Bert<B>, H), PytorchImportError> {
            let p = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
                "bert."
            } else {
                ""
            };
            let (d, v) = (config.hidden_size, config.vocab_size);
            let table = |key: &str, rows: usize| {
                state
                    .tensor::<B, 2>(&format!("{p}embeddings.{key}.weight"), [rows, d], device)
                    .map(Param::from_tensor)
            };
            embedding.tokens.weight = table("word_embeddings", v)?;
            if let Some(Positions::Learned(positions)) = &mut embedding.positions {
                positions.positions.weight =
                    table("position_embeddings", config.max_position_embeddings)?;
            }
            if let Some(segments) = &mut embedding.segments {
                segments.weight = table("token_type_embeddings", config.type_vocab_size)?;
            }
            // Older checkpoints carry the position ids `[1, max_len]` as a buffer: not a
            // weight, but it must be the positions 0, 1, … that the model uses.
            let ids_key = format!("{p}embeddings.position_ids");
            if let Some(data) = tensors.get(&ids_key) {
                let n = data.num_elements();
                let values: Vec<i64> = data.clone().convert::<i64>().to_vec().unwrap_or_default();
                if values.len() != n || values.iter().enumerate().any(|(i, &v)| v != i as i64) {
                    return Err(PytorchImportError::Unsupported(format!(
                        "{ids_key} is not 0, 1, 2, … (custom position ids)"
                    )));
                }
                state.mark_used(&ids_key);
            }
            let embedding_norm = state.layer_norm(
                &format!("{p}embeddings.LayerNorm"),
                config.norm().init(device),
                d,
            )?;
            let attention_config = config.encoder(act).layer.self_attention();
            for (i, layer) in encoder.layers.iter_mut().enumerate() {
                let key = |name: &str| format!("{p}encoder.layer.{i}.{name}");
                let linear = |name: &str, dims| state.linear::<B>(&key(name), dims, device);
                layer.self_attention = focal_attention::MultiHeadAttention::from_projections(
                    &attention_config,
                    [
                        linear("attention.self.query", [d, d])?,
                        linear("attention.self.key", [d, d])?,
                        linear("attention.self.value", [d, d])?,
                        linear("attention.output.dense", [d, d])?,
                    ],
                    device,
                )?;
                let ff = config.intermediate_size;
                layer.feed_forward.expand = linear("intermediate.dense", [d, ff])?;
                layer.feed_forward.contract = linear("output.dense", [ff, d])?;
                let norm = layer.self_attention_residual.norm.clone();
                layer.self_attention_residual.norm =
                    state.layer_norm(&key("attention.output.LayerNorm"), norm, d)?;
                let norm = layer.feed_forward_residual.norm.clone();
                layer.feed_forward_residual.norm =
                    state.layer_norm(&key("output.LayerNorm"), norm, d)?;
            }
            let pooler = if tensors.contains_key(&format!("{p}pooler.dense.weight")) {
                Some(state.linear::<B>(&format!("{p}pooler.dense"), [d, d], device)?)
            } else {
                None
            };
            let mlm = if tensors.contains_key("cls.predictions.bias") {
                let head = "cls.predictions";
                let bias = state.tensor::<B, 1>(&format!("{head}.bias"), [v], device)?;
                let decoder_bias = format!("{head}.decoder.bias");
                if tensors.contains_key(&decoder_bias) {
                    // transformers ties `decoder.bias` to `cls.predictions.bias`.
                    check_tied(&state, &decoder_bias, bias.clone(), "an untied MLM bias")?;
                }
                let decoder = format!("{head}.decoder.weight");
                if tensors.contains_key(&decoder) {
                    let words = embedding.tokens.weight.val();
                    check_tied(&state, &decoder, words, "an untied MLM decoder")?;
                }
                Some(MaskedLmHead {
                    transform: state.linear::<B>(
                        &format!("{head}.transform.dense"),
                        [d, d],
                        device,
                    )?,
                    norm: state.layer_norm(
                        &format!("{head}.transform.LayerNorm"),
                        config.norm().init(device),
                        d,
                    )?,
                    bias: Param::from_tensor(bias),
                    activation: act,
                })
            } else {
                None
            };
            // The next-sentence head of BERT's pre-training (`BertForPreTraining`, as the
            // original checkpoints and many uploads carry it): no model of Focal's uses it, as
            // none of transformers' but `BertForPreTraining` and `BertForNextSentencePrediction`
            // does. Its shapes are checked and it is passed over, said once as transformers
            // warns of unused weights.
            let next_sentence = "cls.seq_relationship";
            if tensors.contains_key(&format!("{next_sentence}.weight")) {
                state.linear::<B>(next_sentence, [d, 2], device)?;
                tracing::warn!(
                    "{}: the next-sentence prediction head ({next_sentence}.weight, .bias) is not \
                     used",
                    weights_path.display()
                );
            }
            let head = head(&state, &config)?;
            let bert = Bert {
                embedding,
                embedding_norm,
                embedding_dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
                encoder,
                pooler,
                mlm,
                max_len: config.max_position_embeddings,
                vocab_size: config.vocab_size,
            };
            Ok((bert, head))
        };
        let tensors_error = |cause| PretrainedError::Tensors {
            path: weights_path.clone(),
            cause,
        };
        let (model, head) = fill().map_err(tensors_error)?;
        state.finish().map_err(tensors_error)?;
        Ok((model, config, head))
    }

    /// The longest sequence the model takes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Rows of the word-embedding table: every token id must be below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

impl<B: FusedAttentionBackend> Bert<B> {
    /// The encoder over token ids.
    ///
    /// # Shapes
    ///
    /// - ids, token types `[b, l]`, valid `[b, l]` (`true` = real token, not padding)
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        token_types: Tensor<B, 2, Int>,
        valid: Tensor<B, 2, Bool>,
    ) -> BertOutput<B> {
        self.run(ids, token_types, valid, false, BertScales::default())
            .0
    }

    /// [`Self::forward`] with the multipliers of `scales` (token embeddings, heads,
    /// probabilities); with ones the output is unchanged and their gradients explain it.
    pub fn forward_scaled(
        &self,
        ids: Tensor<B, 2, Int>,
        token_types: Tensor<B, 2, Int>,
        valid: Tensor<B, 2, Bool>,
        scales: BertScales<B>,
    ) -> BertOutput<B> {
        self.run(ids, token_types, valid, false, scales).0
    }

    /// [`Self::forward`], and each layer's attention probabilities `[b, heads, l, l]` (rows the
    /// query positions, columns the key positions; padded keys get 0), first layer first: what
    /// transformers returns with `output_attentions=True`. This takes the plain attention path,
    /// which materialises them.
    pub fn forward_with_attentions(
        &self,
        ids: Tensor<B, 2, Int>,
        token_types: Tensor<B, 2, Int>,
        valid: Tensor<B, 2, Bool>,
    ) -> (BertOutput<B>, Vec<Tensor<B, 4>>) {
        let (output, attentions) = self.run(ids, token_types, valid, true, BertScales::default());
        (output, attentions.unwrap_or_default())
    }

    fn run(
        &self,
        ids: Tensor<B, 2, Int>,
        token_types: Tensor<B, 2, Int>,
        valid: Tensor<B, 2, Bool>,
        attentions: bool,
        scales: BertScales<B>,
    ) -> (BertOutput<B>, Option<Vec<Tensor<B, 4>>>) {
        let x = match scales.tokens {
            Some(scale) => self
                .embedding
                .forward_scaled(ids, Some(token_types), 0, scale),
            None => self.embedding.forward_with_segments(ids, token_types, 0),
        };
        let x = self
            .embedding_dropout
            .forward(self.embedding_norm.forward(x));
        let mut input = StackInput::new(x)
            .mask(AttentionMask::key_padding(valid))
            .output_attentions(attentions);
        if let Some(heads) = scales.heads {
            input = input.head_mask(heads);
        }
        if let Some(probabilities) = scales.probabilities {
            input = input.probability_scales(probabilities);
        }
        let out = self.encoder.forward(input);
        let h = out.hidden;
        let pooler_output = self.pooler.as_ref().map(|pooler| {
            let [b, _, d] = h.dims();
            let first = h.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
            focal_attention::project(pooler, first).tanh()
        });
        (
            BertOutput {
                last_hidden_state: h,
                pooler_output,
            },
            out.self_attentions,
        )
    }

    /// Masked-LM logits `[b, l, vocab]` from the encoder's output.
    ///
    /// # Panics
    ///
    /// When the checkpoint had no masked-LM head.
    pub fn mlm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let head = self
            .mlm
            .as_ref()
            .expect("this BERT checkpoint has no masked-LM head (cls.predictions)");
        let t = head.norm.forward(focal_attention::project_activated(
            &head.transform,
            hidden,
            head.activation,
        ));
        self.embedding.logits(t) + head.bias.val().unsqueeze::<3>()
    }
}

/// How a sentence-transformers model pools token states into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real tokens.
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            other => Err(format!(
                "unknown pooling '{other}': expected mean, cls or max"
            )),
        }
    }
}

/// A BERT with the pooling (and normalisation) of a sentence-transformers directory.
#[derive(Debug)]
pub struct SentenceEmbedder<B: Backend> {
    /// The encoder.
    pub bert: Bert<B>,
    /// The pooling.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised.
    pub normalize: bool,
    /// Longest input in tokens: `sentence_bert_config.json`'s `max_seq_length` when present,
    /// else the model's.
    pub max_len: usize,
    /// The padding token's id (`pad_token_id` of `config.json`).
    pub pad_id: u32,
    /// Whether texts are lowercased before tokenising (`sentence_bert_config.json`'s
    /// `do_lower_case`, which sentence-transformers applies with Python's `str.lower`
    /// whatever the tokenizer does).
    pub lowercase: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

/// The modules of a sentence-transformers pipeline Focal runs; any other is refused.
const TRANSFORMER_MODULE: &str = "sentence_transformers.models.Transformer";
const POOLING_MODULE: &str = "sentence_transformers.models.Pooling";
const NORMALIZE_MODULE: &str = "sentence_transformers.models.Normalize";

impl<B: Backend> SentenceEmbedder<B> {
    /// Reads a sentence-transformers directory: the BERT at its root, the pooling of the
    /// `Pooling` module listed in `modules.json` (its `config.json`), and whether a `Normalize`
    /// module follows. A plain BERT directory (no `modules.json`) gets mean pooling and no
    /// normalisation.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, PretrainedError> {
        let (bert, bert_config) = Bert::load(dir, device)?;
        let mut max_len = bert.max_len();
        let mut lowercase = false;
        let sbert_path = dir.join("sentence_bert_config.json");
        if sbert_path.is_file() {
            let config: SentenceBertConfig = read_json_object(&sbert_path)?;
            lowercase = config.do_lower_case;
            if let Some(length) = config.max_seq_length {
                // [CLS] and [SEP] take two positions; below that the tokenizer cannot
                // truncate at all.
                if length < 2 {
                    return Err(PretrainedError::Unsupported {
                        path: sbert_path,
                        option: "max_seq_length".to_string(),
                        value: format!("{length} (at least 2: [CLS] and [SEP])"),
                    });
                }
                // The model's positions bound it whatever the file says.
                max_len = length.min(max_len);
            }
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(Self {
                bert,
                pooling: Pooling::Mean,
                normalize: false,
                max_len,
                pad_id: bert_config.pad_token_id as u32,
                lowercase,
            });
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let mut pooling = Pooling::Mean;
        let mut normalize = false;
        for module in &modules {
            if module.kind == POOLING_MODULE {
                let path = file(
                    &dir.join(&module.path),
                    "config.json",
                    "the pooling config.json",
                )?;
                let config: PoolingConfig = read_json_object(&path)?;
                let unsupported = |option: &str, value: String| PretrainedError::Unsupported {
                    path: path.clone(),
                    option: option.to_string(),
                    value,
                };
                if let Some(width) = config.word_embedding_dimension
                    && width != bert_config.hidden_size
                {
                    return Err(unsupported(
                        "word_embedding_dimension",
                        format!(
                            "{width} (the model's hidden_size is {})",
                            bert_config.hidden_size
                        ),
                    ));
                }
                for (option, on) in [
                    (
                        "pooling_mode_mean_sqrt_len_tokens",
                        config.pooling_mode_mean_sqrt_len_tokens,
                    ),
                    (
                        "pooling_mode_weightedmean_tokens",
                        config.pooling_mode_weightedmean_tokens,
                    ),
                    ("pooling_mode_lasttoken", config.pooling_mode_lasttoken),
                ] {
                    if on {
                        return Err(unsupported(
                            option,
                            "true (Focal pools by mean, cls or max)".to_string(),
                        ));
                    }
                }
                pooling = match (
                    config.pooling_mode_mean_tokens,
                    config.pooling_mode_cls_token,
                    config.pooling_mode_max_tokens,
                ) {
                    (true, false, false) => Pooling::Mean,
                    (false, true, false) => Pooling::Cls,
                    (false, false, true) => Pooling::Max,
                    _ => {
                        return Err(PretrainedError::Unsupported {
                            path,
                            option: "pooling modes".to_string(),
                            value: "a combination other than exactly one of mean / cls / max"
                                .to_string(),
                        });
                    }
                };
            } else if module.kind == NORMALIZE_MODULE {
                normalize = true;
            } else if module.kind != TRANSFORMER_MODULE {
                // A Dense projection, a LayerNorm, word embeddings… would change every
                // embedding; skipping one would be a silent wrong answer.
                return Err(PretrainedError::Unsupported {
                    path: modules_path.clone(),
                    option: "module".to_string(),
                    value: format!(
                        "{} at '{}' (Focal runs {TRANSFORMER_MODULE}, {POOLING_MODULE} and {NORMALIZE_MODULE})",
                        module.kind, module.path
                    ),
                });
            }
        }
        Ok(Self {
            bert,
            pooling,
            normalize,
            max_len,
            pad_id: bert_config.pad_token_id as u32,
            lowercase,
        })
    }

    /// The texts as the tokenizer is to see them: lowercased when the directory says
    /// `do_lower_case` (sentence-transformers' `Transformer` module), else as they are.
    pub fn prepare<'a>(&self, texts: &'a [String]) -> std::borrow::Cow<'a, [String]> {
        if self.lowercase {
            std::borrow::Cow::Owned(texts.iter().map(|t| t.to_lowercase()).collect())
        } else {
            std::borrow::Cow::Borrowed(texts)
        }
    }
}

impl<B: FusedAttentionBackend> SentenceEmbedder<B> {
    /// Sentence embeddings `[b, d]`.
    ///
    /// # Shapes
    ///
    /// - ids, token types, valid `[b, l]`
    pub fn embed(
        &self,
        ids: Tensor<B, 2, Int>,
        token_types: Tensor<B, 2, Int>,
        valid: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 2> {
        let h = self
            .bert
            .forward(ids, token_types, valid.clone())
            .last_hidden_state; // [b, l, d]
        let [b, l, d] = h.dims();
        let pooled = match self.pooling {
            Pooling::Cls => h.slice([0..b, 0..1, 0..d]).reshape([b, d]),
            Pooling::Mean => focal_backend::math::masked_mean(h, valid),
            Pooling::Max => {
                // Padding gets -1e9 so it never wins (sentence-transformers' rule).
                let padding = valid.bool_not().reshape([b, l, 1]).expand([b, l, d]);
                h.mask_fill(padding, -1e9).max_dim(1).reshape([b, d])
            }
        };
        if self.normalize {
            focal_backend::math::l2_normalize(pooled)
        } else {
            pooled
        }
    }
}

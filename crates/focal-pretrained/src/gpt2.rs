//! GPT-2: learned positions, pre-norm decoder-only blocks, final LayerNorm, tied LM head.

use crate::PretrainedError;
use crate::bert::activation;
use crate::hf::{check_tied, read_config, read_weights, refuse_switches};
use crate::tasks::{Saved, linear_tensors, norm_tensors, values, write_model_dir};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Int, Tensor, backend::Backend};
use focal_attention::{
    FusedAttentionBackend, MultiHeadAttention, PytorchImportError, store_out_in,
};
use focal_blocks::pytorch::{NormWeights, StateDict, WeightLayout};
use focal_blocks::{
    NormPlacement, PositionKind, Positions, StackCache, StackInput, TokenEmbedding,
    TokenEmbeddingConfig, TransformerLayerConfig, TransformerStack, TransformerStackConfig,
};
use focal_heads::CausalLm;
use serde::Deserialize;
use std::path::Path;

fn default_act() -> String {
    "gelu_new".to_string()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

/// GPT-2's `config.json`, with Hugging Face's field names.
#[derive(Clone, Debug, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence.
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Feed-forward width (default `4 · n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Activation (default `gelu_new`, the tanh approximation).
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// Dropout on sublayer outputs (training only).
    #[serde(default)]
    pub resid_pdrop: f64,
    /// Dropout on the attention probabilities (training only).
    #[serde(default)]
    pub attn_pdrop: f64,
    /// Dropout on the embeddings, token and position summed (training only).
    #[serde(default)]
    pub embd_pdrop: f64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// End-of-text token, the default stop token.
    #[serde(default)]
    pub eos_token_id: Option<usize>,
    /// Whether the scores are scaled by `1 / sqrt(d_h)` (default true); false leaves them
    /// unscaled.
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Must be false (Mistral-style per-layer scaling is not implemented).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Must be false.
    #[serde(default)]
    pub add_cross_attention: bool,
}

impl Gpt2Config {
    fn d_ff(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

/// GPT-2 (`GPT2LMHeadModel`): a decoder-only stack with a tied LM head.
#[derive(Module, Debug)]
pub struct Gpt2<B: Backend> {
    /// Token (`wte`) and position (`wpe`) embeddings; its table is also the LM head.
    pub embedding: TokenEmbedding<B>,
    /// The pre-norm decoder-only stack with `ln_f` as its final norm.
    pub decoder: TransformerStack<B>,
    max_len: usize,
}

impl<B: Backend> Gpt2<B> {
    /// Reads a Hugging Face GPT-2 directory.
    ///
    /// Key map (Hugging Face name, with an optional `transformer.` prefix → Focal module). GPT-2
    /// stores its projections as `Conv1D`, `[in, out]`, so nothing is transposed; `c_attn`
    /// packs query, key and value along its output columns and is split.
    ///
    /// | Hugging Face | Focal |
    /// |---|---|
    /// | `wte.weight` | `embedding.tokens` (and the tied LM head) |
    /// | `wpe.weight` | `embedding.positions` |
    /// | `h.{i}.ln_1` | `decoder.layers[i].self_attention_residual.norm` |
    /// | `h.{i}.attn.c_attn` (`[d, 3d]`) | `decoder.layers[i].self_attention` query / key / value |
    /// | `h.{i}.attn.c_proj` | `decoder.layers[i].self_attention` output projection |
    /// | `h.{i}.ln_2` | `decoder.layers[i].feed_forward_residual.norm` |
    /// | `h.{i}.mlp.c_fc` / `h.{i}.mlp.c_proj` | `decoder.layers[i].feed_forward.expand` / `.contract` |
    /// | `ln_f` | `decoder.final_norm` |
    /// | `lm_head.weight` | tied to `wte` (must equal it) |
    /// | `h.{i}.attn.bias` | causal-mask buffer of old checkpoints: checked to be the lower-triangular mask, `[1, 1, n, n]` |
    /// | `h.{i}.attn.masked_bias` | fill value of old checkpoints for masked scores: checked to be one value of at most -1e4 (0-d in real checkpoints, any shape of one element accepted) |
    ///
    /// `scale_attn_weights: false` in `config.json` leaves the scores unscaled (scale 1).
    pub fn load(dir: &Path, device: &B::Device) -> Result<(Self, Gpt2Config), PretrainedError> {
        let (config, config_path): (Gpt2Config, _) = read_config(dir, "gpt2")?;
        refuse_switches(
            &config_path,
            &[
                (
                    "scale_attn_by_inverse_layer_idx",
                    config.scale_attn_by_inverse_layer_idx,
                ),
                ("add_cross_attention", config.add_cross_attention),
            ],
            "",
        )?;
        let act = activation(
            &config.activation_function,
            &config_path,
            "activation_function",
        )?;
        let (d, v, ff) = (config.n_embd, config.vocab_size, config.d_ff());
        let layer = TransformerLayerConfig::new(d, config.n_head, ff)
            .with_activation(act)
            .with_norm(NormPlacement::Pre)
            .with_norm_eps(config.layer_norm_epsilon)
            .with_dropout(config.resid_pdrop)
            .with_attention_dropout(Some(config.attn_pdrop))
            // GPT-2's MLP has no dropout between its two projections.
            .with_feed_forward_dropout(Some(0.0))
            .with_attention_scale((!config.scale_attn_weights).then_some(1.0));
        let stack = TransformerStackConfig::decoder_only(layer.clone(), config.n_layer)
            .with_final_norm(true);
        let invalid = |cause| PretrainedError::Config {
            path: config_path.clone(),
            cause,
        };
        let mut embedding = TokenEmbeddingConfig::new(v, d)
            .with_max_len(config.n_positions)
            .with_scale_by_sqrt_d(false)
            .with_positions(PositionKind::Learned)
            .with_dropout(config.embd_pdrop)
            .try_init::<B>(device)
            .map_err(invalid)?;
        let mut decoder = stack.try_init::<B>(device).map_err(invalid)?;

        let (tensors, weights_path) = read_weights(dir)?;
        let state = StateDict::new(&tensors);
        let mut fill = || -> Result<(), PytorchImportError> {
            let p = if tensors.contains_key("transformer.wte.weight") {
                "transformer."
            } else {
                ""
            };
            embedding.tokens.weight =
                Param::from_tensor(state.tensor(&format!("{p}wte.weight"), [v, d], device)?);
            if let Some(Positions::Learned(positions)) = &mut embedding.positions {
                positions.positions.weight = Param::from_tensor(state.tensor(
                    &format!("{p}wpe.weight"),
                    [config.n_positions, d],
                    device,
                )?);
            }
            let attention = layer.self_attention();
            // Conv1D weights are `[in, out]`; each is stored `[out, in]` for the CPU kernel's
            // single-row products (see `store_out_in`), values unchanged. Parameters made from
            // a layout change or a slice are detached: on an autodiff backend they must be
            // leaves to be trained.
            let conv = |key: String, dims| {
                let linear =
                    state.linear_with::<B>(&key, dims, WeightLayout::InOut, true, device)?;
                Ok::<_, PytorchImportError>(Linear {
                    weight: Param::from_tensor(store_out_in(linear.weight.val()).detach()),
                    bias: linear.bias,
                })
            };
            for (i, block) in decoder.layers.iter_mut().enumerate() {
                let key = |name: &str| format!("{p}h.{i}.{name}");
                check_buffers(&state, &tensors, &key)?;
                let packed = conv(key("attn.c_attn"), [d, 3 * d])?;
                let weight = packed.weight.val(); // [d, 3d]
                let bias = packed.bias.expect("loaded with a bias").val(); // [3d]
                // `weight` is stored `[3d, d]`, so each part's rows are one contiguous block,
                // read in place.
                let part = |j: usize| Linear {
                    weight: Param::from_tensor(weight.clone().narrow(1, j * d, d).detach()),
                    bias: Some(Param::from_tensor(
                        bias.clone().narrow(0, j * d, d).detach(),
                    )),
                };
                block.self_attention = MultiHeadAttention::from_projections(
                    &attention,
                    [part(0), part(1), part(2), conv(key("attn.c_proj"), [d, d])?],
                    device,
                )?;
                block.feed_forward.expand = conv(key("mlp.c_fc"), [d, ff])?;
                block.feed_forward.contract = conv(key("mlp.c_proj"), [ff, d])?;
                let norm = block.self_attention_residual.norm.clone();
                block.self_attention_residual.norm = state.layer_norm(&key("ln_1"), norm, d)?;
                let norm = block.feed_forward_residual.norm.clone();
                block.feed_forward_residual.norm = state.layer_norm(&key("ln_2"), norm, d)?;
            }
            let norm = decoder.final_norm.take().expect("built with a final norm");
            decoder.final_norm = Some(state.layer_norm(&format!("{p}ln_f"), norm, d)?);
            if tensors.contains_key("lm_head.weight") {
                let words = embedding.tokens.weight.val();
                check_tied(&state, "lm_head.weight", words, "an untied LM head")?;
            }
            Ok(())
        };
        let tensors_error = |cause| PretrainedError::Tensors {
            path: weights_path.clone(),
            cause,
        };
        fill().map_err(tensors_error)?;
        state.finish().map_err(tensors_error)?;
        Ok((
            Gpt2 {
                embedding,
                decoder,
                max_len: config.n_positions,
            },
            config,
        ))
    }
}

impl<B: Backend> Gpt2<B> {
    /// The longest sequence the model takes (`n_positions`).
    pub fn positions(&self) -> usize {
        self.max_len
    }

    /// The tensors under transformers' `GPT2LMHeadModel` names (`transformer.` prefix,
    /// `Conv1D` layout `[in, out]`, query / key / value packed into `c_attn`): the inverse of
    /// [`Gpt2::load`]'s key map. The LM head is tied to `wte` and not stored, as transformers
    /// saves it.
    fn hf_tensors(&self) -> Vec<Saved> {
        let p = "transformer";
        let mut out = vec![values(
            format!("{p}.wte.weight"),
            self.embedding.tokens.weight.val(),
        )];
        if let Some(Positions::Learned(positions)) = &self.embedding.positions {
            out.push(values(
                format!("{p}.wpe.weight"),
                positions.positions.weight.val(),
            ));
        }
        for (i, block) in self.decoder.layers.iter().enumerate() {
            let key = |name: &str| format!("{p}.h.{i}.{name}");
            let [q, k, v, o] = block.self_attention.projections();
            out.push(values(
                key("attn.c_attn.weight"),
                Tensor::cat(vec![q.weight.val(), k.weight.val(), v.weight.val()], 1),
            ));
            let biases: Option<Vec<_>> = [q, k, v]
                .iter()
                .map(|l| l.bias.as_ref().map(|b| b.val()))
                .collect();
            if let Some(biases) = biases {
                out.push(values(key("attn.c_attn.bias"), Tensor::cat(biases, 0)));
            }
            out.extend(linear_tensors(&key("attn.c_proj"), o, WeightLayout::InOut));
            out.extend(linear_tensors(
                &key("mlp.c_fc"),
                &block.feed_forward.expand,
                WeightLayout::InOut,
            ));
            out.extend(linear_tensors(
                &key("mlp.c_proj"),
                &block.feed_forward.contract,
                WeightLayout::InOut,
            ));
            out.extend(norm_tensors(
                &key("ln_1"),
                &block.self_attention_residual.norm,
            ));
            out.extend(norm_tensors(
                &key("ln_2"),
                &block.feed_forward_residual.norm,
            ));
        }
        if let Some(norm) = &self.decoder.final_norm {
            out.extend(norm_tensors(&format!("{p}.ln_f"), norm));
        }
        out
    }

    /// Saves the model as a Hugging Face `GPT2LMHeadModel` directory that transformers'
    /// `AutoModelForCausalLM.from_pretrained` and [`Gpt2::load`] read: `source`'s
    /// `config.json` (the model it was loaded from: the sizes are unchanged), the weights under
    /// transformers' names, `source`'s tokenizer and generation files, and `extra` files; as a
    /// whole, atomically.
    pub fn save_pretrained_with(
        &self,
        dir: &Path,
        source: &Path,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<(), PretrainedError> {
        let config_path = source.join("config.json");
        let config = std::fs::read(&config_path).map_err(|cause| PretrainedError::Io {
            path: config_path,
            cause,
        })?;
        write_model_dir(dir, source, &config, self.hf_tensors(), extra)
    }
}

/// Checks the attention buffers old GPT-2 checkpoints carry for layer `key("")` and records
/// them as used: `attn.bias` must be the causal (lower-triangular, ones and zeros) mask
/// `[1, 1, n, n]` that Focal's causal attention applies, and `attn.masked_bias` one value of at
/// most -1e4 (the fill value for masked scores, whose softmax weight is then 0 in f32).
fn check_buffers(
    state: &StateDict<'_>,
    tensors: &std::collections::HashMap<String, burn::tensor::TensorData>,
    key: &dyn Fn(&str) -> String,
) -> Result<(), PytorchImportError> {
    let values = |data: &burn::tensor::TensorData| -> Vec<f32> {
        data.clone()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default()
    };
    let bias_key = key("attn.bias");
    if let Some(data) = tensors.get(&bias_key) {
        let n = match data.shape.as_slice() {
            &[1, 1, n, m] if n == m => n,
            shape => {
                return Err(PytorchImportError::Shape {
                    key: bias_key,
                    expected: vec![1, 1, 0, 0],
                    found: shape.to_vec(),
                });
            }
        };
        let mask = values(data);
        if let Some(at) =
            (0..n * n).find(|&at| mask.get(at) != Some(&f32::from(u8::from(at % n <= at / n))))
        {
            return Err(PytorchImportError::Unsupported(format!(
                "{bias_key} is not the causal mask GPT-2 applies: entry [{}, {}] is {:?}",
                at / n,
                at % n,
                mask.get(at)
            )));
        }
        state.mark_used(&bias_key);
    }
    let masked_key = key("attn.masked_bias");
    if let Some(data) = tensors.get(&masked_key) {
        match values(data).as_slice() {
            &[fill] if fill <= -1e4 => state.mark_used(&masked_key),
            found => {
                return Err(PytorchImportError::Unsupported(format!(
                    "{masked_key} must be one value of at most -1e4 (the fill for masked scores), found {found:?} with shape {:?}",
                    data.shape.as_slice()
                )));
            }
        }
    }
    Ok(())
}

impl<B: FusedAttentionBackend> Gpt2<B> {
    /// Logits `[b, l, vocab]` of a whole sequence of ids `[b, l]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.embedding.forward(ids, 0);
        self.embedding
            .logits(self.decoder.forward(StackInput::new(x)).hidden)
    }

    /// Each layer's attention probabilities `[b, heads, l, l]` over a whole sequence of ids
    /// `[b, l]` (rows the query positions, columns the key positions; later keys get 0), first
    /// layer first: what transformers returns with `output_attentions=True`.
    pub fn attentions(&self, ids: Tensor<B, 2, Int>) -> Vec<Tensor<B, 4>> {
        let x = self.embedding.forward(ids, 0);
        self.decoder
            .forward(StackInput::new(x).output_attentions(true))
            .self_attentions
            .unwrap_or_default()
    }
}

impl<B: FusedAttentionBackend> CausalLm<B> for Gpt2<B> {
    type Cache = StackCache<B>;

    fn new_cache(&self, batch: usize, capacity: usize, device: &B::Device) -> StackCache<B> {
        self.decoder.new_cache(batch, capacity, None, device)
    }

    fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut StackCache<B>) -> Tensor<B, 3> {
        let x = self.embedding.forward(ids, cache.position());
        let h = self
            .decoder
            .forward_cached(StackInput::new(x), cache)
            .hidden;
        self.embedding.logits(h)
    }

    fn select_cache_rows(&self, cache: &mut StackCache<B>, rows: &[usize]) {
        cache.select_batch(rows);
    }

    fn max_len(&self) -> usize {
        self.max_len
    }
}

//! An encoder-decoder Transformer for sequence-to-sequence tasks.

use crate::{CausalLm, SpecialTokens};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use focal_attention::{AttentionMask, FusedAttentionBackend};
use focal_backend::ConfigError;
use focal_blocks::{
    Activation, NormPlacement, StackInput, TokenEmbedding, TokenEmbeddingConfig, Transformer,
    TransformerConfig, TransformerLayerConfig, TransformerStackConfig,
};

/// Configuration of [`Seq2SeqTransformer`].
#[derive(Config, Debug)]
pub struct Seq2SeqConfig {
    /// Source vocabulary size.
    pub src_vocab_size: usize,
    /// Target vocabulary size (the width of the output logits).
    pub tgt_vocab_size: usize,
    /// Model width `d`. Default 128.
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads; must divide `d_model`. Default 4.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder layers. Default 2.
    #[config(default = 2)]
    pub n_encoder_layers: usize,
    /// Decoder layers. Default 2.
    #[config(default = 2)]
    pub n_decoder_layers: usize,
    /// Feed-forward hidden width. Default 512.
    #[config(default = 512)]
    pub d_ff: usize,
    /// Dropout everywhere (embeddings, attention probabilities, sublayers). Default 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Feed-forward activation. Default ReLU.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Pre- or post-norm; pre-norm adds a final norm to both stacks. Default post-norm.
    #[config(default = "NormPlacement::Post")]
    pub norm: NormPlacement,
    /// Longest source or target sequence (in tokens, `<bos>` included). Default 128.
    #[config(default = 128)]
    pub max_len: usize,
}

impl Seq2SeqConfig {
    fn layer(&self) -> TransformerLayerConfig {
        TransformerLayerConfig::new(self.d_model, self.n_heads, self.d_ff)
            .with_dropout(self.dropout)
            .with_activation(self.activation)
            .with_norm(self.norm)
    }

    fn embedding(&self, vocab_size: usize) -> TokenEmbeddingConfig {
        TokenEmbeddingConfig::new(vocab_size, self.d_model)
            .with_max_len(self.max_len)
            .with_dropout(self.dropout)
    }

    fn transformer(&self) -> TransformerConfig {
        let pre_norm = self.norm == NormPlacement::Pre;
        TransformerConfig::new(
            TransformerStackConfig::encoder(self.layer(), self.n_encoder_layers)
                .with_final_norm(pre_norm),
            TransformerStackConfig::decoder(self.layer(), self.d_model, self.n_decoder_layers)
                .with_final_norm(pre_norm),
        )
    }

    /// Checks the configuration; the error names the offending values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.embedding(self.src_vocab_size).validate()?;
        self.embedding(self.tgt_vocab_size).validate()?;
        self.transformer().validate()
    }

    /// Builds the model, or says which value is wrong.
    pub fn try_init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Seq2SeqTransformer<B>, ConfigError> {
        self.validate()?;
        Ok(Seq2SeqTransformer {
            source_embedding: self.embedding(self.src_vocab_size).init(device),
            target_embedding: self.embedding(self.tgt_vocab_size).init(device),
            transformer: self.transformer().init(device),
            generator: LinearConfig::new(self.d_model, self.tgt_vocab_size).init(device),
            max_len: self.max_len,
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Seq2SeqTransformer<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The attention probabilities of [`Seq2SeqTransformer::attentions`], one tensor a layer.
#[derive(Clone, Debug)]
pub struct Seq2SeqAttentions<B: Backend> {
    /// The encoder's self-attention `[b, h, s, s]`.
    pub encoder: Vec<Tensor<B, 4>>,
    /// The decoder's causal self-attention `[b, h, l, l]`.
    pub decoder: Vec<Tensor<B, 4>>,
    /// The decoder's attention to the source `[b, h, l, s]`.
    pub cross: Vec<Tensor<B, 4>>,
}

/// An encoder-decoder Transformer: source tokens are encoded once; the decoder predicts each
/// target token from the previous ones (causal self-attention) and the encoded source
/// (cross-attention, with the source's padding masked).
#[derive(Module, Debug)]
pub struct Seq2SeqTransformer<B: Backend> {
    source_embedding: TokenEmbedding<B>,
    target_embedding: TokenEmbedding<B>,
    transformer: Transformer<B>,
    generator: Linear<B>,
    max_len: usize,
}

impl<B: FusedAttentionBackend> Seq2SeqTransformer<B> {
    /// The longest source or target sequence the model accepts.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Encodes the source.
    ///
    /// # Shapes
    ///
    /// - src `[b, s]` ids, src_valid `[b, s]` (`true` = real token) → memory `[b, s, d]`
    pub fn encode(&self, src: Tensor<B, 2, Int>, src_valid: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let x = self.source_embedding.forward(src, 0); // [b, s, d]
        self.transformer
            .encode(StackInput::new(x).mask(AttentionMask::key_padding(src_valid)))
            .hidden
    }

    /// Predicts the next target token at every position.
    ///
    /// # Shapes
    ///
    /// - tgt `[b, l]` ids (starting with `<bos>`), memory `[b, s, d]`, src_valid `[b, s]`
    /// - logits `[b, l, V]`
    pub fn decode(
        &self,
        tgt: Tensor<B, 2, Int>,
        memory: Tensor<B, 3>,
        src_valid: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        let y = self.target_embedding.forward(tgt, 0); // [b, l, d]
        let y = self.transformer.decode(
            StackInput::new(y)
                .memory(memory)
                .memory_mask(AttentionMask::key_padding(src_valid)),
        );
        focal_attention::project(&self.generator, y.hidden)
    }

    /// Every attention of a teacher-forced pass over `tgt`: the encoder's self-attention, the
    /// decoder's (causal) self-attention and its cross-attention to the source, each a list of
    /// one tensor a layer, first layer first.
    ///
    /// # Shapes
    ///
    /// - src `[b, s]`, src_valid `[b, s]`, tgt `[b, l]` (starting with `<bos>`)
    /// - encoder `[b, h, s, s]`, decoder `[b, h, l, l]`, cross `[b, h, l, s]`
    pub fn attentions(
        &self,
        src: Tensor<B, 2, Int>,
        src_valid: Tensor<B, 2, Bool>,
        tgt: Tensor<B, 2, Int>,
    ) -> Seq2SeqAttentions<B> {
        let x = self.source_embedding.forward(src, 0);
        let encoded = self.transformer.encode(
            StackInput::new(x)
                .mask(AttentionMask::key_padding(src_valid.clone()))
                .output_attentions(true),
        );
        let y = self.target_embedding.forward(tgt, 0);
        let decoded = self.transformer.decode(
            StackInput::new(y)
                .memory(encoded.hidden)
                .memory_mask(AttentionMask::key_padding(src_valid))
                .output_attentions(true),
        );
        Seq2SeqAttentions {
            encoder: encoded.self_attentions.unwrap_or_default(),
            decoder: decoded.self_attentions.unwrap_or_default(),
            cross: decoded.cross_attentions.unwrap_or_default(),
        }
    }

    /// Teacher-forced forward pass: logits for every target position.
    ///
    /// # Shapes
    ///
    /// - src `[b, s]`, src_valid `[b, s]`, tgt_in `[b, l]` → logits `[b, l, V]`
    pub fn forward(
        &self,
        src: Tensor<B, 2, Int>,
        src_valid: Tensor<B, 2, Bool>,
        tgt_in: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let memory = self.encode(src, src_valid.clone());
        self.decode(tgt_in, memory, src_valid)
    }

    /// Greedy decoding of a batch: starts from `<bos>` and appends the most likely token until
    /// every sequence has produced `<eos>` or `max_new_tokens` tokens.
    ///
    /// Returns one id sequence per source, without `<bos>` and cut before `<eos>`. Each step
    /// embeds and decodes only the newest token against the decoder's cache (the source's
    /// cross-attention keys and values are projected once).
    ///
    /// # Shapes
    ///
    /// - src `[b, s]`, src_valid `[b, s]`
    ///
    /// # Panics
    ///
    /// When `max_new_tokens + 1` exceeds the model's `max_len`.
    pub fn greedy_decode(
        &self,
        src: Tensor<B, 2, Int>,
        src_valid: Tensor<B, 2, Bool>,
        specials: SpecialTokens,
        max_new_tokens: usize,
    ) -> Vec<Vec<usize>> {
        assert!(
            max_new_tokens < self.max_len,
            "greedy_decode: {max_new_tokens} new tokens plus <bos> exceed the model's max_len {}",
            self.max_len
        );
        let [b, _] = src.dims();
        let device = src.device();
        let memory = self.encode(src, src_valid.clone());
        let memory_mask = AttentionMask::key_padding(src_valid);
        let mut cache = self.transformer.new_cache(memory, max_new_tokens);
        let mut sequences: Vec<Vec<usize>> = vec![vec![specials.bos]; b];
        let mut finished = vec![false; b];
        for step in 0..max_new_tokens {
            let last: Vec<i64> = sequences.iter().map(|s| s[step] as i64).collect();
            let tgt = Tensor::<B, 2, Int>::from_data(TensorData::new(last, [b, 1]), &device);
            let next = self
                .decode_step(tgt, &mut cache, memory_mask.clone()) // [b, 1, V]
                .argmax(2) // [b, 1, 1]
                .into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .expect("argmax ids read back as i64");
            for ((sequence, done), &token) in sequences.iter_mut().zip(&mut finished).zip(&next) {
                let token = token as usize;
                sequence.push(if *done { specials.pad } else { token });
                *done |= token == specials.eos;
            }
            if finished.iter().all(|&d| d) {
                break;
            }
        }
        sequences
            .into_iter()
            .map(|sequence| {
                sequence[1..]
                    .iter()
                    .copied()
                    // Finished rows hold <eos> then padding; the cut happens at <eos> only.
                    .take_while(|&t| t != specials.eos)
                    .collect()
            })
            .collect()
    }
}

impl<B: FusedAttentionBackend> Seq2SeqTransformer<B> {
    /// Logits `[b, n, V]` of `n` new target tokens `[b, n]` decoded against `cache` (their
    /// positions follow the cached ones), the source's mask restricting cross-attention.
    fn decode_step(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut focal_blocks::StackCache<B>,
        memory_mask: AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let y = self.target_embedding.forward(ids, cache.position()); // [b, n, d]
        let y = self
            .transformer
            .decode_cached(StackInput::new(y).memory_mask(memory_mask), cache);
        focal_attention::project(&self.generator, y.hidden)
    }
}

/// One encoded source sequence, decoded as a [`CausalLm`] so that [`crate::generate()`] (sampling,
/// beam search, …) drives the decoder; built by [`Seq2SeqTransformer::for_source`]. The cache
/// holds the source's cross-attention keys and values, projected once.
pub struct Seq2SeqSource<'a, B: Backend> {
    model: &'a Seq2SeqTransformer<B>,
    memory: Tensor<B, 3>,
    valid: Tensor<B, 2, Bool>,
}

impl<B: FusedAttentionBackend> Seq2SeqTransformer<B> {
    /// Encodes one source (`src`, `src_valid` `[1, s]`) for [`crate::generate()`]; the prompt
    /// is then the target prefix, usually `[<bos>]`.
    ///
    /// # Panics
    ///
    /// When the batch is not 1.
    pub fn for_source(
        &self,
        src: Tensor<B, 2, Int>,
        src_valid: Tensor<B, 2, Bool>,
    ) -> Seq2SeqSource<'_, B> {
        assert_eq!(src.dims()[0], 1, "for_source takes one source sequence");
        Seq2SeqSource {
            model: self,
            memory: self.encode(src, src_valid.clone()),
            valid: src_valid,
        }
    }
}

/// Per decoding step: the decoder's cache and the source mask repeated over its rows.
pub struct Seq2SeqCache<B: Backend> {
    stack: focal_blocks::StackCache<B>,
    valid: Tensor<B, 2, Bool>,
}

impl<B: FusedAttentionBackend> CausalLm<B> for Seq2SeqSource<'_, B> {
    type Cache = Seq2SeqCache<B>;

    fn new_cache(&self, batch: usize, capacity: usize, _device: &B::Device) -> Seq2SeqCache<B> {
        let [_, s, d] = self.memory.dims();
        let memory = self.memory.clone().expand([batch, s, d]);
        Seq2SeqCache {
            stack: self.model.transformer.new_cache(memory, capacity),
            valid: self.valid.clone().expand([batch, s]),
        }
    }

    fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut Seq2SeqCache<B>) -> Tensor<B, 3> {
        let mask = AttentionMask::key_padding(cache.valid.clone());
        self.model.decode_step(ids, &mut cache.stack, mask)
    }

    fn select_cache_rows(&self, cache: &mut Seq2SeqCache<B>, rows: &[usize]) {
        cache.stack.select_batch(rows);
        // Every row holds the same source, so its mask needs no reordering, only the count.
        let [_, s] = cache.valid.dims();
        cache.valid = self.valid.clone().expand([rows.len(), s]);
    }

    fn max_len(&self) -> usize {
        self.model.max_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use focal_attention::padding_mask_from_lengths;
    use focal_backend::assert_close;

    fn tiny() -> Seq2SeqConfig {
        Seq2SeqConfig::new(11, 13)
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_ff(32)
            .with_dropout(0.0)
            .with_max_len(16)
    }

    fn ids<B: Backend>(rows: &[&[i64]], device: &B::Device) -> Tensor<B, 2, Int> {
        let width = rows[0].len();
        let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), width]), device)
    }

    /// Logits have the target vocabulary's width and padding in the source changes nothing.
    fn source_padding_invariance<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 40);
        let model = tiny().init::<B>(device);
        let valid = padding_mask_from_lengths::<B>(&[4, 2], 4, device);
        let tgt = ids::<B>(&[&[1, 5, 6], &[1, 7, 8]], device);
        let a = model.forward(
            ids(&[&[3, 4, 5, 6], &[7, 8, 0, 0]], device),
            valid.clone(),
            tgt.clone(),
        );
        let b = model.forward(ids(&[&[3, 4, 5, 6], &[7, 8, 9, 10]], device), valid, tgt);
        assert_eq!(a.dims(), [2, 3, 13]);
        assert_close(a, b, 1e-5);
    }

    /// Greedy decoding picks, at each step, the argmax of the teacher-forced logits of its own
    /// prefix.
    fn greedy_decoding_follows_the_argmax<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 41);
        let model = tiny().init::<B>(device);
        let specials = SpecialTokens {
            pad: 0,
            bos: 1,
            eos: 2,
        };
        let src = ids::<B>(&[&[3, 4, 5]], device);
        let valid = padding_mask_from_lengths::<B>(&[3], 3, device);
        let out = model.greedy_decode(src.clone(), valid.clone(), specials, 5);
        let produced = &out[0];
        let mut prefix: Vec<i64> = vec![1];
        prefix.extend(produced.iter().map(|&t| t as i64));
        let logits = model.forward(src, valid, ids(&[&prefix], device));
        let argmax = logits
            .argmax(2)
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap();
        for (i, &t) in produced.iter().enumerate() {
            assert_eq!(argmax[i], t as i64, "step {i} of {produced:?}");
        }
        if produced.len() < 5 {
            assert_eq!(argmax[produced.len()], 2, "stopped without <eos>");
        }
    }

    /// `generate` driving the decoder through `for_source` gives `greedy_decode`'s tokens, and
    /// beam search with one beam the same.
    fn generate_through_the_decoder_equals_greedy_decode<B: FusedAttentionBackend>(
        device: &B::Device,
    ) {
        focal_backend::seed::<B>(device, 44);
        let model = Seq2SeqConfig::new(9, 9)
            .with_d_model(16)
            .with_d_ff(32)
            .with_dropout(0.0)
            .init::<B>(device);
        let specials = SpecialTokens {
            pad: 0,
            bos: 1,
            eos: 2,
        };
        let src = ids::<B>(&[&[3, 4, 5, 6]], device);
        let valid = src.clone().not_equal_elem(0);
        let expected = model.greedy_decode(src.clone(), valid.clone(), specials, 6);
        let source = model.for_source(src, valid);
        for strategy in [
            crate::Strategy::Greedy,
            crate::Strategy::Beam {
                beams: 1,
                length_penalty: 1.0,
                early_stopping: crate::EarlyStopping::WhenFull,
            },
        ] {
            let config = crate::GenerationConfig {
                max_new_tokens: 6,
                strategy,
                stop_tokens: vec![specials.eos],
                ..Default::default()
            };
            let mut out =
                crate::generate(&source, &[specials.bos], &config, device, |_| {}).unwrap();
            if out.last() == Some(&specials.eos) {
                out.pop();
            }
            assert_eq!(out, expected[0]);
        }
    }

    fn dropout_is_off_in_inference<B: FusedAttentionBackend>(device: &B::Device) {
        focal_backend::seed::<B>(device, 42);
        let model = tiny().with_dropout(0.3).init::<B>(device);
        let src = Tensor::<B, 2>::random([2, 4], Distribution::Uniform(3.0, 10.0), device).int();
        let valid = padding_mask_from_lengths::<B>(&[4, 4], 4, device);
        let tgt = ids::<B>(&[&[1, 5], &[1, 6]], device);
        let a = model.forward(src.clone(), valid.clone(), tgt.clone());
        let b = model.forward(src, valid, tgt);
        assert_close(a, b, 0.0);
    }

    focal_backend::backend_tests!(
        source_padding_invariance,
        greedy_decoding_follows_the_argmax,
        dropout_is_off_in_inference,
        generate_through_the_decoder_equals_greedy_decode
    );

    #[test]
    fn invalid_config_is_refused_with_values() {
        let err = tiny().with_n_heads(3).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid MultiHeadAttentionConfig: d_model (16) is not divisible by n_heads (3)"
        );
    }
}

//! transformers' pipelines on Focal's models: text classification, token classification
//! (entities), extractive question answering, and matching queries to candidates.

use crate::PretrainedError;
use crate::SentenceEmbedder;
use crate::hf::{EncodedBatch, Encoding, TextTokenizer};
use crate::tasks::{
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    BertInputs, TaskConfig, TaskModel,
};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use focal_attention::FusedAttentionBackend;
use focal_backend::math::{softmax, to_vec};
use focal_heads::{
    Answer, AnswerSearch, Entity, LabelScore, Matcher, QaWindow, TaggedToken, group_entities,
    rank_labels, search_answers,
};
use std::path::Path;

/// The inputs of a batch on `device`.
pub fn bert_inputs<B: Backend>(batch: &EncodedBatch, device: &B::Device) -> BertInputs<B> {
    let tensor = |rows: &[Vec<u32>]| {
        let l = rows.first().map_or(0, Vec::len);
        let values: Vec<i64> = rows.iter().flatten().map(|&t| i64::from(t)).collect();
        Tensor::<B, 2, burn::tensor::Int>::from_data(
            TensorData::new(values, [rows.len(), l]),
            device,
        )
    };
    (
        tensor(&batch.ids),
        tensor(&batch.type_ids),
        tensor(&batch.attention_mask).equal_elem(1),
    )
}

/// The tokenizer of a BERT directory, truncating to the model and padding with its pad token.
fn bert_tokenizer(dir: &Path, config: &TaskConfig) -> Result<TextTokenizer, PretrainedError> {
    TextTokenizer::load_padded(
        dir,
        config.bert.max_position_embeddings,
        config.bert.vocab_size,
        config.bert.pad_token_id as u32,
    )
}

/// A task model of a Hugging Face directory with its labels and tokenizer, on a device: what
/// each of transformers' pipelines runs on ([`TextClassifier`], [`Tagger`], [`QuestionAnswerer`]).
#[derive(Debug)]
pub struct Pipeline<M, B: Backend> {
    /// The model.
    pub model: M,
    /// Its labels and problem type.
    pub config: TaskConfig,
    /// Its tokenizer (truncating to the model, padding with its pad token).
    pub tokenizer: TextTokenizer,
    device: B::Device,
}

impl<M, B: Backend> Pipeline<M, B> {
    /// A pipeline of a model in memory (e.g. one just fine-tuned), its configuration and
    /// tokenizer, on `device`.
    pub fn from_parts(
        model: M,
        config: TaskConfig,
        tokenizer: TextTokenizer,
        device: B::Device,
    ) -> Self {
        Self {
            model,
            config,
            tokenizer,
            device,
        }
    }
}

impl<M: TaskModel<B>, B: Backend> Pipeline<M, B> {
    /// Reads the directory of the model's task (another task's directory is refused).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, PretrainedError> {
        let (model, config) = M::load(dir, device)?;
        let tokenizer = bert_tokenizer(dir, &config)?;
        Ok(Self {
            model,
            config,
            tokenizer,
            device: device.clone(),
        })
    }
}

/// transformers' `text-classification` pipeline: texts or text pairs → labels with scores.
pub type TextClassifier<B> = Pipeline<BertForSequenceClassification<B>, B>;

impl<B: FusedAttentionBackend> TextClassifier<B> {
    /// Logits `[b, num_labels]` of texts, or of pairs (`pairs[i]` goes with `texts[i]`).
    pub fn logits(
        &self,
        texts: &[String],
        pairs: Option<&[String]>,
    ) -> Result<Tensor<B, 2>, PretrainedError> {
        let batch = EncodedBatch::from_encodings(&self.tokenizer.encode(texts, pairs)?);
        Ok(self.model.forward(bert_inputs(&batch, &self.device)))
    }

    /// The labels of each text (or pair) with the pipeline's scores (softmax, sigmoid or the
    /// raw value, as transformers' pipeline chooses: [`crate::PipelineFunction`]), best first;
    /// `top_k` of them (`None`: all).
    pub fn classify(
        &self,
        texts: &[String],
        pairs: Option<&[String]>,
        top_k: Option<usize>,
    ) -> Result<Vec<Vec<LabelScore>>, PretrainedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let scores = to_vec(
            self.config
                .pipeline_function
                .apply(self.logits(texts, pairs)?),
        );
        let n = self.config.labels.len();
        Ok(scores
            .chunks(n)
            .map(|row| rank_labels(row, &self.config.labels, top_k))
            .collect())
    }
}

/// transformers' `token-classification` pipeline with `aggregation_strategy="simple"`: texts →
/// entities with character offsets.
pub type Tagger<B> = Pipeline<BertForTokenClassification<B>, B>;

impl<B: FusedAttentionBackend> Tagger<B> {
    /// Encodings and logits `[b, l, num_labels]` of texts.
    pub fn logits(
        &self,
        texts: &[String],
    ) -> Result<(Vec<Encoding>, Tensor<B, 3>), PretrainedError> {
        let encodings = self.tokenizer.encode(texts, None)?;
        let batch = EncodedBatch::from_encodings(&encodings);
        Ok((
            encodings,
            self.model.forward(bert_inputs(&batch, &self.device)),
        ))
    }

    /// The entities of each text (tags other than `O`, adjacent tokens of one type merged).
    pub fn tag(&self, texts: &[String]) -> Result<Vec<Vec<Entity>>, PretrainedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (encodings, logits) = self.logits(texts)?;
        let [_, l, n] = logits.dims();
        let values = to_vec(logits);
        let unk = self.tokenizer.token_id("[UNK]");
        let join = |tokens: &[String]| self.tokenizer.join_tokens(tokens);
        Ok(encodings
            .iter()
            .zip(texts)
            .enumerate()
            .map(|(row, (encoding, text))| {
                let chars: Vec<char> = text.chars().collect();
                let tokens: Vec<TaggedToken> = (0..encoding.len())
                    .filter(|&i| {
                        encoding.get_special_tokens_mask()[i] == 0
                            && encoding.get_attention_mask()[i] == 1
                    })
                    .map(|i| {
                        let (start, end) = encoding.get_offsets()[i];
                        let token = if Some(encoding.get_ids()[i]) == unk {
                            chars[start.min(chars.len())..end.min(chars.len())]
                                .iter()
                                .collect()
                        } else {
                            encoding.get_tokens()[i].clone()
                        };
                        let at = (row * l + i) * n;
                        TaggedToken {
                            token,
                            start,
                            end,
                            scores: softmax(&values[at..at + n]),
                        }
                    })
                    .collect();
                group_entities(&tokens, &self.config.labels, &["O"], join)
            })
            .collect())
    }
}

/// Window settings of [`QuestionAnswerer::answer`] besides the answer search.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QaSettings {
    /// How answers are searched.
    pub search: AnswerSearch,
    /// Tokens per window (default: the model's positions, at most 384, as transformers).
    pub max_seq_len: Option<usize>,
    /// Tokens that consecutive windows share (default: half a window, at most 128).
    pub doc_stride: Option<usize>,
}

/// transformers' `question-answering` pipeline: a question and a context (of any length, cut into
/// overlapping windows) → answers with character offsets and scores.
pub type QuestionAnswerer<B> = Pipeline<BertForQuestionAnswering<B>, B>;

impl<B: FusedAttentionBackend> QuestionAnswerer<B> {
    /// The best answers to `question` in `context`, best first (see
    /// [`focal_heads::search_answers`]).
    pub fn answer(
        &self,
        question: &str,
        context: &str,
        settings: &QaSettings,
    ) -> Result<Vec<Answer>, PretrainedError> {
        let invalid = |message: String| PretrainedError::Tokenizer {
            path: self.config.path.with_file_name("tokenizer.json"),
            message,
        };
        settings
            .search
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        let max_len = settings
            .max_seq_len
            .unwrap_or(self.config.bert.max_position_embeddings.min(384));
        let stride = settings.doc_stride.unwrap_or((max_len / 2).min(128));
        if stride > max_len {
            return Err(invalid(format!(
                "doc_stride ({stride}) is larger than max_seq_len ({max_len})"
            )));
        }
        let encodings = self
            .tokenizer
            .encode_windows(question, context, max_len, stride)?;
        // One forward per window, unpadded, as the pipeline runs them.
        let cls = self.tokenizer.token_id("[CLS]");
        let mut windows = Vec::with_capacity(encodings.len());
        for encoding in &encodings {
            let batch = EncodedBatch::from_encodings(std::slice::from_ref(encoding));
            let (start, end) = self.model.forward(bert_inputs(&batch, &self.device));
            let sequence_ids = encoding.get_sequence_ids();
            let candidate = (0..encoding.len())
                .map(|i| {
                    (sequence_ids[i] == Some(1) || Some(encoding.get_ids()[i]) == cls)
                        && encoding.get_attention_mask()[i] == 1
                })
                .collect();
            let word_chars = (0..encoding.len())
                .map(|i| {
                    let (_, word) = encoding.token_to_word(i)?;
                    encoding.word_to_chars(word, 1)
                })
                .collect();
            windows.push(QaWindow {
                start_logits: to_vec(start),
                end_logits: to_vec(end),
                candidate,
                word_chars,
                offsets: encoding.get_offsets().to_vec(),
            });
        }
        Ok(search_answers(&windows, context, &settings.search))
    }
}

/// Matching queries to candidate texts with a sentence embedder (FAQ, customer service).
#[derive(Debug)]
pub struct TextMatcher<B: Backend> {
    /// The encoder and its pooling.
    pub embedder: SentenceEmbedder<B>,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// The candidates, once added.
    pub matcher: Option<Matcher<B>>,
    device: B::Device,
}

impl<B: FusedAttentionBackend> TextMatcher<B> {
    /// Reads a BERT or sentence-transformers directory (see [`SentenceEmbedder::load`]).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, PretrainedError> {
        let embedder = SentenceEmbedder::load(dir, device)?;
        let tokenizer = TextTokenizer::load_padded(
            dir,
            embedder.max_len,
            embedder.bert.vocab_size(),
            embedder.pad_id,
        )?;
        Ok(Self {
            embedder,
            tokenizer,
            matcher: None,
            device: device.clone(),
        })
    }

    /// Embeddings `[b, d]` of texts.
    pub fn embed(&self, texts: &[String]) -> Result<Tensor<B, 2>, PretrainedError> {
        let batch = self.tokenizer.encode_batch(&self.embedder.prepare(texts))?;
        let (ids, types, valid) = bert_inputs(&batch, &self.device);
        Ok(self.embedder.embed(ids, types, valid))
    }

    /// Embeds and adds candidates (call once per batch of a long list).
    pub fn add_candidates(&mut self, texts: Vec<String>) -> Result<(), PretrainedError> {
        if texts.is_empty() {
            return Ok(());
        }
        let embeddings = self.embed(&texts)?;
        let config = |cause| PretrainedError::Config {
            path: Path::new("candidates").to_path_buf(),
            cause,
        };
        match &mut self.matcher {
            Some(matcher) => matcher.extend(texts, embeddings).map_err(config),
            None => {
                self.matcher = Some(Matcher::new(texts, embeddings).map_err(config)?);
                Ok(())
            }
        }
    }

    /// The `k` best candidates of each query.
    pub fn top_k(
        &self,
        queries: &[String],
        k: usize,
    ) -> Result<Vec<Vec<focal_heads::Match>>, PretrainedError> {
        let config = |cause| PretrainedError::Config {
            path: Path::new("candidates").to_path_buf(),
            cause,
        };
        let matcher = self.matcher.as_ref().ok_or_else(|| {
            config(focal_backend::ConfigError::new(
                "TextMatcher",
                "no candidates were added",
            ))
        })?;
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        matcher.top_k(self.embed(queries)?, k).map_err(config)
    }
}

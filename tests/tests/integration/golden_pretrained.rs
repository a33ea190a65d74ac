//! Golden parity with Hugging Face transformers: tiny random-initialised BERT (`BertModel`,
//! `BertForMaskedLM`) and GPT-2 (`GPT2LMHeadModel`) directories, loaded from
//! `tests/fixtures/{bert,bert-mlm,gpt2}`, against the outputs and generated ids recorded in
//! `tests/fixtures/pretrained_reference.{safetensors,json}`; transformers' beam search on the
//! same GPT-2 (`beam_search_reference.json`) and GPT-2 checkpoint variants (`gpt2-buffers`,
//! `gpt2-unscaled`, `gpt2_variants_reference.safetensors`). Regenerate them from the
//! repository root with
//!
//! ```sh
//! pip install torch safetensors "transformers>=4.45,<4.50"
//! python tests/fixtures/generate_pretrained.py
//! pip install "transformers==4.57.1"
//! python tests/fixtures/generate_gpt2_variants.py   # reads gpt2/, does not rewrite it
//! ```

use burn::tensor::{Int, Tensor, TensorData};
use focal::attention::FusedAttentionBackend;
use focal::backend::{Tolerance, assert_close};
use focal::heads::{EarlyStopping, GenerationConfig, Strategy, beam_search, generate};
use focal::pretrained::{Bert, Gpt2, PretrainedError, hf};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common;

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn reference() -> &'static common::Fixture {
    static FIXTURE: OnceLock<common::Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        common::Fixture::parse(include_bytes!(
            "../../fixtures/pretrained_reference.safetensors"
        ))
    })
}

fn ids_json() -> serde_json::Value {
    serde_json::from_str(include_str!("../../fixtures/pretrained_reference.json")).unwrap()
}

fn rows(value: &serde_json::Value) -> Vec<Vec<i64>> {
    serde_json::from_value(value.clone()).unwrap()
}

/// `BertModel`: last hidden states and pooled output, with padding; the tokenizer gives
/// Hugging Face's ids, attention mask and token types.
fn bert_matches_hugging_face<B: FusedAttentionBackend>(device: &B::Device) {
    let (bert, config) = Bert::<B>::load(&fixtures().join("bert"), device).unwrap();
    let json = &ids_json()["bert"];
    let ids = rows(&json["input_ids"]);
    let mask = rows(&json["attention_mask"]);
    let types = rows(&json["token_type_ids"]);

    let tokenizer = hf::read_tokenizer(
        &fixtures().join("bert"),
        config.max_position_embeddings,
        config.vocab_size,
        Some((config.pad_token_id as u32, "[PAD]".to_string())),
    )
    .unwrap();
    let texts: Vec<String> = serde_json::from_value(json["texts"].clone()).unwrap();
    let encodings = tokenizer.encode_batch(texts, true).unwrap();
    let ours: Vec<Vec<i64>> = encodings
        .iter()
        .map(|e| e.get_ids().iter().map(|&t| t as i64).collect())
        .collect();
    assert_eq!(ours, ids);
    let ours_mask: Vec<Vec<i64>> = encodings
        .iter()
        .map(|e| e.get_attention_mask().iter().map(|&t| t as i64).collect())
        .collect();
    assert_eq!(ours_mask, mask);

    let valid = common::int_tensor::<B>(&mask, device).equal_elem(1);
    let out = bert.forward(
        common::int_tensor(&ids, device),
        common::int_tensor(&types, device),
        valid,
    );
    let tolerance = Tolerance::new(TOLERANCE, TOLERANCE);
    assert_close(
        out.last_hidden_state,
        reference().tensor("bert.last_hidden_state", device),
        tolerance,
    );
    assert_close(
        out.pooler_output.unwrap(),
        reference().tensor("bert.pooler_output", device),
        tolerance,
    );
}

/// `BertForMaskedLM`: logits of every position.
fn bert_mlm_matches_hugging_face<B: FusedAttentionBackend>(device: &B::Device) {
    let (bert, _) = Bert::<B>::load(&fixtures().join("bert-mlm"), device).unwrap();
    assert!(bert.pooler.is_none());
    let ids = rows(&ids_json()["bert_mlm"]["input_ids"]);
    let zeros: Vec<Vec<i64>> = ids.iter().map(|r| vec![0; r.len()]).collect();
    let valid = common::int_tensor::<B>(&zeros, device).equal_elem(0);
    let h = bert
        .forward(
            common::int_tensor(&ids, device),
            common::int_tensor(&zeros, device),
            valid,
        )
        .last_hidden_state;
    assert_close(
        bert.mlm_logits(h),
        reference().tensor("bert_mlm.logits", device),
        Tolerance::new(TOLERANCE, TOLERANCE),
    );
}

/// `GPT2LMHeadModel`: logits of the prompt, and the greedy and 3-beam continuations of
/// `generate(max_new_tokens=12)` token for token.
fn gpt2_matches_hugging_face<B: FusedAttentionBackend>(device: &B::Device) {
    let (gpt2, config) = Gpt2::<B>::load(&fixtures().join("gpt2"), device).unwrap();
    let json = &ids_json()["gpt2"];
    let prompt = rows(&json["input_ids"]);
    let logits = gpt2.forward(common::int_tensor(&prompt, device));
    assert_close(
        logits,
        reference().tensor("gpt2.logits", device),
        Tolerance::new(TOLERANCE, TOLERANCE),
    );

    let prompt: Vec<usize> = prompt[0].iter().map(|&t| t as usize).collect();
    let stop = config.eos_token_id.into_iter().collect::<Vec<_>>();
    let expected = |key: &str| -> Vec<usize> { serde_json::from_value(json[key].clone()).unwrap() };
    let greedy = GenerationConfig {
        max_new_tokens: 12,
        stop_tokens: stop.clone(),
        ..GenerationConfig::default()
    };
    let mut streamed = Vec::new();
    let out = generate(&gpt2, &prompt, &greedy, device, |t| streamed.push(t)).unwrap();
    assert_eq!(out, expected("greedy"));
    assert_eq!(streamed, out);

    let beam = GenerationConfig {
        strategy: Strategy::Beam {
            beams: 3,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::WhenFull,
        },
        ..greedy
    };
    let out = generate(&gpt2, &prompt, &beam, device, |_| {}).unwrap();
    assert_eq!(out, expected("beam3"));
}

/// transformers 4.57's beam search on the same GPT-2, with an end-of-sequence token the model
/// emits, several length penalties and every `early_stopping` setting: every returned
/// hypothesis (`num_return_sequences = num_beams`), token for token and score for score.
fn gpt2_beam_search_matches_transformers<B: FusedAttentionBackend>(device: &B::Device) {
    let (gpt2, _) = Gpt2::<B>::load(&fixtures().join("gpt2"), device).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/beam_search_reference.json")).unwrap();
    let get = |value: &serde_json::Value| value.as_u64().unwrap() as usize;
    let prompt: Vec<usize> = serde_json::from_value(reference["prompt_ids"].clone()).unwrap();
    let eos = get(&reference["eos_token_id"]);
    let mut ended_early = 0;
    for case in reference["cases"].as_array().unwrap() {
        let early_stopping = match &case["early_stopping"] {
            serde_json::Value::Bool(true) => EarlyStopping::WhenFull,
            serde_json::Value::Bool(false) => EarlyStopping::Heuristic,
            _ => EarlyStopping::Never,
        };
        let config = GenerationConfig {
            max_new_tokens: get(&reference["max_new_tokens"]),
            strategy: Strategy::Beam {
                beams: get(&case["beams"]),
                length_penalty: case["length_penalty"].as_f64().unwrap(),
                early_stopping,
            },
            stop_tokens: vec![eos],
            ..GenerationConfig::default()
        };
        let ours = beam_search(&gpt2, &prompt, &config, device).unwrap();
        let theirs = case["hypotheses"].as_array().unwrap();
        let shown = |h: &[focal::heads::BeamHypothesis]| {
            h.iter()
                .map(|h| format!("{:?} {:.5}", h.tokens, h.score))
                .collect::<Vec<_>>()
        };
        assert_eq!(ours.len(), theirs.len(), "{case}: ours {:?}", shown(&ours));
        for (rank, (ours_h, theirs_h)) in ours.iter().zip(theirs).enumerate() {
            let tokens: Vec<usize> = serde_json::from_value(theirs_h["tokens"].clone()).unwrap();
            let score = theirs_h["score"].as_f64().unwrap();
            assert_eq!(
                ours_h.tokens,
                tokens,
                "{case}: hypothesis {rank}; ours {:?}",
                shown(&ours)
            );
            assert!(
                (ours_h.score - score).abs() <= 1e-4 * score.abs().max(1.0),
                "{case}: hypothesis {rank} scores {} here, {score} in transformers",
                ours_h.score
            );
            ended_early += usize::from(tokens.last() == Some(&eos) && tokens.len() < 12);
        }
    }
    assert!(ended_early >= 5, "{ended_early} hypotheses end early");
}

/// `scale_attn_weights: false` leaves the scores unscaled, as transformers' eager attention:
/// logits of `gpt2-unscaled` (sharp attention, so the scale shows).
fn gpt2_without_attention_scale_matches_transformers<B: FusedAttentionBackend>(device: &B::Device) {
    let (gpt2, config) = Gpt2::<B>::load(&fixtures().join("gpt2-unscaled"), device).unwrap();
    assert!(!config.scale_attn_weights);
    let variants = common::Fixture::parse(include_bytes!(
        "../../fixtures/gpt2_variants_reference.safetensors"
    ));
    let prompt = rows(&ids_json()["gpt2"]["input_ids"]);
    assert_close(
        gpt2.forward(common::int_tensor(&prompt, device)),
        variants.tensor("gpt2_unscaled.logits", device),
        Tolerance::new(TOLERANCE, TOLERANCE),
    );
}

/// `save_pretrained_with` writes transformers' file back: the same names, shapes and values
/// as the fixture `transformers` saved (so `AutoModelForCausalLM` reads it as it read the
/// original), the tokenizer files copied, and the directory loads to the same logits.
fn gpt2_saves_what_transformers_saved<B: FusedAttentionBackend>(device: &B::Device) {
    let source = fixtures().join("gpt2");
    let (gpt2, _) = Gpt2::<B>::load(&source, device).unwrap();
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("saved");
    gpt2.save_pretrained_with(&saved, &source, &[("notes.txt", b"x".to_vec())])
        .unwrap();
    let read = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    let (original, ours) = (read(&source), read(&saved));
    let (original, ours) = (
        safetensors::SafeTensors::deserialize(&original).unwrap(),
        safetensors::SafeTensors::deserialize(&ours).unwrap(),
    );
    let mut names: Vec<String> = original.names().into_iter().map(String::from).collect();
    let mut saved_names: Vec<String> = ours.names().into_iter().map(String::from).collect();
    names.sort();
    saved_names.sort();
    assert_eq!(names, saved_names);
    for name in &names {
        let (a, b) = (original.tensor(name).unwrap(), ours.tensor(name).unwrap());
        assert_eq!(a.shape(), b.shape(), "{name}");
        assert!(a.data() == b.data(), "{name} differs");
    }
    for file in [
        "config.json",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "notes.txt",
    ] {
        assert!(saved.join(file).is_file(), "{file}");
    }
    let (reloaded, _) = Gpt2::<B>::load(&saved, device).unwrap();
    let prompt = rows(&ids_json()["gpt2"]["input_ids"]);
    assert_close(
        reloaded.forward(common::int_tensor(&prompt, device)),
        gpt2.forward(common::int_tensor(&prompt, device)),
        Tolerance::absolute(0.0),
    );
}

fn attentions_reference() -> &'static common::Fixture {
    static FIXTURE: OnceLock<common::Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        common::Fixture::parse(include_bytes!(
            "../../fixtures/interpret/attentions_reference.safetensors"
        ))
    })
}

/// Each layer's attention probabilities of BERT (with a padded sequence) and GPT-2 equal
/// transformers' `output_attentions=True` (eager). Regenerate the reference with
/// `python3 tests/fixtures/interpret/generate_attentions.py` (transformers 4.57.1).
fn attentions_match_hugging_face<B: FusedAttentionBackend>(device: &B::Device) {
    let tolerance = Tolerance::new(TOLERANCE, TOLERANCE);
    let (bert, _) = Bert::<B>::load(&fixtures().join("bert"), device).unwrap();
    let json = &ids_json()["bert"];
    let mask = rows(&json["attention_mask"]);
    let (out, attentions) = bert.forward_with_attentions(
        common::int_tensor(&rows(&json["input_ids"]), device),
        common::int_tensor(&rows(&json["token_type_ids"]), device),
        common::int_tensor::<B>(&mask, device).equal_elem(1),
    );
    assert_close(
        out.last_hidden_state,
        reference().tensor("bert.last_hidden_state", device),
        tolerance,
    );
    let matches = |model: &str, attentions: Vec<Tensor<B, 4>>| {
        assert_eq!(attentions.len(), 2, "{model}");
        for (layer, a) in attentions.into_iter().enumerate() {
            let expected = attentions_reference().tensor(&format!("{model}.{layer}"), device);
            assert_close(a, expected, tolerance);
        }
    };
    matches("bert", attentions);
    let (gpt2, _) = Gpt2::<B>::load(&fixtures().join("gpt2"), device).unwrap();
    let ids = rows(&ids_json()["gpt2"]["input_ids"]);
    matches("gpt2", gpt2.attentions(common::int_tensor(&ids, device)));
}

/// Gradient × input and attention × gradient of the tiny classifier equal transformers' (its
/// `inputs_embeds` gradient, and Chefer et al.'s relevance from the eager attentions'
/// gradients) for a text and a pair, each score to 1e-4 of itself plus 1e-6 of the largest
/// magnitude (the scores but the first are some 1e-4). Regenerate the
/// reference with `python3 tests/fixtures/interpret/generate_attributions.py`
/// (transformers 4.57.1).
fn attributions_match_transformers<B: FusedAttentionBackend>(device: &B::Device) {
    use focal::pretrained::{BertForSequenceClassification, explain, pipelines::bert_inputs};
    let dir = fixtures().join("heads/classify");
    let (model, task) =
        BertForSequenceClassification::<burn::backend::Autodiff<B>>::load_without_dropout(
            &dir, device,
        )
        .unwrap();
    let tokenizer =
        focal::pretrained::TextTokenizer::load(&dir, 64, task.bert.vocab_size, None).unwrap();
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("interpret/attributions_reference.json")).unwrap(),
    )
    .unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let text = vec![case["text"].as_str().unwrap().to_string()];
        let pair = case["pair"].as_str().map(|p| vec![p.to_string()]);
        let encodings = tokenizer.encode(&text, pair.as_deref()).unwrap();
        assert_eq!(
            encodings[0].get_tokens(),
            case["tokens"].as_array().unwrap().as_slice()
        );
        let batch = focal::pretrained::EncodedBatch::from_encodings(&encodings);
        let attribution = explain(&model, bert_inputs(&batch, device), None);
        assert_eq!(attribution.class as u64, case["class"].as_u64().unwrap());
        let logit = case["logit"].as_f64().unwrap();
        assert!((f64::from(attribution.logit) - logit).abs() < TOLERANCE);
        for (name, got) in [
            ("gradient_input", &attribution.gradient_input),
            ("attention_gradient", &attribution.attention_gradient),
        ] {
            let want: Vec<f64> = serde_json::from_value(case[name].clone()).unwrap();
            let largest = want.iter().fold(0.0f64, |a, &w| a.max(w.abs()));
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() <= TOLERANCE * w.abs() + 1e-6 * largest,
                    "{name}: {got:?} against {want:?}"
                );
            }
        }
    }
}

/// A `BertForPreTraining` checkpoint (as `bert-base-uncased` and many uploads are: the MLM head
/// and the next-sentence head `cls.seq_relationship.*` beside the encoder) loads as BERT, the
/// next-sentence head passed over, and gives transformers' `BertModel` hidden states and pooled
/// output (`tests/fixtures/review/`, `tests/fixtures/generate_review.py`).
fn bert_pretraining_checkpoints_load<B: FusedAttentionBackend>(device: &B::Device) {
    let review = fixtures().join("review");
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(review.join("bert_pretraining_reference.json")).unwrap(),
    )
    .unwrap();
    assert!(
        case["checkpoint_tensors"]
            .get("cls.seq_relationship.weight")
            .is_some()
    );
    let (bert, _) = Bert::<B>::load(&review.join("bert-pretraining"), device).unwrap();
    let row = |key: &str| -> Tensor<B, 2, Int> {
        let ids: Vec<i64> = serde_json::from_value(case[key].clone()).unwrap();
        Tensor::from_data(TensorData::new(ids.clone(), [1, ids.len()]), device)
    };
    let valid = row("attention_mask").equal_elem(1);
    let out = bert.forward(row("input_ids"), row("token_type_ids"), valid);
    let expected = |key: &str| -> Vec<f32> { serde_json::from_value(case[key].clone()).unwrap() };
    let hidden: Vec<f32> = out.last_hidden_state.into_data().to_vec().unwrap();
    let pooled: Vec<f32> = out.pooler_output.unwrap().into_data().to_vec().unwrap();
    for (name, got, want) in [
        ("last_hidden_state", hidden, expected("last_hidden_state")),
        ("pooler_output", pooled, expected("pooler_output")),
    ] {
        assert_eq!(got.len(), want.len(), "{name}");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{name}: max |Δ| {worst}");
    }
}

focal::backend::backend_tests!(
    bert_pretraining_checkpoints_load,
    attributions_match_transformers,
    attentions_match_hugging_face,
    bert_matches_hugging_face,
    bert_mlm_matches_hugging_face,
    gpt2_saves_what_transformers_saved,
    gpt2_matches_hugging_face,
    gpt2_beam_search_matches_transformers,
    gpt2_without_attention_scale_matches_transformers
);

type B = focal::backend::NdArray;

/// A copy of a fixture directory to break.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    let err: PretrainedError = Bert::<B>::load(dir, &Default::default()).unwrap_err();
    let message = err.to_string();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    message
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let message = load_error(dir.path());
    assert!(
        message.ends_with("config.json: not found (a model directory needs config.json)"),
        "{message}"
    );

    let dir = copy_of("bert");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let message = load_error(dir.path());
    assert!(
        message.contains("model.safetensors or pytorch_model.bin"),
        "{message}"
    );
}

#[test]
fn a_truncated_weights_file_is_an_error_not_a_panic() {
    let dir = copy_of("bert");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let message = load_error(dir.path());
    assert!(
        message.contains("model.safetensors: cannot read the weights"),
        "{message}"
    );
}

#[test]
fn unsupported_options_and_model_types_are_named() {
    let dir = copy_of("bert");
    let path = dir.path().join("config.json");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, config.replace("\"absolute\"", "\"relative_key\"")).unwrap();
    let message = load_error(dir.path());
    assert!(
        message.ends_with(
            "config.json: unsupported option position_embedding_type = \"relative_key\""
        ),
        "{message}"
    );

    // A BERT decoder (transformers' `is_decoder`, `add_cross_attention`) would be read as an
    // encoder, with bidirectional attention: refused by name, not dropped by serde.
    for option in ["is_decoder", "add_cross_attention"] {
        let dir = copy_of("bert");
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config[option] = true.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let message = load_error(dir.path());
        assert!(
            message.ends_with(&format!(
                "config.json: unsupported option {option} = true (Focal's BERT is an encoder)"
            )),
            "{message}"
        );
    }

    let err = Gpt2::<B>::load(&fixtures().join("bert"), &Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("model_type 'bert' is not supported here (expected gpt2)"),
        "{err}"
    );
}

#[test]
fn wrong_shapes_and_missing_tensors_are_named() {
    // A config whose feed-forward is wider than the weights.
    let dir = copy_of("bert");
    let path = dir.path().join("config.json");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    let message = load_error(dir.path());
    assert!(
        message.ends_with("model.safetensors: tensor 'encoder.layer.0.intermediate.dense.weight' has shape [64, 32], expected [48, 32]"),
        "{message}"
    );

    // The same weights without the pooler's bias.
    let dir = copy_of("bert");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "pooler.dense.bias")
        .collect();
    let rewritten = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&path, rewritten).unwrap();
    let message = load_error(dir.path());
    assert!(
        message.ends_with("model.safetensors: missing tensor 'pooler.dense.bias'"),
        "{message}"
    );
}

/// all-MiniLM-L6-v2 (not committed): `FOCAL_MINILM_DIR` names its sentence-transformers
/// directory; the reference embeddings come from the sentence-transformers library (see
/// `tests/fixtures/generate_minilm_reference.py` for how to get the model and rerun).
#[test]
#[ignore = "needs the all-MiniLM-L6-v2 directory in FOCAL_MINILM_DIR"]
fn minilm_matches_sentence_transformers() {
    use focal::pretrained::{SentenceEmbedder, TextTokenizer};
    let dir = PathBuf::from(
        std::env::var("FOCAL_MINILM_DIR").expect("set FOCAL_MINILM_DIR to the model directory"),
    );
    let device = Default::default();
    let embedder = SentenceEmbedder::<B>::load(&dir, &device).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/minilm_reference.json")).unwrap();
    let texts: Vec<String> = serde_json::from_value(reference["texts"].clone()).unwrap();
    let expected: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    let tokenizer = TextTokenizer::load(
        &dir,
        embedder.max_len,
        embedder.bert.vocab_size(),
        Some((0, "[PAD]".into())),
    )
    .unwrap();
    let batch = tokenizer.encode_batch(&texts).unwrap();
    let to_rows = |rows: &[Vec<u32>]| -> Vec<Vec<i64>> {
        rows.iter()
            .map(|r| r.iter().map(|&t| t as i64).collect())
            .collect()
    };
    let ids = common::int_tensor::<B>(&to_rows(&batch.ids), &device);
    let types = common::int_tensor::<B>(&to_rows(&batch.type_ids), &device);
    let valid = common::int_tensor::<B>(&to_rows(&batch.attention_mask), &device).equal_elem(1);
    let ours = embedder.embed(ids, types, valid);
    let [_, d] = ours.dims();
    let ours = ours.into_data().to_vec::<f32>().unwrap();
    // The figures docs/pretrained.md quotes: the smallest cosine and the largest |Δ| over all
    // sentences and dimensions, printed, and bounded as the docs state.
    let mut min_cosine = f32::INFINITY;
    let mut max_delta = 0.0f32;
    for (row, (text, want)) in ours.chunks(d).zip(texts.iter().zip(&expected)) {
        let dot: f32 = row.iter().zip(want).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine = dot / (norm(row) * norm(want));
        let delta = row
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{text}: cosine {cosine:.7}, max |Δ| {delta:.2e}");
        min_cosine = min_cosine.min(cosine);
        max_delta = max_delta.max(delta);
    }
    eprintln!(
        "all-MiniLM-L6-v2 vs sentence-transformers, {} sentences: min cosine {min_cosine:.7}, max |Δ| {max_delta:.2e}",
        texts.len()
    );
    assert!(min_cosine >= 0.9999999, "min cosine {min_cosine}");
    assert!(max_delta <= 1e-6, "max |Δ| {max_delta}");
}

/// The same BERT stored as `pytorch_model.bin` (no safetensors file) reads through burn-store's
/// PyTorch reader and gives the same outputs.
#[test]
fn pytorch_bin_weights_match_hugging_face() {
    let device = Default::default();
    let (bert, _) = Bert::<B>::load(&fixtures().join("bert-bin"), &device).unwrap();
    let json = &ids_json()["bert"];
    let (ids, mask, types) = (
        rows(&json["input_ids"]),
        rows(&json["attention_mask"]),
        rows(&json["token_type_ids"]),
    );
    let valid = common::int_tensor::<B>(&mask, &device).equal_elem(1);
    let out = bert.forward(
        common::int_tensor(&ids, &device),
        common::int_tensor(&types, &device),
        valid,
    );
    assert_close(
        out.last_hidden_state,
        reference().tensor("bert.last_hidden_state", &device),
        Tolerance::new(TOLERANCE, TOLERANCE),
    );
}

/// Rewrites `name` in `dir/model.safetensors` as `values` of `shape` (f32), adding it when
/// absent.
fn put_tensor(dir: &Path, name: &str, values: &[f32], shape: &[usize]) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let new_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(key, _)| key != name)
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &new_bytes)
            .unwrap();
    kept.push((name.to_string(), view));
    std::fs::write(&path, safetensors::serialize(kept, None).unwrap()).unwrap();
}

/// The values and shape of `name` in `dir/model.safetensors` (f32).
fn tensor_values(dir: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let weights = common::Fixture::parse(&std::fs::read(dir.join("model.safetensors")).unwrap());
    (weights.values(name), weights.shape(name))
}

fn gpt2_error(dir: &Path) -> String {
    let message = Gpt2::<B>::load(dir, &Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    message
}

/// An old-style GPT-2 checkpoint (no `transformer.` prefix, the `attn.bias` causal mask
/// `[1, 1, n, n]` and the 0-d `attn.masked_bias` of every layer) loads and gives
/// transformers' logits; buffers whose values would change the attention are refused.
#[test]
fn gpt2_attention_buffers_are_checked_not_ignored() {
    let device = Default::default();
    let (gpt2, _) = Gpt2::<B>::load(&fixtures().join("gpt2-buffers"), &device).unwrap();
    let prompt = rows(&ids_json()["gpt2"]["input_ids"]);
    assert_close(
        gpt2.forward(common::int_tensor(&prompt, &device)),
        reference().tensor("gpt2.logits", &device),
        Tolerance::new(TOLERANCE, TOLERANCE),
    );

    let (mask, shape) = tensor_values(&fixtures().join("gpt2-buffers"), "h.1.attn.bias");
    assert_eq!(shape, [1, 1, 64, 64]);
    let dir = copy_of("gpt2-buffers");
    let mut future = mask.clone();
    future[3 * 64 + 5] = 1.0; // query 3 may see key 5
    put_tensor(dir.path(), "h.1.attn.bias", &future, &shape);
    let message = gpt2_error(dir.path());
    assert!(
        message.ends_with(
            "h.1.attn.bias is not the causal mask GPT-2 applies: entry [3, 5] is Some(1.0)"
        ),
        "{message}"
    );

    let dir = copy_of("gpt2-buffers");
    put_tensor(
        dir.path(),
        "h.0.attn.bias",
        &mask[..64 * 63],
        &[1, 1, 64, 63],
    );
    let message = gpt2_error(dir.path());
    assert!(
        message.ends_with("tensor 'h.0.attn.bias' has shape [1, 1, 64, 63], expected [1, 1, 0, 0]"),
        "{message}"
    );

    let (fill, shape) = tensor_values(&fixtures().join("gpt2-buffers"), "h.0.attn.masked_bias");
    assert_eq!((fill, shape), (vec![-1e4], vec![]));
    let dir = copy_of("gpt2-buffers");
    put_tensor(dir.path(), "h.0.attn.masked_bias", &[-1.0], &[]);
    let message = gpt2_error(dir.path());
    assert!(
        message.ends_with("h.0.attn.masked_bias must be one value of at most -1e4 (the fill for masked scores), found [-1.0] with shape []"),
        "{message}"
    );
    // A rank-4 buffer of one value is accepted.
    let dir = copy_of("gpt2-buffers");
    put_tensor(dir.path(), "h.0.attn.masked_bias", &[-1e4], &[1, 1, 1, 1]);
    assert!(Gpt2::<B>::load(dir.path(), &device).is_ok());
}

/// Tied copies must equal what they are tied to, element for element: a changed or NaN value
/// in GPT-2's `lm_head.weight` and a BERT `cls.predictions.decoder.bias` that differs from
/// `cls.predictions.bias` are refused; an equal `decoder.bias` is accepted.
#[test]
fn tied_copies_must_equal_their_tensors_nan_included() {
    let device = Default::default();
    let dir = copy_of("gpt2");
    let (mut words, shape) = tensor_values(dir.path(), "transformer.wte.weight");
    assert!(Gpt2::<B>::load(dir.path(), &device).is_ok());
    put_tensor(dir.path(), "lm_head.weight", &words, &shape);
    assert!(Gpt2::<B>::load(dir.path(), &device).is_ok());
    words[7] += 0.25;
    put_tensor(dir.path(), "lm_head.weight", &words, &shape);
    let message = gpt2_error(dir.path());
    assert!(
        message.contains("lm_head.weight differs from the tensor it should be tied to (an untied LM head): element 7 is"),
        "{message}"
    );
    // A NaN copy is refused before the comparison, as every non-finite weight is.
    words[7] = f32::NAN;
    put_tensor(dir.path(), "lm_head.weight", &words, &shape);
    let message = gpt2_error(dir.path());
    assert!(
        message.contains("tensor 'lm_head.weight' holds a non-finite value (NaN at element 7)"),
        "{message}"
    );

    let dir = copy_of("bert-mlm");
    let (mut bias, shape) = tensor_values(dir.path(), "cls.predictions.bias");
    put_tensor(dir.path(), "cls.predictions.decoder.bias", &bias, &shape);
    assert!(Bert::<B>::load(dir.path(), &device).is_ok());
    bias[2] += 0.5;
    put_tensor(dir.path(), "cls.predictions.decoder.bias", &bias, &shape);
    let message = load_error(dir.path());
    assert!(
        message.contains("cls.predictions.decoder.bias differs from the tensor it should be tied to (an untied MLM bias): element 2"),
        "{message}"
    );
}

/// Rewrites `name` in `dir/model.safetensors` with the raw `bytes` of `dtype`.
fn put_raw_tensor(
    dir: &Path,
    name: &str,
    dtype: safetensors::Dtype,
    bytes: &[u8],
    shape: &[usize],
) {
    let path = dir.join("model.safetensors");
    let file_bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&file_bytes).unwrap();
    let mut kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(key, _)| key != name)
        .collect();
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), bytes).unwrap();
    kept.push((name.to_string(), view));
    std::fs::write(&path, safetensors::serialize(kept, None).unwrap()).unwrap();
}

/// NaN, infinities and integer tensors in a Hugging Face checkpoint are refused with the
/// tensor's name, for BERT and GPT-2 (they used to load and give NaN embeddings or streams of
/// token 0).
#[test]
fn non_finite_or_integer_weights_are_refused_by_name() {
    for (family, key) in [
        ("bert", "embeddings.word_embeddings.weight"),
        ("gpt2", "transformer.h.0.mlp.c_fc.bias"),
    ] {
        let error = |dir: &Path| match family {
            "bert" => load_error(dir),
            _ => gpt2_error(dir),
        };
        let (values, shape) = tensor_values(&fixtures().join(family), key);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let dir = copy_of(family);
            let mut broken = values.clone();
            broken[3] = bad;
            put_tensor(dir.path(), key, &broken, &shape);
            let message = error(dir.path());
            assert!(
                message.contains(&format!(
                    "tensor '{key}' holds a non-finite value ({bad} at element 3)"
                )),
                "{family}: {message}"
            );
        }
        let dir = copy_of(family);
        let ints: Vec<u8> = values
            .iter()
            .flat_map(|v| (*v as i64).to_le_bytes())
            .collect();
        put_raw_tensor(dir.path(), key, safetensors::Dtype::I64, &ints, &shape);
        let message = error(dir.path());
        assert!(
            message.contains(&format!("tensor '{key}' holds I64 values")),
            "{family}: {message}"
        );
    }
}

/// Every id a tokenizer can produce must index the model's embedding table: an added token
/// beyond it, or a padding id beyond it, is refused when the tokenizer is read.
#[test]
fn tokenizer_ids_beyond_the_embedding_table_are_refused() {
    use focal::pretrained::TextTokenizer;
    let dir = copy_of("bert");
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(TextTokenizer::load(dir.path(), 64, 162, None).is_ok());
    let err = TextTokenizer::load(dir.path(), 64, 100, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has id 100, but the model's embedding table has 100 rows"),
        "{err}"
    );
    let err = TextTokenizer::load(dir.path(), 64, 162, Some((500, "[PAD]".into())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("padding token \"[PAD]\" has id 500"), "{err}");
    tokenizer["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 4000, "content": "[NEW]", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    // tokenizers gives the added token the next free id: the table's 163rd row.
    let err = TextTokenizer::load(dir.path(), 64, 162, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("token \"[NEW]\" has id 162"), "{err}");

    // A post-processor's special token with an id of its own beyond the table (it used to
    // reach burn-ndarray's index and panic there).
    let dir = copy_of("bert");
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["post_processor"]["special_tokens"]["[CLS]"]["ids"] = serde_json::json!([999999]);
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let err = TextTokenizer::load(dir.path(), 64, 162, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the special token \"[CLS]\" that the post-processor adds has id 999999"),
        "{err}"
    );
}

/// A longest input that leaves no room for text beside the special tokens (BERT: 2 around a
/// text, 3 around a pair) is refused by name instead of failing inside the tokenizer.
#[test]
fn a_length_without_room_for_text_is_refused() {
    use focal::pretrained::TextTokenizer;
    let dir = fixtures().join("bert");
    let texts = ["paris".to_string()];
    // Too short for a single text: refused as the tokenizer is read (setting truncation
    // itself would underflow inside tokenizers).
    for max_len in [1, 2] {
        let err = TextTokenizer::load(&dir, max_len, 162, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 3"), "{max_len}: {err}");
    }
    // Long enough for a text, not for a pair: refused when pairs are encoded.
    let tokenizer = TextTokenizer::load(&dir, 3, 162, None).unwrap();
    let err = tokenizer
        .encode(&texts, Some(&texts))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 4"), "{err}");
    let tokenizer = TextTokenizer::load(&dir, 3, 162, None).unwrap();
    assert!(tokenizer.encode(&texts, None).is_ok());
    let tokenizer = TextTokenizer::load(&dir, 4, 162, None).unwrap();
    assert!(tokenizer.encode(&texts, Some(&texts)).is_ok());
}

/// A tokenizer file with a fixed padding longer than the model is not padded past it, and
/// truncation keeps every input within the model's positions.
#[test]
fn tokenizer_files_cannot_make_inputs_longer_than_the_model() {
    use focal::pretrained::TextTokenizer;
    let dir = copy_of("bert");
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["padding"] = serde_json::json!({
        "strategy": {"Fixed": 600}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"
    });
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let long = "hello ".repeat(500);
    for pad in [None, Some((0, "[PAD]".to_string()))] {
        let tokenizer = TextTokenizer::load(dir.path(), 64, 162, pad.clone()).unwrap();
        let batch = tokenizer
            .encode_batch(&["hello".into(), long.clone()])
            .unwrap();
        for ids in &batch.ids {
            assert!(ids.len() <= 64, "{pad:?}: {} tokens", ids.len());
        }
        if pad.is_none() {
            assert!(
                batch.ids[0].len() < 10,
                "no fixed padding: {}",
                batch.ids[0].len()
            );
        }
    }
}

/// sentence-transformers options Focal does not run are errors naming them, not ignored:
/// modules other than Transformer, Pooling and Normalize, the pooling modes it lacks, a
/// pooling width that is not the model's, and a `max_seq_length` too short to truncate to.
#[test]
fn sentence_transformers_options_focal_lacks_are_refused() {
    use focal::pretrained::SentenceEmbedder;
    let setup = |modules: serde_json::Value,
                 pooling: serde_json::Value,
                 sbert: Option<serde_json::Value>| {
        let dir = copy_of("bert");
        std::fs::write(dir.path().join("modules.json"), modules.to_string()).unwrap();
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            pooling.to_string(),
        )
        .unwrap();
        if let Some(sbert) = sbert {
            std::fs::write(
                dir.path().join("sentence_bert_config.json"),
                sbert.to_string(),
            )
            .unwrap();
        }
        dir
    };
    let modules = |extra: Option<&str>| {
        let mut list = vec![
            serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        if let Some(kind) = extra {
            list.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Extra", "type": kind}));
        }
        serde_json::Value::Array(list)
    };
    let mean =
        serde_json::json!({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true});
    let load = |dir: &tempfile::TempDir| {
        SentenceEmbedder::<B>::load(dir.path(), &Default::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(load(&setup(modules(None), mean.clone(), None)).is_ok());
    assert!(
        load(&setup(
            modules(Some("sentence_transformers.models.Normalize")),
            mean.clone(),
            None
        ))
        .is_ok()
    );
    let cases = [
        (
            setup(
                modules(Some("sentence_transformers.models.Dense")),
                mean.clone(),
                None,
            ),
            "unsupported option module = sentence_transformers.models.Dense at '2_Extra'",
        ),
        (
            setup(modules(Some("my_package.Custom")), mean.clone(), None),
            "my_package.Custom",
        ),
        (
            setup(
                modules(None),
                serde_json::json!({"pooling_mode_mean_sqrt_len_tokens": true}),
                None,
            ),
            "pooling_mode_mean_sqrt_len_tokens = true",
        ),
        (
            setup(
                modules(None),
                serde_json::json!({"pooling_mode_weightedmean_tokens": true}),
                None,
            ),
            "pooling_mode_weightedmean_tokens = true",
        ),
        (
            setup(
                modules(None),
                serde_json::json!({"pooling_mode_lasttoken": true}),
                None,
            ),
            "pooling_mode_lasttoken = true",
        ),
        (
            setup(
                modules(None),
                serde_json::json!({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}),
                None,
            ),
            "word_embedding_dimension = 384 (the model's hidden_size is 32)",
        ),
        (
            setup(
                modules(None),
                mean.clone(),
                Some(serde_json::json!({"max_seq_length": 1})),
            ),
            "max_seq_length = 1 (at least 2",
        ),
        (
            setup(
                modules(None),
                mean.clone(),
                Some(serde_json::json!({"max_seq_length": 0})),
            ),
            "max_seq_length = 0 (at least 2",
        ),
    ];
    for (dir, expected) in cases {
        let err = load(&dir).unwrap_err();
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
    }
    // A longer max_seq_length than the model's positions is bounded by them.
    let dir = setup(
        modules(None),
        mean,
        Some(serde_json::json!({"max_seq_length": 100000})),
    );
    let embedder = SentenceEmbedder::<B>::load(dir.path(), &Default::default()).unwrap();
    assert_eq!(embedder.max_len, 64);
    // A configuration that is not a JSON object is refused, naming the file (serde alone
    // reads an array into the struct, field by field).
    for array in ["[128]", "[128, true]"] {
        let dir = setup(modules(None), serde_json::json!({}), None);
        std::fs::write(dir.path().join("sentence_bert_config.json"), array).unwrap();
        let err = load(&dir).unwrap_err();
        assert!(
            err.contains("sentence_bert_config.json") && err.contains("expected a JSON object"),
            "{array}: {err}"
        );
    }
}

/// The training-mode graph has dropout where transformers has it, at the rates the config
/// names: BERT after the embeddings' LayerNorm (`hidden_dropout_prob`), on the attention
/// probabilities (`attention_probs_dropout_prob`) and on each sublayer's output before its
/// residual (`hidden_dropout_prob`), none inside the feed-forward; GPT-2 on the summed
/// embeddings (`embd_pdrop`), the attention probabilities (`attn_pdrop`) and the sublayer
/// outputs (`resid_pdrop`). Read from the modules' own description (burn's `Display`), each
/// rate distinct so that each counts its places.
#[test]
fn dropout_sits_where_transformers_puts_it() {
    let with_rates = |family: &str, rates: &[(&str, f64)]| {
        let dir = copy_of(family);
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (key, rate) in rates {
            config[*key] = (*rate).into();
        }
        std::fs::write(&path, config.to_string()).unwrap();
        dir
    };
    let count = |text: &str, rate: &str| text.matches(&format!("prob: {rate} }}")).count();
    let dir = with_rates(
        "bert",
        &[
            ("hidden_dropout_prob", 0.125),
            ("attention_probs_dropout_prob", 0.375),
        ],
    );
    let (bert, config) = Bert::<B>::load(dir.path(), &Default::default()).unwrap();
    let layers = config.num_hidden_layers;
    let text = format!("{bert}");
    assert_eq!(count(&text, "0.125"), 1 + 2 * layers, "{text}");
    assert_eq!(count(&text, "0.375"), layers, "{text}");
    // The token embedding's own dropout (before the LayerNorm) and the feed-forward's.
    assert_eq!(count(&text, "0.0"), 1 + layers, "{text}");

    let dir = with_rates(
        "gpt2",
        &[
            ("embd_pdrop", 0.25),
            ("attn_pdrop", 0.375),
            ("resid_pdrop", 0.125),
        ],
    );
    let (gpt2, config) = Gpt2::<B>::load(dir.path(), &Default::default()).unwrap();
    let text = format!("{gpt2}");
    assert_eq!(count(&text, "0.25"), 1, "{text}");
    assert_eq!(count(&text, "0.375"), config.n_layer, "{text}");
    assert_eq!(count(&text, "0.125"), 2 * config.n_layer, "{text}");
    assert_eq!(count(&text, "0.0"), config.n_layer, "{text}");
}

/// sentence-transformers' `do_lower_case` lowercases the texts before the tokenizer sees them,
/// whatever the tokenizer does: with a tokenizer that keeps case, `HELLO World` embeds as
/// `hello world` when the directory says so, and otherwise differently.
#[test]
fn sentence_transformers_do_lower_case_is_applied() {
    use focal::pretrained::TextMatcher;
    let embed = |lower: Option<bool>| {
        let dir = copy_of("bert");
        let path = dir.path().join("tokenizer.json");
        let mut tokenizer: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        tokenizer["normalizer"]["lowercase"] = serde_json::json!(false);
        std::fs::write(&path, tokenizer.to_string()).unwrap();
        if let Some(lower) = lower {
            std::fs::write(
                dir.path().join("sentence_bert_config.json"),
                serde_json::json!({"max_seq_length": 64, "do_lower_case": lower}).to_string(),
            )
            .unwrap();
        }
        let matcher = TextMatcher::<B>::load(dir.path(), &Default::default()).unwrap();
        let texts = ["HELLO World".to_string(), "hello world".to_string()];
        let values: Vec<f32> = matcher.embed(&texts).unwrap().into_data().to_vec().unwrap();
        let (upper, lower) = values.split_at(values.len() / 2);
        (upper.to_vec(), lower.to_vec())
    };
    let (upper, lower) = embed(Some(true));
    assert_eq!(upper, lower);
    for setting in [Some(false), None] {
        let (upper, lower) = embed(setting);
        assert_ne!(upper, lower, "{setting:?}");
    }
}

/// BERT's and GPT-2's config.json with every value replaced in turn by null, a string, -1, 0,
/// 1.5, 1e300, 10¹⁵, [] and {} (`common::json_variants`): each loads or is a one-line typed
/// error, none panics or aborts (10¹⁵ layers or positions are refused by their size).
#[test]
fn malformed_hugging_face_configs_are_errors_never_panics() {
    let mut cases = 0;
    let mut panicked = Vec::new();
    for family in ["bert", "gpt2"] {
        let dir = copy_of(family);
        let path = dir.path().join("config.json");
        let good: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (what, changed) in common::json_variants(&good) {
            std::fs::write(&path, changed.to_string()).unwrap();
            let result = std::panic::catch_unwind(|| match family {
                "bert" => Bert::<B>::load(dir.path(), &Default::default())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                _ => Gpt2::<B>::load(dir.path(), &Default::default())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            });
            cases += 1;
            match result {
                Ok(Err(message)) => assert_eq!(message.lines().count(), 1, "{message}"),
                Ok(Ok(())) => {}
                Err(_) => panicked.push(format!("{family} {what}")),
            }
        }
    }
    assert!(panicked.is_empty(), "panics: {panicked:?}");
    assert!(cases > 300, "{cases}");
}

//! Golden parity of the task heads with transformers 4.57.1: tiny random-initialised
//! `BertForSequenceClassification` (single-label, multi-label, regression),
//! `BertForTokenClassification` and `BertForQuestionAnswering` directories in
//! `tests/fixtures/heads/`, against the logits, losses and pipeline outputs recorded in
//! `tests/fixtures/heads_reference.{safetensors,json}`. Logits and scores match within 1e-4;
//! labels, entity spans, answers and offsets exactly. Regenerate from the repository root with
//!
//! ```sh
//! pip install torch==2.15.0 transformers==4.57.1 safetensors
//! python tests/fixtures/generate_heads.py
//! ```

use focal::attention::FusedAttentionBackend;
use focal::backend::{Tolerance, assert_close};
use focal::burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use focal::heads::{AnswerSearch, ClassTargets, align_word_labels};
use focal::pretrained::{QaSettings, QuestionAnswerer, Tagger, TextClassifier};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common;

const TOLERANCE: f64 = 1e-4;

fn heads(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/heads")
        .join(name)
}

fn reference() -> &'static common::Fixture {
    static FIXTURE: OnceLock<common::Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        common::Fixture::parse(include_bytes!("../../fixtures/heads_reference.safetensors"))
    })
}

fn json() -> Value {
    serde_json::from_str(include_str!("../../fixtures/heads_reference.json")).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    serde_json::from_value(value.clone()).unwrap()
}

fn ints(value: &Value) -> Vec<Vec<i64>> {
    serde_json::from_value(value.clone()).unwrap()
}

fn close(ours: f64, theirs: &Value, what: &str) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= TOLERANCE,
        "{what}: {ours} against transformers' {theirs}"
    );
}

/// A list of label/score objects as (labels, scores).
fn label_scores(value: &Value) -> (Vec<String>, Vec<f64>) {
    let items = value.as_array().unwrap();
    (
        items
            .iter()
            .map(|i| i["label"].as_str().unwrap().to_string())
            .collect(),
        items.iter().map(|i| i["score"].as_f64().unwrap()).collect(),
    )
}

/// Every sequence classifier: ids, logits of texts and of pairs, the loss, and the
/// text-classification pipeline with all labels and with the best one.
fn sequence_classifiers_match_transformers<B: FusedAttentionBackend>(device: &B::Device) {
    let all = json();
    for name in ["classify", "multilabel", "regress"] {
        let case = &all[name];
        let classifier = TextClassifier::<B>::load(&heads(name), device).unwrap();
        let texts = strings(&case["texts"]);
        let encoded = classifier.tokenizer.encode_batch(&texts).unwrap();
        let ours: Vec<Vec<i64>> = encoded
            .ids
            .iter()
            .map(|r| r.iter().map(|&t| i64::from(t)).collect())
            .collect();
        assert_eq!(ours, ints(&case["input_ids"]), "{name}: input ids");

        let tolerance = Tolerance::new(TOLERANCE, TOLERANCE);
        let logits = classifier.logits(&texts, None).unwrap();
        assert_close(
            logits.clone(),
            reference().tensor(&format!("{name}.logits"), device),
            tolerance,
        );
        let pairs: Vec<(String, String)> = serde_json::from_value(case["pairs"].clone()).unwrap();
        let (firsts, seconds): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        assert_close(
            classifier.logits(&firsts, Some(&seconds)).unwrap(),
            reference().tensor(&format!("{name}.pair_logits"), device),
            tolerance,
        );

        let targets = match name {
            "classify" => {
                let ids: Vec<i64> = serde_json::from_value(case["targets"].clone()).unwrap();
                ClassTargets::Classes(Tensor::<B, 1, Int>::from_data(
                    TensorData::new(ids.clone(), [ids.len()]),
                    device,
                ))
            }
            _ => {
                let values: Vec<Vec<f32>> = match &case["targets"][0] {
                    Value::Array(_) => serde_json::from_value(case["targets"].clone()).unwrap(),
                    _ => {
                        let flat: Vec<f32> =
                            serde_json::from_value(case["targets"].clone()).unwrap();
                        flat.into_iter().map(|v| vec![v]).collect()
                    }
                };
                let shape = [values.len(), values[0].len()];
                let flat: Vec<f32> = values.into_iter().flatten().collect();
                ClassTargets::Values(Tensor::from_data(TensorData::new(flat, shape), device))
            }
        };
        let loss = classifier.model.head.loss(logits, targets).unwrap();
        close(
            f64::from(loss.into_scalar().elem::<f32>()),
            &case["loss"],
            &format!("{name}: loss"),
        );

        for (key, top_k, ours) in [
            (
                "pipeline",
                None,
                classifier.classify(&texts, None, None).unwrap(),
            ),
            (
                "pipeline_top1",
                Some(1),
                classifier.classify(&texts, None, Some(1)).unwrap(),
            ),
            (
                "pair_pipeline",
                None,
                classifier.classify(&firsts, Some(&seconds), None).unwrap(),
            ),
        ] {
            let rows = case[key].as_array().unwrap();
            assert_eq!(ours.len(), rows.len(), "{name} {key}: rows");
            for (row, theirs) in ours.iter().zip(rows) {
                // Without top_k, transformers returns the best label alone, not in a list.
                let theirs = if top_k == Some(1) {
                    Value::Array(vec![theirs.clone()])
                } else {
                    theirs.clone()
                };
                let (labels, scores) = label_scores(&theirs);
                let our_labels: Vec<&str> = row.iter().map(|r| r.label.as_str()).collect();
                assert_eq!(our_labels, labels, "{name} {key}: labels");
                assert_eq!(row.len(), scores.len(), "{name} {key}: scores");
                for (ours, theirs) in row.iter().zip(scores) {
                    close(
                        f64::from(ours.score),
                        &theirs.into(),
                        &format!("{name} {key}"),
                    );
                }
            }
        }
    }
}

/// Token classification: logits, word labels aligned to word pieces, the loss, and the
/// token-classification pipeline's entity groups.
fn token_classifier_matches_transformers<B: FusedAttentionBackend>(device: &B::Device) {
    let case = &json()["tag"];
    let tagger = Tagger::<B>::load(&heads("tag"), device).unwrap();
    let texts = strings(&case["texts"]);
    let (encodings, logits) = tagger.logits(&texts).unwrap();
    assert_close(
        logits.clone(),
        reference().tensor("tag.logits", device),
        Tolerance::new(TOLERANCE, TOLERANCE),
    );
    let word_labels = ints(&case["word_labels"]);
    let aligned: Vec<Vec<i64>> = encodings
        .iter()
        .zip(&word_labels)
        .map(|(e, labels)| {
            let words: Vec<Option<usize>> = e
                .get_word_ids()
                .iter()
                .map(|w| w.map(|w| w as usize))
                .collect();
            align_word_labels(&words, labels).unwrap()
        })
        .collect();
    assert_eq!(aligned, ints(&case["aligned_labels"]));
    let [b, l] = [aligned.len(), aligned[0].len()];
    let tags = Tensor::<B, 2, Int>::from_data(
        TensorData::new(aligned.into_iter().flatten().collect::<Vec<_>>(), [b, l]),
        device,
    );
    let loss = tagger.model.head.loss(logits, tags);
    close(
        f64::from(loss.into_scalar().elem::<f32>()),
        &case["loss"],
        "tag loss",
    );

    let ours = tagger.tag(&texts).unwrap();
    let rows = case["pipeline"].as_array().unwrap();
    assert_eq!(ours.len(), rows.len(), "texts tagged");
    for (row, theirs) in ours.iter().zip(rows) {
        let theirs = theirs.as_array().unwrap();
        assert_eq!(
            row.len(),
            theirs.len(),
            "entities {row:?} against {theirs:?}"
        );
        for (entity, expected) in row.iter().zip(theirs) {
            assert_eq!(
                entity.entity_group,
                expected["entity_group"].as_str().unwrap()
            );
            assert_eq!(entity.word, expected["word"].as_str().unwrap());
            assert_eq!(entity.start as u64, expected["start"].as_u64().unwrap());
            assert_eq!(entity.end as u64, expected["end"].as_u64().unwrap());
            close(f64::from(entity.score), &expected["score"], "entity score");
        }
    }
}

/// Start and end logits of the recorded short question and context (no padding).
fn short_qa_logits<B: FusedAttentionBackend>(
    answerer: &QuestionAnswerer<B>,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let case = &json()["qa"];
    let ids = common::int_tensor::<B>(&ints(&case["short_input_ids"]), device);
    let types = common::int_tensor(&ints(&case["short_token_type_ids"]), device);
    let valid = ids.clone().ones_like().equal_elem(1);
    answerer.model.forward((ids, types, valid))
}

/// Question answering: start/end logits and the loss on a short context; the pipeline's answers
/// on a context longer than its windows, with three settings (top-k, no-answer, lengths).
fn question_answering_matches_transformers<B: FusedAttentionBackend>(device: &B::Device) {
    let case = &json()["qa"];
    let answerer = QuestionAnswerer::<B>::load(&heads("qa"), device).unwrap();
    let (start, end) = short_qa_logits(&answerer, device);
    let tolerance = Tolerance::new(TOLERANCE, TOLERANCE);
    assert_close(
        start.clone(),
        reference().tensor("qa.start_logits", device),
        tolerance,
    );
    assert_close(
        end.clone(),
        reference().tensor("qa.end_logits", device),
        tolerance,
    );
    let positions = |key: &str| {
        let p: Vec<i64> = serde_json::from_value(case[key].clone()).unwrap();
        Tensor::<B, 1, Int>::from_data(TensorData::new(p.clone(), [p.len()]), device)
    };
    let loss = answerer.model.head.loss(
        start,
        end,
        positions("start_positions"),
        positions("end_positions"),
    );
    close(
        f64::from(loss.into_scalar().elem::<f32>()),
        &case["loss"],
        "qa loss",
    );

    let question = case["question"].as_str().unwrap();
    let context = case["context"].as_str().unwrap();
    for run in case["pipeline"].as_array().unwrap() {
        let s = &run["settings"];
        let settings = QaSettings {
            search: AnswerSearch {
                top_k: s["top_k"].as_u64().unwrap() as usize,
                max_answer_len: s["max_answer_len"].as_u64().unwrap() as usize,
                handle_impossible_answer: s["handle_impossible_answer"].as_bool().unwrap(),
            },
            max_seq_len: Some(s["max_seq_len"].as_u64().unwrap() as usize),
            doc_stride: Some(s["doc_stride"].as_u64().unwrap() as usize),
        };
        let windows = answerer
            .tokenizer
            .encode_windows(
                question,
                context,
                settings.max_seq_len.unwrap(),
                settings.doc_stride.unwrap(),
            )
            .unwrap();
        assert!(windows.len() > 1, "the context must need several windows");
        let ours = answerer.answer(question, context, &settings).unwrap();
        let theirs = match &run["answers"] {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        let describe = |a: &[focal::heads::Answer]| format!("{a:?}");
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{} against {theirs:?}",
            describe(&ours)
        );
        for (answer, expected) in ours.iter().zip(&theirs) {
            assert_eq!(
                answer.answer,
                expected["answer"].as_str().unwrap(),
                "{settings:?}"
            );
            assert_eq!(answer.start as u64, expected["start"].as_u64().unwrap());
            assert_eq!(answer.end as u64, expected["end"].as_u64().unwrap());
            close(answer.score, &expected["score"], "answer score");
        }
    }
}

/// Tensors of a safetensors file by name, as raw little-endian bytes with their shapes.
fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Saves the fixture head `name` as Focal writes a Hugging Face directory, into `out`; returns
/// the pipeline's logits of the saved directory loaded back (start and end logits stacked for
/// question answering).
fn save_head<B: FusedAttentionBackend>(name: &str, out: &Path, device: &B::Device) {
    match name {
        "tag" => {
            let tagger = Tagger::<B>::load(&heads(name), device).unwrap();
            tagger.model.save_pretrained(out, &tagger.config).unwrap();
        }
        "qa" => {
            let answerer = QuestionAnswerer::<B>::load(&heads(name), device).unwrap();
            answerer
                .model
                .save_pretrained(out, &answerer.config)
                .unwrap();
        }
        _ => {
            let classifier = TextClassifier::<B>::load(&heads(name), device).unwrap();
            classifier
                .model
                .save_pretrained(out, &classifier.config)
                .unwrap();
        }
    }
}

const SAVED_HEADS: [&str; 5] = ["classify", "multilabel", "regress", "tag", "qa"];

/// Every head saved by Focal as a Hugging Face directory: the weights equal the transformers
/// fixture's bit for bit under the same names; config.json is the one that transformers loaded
/// without missing or unexpected keys (`tests/fixtures/heads_saved_report.json`, written by
/// `tests/fixtures/check_saved_heads.py` from the directories that
/// `write_saved_heads_for_transformers` writes); and the saved directory loads back in Focal
/// with the logits transformers computed from it.
fn saved_heads_load_in_transformers<B: FusedAttentionBackend>(device: &B::Device) {
    let report: Value =
        serde_json::from_str(include_str!("../../fixtures/heads_saved_report.json")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let tolerance = Tolerance::new(TOLERANCE, TOLERANCE);
    let all = json();
    for name in SAVED_HEADS {
        let out = root.path().join(name);
        save_head::<B>(name, &out, device);
        let expected = &report[name];
        let texts = || strings(&all[name]["texts"]);
        match name {
            "tag" => {
                let saved = Tagger::<B>::load(&out, device).unwrap();
                let (_, logits) = saved.logits(&texts()).unwrap();
                let theirs = common::json_tensor(&expected["logits"], device);
                assert_close(logits, theirs, tolerance);
            }
            "qa" => {
                let saved = QuestionAnswerer::<B>::load(&out, device).unwrap();
                let (start, end) = short_qa_logits(&saved, device);
                let theirs = &expected["logits"];
                assert_close(start, common::json_tensor(&theirs[0], device), tolerance);
                assert_close(end, common::json_tensor(&theirs[1], device), tolerance);
            }
            _ => {
                let original = TextClassifier::<B>::load(&heads(name), device).unwrap();
                let saved = TextClassifier::<B>::load(&out, device).unwrap();
                assert_eq!(saved.config.labels, original.config.labels);
                assert_eq!(saved.config.problem_type, original.config.problem_type);
                let logits = saved.logits(&texts(), None).unwrap();
                let theirs = common::json_tensor(&expected["logits"], device);
                assert_close(logits, theirs, tolerance);
            }
        }
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config, expected["config"], "{name}: config.json");
        assert_eq!(
            tensors(&out.join("model.safetensors")),
            tensors(&heads(name).join("model.safetensors")),
            "{name}: weights"
        );
        assert!(out.join("tokenizer.json").is_file());
    }
}

/// Writes the saved heads into `FOCAL_SAVED_HEADS_DIR` for `tests/fixtures/check_saved_heads.py`
/// to load in transformers (run by hand: `FOCAL_SAVED_HEADS_DIR=DIR cargo test -p focal-tests
/// --test integration -- --ignored write_saved_heads`).
#[test]
#[ignore = "writes fixtures for a Python script; run by hand"]
fn write_saved_heads_for_transformers() {
    let root = PathBuf::from(
        std::env::var_os("FOCAL_SAVED_HEADS_DIR").expect("set FOCAL_SAVED_HEADS_DIR"),
    );
    for name in SAVED_HEADS {
        save_head::<focal::backend::NdArray>(name, &root.join(name), &Default::default());
    }
}

/// A one-output classifier whose `config.json` states no `problem_type` (transformers infers
/// regression for its loss) is scored by a sigmoid in transformers' text-classification
/// pipeline; with `problem_type: regression` stated, by its raw value
/// (`tests/fixtures/review/one_logit_reference.json`, `tests/fixtures/generate_review.py`).
fn one_logit_classifier_scores_as_the_pipeline<B: FusedAttentionBackend>(device: &B::Device) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/review");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("one_logit_reference.json")).unwrap(),
    )
    .unwrap();
    let stated = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures.join("one-logit")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), stated.path().join(entry.file_name())).unwrap();
    }
    let config_path = stated.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert!(config.get("problem_type").is_none());
    config["problem_type"] = "regression".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    for (dir, key) in [
        (fixtures.join("one-logit"), "no_problem_type"),
        (stated.path().to_path_buf(), "regression_override"),
    ] {
        let classifier = TextClassifier::<B>::load(&dir, device).unwrap();
        let case = &reference[key];
        let rows = case["texts"].as_array().unwrap();
        let texts: Vec<String> = rows
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_string())
            .collect();
        let ours = classifier.classify(&texts, None, None).unwrap();
        assert_eq!(ours.len(), rows.len(), "{key}");
        for (row, theirs) in ours.iter().zip(rows) {
            let (labels, scores) = label_scores(&theirs["pipeline_top_k_none"]);
            let our_labels: Vec<&str> = row.iter().map(|r| r.label.as_str()).collect();
            assert_eq!(our_labels, labels, "{key}");
            assert_eq!(row.len(), scores.len(), "{key}");
            for (ours, theirs) in row.iter().zip(scores) {
                // The three texts' scores differ by about 1e-3: a tolerance well below that.
                assert!(
                    (f64::from(ours.score) - theirs).abs() < 1e-5,
                    "{key}: {} against transformers' {theirs}",
                    ours.score
                );
            }
        }
    }
}

focal::backend::backend_tests!(
    sequence_classifiers_match_transformers,
    token_classifier_matches_transformers,
    question_answering_matches_transformers,
    saved_heads_load_in_transformers,
    one_logit_classifier_scores_as_the_pipeline
);

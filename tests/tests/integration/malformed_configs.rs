//! A Focal model directory's `config.json` broken every way a generator can: a typed error or
//! a model, never a panic.

use crate::common;

use focal::backend::NdArray;
use focal::heads::Seq2SeqConfig;
use focal::train::{ModelArtifact, ReverseTask, Seq2SeqTask, load_checkpoint, save_checkpoint};

/// config.json with every value replaced in turn by a wrong type, a negative, zero, a
/// fraction, a huge number, an empty list and an empty object (155 documents),
/// plus an empty and a truncated file: each loads or is a typed error, none panics or
/// aborts.
#[test]
fn malformed_configs_are_errors_never_panics() {
    let device = Default::default();
    let vocabulary = ReverseTask::default().vocabulary();
    let model = Seq2SeqConfig::new(vocabulary.len(), vocabulary.len())
        .with_d_model(16)
        .with_n_heads(2)
        .with_d_ff(32)
        .with_n_encoder_layers(1)
        .with_n_decoder_layers(1)
        .with_max_len(16);
    let artifact = ModelArtifact::new("reverse", model, vocabulary, 12, 13);
    let model = artifact.model.init::<NdArray>(&device);
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &artifact, &model).unwrap();
    let path = dir.path().join("config.json");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut documents: Vec<(String, Vec<u8>)> = common::json_variants(&good)
        .into_iter()
        .map(|(what, json)| (what, serde_json::to_vec(&json).unwrap()))
        .collect();
    let text = serde_json::to_vec(&good).unwrap();
    documents.push(("empty file".into(), Vec::new()));
    documents.push(("truncated".into(), text[..text.len() / 2].to_vec()));
    let mut panicked = Vec::new();
    let mut refused = 0;
    for (what, bytes) in &documents {
        std::fs::write(&path, bytes).unwrap();
        match std::panic::catch_unwind(|| load_checkpoint::<NdArray>(dir.path(), &device)) {
            Ok(Err(err)) => {
                assert!(!err.to_string().contains('\n'), "{what}: {err}");
                refused += 1;
            }
            Ok(Ok(_)) => {}
            Err(_) => panicked.push(what.clone()),
        }
    }
    assert!(panicked.is_empty(), "panics: {panicked:?}");
    assert!(
        documents.len() > 100 && refused > documents.len() / 2,
        "{refused} of {}",
        documents.len()
    );
}

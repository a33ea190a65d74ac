//! End-to-end tests of the `focal` binary: bad input gets one line on stderr and a non-zero
//! exit; a short training run writes a model directory that `translate` loads.

use std::path::Path;
use std::process::{Command, Output};

fn focal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the focal binary runs")
}

/// Asserts a failure with exactly one line on stderr containing `expected`.
#[track_caller]
fn assert_one_line_error(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        !output.status.success(),
        "expected failure, stderr: {stderr}"
    );
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(expected),
        "expected '{expected}' in: {stderr}"
    );
}

#[test]
fn unknown_backend_is_one_line() {
    let out = focal(&["--backend", "cuda", "info"]);
    assert_one_line_error(
        &out,
        "unknown backend 'cuda': expected one of ndarray, wgpu",
    );
}

#[test]
fn unknown_task_is_one_line() {
    let out = focal(&["train", "--task", "juggle"]);
    assert_one_line_error(
        &out,
        "unknown task 'juggle': expected one of reverse, classify, pair, multilabel, regress, tag, qa, lm",
    );
}

#[test]
fn missing_arguments_are_one_line() {
    let out = focal(&["translate", "1 2 3"]);
    assert_one_line_error(&out, "--model");
}

#[test]
fn missing_model_directory_is_one_line() {
    let out = focal(&["translate", "--model", "/nonexistent/run", "1 2 3"]);
    assert_one_line_error(&out, "model directory /nonexistent/run does not exist");
}

#[test]
fn corrupt_checkpoint_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), b"{\"format\": 3").unwrap();
    let out = focal(&["translate", "--model", dir.path().to_str().unwrap(), "1 2"]);
    assert_one_line_error(&out, "config.json: invalid model config");
}

#[test]
fn invalid_settings_are_one_line() {
    let out = focal(&["train", "--task", "reverse", "--batch-size", "0"]);
    assert_one_line_error(&out, "batch_size must be at least 1, got 0");
}

#[test]
fn info_lists_the_backends() {
    let out = focal(&["info", "--json"]);
    assert_success(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["burn"], "0.21.0");
    assert!(
        info["backends"]
            .as_array()
            .unwrap()
            .contains(&"ndarray".into())
    );
    // With an adapter, its largest buffer: the largest tensor the wgpu backend can hold.
    if let Some(adapter) = info["wgpu_adapter"]
        .as_object()
        .filter(|a| a.contains_key("name"))
    {
        let bytes = adapter["max_buffer_bytes"].as_u64().unwrap_or(0);
        assert!(bytes >= 1 << 20, "{adapter:?}");
    }
}

/// Trains for a few steps, then translates with the directory it wrote; an unknown token and a
/// truncated weights file each give one line.
#[test]
fn train_then_translate_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_str = run.to_str().unwrap();
    let out = focal(&[
        "train",
        "--task",
        "reverse",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--out",
        run_str,
        "--json",
    ]);
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], 6);
    assert_eq!(report["final_metrics"]["examples"], 500);
    for file in ["config.json", "model.safetensors", "metrics.json"] {
        assert!(Path::new(run_str).join(file).is_file(), "{file} missing");
    }

    let out = focal(&["translate", "--model", run_str, "3 1 4 1 5", "2 7"]);
    assert_success(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for line in stdout.lines() {
        assert!(
            line.split_whitespace()
                .all(|t| t.len() == 1 && t.chars().all(|c| c.is_ascii_digit())),
            "{line}"
        );
    }

    let out = focal(&["translate", "--model", run_str, "1 2 3 4 5 6 7 8 9 0 1 2 3"]);
    assert_one_line_error(&out, "has 13 tokens; this model takes at most 12");

    let out = focal(&["translate", "--model", run_str, "3 x 4"]);
    assert_one_line_error(&out, "token 'x' (position 2) is not in the vocabulary");

    // A long input is echoed cut, and control characters escaped, not sent to the terminal.
    let long = format!("\u{1b}[31m{}", " 7".repeat(50_000));
    let out = focal(&["translate", "--model", run_str, &long]);
    assert_one_line_error(&out, "(100005 characters)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.len() < 400, "{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && stderr.contains("\\u{1b}"),
        "{stderr}"
    );

    // Results that cannot be written are one line (a full disk), or end quietly (a closed pipe).
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["translate", "--model", run_str, "3 1 4"])
        .stdout(full)
        .output()
        .unwrap();
    assert_one_line_error(&out, "writing to standard output: No space left on device");

    let weights = run.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..100]).unwrap();
    let out = focal(&["translate", "--model", run_str, "1 2"]);
    assert_one_line_error(&out, "model.safetensors: corrupt weights");
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Fails with the command's stderr unless it succeeded.
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json_stdout(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// Standard output as JSON Lines, one value per line.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON value per line"))
        .collect()
}

/// Runs focal with `args`, aborted at the test-only fault point `fault` (its variable,
/// `FOCAL_TEST_WRITE_ABORT_AT` or `FOCAL_TEST_ABORT_AFTER_BATCH`, and the point) as a kill would
/// stop it; unstopped without one.
fn focal_stopped_at(args: &[&str], fault: Option<(&str, usize)>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_focal"));
    command.args(args).env_remove("RUST_LOG");
    if let Some((variable, point)) = fault {
        command.env(variable, point.to_string());
    }
    command.output().expect("the focal binary runs")
}

/// Runs focal with `stdin` as its standard input.
fn focal_with_input(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the focal binary runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn embed_prints_one_vector_per_text() {
    let model = fixture("bert");
    let lines = json_lines(&focal(&[
        "--json",
        "embed",
        "--model",
        &model,
        "--normalize",
        "he was here .",
        "the city",
    ]));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["text"], "the city");
    for line in lines {
        let v: Vec<f64> = serde_json::from_value(line["embedding"].clone()).unwrap();
        assert_eq!(v.len(), 32);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

fn heads(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/heads")
        .join(name)
        .display()
        .to_string()
}

/// `focal classify` on arguments, on pairs, and streamed from standard input in batches smaller
/// than the input (JSON Lines with line numbers; an empty line skipped with one warning); the
/// labels are the model's, best first, as transformers' pipeline gives them.
#[test]
fn classify_reads_arguments_pairs_and_standard_input() {
    let model = heads("classify");
    let out = focal(&[
        "classify",
        "--model",
        &model,
        "the capital of france is paris .",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_success(&out);
    // transformers: neutral 0.68236, negative 0.25060, positive 0.06704.
    assert_eq!(stdout, "neutral 0.6824\tthe capital of france is paris .\n");

    let lines = json_lines(&focal(&[
        "--json",
        "classify",
        "--model",
        &model,
        "--top-k",
        "9",
        "what did he say",
        "--pair",
        "he said that he would come back .",
    ]));
    let labels: Vec<&str> = lines[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 3);
    assert_eq!(lines[0]["pair"], "he said that he would come back .");

    let input = "the city\n\nhe was here\nthe world\n\n";
    let out = focal_with_input(
        &["--json", "classify", "--model", &model, "--batch-size", "2"],
        input,
    );
    let lines = json_lines(&out);
    let numbers: Vec<u64> = lines.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 3, 4]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2 is empty: skipped"), "{stderr}");
    assert!(stderr.contains("2 empty texts were skipped"), "{stderr}");

    let out = focal_with_input(
        &["classify", "--model", &model, "--pairs"],
        "a question\tits pair\nno tab here\n",
    );
    assert_one_line_error(&out, "line 2: --pairs needs TEXT<TAB>SECOND TEXT");
}

/// `focal tag` prints the entity groups of transformers' pipeline (simple aggregation).
#[test]
fn tag_prints_entities_with_offsets() {
    let lines = json_lines(&focal(&[
        "--json",
        "tag",
        "--model",
        &heads("tag"),
        "the capital of france is paris .",
    ]));
    let entities: Vec<(String, String, u64, u64)> = lines[0]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["entity_group"].as_str().unwrap().to_string(),
                e["word"].as_str().unwrap().to_string(),
                e["start"].as_u64().unwrap(),
                e["end"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("LOC", "the", 0, 3),
        ("ORG", "of", 12, 14),
        ("LOC", "france", 15, 21),
        ("LOC", "paris.", 25, 32),
    ];
    let expected: Vec<(String, String, u64, u64)> = expected
        .iter()
        .map(|&(g, w, s, e)| (g.to_string(), w.to_string(), s, e))
        .collect();
    assert_eq!(entities, expected);
}

/// `focal answer` over a context longer than one window, and questions from standard input.
#[test]
fn answer_finds_spans_in_long_contexts() {
    let context = "paris is the capital of france . it is a city with many people , and he said that the city was the capital of the world for years . there is a state there , and the people have been working there since the old days . which city is the capital of france ? paris , he said , is still the capital .";
    let out = focal(&[
        "answer",
        "--model",
        &heads("qa"),
        "--context",
        context,
        "--question",
        "what is the capital of france ?",
        "--top-k",
        "3",
        "--max-seq-len",
        "48",
        "--doc-stride",
        "16",
        "--max-answer-len",
        "10",
    ]);
    assert_success(&out);
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').take(3).collect::<Vec<_>>().join("|"))
        .collect();
    // transformers 4.57.1: "he" 1.0346 [69, 71), "which city is the" 0.4014 [217, 234),
    // "which city is the capital of" 0.2305 [217, 245).
    assert_eq!(
        answers,
        [
            "he|1.0346|[69, 71)",
            "which city is the|0.4014|[217, 234)",
            "which city is the capital of|0.2305|[217, 245)"
        ]
    );
    let lines = json_lines(&focal_with_input(
        &[
            "--json",
            "answer",
            "--model",
            &heads("qa"),
            "--context",
            context,
        ],
        "who said it ?\nwhat city ?\n",
    ));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["question"], "what city ?");
}

/// `focal match` reads candidates from plain, CSV and JSON Lines files; the best candidate of a
/// query that is one of them is itself, with cosine 1.
#[test]
fn match_ranks_candidates_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("faq.txt");
    std::fs::write(
        &plain,
        "paris is big\n\nthe city of the world\nhe said no\n",
    )
    .unwrap();
    let csv = dir.path().join("faq.csv");
    std::fs::write(
        &csv,
        "id,question\n1,paris is big\n2,\"the city, of the world\"\n",
    )
    .unwrap();
    let jsonl = dir.path().join("faq.jsonl");
    std::fs::write(
        &jsonl,
        "{\"q\": \"paris is big\"}\n{\"q\": \"he said no\"}\n",
    )
    .unwrap();
    for (file, column) in [(&plain, "text"), (&csv, "question"), (&jsonl, "q")] {
        let lines = json_lines(&focal(&[
            "--json",
            "match",
            "--model",
            &fixture("bert"),
            "--candidates",
            &file.display().to_string(),
            "--column",
            column,
            "--top-k",
            "2",
            "paris is big",
        ]));
        let best = &lines[0]["matches"][0];
        assert_eq!(best["text"], "paris is big", "{file:?}");
        assert!((best["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
        assert_eq!(lines[0]["matches"].as_array().unwrap().len(), 2);
    }
    let out = focal(&[
        "match",
        "--model",
        &fixture("bert"),
        "--candidates",
        &csv.display().to_string(),
        "--column",
        "answer",
        "paris",
    ]);
    assert_one_line_error(&out, "no column \"answer\" (the header has id, question)");
}

/// A directory of another task, a config without labels, a line longer than the model: a clear
/// message, never a panic.
#[test]
fn task_commands_explain_bad_models_and_inputs() {
    let out = focal(&["classify", "--model", &heads("qa"), "a text"]);
    assert_one_line_error(
        &out,
        "the model is BertForQuestionAnswering, not BertForSequenceClassification",
    );
    let out = focal(&["tag", "--model", &heads("classify"), "a text"]);
    assert_one_line_error(&out, "not BertForTokenClassification");
    let out = focal(&[
        "answer",
        "--model",
        &heads("tag"),
        "--context",
        "c",
        "--question",
        "q",
    ]);
    assert_one_line_error(&out, "not BertForQuestionAnswering");
    let out = focal(&["classify", "--model", &fixture("bert"), "a text"]);
    assert_one_line_error(
        &out,
        "the model is BertModel, not BertForSequenceClassification",
    );

    // No id2label: transformers' names, said once.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(heads("classify")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let object = config.as_object_mut().unwrap();
    object.remove("id2label");
    object.remove("label2id");
    let without_labels = config.clone();
    std::fs::write(&config_path, without_labels.to_string()).unwrap();
    let model = dir.path().display().to_string();
    let out = focal(&["classify", "--model", &model, "he was here"]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("LABEL_1 0.6827"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no id2label; the 3 outputs are named LABEL_0 … LABEL_2"),
        "{stderr}"
    );

    // Labels that do not fit the classifier.
    config = without_labels;
    config["id2label"] = serde_json::json!({"0": "a", "1": "b"});
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = focal(&["classify", "--model", &model, "he was here"]);
    assert_one_line_error(&out, "2 labels, but the classifier has 3 outputs");

    // Too long: cut, said once, answered.
    let long = "the city ".repeat(100);
    let out = focal_with_input(
        &["tag", "--model", &heads("tag")],
        &format!("{long}\n{long}\n"),
    );
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("was cut to them").count(), 1, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn fill_mask_ranks_candidates() {
    let model = fixture("bert-mlm");
    let out = json_stdout(&focal(&[
        "--json",
        "fill-mask",
        "--model",
        &model,
        "paris is the [MASK] of france .",
    ]));
    let candidates = out["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5);
    let scores: Vec<f64> = candidates
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let no_mask = focal(&["fill-mask", "--model", &model, "paris is the capital"]);
    assert_one_line_error(&no_mask, "exactly one [MASK], found 0");
}

/// Finite but huge weights (3e38 in the masked-LM head's transform) overflow into NaN scores:
/// one line says so and the command fails, instead of printing NaN as results.
#[test]
fn non_finite_results_are_refused_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("bert-mlm")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = "cls.predictions.transform.dense.weight";
    let huge: Vec<u8> = std::iter::repeat_n(3e38f32.to_le_bytes(), 32 * 32)
        .flatten()
        .collect();
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .map(|(key, view)| {
            if key == name {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    view.shape().to_vec(),
                    &huge,
                )
                .unwrap();
                (key, view)
            } else {
                (key, view)
            }
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let model = dir.path().display().to_string();
    for json in [false, true] {
        let mut args = vec![
            "fill-mask",
            "--model",
            &model,
            "paris is the [MASK] of france .",
        ];
        if json {
            args.insert(0, "--json");
        }
        let out = focal(&args);
        assert_one_line_error(&out, "the model computed a non-finite score");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn generate_continues_greedily_like_hugging_face() {
    let model = fixture("gpt2");
    let reference: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/pretrained_reference.json"
    ))
    .unwrap();
    let out = json_stdout(&focal(&[
        "--json",
        "generate",
        "--model",
        &model,
        "--prompt",
        "the capital of france",
        "--max-new-tokens",
        "12",
    ]));
    assert_eq!(out["token_ids"], reference["gpt2"]["greedy"]);

    // Streaming mode prints the prompt and its continuation on stdout.
    let streamed = focal(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "the capital of france",
        "--max-new-tokens",
        "4",
    ]);
    assert!(streamed.status.success());
    assert!(String::from_utf8_lossy(&streamed.stdout).starts_with("the capital of france"));
}

#[test]
fn pretrained_errors_are_one_line() {
    let out = focal(&["embed", "--model", "/nonexistent/bert", "hello"]);
    assert_one_line_error(&out, "/nonexistent/bert/config.json: not found");
    let out = focal(&["generate", "--model", &fixture("bert"), "--prompt", "hi"]);
    assert_one_line_error(
        &out,
        "model_type 'bert' is not supported here (expected gpt2)",
    );
    let out = focal(&[
        "generate",
        "--model",
        &fixture("gpt2"),
        "--prompt",
        "the",
        "--strategy",
        "magic",
    ]);
    assert_one_line_error(&out, "unknown strategy 'magic'");
    // A request refused before generating prints nothing on stdout (not the prompt).
    let out = focal(&[
        "generate",
        "--model",
        &fixture("gpt2"),
        "--prompt",
        "the",
        "--max-new-tokens",
        "18446744073709551615",
    ]);
    assert_one_line_error(
        &out,
        "18446744073709551615 more were asked for, but the model takes at most 64",
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A reader that goes away (`| head -0`) ends the command quietly with the status a shell
/// gives `cat` killed by SIGPIPE; a full disk is one line; neither panics.
#[test]
fn closed_or_full_standard_output_is_not_a_panic() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["info", "--json"])
        .stdout(full)
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        "writing to standard output: No space left on device (os error 28)",
    );
}

/// A successful run prints nothing on stderr, even where `XDG_RUNTIME_DIR` is unset (the
/// Wayland probe of Mesa's Vulkan drivers used to complain on every run).
#[test]
fn success_is_silent_without_a_runtime_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["info"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sizes whose tensors could never be allocated are refused with the estimate, before anything
/// is allocated, instead of aborting in the allocator: a training batch, beams, and model
/// configurations with 10¹² layers or positions (Focal's own and Hugging Face's).
#[test]
fn impossible_sizes_are_refused_with_an_estimate() {
    let out = focal(&[
        "train",
        "--task",
        "reverse",
        "--batch-size",
        "1000000000000",
    ]);
    assert_one_line_error(&out, "a step's activations (batch_size 1000000000000");
    assert_one_line_error(&out, "of memory, more than");

    let gpt2 = fixture("gpt2");
    let out = focal(&[
        "generate",
        "--model",
        &gpt2,
        "--prompt",
        "the",
        "--strategy",
        "beam",
        "--beams",
        "100000000000",
    ]);
    assert_one_line_error(&out, "the key/value cache and logits of 100000000000 beams");

    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&gpt2).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["n_layer"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(&path, config.to_string()).unwrap();
    let out = focal(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "the",
    ]);
    assert_one_line_error(&out, "the weights of 1000000000000 layers");

    config["n_layer"] = serde_json::json!(2);
    config["n_positions"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(&path, config.to_string()).unwrap();
    let out = focal(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "the",
    ]);
    assert_one_line_error(&out, "would need");
}

/// `--out` is checked before training: a file, a directory of other files and a finished run
/// are refused at once (with what to do), `--overwrite` replaces them.
#[test]
fn the_output_directory_is_checked_before_training() {
    let parent = tempfile::tempdir().unwrap();
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--task",
            "reverse",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--eval-every",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        focal(&args)
    };
    let file = parent.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    let started = std::time::Instant::now();
    assert_one_line_error(&train(&file, &[]), "exists and is not a directory");
    assert!(started.elapsed().as_secs() < 20);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    let other = parent.path().join("bert");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("pytorch_model.bin"), b"weights").unwrap();
    assert_one_line_error(
        &train(&other, &[]),
        "holds files that are not a Focal model (pytorch_model.bin); pass --overwrite",
    );
    assert!(other.join("pytorch_model.bin").is_file());

    let run = parent.path().join("run");
    assert!(train(&run, &[]).status.success());
    assert_one_line_error(
        &train(&run, &[]),
        "holds a trained Focal model (2 steps); pass --overwrite",
    );
    assert_one_line_error(
        &train(&parent.path().join("never"), &["--resume"]),
        "cannot resume: no killed run of",
    );
    let out = train(&run, &["--overwrite"]);
    assert_success(&out);
    let out = train(&other, &["--overwrite"]);
    assert_success(&out);
    assert!(!other.join("pytorch_model.bin").exists());
}

/// `focal train` stopped at every point of its save in turn (in the middle and at the end of
/// each of the five files, after each rename: the process aborts there, as a kill would),
/// first with no model in `--out`, then replacing one: the output directory is always absent
/// (first save) or a complete model that `translate` loads, and what the stopped writes left
/// is gone once the next run starts.
#[test]
fn a_killed_run_leaves_no_half_written_model() {
    let parent = tempfile::tempdir().unwrap();
    let run = parent.path().join("run");
    let run_str = run.to_str().unwrap();
    let train = |abort_at: Option<u32>| {
        focal_stopped_at(
            &[
                "train",
                "--task",
                "reverse",
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--overwrite",
                "--out",
                run_str,
            ],
            abort_at.map(|point| ("FOCAL_TEST_WRITE_ABORT_AT", point as usize)),
        )
    };
    // A save passes 2 points per file (config, weights, metrics, loss.png, metrics.png) and,
    // replacing a directory, 2 renames.
    let files = 5u32;
    let mut leftovers = 0;
    for (replacing, points) in [(false, 2 * files), (true, 2 * files + 2)] {
        for point in 1..=points {
            let _ = std::fs::remove_dir_all(&run);
            if replacing {
                assert!(train(None).status.success());
            }
            let out = train(Some(point));
            assert!(!out.status.success(), "point {point} was not reached");
            let names: Vec<String> = std::fs::read_dir(parent.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            if !replacing {
                assert!(
                    !run.exists(),
                    "point {point}: a model before its save ended"
                );
            } else if point == 2 * files + 1 {
                // Between the two renames: the previous model is set aside, and the next run
                // puts it back (checked at the end).
                assert!(!run.exists(), "point {point}");
                assert!(
                    names.iter().any(|n| n.starts_with(".run.old-")),
                    "{names:?}"
                );
            } else {
                assert!(run.exists(), "point {point}: the previous model is gone");
            }
            if run.exists() {
                let out = focal(&["translate", "--model", run_str, "3 1 4"]);
                assert!(
                    out.status.success(),
                    "point {point}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            leftovers += usize::from(names.len() > usize::from(run.exists()));
        }
    }
    assert!(leftovers > 0);
    // The next run cleans up what killed writes left.
    let out = train(None);
    assert_success(&out);
    let names: Vec<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["run"]);
}

/// An input longer than the model is cut to its positions and said so once on stderr (no
/// colour codes when stderr is not a terminal); the embedding is still printed.
#[test]
fn inputs_cut_to_the_model_are_reported_once() {
    let long = "hello ".repeat(100);
    let out = focal(&["embed", "--model", &fixture("bert"), &long, &long]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("was cut to them").count(), 1, "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

/// `focal train --task classify` fine-tunes the tiny BERT on the committed rows: held-out
/// accuracy rises, and `focal classify` runs the directory it writes; bad settings are one line.
#[test]
fn train_classify_fine_tunes_and_classify_runs_the_result() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let data = fixtures
        .join("train/classify_train.csv")
        .display()
        .to_string();
    let valid = fixtures
        .join("train/classify_valid.csv")
        .display()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").display().to_string();
    let report = json_stdout(&focal(&[
        "--json",
        "train",
        "--task",
        "classify",
        "--data",
        &data,
        "--valid",
        &valid,
        "--init",
        &fixture("bert"),
        "--out",
        &out,
        "--epochs",
        "12",
        "--lr",
        "3e-3",
        "--batch-size",
        "16",
    ]));
    assert_eq!(report["labels"], serde_json::json!(["person", "place"]));
    let before = report["before"]["accuracy"].as_f64().unwrap();
    let after = report["after"]["accuracy"].as_f64().unwrap();
    assert!(
        after >= 0.9 && after > before,
        "accuracy {before} -> {after}"
    );
    let classified = focal(&["classify", "--model", &out, "paris was great ."]);
    assert!(String::from_utf8_lossy(&classified.stdout).starts_with("place "));

    // `focal eval` scores the directory again: the report's figures, per class, and the
    // confusion matrix as text and as a picture.
    let picture = dir.path().join("confusion.png");
    let evaluated = focal(&[
        "eval",
        "--model",
        &out,
        "--data",
        &valid,
        "--confusion",
        &picture.display().to_string(),
    ]);
    let table = String::from_utf8_lossy(&evaluated.stdout);
    assert!(
        table.starts_with("label   precision  recall      f1  support\nperson "),
        "{table}"
    );
    assert!(
        table.contains("confusion (rows true, columns predicted)"),
        "{table}"
    );
    assert!(std::fs::read(&picture).unwrap().starts_with(b"\x89PNG"));
    let evaluation = json_stdout(&focal(&[
        "--json", "eval", "--model", &out, "--data", &valid,
    ]));
    assert_eq!(evaluation["task"], "classify");
    assert_eq!(
        evaluation["held_out"]["confusion"],
        report["after"]["confusion"]
    );
    let wrong = focal(&[
        "eval",
        "--model",
        &out,
        "--data",
        &fixture("train/tag_valid.conll"),
    ]);
    assert_one_line_error(&wrong, "unknown file type \"conll\"");

    let out2 = dir.path().join("run2").display().to_string();
    let missing = focal(&[
        "train", "--task", "classify", "--data", &data, "--out", &out2,
    ]);
    assert_one_line_error(&missing, "--task classify needs --init DIR");
    let bad = focal(&[
        "train",
        "--task",
        "classify",
        "--data",
        &data,
        "--valid",
        &valid,
        "--init",
        &fixture("bert"),
        "--out",
        &out2,
        "--label-column",
        "category",
    ]);
    assert_one_line_error(&bad, "no column \"category\" in the header (text, label)");
}

/// Every fine-tuning task trains from the command line on its committed files
/// (`tests/fixtures/train/generate_tasks.py`) and its held-out metric rises; the directory holds
/// the pictures.
#[test]
fn every_fine_tuning_task_trains_from_the_command_line() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/train");
    let dir = tempfile::tempdir().unwrap();
    for (task, train, valid, metric, epochs) in [
        ("pair", "pair_train.csv", "pair_valid.csv", "accuracy", "15"),
        (
            "multilabel",
            "multilabel_train.jsonl",
            "multilabel_valid.jsonl",
            "macro_f1",
            "30",
        ),
        (
            "regress",
            "regress_train.tsv",
            "regress_valid.tsv",
            "pearson",
            "15",
        ),
        (
            "tag",
            "tag_train.conll",
            "tag_valid.conll",
            "entity_f1",
            "15",
        ),
        ("qa", "qa_train.json", "qa_valid.json", "exact_match", "40"),
        (
            "lm",
            "lm_train.txt",
            "lm_valid.txt",
            "next_token_accuracy",
            "10",
        ),
    ] {
        let out = dir.path().join(task).display().to_string();
        let lr = if matches!(task, "multilabel" | "qa" | "lm") {
            "5e-3"
        } else {
            "3e-3"
        };
        let report = json_stdout(&focal(&[
            "--json",
            "train",
            "--task",
            task,
            "--data",
            &fixtures.join(train).display().to_string(),
            "--valid",
            &fixtures.join(valid).display().to_string(),
            "--init",
            &fixture(if task == "lm" { "gpt2" } else { "bert" }),
            "--out",
            &out,
            "--epochs",
            epochs,
            "--lr",
            lr,
            "--batch-size",
            "16",
            "--max-length",
            if task == "lm" { "16" } else { "32" },
            "--seed",
            "3",
        ]));
        let before = report["before"][metric].as_f64().unwrap();
        let after = report["after"][metric].as_f64().unwrap();
        // The next word of these sentences is often a random draw (76% when written).
        let bar = if task == "lm" { 0.6 } else { 0.75 };
        assert!(
            after > before && after >= bar,
            "{task}: {metric} {before} -> {after}"
        );
        for file in [
            "config.json",
            "model.safetensors",
            "metrics.json",
            "loss.png",
            "metrics.png",
        ] {
            assert!(Path::new(&out).join(file).is_file(), "{task}: {file}");
        }
        if task == "lm" {
            // `focal eval` scores the language model's directory as training's last evaluation.
            let data = fixtures.join(valid).display().to_string();
            assert_eval_repeats_training(
                &out,
                &data,
                &["--max-length", "16"],
                &report,
                &["perplexity"],
            );
        }
    }
    // The question answerer's directory answers with `focal answer`.
    let answered = focal(&[
        "answer",
        "--model",
        &dir.path().join("qa").display().to_string(),
        "--context",
        "the man is old . paris was great .",
        "--question",
        "where was it ?",
    ]);
    assert!(
        String::from_utf8_lossy(&answered.stdout).contains("paris"),
        "{}{}",
        String::from_utf8_lossy(&answered.stdout),
        String::from_utf8_lossy(&answered.stderr)
    );
    // The language model's directory is a GPT-2 `focal generate` continues in the file's words.
    let generated = focal(&[
        "generate",
        "--model",
        &dir.path().join("lm").display().to_string(),
        "--prompt",
        "paris",
        "--max-new-tokens",
        "6",
    ]);
    let text = String::from_utf8_lossy(&generated.stdout);
    assert!(
        ["is", "was", "been", "be"]
            .iter()
            .any(|verb| text.split_whitespace().any(|w| w == *verb)),
        "{text}{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    // The tagger's directory is a token classifier `focal tag` runs.
    let tagged = focal(&[
        "tag",
        "--model",
        &dir.path().join("tag").display().to_string(),
        "paris was great .",
    ]);
    assert!(
        String::from_utf8_lossy(&tagged.stdout).contains("LOC"),
        "{}",
        String::from_utf8_lossy(&tagged.stdout)
    );
}

/// The training flags from the command line, each checked on what the run measured:
/// `--grad-accum` and `--devices` on the optimizer steps counted as they ran (96 rows in
/// batches of 16: 6 batches an epoch, 3 steps of 2 accumulated, or 3 rounds of 2 replicas),
/// `--valid-split` on the held-out count without `--valid`, `--early-stopping` on the epochs
/// run, `--linear-probe` on the probe's directory; and `--devices` for `--task seq2seq` (400
/// rows in batches of 16: 25 batches, 13 rounds of 2).
#[test]
fn training_flags_change_what_the_run_measures() {
    let dir = tempfile::tempdir().unwrap();
    let (bert, data) = (fixture("bert"), fixture("train/classify_train.csv"));
    let train = |extra: &[&str], name: &str| {
        let out = dir.path().join(name).display().to_string();
        let mut args = vec![
            "--json",
            "train",
            "--task",
            "classify",
            "--init",
            &bert,
            "--data",
            &data,
            "--out",
            &out,
            "--batch-size",
            "16",
            "--max-length",
            "32",
        ];
        args.extend(extra);
        if !extra.contains(&"--lr") {
            args.extend(["--lr", "3e-3"]);
        }
        let report = json_stdout(&focal(&args));
        let epoch_steps: Vec<u64> = report["history"]["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["optimizer_steps"].as_u64().unwrap())
            .collect();
        (report, epoch_steps)
    };
    let valid = fixture("train/classify_valid.csv");
    let (report, steps) = train(
        &["--valid", &valid, "--epochs", "2", "--grad-accum", "2"],
        "accum",
    );
    assert_eq!(steps, [3, 6]);
    assert_eq!(report["optimizer_steps"], 6);
    let (report, steps) = train(
        &["--valid", &valid, "--epochs", "2", "--devices", "2"],
        "devices",
    );
    assert_eq!(steps, [3, 6]);
    assert_eq!(report["config"]["devices"], 2);
    // A tenth of 96 rows, rounded up, held out.
    let (report, _) = train(&["--epochs", "1", "--valid-split", "0.1"], "split");
    assert_eq!(
        (
            report["train_examples"].as_u64(),
            report["before"]["examples"].as_u64()
        ),
        (Some(86), Some(10))
    );
    // A learning rate too small to change the figures: the metric never improves after epoch 1.
    let (report, _) = train(
        &[
            "--valid",
            &valid,
            "--epochs",
            "6",
            "--lr",
            "1e-9",
            "--early-stopping",
            "1",
        ],
        "early",
    );
    assert!(
        report["epochs_run"].as_u64().unwrap() < 6,
        "{}",
        report["epochs_run"]
    );
    // The decoupled weight decay is recorded with the run's settings; a negative one refused.
    let (report, _) = train(
        &["--valid", &valid, "--epochs", "1", "--weight-decay", "0.01"],
        "decay",
    );
    assert!((report["config"]["weight_decay"].as_f64().unwrap() - 0.01).abs() < 1e-12);
    let out = dir.path().join("negative").display().to_string();
    let refused = focal(&[
        "train",
        "--task",
        "classify",
        "--init",
        &bert,
        "--data",
        &data,
        "--out",
        &out,
        "--weight-decay=-1",
    ]);
    assert_one_line_error(&refused, "weight_decay must be at least 0, got -1");
    let (report, _) = train(
        &["--valid", &valid, "--epochs", "2", "--linear-probe"],
        "probe",
    );
    assert_eq!(report["config"]["linear_probe"], true);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("probe/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["focal_classifier_pooling"], "mean");

    let out = dir.path().join("s2s").display().to_string();
    let report = json_stdout(&focal(&[
        "--json",
        "train",
        "--task",
        "seq2seq",
        "--data",
        &fixture("train/seq2seq_train.csv"),
        "--valid",
        &fixture("train/seq2seq_valid.csv"),
        "--out",
        &out,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--devices",
        "2",
    ]));
    assert_eq!(
        report["optimizer_steps"], 13,
        "{}",
        report["optimizer_steps"]
    );
}

/// `focal train --task classify --overwrite` stopped at every point of its save in turn (in the
/// middle and at the end of each file, after each rename: the process aborts there, as a kill
/// would): the previous model stays loadable, absent only between the two renames with the old
/// directory beside it; and the next run puts it back and cleans up what the stopped runs left
/// (their half-written directories and burn-train's working directories).
#[test]
fn a_killed_fine_tuning_run_leaves_the_previous_model() {
    let parent = tempfile::tempdir().unwrap();
    let run = parent.path().join("run");
    let run_str = run.to_str().unwrap().to_string();
    let train = |abort_at: Option<u32>| {
        focal_stopped_at(
            &[
                "train",
                "--task",
                "classify",
                "--init",
                &fixture("bert"),
                "--data",
                &fixture("train/classify_train.csv"),
                "--valid",
                &fixture("train/classify_valid.csv"),
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--overwrite",
                "--out",
                &run_str,
            ],
            abort_at.map(|point| ("FOCAL_TEST_WRITE_ABORT_AT", point as usize)),
        )
    };
    assert!(train(None).status.success());
    let files = std::fs::read_dir(&run).unwrap().count() as u32;
    // Two points per file, then the two renames of a replaced directory.
    let points = 2 * files + 2;
    for point in 1..=points {
        let out = train(Some(point));
        assert!(!out.status.success(), "point {point} was not reached");
        if point == 2 * files + 1 {
            assert!(!run.exists(), "point {point}");
            let names: Vec<String> = std::fs::read_dir(parent.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                names.iter().any(|n| n.starts_with(".run.old-")),
                "{names:?}"
            );
            continue;
        }
        let classified = focal(&["classify", "--model", &run_str, "paris was great ."]);
        assert!(
            classified.status.success(),
            "point {point}: {}",
            String::from_utf8_lossy(&classified.stderr)
        );
    }
    let out = train(None);
    assert_success(&out);
    let names: Vec<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["run"]);
}

/// A training file with malformed rows stops at the first, named by line; with
/// `--skip-bad-rows` they are skipped and counted in the report; without `--valid`, a tenth of
/// the rows is held out.
#[test]
fn bad_rows_stop_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.csv");
    let mut text = std::fs::read_to_string(fixture("train/classify_train.csv")).unwrap();
    text.push_str(",place\nparis is here .\nshe was old .,\n");
    std::fs::write(&data, text).unwrap();
    let data = data.display().to_string();
    let bert = fixture("bert");
    let run = |extra: &[&str]| {
        let out = dir.path().join("out").display().to_string();
        let mut args = vec![
            "--json",
            "train",
            "--task",
            "classify",
            "--init",
            &bert,
            "--data",
            &data,
            "--out",
            &out,
            "--epochs",
            "1",
            "--overwrite",
        ];
        args.extend_from_slice(extra);
        let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        focal(&refs)
    };
    assert_one_line_error(&run(&[]), "rows.csv, line 98: no text (column \"text\")");
    let report = json_stdout(&run(&["--skip-bad-rows"]));
    assert_eq!(report["bad_rows"]["count"], 3);
    assert!(
        report["bad_rows"]["first"]
            .as_str()
            .unwrap()
            .contains("line 98")
    );
    // 96 good rows: 10 held out, 86 to train.
    assert_eq!(report["train_examples"], 86);
    assert_eq!(report["before"]["examples"], 10);
}

/// The tensors of a `model.safetensors`, by name, as f32 values.
fn tensors(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name.to_string(), values)
        })
        .collect()
}

/// Every tensor of `got` is `want`'s, to 1e-6.
#[track_caller]
fn assert_same_weights(
    want: &std::collections::BTreeMap<String, Vec<f32>>,
    got: &std::collections::BTreeMap<String, Vec<f32>>,
    what: &str,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, values) in want {
        let worst = values
            .iter()
            .zip(&got[name])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{what} {name}: {worst}");
    }
}

/// The arguments of a `--json train --task classify` run on the tiny BERT fixture's rows (96
/// training rows in batches of 16: six batches an epoch), writing `out`.
fn classify_fixture_run(out: &Path, epochs: usize) -> Vec<String> {
    [
        "--json",
        "train",
        "--task",
        "classify",
        "--init",
        &fixture("bert"),
        "--data",
        &fixture("train/classify_train.csv"),
        "--valid",
        &fixture("train/classify_valid.csv"),
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// A fine-tuning run killed after k batches (mid-epoch, or before its first checkpoint) and
/// continued with `--resume` — once, or killed again and continued again — writes the weights
/// and history of the uninterrupted run (within 1e-6 on ndarray; dropout is on). Resuming
/// with other settings, or with nothing to resume, is one clear line.
#[test]
fn a_killed_fine_tuning_run_resumes_to_the_same_weights() {
    let parent = tempfile::tempdir().unwrap();
    let train = |out: &Path, abort_after: Option<usize>, extra: &[&str]| {
        let mut args = classify_fixture_run(out, 3);
        args.extend(["--lr", "3e-3", "--warmup", "0.2"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        focal_stopped_at(
            &args,
            abort_after.map(|batch| ("FOCAL_TEST_ABORT_AFTER_BATCH", batch)),
        )
    };
    let whole = parent.path().join("whole");
    let output = train(&whole, None, &[]);
    let report = json_stdout(&output);
    // 96 rows in batches of 16: six batches an epoch.
    assert_eq!(report["history"]["steps"].as_array().unwrap().len(), 18);
    let want = tensors(&whole);

    // Killed mid-epoch 2 and mid-epoch 3, resumed twice; killed in epoch 1, before any
    // checkpoint, and started again.
    for kills in [&[9usize, 16][..], &[3]] {
        let out = parent.path().join(format!("killed-{}", kills[0]));
        let mut resume: &[&str] = &[];
        for &batch in kills {
            let output = train(&out, Some(batch), resume);
            assert!(!output.status.success(), "batch {batch} was not reached");
            assert!(!out.exists());
            resume = &["--resume"];
        }
        let output = train(&out, None, resume);
        let resumed = json_stdout(&output);
        let saved_epoch = (kills[kills.len() - 1] / 6) as u64;
        assert_eq!(resumed["resumed_from_epoch"], saved_epoch, "{kills:?}");
        assert_eq!(resumed["history"]["epochs"], report["history"]["epochs"]);
        assert_eq!(resumed["after"], report["after"]);
        assert_same_weights(&want, &tensors(&out), &format!("{kills:?}"));
        let names: Vec<String> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    // Other settings than the killed run's are refused, and the killed run stays resumable;
    // nothing killed, nothing to resume.
    let out = parent.path().join("changed");
    assert!(!train(&out, Some(8), &[]).status.success());
    let refused = train(&out, None, &["--resume", "--seed", "7"]);
    assert_one_line_error(&refused, "had config.seed = 42, this run has 7");
    assert!(train(&out, None, &["--resume"]).status.success());
    let nothing = train(&parent.path().join("never"), None, &["--resume"]);
    assert_one_line_error(&nothing, "no killed run of");
}

/// A killed run resumes at once, while its dead process is not yet reaped (a zombie whose
/// `/proc/PID` still exists, as under a parent that has not waited for it): the run's lock,
/// released by the kernel when the process died, says it is dead, not the process table.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_run_resumes_before_its_process_is_reaped() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("zombie");
    let args = classify_fixture_run(&out, 2);
    // Killed in epoch 2 (six batches an epoch), after the first epoch's checkpoint.
    let mut child = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(&args)
        .env_remove("RUST_LOG")
        .env("FOCAL_TEST_ABORT_AFTER_BATCH", "8")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the focal binary runs");
    let stat = format!("/proc/{}/stat", child.id());
    let started = std::time::Instant::now();
    // The state follows the command's name in parentheses: `Z` once dead and unreaped.
    while std::fs::read_to_string(&stat)
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        != Some(true)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "the run did not die"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut resume: Vec<&str> = args.iter().map(String::as_str).collect();
    resume.push("--resume");
    let resumed = focal_stopped_at(&resume, None);
    assert!(Path::new(&stat).exists(), "reaped too early");
    assert_eq!(json_stdout(&resumed)["resumed_from_epoch"], 1);
    assert!(!child.wait().unwrap().success());
}

/// The reverse task on the same engine: killed after 6 of 12 steps (evaluating every 4) and
/// resumed, it writes the uninterrupted run's weights and history.
#[test]
fn a_killed_reverse_run_resumes_to_the_same_weights() {
    let parent = tempfile::tempdir().unwrap();
    let train = |out: &Path, abort_after: Option<usize>, resume: bool| {
        let mut args = vec![
            "--json",
            "train",
            "--task",
            "reverse",
            "--steps",
            "12",
            "--eval-every",
            "4",
            "--batch-size",
            "8",
            "--out",
            out.to_str().unwrap(),
        ];
        if resume {
            args.push("--resume");
        }
        focal_stopped_at(
            &args,
            abort_after.map(|batch| ("FOCAL_TEST_ABORT_AFTER_BATCH", batch)),
        )
    };
    let whole = parent.path().join("whole");
    let output = train(&whole, None, false);
    let report = json_stdout(&output);
    let killed = parent.path().join("killed");
    assert!(!train(&killed, Some(6), false).status.success());
    let output = train(&killed, None, true);
    let resumed = json_stdout(&output);
    assert_eq!(resumed["resumed_from_evaluation"], 1);
    assert_eq!(resumed["history"], report["history"]);
    assert_eq!(resumed["final_metrics"], report["final_metrics"]);
    assert_same_weights(&tensors(&whole), &tensors(&killed), "reverse");
}

/// `focal eval` of the directory `out` on `data` gives the `figures` that the training run's
/// `report` gave after training (to 1e-4, relative where a figure exceeds 1).
fn assert_eval_repeats_training(
    out: &str,
    data: &str,
    extra: &[&str],
    report: &serde_json::Value,
    figures: &[&str],
) {
    let mut args = vec!["--json", "eval", "--model", out, "--data", data];
    args.extend_from_slice(extra);
    let evaluation = json_stdout(&focal(&args));
    for figure in figures {
        let (eval, trained) = (
            evaluation["held_out"][figure].as_f64().unwrap(),
            report["after"][figure].as_f64().unwrap(),
        );
        assert!(
            (eval - trained).abs() <= 1e-4 * trained.abs().max(1.0),
            "{figure}: {eval} vs {trained}"
        );
    }
}

/// `--task seq2seq` trains an encoder-decoder from scratch on pairs of texts (a word-for-word
/// "translation" that moves the subject to the end): held-out exact match goes from 0 to at
/// least 90%, and `focal translate` runs the directory. Misused flags and a held-out word the
/// training file lacks are one line each.
#[test]
fn seq2seq_trains_from_scratch_and_translate_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s2s").display().to_string();
    let train_file = fixture("train/seq2seq_train.csv");
    let valid_file = fixture("train/seq2seq_valid.csv");
    let train = |extra: &[&str], valid: &str| {
        let mut args = vec![
            "--json",
            "train",
            "--task",
            "seq2seq",
            "--data",
            &train_file,
            "--valid",
            valid,
            "--out",
            &out,
            "--epochs",
            "5",
            "--batch-size",
            "16",
            "--overwrite",
        ];
        args.extend_from_slice(extra);
        focal(&args)
    };
    let report = json_stdout(&train(&[], &valid_file));
    let before = report["before"]["exact_match"].as_f64().unwrap();
    let after = report["after"]["exact_match"].as_f64().unwrap();
    assert!(before < 0.1 && after >= 0.9, "{before} -> {after}");
    assert!(report["after"]["loss"].as_f64().unwrap() < report["before"]["loss"].as_f64().unwrap());
    for file in [
        "config.json",
        "model.safetensors",
        "metrics.json",
        "loss.png",
        "metrics.png",
    ] {
        assert!(Path::new(&out).join(file).is_file(), "{file}");
    }
    // `focal eval` scores the directory as training's last evaluation did.
    assert_eval_repeats_training(
        &out,
        &valid_file,
        &[],
        &report,
        &["exact_match", "token_accuracy", "loss"],
    );
    let translated = focal(&["translate", "--model", &out, "paris was great ."]);
    assert_eq!(
        String::from_utf8_lossy(&translated.stdout).trim(),
        "WAS GREAT PARIS !",
        "{}",
        String::from_utf8_lossy(&translated.stderr)
    );
    // `focal attention` shows the translation's cross-attention: a row per target position
    // (<bos> and the words written), a column per source word (and <eos>), rows summing to 1.
    let seen = json_stdout(&focal(&[
        "--json",
        "attention",
        "--model",
        &out,
        "paris was great .",
    ]));
    assert_eq!(seen["output"], "WAS GREAT PARIS !");
    assert_eq!(
        seen["source"],
        serde_json::json!(["paris", "was", "great", ".", "<eos>"])
    );
    assert_eq!(
        seen["target"],
        serde_json::json!(["<bos>", "WAS", "GREAT", "PARIS", "!"])
    );
    for layer in seen["weights"].as_array().unwrap() {
        for head in layer.as_array().unwrap() {
            let rows: Vec<Vec<f64>> = serde_json::from_value(head.clone()).unwrap();
            assert_eq!((rows.len(), rows[0].len()), (5, 5));
            for row in rows {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{row:?}");
            }
        }
    }
    let decoder: Vec<Vec<Vec<Vec<f64>>>> = serde_json::from_value(seen["decoder"].clone()).unwrap();
    assert!(decoder[0][0][0][1..].iter().all(|&w| w == 0.0), "causal");
    let page = dir.path().join("cross.html");
    let drawn = focal(&[
        "attention",
        "--model",
        &out,
        "paris was great .",
        "--layer",
        "0",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert_success(&drawn);
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains(r#""name":"cross-attention, layer 0""#)
    );
    let png = dir.path().join("cross.png");
    let drawn = focal(&[
        "attention",
        "--model",
        &out,
        "paris was great .",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_success(&drawn);
    assert_one_line_error(
        &focal(&["attention", "--model", &out, "paris", "--method", "rollout"]),
        "--method rollout: rollout and flow combine one stack's self-attention",
    );

    assert_one_line_error(
        &train(&["--init", &fixture("bert")], &valid_file),
        "--task seq2seq trains a model from scratch",
    );
    assert_one_line_error(
        &train(&["--config", "huge"], &valid_file),
        "unknown --config \"huge\"",
    );
    let unknown = dir.path().join("unknown.csv");
    std::fs::write(
        &unknown,
        "text,label\nparis was great .,WAS GREAT PARIS !\nrome was great .,X\n",
    )
    .unwrap();
    assert_one_line_error(
        &train(&[], unknown.to_str().unwrap()),
        "line 3: 'rome' is not a word of the training file",
    );
    assert_one_line_error(
        &focal(&["eval", "--model", &out, "--data", unknown.to_str().unwrap()]),
        "line 3: 'rome' is not a word of the training file",
    );
}

/// `focal attention` prints each token's most attended tokens, and with `--json` the weights:
/// every layer and head of a GPT-2 (rows that sum to 1, nothing on later tokens), BERT's
/// rollout and flow over a pair (rows that sum to 1). Misused flags are one line each.
#[test]
fn attention_shows_the_weights_per_head_and_combined() {
    let sums_to_one = |row: &serde_json::Value| {
        let row: Vec<f64> = serde_json::from_value(row.clone()).unwrap();
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{row:?}");
        row
    };
    let gpt2 = fixture("gpt2");
    let raw = json_stdout(&focal(&[
        "--json",
        "attention",
        "--model",
        &gpt2,
        "paris was great",
    ]));
    let layers = raw["weights"].as_array().unwrap();
    assert_eq!((layers.len(), raw["heads"].as_u64()), (2, Some(4)));
    for heads in layers {
        for head in heads.as_array().unwrap() {
            for (i, row) in head.as_array().unwrap().iter().enumerate() {
                let row = sums_to_one(row);
                assert!(row[i + 1..].iter().all(|&w| w == 0.0), "{i}: {row:?}");
            }
        }
    }
    let bert = fixture("bert");
    for method in ["rollout", "flow"] {
        let combined = json_stdout(&focal(&[
            "--json",
            "attention",
            "--model",
            &bert,
            "the man is old",
            "--pair",
            "paris was great",
            "--method",
            method,
        ]));
        let tokens = combined["tokens"].as_array().unwrap();
        assert_eq!(tokens[0], "[CLS]");
        let rows = combined["weights"].as_array().unwrap();
        assert_eq!(rows.len(), tokens.len());
        rows.iter().for_each(|row| {
            sums_to_one(row);
        });
    }
    let picture = tempfile::tempdir().unwrap();
    let png = picture.path().join("heads.png");
    let shown = focal(&[
        "attention",
        "--model",
        &bert,
        "the man is old",
        "--head",
        "1",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.lines().all(|line| line.contains('→')), "{text}");
    for (args, error) in [
        (
            vec!["--layer", "9"],
            "--layer 9: the model has 2 layers (0 to 1)",
        ),
        (vec!["--method", "x"], "unknown --method \"x\""),
        (
            vec!["--method", "flow", "--layer", "0"],
            "--layer and --head choose what --method raw shows",
        ),
    ] {
        let mut all = vec!["attention", "--model", &bert, "a b"];
        all.extend(args);
        assert_one_line_error(&focal(&all), error);
    }
    assert_one_line_error(
        &focal(&["attention", "--model", &gpt2, "a", "--pair", "b"]),
        "--pair: a GPT-2 reads one text",
    );
}

/// A Chromium to open pages with: `FOCAL_CHROMIUM`, else `chromium`, `chromium-browser` or
/// `google-chrome` on the path.
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("FOCAL_CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .map(|name| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// `focal attention --out FILE.html` writes one self-contained page (nothing fetched from a
/// network) that headless Chromium renders: the tokens drawn from the embedded weights, the
/// last layer shown first, a classifier's two attributions as coloured tokens, and a click on a head hiding its lines, a click on a token keeping
/// only its lines, and the layer choice reaching the rollout. Without a Chromium the browser
/// half is skipped with a loud message, unless `FOCAL_REQUIRE_BROWSER` is set (CI sets it).
#[test]
fn attention_page_renders_and_reacts_in_chromium() {
    let classifier = heads("classify");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("heads.html");
    let args = [
        "attention",
        "--model",
        &classifier,
        "the man is old",
        "--pair",
        "paris",
    ];
    let shown = focal(&[&args[..], &["--out", page.to_str().unwrap()]].concat());
    assert_success(&shown);
    let tokens = json_stdout(&focal(&[&["--json"], &args[..]].concat()))["tokens"].clone();
    let html = std::fs::read_to_string(&page).unwrap();
    for outside in [
        "src=",
        "href=",
        "url(",
        "@import",
        "https:",
        "fetch(",
        "XMLHttpRequest",
    ] {
        assert!(
            !html.contains(outside),
            "the page reaches outside: {outside}"
        );
    }
    assert_one_line_error(
        &focal(&[&args[..], &["--out", "x.svg"]].concat()),
        "--out x.svg: the file must end in .png (heatmaps) or .html (the interactive page)",
    );
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("FOCAL_REQUIRE_BROWSER").is_none(),
            "FOCAL_REQUIRE_BROWSER is set but no Chromium was found"
        );
        eprintln!(
            "\n*** SKIPPED: attention_page_renders_and_reacts_in_chromium opened no browser: no \
             chromium on the path (apt-get install chromium, or set FOCAL_CHROMIUM) ***\n"
        );
        return;
    };
    // What the page shows, then a click on head 0, a click on token 1 and the last view chosen.
    let probe = r#"<script>
(function () {
  const body = document.body, r = {};
  const click = (e) => e.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  r.tokens = Array.from(document.querySelectorAll("text.token.left")).map((t) => t.textContent);
  r.right = document.querySelectorAll("text.token.right").length;
  r.view = body.dataset.view; r.heads = Number(body.dataset.activeHeads);
  r.scored = document.querySelectorAll(".attr span").length;
  r.lines = Number(body.dataset.lines);
  click(document.querySelector('.head[data-head="0"]'));
  r.headsAfter = Number(body.dataset.activeHeads); r.linesAfter = Number(body.dataset.lines);
  click(document.querySelector('text.token.left[data-index="1"]'));
  r.selected = body.dataset.selected; r.linesOfToken = Number(body.dataset.lines);
  const choice = document.getElementById("layer");
  choice.value = String(choice.options.length - 1);
  choice.dispatchEvent(new Event("change"));
  r.last = body.dataset.view;
  const out = document.createElement("pre");
  out.id = "focal-test"; out.textContent = JSON.stringify(r); body.appendChild(out);
})();
</script>
</body>"#;
    let probed = dir.path().join("probed.html");
    std::fs::write(&probed, html.replacen("</body>", probe, 1)).unwrap();
    let opened = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            "--dump-dom",
            &format!("file://{}", probed.display()),
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&opened.stdout);
    let start = dom.find("<pre id=\"focal-test\">").unwrap_or_else(|| {
        panic!(
            "the page did not run in {}: {}\n{dom}",
            browser.display(),
            String::from_utf8_lossy(&opened.stderr)
        )
    });
    let body = &dom[start + "<pre id=\"focal-test\">".len()..];
    let r: serde_json::Value = serde_json::from_str(&body[..body.find("</pre>").unwrap()]).unwrap();
    assert_eq!(r["tokens"], tokens);
    let n = tokens.as_array().unwrap().len() as u64;
    assert_eq!(r["right"].as_u64(), Some(n));
    assert_eq!(r["view"], "layer 1", "the page opens on the last layer");
    assert_eq!(
        r["scored"].as_u64(),
        Some(2 * n),
        "both attributions, a token each"
    );
    let heads = r["heads"].as_u64().unwrap();
    assert_eq!(heads, 4);
    assert_eq!(
        r["headsAfter"].as_u64(),
        Some(heads - 1),
        "a click hides head 0"
    );
    let (lines, after) = (
        r["lines"].as_u64().unwrap(),
        r["linesAfter"].as_u64().unwrap(),
    );
    assert!(
        after < lines && lines <= heads * n * n,
        "{lines} lines, then {after}"
    );
    assert_eq!(r["selected"], "left 1", "a click keeps token 1");
    let of_token = r["linesOfToken"].as_u64().unwrap();
    assert!(
        of_token > 0 && of_token <= (heads - 1) * n,
        "{of_token} lines of token 1"
    );
    assert_eq!(r["last"], "attention rollout");
}

/// `focal heads` prints each head's importance normalised per layer, as transformers' head mask
/// gradients give it (`tests/fixtures/interpret/generate_head_importance.py`), the least
/// important heads first, and draws the table; a directory without a classifier and a file
/// with a label the model lacks are one line each.
#[test]
fn heads_ranks_the_heads_of_a_classifier() {
    let data = fixture("interpret/head_importance_data.csv");
    let classifier = heads("classify");
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("interpret/head_importance_reference.json")).unwrap(),
    )
    .unwrap();
    let scores = json_stdout(&focal(&[
        "--json",
        "heads",
        "--model",
        &classifier,
        "--data",
        &data,
        "--batch-size",
        "3",
    ]));
    assert_eq!(scores["rows"], 10);
    let got: Vec<Vec<f64>> = serde_json::from_value(scores["normalised"].clone()).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(reference["normalised"].clone()).unwrap();
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-4, "{got:?} against {want:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("heads.png");
    let shown = focal(&[
        "heads",
        "--model",
        &classifier,
        "--data",
        &data,
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let text = String::from_utf8_lossy(&shown.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("head importance on 10 rows"), "{text}");
    // Layer 0's head 0 is the least important of the reference.
    assert!(
        lines[4].starts_with("least important first (layer.head): 0.0 "),
        "{text}"
    );
    assert_one_line_error(
        &focal(&["heads", "--model", &fixture("bert"), "--data", &data]),
        "the model is BertModel, not BertForSequenceClassification",
    );
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "text,label\nthe man is good .,maybe\n").unwrap();
    assert_one_line_error(
        &focal(&[
            "heads",
            "--model",
            &classifier,
            "--data",
            other.to_str().unwrap(),
        ]),
        "line 2: label \"maybe\" is not one of the training labels",
    );
}

/// `focal attention` reads task directories through their encoders; on a
/// `BertForSequenceClassification` it also explains the predicted label (gradient × input and
/// attention × gradient, as `tests/fixtures/interpret/generate_attributions.py` computes them
/// with transformers), in the text, the JSON and the page.
#[test]
fn attention_explains_a_classifier_and_reads_task_directories() {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("interpret/attributions_reference.json")).unwrap(),
    )
    .unwrap();
    let case = &reference["cases"][0];
    let text = case["text"].as_str().unwrap();
    let classifier = heads("classify");
    let report = json_stdout(&focal(&[
        "--json",
        "attention",
        "--model",
        &classifier,
        text,
    ]));
    assert_eq!(report["tokens"], case["tokens"]);
    let prediction = &report["prediction"];
    assert_eq!(prediction["class"], case["class"]);
    assert_eq!(prediction["label"], "neutral");
    for name in ["gradient_input", "attention_gradient"] {
        let got: Vec<f64> = serde_json::from_value(prediction[name].clone()).unwrap();
        let want: Vec<f64> = serde_json::from_value(case[name].clone()).unwrap();
        let largest = want.iter().fold(0.0f64, |a, &w| a.max(w.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs() + 1e-6 * largest,
                "{name}: {got:?}"
            );
        }
    }
    let shown = focal(&["attention", "--model", &classifier, text]);
    let printed = String::from_utf8_lossy(&shown.stdout);
    assert!(
        printed
            .lines()
            .last()
            .unwrap()
            .starts_with("predicted \"neutral\" (logit "),
        "{printed}"
    );
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("why.html");
    let drawn = focal(&[
        "attention",
        "--model",
        &classifier,
        text,
        "--out",
        page.to_str().unwrap(),
    ]);
    assert_success(&drawn);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(r#""name":"gradient × input for \"neutral\""#),
        "no attribution"
    );
    for task in ["tag", "qa", "multilabel"] {
        let report = json_stdout(&focal(&[
            "--json",
            "attention",
            "--model",
            &heads(task),
            text,
        ]));
        assert_eq!(report["tokens"], case["tokens"], "{task}");
        assert_eq!(report["layers"], 2, "{task}");
    }
}

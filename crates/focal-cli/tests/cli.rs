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
    assert_one_line_error(&out, "unknown task 'juggle': expected one of reverse");
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["burn"], "0.21.0");
    assert!(
        info["backends"]
            .as_array()
            .unwrap()
            .contains(&"ndarray".into())
    );
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], 6);
    assert_eq!(report["final_metrics"]["examples"], 500);
    for file in ["config.json", "model.safetensors", "metrics.json"] {
        assert!(Path::new(run_str).join(file).is_file(), "{file} missing");
    }

    let out = focal(&["translate", "--model", run_str, "3 1 4 1 5", "2 7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

fn json_stdout(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[test]
fn embed_prints_one_vector_per_text() {
    let model = fixture("bert");
    let out = json_stdout(&focal(&[
        "--json",
        "embed",
        "--model",
        &model,
        "--normalize",
        "he was here .",
        "the city",
    ]));
    let embeddings = out["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    for e in embeddings {
        let v: Vec<f64> = serde_json::from_value(e.clone()).unwrap();
        assert_eq!(v.len(), 32);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
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
        "holds a trained Focal model (2 steps); pass --resume to continue it, --overwrite",
    );
    assert_one_line_error(
        &train(&run, &["--resume"]),
        "the saved run finished all 2 steps; nothing to resume",
    );
    assert_one_line_error(
        &train(&run, &["--resume", "--seed", "7"]),
        "the saved run has another configuration: seed 42 (now 7)",
    );
    let out = train(&run, &["--overwrite"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = train(&other, &["--overwrite"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!other.join("pytorch_model.bin").exists());
}

/// `focal train` stopped at every point of its first two saves in turn (in the middle and at
/// the end of each of the six files, after each rename: the process aborts there, as a kill
/// would): the output directory is always absent (first save) or a complete model that
/// `translate` loads, and what the stopped writes left is gone once the next run starts.
#[test]
fn a_killed_run_leaves_no_half_written_model() {
    let parent = tempfile::tempdir().unwrap();
    let run = parent.path().join("run");
    let run_str = run.to_str().unwrap();
    // A save passes 2 points per file (6 files: config, weights, metrics, training state,
    // optimizer, schedule) and, replacing a directory, 2 renames.
    let (first_save, second_save) = (12u32, 14u32);
    let mut leftovers = 0;
    for point in 1..=first_save + second_save {
        let _ = std::fs::remove_dir_all(&run);
        let out = Command::new(env!("CARGO_BIN_EXE_focal"))
            .args([
                "train",
                "--task",
                "reverse",
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--eval-every",
                "1",
                "--overwrite",
                "--out",
                run_str,
            ])
            .env("FOCAL_TEST_WRITE_ABORT_AT", point.to_string())
            .output()
            .unwrap();
        assert!(!out.status.success(), "point {point} was not reached");
        let names: Vec<String> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        if point <= first_save {
            // The first save had no previous model to keep and has not put its own in place.
            assert!(
                !run.exists(),
                "point {point}: a model before its save ended"
            );
        } else if point == first_save + 13 {
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
    assert!(leftovers > 0);
    // The next run cleans up what killed writes left.
    let out = focal(&[
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
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("was cut to them").count(), 1, "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

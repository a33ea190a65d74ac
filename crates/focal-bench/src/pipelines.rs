//! `cargo xtask bench pipelines`: what `focal classify` and `focal heads` do, against
//! transformers doing the same through `crates/focal-bench/torch_pipelines.py` (run by the bench
//! with `--python`).
//!
//! The inputs are generated here, seeded, so that every figure is reproducible on a fresh
//! clone: `--lines` lines of 4 to 30 words (`target/bench/lines-N.txt`) and `--rows` labelled
//! rows (`target/bench/rows-N.csv`, labels drawn from the model's), with words from
//! `sentences.txt`. The model is a `BertForSequenceClassification` directory;
//! `torch_pipelines.py make` writes one from all-MiniLM-L6-v2 with a seeded random head.
//!
//! Both sides time the same region, once, after an untimed warm-up (a load and the first 64
//! texts): loading the model and tokenizer, reading the file, and every batch of
//! `--batch-size` texts in file order, to the results in memory. Loading alone is timed inside
//! that region and reported too. The process's start is left out on both sides (Python's
//! imports, Rust's nothing).
//!
//! - **classify**: `TextClassifier::classify` (transformers' tokenizer, model and softmax), the
//!   best label of each line. Labels must equal transformers' (apart from near-ties, where the
//!   best two scores are within 1e-5), and the best scores agree within 1e-4, or the bench
//!   fails.
//! - **heads**: `focal::train::head_importance` (Michel et al.'s `I_h`, a per-row head mask
//!   and one backward per batch) on the rows, inputs cut to `--max-length`. The normalised
//!   scores must agree within 1e-3.

use crate::torch::Torch;
use anyhow::{Context, bail};
use focal::attention::FusedAutodiffBackend;
use focal::pretrained::TextClassifier;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to run.
pub struct Options {
    pub model: PathBuf,
    pub lines: usize,
    pub rows: usize,
    pub batch_size: usize,
    pub max_length: usize,
    pub only: Vec<String>,
    /// Where the generated inputs are written.
    pub out: PathBuf,
}

impl Options {
    fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

/// One side's timing of one workload.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// The whole region: loading, reading, every batch.
    pub seconds: f64,
    /// Loading the model and tokenizer, inside that region.
    pub load_seconds: f64,
}

/// One workload on both sides.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    /// Texts processed.
    pub texts: usize,
    pub focal: Timing,
    pub pytorch: Option<Timing>,
}

/// Everything measured, and what is compared with PyTorch's results.
#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub batch_size: usize,
    pub max_length: usize,
    pub rows: Vec<Row>,
    pub torch_source: String,
    #[serde(skip)]
    inputs: Inputs,
    #[serde(skip)]
    results: Results,
}

/// The generated files.
#[derive(Debug, Default)]
struct Inputs {
    lines: Option<PathBuf>,
    rows: Option<PathBuf>,
}

/// Focal's results, to compare with transformers'.
#[derive(Debug, Default)]
struct Results {
    /// Each line's best label, its score and the second-best score.
    labels: Vec<(String, f32, f32)>,
    /// Normalised head importance, `[layer][head]`.
    heads: Option<Vec<Vec<f64>>>,
}

const CLASSIFY: &str = "classify";
const HEADS: &str = "heads";

pub fn run<A: FusedAutodiffBackend>(
    options: &Options,
    device: &A::Device,
) -> anyhow::Result<Report> {
    if options.batch_size == 0 {
        bail!("--batch-size 0: give at least one text per batch");
    }
    // An untimed load: the labels for the generated rows, and the files into the page cache
    // before either side is timed.
    let classifier = TextClassifier::<A::InnerBackend>::load(&options.model, device)
        .with_context(|| format!("loading {}", options.model.display()))?;
    let words = words();
    let mut report = Report {
        model: options.model.display().to_string(),
        batch_size: options.batch_size,
        max_length: options.max_length,
        rows: Vec::new(),
        torch_source: crate::torch::NOT_MEASURED.to_string(),
        inputs: Inputs::default(),
        results: Results::default(),
    };
    if options.runs(CLASSIFY) {
        let path = options.out.join(format!("lines-{}.txt", options.lines));
        let lines: Vec<String> = (0..options.lines)
            .map(|i| sentence(&words, i as u64))
            .collect();
        write(&path, &(lines.join("\n") + "\n"))?;
        let warm: Vec<String> = lines.iter().take(64).cloned().collect();
        classifier.classify(&warm, None, Some(2))?;

        let started = Instant::now();
        let classifier = TextClassifier::<A::InnerBackend>::load(&options.model, device)?;
        let load_seconds = started.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&path)?;
        let texts: Vec<String> = text.lines().map(str::to_string).collect();
        let mut labels = Vec::with_capacity(texts.len());
        for batch in texts.chunks(options.batch_size) {
            for ranked in classifier.classify(batch, None, Some(2))? {
                let second = ranked.get(1).map_or(f32::NEG_INFINITY, |s| s.score);
                labels.push((ranked[0].label.clone(), ranked[0].score, second));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        report.rows.push(Row {
            workload: CLASSIFY.into(),
            texts: texts.len(),
            focal: Timing {
                seconds,
                load_seconds,
            },
            pytorch: None,
        });
        report.inputs.lines = Some(path);
        report.results.labels = labels;
    }
    if options.runs(HEADS) {
        let path = options.out.join(format!("rows-{}.csv", options.rows));
        let labels = &classifier.config.labels;
        let mut rng = rand::rngs::StdRng::seed_from_u64(30);
        let mut csv = String::from("text,label\n");
        for i in 0..options.rows {
            let label = &labels[rng.random_range(0..labels.len())];
            csv += &format!("{},{label}\n", sentence(&words, 1_000_000 + i as u64));
        }
        write(&path, &csv)?;
        let score = |rows: &Path| {
            focal::train::head_importance::<A>(
                &options.model,
                rows,
                None,
                options.batch_size,
                Some(options.max_length),
                device,
            )
        };
        let warm = options.out.join("rows-warm-up.csv");
        let head: Vec<&str> = csv.lines().take(65).collect();
        write(&warm, &(head.join("\n") + "\n"))?;
        score(&warm)?;

        // `head_importance` loads the model itself: its load is timed alone, just before.
        let started = Instant::now();
        TextClassifier::<A::InnerBackend>::load(&options.model, device)?;
        let load_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let importance = score(&path)?;
        let seconds = started.elapsed().as_secs_f64();
        report.rows.push(Row {
            workload: HEADS.into(),
            texts: importance.rows,
            focal: Timing {
                seconds,
                load_seconds,
            },
            pytorch: None,
        });
        report.inputs.rows = Some(path);
        report.results.heads = Some(importance.normalised);
    }
    Ok(report)
}

impl Report {
    /// Runs `torch_pipelines.py` on the same files (with `--python`), checks that its results
    /// are Focal's, and puts its timings next to Focal's.
    pub fn compare_with(&mut self, torch: &Torch) -> anyhow::Result<()> {
        let mut args: Vec<OsString> = vec![
            "--model".into(),
            self.model.clone().into(),
            "--batch-size".into(),
            self.batch_size.to_string().into(),
            "--max-length".into(),
            self.max_length.to_string().into(),
        ];
        if let Some(lines) = &self.inputs.lines {
            args.extend(["--lines".into(), lines.clone().into()]);
        }
        if let Some(rows) = &self.inputs.rows {
            args.extend(["--rows".into(), rows.clone().into()]);
        }
        let value = torch.run("torch_pipelines.py", "pipelines", &args)?;
        self.torch_source = Torch::source(value.as_ref(), "torch_pipelines.py");
        let Some(value) = value else {
            return Ok(());
        };
        for row in &mut self.rows {
            let theirs = &value[&row.workload];
            row.pytorch = Some(Timing {
                seconds: theirs["seconds"].as_f64().context("no seconds")?,
                load_seconds: theirs["load_seconds"].as_f64().context("no load_seconds")?,
            });
        }
        if !self.results.labels.is_empty() {
            let theirs: Vec<(String, f32)> =
                serde_json::from_value(value[CLASSIFY]["labels"].clone())
                    .context("torch_pipelines.py wrote no labels")?;
            compare_labels(&self.results.labels, &theirs)?;
        }
        if let Some(ours) = &self.results.heads {
            let theirs: Vec<Vec<f64>> = serde_json::from_value(value[HEADS]["normalised"].clone())
                .context("torch_pipelines.py wrote no head scores")?;
            compare_heads(ours, &theirs)?;
        }
        Ok(())
    }
}

/// Focal's best labels against transformers': equal apart from near-ties, best scores within
/// 1e-4.
fn compare_labels(ours: &[(String, f32, f32)], theirs: &[(String, f32)]) -> anyhow::Result<()> {
    if ours.len() != theirs.len() {
        bail!(
            "Focal classified {} lines, transformers {}",
            ours.len(),
            theirs.len()
        );
    }
    let mut ties = 0;
    let mut largest = 0f32;
    for (i, ((label, score, second), (their_label, their_score))) in
        ours.iter().zip(theirs).enumerate()
    {
        if label != their_label {
            if score - second < 1e-5 {
                ties += 1;
                continue;
            }
            bail!(
                "line {}: Focal's label {label} ({score}) is not transformers' {their_label} \
                 ({their_score}): the comparison is void",
                i + 1
            );
        }
        let difference = (score - their_score).abs();
        // `f32::max` passes over NaN: a NaN difference counts as infinite.
        largest = largest.max(if difference.is_nan() {
            f32::INFINITY
        } else {
            difference
        });
    }
    if largest > 1e-4 {
        bail!("best scores differ from transformers' by up to {largest:e} (more than 1e-4)");
    }
    eprintln!(
        "labels equal to transformers' on {} of {} lines ({ties} near-ties), best scores within {largest:e}",
        ours.len() - ties,
        ours.len()
    );
    Ok(())
}

/// Focal's normalised head importance against transformers', within 1e-3.
fn compare_heads(ours: &[Vec<f64>], theirs: &[Vec<f64>]) -> anyhow::Result<()> {
    let shape = |m: &[Vec<f64>]| m.iter().map(Vec::len).collect::<Vec<_>>();
    if shape(ours) != shape(theirs) {
        bail!(
            "head scores of shape {:?} against transformers' {:?}",
            shape(ours),
            shape(theirs)
        );
    }
    // `f64::max` passes over NaN: a NaN difference counts as infinite.
    let largest = ours
        .iter()
        .flatten()
        .zip(theirs.iter().flatten())
        .map(|(a, b)| {
            let d = (a - b).abs();
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max);
    if largest > 1e-3 {
        bail!(
            "normalised head scores differ from transformers' by up to {largest:e} (more than 1e-3)"
        );
    }
    eprintln!("normalised head scores within {largest:e} of transformers'");
    Ok(())
}

/// The words of `sentences.txt`, letters only, lower-cased.
fn words() -> Vec<String> {
    let mut words: Vec<String> = include_str!("../sentences.txt")
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphabetic())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    words.sort();
    words.dedup();
    words
}

/// Sentence `seed`: 4 to 30 words, the first capitalised, a full stop.
fn sentence(words: &[String], seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = rng.random_range(4..=30);
    let mut text = (0..n)
        .map(|_| words[rng.random_range(0..words.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(first) = text.get(..1) {
        text.replace_range(..1, &first.to_uppercase());
    }
    text + "."
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    focal::train::write_atomic(path, contents.as_bytes())?;
    Ok(())
}

/// The table: each side's whole region and load, texts per second, and the ratio.
pub fn markdown(report: &Report, backend: &str) -> String {
    let mut out = format!(
        "Pipelines on {} ({backend}), batches of {} in file order; head importance cut to {} \
         tokens. Each side times loading the model and tokenizer, reading the file and every \
         batch, once, after a warm-up. PyTorch: {}.\n\n\
         | workload | texts | Focal | of which loading | Focal texts/s | PyTorch | of which loading | PyTorch texts/s | Focal vs PyTorch |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        report.model, report.batch_size, report.max_length, report.torch_source
    );
    for row in &report.rows {
        let rate = |t: &Timing| row.texts as f64 / t.seconds;
        let (theirs, their_load, their_rate, ratio) = match &row.pytorch {
            Some(t) => (
                format!("{:.2} s", t.seconds),
                format!("{:.2} s", t.load_seconds),
                format!("{:.1}", rate(t)),
                format!("{:.2}×", t.seconds / row.focal.seconds),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        out += &format!(
            "| {} | {} | {:.2} s | {:.2} s | {:.1} | {theirs} | {their_load} | {their_rate} | {ratio} |\n",
            row.workload,
            row.texts,
            row.focal.seconds,
            row.focal.load_seconds,
            rate(&row.focal),
        );
    }
    out += "\nRatios are speed-ups (above 1: Focal is faster).\n";
    out
}

/// The rows as figures for `--backend all`.
pub fn figures(report: &Report) -> Vec<crate::swap::Figure> {
    report
        .rows
        .iter()
        .map(|row| crate::swap::Figure {
            workload: format!("{} ({} texts)", row.workload, row.texts),
            unit: "texts/s".into(),
            value: Some(row.texts as f64 / row.focal.seconds),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sentences_are_seeded_and_csv_safe() {
        let words = words();
        assert!(words.len() > 50, "{} words", words.len());
        let a = sentence(&words, 7);
        assert_eq!(a, sentence(&words, 7));
        assert_ne!(a, sentence(&words, 8));
        for seed in 0..200 {
            let s = sentence(&words, seed);
            let n = s.split(' ').count();
            assert!((4..=30).contains(&n), "{n} words: {s}");
            assert!(!s.contains([',', '"', '\n']), "{s}");
        }
    }

    #[test]
    fn a_different_label_fails_unless_a_near_tie() {
        let ours = vec![
            ("a".to_string(), 0.9, 0.1),
            ("b".to_string(), 0.500001, 0.5),
        ];
        let tie = vec![("a".to_string(), 0.9), ("a".to_string(), 0.500001)];
        compare_labels(&ours, &tie).unwrap();
        let ours_clear = vec![("a".to_string(), 0.9, 0.1), ("b".to_string(), 0.7, 0.3)];
        let error = compare_labels(&ours_clear, &tie).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        let off = vec![("a".to_string(), 0.8), ("b".to_string(), 0.7)];
        assert!(compare_labels(&ours_clear, &off).is_err());
        assert!(compare_labels(&ours_clear, &off[..1]).is_err());
        let nan = vec![("a".to_string(), f32::NAN), ("b".to_string(), 0.7)];
        assert!(compare_labels(&ours_clear, &nan).is_err());
    }

    #[test]
    fn head_scores_must_agree() {
        let ours = vec![vec![0.6, 0.8]];
        compare_heads(&ours, &[vec![0.6004, 0.8]]).unwrap();
        assert!(compare_heads(&ours, &[vec![0.61, 0.8]]).is_err());
        assert!(compare_heads(&ours, &[vec![0.6]]).is_err());
        assert!(compare_heads(&ours, &[vec![f64::NAN, 0.8]]).is_err());
    }
}

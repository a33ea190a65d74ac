//! A small Transformer trained from scratch on pairs of texts with `focal-train`, then used.
//!
//! The task: number words to digits in reverse order ("three one four" → "4 1 3"). The program
//! writes its pairs as CSV files (a `text` and a `label` column, the format `focal train --task
//! seq2seq` reads), trains Focal's encoder-decoder of the `tiny` size (d 64, 4 heads, 2 + 2
//! layers) on burn-train's `Learner`, and translates sentences it never saw.
//!
//! ```sh
//! cargo run --release -p focal --example train_from_scratch            # a few seconds
//! cargo run --release -p focal --example train_from_scratch -- runs/n   # keep the model there
//! ```

use focal::burn::backend::Autodiff;
use focal::train::batch::source_tensors;
use focal::train::{FineTuneConfig, FineTuneTask, ModelSize, load_checkpoint, train_seq2seq};
use std::fmt::Write as _;
use std::path::PathBuf;

type B = focal::backend::NdArray;

const WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// `rows` pairs of 2 to 5 numbers, drawn from a small generator seeded with `seed`.
fn pairs(rows: usize, seed: u64) -> Vec<(String, String)> {
    let mut state = seed;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    (0..rows)
        .map(|_| {
            let digits: Vec<usize> = (0..2 + next(4)).map(|_| next(10) as usize).collect();
            let words: Vec<&str> = digits.iter().map(|&d| WORDS[d]).collect();
            let reversed: Vec<String> = digits.iter().rev().map(|d| d.to_string()).collect();
            (words.join(" "), reversed.join(" "))
        })
        .collect()
}

fn write_csv(path: &std::path::Path, rows: &[(String, String)]) -> std::io::Result<()> {
    let mut csv = String::from("text,label\n");
    for (text, label) in rows {
        writeln!(csv, "{text},{label}").expect("writing to a String");
    }
    std::fs::write(path, csv)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("focal-numbers-{}", std::process::id())),
    };
    let data = std::env::temp_dir().join(format!("focal-numbers-data-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let (train, valid) = (data.join("train.csv"), data.join("valid.csv"));
    write_csv(&train, &pairs(600, 1))?;
    write_csv(&valid, &pairs(60, 2))?;

    let config = FineTuneConfig {
        task: FineTuneTask::Seq2Seq,
        epochs: 6,
        batch_size: 16,
        learning_rate: 1e-3,
        max_length: 8,  // the longest sequence (5 words) and two positions more
        progress: true, // a line per epoch on standard error
        ..Default::default()
    };
    let device = Default::default();
    let report = train_seq2seq::<Autodiff<B>>(
        &train,
        Some(&valid),
        &out,
        &config,
        ModelSize::Tiny,
        &device,
    )?;
    let exact = |held_out: &focal::train::HeldOut| 100.0 * held_out.exact_match.unwrap_or(0.0);
    println!(
        "held-out exact match {:.1}% before training, {:.1}% after {} epochs ({:.1} s); model in {}",
        exact(&report.before),
        exact(&report.after),
        report.epochs_run,
        report.seconds,
        out.display()
    );

    // Load the directory as a user would later, and translate new sentences.
    let (artifact, model) = load_checkpoint::<B>(&out, &device)?;
    let vocabulary = &artifact.vocabulary;
    let texts = ["seven seven two", "one two three four five"];
    let sources = texts
        .map(|t| vocabulary.encode(t))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let sources: Vec<&[usize]> = sources.iter().map(Vec::as_slice).collect();
    let specials = vocabulary.specials();
    let (source, valid_positions) = source_tensors::<B>(&sources, specials, &device);
    let outputs = model.greedy_decode(source, valid_positions, specials, artifact.max_output_len);
    for (text, ids) in texts.iter().zip(&outputs) {
        println!("{text:>24} → {}", vocabulary.decode(ids));
    }
    std::fs::remove_dir_all(&data)?;
    Ok(())
}

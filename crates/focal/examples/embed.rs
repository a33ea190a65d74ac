//! Sentence embeddings from a Hugging Face directory, and the texts' similarities.
//!
//! The directory is read as the Hub stores it (`config.json`, `model.safetensors`,
//! `tokenizer.json`, and for sentence-transformers `modules.json` with the pooling); nothing is
//! downloaded.
//!
//! ```sh
//! git clone https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2
//! cargo run --release -p focal --example embed -- all-MiniLM-L6-v2 \
//!     "A man is eating food." "Someone eats a meal." "The stock market fell."
//! # CI runs it on the tiny random BERT of the tests: tests/fixtures/bert
//! ```

use focal::burn::tensor::Tensor;
use focal::pretrained::TextMatcher;
use std::path::PathBuf;

type B = focal::backend::NdArray;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: embed MODEL_DIR TEXT...")?);
    let mut texts: Vec<String> = args.collect();
    if texts.is_empty() {
        texts = [
            "A man is eating food.",
            "Someone eats a meal.",
            "The stock market fell.",
        ]
        .map(String::from)
        .to_vec();
    }

    let device = Default::default();
    // A BERT or sentence-transformers directory, with its tokenizer and pooling.
    let model = TextMatcher::<B>::load(&dir, &device)?;
    let embeddings = model.embed(&texts)?; // [texts, width]
    let [n, width] = embeddings.dims();
    println!("{n} texts, {width} numbers each ({})", dir.display());

    // Cosine similarities: normalise each row, then one matrix product.
    let norms = embeddings.clone().powi_scalar(2).sum_dim(1).sqrt();
    let unit = embeddings / norms;
    let similarity: Tensor<B, 2> = unit.clone().matmul(unit.transpose());
    let values: Vec<f32> = similarity.into_data().to_vec()?;
    for (i, text) in texts.iter().enumerate() {
        let row: Vec<String> = (0..n)
            .map(|j| format!("{:6.3}", values[i * n + j]))
            .collect();
        println!("{}  {text}", row.join(" "));
    }
    let self_similarity = (0..n).map(|i| values[i * n + i]).fold(0.0f32, f32::max);
    assert!(
        (self_similarity - 1.0).abs() < 1e-4,
        "a text's similarity to itself is {self_similarity}"
    );
    Ok(())
}

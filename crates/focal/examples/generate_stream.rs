//! Text generation from a GPT-2 directory, printed token by token as it is produced.
//!
//! ```sh
//! cargo run --release -p focal --example generate_stream -- path/to/gpt2 "Once upon a time"
//! # CI runs it on the tiny random GPT-2 of the tests (its words are random):
//! cargo run -p focal --example generate_stream -- tests/fixtures/gpt2 "hello world"
//! ```
//!
//! Byte-level BPE can split one character over several tokens, so the text is decoded whole
//! after each token and only what is new is printed: what appears never changes afterwards.

use focal::heads::{GenerationConfig, Strategy, generate};
use focal::pretrained::{Gpt2, TextTokenizer};
use std::io::Write;
use std::path::PathBuf;

type B = focal::backend::NdArray;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: generate_stream MODEL_DIR [PROMPT]")?,
    );
    let prompt = args
        .next()
        .unwrap_or_else(|| "Once upon a time".to_string());

    let device = Default::default();
    let (model, config) = Gpt2::<B>::load(&dir, &device)?;
    let tokenizer = TextTokenizer::load(&dir, config.n_positions, config.vocab_size, None)?;
    let prompt_ids: Vec<usize> = tokenizer.encode_batch(std::slice::from_ref(&prompt))?.ids[0]
        .iter()
        .map(|&id| id as usize)
        .collect();

    let options = GenerationConfig {
        max_new_tokens: 24,
        strategy: Strategy::Sample,
        temperature: 0.8,
        top_p: Some(0.95),
        stop_tokens: config.eos_token_id.into_iter().collect(),
        seed: 7,
        ..Default::default()
    };
    print!("{prompt}");
    let mut produced = Vec::new();
    let mut shown = String::new();
    let mut stream_error = None;
    let ids = generate(&model, &prompt_ids, &options, &device, |id| {
        produced.push(id as u32);
        match tokenizer.decode(&produced) {
            // An unfinished character decodes to U+FFFD: wait for the token that completes it.
            Ok(text) if !text.ends_with('\u{FFFD}') && text.starts_with(&shown) => {
                print!("{}", &text[shown.len()..]);
                let _ = std::io::stdout().flush();
                shown = text;
            }
            Ok(_) => {}
            Err(e) => stream_error = Some(e),
        }
    })?;
    if let Some(e) = stream_error {
        return Err(e.into());
    }
    // What a last, unfinished character held back.
    let text = tokenizer.decode(&produced)?;
    println!("{}", text.get(shown.len()..).unwrap_or_default());
    eprintln!(
        "{} tokens after a prompt of {}",
        ids.len(),
        prompt_ids.len()
    );
    Ok(())
}

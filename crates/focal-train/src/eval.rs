//! Evaluation by greedy decoding.

use crate::Example;
use crate::batch::source_tensors;
use focal_attention::FusedAttentionBackend;
use focal_heads::{Seq2SeqTransformer, SpecialTokens};
use serde::{Deserialize, Serialize};

/// How well a model's greedy outputs match the targets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Fraction of examples whose whole output equals the target.
    pub exact_match: f64,
    /// Fraction of target positions predicted correctly (position by position).
    pub token_accuracy: f64,
    /// Number of examples evaluated.
    pub examples: usize,
}

/// Greedy-decodes every example's source and compares with its target.
///
/// Run it on an inference backend (`model.valid()` during training): decoding needs no
/// gradients.
pub fn evaluate<B: FusedAttentionBackend>(
    model: &Seq2SeqTransformer<B>,
    examples: &[Example],
    specials: SpecialTokens,
    batch_size: usize,
    device: &B::Device,
) -> EvalMetrics {
    let mut exact = 0usize;
    let mut correct_tokens = 0usize;
    let mut total_tokens = 0usize;
    for chunk in examples.chunks(batch_size.max(1)) {
        let sources: Vec<&[usize]> = chunk.iter().map(|e| e.source.as_slice()).collect();
        let (source, valid) = source_tensors::<B>(&sources, specials, device);
        let longest = chunk.iter().map(|e| e.target.len()).max().unwrap_or(0);
        // One step more than the longest target, so a model that fails to stop is caught.
        let max_new = (longest + 1).min(model.max_len() - 1);
        let outputs = model.greedy_decode(source, valid, specials, max_new);
        for (example, output) in chunk.iter().zip(&outputs) {
            exact += usize::from(*output == example.target);
            total_tokens += example.target.len();
            correct_tokens += example
                .target
                .iter()
                .zip(output)
                .filter(|(a, b)| a == b)
                .count();
        }
    }
    EvalMetrics {
        exact_match: exact as f64 / examples.len().max(1) as f64,
        token_accuracy: correct_tokens as f64 / total_tokens.max(1) as f64,
        examples: examples.len(),
    }
}

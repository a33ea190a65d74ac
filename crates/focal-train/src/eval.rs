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

/// Counts of greedy outputs against targets, which add up over batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeCounts {
    /// Examples decoded.
    pub examples: usize,
    /// Examples whose whole output equals the target.
    pub exact: usize,
    /// Target positions.
    pub tokens: usize,
    /// Target positions predicted correctly (position by position).
    pub correct_tokens: usize,
}

impl DecodeCounts {
    /// The shares.
    pub fn metrics(&self) -> EvalMetrics {
        EvalMetrics {
            exact_match: self.exact as f64 / self.examples.max(1) as f64,
            token_accuracy: self.correct_tokens as f64 / self.tokens.max(1) as f64,
            examples: self.examples,
        }
    }
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
    decode_counts(model, examples, specials, batch_size, device).metrics()
}

/// [`evaluate`]'s counts.
pub fn decode_counts<B: FusedAttentionBackend>(
    model: &Seq2SeqTransformer<B>,
    examples: &[Example],
    specials: SpecialTokens,
    batch_size: usize,
    device: &B::Device,
) -> DecodeCounts {
    let mut counts = DecodeCounts {
        examples: examples.len(),
        ..DecodeCounts::default()
    };
    for chunk in examples.chunks(batch_size.max(1)) {
        let sources: Vec<&[usize]> = chunk.iter().map(|e| e.source.as_slice()).collect();
        let (source, valid) = source_tensors::<B>(&sources, specials, device);
        let longest = chunk.iter().map(|e| e.target.len()).max().unwrap_or(0);
        // One step more than the longest target, so a model that fails to stop is caught.
        let max_new = (longest + 1).min(model.max_len() - 1);
        let outputs = model.greedy_decode(source, valid, specials, max_new);
        for (example, output) in chunk.iter().zip(&outputs) {
            counts.exact += usize::from(*output == example.target);
            counts.tokens += example.target.len();
            counts.correct_tokens += example
                .target
                .iter()
                .zip(output)
                .filter(|(a, b)| a == b)
                .count();
        }
    }
    counts
}

//! Padding examples into tensors.

use crate::Example;
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use focal_attention::padding_mask_from_lengths;
use focal_heads::SpecialTokens;

/// A padded batch for teacher-forced training of a sequence-to-sequence model.
#[derive(Clone, Debug)]
pub struct Seq2SeqBatch<B: Backend> {
    /// Source ids `[b, s]`, padded with `<pad>`.
    pub source: Tensor<B, 2, Int>,
    /// `[b, s]`, `true` = real source token.
    pub source_valid: Tensor<B, 2, Bool>,
    /// Decoder input `[b, l]`: `<bos>` then the target, padded.
    pub target_in: Tensor<B, 2, Int>,
    /// Decoder labels `[b, l]`: the target then `<eos>`, padded (padding is ignored by the loss).
    pub target_out: Tensor<B, 2, Int>,
}

/// Pads `rows` to the longest with `pad` into a `[rows, width]` id tensor.
fn padded<B: Backend>(rows: Vec<Vec<usize>>, pad: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(rows.len() * width);
    for row in &rows {
        flat.extend(row.iter().map(|&t| t as i64));
        flat.extend(std::iter::repeat_n(pad as i64, width - row.len()));
    }
    Tensor::from_data(TensorData::new(flat, [rows.len(), width]), device)
}

/// Source ids, each followed by `<eos>` (as fairseq and T5 do, so the model sees where every
/// source ends), padded, and their validity mask.
///
/// Training, evaluation and `focal translate` all build sources here, so they agree.
///
/// # Panics
///
/// When `sources` is empty.
pub fn source_tensors<B: Backend>(
    sources: &[&[usize]],
    specials: SpecialTokens,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
    assert!(!sources.is_empty(), "cannot build a batch of no sequences");
    let rows: Vec<Vec<usize>> = sources
        .iter()
        .map(|s| {
            s.iter()
                .copied()
                .chain(std::iter::once(specials.eos))
                .collect()
        })
        .collect();
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let width = lengths.iter().copied().max().unwrap_or(0);
    (
        padded(rows, specials.pad, device),
        padding_mask_from_lengths(&lengths, width, device),
    )
}

impl<B: Backend> Seq2SeqBatch<B> {
    /// Pads `examples` into one batch.
    ///
    /// # Panics
    ///
    /// When `examples` is empty.
    pub fn new(examples: &[Example], specials: SpecialTokens, device: &B::Device) -> Self {
        let sources: Vec<&[usize]> = examples.iter().map(|e| e.source.as_slice()).collect();
        let (source, source_valid) = source_tensors(&sources, specials, device);
        let target_in = examples
            .iter()
            .map(|e| {
                std::iter::once(specials.bos)
                    .chain(e.target.iter().copied())
                    .collect()
            })
            .collect();
        let target_out = examples
            .iter()
            .map(|e| {
                e.target
                    .iter()
                    .copied()
                    .chain(std::iter::once(specials.eos))
                    .collect()
            })
            .collect();
        Self {
            source,
            source_valid,
            target_in: padded(target_in, specials.pad, device),
            target_out: padded(target_out, specials.pad, device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_backend::NdArray;

    #[test]
    fn pads_and_shifts_targets() {
        let device = Default::default();
        let specials = SpecialTokens {
            pad: 0,
            bos: 1,
            eos: 2,
        };
        let examples = [
            Example {
                source: vec![5, 6, 7],
                target: vec![7, 6, 5],
            },
            Example {
                source: vec![8],
                target: vec![8],
            },
        ];
        let batch = Seq2SeqBatch::<NdArray>::new(&examples, specials, &device);
        let ids =
            |t: Tensor<NdArray, 2, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(ids(batch.source), vec![5, 6, 7, 2, 8, 2, 0, 0]);
        assert_eq!(ids(batch.target_in), vec![1, 7, 6, 5, 1, 8, 0, 0]);
        assert_eq!(ids(batch.target_out), vec![7, 6, 5, 2, 8, 2, 0, 0]);
        batch.source_valid.into_data().assert_eq(
            &TensorData::from([[true, true, true, true], [true, true, false, false]]),
            false,
        );
    }
}

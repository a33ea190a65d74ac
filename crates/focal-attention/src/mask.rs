//! Attention masks as values.

use crate::cpu::Dense;
use burn::tensor::{BasicOps, Bool, Int, Tensor, backend::Backend};
use std::ops::Range;

/// A boolean `[l, s]` causal mask, `true` = may attend, aligned bottom-right.
///
/// Query `i` may attend key `j` when `j <= i + (s - l)`: with `s > l` (cached decoding, a prefix
/// of known keys) the last query sees every key; with `s < l` the first `l - s` queries see
/// nothing, and attention gives them zeros.
pub fn causal_mask<B: Backend>(l: usize, s: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    Pattern::Causal.mask(l, s, 0..s, device)
}

/// A rule on (query position, key position) pairs. Query `i` of `l` sits at position
/// `p = i + (s - l)` among the `s` keys (bottom-right alignment, as for the causal mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    /// `j <= p`.
    Causal,
    /// `p - window < j <= p`: the query and the `window - 1` keys before it.
    SlidingWindow { window: usize },
    /// `|j - p| < window`: `window - 1` keys on each side and the query's own.
    BidirectionalWindow { window: usize },
    /// Sparse Transformer "fixed" pattern: keys in the query's block of `block` positions, plus
    /// the last `summary` positions of every block.
    BlockSparse { block: usize, summary: usize },
}

impl Pattern {
    /// The `[l, n]` mask of the pattern for the keys `keys` (`n` of them) out of `s`,
    /// `true` = may attend.
    fn mask<B: Backend>(
        self,
        l: usize,
        s: usize,
        keys: Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 2, Bool> {
        let (query, key) = aligned_positions::<B>(l, s, keys, device);
        match self {
            Pattern::Causal => key.lower_equal(query),
            Pattern::SlidingWindow { window } => key
                .clone()
                .lower_equal(query.clone())
                .bool_and(key.greater(query.sub_scalar(window as i64))),
            Pattern::BidirectionalWindow { window } => key
                .clone()
                .greater(query.clone().sub_scalar(window as i64))
                .bool_and(key.lower(query.add_scalar(window as i64))),
            Pattern::BlockSparse { block, summary } => {
                // Shift by whole blocks so positions are non-negative (integer division of
                // negatives truncates towards zero).
                let shift = (block * l.div_ceil(block)) as i64;
                let block = block as i64;
                let same_block = key
                    .clone()
                    .add_scalar(shift)
                    .div_scalar(block)
                    .equal(query.add_scalar(shift).div_scalar(block));
                let summary_column = key
                    .remainder_scalar(block)
                    .greater_equal_elem(block - summary as i64);
                same_block.bool_or(summary_column)
            }
        }
    }
}

/// The positions of `l` queries and of the keys `keys` out of `s`, as two `[l, n]` grids:
/// query `i` sits at `p = i + (s - l)` (bottom-right alignment), key `j` at `j`.
pub(crate) fn aligned_positions<B: Backend>(
    l: usize,
    s: usize,
    keys: Range<usize>,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let n = keys.len();
    let query = Tensor::<B, 1, Int>::arange(0..l as i64, device)
        .add_scalar(s as i64 - l as i64)
        .reshape([l, 1])
        .expand([l, n]); // p, [l, n]
    let key = Tensor::<B, 1, Int>::arange(keys.start as i64..keys.end as i64, device)
        .reshape([1, n])
        .expand([l, n]); // j, [l, n]
    (query, key)
}

/// A boolean `[b, s]` key mask from sequence lengths, `true` = real token (may be attended).
///
/// # Panics
///
/// When a length exceeds `s`.
pub fn padding_mask_from_lengths<B: Backend>(
    lengths: &[usize],
    s: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    if let Some(&too_long) = lengths.iter().find(|&&n| n > s) {
        panic!("padding mask: length {too_long} exceeds the sequence length {s}");
    }
    let b = lengths.len();
    let lengths: Vec<i64> = lengths.iter().map(|&n| n as i64).collect();
    let lengths = Tensor::<B, 1, Int>::from_ints(lengths.as_slice(), device)
        .reshape([b, 1])
        .expand([b, s]);
    let positions = Tensor::<B, 1, Int>::arange(0..s as i64, device)
        .reshape([1, s])
        .expand([b, s]);
    positions.lower(lengths)
}

/// Which (query, key) pairs may attend, as a value that combines parts lazily.
///
/// Boolean parts are combined with logical *and*: a pair may attend only if every part allows
/// it. Additive (float) parts are summed and added to the scaled scores before the softmax, as
/// PyTorch does with a float `attn_mask`. The mask is materialised to `[b, h, l, s]` by the
/// attention that uses it, so parts of different shapes broadcast (a `[b, s]` padding mask, a
/// causal rule, a `[1, 1, l, s]` pattern).
///
/// Convention: `true` = may attend (see the crate docs).
///
/// ```
/// # use burn::tensor::{Tensor, Bool};
/// # type B = focal_backend::NdArray;
/// # let device = Default::default();
/// use focal_attention::{AttentionMask, padding_mask_from_lengths};
/// let valid = padding_mask_from_lengths::<B>(&[3, 2], 3, &device); // [b, s]
/// let mask = AttentionMask::key_padding(valid).and(AttentionMask::causal());
/// let full = mask.materialize(2, 4, 3, 3, &device).unwrap(); // [b, h, l, s]
/// assert_eq!(full.dims(), [2, 4, 3, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct AttentionMask<B: Backend> {
    patterns: Vec<Pattern>,
    key_padding: Vec<Tensor<B, 2, Bool>>,
    explicit: Vec<Tensor<B, 4, Bool>>,
    additive: Vec<Tensor<B, 4>>,
}

/// A mask in the form the CPU kernel takes: the causal / sliding-window rule as key ranges, key
/// padding per batch row, everything else materialised once.
pub(crate) struct KernelMask<B: Backend> {
    pub causal: bool,
    pub window: Option<usize>,
    /// `[b][s]`, `true` = real key.
    pub key_valid: Option<Vec<bool>>,
    /// Explicit masks and the other patterns, `[b|1, h|1, l, s]`, `true` = may attend.
    pub allowed: Option<Dense<bool>>,
    /// The sum of the additive parts, `[b|1, h|1, l, s]`.
    pub bias: Option<Dense<f32>>,
    /// The same sum as a tensor, for the kernel's autodiff node: the bias gradient flows back
    /// through it to every additive part that is differentiated (a learned relative position
    /// bias, ALiBi slopes being trained).
    pub bias_tensor: Option<Tensor<B, 4>>,
}

impl<B: Backend> AttentionMask<B> {
    /// The mask as a [`KernelMask`] for `[b, h, l, s]` scores, or `None` when a part does not fit
    /// that shape (the generic path then reports it).
    pub(crate) fn kernel_form(
        &self,
        [b, h, l, s]: [usize; 4],
        device: &B::Device,
    ) -> Option<KernelMask<B>> {
        let mut causal = false;
        let mut window: Option<usize> = None;
        let mut dense_patterns = Vec::new();
        for pattern in &self.patterns {
            match *pattern {
                Pattern::Causal => causal = true,
                Pattern::SlidingWindow { window: w } => {
                    causal = true;
                    window = Some(window.map_or(w, |v| v.min(w)));
                }
                other => dense_patterns.push(other),
            }
        }
        let key_valid = if self.key_padding.is_empty() {
            None
        } else {
            let mut valid = vec![true; b * s];
            for padding in &self.key_padding {
                if padding.dims() != [b, s] {
                    return None;
                }
                let values = padding.to_data().to_vec::<bool>().ok()?;
                valid.iter_mut().zip(values).for_each(|(v, x)| *v &= x);
            }
            Some(valid)
        };
        let fits = |[pb, ph, pl, ps]: [usize; 4]| {
            (pb == b || pb == 1) && (ph == h || ph == 1) && pl == l && ps == s
        };
        if !self.explicit.iter().all(|m| fits(m.dims()))
            || !self.additive.iter().all(|m| fits(m.dims()))
        {
            return None;
        }
        // Broadcast every dense part to the smallest common [batch, heads, l, s].
        let dense_shape = |dims: &mut dyn Iterator<Item = [usize; 4]>| {
            dims.fold([1, 1, l, s], |acc, d| {
                [acc[0].max(d[0]), acc[1].max(d[1]), l, s]
            })
        };
        let allowed = if self.explicit.is_empty() && dense_patterns.is_empty() {
            None
        } else {
            let shape = dense_shape(&mut self.explicit.iter().map(|m| m.dims()));
            let parts = self.explicit.iter().map(|m| m.clone().expand(shape)).chain(
                dense_patterns.iter().map(|pattern| {
                    pattern
                        .mask::<B>(l, s, 0..s, device)
                        .reshape([1, 1, l, s])
                        .expand(shape)
                }),
            );
            let mask = parts.reduce(|acc, part| acc.bool_and(part))?;
            Some(Dense {
                data: mask.into_data().to_vec::<bool>().ok()?,
                batch: shape[0],
                heads: shape[1],
            })
        };
        let (bias, bias_tensor) = if self.additive.is_empty() {
            (None, None)
        } else {
            let shape = dense_shape(&mut self.additive.iter().map(|m| m.dims()));
            let sum = self
                .additive
                .iter()
                .map(|m| m.clone().expand(shape))
                .reduce(|acc, part| acc + part)?;
            let dense = Dense {
                data: sum.to_data().convert::<f32>().to_vec::<f32>().ok()?,
                batch: shape[0],
                heads: shape[1],
            };
            (Some(dense), Some(sum))
        };
        Some(KernelMask {
            causal,
            window,
            key_valid,
            allowed,
            bias,
            bias_tensor,
        })
    }
}

impl<B: Backend> Default for AttentionMask<B> {
    fn default() -> Self {
        Self::none()
    }
}

impl<B: Backend> AttentionMask<B> {
    /// Every query may attend every key.
    pub fn none() -> Self {
        Self {
            patterns: Vec::new(),
            key_padding: Vec::new(),
            explicit: Vec::new(),
            additive: Vec::new(),
        }
    }

    /// Causal, aligned bottom-right (see [`causal_mask`]).
    pub fn causal() -> Self {
        Self::pattern(Pattern::Causal)
    }

    /// Causal sliding window (Longformer, Mistral): each query sees its own position and the
    /// `window - 1` keys before it. Positions are aligned bottom-right, as for [`Self::causal`].
    ///
    /// # Panics
    ///
    /// When `window` is 0.
    pub fn sliding_window(window: usize) -> Self {
        assert!(
            window > 0,
            "sliding window must cover at least 1 key, got 0"
        );
        Self::pattern(Pattern::SlidingWindow { window })
    }

    /// Bidirectional sliding window: each query sees the keys less than `window` positions away
    /// on either side (its own included).
    ///
    /// # Panics
    ///
    /// When `window` is 0.
    pub fn bidirectional_window(window: usize) -> Self {
        assert!(
            window > 0,
            "bidirectional window must cover at least 1 key, got 0"
        );
        Self::pattern(Pattern::BidirectionalWindow { window })
    }

    /// Block-sparse attention, the "fixed" pattern of Sparse Transformers (Child et al., 2019):
    /// each query sees the keys of its own block of `block` positions, and the last `summary`
    /// positions of every block, which carry information across blocks. Combine with
    /// [`Self::causal`] for autoregressive models.
    ///
    /// # Panics
    ///
    /// When `block` is 0 or `summary` exceeds `block`.
    pub fn block_sparse(block: usize, summary: usize) -> Self {
        assert!(
            block > 0 && summary <= block,
            "block-sparse mask needs 1 <= block and summary <= block, got block {block}, summary {summary}"
        );
        Self::pattern(Pattern::BlockSparse { block, summary })
    }

    fn pattern(pattern: Pattern) -> Self {
        Self {
            patterns: vec![pattern],
            ..Self::none()
        }
    }

    /// Key padding from a `[b, s]` mask, `true` = real token.
    pub fn key_padding(valid: Tensor<B, 2, Bool>) -> Self {
        Self {
            key_padding: vec![valid],
            ..Self::none()
        }
    }

    /// An explicit `[b | 1, h | 1, l, s]` mask, `true` = may attend.
    pub fn explicit(mask: Tensor<B, 4, Bool>) -> Self {
        Self {
            explicit: vec![mask],
            ..Self::none()
        }
    }

    /// An additive `[b | 1, h | 1, l, s]` float mask (or bias), added to the scaled scores before
    /// the softmax. Use [`Self::explicit`] to forbid pairs: a fully masked row then gives zeros,
    /// whereas `-inf` everywhere in a row of an additive mask gives NaN, as in PyTorch.
    pub fn additive(bias: Tensor<B, 4>) -> Self {
        Self {
            additive: vec![bias],
            ..Self::none()
        }
    }

    /// Both masks at once: a pair may attend only if both allow it; additive parts add up.
    pub fn and(mut self, other: Self) -> Self {
        self.patterns.extend(other.patterns);
        self.key_padding.extend(other.key_padding);
        self.explicit.extend(other.explicit);
        self.additive.extend(other.additive);
        self
    }

    /// Whether this mask includes the causal rule.
    pub fn is_causal(&self) -> bool {
        self.patterns.contains(&Pattern::Causal)
    }

    /// `Some(false)` when the mask has no part at all, `Some(true)` when it is the causal rule
    /// alone, `None` otherwise: the masks burn's own attention op takes as `is_causal`.
    pub(crate) fn causal_only(&self) -> Option<bool> {
        let rest_empty =
            self.key_padding.is_empty() && self.explicit.is_empty() && self.additive.is_empty();
        match self.patterns.as_slice() {
            [] if rest_empty => Some(false),
            [Pattern::Causal] if rest_empty => Some(true),
            _ => None,
        }
    }

    /// Whether the mask allows everything (no part at all).
    pub fn is_none(&self) -> bool {
        self.patterns.is_empty()
            && self.key_padding.is_empty()
            && self.explicit.is_empty()
            && self.additive.is_empty()
    }

    /// The sum of the additive parts, expanded to `[b, h, l, s]`, or `None` when there is none.
    ///
    /// # Panics
    ///
    /// When a part does not fit `[b, h, l, s]`; the message names both shapes.
    pub fn materialize_additive(
        &self,
        b: usize,
        h: usize,
        l: usize,
        s: usize,
    ) -> Option<Tensor<B, 4>> {
        self.materialize_additive_keys(b, h, l, s, 0..s)
    }

    /// [`Self::materialize_additive`] for the keys `keys` only: `[b, h, l, keys.len()]`.
    pub fn materialize_additive_keys(
        &self,
        b: usize,
        h: usize,
        l: usize,
        s: usize,
        keys: Range<usize>,
    ) -> Option<Tensor<B, 4>> {
        self.additive
            .iter()
            .map(|bias| key_range("additive mask", bias, [b, h, l, s], keys.clone()))
            .reduce(|acc, part| acc + part)
    }

    /// The full boolean `[b, h, l, s]` mask, `true` = may attend, or `None` when no boolean part
    /// exists (additive parts are materialised by [`Self::materialize_additive`]).
    ///
    /// # Panics
    ///
    /// When a part does not fit `[b, h, l, s]`; the message names both shapes.
    pub fn materialize(
        &self,
        b: usize,
        h: usize,
        l: usize,
        s: usize,
        device: &B::Device,
    ) -> Option<Tensor<B, 4, Bool>> {
        self.materialize_keys(b, h, l, s, 0..s, device)
    }

    /// [`Self::materialize`] for the keys `keys` only: `[b, h, l, keys.len()]`. The
    /// memory-efficient path builds the mask one block of keys at a time with it.
    pub fn materialize_keys(
        &self,
        b: usize,
        h: usize,
        l: usize,
        s: usize,
        keys: Range<usize>,
        device: &B::Device,
    ) -> Option<Tensor<B, 4, Bool>> {
        let n = keys.len();
        let mut parts: Vec<Tensor<B, 4, Bool>> = Vec::new();
        for pattern in &self.patterns {
            parts.push(
                pattern
                    .mask::<B>(l, s, keys.clone(), device)
                    .reshape([1, 1, l, n])
                    .expand([b, h, l, n]),
            );
        }
        for valid in &self.key_padding {
            let dims = valid.dims();
            assert!(
                dims == [b, s],
                "key padding mask has shape {dims:?}, expected [b, s] = [{b}, {s}]"
            );
            let valid = valid.clone().slice([0..b, keys.clone()]);
            parts.push(valid.reshape([b, 1, 1, n]).expand([b, h, l, n]));
        }
        for mask in &self.explicit {
            parts.push(key_range(
                "attention mask",
                mask,
                [b, h, l, s],
                keys.clone(),
            ));
        }
        parts.into_iter().reduce(|acc, part| acc.bool_and(part))
    }
}

/// The keys `keys` of a `[b|1, h|1, l, s]` mask part (boolean or float), expanded to
/// `[b, h, l, keys.len()]`.
///
/// # Panics
///
/// Unless the part broadcasts to `[b, h, l, s]`; the message names both shapes.
fn key_range<B: Backend, K: BasicOps<B>>(
    what: &str,
    part: &Tensor<B, 4, K>,
    [b, h, l, s]: [usize; 4],
    keys: Range<usize>,
) -> Tensor<B, 4, K> {
    let dims = part.dims();
    let [mb, mh, ml, ms] = dims;
    assert!(
        (mb == b || mb == 1) && (mh == h || mh == 1) && ml == l && ms == s,
        "{what} has shape {dims:?}, expected [b|1, h|1, l, s] = [{b}|1, {h}|1, {l}, {s}]"
    );
    let n = keys.len();
    part.clone()
        .slice([0..mb, 0..mh, 0..l, keys])
        .expand([b, h, l, n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn causal_is_bottom_right_aligned<B: Backend>(device: &B::Device) {
        let square = causal_mask::<B>(3, 3, device).into_data();
        square.assert_eq(
            &TensorData::from([
                [true, false, false],
                [true, true, false],
                [true, true, true],
            ]),
            false,
        );
        // s > l: the last query sees every key.
        let wide = causal_mask::<B>(2, 4, device).into_data();
        wide.assert_eq(
            &TensorData::from([[true, true, true, false], [true, true, true, true]]),
            false,
        );
        // s < l: the first query sees nothing.
        let tall = causal_mask::<B>(3, 2, device).into_data();
        tall.assert_eq(
            &TensorData::from([[false, false], [true, false], [true, true]]),
            false,
        );
    }

    fn lengths_give_padding_masks<B: Backend>(device: &B::Device) {
        let mask = padding_mask_from_lengths::<B>(&[2, 0, 3], 3, device).into_data();
        mask.assert_eq(
            &TensorData::from([
                [true, true, false],
                [false, false, false],
                [true, true, true],
            ]),
            false,
        );
    }

    fn parts_combine_with_and<B: Backend>(device: &B::Device) {
        let valid = padding_mask_from_lengths::<B>(&[2], 3, device);
        let mask = AttentionMask::key_padding(valid).and(AttentionMask::causal());
        let full = mask.materialize(1, 2, 3, 3, device).unwrap();
        let expected = TensorData::from([[
            [
                [true, false, false],
                [true, true, false],
                [true, true, false],
            ],
            [
                [true, false, false],
                [true, true, false],
                [true, true, false],
            ],
        ]]);
        full.into_data().assert_eq(&expected, false);
        assert!(
            AttentionMask::<B>::none()
                .materialize(1, 1, 2, 2, device)
                .is_none()
        );
    }

    /// The `[l, s]` pattern of a mask (batch 1, head 1).
    fn pattern_of<B: Backend>(
        mask: AttentionMask<B>,
        l: usize,
        s: usize,
        device: &B::Device,
    ) -> TensorData {
        mask.materialize(1, 1, l, s, device)
            .unwrap()
            .reshape([l, s])
            .into_data()
    }

    fn windows_see_the_right_keys<B: Backend>(device: &B::Device) {
        let (t, f) = (true, false);
        pattern_of(AttentionMask::<B>::sliding_window(2), 4, 4, device).assert_eq(
            &TensorData::from([[t, f, f, f], [t, t, f, f], [f, t, t, f], [f, f, t, t]]),
            false,
        );
        // Bottom-right alignment with s > l: query 0 sits at key position 2.
        pattern_of(AttentionMask::<B>::sliding_window(2), 2, 4, device)
            .assert_eq(&TensorData::from([[f, t, t, f], [f, f, t, t]]), false);
        pattern_of(AttentionMask::<B>::bidirectional_window(2), 4, 4, device).assert_eq(
            &TensorData::from([[t, t, f, f], [t, t, t, f], [f, t, t, t], [f, f, t, t]]),
            false,
        );
    }

    /// Blocks of 3 with 1 summary column (positions 2 and 5), combined with causal.
    fn block_sparse_sees_its_block_and_the_summaries<B: Backend>(device: &B::Device) {
        let (t, f) = (true, false);
        pattern_of(AttentionMask::<B>::block_sparse(3, 1), 6, 6, device).assert_eq(
            &TensorData::from([
                [t, t, t, f, f, t],
                [t, t, t, f, f, t],
                [t, t, t, f, f, t],
                [f, f, t, t, t, t],
                [f, f, t, t, t, t],
                [f, f, t, t, t, t],
            ]),
            false,
        );
        let causal = AttentionMask::<B>::block_sparse(3, 1).and(AttentionMask::causal());
        pattern_of(causal, 6, 6, device).assert_eq(
            &TensorData::from([
                [t, f, f, f, f, f],
                [t, t, f, f, f, f],
                [t, t, t, f, f, f],
                [f, f, t, t, f, f],
                [f, f, t, t, t, f],
                [f, f, t, t, t, t],
            ]),
            false,
        );
    }

    focal_backend::backend_tests!(
        windows_see_the_right_keys,
        block_sparse_sees_its_block_and_the_summaries,
        causal_is_bottom_right_aligned,
        lengths_give_padding_masks,
        parts_combine_with_and
    );

    #[test]
    #[should_panic(expected = "sliding window must cover at least 1 key, got 0")]
    fn zero_window_is_refused() {
        AttentionMask::<focal_backend::NdArray>::sliding_window(0);
    }

    #[test]
    #[should_panic(expected = "got block 4, summary 5")]
    fn summary_wider_than_block_is_refused() {
        AttentionMask::<focal_backend::NdArray>::block_sparse(4, 5);
    }

    #[test]
    #[should_panic(expected = "key padding mask has shape [1, 3], expected [b, s] = [2, 3]")]
    fn wrong_padding_shape_names_both_shapes() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        let valid = padding_mask_from_lengths::<B>(&[2], 3, &device);
        AttentionMask::key_padding(valid).materialize(2, 1, 3, 3, &device);
    }
}

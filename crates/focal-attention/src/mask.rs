//! Attention masks as values.

use burn::tensor::{Bool, Int, Tensor, backend::Backend};

/// A boolean `[l, s]` causal mask, `true` = may attend, aligned bottom-right.
///
/// Query `i` may attend key `j` when `j <= i + (s - l)`: with `s > l` (cached decoding, a prefix
/// of known keys) the last query sees every key; with `s < l` the first `l - s` queries see
/// nothing, and attention gives them zeros.
pub fn causal_mask<B: Backend>(l: usize, s: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    // burn's tril_mask marks (true) the entries strictly above the shifted diagonal.
    Tensor::<B, 2, Bool>::tril_mask([l, s], s as i64 - l as i64, device).bool_not()
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
    causal: bool,
    key_padding: Vec<Tensor<B, 2, Bool>>,
    explicit: Vec<Tensor<B, 4, Bool>>,
    additive: Vec<Tensor<B, 4>>,
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
            causal: false,
            key_padding: Vec::new(),
            explicit: Vec::new(),
            additive: Vec::new(),
        }
    }

    /// Causal, aligned bottom-right (see [`causal_mask`]).
    pub fn causal() -> Self {
        Self {
            causal: true,
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
        self.causal |= other.causal;
        self.key_padding.extend(other.key_padding);
        self.explicit.extend(other.explicit);
        self.additive.extend(other.additive);
        self
    }

    /// Whether this mask includes the causal rule.
    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// Whether the mask allows everything (no part at all).
    pub fn is_none(&self) -> bool {
        !self.causal
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
        self.additive
            .iter()
            .map(|bias| {
                check_broadcast("additive mask", bias.dims(), [b, h, l, s]);
                bias.clone().expand([b, h, l, s])
            })
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
        let mut parts: Vec<Tensor<B, 4, Bool>> = Vec::new();
        if self.causal {
            parts.push(
                causal_mask::<B>(l, s, device)
                    .reshape([1, 1, l, s])
                    .expand([b, h, l, s]),
            );
        }
        for valid in &self.key_padding {
            let dims = valid.dims();
            assert!(
                dims == [b, s],
                "key padding mask has shape {dims:?}, expected [b, s] = [{b}, {s}]"
            );
            parts.push(valid.clone().reshape([b, 1, 1, s]).expand([b, h, l, s]));
        }
        for mask in &self.explicit {
            check_broadcast("attention mask", mask.dims(), [b, h, l, s]);
            parts.push(mask.clone().expand([b, h, l, s]));
        }
        parts.into_iter().reduce(|acc, part| acc.bool_and(part))
    }
}

/// Panics unless `dims` broadcasts to `[b, h, l, s]` over batch and heads.
fn check_broadcast(what: &str, dims: [usize; 4], [b, h, l, s]: [usize; 4]) {
    let [mb, mh, ml, ms] = dims;
    assert!(
        (mb == b || mb == 1) && (mh == h || mh == 1) && ml == l && ms == s,
        "{what} has shape {dims:?}, expected [b|1, h|1, l, s] = [{b}|1, {h}|1, {l}, {s}]"
    );
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

    focal_backend::backend_tests!(
        causal_is_bottom_right_aligned,
        lengths_give_padding_masks,
        parts_combine_with_and
    );

    #[test]
    #[should_panic(expected = "key padding mask has shape [1, 3], expected [b, s] = [2, 3]")]
    fn wrong_padding_shape_names_both_shapes() {
        type B = focal_backend::NdArray;
        let device = Default::default();
        let valid = padding_mask_from_lengths::<B>(&[2], 3, &device);
        AttentionMask::key_padding(valid).materialize(2, 1, 3, 3, &device);
    }
}

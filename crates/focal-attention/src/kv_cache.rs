//! Key/value cache for incremental decoding.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

/// The keys and values of the positions decoded so far, for one attention layer.
///
/// Preallocated to `capacity` positions and written in place (`slice_assign` on tensors the
/// cache owns alone), so a decoding step projects and attends only its new query rows against
/// the cached keys. With a rolling window, once full the cache keeps the most recent `capacity`
/// positions and drops the oldest (Mistral-style sliding-window decoding).
///
/// Keys and values are stored after projection (and after rotary encoding, when used), in the
/// head layout `[b, h_kv, position, d_h]`.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    len: usize,
    seen: usize,
    rolling: bool,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `batch` sequences, `heads` key/value heads, `capacity` positions, key
    /// width `d_key` and value width `d_value`. Appending past `capacity` panics.
    pub fn new(
        batch: usize,
        heads: usize,
        capacity: usize,
        d_key: usize,
        d_value: usize,
        device: &B::Device,
    ) -> Self {
        assert!(capacity > 0, "KvCache capacity must be at least 1");
        Self {
            key: Tensor::zeros([batch, heads, capacity, d_key], device),
            value: Tensor::zeros([batch, heads, capacity, d_value], device),
            len: 0,
            seen: 0,
            rolling: false,
        }
    }

    /// Keeps only the most recent `capacity` positions instead of panicking when full.
    pub fn rolling(mut self) -> Self {
        self.rolling = true;
        self
    }

    /// Positions held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.key.dims()[2]
    }

    /// Keeps the sequences `rows` of the batch, in that order (repeats allowed): beam search
    /// reorders its hypotheses' caches this way after each step.
    ///
    /// # Panics
    ///
    /// When a row is out of range.
    pub fn select_batch(&mut self, rows: &[usize]) {
        let [b, _, _, _] = self.key.dims();
        assert!(
            rows.iter().all(|&r| r < b),
            "KvCache::select_batch: rows {rows:?} out of range for a batch of {b}"
        );
        (self.key, self.value) = select_rows(self.key.clone(), self.value.clone(), rows);
    }

    /// Positions held after appending `n` more: `len + n`, or at most the capacity with a
    /// rolling window. (Masks for a decoding step are built for this many keys.)
    pub fn len_after(&self, n: usize) -> usize {
        let len = self.len + n;
        if self.rolling {
            len.min(self.capacity())
        } else {
            len
        }
    }

    /// Positions appended since creation, evicted ones included: the position of the next
    /// token (the offset for rotary encodings).
    pub fn position(&self) -> usize {
        self.seen
    }

    /// Appends the keys `[b, h_kv, n, d_k]` and values `[b, h_kv, n, d_v]` of `n` new positions
    /// and returns all cached keys and values, `[b, h_kv, len, d_k]` and `[b, h_kv, len, d_v]`,
    /// oldest first.
    ///
    /// # Panics
    ///
    /// When the shapes differ from the cache's, or the cache would overflow without a rolling
    /// window, or `n` alone exceeds the capacity.
    pub fn append(
        &mut self,
        key: Tensor<B, 4>,
        value: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, n, d_k] = key.dims();
        let [cb, ch, capacity, cd_k] = self.key.dims();
        let [_, _, _, cd_v] = self.value.dims();
        assert!(
            [b, h, d_k] == [cb, ch, cd_k] && value.dims() == [b, h, n, cd_v],
            "KvCache expects keys [{cb}, {ch}, n, {cd_k}] and values [{cb}, {ch}, n, {cd_v}], got {:?} and {:?}",
            key.dims(),
            value.dims()
        );
        assert!(
            n <= capacity,
            "cannot append {n} positions to a KvCache of capacity {capacity}"
        );
        if self.len + n > capacity {
            assert!(
                self.rolling,
                "KvCache overflow: {} cached + {n} new positions exceed the capacity {capacity}",
                self.len
            );
            // Drop the oldest positions: move the `keep` most recent ones to the front.
            let keep = capacity - n;
            let from = self.len - keep;
            self.key = shift_front(self.key.clone(), from, keep);
            self.value = shift_front(self.value.clone(), from, keep);
            self.len = keep;
        }
        // Move the buffers out so that this cache holds the only reference and the assignment
        // writes in place (a shared buffer would be copied whole at every step).
        let range = self.len..self.len + n;
        let device = key.device();
        let placeholder = || Tensor::<B, 4>::zeros([1, 1, 1, 1], &device);
        let cached_key = std::mem::replace(&mut self.key, placeholder());
        self.key = cached_key.slice_assign([0..b, 0..h, range.clone(), 0..d_k], key);
        let cached_value = std::mem::replace(&mut self.value, placeholder());
        self.value = cached_value.slice_assign([0..b, 0..h, range, 0..cd_v], value);
        self.len += n;
        self.seen += n;
        (
            self.key.clone().slice([0..b, 0..h, 0..self.len, 0..d_k]),
            self.value.clone().slice([0..b, 0..h, 0..self.len, 0..cd_v]),
        )
    }
}

/// Rows `rows` (in that order, repeats allowed) of the batch of key and value, along dim 0.
pub(crate) fn select_rows<B: Backend>(
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    rows: &[usize],
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [rows.len()]), &key.device());
    (key.select(0, ids.clone()), value.select(0, ids))
}

/// Copies positions `from .. from + keep` to `0 .. keep` along dim 2.
fn shift_front<B: Backend>(x: Tensor<B, 4>, from: usize, keep: usize) -> Tensor<B, 4> {
    if keep == 0 || from == 0 {
        return x;
    }
    let [b, h, _, d] = x.dims();
    let recent = x.clone().slice([0..b, 0..h, from..from + keep, 0..d]);
    x.slice_assign([0..b, 0..h, 0..keep, 0..d], recent)
}

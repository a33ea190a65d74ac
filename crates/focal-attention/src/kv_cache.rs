//! Key/value cache for incremental decoding.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

/// The keys and values of the positions decoded so far, for one attention layer.
///
/// Preallocated to `capacity` positions and written in place (`slice_assign` on tensors the
/// cache owns alone), so a decoding step projects and attends only its new query rows against
/// the cached keys. With a rolling window, once full the cache keeps the most recent `capacity`
/// positions and drops the oldest (Mistral-style sliding-window decoding with a window of
/// `capacity`): a step of `n` positions then attends to the `capacity - 1` positions before it
/// and its own `n` (what the first of its queries needs), and the cache keeps the last
/// `capacity` of those.
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
    /// Attention over such a cache must apply a sliding window of `capacity` (as
    /// `MultiHeadAttention::forward_cached` does): a step of several positions sees more than
    /// `capacity` keys, as its first queries need.
    pub fn rolling(mut self) -> Self {
        self.rolling = true;
        self
    }

    /// Whether the cache drops its oldest positions when full (see [`Self::rolling`]).
    pub fn is_rolling(&self) -> bool {
        self.rolling
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

    /// Keys a step of `n` more positions attends to (what [`Self::append`] returns): `len + n`,
    /// or, with a rolling window that overflows, the `capacity - 1` most recent cached
    /// positions and the `n` new ones. (Masks for a decoding step are built for this many
    /// keys.)
    pub fn len_after(&self, n: usize) -> usize {
        if self.rolling && self.len + n > self.capacity() {
            self.len.min(self.capacity() - 1) + n
        } else {
            self.len + n
        }
    }

    /// Positions appended since creation, evicted ones included: the position of the next
    /// token (the offset for rotary encodings).
    pub fn position(&self) -> usize {
        self.seen
    }

    /// Appends the keys `[b, h_kv, n, d_k]` and values `[b, h_kv, n, d_v]` of `n` new positions
    /// and returns the keys and values the step attends to, `[b, h_kv, len_after(n), d_k]` and
    /// `[b, h_kv, len_after(n), d_v]`, oldest first: every cached position, or with a rolling
    /// window that overflows, the `capacity - 1` most recent ones and the `n` new.
    ///
    /// # Panics
    ///
    /// When the shapes differ from the cache's, or the cache would overflow without a rolling
    /// window.
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
        if self.len + n > capacity {
            assert!(
                self.rolling,
                "KvCache overflow: {} cached + {n} new positions exceed the capacity {capacity}",
                self.len
            );
            return self.roll(key, value);
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
            positions(&self.key, 0..self.len),
            positions(&self.value, 0..self.len),
        )
    }

    /// The overflowing append of a rolling cache: the step sees the `capacity - 1` most recent
    /// cached positions (the window of its first query) and its `n` new ones; the cache keeps
    /// the last `capacity` of those.
    fn roll(&mut self, key: Tensor<B, 4>, value: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let n = key.dims()[2];
        let capacity = self.capacity();
        let old = self.len.min(capacity - 1);
        let recent = self.len - old..self.len;
        let step_key = Tensor::cat(vec![positions(&self.key, recent.clone()), key], 2); // [b, h_kv, old + n, d_k]
        let step_value = Tensor::cat(vec![positions(&self.value, recent), value], 2);
        let total = old + n; // > capacity - 1, so the last `capacity` fill the cache
        self.key = positions(&step_key, total - capacity..total);
        self.value = positions(&step_value, total - capacity..total);
        self.len = capacity;
        self.seen += n;
        (step_key, step_value)
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

/// Positions `range` (dim 2) of a `[b, h_kv, position, d]` tensor.
fn positions<B: Backend>(x: &Tensor<B, 4>, range: std::ops::Range<usize>) -> Tensor<B, 4> {
    let [b, h, _, d] = x.dims();
    x.clone().slice([0..b, 0..h, range, 0..d])
}

//! A tiled, memory-efficient attention kernel for the CPU (forward only), in safe Rust.
//!
//! FlashAttention's forward: blocks of [`QUERY_BLOCK`] queries against blocks of
//! [`KEY_BLOCK`] keys, a running maximum and sum per query (online softmax), the output
//! accumulated in place. The block products are `ndarray::linalg::general_mat_mul`
//! (matrixmultiply's SIMD kernels, dispatched at run time to AVX-512 / AVX2 / NEON / scalar);
//! rayon runs the (batch, head, query block) tasks in parallel. Key blocks that a causal or
//! sliding-window mask blocks entirely are skipped, so causal attention does about half the
//! work. Grouped-query heads read their shared key/value head in place (no copy).
//!
//! Block sizes: 64 queries × 256 keys of width 64 keep the score block (64 KiB) and a key or
//! value block (64 KiB) in a 1–2 MiB L2 cache together with the 64 × 64 accumulator.
//!
//! Handles: custom scale, soft-capping, causal and sliding-window masks (bottom-right aligned),
//! key padding, GQA. Anything else (explicit or additive masks, other patterns, dropout in
//! training) goes to the generic path.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

/// Queries per block.
pub(crate) const QUERY_BLOCK: usize = 64;
/// Keys per block.
pub(crate) const KEY_BLOCK: usize = 256;

/// Shapes and options of one kernel call.
#[derive(Clone, Debug)]
pub(crate) struct Problem {
    pub b: usize,
    pub h: usize,
    pub h_kv: usize,
    pub l: usize,
    pub s: usize,
    pub d_k: usize,
    pub d_v: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Causal (bottom-right aligned: query `i` sits at key position `i + s - l`).
    pub causal: bool,
    /// Sliding window: keys `p - window < j <= p` (implies causal).
    pub window: Option<usize>,
    /// Key validity `[b][s]`, `true` = real key.
    pub key_valid: Option<Vec<bool>>,
}

impl Problem {
    /// The allowed key range `[lo, hi)` of the query at row `i` by position (before padding).
    fn key_range(&self, i: usize) -> (usize, usize) {
        if !self.causal && self.window.is_none() {
            return (0, self.s);
        }
        // Position p = i + s - l may be negative when l > s: then nothing is allowed.
        let p = i as i64 + self.s as i64 - self.l as i64;
        if p < 0 {
            return (0, 0);
        }
        let hi = (p as usize + 1).min(self.s);
        let lo = match self.window {
            Some(w) => (p + 1 - w as i64).max(0) as usize,
            None => 0,
        };
        (lo.min(hi), hi)
    }
}

/// `softmax(mask(softcap(q kᵀ · scale))) v` over row-major `q [b, h, l, d_k]`,
/// `k [b, h_kv, s, d_k]`, `v [b, h_kv, s, d_v]`; returns `[b, h, l, d_v]`. Fully masked rows
/// are zeros.
pub(crate) fn attention(p: &Problem, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let groups = p.h / p.h_kv;
    let mut out = vec![0.0f32; p.b * p.h * p.l * p.d_v];
    // One task per (batch, head, query block); each writes its own rows of `out`.
    let rows_per_head = p.l * p.d_v;
    out.par_chunks_mut(rows_per_head)
        .enumerate()
        .for_each(|(bh, head_out)| {
            let (batch, head) = (bh / p.h, bh % p.h);
            let kv_head = head / groups;
            let q_head = &q[bh * p.l * p.d_k..(bh + 1) * p.l * p.d_k];
            let kv = batch * p.h_kv + kv_head;
            let k_head =
                ArrayView2::from_shape((p.s, p.d_k), &k[kv * p.s * p.d_k..(kv + 1) * p.s * p.d_k])
                    .expect("key block shape");
            let v_head =
                ArrayView2::from_shape((p.s, p.d_v), &v[kv * p.s * p.d_v..(kv + 1) * p.s * p.d_v])
                    .expect("value block shape");
            let valid = p
                .key_valid
                .as_ref()
                .map(|m| &m[batch * p.s..(batch + 1) * p.s]);
            head_out
                .par_chunks_mut(QUERY_BLOCK * p.d_v)
                .enumerate()
                .for_each(|(qb, block_out)| {
                    let start = qb * QUERY_BLOCK;
                    let rows = (p.l - start).min(QUERY_BLOCK);
                    let q_block = ArrayView2::from_shape(
                        (rows, p.d_k),
                        &q_head[start * p.d_k..(start + rows) * p.d_k],
                    )
                    .expect("query block shape");
                    query_block(p, start, q_block, k_head, v_head, valid, block_out);
                });
        });
    out
}

/// `e^x` for `x <= 0` (and `-inf`), to a few ulp, in straight-line arithmetic that the
/// compiler vectorises (the libm `exp` call in the softmax loop otherwise dominates the
/// kernel's time): `e^x = 2^n · e^r` with `n = round(x log2 e)` and `r = x - n ln 2` computed
/// in two parts (Cody–Waite), `e^r` by its degree-7 Taylor polynomial on `|r| <= ln 2 / 2`, and
/// `2^n` built in the exponent bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // ln 2 with its low bits cleared, so n · LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Below -87 the result is under f32's smallest normal: flush to 0 (also for -inf).
    let clamped = x.max(-87.0);
    // Round to nearest by adding and subtracting 1.5 · 2^23 (|x log2 e| < 126 here), which
    // vectorises where `f32::round` is a libm call.
    const SHIFTER: f32 = 12_582_912.0;
    let n = (clamped * std::f32::consts::LOG2_E + SHIFTER) - SHIFTER;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x <= -87.0 { 0.0 } else { p * scale }
}

/// One block of queries (rows `start ..`) against every allowed key block.
fn query_block(
    p: &Problem,
    start: usize,
    q: ArrayView2<'_, f32>,
    k: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    valid: Option<&[bool]>,
    out: &mut [f32],
) {
    let rows = q.nrows();
    let ranges: Vec<(usize, usize)> = (start..start + rows).map(|i| p.key_range(i)).collect();
    let block_lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
    let block_hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    let mut max = vec![f32::NEG_INFINITY; rows];
    let mut sum = vec![0.0f32; rows];
    let mut acc = Array2::<f32>::zeros((rows, p.d_v));
    let mut scores = Array2::<f32>::zeros((rows, KEY_BLOCK));
    let mut key_start = block_lo;
    while key_start < block_hi {
        let keys = (block_hi - key_start).min(KEY_BLOCK);
        let k_block = k.slice(s![key_start..key_start + keys, ..]);
        let v_block = v.slice(s![key_start..key_start + keys, ..]);
        let mut sc = scores.slice_mut(s![.., ..keys]);
        // scores = scale · q kᵀ
        general_mat_mul(p.scale, &q, &k_block.t(), 0.0, &mut sc);
        for (r, mut row) in sc.axis_iter_mut(Axis(0)).enumerate() {
            let (lo, hi) = ranges[r];
            let mut row_max = f32::NEG_INFINITY;
            for (j, x) in row.iter_mut().enumerate() {
                let key = key_start + j;
                let allowed = key >= lo && key < hi && valid.is_none_or(|m| m[key]);
                if allowed {
                    if let Some(cap) = p.softcap {
                        *x = cap * (*x / cap).tanh();
                    }
                    row_max = row_max.max(*x);
                } else {
                    *x = f32::NEG_INFINITY;
                }
            }
            let new_max = max[r].max(row_max);
            if new_max == f32::NEG_INFINITY {
                row.fill(0.0); // nothing allowed yet in this row
                continue;
            }
            let correction = (max[r] - new_max).exp(); // exp(-inf) = 0 on the first block
            let row = row.as_slice_mut().expect("score rows are contiguous");
            let mut row_sum = 0.0f32;
            for x in row.iter_mut() {
                *x = exp_nonpositive(*x - new_max); // masked: -inf gives 0
                row_sum += *x;
            }
            sum[r] = sum[r] * correction + row_sum;
            max[r] = new_max;
            acc.row_mut(r).mapv_inplace(|a| a * correction);
        }
        // acc += P v
        general_mat_mul(1.0, &sc, &v_block, 1.0, &mut acc);
        key_start += KEY_BLOCK;
    }
    for (r, row) in acc.axis_iter(Axis(0)).enumerate() {
        let target = &mut out[r * p.d_v..(r + 1) * p.d_v];
        if sum[r] > 0.0 {
            for (t, a) in target.iter_mut().zip(row.iter()) {
                *t = a / sum[r];
            }
        } else {
            target.fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;
    use crate::{
        AttentionInput, AttentionMask, ScaledDotProductAttentionConfig, padding_mask_from_lengths,
    };
    use burn::tensor::{Distribution, Tensor};
    use focal_backend::{NdArray, assert_close};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    type B = NdArray;

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0.0f32;
        for i in 0..=200_000 {
            let x = -(i as f32) * 0.0005; // 0 .. -100
            let (ours, libm) = (exp_nonpositive(x), x.exp());
            if libm > 1e-30 {
                worst = worst.max(((ours - libm) / libm).abs());
            } else {
                assert!(ours < 1e-30, "e^{x}: {ours}");
            }
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    /// The kernel (ndarray without weights) equals the plain path (weights requested) over
    /// random shapes and options: l ≠ s, lengths that are not multiples of the blocks, GQA,
    /// causal and sliding-window masks, key padding, soft-capping, custom scales; rows with no
    /// allowed key give zeros.
    #[test]
    fn kernel_equals_the_plain_path_on_random_problems() {
        let device = Default::default();
        let mut rng = StdRng::seed_from_u64(60);
        focal_backend::seed::<B>(&device, 60);
        let attention = ScaledDotProductAttentionConfig::new().init();
        for case in 0..24 {
            let b = rng.random_range(1..3);
            let h_kv = rng.random_range(1..3);
            let h = h_kv * rng.random_range(1..3);
            let l = rng.random_range(1..150);
            let s = rng.random_range(1..300);
            let d_k = [8, 16, 64][rng.random_range(0..3)];
            let d_v = [8, 32][rng.random_range(0..2)];
            let n = Distribution::Normal(0.0, 1.0);
            let q = Tensor::<B, 4>::random([b, h, l, d_k], n, &device);
            let k = Tensor::<B, 4>::random([b, h_kv, s, d_k], n, &device);
            let v = Tensor::<B, 4>::random([b, h_kv, s, d_v], n, &device);
            let mut mask = AttentionMask::none();
            if rng.random_bool(0.5) {
                mask = mask.and(AttentionMask::causal());
            }
            if rng.random_bool(0.3) {
                mask = mask.and(AttentionMask::sliding_window(rng.random_range(1..40)));
            }
            if rng.random_bool(0.5) {
                let lengths: Vec<usize> = (0..b).map(|_| rng.random_range(1..=s)).collect();
                mask = mask.and(AttentionMask::key_padding(padding_mask_from_lengths(
                    &lengths, s, &device,
                )));
            }
            let mut input = AttentionInput::new(q, k, v).mask(mask);
            if rng.random_bool(0.3) {
                input = input.softcap(5.0);
            }
            if rng.random_bool(0.3) {
                input = input.scale(0.3);
            }
            let kernel = attention.forward(input.clone()).context;
            let plain = attention.forward(input.need_weights(true)).context;
            assert_eq!(kernel.dims(), [b, h, l, d_v], "case {case}");
            assert_close(kernel, plain, 1e-5);
        }
    }
}

//! A tiled, memory-efficient attention kernel for the CPU, forward and backward.
//!
//! FlashAttention-2 on the CPU. **Forward**: blocks of [`QUERY_BLOCK`] queries against blocks
//! of [`KEY_BLOCK`] keys, a running maximum and sum per query (online softmax), the output
//! accumulated in place, and the log-sum-exp of every row kept for the backward. **Backward**:
//! the probabilities are recomputed block by block from q, k, the mask and the log-sum-exp, and
//! `dv += pᵀ do`, `ds = p ∘ (do vᵀ − rowsum(do ∘ o))`, `dk += ds q`, `dq += ds k` accumulate per
//! block, so no `l × s` matrix ever exists. Memory is `O((b h l + b h_kv s) d)` plus one score
//! block per thread.
//!
//! The block products go through the `gemm` crate (its kernels are picked at run time:
//! AVX-512, AVX2/FMA, NEON or scalar), the softmax passes through `pulp`'s run-time dispatch
//! (AVX-512 or AVX2/FMA code when the CPU has it, portable code otherwise), so one binary is
//! fast on a modern x86 and still correct everywhere. Both crates compile their AVX-512 code
//! only with their `x86-v4` feature, which this crate enables. Rayon runs (batch, head, query
//! block) tasks in the forward and (batch, key/value head) tasks in the backward: each backward
//! task owns the `dk` and `dv` of its key/value head and the `dq` of the query heads sharing
//! it, so nothing is written twice. When those tasks cannot keep every thread busy (one
//! key/value head at batch 1, or a count that does not divide among the threads), each is
//! split into up to four ranges of key blocks: the first accumulates into `dq`, the others into
//! private copies summed at the end (see `key_splits`). When an additive mask is
//! differentiated, the score gradient of every (batch, head) is written out too and summed
//! over the axes the mask broadcasts along (its tasks keep all their keys then).
//!
//! # Block sizes
//!
//! 128 queries × 128 keys of width 64: the query block and the 128 × 64 output accumulator
//! (32 KiB each) and the key and value blocks (32 KiB each) stay in L2 next to the 128 × 128
//! score block (64 KiB), which one product writes and the next reads while it is hot, and 128
//! keys let a causal mask skip half the blocks. To compare other sizes, change
//! [`QUERY_BLOCK`] and [`KEY_BLOCK`] and run `cargo xtask bench attention`; no committed
//! measurement compares sizes.
//!
//! # What it handles
//!
//! Custom scale, soft-capping, causal and sliding-window masks (bottom-right aligned; key blocks
//! outside every row's window are skipped, so causal attention does half the work), key
//! padding, explicit boolean masks and the other mask patterns (materialised once, `[b|1, h|1,
//! l, s]`), additive masks / biases, grouped-query heads (shared key/value heads are read in
//! place). Blocks with nothing masked skip the per-element mask entirely. Rows with no allowed
//! key give zeros and zero gradients.

pub(crate) mod activation;
pub(crate) mod adamw;
mod gemm;
pub(crate) mod linear;
pub(crate) mod norm;
pub(crate) mod train;

use gemm::{Mat, matmul};
use rayon::prelude::*;

/// Queries per block.
pub(crate) const QUERY_BLOCK: usize = 128;
/// Keys per block.
pub(crate) const KEY_BLOCK: usize = 128;

/// A `[batch, heads, l, s]` mask part, each of `batch` and `heads` either full or 1
/// (broadcast).
#[derive(Clone)]
pub(crate) struct Dense<T> {
    pub data: Vec<T>,
    pub batch: usize,
    pub heads: usize,
}

impl<T> Dense<T> {
    /// The `[l, s]` plane of one (batch, head) pair; `plane` is `l * s`.
    fn plane(&self, batch: usize, head: usize, plane: usize) -> &[T] {
        let b = if self.batch == 1 { 0 } else { batch };
        let h = if self.heads == 1 { 0 } else { head };
        &self.data[(b * self.heads + h) * plane..][..plane]
    }
}

/// Shapes and options of one kernel call.
#[derive(Clone)]
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
    /// Explicit masks and patterns other than causal / sliding window, `true` = may attend.
    pub allowed: Option<Dense<bool>>,
    /// The sum of the additive parts.
    pub bias: Option<Dense<f32>>,
    /// Dropout on the probabilities (training).
    pub dropout: Option<DropoutMask>,
}

/// Dropout on the attention probabilities, replayable: whether probability `(row, key)` is
/// kept is a hash of `(seed, row, key)` (a SplitMix64 finaliser), so the backward regenerates
/// the forward's mask instead of storing `l × s` bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropoutMask {
    /// Probability of dropping, in `(0, 1)`.
    pub prob: f32,
    /// Per-call seed.
    pub seed: u64,
}

impl DropoutMask {
    /// Multiplies row `row` (the global row `b · h · l` index), keys `kb ..`, by the mask over
    /// the keep probability: dropped entries become 0, kept ones grow by `1 / (1 - prob)`.
    #[inline(always)]
    fn apply(&self, row: usize, kb: usize, values: &mut [f32]) {
        let threshold = (f64::from(self.prob) * 4_294_967_296.0) as u64;
        let scale = 1.0 / (1.0 - self.prob);
        let base = self.seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for (j, x) in values.iter_mut().enumerate() {
            let mut h = base ^ ((kb + j) as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
            h ^= h >> 33;
            h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
            h ^= h >> 33;
            h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
            h ^= h >> 33;
            *x = if (h >> 32) >= threshold {
                *x * scale
            } else {
                0.0
            };
        }
    }
}

impl std::fmt::Debug for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Problem")
            .field("q", &[self.b, self.h, self.l, self.d_k])
            .field("k", &[self.b, self.h_kv, self.s, self.d_k])
            .field("v", &[self.b, self.h_kv, self.s, self.d_v])
            .field("causal", &self.causal)
            .field("window", &self.window)
            .field("dropout", &self.dropout)
            .finish_non_exhaustive()
    }
}

impl Problem {
    /// The key range `[lo, hi)` the causal / sliding-window rule allows query row `i`.
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

    fn groups(&self) -> usize {
        self.h / self.h_kv
    }
}

/// Output and per-row log-sum-exp of the forward.
pub(crate) struct Forward {
    /// `[b, h, l, d_v]`.
    pub out: Vec<f32>,
    /// `[b, h, l]`: `ln Σ exp(score)` over the allowed keys; `+inf` for rows with none (so the
    /// recomputed probabilities are 0).
    pub lse: Vec<f32>,
}

/// Gradients with respect to query, key, value and, when asked for, the additive bias.
pub(crate) struct Gradients {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
    /// `[b|1, h|1, l, s]`, the shape of [`Problem::bias`]: the score gradient summed over the
    /// axes the bias is broadcast along.
    pub d_bias: Option<Vec<f32>>,
}

/// The mask as one (batch, head) pair sees it.
struct HeadMask<'a> {
    p: &'a Problem,
    valid: Option<&'a [bool]>,
    /// `invalid_before[j]`: padded keys among `0..j`, to tell padding-free blocks in O(1).
    invalid_before: Option<Vec<u32>>,
    allowed: Option<&'a [bool]>,
    bias: Option<&'a [f32]>,
}

impl<'a> HeadMask<'a> {
    fn new(p: &'a Problem, batch: usize, head: usize) -> Self {
        let valid = p
            .key_valid
            .as_ref()
            .map(|m| &m[batch * p.s..(batch + 1) * p.s]);
        let invalid_before = valid.map(|valid| {
            let mut counts = Vec::with_capacity(p.s + 1);
            let mut n = 0u32;
            counts.push(0);
            for &ok in valid {
                n += u32::from(!ok);
                counts.push(n);
            }
            counts
        });
        let plane = p.l * p.s;
        Self {
            p,
            valid,
            invalid_before,
            allowed: p.allowed.as_ref().map(|m| m.plane(batch, head, plane)),
            bias: p.bias.as_ref().map(|m| m.plane(batch, head, plane)),
        }
    }

    /// The keys `[lo, hi)` any of the rows `start .. start + rows` may attend by position.
    fn block_keys(&self, start: usize, rows: usize) -> (usize, usize) {
        // Both ends of the allowed range grow with the row.
        (
            self.p.key_range(start).0,
            self.p.key_range(start + rows - 1).1,
        )
    }

    /// Whether rows `start .. start + rows` may attend every key of `kb .. kb + n`, with no
    /// bias: then the block needs no per-element mask.
    fn clean(&self, start: usize, rows: usize, kb: usize, n: usize) -> bool {
        if self.allowed.is_some() || self.bias.is_some() {
            return false;
        }
        let lo_last = self.p.key_range(start + rows - 1).0;
        let hi_first = self.p.key_range(start).1;
        lo_last <= kb
            && kb + n <= hi_first
            && self
                .invalid_before
                .as_ref()
                .is_none_or(|c| c[kb + n] == c[kb])
    }

    /// Sets the forbidden scores of row `i`, keys `kb ..`, to `-inf` and adds the bias to the
    /// others; returns whether any key was allowed.
    #[inline(always)]
    fn apply(&self, i: usize, kb: usize, row: &mut [f32]) -> bool {
        let (lo, hi) = self.p.key_range(i);
        let s = self.p.s;
        let mut any = false;
        for (j, x) in row.iter_mut().enumerate() {
            let key = kb + j;
            let ok = key >= lo
                && key < hi
                && self.valid.is_none_or(|v| v[key])
                && self.allowed.is_none_or(|a| a[i * s + key]);
            if ok {
                if let Some(bias) = self.bias {
                    *x += bias[i * s + key];
                }
                any = true;
            } else {
                *x = f32::NEG_INFINITY;
            }
        }
        any
    }
}

/// Fills `scores` (`rows × n`, row-major) with the masked, soft-capped, scaled scores of query
/// rows `start ..` (`q_rows`, their rows only) against keys `kb .. kb + n` of `k_head`. With
/// soft-capping, `tanh` receives `tanh(x / cap)` of every score for the backward. `allowed[r]`
/// is set when row `r` may attend some key of the block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn score_block(
    mask: &HeadMask<'_>,
    q_rows: &[f32],
    k_head: &[f32],
    start: usize,
    kb: usize,
    n: usize,
    scores: &mut [f32],
    mut tanh: Option<&mut [f32]>,
    allowed: &mut [bool],
) {
    let p = mask.p;
    let rows = allowed.len();
    matmul(
        rows,
        n,
        p.d_k,
        scores,
        n,
        Mat::rows(q_rows, p.d_k),
        Mat::transposed(&k_head[kb * p.d_k..(kb + n) * p.d_k], p.d_k),
        p.scale,
        false,
    );
    if let Some(cap) = p.softcap {
        for (idx, x) in scores.iter_mut().enumerate() {
            let t = (*x / cap).tanh();
            if let Some(tanh) = tanh.as_deref_mut() {
                tanh[idx] = t;
            }
            *x = cap * t;
        }
    }
    if mask.clean(start, rows, kb, n) {
        allowed.fill(true);
    } else {
        for (r, row) in scores.chunks_exact_mut(n).enumerate() {
            allowed[r] = mask.apply(start + r, kb, row);
        }
    }
}

/// Lanes of the softmax loops: enough independent accumulators for AVX-512, and a multiple of
/// every narrower vector.
const LANES: usize = 16;

/// The maximum of `row` (`-inf` when empty); NaNs are skipped.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    for m in lanes {
        max = if m > max { m } else { max };
    }
    max
}

/// Replaces every `x` of `row` with `e^(x - shift)` and returns their sum.
#[inline(always)]
fn exp_sum(row: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (acc, x) in lanes.iter_mut().zip(chunk) {
            *x = exp_nonpositive(*x - shift);
            *acc += *x;
        }
    }
    let mut sum = 0.0f32;
    for x in chunks.into_remainder() {
        *x = exp_nonpositive(*x - shift);
        sum += *x;
    }
    sum + lanes.iter().sum::<f32>()
}

/// `e^x` for `x <= 0` (and `-inf`; small positive `x` from rounding are fine too), to a few
/// ulp, in straight-line arithmetic that the compiler vectorises (the libm `exp` call would
/// otherwise dominate the softmax): `e^x = 2^n · e^r` with `n = round(x log2 e)` and
/// `r = x - n ln 2` computed in two parts (Cody–Waite), `e^r` by Cephes' degree-5 minimax
/// polynomial on `|r| <= ln 2 / 2` (fewer operations than a Taylor polynomial of the same
/// accuracy), and `2^n` built in the exponent bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // ln 2 with its low bits cleared, so n · LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Below -87 the result is under f32's smallest normal: flush to 0 (also for -inf).
    let clamped = x.clamp(-87.0, 80.0);
    // Round to nearest by adding and subtracting 1.5 · 2^23 (|x log2 e| < 126 here), which
    // vectorises where `f32::round` is a libm call. In between, the low mantissa bits of
    // `shifted` hold `n` as a two's-complement integer.
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = clamped * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    // Cephes' `expf` minimax polynomial for e^r on |r| <= ln 2 / 2 (about 1 ulp).
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    let n_int = shifted.to_bits().wrapping_sub(SHIFTER.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    if x <= -87.0 { 0.0 } else { p * scale }
}

/// Runs `job` compiled for the best instruction set this CPU has: `pulp` compiles the job's
/// [`pulp::WithSimd::with_simd`] (and everything `#[inline(always)]` under it) once per
/// instruction set (AVX-512 or AVX2/FMA on x86-64 when present, portable code otherwise) and
/// picks at run time. A closure would not do: it is a function of its own, compiled without the features.
#[inline(always)]
fn with_simd<J: pulp::WithSimd>(job: J) -> J::Output {
    pulp::Arch::new().dispatch(job)
}

/// A simd job running `$body` with the listed borrows (see [`with_simd`]).
macro_rules! simd_job {
    ($name:ident { $($field:ident: $ty:ty),* $(,)? } => $body:expr) => {{
        struct $name<'a> { $($field: $ty),* }
        impl pulp::WithSimd for $name<'_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, _: S) {
                let $name { $($field),* } = self;
                $body
            }
        }
        $name { $($field),* }
    }};
}

/// `softmax(mask(softcap(q kᵀ · scale)) + bias) v` over row-major `q [b, h, l, d_k]`,
/// `k [b, h_kv, s, d_k]`, `v [b, h_kv, s, d_v]`: the output `[b, h, l, d_v]` and the
/// log-sum-exp `[b, h, l]`. Fully masked rows are zeros.
pub(crate) fn forward(p: &Problem, q: &[f32], k: &[f32], v: &[f32]) -> Forward {
    let mut out = vec![0.0f32; p.b * p.h * p.l * p.d_v];
    let mut lse = vec![0.0f32; p.b * p.h * p.l];
    if p.l == 0 || p.d_v == 0 {
        return Forward { out, lse };
    }
    let groups = p.groups();
    out.par_chunks_mut(p.l * p.d_v)
        .zip(lse.par_chunks_mut(p.l))
        .enumerate()
        .for_each(|(bh, (head_out, head_lse))| {
            let (batch, head) = (bh / p.h, bh % p.h);
            let kv = batch * p.h_kv + head / groups;
            let q_head = &q[bh * p.l * p.d_k..(bh + 1) * p.l * p.d_k];
            let k_head = &k[kv * p.s * p.d_k..(kv + 1) * p.s * p.d_k];
            let v_head = &v[kv * p.s * p.d_v..(kv + 1) * p.s * p.d_v];
            let mask = HeadMask::new(p, batch, head);
            head_out
                .par_chunks_mut(QUERY_BLOCK * p.d_v)
                .zip(head_lse.par_chunks_mut(QUERY_BLOCK))
                .enumerate()
                .for_each(|(qb, (out, lse))| {
                    let start = qb * QUERY_BLOCK;
                    let mask = &mask;
                    let row0 = bh * p.l;
                    with_simd(simd_job!(ForwardJob {
                        mask: &'a HeadMask<'a>,
                        q_head: &'a [f32],
                        k_head: &'a [f32],
                        v_head: &'a [f32],
                        start: usize,
                        row0: usize,
                        out: &'a mut [f32],
                        lse: &'a mut [f32],
                    } => forward_block(mask, q_head, k_head, v_head, start, row0, out, lse)))
                });
        });
    Forward { out, lse }
}

/// One block of query rows (`start ..`, as many as `lse` has; `row0` is the head's first global
/// row, for dropout) against every allowed key block; `out` starts zeroed and is used as the
/// accumulator.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_block(
    mask: &HeadMask<'_>,
    q_head: &[f32],
    k_head: &[f32],
    v_head: &[f32],
    start: usize,
    row0: usize,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let p = mask.p;
    let (rows, d_v) = (lse.len(), p.d_v);
    let q_rows = &q_head[start * p.d_k..(start + rows) * p.d_k];
    let (lo, hi) = mask.block_keys(start, rows);
    let mut max = vec![f32::NEG_INFINITY; rows];
    let mut sum = vec![0.0f32; rows];
    let mut any = vec![false; rows];
    let mut allowed = vec![false; rows];
    let mut scores = vec![0.0f32; rows * KEY_BLOCK.min(hi.saturating_sub(lo))];
    let mut kb = lo;
    while kb < hi {
        let n = (hi - kb).min(KEY_BLOCK);
        let sc = &mut scores[..rows * n];
        score_block(mask, q_rows, k_head, start, kb, n, sc, None, &mut allowed);
        for (r, row) in sc.chunks_exact_mut(n).enumerate() {
            any[r] |= allowed[r];
            let new_max = max[r].max(row_max(row));
            if new_max == f32::NEG_INFINITY {
                row.fill(0.0); // nothing allowed in this row so far
                continue;
            }
            let correction = exp_nonpositive(max[r] - new_max); // 0 on the first block
            sum[r] = sum[r] * correction + exp_sum(row, new_max);
            max[r] = new_max;
            if let Some(dropout) = &p.dropout {
                // The normaliser counts every probability; only the product with v drops.
                dropout.apply(row0 + start + r, kb, row);
            }
            if correction != 1.0 {
                for a in &mut out[r * d_v..(r + 1) * d_v] {
                    *a *= correction;
                }
            }
        }
        let v_block = &v_head[kb * d_v..(kb + n) * d_v];
        matmul(
            rows,
            d_v,
            n,
            out,
            d_v,
            Mat::rows(sc, n),
            Mat::rows(v_block, d_v),
            1.0,
            true,
        );
        kb += n;
    }
    for (r, row) in out.chunks_exact_mut(d_v).enumerate() {
        if sum[r] > 0.0 {
            let inv = 1.0 / sum[r];
            row.iter_mut().for_each(|a| *a *= inv);
            lse[r] = max[r] + sum[r].ln();
        } else {
            // No allowed key: zeros. Allowed keys whose additive bias is all -inf: NaN, as the
            // plain path (and PyTorch) give.
            row.fill(if any[r] { f32::NAN } else { 0.0 });
            lse[r] = if any[r] { f32::NAN } else { f32::INFINITY };
        }
    }
}

/// Gradients of [`forward`] given its inputs, output, log-sum-exp and the output gradient
/// `d_out [b, h, l, d_v]`; with `bias_grad` (and a bias), the bias gradient too.
pub(crate) fn backward(
    p: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    fwd: &Forward,
    d_out: &[f32],
    bias_grad: bool,
) -> Gradients {
    let bias_grad = bias_grad && p.bias.is_some();
    // The bias gradient is written per (batch, query head) plane by the task owning the head,
    // so its tasks keep all their keys.
    let splits = if bias_grad {
        1
    } else {
        key_splits(
            p.b * p.h_kv,
            p.s.div_ceil(KEY_BLOCK),
            rayon::current_num_threads(),
        )
    };
    backward_in_ranges(p, q, k, v, fwd, d_out, splits, bias_grad)
}

/// [`backward`] with each key/value head's keys split into `splits` ranges of whole key blocks
/// (fewer when there are fewer blocks); the result does not depend on `splits` beyond float
/// rounding of the `dq` sum. The first range accumulates into `dq` itself, each other range
/// into a private copy of its query heads' `dq`, summed at the end. `bias_grad` needs
/// `splits == 1`.
#[allow(clippy::too_many_arguments)]
fn backward_in_ranges(
    p: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    fwd: &Forward,
    d_out: &[f32],
    splits: usize,
    bias_grad: bool,
) -> Gradients {
    let mut dq = vec![0.0f32; q.len()];
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    let bias = p.bias.as_ref().filter(|_| bias_grad);
    if p.l == 0 || p.s == 0 {
        let d_bias = bias.map(|bias| vec![0.0f32; bias.data.len()]);
        return Gradients { dq, dk, dv, d_bias };
    }
    let groups = p.groups();
    // One task per (batch, key/value head) and key range: it owns that range of the head's dk
    // and dv, and the dq of the `groups` query heads sharing the head (consecutive heads, so
    // one contiguous chunk), or its own copy of that dq for the ranges after the first.
    let per_head = groups * p.l * p.d_k;
    let span = p.s.div_ceil(KEY_BLOCK).div_ceil(splits.max(1)) * KEY_BLOCK;
    let splits = p.s.div_ceil(span);
    assert!(
        bias.is_none() || splits == 1,
        "the bias gradient needs unsplit keys, got {splits} ranges"
    );
    let tasks = p.b * p.h_kv;
    // Every (batch, query head) plane of the score gradient, reduced to the bias shape below.
    let mut d_scores = vec![
        0.0f32;
        if bias.is_some() {
            p.b * p.h * p.l * p.s
        } else {
            0
        }
    ];
    let mut extra = vec![0.0f32; (splits - 1) * q.len()];
    let run = |bkv: usize,
               first_key: usize,
               dq: &mut [f32],
               dk: &mut [f32],
               dv: &mut [f32],
               d_scores: &mut [f32]| {
        with_simd(simd_job!(BackwardJob {
            p: &'a Problem,
            bkv: usize,
            first_key: usize,
            q: &'a [f32],
            k: &'a [f32],
            v: &'a [f32],
            fwd: &'a Forward,
            d_out: &'a [f32],
            dq: &'a mut [f32],
            dk: &'a mut [f32],
            dv: &'a mut [f32],
            d_scores: &'a mut [f32],
        } => backward_group(p, bkv, first_key, q, k, v, fwd, d_out, dq, dk, dv, d_scores)))
    };
    dq.par_chunks_mut(per_head)
        .zip(per_task(&mut extra, tasks))
        .zip(dk.par_chunks_mut(p.s * p.d_k))
        .zip(dv.par_chunks_mut(p.s * p.d_v))
        .zip(per_task(&mut d_scores, tasks))
        .enumerate()
        .for_each(|(bkv, ((((dq, extra), dk), dv), d_scores))| {
            if splits == 1 {
                return run(bkv, 0, dq, dk, dv, d_scores);
            }
            // The first range writes into dq, the others into their private copies.
            let dq_ranges: Vec<&mut [f32]> = std::iter::once(dq)
                .chain(extra.chunks_mut(per_head))
                .collect();
            dq_ranges
                .into_par_iter()
                .zip(dk.par_chunks_mut(span * p.d_k))
                .zip(dv.par_chunks_mut(span * p.d_v))
                .enumerate()
                .for_each(|(split, ((dq, dk), dv))| {
                    run(bkv, split * span, dq, dk, dv, &mut []);
                })
        });
    if splits > 1 {
        dq.par_chunks_mut(per_head)
            .zip(extra.par_chunks((splits - 1) * per_head))
            .for_each(|(dq, parts)| {
                for part in parts.chunks_exact(per_head) {
                    dq.iter_mut().zip(part).for_each(|(d, x)| *d += x);
                }
            });
    }
    let d_bias = bias.map(|bias| reduce_to_bias(p, bias, d_scores));
    Gradients { dq, dk, dv, d_bias }
}

/// `buffer` cut into one equal chunk per task (an empty chunk each when `buffer` is empty).
fn per_task(buffer: &mut [f32], tasks: usize) -> Vec<&mut [f32]> {
    if buffer.is_empty() {
        (0..tasks).map(|_| <&mut [f32]>::default()).collect()
    } else {
        let chunk = buffer.len() / tasks;
        buffer.chunks_mut(chunk).collect()
    }
}

/// Sums the `[b, h, l, s]` score gradient over the axes `bias` is broadcast along.
fn reduce_to_bias(p: &Problem, bias: &Dense<f32>, d_scores: Vec<f32>) -> Vec<f32> {
    if bias.batch == p.b && bias.heads == p.h {
        return d_scores;
    }
    let plane = p.l * p.s;
    let mut d_bias = vec![0.0f32; bias.data.len()];
    for (bh, scores) in d_scores.chunks_exact(plane).enumerate() {
        let (batch, head) = (bh / p.h, bh % p.h);
        let b = if bias.batch == 1 { 0 } else { batch };
        let h = if bias.heads == 1 { 0 } else { head };
        let target = &mut d_bias[(b * bias.heads + h) * plane..][..plane];
        target.iter_mut().zip(scores).for_each(|(t, x)| *t += x);
    }
    d_bias
}

/// Into how many key ranges the backward splits each (batch, key/value head) task, given
/// `tasks` such tasks, `key_blocks` key blocks per head and `threads` worker threads.
///
/// Without a split a single key/value head (multi-query attention at batch 1) would run on one
/// core, and three heads on two cores would leave one idle a third of the time. Each extra key
/// range costs a private `dq` of its query heads, summed at the end, so ranges are only made
/// when the tasks do not already spread evenly (`tasks` a multiple of `threads`, or at least
/// four per thread), at most four per task (a causal mask makes the ranges unequal, and four
/// lets work stealing even them out) and never below one key block each. The first range
/// accumulates into `dq` itself, so the extra memory is at most three times the size of `dq`.
fn key_splits(tasks: usize, key_blocks: usize, threads: usize) -> usize {
    if tasks == 0 || tasks.is_multiple_of(threads) || tasks >= 4 * threads {
        return 1;
    }
    (4 * threads)
        .div_ceil(tasks)
        .clamp(1, 4)
        .min(key_blocks.max(1))
}

/// The backward of key/value head `bkv` (= batch · h_kv + kv head) and its query heads, for
/// the keys from `first_key` on that `dk` and `dv` cover; `dq` is the query heads' gradient
/// (or a private part of it) from those keys. `d_scores`, unless empty, receives the gradient
/// of the biased scores of the query heads, `[groups, l, s]` (every key: the caller does not
/// split the keys then).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_group(
    p: &Problem,
    bkv: usize,
    first_key: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    fwd: &Forward,
    d_out: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    d_scores_out: &mut [f32],
) {
    let (d_k, d_v, l, s) = (p.d_k, p.d_v, p.l, p.s);
    let groups = p.groups();
    let batch = bkv / p.h_kv;
    let k_head = &k[bkv * s * d_k..(bkv + 1) * s * d_k];
    let v_head = &v[bkv * s * d_v..(bkv + 1) * s * d_v];
    let first_head = (bkv % p.h_kv) * groups;
    let heads: Vec<(usize, HeadMask<'_>, Vec<f32>)> = (0..groups)
        .map(|g| {
            let bh = batch * p.h + first_head + g;
            // delta_i = Σ_j p_ij dp_ij = do_i · o_i
            let o = &fwd.out[bh * l * d_v..(bh + 1) * l * d_v];
            let d_o = &d_out[bh * l * d_v..(bh + 1) * l * d_v];
            let delta = o
                .chunks_exact(d_v)
                .zip(d_o.chunks_exact(d_v))
                .map(|(o, d)| o.iter().zip(d).map(|(a, b)| a * b).sum())
                .collect();
            (bh, HeadMask::new(p, batch, first_head + g), delta)
        })
        .collect();
    let block = QUERY_BLOCK * KEY_BLOCK.min(s);
    let mut probs = vec![0.0f32; block];
    let mut d_scores = vec![0.0f32; block];
    let mut tanh_buf = vec![0.0f32; if p.softcap.is_some() { block } else { 0 }];
    let mut allowed = [false; QUERY_BLOCK];
    let last_key = first_key + dk.len() / d_k;
    for kb in (first_key..last_key).step_by(KEY_BLOCK) {
        let n = (last_key - kb).min(KEY_BLOCK);
        let k_block = &k_head[kb * d_k..(kb + n) * d_k];
        let v_block = &v_head[kb * d_v..(kb + n) * d_v];
        let own = kb - first_key;
        let dk_block = &mut dk[own * d_k..(own + n) * d_k];
        let dv_block = &mut dv[own * d_v..(own + n) * d_v];
        for (g, (bh, mask, delta)) in heads.iter().enumerate() {
            let q_head = &q[bh * l * d_k..(bh + 1) * l * d_k];
            let d_o_head = &d_out[bh * l * d_v..(bh + 1) * l * d_v];
            let lse = &fwd.lse[bh * l..(bh + 1) * l];
            let dq_head = &mut dq[g * l * d_k..(g + 1) * l * d_k];
            for start in (0..l).step_by(QUERY_BLOCK) {
                let rows = (l - start).min(QUERY_BLOCK);
                let (lo, hi) = mask.block_keys(start, rows);
                if lo >= hi || hi <= kb || lo >= kb + n {
                    continue; // no row of this block may attend these keys
                }
                let q_rows = &q_head[start * d_k..(start + rows) * d_k];
                let d_o = &d_o_head[start * d_v..(start + rows) * d_v];
                let pr = &mut probs[..rows * n];
                let ds = &mut d_scores[..rows * n];
                let tanh = p.softcap.map(|_| &mut tanh_buf[..rows * n]);
                let allowed = &mut allowed[..rows];
                score_block(mask, q_rows, k_head, start, kb, n, pr, tanh, allowed);
                // p = e^(score - lse): masked scores (-inf) and empty rows (lse = +inf) give 0.
                for (r, row) in pr.chunks_exact_mut(n).enumerate() {
                    let shift = lse[start + r];
                    row.iter_mut()
                        .for_each(|x| *x = exp_nonpositive(*x - shift));
                }
                // dv += p̃ᵀ do, with p̃ the probabilities after dropout
                let dropped = match &p.dropout {
                    Some(dropout) => {
                        ds.copy_from_slice(pr);
                        for (r, row) in ds.chunks_exact_mut(n).enumerate() {
                            dropout.apply(bh * l + start + r, kb, row);
                        }
                        &*ds
                    }
                    None => &*pr,
                };
                let d_o_mat = Mat::rows(d_o, d_v);
                matmul(
                    n,
                    d_v,
                    rows,
                    dv_block,
                    d_v,
                    Mat::transposed(dropped, n),
                    d_o_mat,
                    1.0,
                    true,
                );
                // dp̃ = do vᵀ; dp = dp̃ through the dropout mask; then ds = p ∘ (dp - delta)
                // (∘ (1 - tanh²) under soft-capping)
                let v_t = Mat::transposed(v_block, d_v);
                matmul(rows, n, d_v, ds, n, d_o_mat, v_t, 1.0, false);
                if let Some(dropout) = &p.dropout {
                    for (r, row) in ds.chunks_exact_mut(n).enumerate() {
                        dropout.apply(bh * l + start + r, kb, row);
                    }
                }
                for (r, (ds_row, p_row)) in
                    ds.chunks_exact_mut(n).zip(pr.chunks_exact(n)).enumerate()
                {
                    let dl = delta[start + r];
                    for (d, &pv) in ds_row.iter_mut().zip(p_row) {
                        *d = pv * (*d - dl);
                    }
                }
                // The bias is added after soft-capping: its gradient is ds before the tanh
                // factor.
                if !d_scores_out.is_empty() {
                    let head_plane = &mut d_scores_out[g * l * s..(g + 1) * l * s];
                    for (r, ds_row) in ds.chunks_exact(n).enumerate() {
                        head_plane[(start + r) * s + kb..][..n].copy_from_slice(ds_row);
                    }
                }
                if p.softcap.is_some() {
                    for (d, t) in ds.iter_mut().zip(&tanh_buf[..rows * n]) {
                        *d *= 1.0 - t * t;
                    }
                }
                // dk += scale · dsᵀ q, dq += scale · ds k
                matmul(
                    n,
                    d_k,
                    rows,
                    dk_block,
                    d_k,
                    Mat::transposed(ds, n),
                    Mat::rows(q_rows, d_k),
                    p.scale,
                    true,
                );
                let dq_rows = &mut dq_head[start * d_k..(start + rows) * d_k];
                matmul(
                    rows,
                    d_k,
                    n,
                    dq_rows,
                    d_k,
                    Mat::rows(ds, n),
                    Mat::rows(k_block, d_k),
                    p.scale,
                    true,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;
    use crate::{
        AttentionInput, AttentionMask, ScaledDotProductAttentionConfig, padding_mask_from_lengths,
    };
    use burn::tensor::backend::Backend;
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

    /// The backward's key ranges: none when the (batch, key/value head) tasks already spread
    /// evenly, up to four per task otherwise, never more than the key blocks.
    #[test]
    fn key_ranges_are_made_only_when_tasks_do_not_spread() {
        use super::key_splits;
        assert_eq!(key_splits(8, 16, 2), 1); // even
        assert_eq!(key_splits(2, 16, 2), 1); // one per thread
        assert_eq!(key_splits(9, 16, 2), 1); // four per thread or more
        assert_eq!(key_splits(1, 16, 2), 4); // multi-query attention at batch 1
        assert_eq!(key_splits(3, 16, 2), 3); // 9 tasks on 2 threads
        assert_eq!(key_splits(1, 2, 2), 2); // no more ranges than key blocks
        assert_eq!(key_splits(1, 16, 1), 1); // one thread
        assert_eq!(key_splits(0, 0, 2), 1);
    }

    /// The backward split into key ranges (each with its own `dq`, summed at the end) gives the
    /// unsplit backward's gradients: causal and padded masks, grouped heads, softcap, dropout
    /// (whose mask is indexed by absolute key positions), a last block that is not full.
    #[test]
    fn backward_in_key_ranges_equals_the_unsplit_backward() {
        use super::{DropoutMask, Problem, backward_in_ranges, forward};
        let mut rng = StdRng::seed_from_u64(63);
        for (case, (b, h, h_kv, l, s)) in
            [(1, 4, 1, 70, 300), (3, 2, 1, 260, 129), (1, 2, 2, 300, 300)]
                .into_iter()
                .enumerate()
        {
            let (d_k, d_v) = (16, 8);
            let mut values =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
            let (q, k, v) = (
                values(b * h * l * d_k),
                values(b * h_kv * s * d_k),
                values(b * h_kv * s * d_v),
            );
            let d_out = values(b * h * l * d_v);
            let p = Problem {
                b,
                h,
                h_kv,
                l,
                s,
                d_k,
                d_v,
                scale: 0.4,
                softcap: (case == 1).then_some(3.0),
                causal: case != 1,
                window: None,
                key_valid: (case == 2).then(|| (0..b * s).map(|j| j % s < 250).collect()),
                allowed: None,
                bias: None,
                dropout: (case == 0).then_some(DropoutMask { prob: 0.3, seed: 5 }),
            };
            let fwd = forward(&p, &q, &k, &v);
            let run = |splits| backward_in_ranges(&p, &q, &k, &v, &fwd, &d_out, splits, false);
            let whole = run(1);
            assert!(
                whole.dk.iter().any(|&x| x != 0.0),
                "case {case}: a zero gradient"
            );
            for splits in 2..=4 {
                let split = run(splits);
                for (name, a, b) in [
                    ("dq", &split.dq, &whole.dq),
                    ("dk", &split.dk, &whole.dk),
                    ("dv", &split.dv, &whole.dv),
                ] {
                    let diff = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0f32, f32::max);
                    assert!(
                        diff <= 1e-5,
                        "case {case}, {splits} ranges: {name} differs by {diff}"
                    );
                }
            }
        }
    }

    /// A random attention problem: l ≠ s, lengths that are not multiples of the blocks, GQA,
    /// causal and sliding-window masks, key padding, explicit masks, other patterns, additive
    /// biases, soft-capping, custom scales.
    struct Case<B: Backend> {
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: AttentionMask<B>,
        /// An additive part of the mask, kept apart so gradient tests can differentiate it.
        bias: Option<Tensor<B, 4>>,
        softcap: Option<f64>,
        scale: Option<f64>,
    }

    impl<B: Backend> Case<B> {
        fn input(&self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> AttentionInput<B> {
            self.input_with_bias(q, k, v, self.bias.clone())
        }

        fn input_with_bias(
            &self,
            q: Tensor<B, 4>,
            k: Tensor<B, 4>,
            v: Tensor<B, 4>,
            bias: Option<Tensor<B, 4>>,
        ) -> AttentionInput<B> {
            let mask = match bias {
                Some(bias) => self.mask.clone().and(AttentionMask::additive(bias)),
                None => self.mask.clone(),
            };
            let mut input = AttentionInput::new(q, k, v).mask(mask);
            if let Some(cap) = self.softcap {
                input = input.softcap(cap);
            }
            if let Some(scale) = self.scale {
                input = input.scale(scale);
            }
            input
        }
    }

    fn random_case<B: Backend>(rng: &mut StdRng, device: &B::Device, max_len: usize) -> Case<B> {
        let b = rng.random_range(1..3);
        let h_kv = rng.random_range(1..3);
        let h = h_kv * rng.random_range(1..3);
        let l = rng.random_range(1..max_len);
        let s = rng.random_range(1..2 * max_len);
        let d_k = [8, 16, 64][rng.random_range(0..3)];
        let d_v = [8, 32][rng.random_range(0..2)];
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([b, h, l, d_k], n, device);
        let k = Tensor::<B, 4>::random([b, h_kv, s, d_k], n, device);
        let v = Tensor::<B, 4>::random([b, h_kv, s, d_v], n, device);
        let mut mask = AttentionMask::none();
        if rng.random_bool(0.5) {
            mask = mask.and(AttentionMask::causal());
        }
        if rng.random_bool(0.2) {
            mask = mask.and(AttentionMask::sliding_window(rng.random_range(1..40)));
        }
        if rng.random_bool(0.15) {
            mask = mask.and(AttentionMask::bidirectional_window(rng.random_range(1..40)));
        }
        if rng.random_bool(0.4) {
            let lengths: Vec<usize> = (0..b).map(|_| rng.random_range(1..=s)).collect();
            mask = mask.and(AttentionMask::key_padding(padding_mask_from_lengths(
                &lengths, s, device,
            )));
        }
        if rng.random_bool(0.2) {
            let mb = if rng.random_bool(0.5) { b } else { 1 };
            let allowed = Tensor::<B, 4>::random([mb, 1, l, s], Distribution::Default, device)
                .lower_elem(0.8);
            mask = mask.and(AttentionMask::explicit(allowed));
        }
        let bias = rng.random_bool(0.3).then(|| {
            let mb = if rng.random_bool(0.5) { b } else { 1 };
            let mh = if rng.random_bool(0.5) { h } else { 1 };
            Tensor::random([mb, mh, l, s], n, device)
        });
        Case {
            q,
            k,
            v,
            mask,
            bias,
            softcap: rng.random_bool(0.3).then_some(5.0),
            scale: rng.random_bool(0.3).then_some(0.3),
        }
    }

    /// The kernel (ndarray without weights) equals the plain path (weights requested) over
    /// random problems; rows with no allowed key give zeros.
    #[test]
    fn kernel_equals_the_plain_path_on_random_problems() {
        let device = Default::default();
        let mut rng = StdRng::seed_from_u64(60);
        focal_backend::seed::<B>(&device, 60);
        let attention = ScaledDotProductAttentionConfig::new().init();
        for case in 0..40 {
            let case_ = random_case::<B>(&mut rng, &device, 150);
            let [b, h, l, _] = case_.q.dims();
            let d_v = case_.v.dims()[3];
            let input = case_.input(case_.q.clone(), case_.k.clone(), case_.v.clone());
            let kernel = attention.forward(input.clone()).context;
            let plain = attention.forward(input.need_weights(true)).context;
            assert_eq!(kernel.dims(), [b, h, l, d_v], "case {case}");
            assert_close(kernel, plain, 1e-5);
        }
    }

    /// Under `Autodiff<NdArray>` the kernel's backward gives the plain path's gradients for
    /// query, key, value and a differentiated additive bias (broadcast over batch and/or heads
    /// or not; within 1e-4), fully masked rows included (zero gradients).
    #[test]
    fn kernel_gradients_equal_the_plain_path() {
        type A = burn::backend::Autodiff<B>;
        let device = Default::default();
        let mut rng = StdRng::seed_from_u64(61);
        focal_backend::seed::<A>(&device, 61);
        let attention = ScaledDotProductAttentionConfig::new().init();
        let mut bias_cases = 0;
        for case in 0..40 {
            let c = random_case::<A>(&mut rng, &device, 100);
            let [b, h, l, _] = c.q.dims();
            let d_v = c.v.dims()[3];
            let weights =
                Tensor::<A, 4>::random([b, h, l, d_v], Distribution::Normal(0.0, 1.0), &device);
            let grads = |need_weights: bool| {
                let [q, k, v] = [&c.q, &c.k, &c.v].map(|t| t.clone().detach().require_grad());
                // The bias is derived from a leaf (as a learned position bias is from its
                // parameters), so it is tracked without being a leaf itself.
                let leaf = c.bias.clone().map(|t| t.detach().require_grad());
                let bias = leaf.clone().map(|t| t * 1.5);
                let input = c
                    .input_with_bias(q.clone(), k.clone(), v.clone(), bias)
                    .need_weights(need_weights);
                let loss = (attention.forward(input).context * weights.clone()).sum();
                let g = loss.backward();
                let mut all: Vec<_> = [q.grad(&g), k.grad(&g), v.grad(&g)]
                    .into_iter()
                    .map(|t| t.expect("gradient"))
                    .collect();
                if let Some(leaf) = leaf {
                    all.push(leaf.grad(&g).expect("bias gradient"));
                }
                all
            };
            let (kernel, plain) = (grads(false), grads(true));
            bias_cases += usize::from(kernel.len() == 4);
            for (name, (a, b)) in ["dq", "dk", "dv", "dbias"]
                .iter()
                .zip(kernel.into_iter().zip(plain))
            {
                assert_eq!(a.dims(), b.dims(), "case {case} {name}");
                let diff = (a - b.clone()).abs().max().into_scalar();
                let size = b.abs().max().into_scalar().max(1.0);
                assert!(
                    diff <= 1e-4 * size,
                    "case {case}: {name} differs by {diff} (max {size})"
                );
            }
        }
        assert!(bias_cases >= 5, "only {bias_cases} cases had a bias");
    }

    /// The kernel really runs under autodiff when the bias is tracked (it did not before: the
    /// bias then kept its initial values), and its bias gradient is the plain path's.
    #[test]
    fn a_tracked_bias_trains_through_the_kernel() {
        use super::super::fused::without_cpu_kernel;
        type A = burn::backend::Autodiff<B>;
        let device = Default::default();
        focal_backend::seed::<A>(&device, 64);
        let n = Distribution::Normal(0.0, 1.0);
        let [q, k, v] = [0, 1, 2].map(|_| Tensor::<A, 4>::random([2, 4, 130, 16], n, &device));
        let table = Tensor::<A, 2>::random([4, 130], n, &device);
        let attention = ScaledDotProductAttentionConfig::new().init();
        let gradient = || {
            let table = table.clone().detach().require_grad();
            // A bias built from a parameter by tensor ops, broadcast over the batch.
            let bias = table
                .clone()
                .reshape([1, 4, 1, 130])
                .expand([1, 4, 130, 130]);
            let input = AttentionInput::new(q.clone(), k.clone(), v.clone())
                .mask(AttentionMask::causal().and(AttentionMask::additive(bias)));
            let grads = attention
                .forward(input)
                .context
                .powi_scalar(2)
                .sum()
                .backward();
            table.grad(&grads).expect("the bias has a gradient")
        };
        let kernel = gradient();
        let generic = without_cpu_kernel(gradient);
        assert!(kernel.clone().abs().max().into_scalar() > 1e-3);
        assert_close(kernel, generic, 1e-4);
    }

    /// Dropout inside the kernel (training), through `Autodiff<NdArray>`: with `v = I` each
    /// output row is the row of probabilities after dropout, so every entry must be exactly 0
    /// (dropped) or the probability without dropout times `1 / (1 - p)` (kept), about half of
    /// them dropped at `p = 0.5`, and the mean over draws stays the probability (unbiased).
    #[test]
    fn kernel_dropout_zeroes_and_rescales_probabilities() {
        type A = burn::backend::Autodiff<B>;
        let device = Default::default();
        let (h, l) = (2, 16);
        let dropout = ScaledDotProductAttentionConfig::new()
            .with_dropout(0.5)
            .init();
        let plain = ScaledDotProductAttentionConfig::new().init();
        let n = Distribution::Normal(0.0, 1.0);
        focal_backend::seed::<B>(&device, 62);
        let q = Tensor::<A, 4>::random([1, h, l, 8], n, &device);
        let k = Tensor::<A, 4>::random([1, h, l, 8], n, &device);
        let identity = Tensor::<A, 2>::eye(l, &device)
            .reshape([1, 1, l, l])
            .expand([1, h, l, l]);
        let input = AttentionInput::new(q.clone(), k.clone(), identity.clone());
        let probs: Vec<f32> = plain
            .forward(input.clone())
            .context
            .into_data()
            .to_vec()
            .unwrap();
        let draws = 40;
        let mut mean = vec![0.0f64; probs.len()];
        let mut dropped = 0usize;
        for draw in 0..draws {
            let out: Vec<f32> = dropout
                .forward(input.clone())
                .context
                .into_data()
                .to_vec()
                .unwrap();
            for (i, (&o, &p)) in out.iter().zip(&probs).enumerate() {
                assert!(
                    o == 0.0 || (o - 2.0 * p).abs() <= 1e-6 * (1.0 + p),
                    "draw {draw}, entry {i}: {o} is neither 0 nor 2 × {p}"
                );
                dropped += usize::from(o == 0.0);
                mean[i] += f64::from(o) / draws as f64;
            }
        }
        let fraction = dropped as f64 / (draws * probs.len()) as f64;
        assert!(
            (0.47..0.53).contains(&fraction),
            "dropped fraction {fraction}"
        );
        let worst = mean
            .iter()
            .zip(&probs)
            .map(|(m, &p)| (m - f64::from(p)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 0.25, "mean over draws differs from p by {worst}");
        let row_sums: f64 = mean.iter().sum::<f64>() / (h * l) as f64;
        assert!((row_sums - 1.0).abs() < 0.05, "mean row sum {row_sums}");
    }

    /// The kernel's backward with dropout is the gradient of its forward with the same mask:
    /// central differences of the kernel itself, the mask fixed by an explicit seed (no
    /// process-wide generator that another test thread could advance).
    #[test]
    fn kernel_dropout_gradients_match_central_differences() {
        use super::{DropoutMask, Problem, backward, forward};
        let mut rng = StdRng::seed_from_u64(65);
        let (h, h_kv, l, s, d) = (2, 1, 9, 11, 4);
        let mut values =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let inputs = [
            values(h * l * d),
            values(h_kv * s * d),
            values(h_kv * s * d),
        ];
        let weights = values(h * l * d);
        let p = Problem {
            b: 1,
            h,
            h_kv,
            l,
            s,
            d_k: d,
            d_v: d,
            scale: 0.7,
            softcap: None,
            causal: true,
            window: None,
            key_valid: None,
            allowed: None,
            bias: None,
            dropout: Some(DropoutMask {
                prob: 0.4,
                seed: 0x5EED,
            }),
        };
        let loss = |[q, k, v]: &[Vec<f32>; 3]| -> f64 {
            let out = forward(&p, q, k, v).out;
            out.iter()
                .zip(&weights)
                .map(|(&o, &w)| f64::from(o) * f64::from(w))
                .sum()
        };
        let [q, k, v] = &inputs;
        let fwd = forward(&p, q, k, v);
        let grads = backward(&p, q, k, v, &fwd, &weights, false);
        for (which, analytic) in [&grads.dq, &grads.dk, &grads.dv].into_iter().enumerate() {
            for i in 0..analytic.len() {
                let at = |delta: f32| {
                    let mut moved = inputs.clone();
                    moved[which][i] += delta;
                    loss(&moved)
                };
                let numeric = ((at(1e-2) - at(-1e-2)) / 2e-2) as f32;
                assert!(
                    (numeric - analytic[i]).abs() <= 2e-3 * (1.0 + numeric.abs()),
                    "input {which}, element {i}: analytic {} vs numeric {numeric}",
                    analytic[i]
                );
            }
        }
        // The mask is really applied: the same problem without dropout has other gradients.
        let undropped = Problem {
            dropout: None,
            ..p.clone()
        };
        let plain = backward(
            &undropped,
            q,
            k,
            v,
            &forward(&undropped, q, k, v),
            &weights,
            false,
        );
        let differ = plain
            .dv
            .iter()
            .zip(&grads.dv)
            .any(|(a, b)| (a - b).abs() > 1e-3);
        assert!(differ, "dropout changed no gradient");
    }
}

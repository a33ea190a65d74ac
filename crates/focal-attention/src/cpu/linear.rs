//! `y = x · W + b` for the CPU, forward and backward, through the `gemm` crate.
//!
//! burn-ndarray multiplies through `matrixmultiply` (57–86 GFLOP/s here, where `gemm` reaches
//! 264–300) and packs the whole weight for every product, even for the one row of a decoding
//! step. Here:
//!
//! - **many rows** (a batch of sequences): one `gemm` call on rayon's threads, the bias written
//!   into the output first and the product accumulated onto it, so the bias costs no pass;
//! - **few rows** (decoding, beam search): the output columns are split among the threads and
//!   each runs `gemm`'s matrix-vector kernel on its share of the weight, so every weight is
//!   read once per token, by all cores together, without packing;
//! - **backward**: `dx = dy · Wᵀ`, `dW = xᵀ · dy` (or `dyᵀ · x` for `[out, in]` weights) and
//!   `db = Σ dy` read the saved `x` and `W` in place.
//!
//! The weight is either `[in, out]` (burn's `Linear`, GPT-2's `Conv1D`) or `[out, in]`
//! (PyTorch's `nn.Linear`, a tied embedding table); neither is copied.

use super::gemm::{Mat, matmul_on};
use crate::WeightLayout;
use rayon::prelude::*;

/// At most this many rows take the column-split path.
const FEW_ROWS: usize = 16;
/// Products below this many multiply-adds stay on the calling thread.
const PARALLEL_FROM: usize = 1 << 16;

/// Shapes of one product: `x` `[m, k]`, `W` `k × n` in `layout`, `y` `[m, n]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Linear {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub layout: WeightLayout,
}

impl Linear {
    /// The weight as the `k × n` right operand.
    fn weight<'a>(&self, w: &'a [f32]) -> Mat<'a> {
        match self.layout {
            WeightLayout::InOut => Mat::rows(w, self.n),
            WeightLayout::OutIn => Mat::transposed(w, self.k),
        }
    }

    /// `x · W + b`, row-major `[m, n]`.
    pub fn forward(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let Self { m, k, n, .. } = *self;
        let mut y = match bias {
            Some(bias) => bias.repeat(m),
            None => vec![0.0; m * n],
        };
        product(
            m,
            n,
            k,
            &mut y,
            Mat::rows(x, k),
            self.weight(w),
            bias.is_some(),
        );
        y
    }

    /// The gradients of `x`, `W` (in its layout) and `b` that `needed` asks for, from the
    /// output's gradient `dy` `[m, n]`.
    pub fn backward(
        &self,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        needed: [bool; 3],
    ) -> [Option<Vec<f32>>; 3] {
        let Self { m, k, n, layout } = *self;
        let dx = needed[0].then(|| {
            let mut dx = vec![0.0; m * k];
            product(
                m,
                k,
                n,
                &mut dx,
                Mat::rows(dy, n),
                self.weight(w).t(),
                false,
            );
            dx
        });
        let dw = needed[1].then(|| {
            let mut dw = vec![0.0; k * n];
            match layout {
                // [k, n] = xᵀ · dy
                WeightLayout::InOut => product(
                    k,
                    n,
                    m,
                    &mut dw,
                    Mat::rows(x, k).t(),
                    Mat::rows(dy, n),
                    false,
                ),
                // [n, k] = dyᵀ · x
                WeightLayout::OutIn => product(
                    n,
                    k,
                    m,
                    &mut dw,
                    Mat::rows(dy, n).t(),
                    Mat::rows(x, k),
                    false,
                ),
            }
            dw
        });
        let db = needed[2].then(|| {
            let mut db = vec![0.0; n];
            for row in dy.chunks_exact(n) {
                for (sum, g) in db.iter_mut().zip(row) {
                    *sum += g;
                }
            }
            db
        });
        [dx, dw, db]
    }
}

/// `dst (+)= lhs · rhs` for a row-major `dst` `[m, n]`, on every thread when the product is
/// large enough: few rows split the columns among the threads (each thread reads only its
/// share of `rhs`, unpacked), more rows go to `gemm`'s own threading.
fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    accumulate: bool,
) {
    let work = m.saturating_mul(n).saturating_mul(k);
    let threads = rayon::current_num_threads();
    if work < PARALLEL_FROM || threads == 1 {
        return matmul_on(m, n, k, dst, n, lhs, rhs, 1.0, accumulate, false);
    }
    if m > FEW_ROWS {
        return matmul_on(m, n, k, dst, n, lhs, rhs, 1.0, accumulate, true);
    }
    if rhs.col_stride == 1 {
        return few_rows_by_depth(m, n, k, dst, lhs, rhs, accumulate, threads);
    }
    // Column blocks: a multiple of 16 (whole SIMD registers), about four per thread so that a
    // slow thread does not hold up the rest. Each block of a column-contiguous `rhs` (an
    // `[out, in]` weight) is one contiguous stretch of memory.
    let block = n.div_ceil(4 * threads).next_multiple_of(16).max(16);
    // The product of columns `start..start + out.len() / m` into `out` (rows `out.len() / m`
    // apart), holding the previous values when accumulating.
    let columns = |start: usize, out: &mut [f32]| {
        let cols = out.len() / m;
        matmul_on(
            m,
            cols,
            k,
            out,
            cols,
            lhs,
            rhs.skip_cols(start),
            1.0,
            accumulate,
            false,
        );
    };
    if m == 1 {
        // One row: each block of columns is a slice of `dst` itself.
        dst[..n]
            .par_chunks_mut(block)
            .enumerate()
            .for_each(|(i, out)| columns(i * block, out));
        return;
    }
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(block))
        .into_par_iter()
        .map(|i| {
            let (start, cols) = (i * block, block.min(n - i * block));
            let mut out = vec![0.0; m * cols];
            if accumulate {
                for (row, from) in out.chunks_exact_mut(cols).zip(dst.chunks(n)) {
                    row.copy_from_slice(&from[start..start + cols]);
                }
            }
            columns(start, &mut out);
            out
        })
        .collect();
    for (i, out) in blocks.iter().enumerate() {
        let (start, cols) = (i * block, block.min(n - i * block));
        for (row, from) in dst.chunks_mut(n).zip(out.chunks_exact(cols)) {
            row[start..start + cols].copy_from_slice(from);
        }
    }
}

/// Few rows against a row-contiguous `rhs` (an `[in, out]` weight): each thread takes one
/// contiguous range of `rhs`'s rows (the depth), so that it streams its share of the weight
/// front to back, and the partial products are summed. Splitting the columns instead would make
/// every thread read short pieces of every row.
#[allow(clippy::too_many_arguments)]
fn few_rows_by_depth(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    accumulate: bool,
    threads: usize,
) {
    let depth = k.div_ceil(threads);
    let partials: Vec<Vec<f32>> = (0..k.div_ceil(depth))
        .into_par_iter()
        .map(|i| {
            let (start, rows) = (i * depth, depth.min(k - i * depth));
            let mut out = vec![0.0; m * n];
            matmul_on(
                m,
                n,
                rows,
                &mut out,
                n,
                lhs.skip_cols(start),
                rhs.skip_rows(start),
                1.0,
                false,
                false,
            );
            out
        })
        .collect();
    let dst = &mut dst[..m * n];
    if !accumulate {
        dst.fill(0.0);
    }
    for partial in &partials {
        for (d, p) in dst.iter_mut().zip(partial) {
            *d += p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive(x: &[f32], w: &[f32], b: Option<&[f32]>, p: Linear) -> Vec<f64> {
        let mut y = vec![0.0f64; p.m * p.n];
        for i in 0..p.m {
            for j in 0..p.n {
                let mut sum = b.map_or(0.0, |b| b[j] as f64);
                for q in 0..p.k {
                    let wq = match p.layout {
                        WeightLayout::InOut => w[q * p.n + j],
                        WeightLayout::OutIn => w[j * p.k + q],
                    };
                    sum += x[i * p.k + q] as f64 * wq as f64;
                }
                y[i * p.n + j] = sum;
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tolerance = 1e-4 * (1.0 + w.abs());
            assert!(
                (*g as f64 - w).abs() <= tolerance,
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Every path (one row, few rows split by columns, many rows, small products) in both
    /// layouts, with and without bias, against a float64 product; the backward against the
    /// same product written out.
    #[test]
    fn forward_and_backward_match_the_naive_product() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (m, k, n) in [
            (1, 300, 517),
            (3, 129, 700),
            (40, 70, 90),
            (2, 3, 5),
            (1, 1, 1),
            (17, 64, 2000),
        ] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                for with_bias in [false, true] {
                    let p = Linear { m, k, n, layout };
                    let mut values = |len: usize| -> Vec<f32> {
                        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
                    };
                    let (x, w, b, dy) = (values(m * k), values(k * n), values(n), values(m * n));
                    let bias = with_bias.then_some(&b[..]);
                    let what = format!("{p:?} bias {with_bias}");
                    assert_close(&p.forward(&x, &w, bias), &naive(&x, &w, bias, p), &what);

                    let [dx, dw, db] = p.backward(&x, &w, &dy, [true, true, true]);
                    // dx = dy · Wᵀ: the forward of dy through the transposed layout.
                    let flipped = Linear {
                        m,
                        k: n,
                        n: k,
                        layout: layout.transposed(),
                    };
                    assert_close(&dx.unwrap(), &naive(&dy, &w, None, flipped), &what);
                    let mut want_dw = vec![0.0f64; k * n];
                    for i in 0..m {
                        for q in 0..k {
                            for j in 0..n {
                                let at = match layout {
                                    WeightLayout::InOut => q * n + j,
                                    WeightLayout::OutIn => j * k + q,
                                };
                                want_dw[at] += x[i * k + q] as f64 * dy[i * n + j] as f64;
                            }
                        }
                    }
                    assert_close(&dw.unwrap(), &want_dw, &what);
                    let want_db: Vec<f64> = (0..n)
                        .map(|j| (0..m).map(|i| dy[i * n + j] as f64).sum())
                        .collect();
                    assert_close(&db.unwrap(), &want_db, &what);
                }
            }
        }
    }
}

//! The one matrix product of the CPU kernel: the `gemm` crate (run-time dispatch to AVX2/FMA,
//! AVX-512, NEON or scalar kernels) behind a safe, bounds-checked signature.

/// A read-only strided matrix: element `(i, j)` at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// Row-major rows of `width` elements.
    pub fn rows(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            row_stride: width,
            col_stride: 1,
        }
    }

    /// The transpose of row-major rows of `width` elements: element `(i, j)` is `data[j][i]`.
    pub fn transposed(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: width,
        }
    }

    /// Panics unless every element of an `rows × cols` matrix lies inside `data` (the index
    /// of the last element computed without overflow) and both strides fit an `isize`, which
    /// it returns as `(row_stride, col_stride)`.
    fn check(&self, rows: usize, cols: usize, what: &str) -> (isize, isize) {
        let stride = |s: usize| {
            isize::try_from(s).unwrap_or_else(|_| panic!("{what}: stride {s} exceeds isize::MAX"))
        };
        let strides = (stride(self.row_stride), stride(self.col_stride));
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(self.row_stride)
                .zip((cols - 1).checked_mul(self.col_stride))
                .and_then(|(a, b)| a.checked_add(b));
            assert!(
                last.is_some_and(|last| last < self.data.len()),
                "{what}: a {rows}×{cols} matrix with strides ({}, {}) needs index {}, have {}",
                self.row_stride,
                self.col_stride,
                last.map_or("beyond usize::MAX".to_string(), |l| l.to_string()),
                self.data.len()
            );
        }
        strides
    }

    /// The transpose of this matrix (no copy: the strides swap).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The matrix without its first `cols` columns.
    pub fn skip_cols(self, cols: usize) -> Self {
        Self {
            data: &self.data[cols * self.col_stride..],
            ..self
        }
    }

    /// The matrix without its first `rows` rows.
    pub fn skip_rows(self, rows: usize) -> Self {
        Self {
            data: &self.data[rows * self.row_stride..],
            ..self
        }
    }
}

/// `dst = (accumulate ? dst : 0) + alpha · lhs · rhs` for `lhs` `m × k`, `rhs` `k × n` and a
/// row-major `dst` `m × n` with rows `dst_stride` apart. Single-threaded (callers parallelise
/// over blocks).
///
/// # Panics
///
/// When a matrix does not fit its slice, or when the destination's rows overlap
/// (`dst_stride < n` with more than one row).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_stride: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    alpha: f32,
    accumulate: bool,
) {
    matmul_on(m, n, k, dst, dst_stride, lhs, rhs, alpha, accumulate, false);
}

/// [`matmul`] on rayon's threads when `parallel` (gemm splits the work once it is large enough
/// to pay for it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_on(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_stride: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Rows closer than their width would share elements: written by two of gemm's threads at
    // once (a data race), and a wrong product even on one.
    assert!(
        m == 1 || dst_stride >= n,
        "matmul destination: rows {dst_stride} apart overlap rows of {n} elements"
    );
    let (dst_stride_isize, _) = Mat::rows(dst, dst_stride).check(m, n, "matmul destination");
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let (lhs_rs, lhs_cs) = lhs.check(m, k, "matmul left operand");
    let (rhs_rs, rhs_cs) = rhs.check(k, n, "matmul right operand");
    // SAFETY: `gemm` reads `lhs` at `i * lhs_rs + p * lhs_cs` for `i < m`, `p < k`, `rhs` at
    // `p * rhs_rs + j * rhs_cs` for `p < k`, `j < n`, and reads/writes `dst` at
    // `i * dst_stride + j`, distinct for distinct `(i, j)` since `dst_stride >= n` (asserted
    // above; a single row meets no other). The three `check` calls prove the largest such
    // index of each lies inside its slice (strides are non-negative, so the largest index is
    // the last element's; the checks compute it without overflow and convert every stride to
    // `isize` without wrapping). `dst` is a `&mut` borrow, so it aliases neither operand.
    // `T = f32` is one of the element types `gemm` supports; with `Parallelism::Rayon` gemm
    // splits `dst` into disjoint blocks itself.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride_isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            alpha,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Mat, matmul};

    #[test]
    fn matmul_matches_the_naive_product_with_strides() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect(); // [m, k]
        let b: Vec<f32> = (0..n * k).map(|i| 1.0 - i as f32 * 0.25).collect(); // [n, k]
        let mut dst = vec![1.0f32; m * 9];
        matmul(
            m,
            n,
            k,
            &mut dst,
            9,
            Mat::rows(&a, k),
            Mat::transposed(&b, k),
            2.0,
            true,
        );
        for i in 0..m {
            for j in 0..n {
                let dot: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
                assert!((dst[i * 9 + j] - (1.0 + 2.0 * dot)).abs() < 1e-4);
            }
            assert_eq!(&dst[i * 9 + n..i * 9 + 9], &[1.0, 1.0]); // outside the matrix
        }
    }

    #[test]
    #[should_panic(expected = "matmul left operand")]
    fn matmul_refuses_a_short_slice() {
        let mut dst = vec![0.0f32; 4];
        matmul(
            2,
            2,
            3,
            &mut dst,
            2,
            Mat::rows(&[0.0; 5], 3),
            Mat::rows(&[0.0; 6], 2),
            1.0,
            false,
        );
    }

    /// A stride so large that the last index overflows `usize` (and would wrap to a small,
    /// in-bounds index with unchecked arithmetic in a release build) is refused.
    #[test]
    #[should_panic(expected = "matmul right operand: a 5×1 matrix with strides")]
    fn matmul_refuses_strides_whose_last_index_overflows() {
        let mut dst = vec![0.0f32; 1];
        let huge = Mat {
            data: &[0.0; 4],
            row_stride: 1 << (usize::BITS - 2), // fits an isize, but 4 · stride wraps to 0
            col_stride: 1,
        };
        matmul(
            1,
            1,
            5,
            &mut dst,
            1,
            Mat::rows(&[0.0; 5], 5),
            huge,
            1.0,
            false,
        );
    }

    /// Destination rows closer than their width would be written twice (by two threads under
    /// parallel gemm): refused, single-threaded or not.
    #[test]
    #[should_panic(expected = "matmul destination: rows 2 apart overlap rows of 3 elements")]
    fn matmul_refuses_overlapping_destination_rows() {
        let mut dst = vec![0.0f32; 16];
        super::matmul_on(
            4,
            3,
            1,
            &mut dst,
            2,
            Mat::rows(&[1.0; 4], 1),
            Mat::rows(&[1.0; 3], 3),
            1.0,
            false,
            true,
        );
    }

    /// A stride beyond `isize::MAX` is refused even when the matrix has one row.
    #[test]
    #[should_panic(expected = "exceeds isize::MAX")]
    fn matmul_refuses_strides_beyond_isize() {
        let mut dst = vec![0.0f32; 1];
        let huge = Mat {
            data: &[0.0; 4],
            row_stride: usize::MAX,
            col_stride: 1,
        };
        matmul(
            1,
            1,
            1,
            &mut dst,
            1,
            huge,
            Mat::rows(&[0.0; 1], 1),
            1.0,
            false,
        );
    }
}

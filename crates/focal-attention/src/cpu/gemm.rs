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

    /// Panics unless every element of an `rows × cols` matrix lies inside `data`.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
            assert!(
                last < self.data.len(),
                "{what}: a {rows}×{cols} matrix needs index {last}, have {}",
                self.data.len()
            );
        }
    }
}

/// `dst = (accumulate ? dst : 0) + alpha · lhs · rhs` for `lhs` `m × k`, `rhs` `k × n` and a
/// row-major `dst` `m × n` with rows `dst_stride` apart. Single-threaded (callers parallelise
/// over blocks).
///
/// # Panics
///
/// When a matrix does not fit its slice.
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
    if m == 0 || n == 0 {
        return;
    }
    Mat::rows(dst, dst_stride).check(m, n, "matmul destination");
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    lhs.check(m, k, "matmul left operand");
    rhs.check(k, n, "matmul right operand");
    // SAFETY: `gemm` reads `lhs` at `i * lhs_rs + p * lhs_cs` for `i < m`, `p < k`, `rhs` at
    // `p * rhs_rs + j * rhs_cs` for `p < k`, `j < n`, and reads/writes `dst` at
    // `i * dst_stride + j`; the three `check` calls above prove the largest such index of each
    // lies inside its slice (strides are non-negative, so the largest index is the last
    // element's). `dst` is a `&mut` borrow, so it aliases neither operand. `T = f32` is one of
    // the element types `gemm` supports, and `Parallelism::None` keeps it on this thread.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
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
}

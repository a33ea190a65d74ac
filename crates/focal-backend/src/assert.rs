//! Tolerance asserts that explain a mismatch instead of only reporting it.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use std::fmt::Write as _;

/// How close two values must be: `|actual - expected| <= atol + rtol * |expected|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance, scaled by `|expected|`.
    pub rtol: f64,
}

impl Tolerance {
    /// An absolute tolerance only.
    pub fn absolute(atol: f64) -> Self {
        Self { atol, rtol: 0.0 }
    }

    /// Both an absolute and a relative tolerance.
    pub fn new(atol: f64, rtol: f64) -> Self {
        Self { atol, rtol }
    }
}

impl From<f64> for Tolerance {
    fn from(atol: f64) -> Self {
        Self::absolute(atol)
    }
}

/// Compares two tensors element by element; `Err` carries the full report of
/// [`assert_data_close`].
///
/// The tensors may live on different backends: both are read back as `f64`.
pub fn compare_data(
    actual: &TensorData,
    expected: &TensorData,
    tolerance: impl Into<Tolerance>,
) -> Result<(), String> {
    let tolerance = tolerance.into();
    if actual.shape != expected.shape {
        return Err(format!(
            "shape mismatch: actual {:?}, expected {:?}",
            actual.shape, expected.shape
        ));
    }
    let shape: Vec<usize> = actual.shape.to_vec();
    let a = to_f64(actual);
    let e = to_f64(expected);

    // The largest difference; NaN (on either side, unless both sides are equal) ranks highest.
    let mut max_at = 0usize;
    let mut max_key = -1.0f64;
    let mut mismatches = Vec::new();
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let delta = (x - y).abs();
        let equal = x == y;
        let key = if equal {
            0.0
        } else if delta.is_nan() {
            f64::INFINITY
        } else {
            delta
        };
        if key > max_key {
            max_key = key;
            max_at = i;
        }
        let within = delta <= tolerance.atol + tolerance.rtol * y.abs(); // false for NaN
        if !equal && !within {
            mismatches.push(i);
        }
    }
    if mismatches.is_empty() {
        return Ok(());
    }

    let mut report = format!(
        "{} of {} values differ (atol {:e}, rtol {:e}); max |Δ| = {:e} at index {:?} (actual {}, expected {})\nfirst mismatches:",
        mismatches.len(),
        a.len(),
        tolerance.atol,
        tolerance.rtol,
        (a[max_at] - e[max_at]).abs(),
        unravel(max_at, &shape),
        a[max_at],
        e[max_at],
    );
    for &i in mismatches.iter().take(8) {
        let _ = write!(
            report,
            "\n  {:?}: actual {:.8e}, expected {:.8e}, |Δ| {:.3e}",
            unravel(i, &shape),
            a[i],
            e[i],
            (a[i] - e[i]).abs()
        );
    }
    Err(report)
}

/// Asserts that two tensors' data are close.
///
/// # Panics
///
/// When the shapes differ or any element is outside the tolerance. The message gives the count
/// of mismatches, the maximum |Δ| with its multi-dimensional index, and the first mismatching
/// pairs.
#[track_caller]
pub fn assert_data_close(
    actual: &TensorData,
    expected: &TensorData,
    tolerance: impl Into<Tolerance>,
) {
    if let Err(report) = compare_data(actual, expected, tolerance) {
        panic!("tensors are not close: {report}");
    }
}

/// Asserts that two tensors of the same backend are close (see [`assert_data_close`]).
///
/// # Panics
///
/// As [`assert_data_close`].
#[track_caller]
pub fn assert_close<B: Backend, const D: usize>(
    actual: Tensor<B, D>,
    expected: Tensor<B, D>,
    tolerance: impl Into<Tolerance>,
) {
    assert_data_close(&actual.into_data(), &expected.into_data(), tolerance);
}

fn to_f64(data: &TensorData) -> Vec<f64> {
    data.clone()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("float tensor data converts to f64")
}

fn unravel(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for (slot, &dim) in out.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = index % dim;
            index /= dim;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_max_delta_index_and_pairs() {
        let a = TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
        let e = TensorData::new(vec![1.0f32, 2.5, 3.0, 4.1], [2, 2]);
        let report = compare_data(&a, &e, 1e-3).unwrap_err();
        assert!(report.starts_with("2 of 4 values differ"), "{report}");
        assert!(
            report.contains("max |Δ| = 5e-1 at index [0, 1]"),
            "{report}"
        );
        assert!(report.contains("[1, 1]: actual"), "{report}");
    }

    #[test]
    fn nan_is_a_mismatch() {
        let a = TensorData::new(vec![f32::NAN, 1.0], [2]);
        let e = TensorData::new(vec![0.0f32, 1.0], [2]);
        let report = compare_data(&a, &e, 1.0).unwrap_err();
        assert!(report.contains("max |Δ| = NaN at index [0]"), "{report}");
    }

    #[test]
    fn within_tolerance_passes_and_shapes_must_match() {
        let a = TensorData::new(vec![1.0f32, 2.0], [2]);
        let e = TensorData::new(vec![1.0f32 + 1e-7, 2.0], [2]);
        assert!(compare_data(&a, &e, 1e-6).is_ok());
        let e = TensorData::new(vec![1.0f32, 2.0], [1, 2]);
        assert!(
            compare_data(&a, &e, 1e-6)
                .unwrap_err()
                .contains("shape mismatch")
        );
    }
}

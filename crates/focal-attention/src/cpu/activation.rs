//! Activations fused into the CPU linear kernel: applied in place to the product's output
//! (forward), and their derivative multiplied into the incoming gradient (backward), on every
//! thread, compiled for the CPU's widest SIMD (see `with_simd` in the parent module).
//!
//! The exact GELU needs `erf`, which `libm` computes one element at a time; here it is the
//! rational approximation of Eigen and XLA (`generic_fast_erf_float`, within a few ulp of
//! `erf` in f32), which vectorises. `exp` is the parent module's Cody–Waite/Cephes
//! polynomial.

use super::exp_nonpositive;
use crate::Activation;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `erf(x)` for f32 (Eigen's `generic_fast_erf_float`): clamped to ±4, where erf is ±1 in
/// f32, then an odd degree-13 over an even degree-8 polynomial.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_600_1e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329_2e-3;
    let q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `tanh(u)` through `e^{-2|u|}`, exact in sign and saturating without overflow.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let e = exp_nonpositive(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

/// `σ(x) = 1 / (1 + e^{-x})` through `e^{-|x|}`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / √(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn value(activation: Activation, x: f32) -> f32 {
    match activation {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
        }
        Activation::Silu => x * sigmoid(x),
    }
}

#[inline(always)]
fn derivative(activation: Activation, x: f32) -> f32 {
    match activation {
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        // Φ(x) + x φ(x)
        Activation::Gelu => {
            0.5 * (1.0 + erf(x * FRAC_1_SQRT_2))
                + x * FRAC_1_SQRT_2PI * exp_nonpositive(-0.5 * x * x)
        }
        Activation::GeluTanh => {
            let t = tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x));
            0.5 * (1.0 + t)
                + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x)
        }
        Activation::Silu => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
    }
}

/// One chunk: `out = act(out)`, or `out *= act'(z)` when `z` is given.
struct Job<'a> {
    activation: Activation,
    z: Option<&'a [f32]>,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Job<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Job { activation, z, out } = self;
        match z {
            None => out.iter_mut().for_each(|v| *v = value(activation, *v)),
            Some(z) => out
                .iter_mut()
                .zip(z)
                .for_each(|(g, &x)| *g *= derivative(activation, x)),
        }
    }
}

/// `values = act(values)`, element-wise, in place.
pub(crate) fn forward(activation: Activation, values: &mut [f32]) {
    values.par_chunks_mut(CHUNK).for_each(|out| {
        pulp::Arch::new().dispatch(Job {
            activation,
            z: None,
            out,
        })
    });
}

/// `grad *= act'(z)`, element-wise, in place (`z` the activation's input).
pub(crate) fn backward(activation: Activation, z: &[f32], grad: &mut [f32]) {
    grad.par_chunks_mut(CHUNK)
        .zip(z.par_chunks(CHUNK))
        .for_each(|(out, z)| {
            pulp::Arch::new().dispatch(Job {
                activation,
                z: Some(z),
                out,
            })
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values in f64 (libm's erf and tanh).
    fn reference(activation: Activation, x: f64) -> (f64, f64) {
        let erf = |x: f64| libm_erf(x);
        match activation {
            Activation::Relu => (x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }),
            Activation::Gelu => {
                let cdf = 0.5 * (1.0 + erf(x / 2f64.sqrt()));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (x * cdf, cdf + x * pdf)
            }
            Activation::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let t = (c * (x + 0.044715 * x.powi(3))).tanh();
                (
                    0.5 * x * (1.0 + t),
                    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x),
                )
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                (x * s, s * (1.0 + x * (1.0 - s)))
            }
        }
    }

    /// erf in f64 by its Maclaurin series (|x| < 3) or its continued fraction (beyond): a
    /// reference independent of the approximation under test.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            // erfc(x) = exp(-x²)/(x√π) · 1/(1+ 1/(2x²)/(1+2/(2x²)/(1+…))), 60 terms
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            return (1.0 - erfc).copysign(x);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn activations_and_derivatives_match_float64_references() {
        let xs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 * 0.0025)
            .chain([-30.0, -12.0, 12.0, 30.0])
            .collect();
        for activation in [
            Activation::Relu,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Silu,
        ] {
            let mut values = xs.clone();
            forward(activation, &mut values);
            let mut grads = vec![1.0f32; xs.len()];
            backward(activation, &xs, &mut grads);
            for ((&x, &v), &g) in xs.iter().zip(&values).zip(&grads) {
                let (want_v, want_g) = reference(activation, x as f64);
                let scale = 1.0 + (x as f64).abs();
                assert!(
                    (v as f64 - want_v).abs() <= 2e-7 * scale,
                    "{activation:?}({x}) = {v}, want {want_v}"
                );
                assert!(
                    (g as f64 - want_g).abs() <= 1e-6 * scale,
                    "{activation:?}'({x}) = {g}, want {want_g}"
                );
            }
        }
    }
}

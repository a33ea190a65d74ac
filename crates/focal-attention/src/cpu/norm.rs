//! LayerNorm and RMSNorm over the last axis, with the residual sum folded in, for the CPU:
//! one pass reads `x` (and the residual) and writes the output, where burn's composite op makes
//! eight passes and as many allocations; the backward is one more pass from the saved sum and
//! each row's `1 / σ`.

use rayon::prelude::*;

/// Rows per parallel task.
const ROWS: usize = 16;

/// One norm call: `rows` rows of width `d`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormShape {
    pub rows: usize,
    pub d: usize,
    pub eps: f32,
    /// LayerNorm (subtract the mean) or RMSNorm (do not).
    pub centered: bool,
}

/// What the forward returns: the output, the normalised input's sum `x + residual` (kept for
/// the backward when there is a residual; empty otherwise) and each row's mean and `1 / σ`.
pub(crate) struct NormForward {
    pub out: Vec<f32>,
    pub sum: Vec<f32>,
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

impl NormShape {
    /// `norm(x + residual) · γ + β`.
    pub fn forward(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        gamma: &[f32],
        beta: Option<&[f32]>,
    ) -> NormForward {
        let Self { rows, d, .. } = *self;
        let sum: Vec<f32> = match residual {
            Some(r) => {
                let mut sum = vec![0.0f32; rows * d];
                sum.par_chunks_mut(ROWS * d)
                    .zip(x.par_chunks(ROWS * d).zip(r.par_chunks(ROWS * d)))
                    .for_each(|(s, (x, r))| {
                        s.iter_mut()
                            .zip(x.iter().zip(r))
                            .for_each(|(s, (a, b))| *s = a + b)
                    });
                sum
            }
            None => Vec::new(),
        };
        let input = if residual.is_some() { &sum[..] } else { x };
        let mut out = vec![0.0f32; rows * d];
        let mut mean = vec![0.0f32; rows];
        let mut rstd = vec![0.0f32; rows];
        out.par_chunks_mut(ROWS * d)
            .zip(input.par_chunks(ROWS * d))
            .zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS)))
            .for_each(|((out, input), (mean, rstd))| {
                for (((out, row), mean), rstd) in out
                    .chunks_exact_mut(d)
                    .zip(input.chunks_exact(d))
                    .zip(mean)
                    .zip(rstd)
                {
                    let m = if self.centered {
                        row.iter().sum::<f32>() / d as f32
                    } else {
                        0.0
                    };
                    let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / d as f32;
                    let r = 1.0 / (var + self.eps).sqrt();
                    (*mean, *rstd) = (m, r);
                    match beta {
                        Some(beta) => {
                            for (((o, v), g), b) in out.iter_mut().zip(row).zip(gamma).zip(beta) {
                                *o = (v - m) * r * g + b;
                            }
                        }
                        None => {
                            for ((o, v), g) in out.iter_mut().zip(row).zip(gamma) {
                                *o = (v - m) * r * g;
                            }
                        }
                    }
                }
            });
        NormForward {
            out,
            sum,
            mean,
            rstd,
        }
    }

    /// The gradients of the norm's input (also the residual's), `γ` and `β` from the output's
    /// gradient `dy`, the input it normalised (`x + residual`) and each row's mean and `1 / σ`.
    pub fn backward(
        &self,
        input: &[f32],
        mean: &[f32],
        rstd: &[f32],
        gamma: &[f32],
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Self { d, .. } = *self;
        let mut dx = vec![0.0f32; input.len()];
        // Per task: its rows' dx, and partial sums of dγ and dβ.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(ROWS * d)
            .zip(input.par_chunks(ROWS * d).zip(dy.par_chunks(ROWS * d)))
            .zip(mean.par_chunks(ROWS).zip(rstd.par_chunks(ROWS)))
            .map(|((dx, (input, dy)), (mean, rstd))| {
                let (mut d_gamma, mut d_beta) = (vec![0.0f32; d], vec![0.0f32; d]);
                for ((((dx, row), dy), &m), &r) in dx
                    .chunks_exact_mut(d)
                    .zip(input.chunks_exact(d))
                    .zip(dy.chunks_exact(d))
                    .zip(mean)
                    .zip(rstd)
                {
                    // x̂ = (v - m) r, ĝ = dy γ
                    let (mut mean_g, mut mean_gx) = (0.0f32, 0.0f32);
                    for i in 0..d {
                        let x_hat = (row[i] - m) * r;
                        let g = dy[i] * gamma[i];
                        mean_g += g;
                        mean_gx += g * x_hat;
                        d_gamma[i] += dy[i] * x_hat;
                        d_beta[i] += dy[i];
                    }
                    mean_g /= d as f32;
                    mean_gx /= d as f32;
                    if !self.centered {
                        mean_g = 0.0;
                    }
                    for i in 0..d {
                        let x_hat = (row[i] - m) * r;
                        dx[i] = r * (dy[i] * gamma[i] - mean_g - x_hat * mean_gx);
                    }
                }
                (d_gamma, d_beta)
            })
            .collect();
        let (mut d_gamma, mut d_beta) = (vec![0.0f32; d], vec![0.0f32; d]);
        for (g, b) in &partials {
            d_gamma.iter_mut().zip(g).for_each(|(s, v)| *s += v);
            d_beta.iter_mut().zip(b).for_each(|(s, v)| *s += v);
        }
        (dx, d_gamma, d_beta)
    }
}

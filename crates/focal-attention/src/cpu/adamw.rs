//! One AdamW step over host `f32` slices, in place, on every thread: the parameter, its
//! gradient and the moments are read once and written once, where burn's tensor-op `AdamW`
//! makes about fifteen passes and as many allocations. The arithmetic is burn's, operation by
//! operation and in the same order (`f32` throughout, scalars rounded as burn rounds them), so
//! the result is bit-identical to burn's `AdamW` on ndarray.

use crate::adamw::AdamWStep;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// The slices of one step. `first`: the moments hold nothing yet (the parameter's first step);
/// `max_moment_2` is `Some` under AMSGrad, and `fresh_max` says it holds nothing yet (a state
/// saved without AMSGrad).
pub(crate) struct AdamWSlices<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub moment_1: &'a mut [f32],
    pub moment_2: &'a mut [f32],
    pub max_moment_2: Option<&'a mut [f32]>,
    pub first: bool,
    pub fresh_max: bool,
}

/// Scalars of the step, rounded to `f32` where burn rounds them.
#[derive(Clone, Copy)]
struct Scalars {
    beta_1: f32,
    beta_2: f32,
    factor_1: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    lr: f32,
    decay: Decay,
}

#[derive(Clone, Copy)]
enum Decay {
    None,
    /// `p · (1 − lr·wd)`.
    Scale(f32),
    /// `p − p · lr·wd` where the signs of `p` and the first moment agree.
    Cautious(f32),
}

impl Scalars {
    fn of(step: &AdamWStep) -> Self {
        let (correction_1, correction_2) = step.corrections();
        let rate = step.decay_rate();
        Self {
            beta_1: step.beta_1,
            beta_2: step.beta_2,
            factor_1: 1.0 - step.beta_1,
            factor_2: 1.0 - step.beta_2,
            correction_1,
            correction_2,
            epsilon: step.epsilon,
            lr: step.lr as f32,
            decay: if rate == 0.0 {
                Decay::None
            } else if step.cautious_weight_decay {
                Decay::Cautious(rate as f32)
            } else {
                Decay::Scale((1.0 - rate) as f32)
            },
        }
    }

    /// One element: the new parameter, the moments written in place. `FIRST`: the moments
    /// hold nothing yet.
    #[inline(always)]
    fn update<const FIRST: bool>(&self, p: f32, g: f32, m: &mut f32, v: &mut f32) -> f32 {
        self.moments::<FIRST>(g, m, v);
        self.apply(p, *m, *v)
    }

    #[inline(always)]
    fn moments<const FIRST: bool>(&self, g: f32, m: &mut f32, v: &mut f32) {
        if FIRST {
            *m = g * self.factor_1;
            *v = (g * g) * self.factor_2;
        } else {
            *m = *m * self.beta_1 + g * self.factor_1;
            *v = *v * self.beta_2 + (g * g) * self.factor_2;
        }
    }

    /// The parameter after the step, from the new first moment and the second moment used.
    #[inline(always)]
    fn apply(&self, p: f32, m: f32, v: f32) -> f32 {
        let delta = (m / self.correction_1) / ((v / self.correction_2).sqrt() + self.epsilon);
        let decayed = match self.decay {
            Decay::None => p,
            Decay::Scale(keep) => p * keep,
            Decay::Cautious(rate) => {
                // burn: p − mask_fill(p · rate, signs differ, 0).
                let shrink = if (p >= 0.0) != (m >= 0.0) {
                    0.0
                } else {
                    p * rate
                };
                p - shrink
            }
        };
        decayed - delta * self.lr
    }

    fn run<const FIRST: bool>(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *p = self.update::<FIRST>(*p, *g, m, v);
        }
    }

    /// AMSGrad: `FRESH`, the running maximum holds nothing yet (it starts at the new second
    /// moment, as burn's does).
    fn run_amsgrad<const FIRST: bool, const FRESH: bool>(
        &self,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        max: &mut [f32],
    ) {
        let rows = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
        for ((((p, g), m), v), max) in rows.zip(max.iter_mut()) {
            self.moments::<FIRST>(*g, m, v);
            let previous = if FRESH { *v } else { *max };
            // burn's `max_pair`: the other where `self < other`.
            *max = if previous < *v { *v } else { previous };
            *p = self.apply(*p, *m, *max);
        }
    }
}

/// Runs the step over the slices (all of one length).
pub(crate) fn step(step: &AdamWStep, s: AdamWSlices<'_>) {
    let k = Scalars::of(step);
    let (first, fresh) = (s.first, s.fresh_max || s.first);
    let chunk =
        |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], max: Option<&mut [f32]>| match (
            max, first, fresh,
        ) {
            (Some(max), true, _) => k.run_amsgrad::<true, true>(p, g, m, v, max),
            (Some(max), false, true) => k.run_amsgrad::<false, true>(p, g, m, v, max),
            (Some(max), false, false) => k.run_amsgrad::<false, false>(p, g, m, v, max),
            (None, true, _) => k.run::<true>(p, g, m, v),
            (None, false, _) => k.run::<false>(p, g, m, v),
        };
    if s.param.len() <= CHUNK {
        // One chunk: on the calling thread (handing it to rayon's pool costs more than it).
        return chunk(s.param, s.grad, s.moment_1, s.moment_2, s.max_moment_2);
    }
    let parts = s
        .param
        .par_chunks_mut(CHUNK)
        .zip(s.grad.par_chunks(CHUNK))
        .zip(s.moment_1.par_chunks_mut(CHUNK))
        .zip(s.moment_2.par_chunks_mut(CHUNK));
    match s.max_moment_2 {
        Some(max) => parts
            .zip(max.par_chunks_mut(CHUNK))
            .for_each(|((((p, g), m), v), max)| chunk(p, g, m, v, Some(max))),
        None => parts.for_each(|(((p, g), m), v)| chunk(p, g, m, v, None)),
    }
}

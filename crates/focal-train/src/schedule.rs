//! Hugging Face's default learning-rate schedule for fine-tuning, as a burn [`LrScheduler`].

use burn::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;

/// transformers' `get_linear_schedule_with_warmup`: the learning rate rises linearly from 0 over
/// `warmup` optimizer steps, then falls linearly to 0 at step `total`. Optimizer step `s`
/// (counted from 0) uses `base · s / warmup` during the warmup and
/// `base · max(0, (total − s) / (total − warmup))` after it; so, as in transformers, the first
/// step of a run with warmup has a learning rate of 0.
///
/// burn-train asks its scheduler for a rate at every batch, also when gradients are accumulated
/// over `accumulation` batches and the optimizer steps only at the last of them: batch `b`
/// (counted from 1) is given the rate of optimizer step `(b − 1) / accumulation`, so each
/// optimizer step gets the rate transformers gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupLinear {
    base: LearningRate,
    warmup: usize,
    total: usize,
    accumulation: usize,
    batches: usize,
}

impl WarmupLinear {
    /// The schedule for `total` optimizer steps of `accumulation` batches each, `warmup` of them
    /// warming up.
    pub fn new(base: LearningRate, warmup: usize, total: usize, accumulation: usize) -> Self {
        Self {
            base,
            warmup,
            total,
            accumulation: accumulation.max(1),
            batches: 0,
        }
    }

    /// The rate of optimizer step `step` (from 0).
    pub fn rate(&self, step: usize) -> LearningRate {
        let factor = if step < self.warmup {
            step as f64 / self.warmup.max(1) as f64
        } else {
            let left = self.total.saturating_sub(step) as f64;
            left / self.total.saturating_sub(self.warmup).max(1) as f64
        };
        self.base * factor.max(0.0)
    }
}

impl LrScheduler for WarmupLinear {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let step = self.batches / self.accumulation;
        self.batches += 1;
        self.rate(step)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.batches
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.batches = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rates transformers 4.57.1 gives (`get_linear_schedule_with_warmup(optimizer, 2, 6)`
    /// with lr 1e-3, read after each `optimizer.step()` / `scheduler.step()` pair):
    /// 0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.
    #[test]
    fn rates_are_transformers_linear_warmup() {
        let expected = [0.0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0];
        let mut schedule = WarmupLinear::new(1e-3, 2, 6, 1);
        for want in expected {
            let got = schedule.step();
            assert!((got - want).abs() < 1e-15, "{got} != {want}");
        }
        // With two batches per optimizer step, each pair of batches shares its step's rate.
        let mut schedule = WarmupLinear::new(1e-3, 2, 6, 2);
        for want in expected {
            for _ in 0..2 {
                assert!((schedule.step() - want).abs() < 1e-15);
            }
        }
        // No warmup: the first step has the full rate.
        assert_eq!(WarmupLinear::new(1e-3, 0, 4, 1).step(), 1e-3);
    }
}

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
/// burn-train asks its scheduler for a rate at every batch (every round of batches, one per
/// replica, on several devices), also when gradients are accumulated over `accumulation`
/// rounds and the optimizer steps only at the last of them; and it drops an epoch's last
/// rounds when they do not fill an optimizer step. So the schedule counts optimizer steps, not
/// batches: an epoch of `rounds` rounds makes `rounds / accumulation` steps (transformers'
/// `len(dataloader) // gradient_accumulation_steps`), and round `i` of epoch `e` (from 0) gets
/// the rate of step `e · (rounds / accumulation) + i / accumulation`. Counting batches instead
/// drifts by the dropped rounds every epoch, and late epochs train at rate 0.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupLinear {
    base: LearningRate,
    warmup: usize,
    total: usize,
    accumulation: usize,
    rounds: usize,
    batches: usize,
}

impl WarmupLinear {
    /// The schedule of a run of `epochs` epochs of `rounds` rounds (batches on one device),
    /// whose optimizer steps each take `accumulation` rounds, with the share `warmup` of the
    /// steps warming up (transformers' `warmup_ratio`, rounded up).
    ///
    /// # Panics
    ///
    /// When an epoch has fewer rounds than `accumulation` (no optimizer step would run: callers
    /// refuse such settings first, naming them).
    pub fn for_epochs(
        base: LearningRate,
        warmup: f64,
        epochs: usize,
        rounds: usize,
        accumulation: usize,
    ) -> Self {
        let accumulation = accumulation.max(1);
        assert!(
            rounds >= accumulation,
            "an epoch of {rounds} rounds makes no optimizer step of {accumulation}"
        );
        let total = epochs * (rounds / accumulation);
        Self {
            base,
            warmup: (warmup * total as f64).ceil() as usize,
            total,
            accumulation,
            rounds,
            batches: 0,
        }
    }

    /// Optimizer steps of the whole run.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Optimizer steps spent warming up.
    pub fn warmup(&self) -> usize {
        self.warmup
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

    /// The optimizer step that round `batch` of the run (from 0) belongs to.
    fn step_of(&self, batch: usize) -> usize {
        let (epoch, round) = (batch / self.rounds, batch % self.rounds);
        epoch * (self.rounds / self.accumulation) + round / self.accumulation
    }
}

impl LrScheduler for WarmupLinear {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let step = self.step_of(self.batches);
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

    /// transformers 4.57.1's rates for `get_linear_schedule_with_warmup(optimizer, warmup,
    /// total)`, base rate 1, the rate used by each optimizer step
    /// (`tests/fixtures/review/schedule_reference.json`, written by
    /// `tests/fixtures/generate_review.py`).
    fn transformers_rates(warmup: usize, total: usize) -> Vec<f64> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/review/schedule_reference.json"
        );
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let case = reference["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["num_warmup_steps"] == warmup && c["num_training_steps"] == total)
            .unwrap_or_else(|| panic!("no reference for warmup {warmup}, total {total}"));
        assert_eq!(case["base_lr"], 1.0);
        serde_json::from_value(case["lrs"].clone()).unwrap()
    }

    /// The rate of every round of a run, as burn-train asks for them (once per round), and the
    /// rates of the rounds at which the optimizer steps (each `accumulation`-th round of an
    /// epoch; the epoch's unfilled tail is dropped).
    fn stepped_rates(mut schedule: WarmupLinear, epochs: usize, rounds: usize) -> Vec<f64> {
        let accumulation = schedule.accumulation;
        let mut stepped = Vec::new();
        for _ in 0..epochs {
            for round in 1..=rounds {
                let rate = schedule.step();
                if round % accumulation == 0 {
                    stepped.push(rate);
                }
            }
        }
        stepped
    }

    /// Each optimizer step gets transformers' rate for its step, across epoch boundaries and
    /// with an epoch's unfilled accumulation dropped: 6 rounds an epoch, 4 a step, 3 epochs
    /// make one step an epoch, at rates 1, 2/3, 1/3 (counting rounds instead gave 1, 1/3, 0).
    #[test]
    fn optimizer_steps_get_transformers_rates() {
        for (warmup, epochs, rounds, accumulation) in [
            (0.0, 3, 6, 4),
            (0.3, 3, 6, 4),
            (0.3, 3, 4, 2),
            (0.1, 2, 11, 2),
            (0.25, 4, 7, 2),
        ] {
            let schedule = WarmupLinear::for_epochs(1.0, warmup, epochs, rounds, accumulation);
            let want = transformers_rates(schedule.warmup(), schedule.total());
            assert_eq!(schedule.total(), epochs * (rounds / accumulation));
            let got = stepped_rates(schedule, epochs, rounds);
            assert_eq!(got.len(), want.len());
            for (step, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-12,
                    "warmup {warmup}, {epochs} epochs of {rounds} rounds, accumulation \
                     {accumulation}: step {step} got {got:?}, transformers {want:?}"
                );
            }
        }
        // No accumulation, no warmup: the first step has the full rate.
        assert_eq!(WarmupLinear::for_epochs(1e-3, 0.0, 1, 4, 1).step(), 1e-3);
    }

    /// A resumed run's schedule continues from the rounds its record counted.
    #[test]
    fn a_resumed_schedule_continues() {
        let mut first = WarmupLinear::for_epochs(1.0, 0.2, 3, 5, 2);
        for _ in 0..5 {
            first.step();
        }
        let record = first.to_record::<focal_backend::NdArray>();
        let mut resumed = WarmupLinear::for_epochs(1.0, 0.2, 3, 5, 2)
            .load_record::<focal_backend::NdArray>(record);
        for _ in 0..10 {
            assert_eq!(first.step(), resumed.step());
        }
    }
}

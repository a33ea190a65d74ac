//! Synthetic sequence-to-sequence tasks.

use focal_heads::Vocabulary;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// One source sequence and its expected target, as token ids (no `<bos>` / `<eos>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Example {
    /// Source ids.
    pub source: Vec<usize>,
    /// Target ids.
    pub target: Vec<usize>,
}

/// A task that generates examples from a random generator.
pub trait Seq2SeqTask: Send + Sync {
    /// The name used on the command line (`--task NAME`).
    fn name(&self) -> &'static str;
    /// The vocabulary of sources and targets.
    fn vocabulary(&self) -> Vocabulary;
    /// The longest source the task produces.
    fn max_source_len(&self) -> usize;
    /// The longest target the task produces.
    fn max_target_len(&self) -> usize;
    /// Draws one example.
    fn sample(&self, rng: &mut StdRng) -> Example;

    /// `n` distinct examples drawn with a generator seeded by `seed`: the held-out set.
    ///
    /// # Panics
    ///
    /// When the task cannot produce `n` distinct examples.
    fn held_out(&self, n: usize, seed: u64) -> Vec<Example> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seen = HashSet::new();
        let mut examples = Vec::with_capacity(n);
        let mut attempts = 0usize;
        while examples.len() < n {
            attempts += 1;
            assert!(
                attempts <= 100 * n.max(1),
                "task {} cannot produce {n} distinct examples",
                self.name()
            );
            let example = self.sample(&mut rng);
            if seen.insert(example.source.clone()) {
                examples.push(example);
            }
        }
        examples
    }
}

/// Training examples drawn from a task, skipping every example whose source is in the held-out
/// set, so that held-out accuracy measures generalisation to sequences never seen in training.
pub struct TrainingStream<'a> {
    task: &'a dyn Seq2SeqTask,
    excluded: HashSet<Vec<usize>>,
    rng: StdRng,
}

impl<'a> TrainingStream<'a> {
    /// A stream over `task` that never yields a source of `held_out`, drawing with `rng`.
    pub fn new(task: &'a dyn Seq2SeqTask, held_out: &[Example], rng: StdRng) -> Self {
        Self {
            task,
            excluded: held_out.iter().map(|e| e.source.clone()).collect(),
            rng,
        }
    }

    /// The next `n` examples.
    pub fn batch(&mut self, n: usize) -> Vec<Example> {
        let mut examples = Vec::with_capacity(n);
        while examples.len() < n {
            let example = self.task.sample(&mut self.rng);
            if !self.excluded.contains(&example.source) {
                examples.push(example);
            }
        }
        examples
    }
}

/// The tasks `focal train --task` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// Reverse a sequence of digits.
    Reverse,
}

impl TaskKind {
    /// Every task.
    pub const ALL: [TaskKind; 1] = [TaskKind::Reverse];

    /// The task with its default settings.
    pub fn build(self) -> Box<dyn Seq2SeqTask> {
        match self {
            TaskKind::Reverse => Box::new(ReverseTask::default()),
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Reverse => "reverse",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskKind::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let known: Vec<_> = TaskKind::ALL.iter().map(|t| t.name()).collect();
                format!("unknown task '{s}': expected one of {}", known.join(", "))
            })
    }
}

/// Reverse a sequence of `min_len ..= max_len` digit tokens: `3 1 4` → `4 1 3`.
///
/// The classic sanity task for sequence-to-sequence Transformers: it needs attention to find
/// the right source position for every output position, and cannot be solved from local
/// context alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReverseTask {
    /// Shortest source. Default 4.
    pub min_len: usize,
    /// Longest source. Default 12.
    pub max_len: usize,
}

impl Default for ReverseTask {
    fn default() -> Self {
        Self {
            min_len: 4,
            max_len: 12,
        }
    }
}

impl Seq2SeqTask for ReverseTask {
    fn name(&self) -> &'static str {
        TaskKind::Reverse.name()
    }

    fn vocabulary(&self) -> Vocabulary {
        Vocabulary::new((0..10).map(|d| d.to_string())).expect("digits are single words")
    }

    fn max_source_len(&self) -> usize {
        self.max_len
    }

    fn max_target_len(&self) -> usize {
        self.max_len
    }

    fn sample(&self, rng: &mut StdRng) -> Example {
        let first_digit = Vocabulary::SPECIALS.len();
        let len = rng.random_range(self.min_len..=self.max_len);
        let source: Vec<usize> = (0..len)
            .map(|_| first_digit + rng.random_range(0..10))
            .collect();
        let target = source.iter().rev().copied().collect();
        Example { source, target }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_examples_are_reversed_digits_of_allowed_lengths() {
        let task = ReverseTask::default();
        let vocabulary = task.vocabulary();
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..200 {
            let e = task.sample(&mut rng);
            assert!((4..=12).contains(&e.source.len()));
            let text = vocabulary.decode(&e.source);
            let reversed: Vec<&str> = text.split(' ').rev().collect();
            assert_eq!(vocabulary.decode(&e.target), reversed.join(" "));
        }
    }

    #[test]
    fn held_out_is_distinct_and_reproducible() {
        let task = ReverseTask::default();
        let a = task.held_out(500, 7);
        assert_eq!(a, task.held_out(500, 7));
        let distinct: HashSet<_> = a.iter().map(|e| &e.source).collect();
        assert_eq!(distinct.len(), 500);
    }

    #[test]
    fn training_never_sees_a_held_out_source() {
        // 2 to 3 digits: 1100 possible sources, 300 of them held out.
        let task = ReverseTask {
            min_len: 2,
            max_len: 3,
        };
        let held_out = task.held_out(300, 1);
        let mut stream = TrainingStream::new(&task, &held_out, StdRng::seed_from_u64(2));
        let excluded: HashSet<_> = held_out.iter().map(|e| e.source.clone()).collect();
        let drawn = stream.batch(5000);
        assert_eq!(drawn.len(), 5000);
        assert!(drawn.iter().all(|e| !excluded.contains(&e.source)));
        // The stream still covers the rest of the space.
        let distinct: HashSet<_> = drawn.iter().map(|e| e.source.clone()).collect();
        assert!(distinct.len() > 700, "{} distinct sources", distinct.len());
    }

    #[test]
    fn unknown_task_lists_the_known_ones() {
        assert_eq!("reverse".parse::<TaskKind>(), Ok(TaskKind::Reverse));
        assert_eq!(
            "sort3".parse::<TaskKind>().unwrap_err(),
            "unknown task 'sort3': expected one of reverse"
        );
    }
}

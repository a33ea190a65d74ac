//! Focal's metrics, as burn-train [`Metric`]s and as plain functions for held-out reports.
//!
//! burn-train 0.21 averages every metric over an epoch's batches (mean of per-batch values,
//! weighted by batch size). That is right for loss and accuracy, but not for F1 or Pearson's
//! correlation, which are not means: the F1 of an epoch is not the mean of its batches' F1.
//! Focal's metrics therefore accumulate their counts over the epoch and emit, at each batch, the
//! entry that makes burn-train's weighted mean equal to the epoch's figure so far (see
//! [`EpochFigure`]): early stopping, the best checkpoint and the per-epoch lines then see the
//! epoch's true macro-F1, entity F1 or correlation.
//!
//! - [`OutcomeMetric`]: accuracy, macro-F1 (the mean over the classes of each class's F1,
//!   scikit-learn's `f1_score(average="macro")`, zero for a class neither predicted nor present)
//!   or micro-F1, for single-label and multi-label classification (a label is predicted when its
//!   logit is positive, i.e. its sigmoid above 0.5);
//! - [`PearsonMetric`]: Pearson's correlation between predicted and true values (regression);
//! - [`EntityF1Metric`]: entity-level F1 over tagged words, as seqeval's default mode computes
//!   it ([`entities`] is seqeval's `get_entities`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes,
    NumericEntry, SerializedEntry,
};
use burn::train::{
    ClassificationOutput, MultiLabelClassificationOutput, RegressionOutput, SequenceOutput,
};
use serde::Serialize;
use std::sync::Arc;

/// An epoch's figure emitted batch by batch so that burn-train's epoch aggregate (the mean of
/// the entries weighted by their counts) equals the figure over the epoch so far: after batches
/// of sizes `n_1 … n_k` with figures `f_1 … f_k` (each over all the epoch's examples so far),
/// the entry of batch `k` is `(f_k N_k − f_{k−1} N_{k−1}) / n_k` with count `n_k`, where `N_k`
/// is the number of examples so far; the weighted mean of the entries telescopes to `f_k`.
#[derive(Clone, Debug, Default)]
pub struct EpochFigure {
    examples: usize,
    emitted: f64,
    current: f64,
    last: (f64, usize),
}

impl EpochFigure {
    /// Records the figure `value` over the epoch so far, after a batch of `batch` examples, and
    /// returns the entry burn-train stores.
    pub fn update(
        &mut self,
        value: f64,
        batch: usize,
        name: &str,
        percent: bool,
    ) -> SerializedEntry {
        let shown = if percent {
            format!("epoch {:.2} %", value * 100.0)
        } else {
            format!("epoch {value:.4}")
        };
        let scale = if percent { 100.0 } else { 1.0 };
        if batch == 0 {
            return SerializedEntry::new(format!("{name}: {shown}"), self.value().serialize());
        }
        let total = self.examples + batch;
        let weighted = value * scale * total as f64;
        let entry = (weighted - self.emitted) / batch as f64;
        self.emitted = weighted;
        self.examples = total;
        self.current = value * scale;
        self.last = (entry, batch);
        let serialized = NumericEntry::Aggregated {
            aggregated_value: entry,
            count: batch,
        }
        .serialize();
        SerializedEntry::new(shown, serialized)
    }

    /// The last entry (weighted means of these entries are the epoch's figure).
    pub fn value(&self) -> NumericEntry {
        NumericEntry::Aggregated {
            aggregated_value: self.last.0,
            count: self.last.1,
        }
    }

    /// The figure over the epoch so far.
    pub fn running_value(&self) -> NumericEntry {
        NumericEntry::Aggregated {
            aggregated_value: self.current,
            count: self.examples,
        }
    }
}

/// Per-class outcomes of some examples: true positives, false positives and false negatives.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClassOutcomes {
    /// Examples counted.
    pub examples: usize,
    /// `[true positives, false positives, false negatives]` per class.
    pub counts: Vec<[u64; 3]>,
}

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScores {
    /// The class's name.
    pub label: String,
    /// True positives over predicted positives (0 when none is predicted).
    pub precision: f64,
    /// True positives over actual positives (0 when none is present).
    pub recall: f64,
    /// Harmonic mean of the two: `2 tp / (2 tp + fp + fn)` (0 when all three are 0).
    pub f1: f64,
    /// Actual positives.
    pub support: u64,
}

impl ClassOutcomes {
    /// Outcomes of single-label predictions (`targets[i]`, `predicted[i]` class ids).
    pub fn single_label(targets: &[usize], predicted: &[usize], classes: usize) -> Self {
        let mut counts = vec![[0u64; 3]; classes];
        for (&t, &p) in targets.iter().zip(predicted) {
            if t == p {
                counts[t][0] += 1;
            } else {
                counts[p][1] += 1;
                counts[t][2] += 1;
            }
        }
        Self {
            examples: targets.len(),
            counts,
        }
    }

    /// Outcomes of multi-label predictions (`targets[i][c]`: example `i` has label `c`).
    pub fn multi_label(targets: &[Vec<bool>], predicted: &[Vec<bool>]) -> Self {
        let classes = targets.first().map_or(0, Vec::len);
        let mut counts = vec![[0u64; 3]; classes];
        for (t, p) in targets.iter().zip(predicted) {
            for (c, (&t, &p)) in t.iter().zip(p).enumerate() {
                match (t, p) {
                    (true, true) => counts[c][0] += 1,
                    (false, true) => counts[c][1] += 1,
                    (true, false) => counts[c][2] += 1,
                    (false, false) => {}
                }
            }
        }
        Self {
            examples: targets.len(),
            counts,
        }
    }

    /// Adds other outcomes (of the same classes).
    pub fn add(&mut self, other: &ClassOutcomes) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), [0; 3]);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            for k in 0..3 {
                mine[k] += theirs[k];
            }
        }
        self.examples += other.examples;
    }

    /// Each class's precision, recall, F1 and support, named by `labels`.
    pub fn per_class(&self, labels: &[String]) -> Vec<ClassScores> {
        self.counts
            .iter()
            .enumerate()
            .map(|(c, &[tp, fp, fn_])| {
                let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                ClassScores {
                    label: labels.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    precision: ratio(tp, tp + fp),
                    recall: ratio(tp, tp + fn_),
                    f1: ratio(2 * tp, 2 * tp + fp + fn_),
                    support: tp + fn_,
                }
            })
            .collect()
    }

    /// The mean of the classes' F1.
    pub fn macro_f1(&self) -> f64 {
        if self.counts.is_empty() {
            return 0.0;
        }
        let sum: f64 = self.per_class(&[]).iter().map(|s| s.f1).sum();
        sum / self.counts.len() as f64
    }

    /// Share of examples whose class is right (single-label: the true positives of all classes
    /// over the examples).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = self.counts.iter().map(|c| c[0]).sum();
        if self.examples == 0 {
            0.0
        } else {
            correct as f64 / self.examples as f64
        }
    }

    /// F1 of the pooled counts of all classes (for single-label, the accuracy).
    pub fn micro_f1(&self) -> f64 {
        let [tp, fp, fn_] = self.counts.iter().fold([0u64; 3], |mut acc, c| {
            for k in 0..3 {
                acc[k] += c[k];
            }
            acc
        });
        if 2 * tp + fp + fn_ == 0 {
            0.0
        } else {
            (2 * tp) as f64 / (2 * tp + fp + fn_) as f64
        }
    }
}

/// Values of an integer tensor.
pub(crate) fn ints<B: Backend, const D: usize>(
    tensor: Tensor<B, D, burn::tensor::Int>,
) -> Vec<i64> {
    tensor
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("integer tensor data")
}

/// Values of a float tensor.
fn floats<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f64> {
    tensor
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("float tensor data")
}

/// The true and the predicted (`argmax`) class ids of a classification output.
pub(crate) fn class_ids<B: Backend>(output: &ClassificationOutput<B>) -> (Vec<usize>, Vec<usize>) {
    let as_ids = |v: Vec<i64>| v.into_iter().map(|x| x as usize).collect::<Vec<_>>();
    (
        as_ids(ints(output.targets.clone())),
        as_ids(ints(output.output.clone().argmax(1))),
    )
}

impl<B: Backend> Adaptor<ClassOutcomes> for ClassificationOutput<B> {
    fn adapt(&self) -> ClassOutcomes {
        let [_, classes] = self.output.dims();
        let (targets, predicted) = class_ids(self);
        ClassOutcomes::single_label(&targets, &predicted, classes)
    }
}

impl<B: Backend> Adaptor<ClassOutcomes> for MultiLabelClassificationOutput<B> {
    fn adapt(&self) -> ClassOutcomes {
        let [_, classes] = self.output.dims();
        let rows = |values: Vec<bool>| -> Vec<Vec<bool>> {
            values
                .chunks(classes.max(1))
                .map(<[bool]>::to_vec)
                .collect()
        };
        let predicted = floats(self.output.clone()).into_iter().map(|x| x > 0.0);
        let targets = ints(self.targets.clone()).into_iter().map(|x| x > 0);
        ClassOutcomes::multi_label(&rows(targets.collect()), &rows(predicted.collect()))
    }
}

/// Which figure an [`OutcomeMetric`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Accuracy,
    MacroF1,
    MicroF1,
}

/// burn-train metric over the epoch's [`ClassOutcomes`], in percent: accuracy (single-label),
/// macro-F1 or micro-F1.
#[derive(Clone)]
pub struct OutcomeMetric {
    name: MetricName,
    figure_of: Outcome,
    outcomes: ClassOutcomes,
    figure: EpochFigure,
}

impl OutcomeMetric {
    fn new(name: &str, figure_of: Outcome) -> Self {
        Self {
            name: Arc::new(name.to_string()),
            figure_of,
            outcomes: ClassOutcomes::default(),
            figure: EpochFigure::default(),
        }
    }

    /// Share of examples whose best class is right (single-label), as `Accuracy`.
    pub fn accuracy() -> Self {
        Self::new("Accuracy", Outcome::Accuracy)
    }

    /// [`ClassOutcomes::macro_f1`], as `Macro F1`.
    pub fn macro_f1() -> Self {
        Self::new("Macro F1", Outcome::MacroF1)
    }

    /// [`ClassOutcomes::micro_f1`], as `Micro F1`.
    pub fn micro_f1() -> Self {
        Self::new("Micro F1", Outcome::MicroF1)
    }
}

fn higher_percent() -> MetricAttributes {
    NumericAttributes {
        unit: Some("%".to_string()),
        higher_is_better: true,
    }
    .into()
}

impl Metric for OutcomeMetric {
    type Input = ClassOutcomes;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        higher_percent()
    }

    fn update(&mut self, item: &ClassOutcomes, _metadata: &MetricMetadata) -> SerializedEntry {
        self.outcomes.add(item);
        let value = match self.figure_of {
            Outcome::Accuracy => self.outcomes.accuracy(),
            Outcome::MacroF1 => self.outcomes.macro_f1(),
            Outcome::MicroF1 => self.outcomes.micro_f1(),
        };
        self.figure.update(value, item.examples, &self.name, true)
    }

    fn clear(&mut self) {
        self.outcomes = ClassOutcomes::default();
        self.figure = EpochFigure::default();
    }
}

impl Numeric for OutcomeMetric {
    fn value(&self) -> NumericEntry {
        self.figure.value()
    }

    fn running_value(&self) -> NumericEntry {
        self.figure.running_value()
    }
}

/// Running sums for Pearson's correlation (Welford's co-moments, in `f64`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Correlation {
    n: f64,
    mean_x: f64,
    mean_y: f64,
    m2_x: f64,
    m2_y: f64,
    c_xy: f64,
}

impl Correlation {
    /// Adds pairs (predicted, true).
    pub fn add(&mut self, predicted: &[f64], targets: &[f64]) {
        for (&x, &y) in predicted.iter().zip(targets) {
            self.n += 1.0;
            let dx = x - self.mean_x;
            self.mean_x += dx / self.n;
            let dy = y - self.mean_y;
            self.mean_y += dy / self.n;
            self.m2_x += dx * (x - self.mean_x);
            self.m2_y += dy * (y - self.mean_y);
            self.c_xy += dx * (y - self.mean_y);
        }
    }

    /// Pearson's correlation; 0 when it is undefined (fewer than two pairs, or a constant side).
    pub fn pearson(&self) -> f64 {
        let denominator = (self.m2_x * self.m2_y).sqrt();
        if self.n < 2.0 || denominator == 0.0 || !denominator.is_finite() {
            0.0
        } else {
            self.c_xy / denominator
        }
    }
}

/// Predicted and true values of a batch, for [`PearsonMetric`].
#[derive(Clone, Debug, Default)]
pub struct RegressionPairs {
    /// Predictions.
    pub predicted: Vec<f64>,
    /// True values.
    pub targets: Vec<f64>,
}

impl<B: Backend> Adaptor<RegressionPairs> for RegressionOutput<B> {
    fn adapt(&self) -> RegressionPairs {
        RegressionPairs {
            predicted: floats(self.output.clone()),
            targets: floats(self.targets.clone()),
        }
    }
}

/// burn-train metric: Pearson's correlation over the epoch (see [`Correlation::pearson`]).
#[derive(Clone)]
pub struct PearsonMetric {
    name: MetricName,
    sums: Correlation,
    figure: EpochFigure,
}

impl PearsonMetric {
    /// A new metric.
    pub fn new() -> Self {
        Self {
            name: Arc::new("Pearson".to_string()),
            sums: Correlation::default(),
            figure: EpochFigure::default(),
        }
    }
}

impl Default for PearsonMetric {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for PearsonMetric {
    type Input = RegressionPairs;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: true,
        }
        .into()
    }

    fn update(&mut self, item: &RegressionPairs, _metadata: &MetricMetadata) -> SerializedEntry {
        self.sums.add(&item.predicted, &item.targets);
        let value = self.sums.pearson();
        self.figure
            .update(value, item.predicted.len(), &self.name, false)
    }

    fn clear(&mut self) {
        self.sums = Correlation::default();
        self.figure = EpochFigure::default();
    }
}

impl Numeric for PearsonMetric {
    fn value(&self) -> NumericEntry {
        self.figure.value()
    }

    fn running_value(&self) -> NumericEntry {
        self.figure.running_value()
    }
}

/// The entities of a tag sequence, as seqeval's `get_entities` (default, prefix mode) finds
/// them: `(type, first, last)` with inclusive word positions. `B-X`, `I-X`, `E-X`, `S-X` and `O`
/// are understood as seqeval understands them, including its leniency (an `I-X` after `O`
/// starts an entity; a change of type ends one).
pub fn entities<S: AsRef<str>>(tags: &[S]) -> Vec<(String, usize, usize)> {
    fn split(chunk: &str) -> (char, String) {
        let mut chars = chunk.chars();
        let tag = chars.next().unwrap_or('O');
        let rest = chars.as_str();
        let kind = match rest.split_once('-') {
            Some((_, after)) => after,
            None => rest,
        };
        (tag, if kind.is_empty() { "_" } else { kind }.to_string())
    }
    fn ends(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
        matches!(prev, 'E' | 'S')
            || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
            || (prev != 'O' && prev != '.' && prev_type != kind)
    }
    fn starts(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
        matches!(tag, 'B' | 'S')
            || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
            || (tag != 'O' && tag != '.' && prev_type != kind)
    }
    let mut chunks = Vec::new();
    let (mut prev, mut prev_type) = ('O', String::new());
    let mut begin = 0;
    for (i, chunk) in tags.iter().map(AsRef::as_ref).chain(["O"]).enumerate() {
        let (tag, kind) = split(chunk);
        if ends(prev, tag, &prev_type, &kind) {
            chunks.push((prev_type.clone(), begin, i.saturating_sub(1)));
        }
        if starts(prev, tag, &prev_type, &kind) {
            begin = i;
        }
        prev = tag;
        prev_type = kind;
    }
    chunks
}

/// Entity counts over sentences: correct, predicted and true entities, overall and per type
/// (seqeval's `f1_score` / `classification_report`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EntityCounts {
    /// Sentences counted.
    pub sentences: usize,
    /// Per entity type: `[correct, predicted, true]`.
    pub types: std::collections::BTreeMap<String, [u64; 3]>,
}

impl EntityCounts {
    /// Adds the sentences' gold and predicted tags (names), comparing their entities as seqeval
    /// does: the sentences are joined with an `O` between them and the entity sets compared.
    pub fn add<S: AsRef<str>>(&mut self, gold: &[Vec<S>], predicted: &[Vec<S>]) {
        let flat = |sentences: &[Vec<S>]| -> Vec<String> {
            sentences
                .iter()
                .flat_map(|s| {
                    s.iter()
                        .map(|t| t.as_ref().to_string())
                        .chain(["O".to_string()])
                })
                .collect()
        };
        self.sentences += gold.len();
        let gold: std::collections::BTreeSet<_> = entities(&flat(gold)).into_iter().collect();
        let predicted: std::collections::BTreeSet<_> =
            entities(&flat(predicted)).into_iter().collect();
        for entity in &predicted {
            let counts = self.types.entry(entity.0.clone()).or_default();
            counts[1] += 1;
            if gold.contains(entity) {
                counts[0] += 1;
            }
        }
        for entity in &gold {
            self.types.entry(entity.0.clone()).or_default()[2] += 1;
        }
    }

    /// Adds other counts.
    pub fn merge(&mut self, other: &EntityCounts) {
        for (kind, theirs) in &other.types {
            let mine = self.types.entry(kind.clone()).or_default();
            for k in 0..3 {
                mine[k] += theirs[k];
            }
        }
        self.sentences += other.sentences;
    }

    /// Micro-averaged `(precision, recall, F1)` over all entities (seqeval's defaults; each 0
    /// when its denominator is 0).
    pub fn scores(&self) -> (f64, f64, f64) {
        let [correct, predicted, gold] = self.types.values().fold([0u64; 3], |mut acc, c| {
            for k in 0..3 {
                acc[k] += c[k];
            }
            acc
        });
        prf(correct, predicted, gold)
    }

    /// Per entity type: precision, recall, F1 and support.
    pub fn per_type(&self) -> Vec<ClassScores> {
        self.types
            .iter()
            .map(|(kind, &[correct, predicted, gold])| {
                let (precision, recall, f1) = prf(correct, predicted, gold);
                ClassScores {
                    label: kind.clone(),
                    precision,
                    recall,
                    f1,
                    support: gold,
                }
            })
            .collect()
    }
}

fn prf(correct: u64, predicted: u64, gold: u64) -> (f64, f64, f64) {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (p, r) = (ratio(correct, predicted), ratio(correct, gold));
    let f1 = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f1)
}

/// Gold and predicted tag ids of a batch's sentences, at the labelled positions only (a word's
/// first piece; pieces labelled [`focal_heads::loss::IGNORE_INDEX`] are left out).
#[derive(Clone, Debug, Default)]
pub struct TagSequences {
    /// Per sentence, its words' gold tag ids.
    pub gold: Vec<Vec<usize>>,
    /// Per sentence, its words' predicted tag ids.
    pub predicted: Vec<Vec<usize>>,
}

impl<B: Backend> Adaptor<TagSequences> for SequenceOutput<B> {
    fn adapt(&self) -> TagSequences {
        let [batch, length, _] = self.logits.dims();
        let predicted = ints(self.logits.clone().argmax(2).reshape([batch, length]));
        let targets = ints(self.targets.clone());
        let mut sequences = TagSequences::default();
        for (gold_row, predicted_row) in targets.chunks(length).zip(predicted.chunks(length)) {
            let (gold, predicted): (Vec<usize>, Vec<usize>) = gold_row
                .iter()
                .zip(predicted_row)
                .filter(|(g, _)| **g >= 0)
                .map(|(&g, &p)| (g as usize, p as usize))
                .unzip();
            sequences.gold.push(gold);
            sequences.predicted.push(predicted);
        }
        sequences
    }
}

/// burn-train metric: entity-level F1 over the epoch (seqeval's micro F1), in percent.
#[derive(Clone)]
pub struct EntityF1Metric {
    name: MetricName,
    labels: Vec<String>,
    counts: EntityCounts,
    figure: EpochFigure,
}

impl EntityF1Metric {
    /// A metric over tags named `labels` (by id).
    pub fn new(labels: Vec<String>) -> Self {
        Self {
            name: Arc::new("Entity F1".to_string()),
            labels,
            counts: EntityCounts::default(),
            figure: EpochFigure::default(),
        }
    }

    /// Counts of tag-id sentences under `labels`.
    pub fn count(labels: &[String], sequences: &TagSequences) -> EntityCounts {
        let names = |rows: &[Vec<usize>]| -> Vec<Vec<&str>> {
            rows.iter()
                .map(|r| {
                    r.iter()
                        .map(|&i| labels.get(i).map_or("O", String::as_str))
                        .collect()
                })
                .collect()
        };
        let mut counts = EntityCounts::default();
        counts.add(&names(&sequences.gold), &names(&sequences.predicted));
        counts
    }
}

impl Metric for EntityF1Metric {
    type Input = TagSequences;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        higher_percent()
    }

    fn update(&mut self, item: &TagSequences, _metadata: &MetricMetadata) -> SerializedEntry {
        self.counts.merge(&Self::count(&self.labels, item));
        let (_, _, f1) = self.counts.scores();
        self.figure.update(f1, item.gold.len(), &self.name, true)
    }

    fn clear(&mut self) {
        self.counts = EntityCounts::default();
        self.figure = EpochFigure::default();
    }
}

impl Numeric for EntityF1Metric {
    fn value(&self) -> NumericEntry {
        self.figure.value()
    }

    fn running_value(&self) -> NumericEntry {
        self.figure.running_value()
    }
}

/// How many question windows of a batch have both answer ends right.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanMatches {
    /// Windows whose predicted first and last answer tokens are both the true ones.
    pub matched: usize,
    /// Windows.
    pub windows: usize,
}

impl SpanMatches {
    /// Counts of predicted (`argmax`) and true first / last tokens.
    pub fn of(starts: &[i64], ends: &[i64], true_starts: &[i64], true_ends: &[i64]) -> Self {
        let matched = (0..starts.len())
            .filter(|&i| starts[i] == true_starts[i] && ends[i] == true_ends[i])
            .count();
        Self {
            matched,
            windows: starts.len(),
        }
    }

    /// Matched windows over windows (0 for none).
    pub fn share(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            self.matched as f64 / self.windows as f64
        }
    }
}

/// Counts that add up over an epoch's batches (a [`CountMetric`]'s input).
pub trait EpochCounts: Clone + Default + Send + Sync + 'static {
    /// Adds a batch's counts.
    fn add(&mut self, other: &Self);
}

impl EpochCounts for SpanMatches {
    fn add(&mut self, other: &Self) {
        self.matched += other.matched;
        self.windows += other.windows;
    }
}

impl EpochCounts for crate::eval::DecodeCounts {
    fn add(&mut self, other: &Self) {
        self.examples += other.examples;
        self.exact += other.exact;
        self.tokens += other.tokens;
        self.correct_tokens += other.correct_tokens;
    }
}

impl EpochCounts for TokenCounts {
    fn add(&mut self, other: &Self) {
        self.tokens += other.tokens;
        self.correct += other.correct;
        self.nll += other.nll;
    }
}

/// A burn-train metric whose figure is a function of counts summed over the epoch (a share, a
/// perplexity), not a mean of the batches' figures: its entries' weighted mean is the epoch's
/// figure ([`EpochFigure`]).
#[derive(Clone)]
pub struct CountMetric<C> {
    name: MetricName,
    /// The figure of the counts so far.
    figure_of: fn(&C) -> f64,
    /// A batch's weight (examples, windows, tokens).
    weight_of: fn(&C) -> usize,
    /// A share shown in percent (higher is better); otherwise a value where lower is better.
    percent: bool,
    counts: C,
    figure: EpochFigure,
}

impl<C: EpochCounts> CountMetric<C> {
    fn new(
        name: &str,
        figure_of: fn(&C) -> f64,
        weight_of: fn(&C) -> usize,
        percent: bool,
    ) -> Self {
        Self {
            name: Arc::new(name.to_string()),
            figure_of,
            weight_of,
            percent,
            counts: C::default(),
            figure: EpochFigure::default(),
        }
    }
}

impl<C: EpochCounts> Metric for CountMetric<C> {
    type Input = C;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        if self.percent {
            higher_percent()
        } else {
            NumericAttributes {
                unit: None,
                higher_is_better: false,
            }
            .into()
        }
    }

    fn update(&mut self, item: &C, _metadata: &MetricMetadata) -> SerializedEntry {
        self.counts.add(item);
        self.figure.update(
            (self.figure_of)(&self.counts),
            (self.weight_of)(item),
            &self.name,
            self.percent,
        )
    }

    fn clear(&mut self) {
        self.counts = C::default();
        self.figure = EpochFigure::default();
    }
}

impl<C: EpochCounts> Numeric for CountMetric<C> {
    fn value(&self) -> NumericEntry {
        self.figure.value()
    }

    fn running_value(&self) -> NumericEntry {
        self.figure.running_value()
    }
}

/// burn-train metric: the share of question windows whose answer span is exactly right (both
/// ends), in percent, over the epoch. SQuAD's exact match and F1 compare answer texts over
/// whole questions, which needs the contexts: the held-out report computes those.
pub type SpanMatchMetric = CountMetric<SpanMatches>;

impl SpanMatchMetric {
    /// A new metric.
    pub fn span_match() -> Self {
        Self::new("Span Match", SpanMatches::share, |c| c.windows, true)
    }
}

/// burn-train metric over greedy decoding ([`crate::eval::DecodeCounts`]), in percent over
/// the epoch: `Exact Match` (whole outputs equal to the target) or `Token Accuracy` (target
/// positions predicted correctly).
pub type DecodeMetric = CountMetric<crate::eval::DecodeCounts>;

impl DecodeMetric {
    /// The share of examples whose whole output is the target.
    pub fn exact_match() -> Self {
        Self::new(
            "Exact Match",
            |c| c.metrics().exact_match,
            |c| c.examples,
            true,
        )
    }

    /// The share of target positions predicted correctly.
    pub fn token_accuracy() -> Self {
        Self::new(
            "Token Accuracy",
            |c| c.metrics().token_accuracy,
            |c| c.tokens,
            true,
        )
    }
}

/// Next-token counts of a causal language model over a batch: tokens predicted, how many
/// the model's most likely token got right, and the sum of their negative log-likelihoods.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenCounts {
    /// Tokens predicted (every position but the last of each block).
    pub tokens: usize,
    /// Of those, how many are the model's most likely next token.
    pub correct: usize,
    /// The sum of their negative log-likelihoods (nats).
    pub nll: f64,
}

impl TokenCounts {
    /// `exp` of the mean negative log-likelihood (infinite with no tokens).
    pub fn perplexity(&self) -> f64 {
        if self.tokens == 0 {
            f64::INFINITY
        } else {
            (self.nll / self.tokens as f64).exp()
        }
    }

    /// The share of tokens predicted right.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.tokens.max(1) as f64
    }
}

/// burn-train metric of a causal language model over the epoch: `Perplexity` (`exp` of the
/// mean negative log-likelihood per token; lower is better) or `Next-Token Accuracy` (percent).
///
/// burn-train has a `PerplexityMetric`, but it needs the logits of every position (`[tokens,
/// vocabulary]`, 800 MB for a batch of 32 × 128 with GPT-2's vocabulary) moved to its metric
/// thread, and its entries' weighted mean is not the epoch's perplexity; this one is fed the
/// counts the step computes on the device, and its entries' weighted mean is.
pub type LmMetric = CountMetric<TokenCounts>;

impl LmMetric {
    /// Perplexity.
    pub fn perplexity() -> Self {
        Self::new("Perplexity", TokenCounts::perplexity, |c| c.tokens, false)
    }

    /// Next-token accuracy.
    pub fn accuracy() -> Self {
        Self::new(
            "Next-Token Accuracy",
            TokenCounts::accuracy,
            |c| c.tokens,
            true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataloader::Progress;
    use serde_json::Value;

    /// scikit-learn, SciPy and seqeval on fixed inputs: regenerate with
    /// `python3 tests/fixtures/train/generate_metrics.py` (versions pinned there).
    fn reference() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/train/metrics_reference.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn usizes(v: &Value) -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    }

    fn close(a: f64, b: f64, what: &str) {
        assert!((a - b).abs() < 1e-12, "{what}: {a} != {b}");
    }

    fn metadata() -> MetricMetadata {
        let progress = Progress {
            items_processed: 1,
            items_total: 1,
        };
        MetricMetadata {
            progress: progress.clone(),
            global_progress: progress,
            iteration: Some(1),
            lr: None,
        }
    }

    /// Feeds `n` items to `update` in uneven batches (7, 1, 13, 7, 1, 13, …) and returns the
    /// weighted mean of the entries, as burn-train's store aggregates an epoch.
    fn epoch_mean(
        n: usize,
        mut update: impl FnMut(std::ops::Range<usize>) -> SerializedEntry,
    ) -> f64 {
        let (mut start, mut sum, mut count) = (0, 0.0, 0);
        for size in [7, 1, 13].into_iter().cycle() {
            if start >= n {
                break;
            }
            let end = (start + size).min(n);
            let entry = update(start..end);
            if let NumericEntry::Aggregated {
                aggregated_value,
                count: c,
            } = NumericEntry::deserialize(&entry.serialized).unwrap()
            {
                sum += aggregated_value * c as f64;
                count += c;
            }
            start = end;
        }
        sum / count as f64
    }

    #[test]
    fn single_label_figures_equal_scikit_learn() {
        let r = &reference()["single_label"];
        let (targets, predicted) = (usizes(&r["targets"]), usizes(&r["predicted"]));
        let classes = r["classes"].as_u64().unwrap() as usize;
        let outcomes = ClassOutcomes::single_label(&targets, &predicted, classes);
        for (i, s) in outcomes.per_class(&[]).iter().enumerate() {
            close(
                s.precision,
                r["precision"][i].as_f64().unwrap(),
                "precision",
            );
            close(s.recall, r["recall"][i].as_f64().unwrap(), "recall");
            close(s.f1, r["f1"][i].as_f64().unwrap(), "f1");
            assert_eq!(s.support, r["support"][i].as_u64().unwrap());
        }
        close(
            outcomes.macro_f1(),
            r["macro_f1"].as_f64().unwrap(),
            "macro-F1",
        );
        close(
            outcomes.accuracy(),
            r["accuracy"].as_f64().unwrap(),
            "accuracy",
        );
        // Through burn-train's metric, batch by batch: the epoch figure is the epoch's.
        for (mut metric, want) in [
            (OutcomeMetric::macro_f1(), &r["macro_f1"]),
            (OutcomeMetric::accuracy(), &r["accuracy"]),
        ] {
            let mean = epoch_mean(targets.len(), |range| {
                let batch = ClassOutcomes::single_label(
                    &targets[range.clone()],
                    &predicted[range],
                    classes,
                );
                metric.update(&batch, &metadata())
            });
            assert!((mean - 100.0 * want.as_f64().unwrap()).abs() < 1e-9);
        }
    }

    #[test]
    fn multi_label_figures_equal_scikit_learn() {
        let r = &reference()["multi_label"];
        let rows = |v: &Value| -> Vec<Vec<bool>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|row| usizes(row).into_iter().map(|x| x == 1).collect())
                .collect()
        };
        let (targets, predicted) = (rows(&r["targets"]), rows(&r["predicted"]));
        let outcomes = ClassOutcomes::multi_label(&targets, &predicted);
        close(
            outcomes.macro_f1(),
            r["macro_f1"].as_f64().unwrap(),
            "macro-F1",
        );
        close(
            outcomes.micro_f1(),
            r["micro_f1"].as_f64().unwrap(),
            "micro-F1",
        );
        let mut metric = OutcomeMetric::micro_f1();
        let mean = epoch_mean(targets.len(), |range| {
            let batch = ClassOutcomes::multi_label(&targets[range.clone()], &predicted[range]);
            metric.update(&batch, &metadata())
        });
        assert!((mean - 100.0 * r["micro_f1"].as_f64().unwrap()).abs() < 1e-9);
    }

    #[test]
    fn pearson_equals_scipy() {
        let r = &reference()["pearson"];
        let floats = |v: &Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (x, y) = (floats(&r["predicted"]), floats(&r["targets"]));
        let want = r["r"].as_f64().unwrap();
        let mut sums = Correlation::default();
        sums.add(&x, &y);
        assert!((sums.pearson() - want).abs() < 1e-12);
        let mut metric = PearsonMetric::new();
        let mean = epoch_mean(x.len(), |range| {
            let batch = RegressionPairs {
                predicted: x[range.clone()].to_vec(),
                targets: y[range].to_vec(),
            };
            metric.update(&batch, &metadata())
        });
        assert!((mean - want).abs() < 1e-9);
        // Undefined correlations are 0, not NaN.
        let mut flat = Correlation::default();
        flat.add(&[1.0, 1.0, 1.0], &[0.0, 1.0, 2.0]);
        assert_eq!(flat.pearson(), 0.0);
    }

    #[test]
    fn entities_equal_seqeval() {
        let r = &reference()["entities"];
        let sentences = |v: &Value| -> Vec<Vec<String>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s.as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_string())
                        .collect()
                })
                .collect()
        };
        let (gold, predicted) = (sentences(&r["gold"]), sentences(&r["predicted"]));
        for (sentence, want) in gold.iter().zip(r["gold_entities"].as_array().unwrap()) {
            let want: Vec<(String, usize, usize)> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e[0].as_str().unwrap().to_string(),
                        e[1].as_u64().unwrap() as usize,
                        e[2].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            assert_eq!(entities(sentence), want, "{sentence:?}");
        }
        let mut counts = EntityCounts::default();
        counts.add(&gold, &predicted);
        let (p, rec, f1) = counts.scores();
        close(p, r["precision"].as_f64().unwrap(), "precision");
        close(rec, r["recall"].as_f64().unwrap(), "recall");
        close(f1, r["f1"].as_f64().unwrap(), "f1");
        let per_type = r["per_type"].as_object().unwrap();
        let mine = counts.per_type();
        assert_eq!(mine.len(), per_type.len());
        for s in mine {
            let want = &per_type[&s.label];
            close(s.precision, want["precision"].as_f64().unwrap(), &s.label);
            close(s.recall, want["recall"].as_f64().unwrap(), &s.label);
            close(s.f1, want["f1"].as_f64().unwrap(), &s.label);
            assert_eq!(s.support, want["support"].as_u64().unwrap());
        }
        // Through burn-train's metric, by tag ids, batch by batch.
        let labels: Vec<String> = gold
            .iter()
            .chain(&predicted)
            .flatten()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let ids = |s: &[Vec<String>]| -> Vec<Vec<usize>> {
            s.iter()
                .map(|t| {
                    t.iter()
                        .map(|x| labels.iter().position(|l| l == x).unwrap())
                        .collect()
                })
                .collect()
        };
        let (gold_ids, predicted_ids) = (ids(&gold), ids(&predicted));
        let mut metric = EntityF1Metric::new(labels.clone());
        let mean = epoch_mean(gold.len(), |range| {
            let batch = TagSequences {
                gold: gold_ids[range.clone()].to_vec(),
                predicted: predicted_ids[range].to_vec(),
            };
            metric.update(&batch, &metadata())
        });
        assert!((mean - 100.0 * r["f1"].as_f64().unwrap()).abs() < 1e-9);
    }

    #[test]
    fn epoch_entries_average_to_the_epoch_figure() {
        let mut figure = EpochFigure::default();
        let (mut sum, mut count) = (0.0, 0);
        for (value, batch) in [(0.5, 4), (0.8, 3), (0.25, 5), (0.6, 1)] {
            let entry = figure.update(value, batch, "x", false);
            let NumericEntry::Aggregated {
                aggregated_value,
                count: n,
            } = NumericEntry::deserialize(&entry.serialized).unwrap()
            else {
                panic!("aggregated entry expected");
            };
            sum += aggregated_value * n as f64;
            count += n;
            assert!((sum / count as f64 - value).abs() < 1e-12);
        }
    }

    #[test]
    fn seqeval_entities() {
        let tags = ["B-PER", "I-PER", "O", "B-LOC"];
        assert_eq!(
            entities(&tags),
            [("PER".to_string(), 0, 1), ("LOC".to_string(), 3, 3)]
        );
        // seqeval is lenient: I- after O starts an entity, a type change splits one.
        let tags = ["I-PER", "I-PER", "I-LOC", "O", "B-ORG", "I-PER"];
        assert_eq!(
            entities(&tags),
            [
                ("PER".to_string(), 0, 1),
                ("LOC".to_string(), 2, 2),
                ("ORG".to_string(), 4, 4),
                ("PER".to_string(), 5, 5)
            ]
        );
    }

    /// Perplexity and next-token accuracy fed in uneven batches give, as burn-train weighs an
    /// epoch's entries, `exp` of the total negative log-likelihood over all tokens and the
    /// share right, not a mean of the batches' figures.
    #[test]
    fn language_model_figures_are_the_epochs() {
        // Per "batch" of one position: (tokens, correct, nll).
        let items: Vec<TokenCounts> = (0..40)
            .map(|i| TokenCounts {
                tokens: 1 + i % 5,
                correct: i % 3,
                nll: 0.5 + 0.1 * i as f64,
            })
            .map(|c| TokenCounts {
                correct: c.correct.min(c.tokens),
                ..c
            })
            .collect();
        let mut total = TokenCounts::default();
        for c in &items {
            total.add(c);
        }
        for (mut metric, want) in [
            (LmMetric::perplexity(), total.perplexity()),
            (LmMetric::accuracy(), 100.0 * total.accuracy()),
        ] {
            let mean = epoch_mean(items.len(), |range| {
                let mut batch = TokenCounts::default();
                for c in &items[range] {
                    batch.add(c);
                }
                metric.update(&batch, &metadata())
            });
            close(mean, want, "epoch figure");
        }
        assert!((total.perplexity() - (total.nll / total.tokens as f64).exp()).abs() < 1e-12);
    }
}

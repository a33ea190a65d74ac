//! What lets a killed fine-tuning run continue (`resume`) to the weights the uninterrupted run
//! would have reached.
//!
//! burn-train checkpoints at the end of each epoch (model, optimizer moments, learning-rate
//! schedule) and, given a checkpoint epoch, continues after it. Three things make that
//! continuation equal to the uninterrupted run and safe against a kill at any moment:
//!
//! - `EpochLoader`: the training batches of epoch `e` are drawn in an order that depends on
//!   the seed and `e` only, and the backend's generator (dropout) is reseeded from them at the
//!   start of each epoch, so the resumed epochs see the data and the dropout masks that they
//!   would have seen;
//! - [`AtomicRecorder`]: every checkpoint file is written to a temporary name and renamed into
//!   place, so a file being written when the process dies never looks complete, and burn-train
//!   keeps the last two epochs' checkpoints, so a complete set survives while the next is
//!   written;
//! - `RunState`: after every epoch the run's settings and history are written beside the
//!   checkpoints (atomically), so that the resumed run checks it continues the same run and
//!   reports the whole history.

use crate::data::FineTuneError;
use crate::finetune::{Examples, History, InMemory};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError,
};
use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The run's settings and history in its working directory, rewritten after every epoch.
pub(crate) const STATE_FILE: &str = "focal-run.json";

/// The files burn-train's checkpointer writes for an epoch.
const CHECKPOINT_FILES: [&str; 3] = ["model", "optim", "scheduler"];

/// The seed of epoch `epoch`'s order and dropout: a different stream per epoch, the same in
/// every run with `seed`.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// burn's named MessagePack file recorder (full precision), writing each file under a
/// temporary name in the same directory and renaming it into place.
#[derive(Clone, Debug, Default)]
pub struct AtomicRecorder(NamedMpkFileRecorder<FullPrecisionSettings>);

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        file.set_extension(<Self as FileRecorder<B>>::file_extension());
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The inner recorder sets its own extension: `.NAME.partial` is written as
        // `.NAME.mpk`, a name burn-train never reads.
        let partial = file.with_file_name(format!(".{name}.partial"));
        Recorder::<B>::save_item(&self.0, item, partial.clone())?;
        let written = partial.with_extension(<Self as FileRecorder<B>>::file_extension());
        std::fs::rename(&written, &file).map_err(|e| {
            RecorderError::Unknown(format!(
                "renaming {} to {}: {e}",
                written.display(),
                file.display()
            ))
        })
    }

    fn load_item<I: serde::de::DeserializeOwned>(
        &self,
        file: &mut PathBuf,
    ) -> Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.0, file)
    }
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        <NamedMpkFileRecorder<FullPrecisionSettings> as FileRecorder<B>>::file_extension()
    }
}

/// What a loader draws for epoch `e` from the epoch's seed: the items, and the order in which
/// the epoch visits them.
type Draw<I> = Arc<dyn Fn(u64, usize) -> (Examples<I>, Vec<usize>) + Send + Sync>;

/// A training data loader whose epoch `e` (counted from 1 over the run, resumed or not) draws
/// its items in an order that depends only on `(seed, e)` — a shuffle of fixed items, or
/// items generated afresh — and reseeds the backend's generator from them, so that any epoch
/// can be replayed exactly. Batches are made on the calling thread.
pub(crate) struct EpochLoader<B: Backend, I, O> {
    draw: Draw<I>,
    /// The positions of each epoch's order this loader gives (a replica's slice, or all).
    range: Range<usize>,
    batcher: Arc<dyn Batcher<B, I, O>>,
    batch_size: usize,
    seed: u64,
    /// Epochs started so far.
    epochs: Arc<AtomicUsize>,
    device: B::Device,
}

impl<B: Backend, I: Clone + Send + Sync + 'static, O> EpochLoader<B, I, O> {
    /// A loader over `items`, shuffled afresh each epoch, whose next epoch is
    /// `epochs_done + 1`.
    pub(crate) fn new(
        items: Examples<I>,
        batcher: Arc<dyn Batcher<B, I, O>>,
        batch_size: usize,
        seed: u64,
        epochs_done: usize,
        device: B::Device,
    ) -> Self {
        let n = items.len();
        let draw: Draw<I> = Arc::new(move |seed, _| {
            let mut order: Vec<usize> = (0..items.len()).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            (items.clone(), order)
        });
        Self::with_draw(n, draw, batcher, batch_size, seed, epochs_done, device)
    }

    /// A loader whose epoch `e` visits `generate(seed of e, e)` (about `items` of them) in
    /// the order generated.
    pub(crate) fn generated(
        items: usize,
        generate: impl Fn(u64, usize) -> Vec<I> + Send + Sync + 'static,
        batcher: Arc<dyn Batcher<B, I, O>>,
        batch_size: usize,
        seed: u64,
        epochs_done: usize,
        device: B::Device,
    ) -> Self {
        let draw: Draw<I> = Arc::new(move |seed, epoch| {
            let items = generate(seed, epoch);
            let order = (0..items.len()).collect();
            (Arc::new(InMemory(items)) as Examples<I>, order)
        });
        Self::with_draw(items, draw, batcher, batch_size, seed, epochs_done, device)
    }

    fn with_draw(
        items: usize,
        draw: Draw<I>,
        batcher: Arc<dyn Batcher<B, I, O>>,
        batch_size: usize,
        seed: u64,
        epochs_done: usize,
        device: B::Device,
    ) -> Self {
        Self {
            draw,
            range: 0..items,
            batcher,
            batch_size,
            seed,
            epochs: Arc::new(AtomicUsize::new(epochs_done)),
            device,
        }
    }

    fn with(&self, range: Range<usize>, device: B::Device) -> Self {
        Self {
            draw: self.draw.clone(),
            range,
            batcher: self.batcher.clone(),
            batch_size: self.batch_size,
            seed: self.seed,
            epochs: Arc::new(AtomicUsize::new(self.epochs.load(Ordering::SeqCst))),
            device,
        }
    }
}

struct EpochIter<'a, B: Backend, I, O> {
    loader: &'a EpochLoader<B, I, O>,
    items: Examples<I>,
    /// The indices of `items` this epoch visits, in order.
    order: Vec<usize>,
    done: usize,
}

impl<B: Backend, I: Clone, O> Iterator for EpochIter<'_, B, I, O> {
    type Item = O;

    fn next(&mut self) -> Option<O> {
        let end = (self.done + self.loader.batch_size).min(self.order.len());
        if self.done >= end {
            return None;
        }
        let batch = self.order[self.done..end]
            .iter()
            .filter_map(|&i| self.items.get(i))
            .collect();
        self.done = end;
        Some(self.loader.batcher.batch(batch, &self.loader.device))
    }
}

impl<B: Backend, I: Clone, O> DataLoaderIterator<O> for EpochIter<'_, B, I, O> {
    fn progress(&self) -> Progress {
        Progress::new(self.done, self.order.len())
    }
}

impl<B, I, O> DataLoader<B, O> for EpochLoader<B, I, O>
where
    B: Backend,
    I: Clone + Send + Sync + 'static,
    O: 'static,
{
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        let epoch = self.epochs.fetch_add(1, Ordering::SeqCst) + 1;
        let seed = epoch_seed(self.seed, epoch);
        let (items, mut order) = (self.draw)(seed, epoch);
        let end = self.range.end.min(order.len());
        order.truncate(end);
        order.drain(..self.range.start.min(end));
        B::seed(&self.device, seed.rotate_left(32));
        Box::new(EpochIter {
            loader: self,
            items,
            order,
            done: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.range.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(self.with(self.range.clone(), device.clone()))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, O>> {
        let from = self.range.start;
        Arc::new(self.with(from + start..from + end, self.device.clone()))
    }
}

/// The run's settings (compared when resuming) and what it has done, as of its last epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunState {
    /// The settings, files and data sizes of the run: a resumed run must have the same.
    pub run: serde_json::Value,
    /// The figures of the epochs done.
    pub history: History,
}

impl RunState {
    /// Writes the state into the run's working directory, atomically.
    pub(crate) fn write(&self, scratch: &Path) -> Result<(), FineTuneError> {
        let path = scratch.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| FineTuneError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        focal_backend::files::write_atomic(&path, &json).map_err(|e| FineTuneError::File {
            path,
            reason: e.to_string(),
        })
    }

    /// The state a killed run left in `scratch`, if it finished an epoch; refused when its
    /// settings are not `run`'s (the first difference is named).
    pub(crate) fn read(
        scratch: &Path,
        run: &serde_json::Value,
    ) -> Result<Option<Self>, FineTuneError> {
        let path = scratch.join(STATE_FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let state: Self = serde_json::from_slice(&bytes).map_err(|e| FineTuneError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(difference) = first_difference("", &state.run, run) {
            return Err(FineTuneError::Resume(format!(
                "the killed run in {} {difference}; resume it with the same settings, or \
                 start again without --resume",
                scratch.display()
            )));
        }
        Ok(Some(state))
    }
}

/// Where `was` and `now` first differ, in words.
fn first_difference(at: &str, was: &serde_json::Value, now: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match (was, now) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                first_difference(
                    &path,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                )
            })
        }
        _ if was == now => None,
        _ => Some(format!("had {at} = {was}, this run has {now}")),
    }
}

/// Whether all of `epoch`'s checkpoint files are in `scratch` (each is complete: they are
/// renamed into place).
pub(crate) fn has_checkpoint(scratch: &Path, epoch: usize) -> bool {
    let dir = scratch.join("checkpoint");
    CHECKPOINT_FILES
        .iter()
        .all(|name| dir.join(format!("{name}-{epoch}.mpk")).is_file())
}

/// The last epoch, at most `epochs`, with a complete checkpoint in `scratch`; 0 when none has.
pub(crate) fn last_checkpoint(scratch: &Path, epochs: usize) -> usize {
    (1..=epochs)
        .rev()
        .find(|&epoch| has_checkpoint(scratch, epoch))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[derive(Clone)]
    struct Ids;

    impl Batcher<NdArray, usize, Vec<usize>> for Ids {
        fn batch(&self, items: Vec<usize>, _device: &burn::tensor::Device<NdArray>) -> Vec<usize> {
            items
        }
    }

    fn epoch(loader: &dyn DataLoader<NdArray, Vec<usize>>) -> Vec<usize> {
        loader.iter().flatten().collect()
    }

    /// Epoch `e`'s order is the same whether the loader started at epoch 1 or resumes at `e`;
    /// epochs differ from each other.
    #[test]
    fn an_epoch_replays_the_same_order() {
        let device = Default::default();
        let make = |done| {
            EpochLoader::<NdArray, usize, Vec<usize>>::new(
                Arc::new(InMemory((0..50).collect())),
                Arc::new(Ids),
                8,
                7,
                done,
                device,
            )
        };
        let fresh = make(0);
        let orders: Vec<Vec<usize>> = (0..3).map(|_| epoch(&fresh)).collect();
        assert_ne!(orders[0], orders[1]);
        let mut sorted = orders[2].clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        let resumed = make(2).to_device(&device);
        assert_eq!(epoch(resumed.as_ref()), orders[2]);
        // Two replicas' slices split each epoch's order between them.
        let (first, second) = (make(0).slice(0, 25), make(0).slice(25, 50));
        for order in &orders[..2] {
            assert_eq!(epoch(first.as_ref()), order[..25]);
            assert_eq!(epoch(second.as_ref()), order[25..]);
        }
    }

    /// A checkpoint set counts only when every file of the epoch is in place; a temporary file
    /// being written does not count.
    #[test]
    fn only_complete_checkpoints_count() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = dir.path().join("checkpoint");
        std::fs::create_dir_all(&checkpoints).unwrap();
        for name in CHECKPOINT_FILES {
            std::fs::write(checkpoints.join(format!("{name}-1.mpk")), b"x").unwrap();
        }
        std::fs::write(checkpoints.join("model-2.mpk"), b"x").unwrap();
        std::fs::write(checkpoints.join("optim-2.mpk"), b"x").unwrap();
        std::fs::write(checkpoints.join(".scheduler-2.mpk.mpk"), b"x").unwrap();
        assert_eq!(last_checkpoint(dir.path(), 3), 1);
        assert_eq!(last_checkpoint(dir.path(), 0), 0);
    }

    #[test]
    fn differences_are_named() {
        let was = serde_json::json!({"config": {"epochs": 3, "seed": 1}, "train": "a.csv"});
        let now = serde_json::json!({"config": {"epochs": 4, "seed": 1}, "train": "a.csv"});
        assert_eq!(
            first_difference("", &was, &now).unwrap(),
            "had config.epochs = 3, this run has 4"
        );
        assert_eq!(first_difference("", &was, &was), None);
    }
}

"""The grain input pipeline: `build(config, split, process_index, process_count)` -> batches of numpy arrays.

A batch is a dict:
  image   uint8 (B, size, size, 3)    label int32 (B,)           index int32 (B,), -1 for padding
  box     float32 (B, 4) x0 y0 x1 y1   parts float32 (B, P, 2)    mask bool (B,): counts in loss and metrics
where B is this process's share of the global batch; 'parts' only where the source has part points (and box
is NaN where it has no boxes); 'attributes' int32 (B, T) only where the source has multi-task attributes.
Training: shuffled and repeated without end, the last partial batch of an epoch dropped. Evaluation: one pass in
order, the last batch padded with mask=False examples, so that no example is dropped and every batch has the same
shape (one compilation).

An image that cannot be read becomes a blank example with mask=False (the batch keeps its static shape
for jit), is counted, and is reported with its file name at the end of the epoch; it never stops the run. (A split
in which no image at all can be decoded is refused by build() up front.)
Everything random derives from (config.seed, position in the global stream, whatever the number of processes), so
two pipelines with the same seed give the same batches, and a pipeline restored with set_state() continues exactly
where the saved one was.
"""

from __future__ import annotations

import atexit
import gc
import logging
import weakref

import grain
import numpy as np
from absl import flags

from data_pipelines import transforms
from data_pipelines.sources.base import DataError, Source, check_decodable, check_nonempty, read_error
from data_pipelines.sources.synthetic import SyntheticBirds

log = logging.getLogger(__name__)


def open_source(config, split: str) -> Source:
  """The data source that config.data names, for one split."""
  d = config.data
  top = d.top_classes
  if top:
    from data_pipelines.sources.folders import folder_source_class

    if d.source != "folder" or not folder_source_class(d.name).makes_split:
      what = f"data.name={d.name!r}" if d.source == "folder" else f"data.source={d.source!r}"
      raise DataError(
        f"data.top_classes={top}: only the data sets that may ship without a fixed class list and "
        f"split (data.source='folder' with data.name='folder' or 'landmarks') keep their largest "
        f"classes, not {what}: set --config.data.top_classes=0"
      )
  if d.source == "synthetic":
    s = d.synthetic
    return SyntheticBirds(
      split,
      num_examples=s.num_train if split == "train" else s.num_test,
      resolution=s.resolution or d.resize_size,
      num_classes=d.num_classes,
      num_parts=s.num_parts,
      seed=config.seed,
      stripe=s.stripe,
    )
  if d.source == "folder":
    from data_pipelines.sources.folders import folder_source_class

    cls = folder_source_class(d.name)
    options = {"level": d.level} if cls.name == "aircraft" else {}
    if cls.makes_split:
      options.update(
        val_fraction=d.split.val_fraction, test_fraction=d.split.test_fraction, seed=d.split.seed, top_classes=top
      )
    return cls(d.root, split, **options)
  if d.source == "tfds":
    from data_pipelines.sources.tfds_source import TFDSSource

    return TFDSSource(d.name, split, data_dir=d.root)
  raise DataError(f"Unknown data.source {d.source!r}; use 'synthetic', 'folder' or 'tfds'.")


class Prepare(grain.transforms.RandomMap):
  """Stream position -> finished example: read, decode, augment; unreadable -> blank with mask=False."""

  def __init__(self, source: Source, aug: transforms.Augment, training: bool):
    self.source, self.aug, self.training = source, aug, training

  def finish(self, ex: dict, attributes=None) -> dict:
    # No zero-size 'parts' arrays: grain's worker processes cannot put them in shared memory.
    if not self.source.num_parts:
      del ex["parts"]
    if self.source.attribute_classes:
      n = len(self.source.attribute_classes)
      ex["attributes"] = np.zeros(n, np.int32) if attributes is None else attributes
    return ex

  def blank(self, index: int, corrupt: bool) -> dict:
    n, p = self.aug.size, self.source.num_parts
    return self.finish(
      {
        "image": np.zeros((n, n, 3), np.uint8),
        "label": np.int32(0),
        "index": np.int32(index),
        "box": np.full(4, np.nan, np.float32),
        "parts": np.full((p, 2), np.nan, np.float32),
        "mask": np.bool_(False),
        "corrupt": np.bool_(corrupt),
      }
    )

  def random_map(self, index, rng: np.random.Generator):
    index = int(index)
    if index >= len(self.source):  # evaluation padding
      return self.blank(-1, corrupt=False)
    try:
      ex = self.source[index]
      image = self.source.load_image(ex["image"])
    except Exception as e:  # noqa: BLE001 - a missing or unreadable file is skipped, whatever the decoder raised
      log.debug("unreadable example %d (%s): %s", index, self.source.describe(index), e)
      return self.blank(index, corrupt=True)
    if self.training:
      image, box, parts = transforms.train(image, ex["box"], ex["parts"], self.aug, rng)
    else:
      image, box, parts = transforms.evaluate(image, ex["box"], ex["parts"], self.aug, rng)
    return self.finish(
      {
        "image": image,
        "label": np.int32(ex["label"]),
        "index": np.int32(index),
        "box": box,
        "parts": parts,
        "mask": np.bool_(True),
        "corrupt": np.bool_(False),
      },
      ex.get("attributes"),
    )


class BalancedIndex(grain.transforms.Map):
  """Stream position -> example index with every class equally likely: per epoch, a class uniformly,
  then an example of that class uniformly (with replacement), from rng(seed, epoch)."""

  def __init__(self, labels: np.ndarray, seed: int):
    self.labels, self.seed = np.asarray(labels), seed
    self.by_class = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
    self._epoch, self._order = -1, None

  def map(self, position):
    epoch, i = divmod(int(position), len(self.labels))
    if epoch != self._epoch:
      rng = np.random.default_rng([self.seed, epoch])
      classes = rng.integers(len(self.by_class), size=len(self.labels))
      self._order = np.array([m[rng.integers(len(m))] for m in (self.by_class[c] for c in classes)])
      self._epoch = epoch
    return self._order[i]


def class_sample(labels, count: int, seed: int) -> np.ndarray:
  """Indices of `count` examples (all, if fewer) spread over every class: the classes in a random order, one random
  example of each in turn, round after round. Real data sets are stored by class, so the first files of a split
  are a few classes: what is computed from a sample (MA-CNN's channel groups) must see them all."""
  labels = np.asarray(labels)
  rng = np.random.default_rng([seed, 7])
  members = [rng.permutation(np.flatnonzero(labels == c)) for c in rng.permutation(np.unique(labels))]
  rounds = max((len(m) for m in members), default=0)
  order = [m[r] for r in range(rounds) for m in members if r < len(m)]
  return np.asarray(order[:count], np.int64)


class _Pick(grain.transforms.Map):
  """Position in an evaluation pass over chosen examples -> their index (past the last: padding, len(source))."""

  def __init__(self, examples, padding: int):
    self.examples, self.padding = np.asarray(examples), padding

  def map(self, position):
    return self.examples[position] if position < len(self.examples) else self.padding


def sample(config, split: str, count: int) -> "Pipeline":
  """One evaluation pass (no augmentation) over `count` training-set examples spread over every class
  (class_sample), the same for every process."""
  source = open_source(config, split)
  return build(config, split, training=False, source=source, examples=class_sample(source.labels, count, config.seed))


def build(
  config,
  split: str,
  process_index: int = 0,
  process_count: int = 1,
  *,
  training: bool | None = None,
  source: Source | None = None,
  examples=None,
) -> "Pipeline":
  """The pipeline of one split for one process. training defaults to split == config.data.train_split.
  examples: an evaluation pass over these example indices only, in this order (sample())."""
  d = config.data
  training = split == d.train_split if training is None else training
  source = check_decodable(check_nonempty(source or open_source(config, split), split), split)
  if source.num_classes != d.num_classes:
    raise DataError(
      f"{source.name} has {source.num_classes} classes but data.num_classes={d.num_classes}: "
      f"set --config.data.num_classes={source.num_classes}."
    )
  global_batch = d.batch_size if training else d.eval_batch_size
  if global_batch % process_count:
    raise ValueError(f"batch size {global_batch} does not split evenly over {process_count} processes")
  batch = global_batch // process_count
  aug = transforms.Augment(
    resize=d.resize_size,
    size=d.image_size,
    flip=d.augment.flip,
    rotation=d.augment.rotation,
    brightness=d.augment.brightness,
    colour=d.augment.colour,
    pad=d.augment.pad,
    crop=d.augment.crop,
    crop_area=tuple(d.augment.crop_area),
    crop_ratio=tuple(d.augment.crop_ratio),
    eval_rotation=d.augment.eval_rotation,
  )
  n = len(source)
  if training:
    if d.balanced:  # an endless stream of positions, mapped to class-balanced example indices
      ds = grain.MapDataset.range(2**62).map(BalancedIndex(source.labels, config.seed))
    else:
      ds = grain.MapDataset.range(n).seed(config.seed).shuffle().repeat()
    per_process = n // process_count
    if per_process < batch:
      raise DataError(
        f"The {split!r} split has {n} examples, fewer than one batch of {global_batch}: lower data.batch_size."
      )
    steps_per_epoch = per_process // batch
  else:
    count = n if examples is None else len(examples)
    padded = -(-count // global_batch) * global_batch
    ds = grain.MapDataset.range(padded)
    if examples is not None:
      ds = ds.map(_Pick(examples, n))
    steps_per_epoch = padded // global_batch
  # Each example's random augmentation is drawn from its position in the global stream, before the stream is shared
  # out (a lazy map: each process prepares only its share): drawn after, the processes' k-th examples had the same
  # crop and flip, and a run's augmentation changed with its number of processes.
  ds = ds.seed(config.seed + 1).random_map(Prepare(source, aug, training))[process_index::process_count]
  return Pipeline(ds, source, split, training, batch, global_batch, steps_per_epoch, d.num_workers)


_LIVE = weakref.WeakSet()


def _examples_to_batches(state, batch: int):
  """A grain iterator state whose positions count examples -> the same positions in batches (every position a
  saved pipeline reached was at a batch boundary, in the main process and in each decoding process alike)."""
  if isinstance(state, dict):
    return {k: v // batch if k == "next_index" else _examples_to_batches(v, batch) for k, v in state.items()}
  if isinstance(state, list):
    return [_examples_to_batches(v, batch) for v in state]
  return state


@atexit.register
def _close_all():
  # grain's prefetch iterators misbehave when garbage-collected during interpreter shutdown: close them first.
  for p in list(_LIVE):
    p.close()
  gc.collect()


PREFETCH_BATCHES = 4  # batches read ahead in the main process, or in each decoding process


class Pipeline:
  """Iterate for batches; get_state()/set_state() save and restore the position exactly (JSON-able)."""

  def __init__(self, dataset, source, split, training, batch, global_batch, steps_per_epoch, num_workers):
    self.source, self.split, self.training = source, split, training
    self.batch_size, self.global_batch_size, self.steps_per_epoch = batch, global_batch, steps_per_epoch
    self._dataset, self._workers = dataset, num_workers
    self._iter, self.step = None, 0
    self.skipped: list[str] = []  # the unreadable examples of each epoch so far, by description
    self._epoch_skipped: list[int] = []
    _LIVE.add(self)

  def _new_iter(self):
    self.close()
    # Batches are formed on the indexable dataset, before anything is shared out: decoding processes then take
    # whole batches in turn (process k: batches k, k + N, ...) and their output, interleaved, is the same
    # sequence of batches as without them. (Batching each process's share of the examples instead gave ragged
    # evaluation batches and training epochs that were not passes over the data.) Threads read and augment
    # four batches at once (PIL releases the GIL while decoding and resampling).
    ds = self._dataset.batch(self.batch_size, drop_remainder=self.training)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=PREFETCH_BATCHES))
    if self._workers:
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; we do not use absl's parser
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._workers))
    self._iter, self.step, self._epoch_skipped = iter(ds), 0, []

  def __iter__(self):
    if self._iter is None or not self.training:  # evaluation: a fresh pass each time
      self._new_iter()
    return self

  def __next__(self) -> dict:
    if self._iter is None:
      self._new_iter()
    try:
      batch = next(self._iter)
    except StopIteration:
      self._report()
      raise
    # Plain arrays: the workers' shared-memory buffers are released now, not at interpreter shutdown.
    batch = {k: np.array(v) for k, v in batch.items()}
    self.step += 1
    self._epoch_skipped += batch["index"][batch.pop("corrupt")].tolist()
    if self.training and self.step % self.steps_per_epoch == 0:
      self._report()
    return batch

  def _report(self):
    if self._epoch_skipped:
      # Each file once. A training epoch (steps_per_epoch batches of the endless stream) straddles two shuffled
      # passes when the split is not a whole number of batches (the last examples of one pass open the next
      # epoch), and balanced sampling draws with replacement: a file can be read twice in one epoch.
      names = [self.source.describe(i) for i in dict.fromkeys(self._epoch_skipped)]
      self.skipped += names
      what = f"epoch {self.step // self.steps_per_epoch}" if self.training else "the pass"
      reads = len(self._epoch_skipped)
      # Why, for the first: read again here (the decoding processes keep their exceptions), once per report.
      why = read_error(self.source, self._epoch_skipped[0])
      log.warning(
        "%s split: skipped %d unreadable image(s)%s in %s: %s.%s",
        self.split,
        len(names),
        f" ({reads} reads)" if reads != len(names) else "",
        what,
        ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
        f" The first could not be read: {why}" if why else "",
      )
    self._epoch_skipped = []

  def get_state(self) -> dict:
    if self._iter is None:
      self._new_iter()
    return {
      "grain": self._iter.get_state(),
      "step": self.step,
      "epoch_skipped": list(self._epoch_skipped),
      "positions": "batches",
    }

  def set_state(self, state: dict) -> None:
    self._new_iter()
    grain_state = state["grain"]
    if state.get("positions") != "batches":  # saved when grain's positions counted examples (before 2026-11-30)
      grain_state = _examples_to_batches(grain_state, self.batch_size)
    self._iter.set_state(grain_state)
    self.step, self._epoch_skipped = state["step"], list(state["epoch_skipped"])

  def close(self):
    if self._iter is not None and hasattr(self._iter, "close"):
      self._iter.close()
    self._iter = None

  def __len__(self):
    return self.steps_per_epoch

"""Pretraining input: the tf.data reader of TFRecord shards, a synthetic source, global batches.

    it = make_pretraining_iterator("shards/train-*.tfrecord", batch_size=128, seq_length=128, seed=0)
    batch = next(it)                   # dict of int32 numpy [batch, seq]: input_ids,
                                       # attention_mask, token_type_ids (this host's part)
    global_batch = to_global_batch(batch, batch_sharding)   # dict of global jax.Arrays

`batch_size` is per host. Each host reads its own files (`process_index` of
`process_count`, default from jax), or its own records when there are fewer files than
hosts, so hosts never see the same example.

Iterator state, for exact resume with checkpoints: every process calls
`it.save(directory)` with the same directory (e.g. next to the model checkpoint of that
step); each writes only its own files `data_iterator.process_<i>-of-<n>.*`. To resume,
build the iterator again with the same arguments and call `it.restore(directory)`: the
following batches are the ones an uninterrupted iterator would have produced. The
tf.data state includes the shuffle buffer, so its size on disk grows with
`shuffle_buffer * seq_length`.

TensorFlow is imported only inside the functions that read shards: `make_synthetic_iterator`
works on machines without it.
"""

import functools
import json
import os
import re
from typing import Any, Iterator

import numpy as np
from etils import epath

from data_pipelines import files

# The int32 [batch, seq] arrays every network reads: what a pretraining batch and a
# fine-tuning task's features hold (whole-word masking adds "word_starts").
FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids")
WORD_STARTS = "word_starts"  # optional feature and batch key, for whole-word masking
# Shard features use ELECTRA's names; batches use the model's.
_FEATURE_TO_BATCH_KEY = {"input_ids": "input_ids", "input_mask": "attention_mask", "segment_ids": "token_type_ids"}
STATE_PREFIX = "data_iterator"


def _process_topology(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # only when the caller did not say; keeps tests and tools jax-free

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
    return process_index, process_count


def state_prefix(directory: str, process_index: int, process_count: int) -> str:
    """Where process `process_index` keeps its iterator state inside `directory`."""
    return os.path.join(directory, f"{STATE_PREFIX}.process_{process_index:05d}-of-{process_count:05d}")


def list_shards(file_pattern: str) -> list[str]:
    """Sorted files matching a glob or a comma-separated list of globs (local or gs://);
    local ones absolute, because a saved tf.data position holds the path of the file it was
    reading, which a resume from another directory must still find."""
    import tensorflow as tf

    files = sorted(
        {
            f if "://" in f else os.path.abspath(f)
            for pattern in file_pattern.split(",")
            if pattern.strip()
            for f in tf.io.gfile.glob(pattern.strip())
        }
    )
    if not files:
        raise FileNotFoundError(
            f"no shard matches {file_pattern!r}; build them with "
            "`python -m data_pipelines.build_shards` or fix the pattern"
        )
    return files


def shard_seq_length(path: str, word_starts: bool = False) -> int:
    """Length of `input_ids` in the first record of a shard; with `word_starts`, fails if
    the shard lacks that feature (built before whole-word masking)."""
    import tensorflow as tf

    try:
        records = list(tf.data.TFRecordDataset(path).take(1))
    except tf.errors.DataLossError as e:
        raise ValueError(
            f"{path} is not a TFRecord shard ({e.message.splitlines()[0]}); the training and held-out "
            "patterns must match only the *.tfrecord files of build_shards"
        ) from None
    for record in records:
        features = tf.train.Example.FromString(record.numpy()).features.feature
        missing = [name for name in _FEATURE_TO_BATCH_KEY if name not in features]
        if missing:
            raise ValueError(f"shard {path} lacks features {missing}; it was not written by build_shards")
        if word_starts and WORD_STARTS not in features:
            raise ValueError(
                f"shard {path} has no {WORD_STARTS} feature (built by an older version), which "
                "objective.whole_word_masking needs; rebuild the shards (prepare_data with --config.rebuild=True, or "
                "build_shards into a new directory) or set --config.objective.whole_word_masking=False"
            )
        return len(features["input_ids"].int64_list.value)
    raise ValueError(f"shard {path} is empty; rebuild it")


def _damaged_shard(paths: list[str]) -> str | None:
    """The first of `paths` whose records do not all read back (read in full: only after
    tf.data reported a damaged record, which it does without naming the file)."""
    import tensorflow as tf

    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.DataLossError:
            return path
    return None


class InputsChangedError(ValueError):
    """The files being read are not those a saved input position was taken over."""

    def __init__(self, message: str, changes: str):
        super().__init__(message)
        self.changes = changes  # "missing: a, b; new: c"


class PretrainingIterator:
    """Batches from TFRecord shards, with save/restore of the exact tf.data position."""

    def __init__(self, dataset: Any, process_index: int, process_count: int, files: list[str] = ()):
        self._iterator = iter(dataset)
        self.process_index, self.process_count = process_index, process_count
        self.files = list(files)  # every host's, sorted: the position is one into all of them

    @functools.cached_property
    def file_sizes(self) -> dict[str, int]:
        """{name: bytes} of the files read: what a saved position depends on, wherever they
        lie (read once, not at every save)."""
        import tensorflow as tf

        return {os.path.basename(path): int(tf.io.gfile.stat(path).length) for path in self.files}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        import tensorflow as tf

        try:
            batch = next(self._iterator)
        except tf.errors.DataLossError as error:  # TF names neither the file nor the fix
            raise ValueError(
                f"{_damaged_shard(self.files) or 'a shard'} is damaged ({error.message.splitlines()[0]}), e.g. "
                "truncated by an interrupted copy; copy it again or rebuild it with build_shards"
            ) from None
        return {key: value.numpy() for key, value in batch.items()}

    def _checkpoint(self):
        import tensorflow as tf

        return tf.train.Checkpoint(iterator=self._iterator)

    def save(self, directory: str) -> str:
        """Writes this process's iterator state into `directory`; returns its path prefix."""
        import tensorflow as tf

        prefix = state_prefix(directory, self.process_index, self.process_count)
        try:
            tf.io.gfile.makedirs(directory)  # local or gs://
            files.write_json(prefix + ".files.json", sorted(self.file_sizes.items()))
            return self._checkpoint().write(prefix)
        except tf.errors.OpError as error:  # e.g. ResourceExhaustedError on a full disk
            raise OSError(f"could not write the input position to {directory}: {error.message}") from None

    def restore(self, directory: str) -> None:
        """Continues from the state that `save(directory)` wrote for this process."""
        import tensorflow as tf

        prefix = state_prefix(directory, self.process_index, self.process_count)
        if not tf.io.gfile.exists(prefix + ".index"):
            raise FileNotFoundError(
                f"no iterator state for process {self.process_index} of "
                f"{self.process_count} at {prefix}.index; was it saved with this "
                "process count?"
            )
        self._check_same_files(prefix)
        try:
            self._checkpoint().read(prefix).assert_consumed()
        except tf.errors.NotFoundError as error:
            missing = re.search(r"from checkpoint: (\S+?);", str(error))
            if not missing or os.path.isabs(missing.group(1)) or "://" in missing.group(1):
                raise
            # Saved by a version that kept the start directory's relative paths.
            raise InputsChangedError(
                f"the saved input position ({prefix}) reads {missing.group(1)}, a path relative to the directory "
                "the run was started in; resume from there, or pass --config.data.reset_iterator=True to read "
                "the files afresh from the saved step",
                f"relative path {missing.group(1)}",
            ) from error

    def _check_same_files(self, prefix: str) -> None:
        """A position in other files (shards deleted, added or rebuilt) cannot be restored:
        tf.data would fail with an internal error, or read on from a wrong place."""
        saved_path = epath.Path(prefix + ".files.json")
        if not saved_path.exists():  # saved before the files were recorded
            return
        saved = {name: size for name, size in files.read_json(saved_path)}
        now = self.file_sizes
        if saved == now:
            return

        def listed(names):
            names = sorted(names)
            return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")

        changes = [
            f"{label}: {listed(names)}"
            for label, names in (
                ("missing", saved.keys() - now.keys()),
                ("new", now.keys() - saved.keys()),
                ("of another size", {n for n in saved.keys() & now.keys() if saved[n] != now[n]}),
            )
            if names
        ]
        raise InputsChangedError(
            f"the saved input position ({prefix}) is one in {len(saved)} training files, but "
            f"{len(now)} match now ({'; '.join(changes)}). Put the files back as they were, or pass "
            "--config.data.reset_iterator=True to read the current ones afresh from the saved step",
            "; ".join(changes),
        )


def make_pretraining_iterator(
    file_pattern: str,
    *,
    batch_size: int,
    seq_length: int,
    seed: int,
    shuffle_buffer: int = 10_000,
    repeat: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    cycle_length: int = 8,
    drop_remainder: bool = True,
    prefetch: int = 2,
    word_starts: bool = False,
) -> PretrainingIterator:
    """The per-host tf.data pipeline: list, shard by host, interleave, shuffle, repeat, batch.

    `shuffle_buffer=0` reads in file order (for evaluation). With `repeat=True` every
    epoch is reshuffled (deterministically for `seed`). `drop_remainder=False` keeps a
    last partial batch (only sensible with repeat=False on one host). `word_starts` adds
    the shards' word_starts feature to the batches (whole-word masking).
    """
    import tensorflow as tf

    process_index, process_count = _process_topology(process_index, process_count)
    files = list_shards(file_pattern)
    for path in files:  # one record of each: a stray file fails here, named, not mid-run
        shard_length = shard_seq_length(path, word_starts)
        if shard_length != seq_length:
            raise ValueError(
                f"seq_length={seq_length} was requested but the shard {path} (of {file_pattern}) holds "
                f"examples of length {shard_length}; set the sequence length to {shard_length} or "
                f"rebuild the shards with --max_seq_length={seq_length}"
            )
    dataset = tf.data.Dataset.from_tensor_slices(files)
    # With enough files each host reads whole files (cheap); otherwise every host reads all
    # files and keeps every process_count-th record.
    shard_by_file = len(files) >= process_count
    if shard_by_file:
        dataset = dataset.shard(process_count, process_index)
    if shuffle_buffer:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if not shard_by_file:
        dataset = dataset.shard(process_count, process_index)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed + 1 + process_index, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    feature_to_key = {**_FEATURE_TO_BATCH_KEY, **({WORD_STARTS: WORD_STARTS} if word_starts else {})}
    feature_spec = {name: tf.io.FixedLenFeature([seq_length], tf.int64) for name in feature_to_key}

    def parse(serialized):  # [batch] strings -> dict of [batch, seq] int32
        features = tf.io.parse_example(serialized, feature_spec)
        return {feature_to_key[name]: tf.cast(value, tf.int32) for name, value in features.items()}

    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.prefetch(prefetch)
    return PretrainingIterator(dataset, process_index, process_count, files)


class SyntheticIterator:
    """Random token batches in the pretraining format; numpy only (benchmarks, no-TF machines).

    Batch k of process p is a pure function of (seed, p, k), so save/restore is just the
    step counter. Each row is `[CLS] A [SEP] B [SEP]` of full length with ids drawn
    uniformly from the non-special range [first_regular_id, vocab_size).
    """

    def __init__(
        self,
        *,
        batch_size: int,
        seq_length: int,
        vocab_size: int,
        seed: int,
        process_index: int,
        process_count: int,
        cls_id: int = 2,
        sep_id: int = 3,
        first_regular_id: int = 5,
        word_starts: bool = False,
    ):
        if seq_length < 3 or vocab_size <= first_regular_id:
            raise ValueError(
                f"seq_length={seq_length} (need >= 3) / vocab_size={vocab_size} "
                f"(need > {first_regular_id}) too small for synthetic batches"
            )
        self.batch_size, self.seq_length, self.vocab_size, self.seed = batch_size, seq_length, vocab_size, seed
        self.process_index, self.process_count = process_index, process_count
        self._cls_id, self._sep_id, self._first_regular_id = cls_id, sep_id, first_regular_id
        self._word_starts = word_starts
        self.step = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.process_index, self.step])
        self.step += 1
        shape = (self.batch_size, self.seq_length)
        input_ids = rng.integers(self._first_regular_id, self.vocab_size, shape, dtype=np.int32)  # [batch, seq]
        middle = self.seq_length // 2
        input_ids[:, 0] = self._cls_id
        input_ids[:, middle] = self._sep_id
        input_ids[:, -1] = self._sep_id
        token_type_ids = np.zeros(shape, np.int32)
        token_type_ids[:, middle + 1 :] = 1
        batch = {"input_ids": input_ids, "attention_mask": np.ones(shape, np.int32), "token_type_ids": token_type_ids}
        if self._word_starts:  # words of 1.6 pieces on average, as in the embedded corpus
            batch[WORD_STARTS] = (rng.random(shape) < 0.6).astype(np.int32)
        return batch

    def save(self, directory: str) -> str:
        path = state_prefix(directory, self.process_index, self.process_count) + ".json"
        files.write_json(path, {"step": self.step, "seed": self.seed})  # local or gs://, no tensorflow
        return path

    def restore(self, directory: str) -> None:
        path = state_prefix(directory, self.process_index, self.process_count) + ".json"
        state = json.loads(epath.Path(path).read_text())
        if state["seed"] != self.seed:
            raise ValueError(
                f"iterator state at {path} was saved with seed={state['seed']}, "
                f"this iterator has seed={self.seed}; use the same seed to resume"
            )
        self.step = state["step"]


def make_synthetic_iterator(
    *,
    batch_size: int,
    seq_length: int,
    vocab_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    **kwargs,
) -> SyntheticIterator:
    """A `SyntheticIterator` (same interface as the shard reader, no tensorflow)."""
    process_index, process_count = _process_topology(process_index, process_count)
    return SyntheticIterator(
        batch_size=batch_size,
        seq_length=seq_length,
        vocab_size=vocab_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        **kwargs,
    )


def check_token_ids(batch: dict[str, np.ndarray], vocab_size: int, source: str) -> None:
    """Refuses a batch with a token id outside [0, vocab_size): the embedding lookup would
    read past the table and the loss turn NaN, silently."""
    ids = batch["input_ids"]
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise ValueError(
            f"token id {bad} in a batch of {source} is outside the model's vocabulary (ids 0 to "
            f"{vocab_size - 1}): the shards were built with another tokenizer. Set "
            "--config.model.vocab_size to that tokenizer's size, or --config.data.tokenizer so "
            "that it is checked at start-up"
        )


def to_global_batch(batch: dict[str, np.ndarray], sharding: Any) -> dict[str, Any]:
    """This host's batch -> global jax.Arrays laid out by `sharding` (batch on data axes)."""
    import jax

    return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in batch.items()}

"""Pretraining reader: per-host sharding, exact save/restore, synthetic source, global batches."""

import collections
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import build_shards as build_lib
from data_pipelines import default_corpus, pretraining, words
from data_pipelines import tokenizer as tokenizer_lib

SEQ = 32


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    corpus = str(root / "corpus.txt")
    default_corpus.write_default_corpus(corpus, max_documents=40)
    tokenizer = tokenizer_lib.train_sentencepiece(corpus, str(root / "spm.model"), vocab_size=300)
    build_lib.build_shards(
        corpus, str(root / "out"), tokenizer_path=tokenizer.path, max_seq_length=SEQ, num_shards=4, show_progress=False
    )
    return str(root / "out")


def all_records(pattern):
    """Every example in the shards as a tuple of input_ids, read with tf.train.Example."""
    import tensorflow as tf

    rows = []
    for path in sorted(glob.glob(pattern)):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            rows.append(tuple(tf.train.Example.FromString(record).features.feature["input_ids"].int64_list.value))
    return rows


def one_epoch(pattern, **kwargs):
    it = pretraining.make_pretraining_iterator(pattern, batch_size=1, seq_length=SEQ, seed=0, repeat=False, **kwargs)
    return [tuple(batch["input_ids"][0]) for batch in it]


@pytest.mark.parametrize("pattern_name", ["train-*.tfrecord", "train-00000-of-00004.tfrecord"])
def test_two_hosts_read_disjoint_halves_of_the_epoch(shard_dir, pattern_name):
    # 4 files: hosts split files; 1 file: hosts split records.
    pattern = f"{shard_dir}/{pattern_name}"
    expected = collections.Counter(all_records(pattern))
    host_0 = one_epoch(pattern, process_index=0, process_count=2)
    host_1 = one_epoch(pattern, process_index=1, process_count=2)
    assert host_0 and host_1
    # Multiset equality: nothing read twice (disjoint), nothing missed (the union is the epoch).
    assert collections.Counter(host_0) + collections.Counter(host_1) == expected
    assert abs(len(host_0) - len(host_1)) < 0.5 * sum(expected.values())


def test_batches_have_model_keys_and_types(shard_dir):
    it = pretraining.make_pretraining_iterator(
        f"{shard_dir}/*.tfrecord", batch_size=4, seq_length=SEQ, seed=1, process_index=0, process_count=1
    )
    batch = next(it)
    assert sorted(batch) == sorted(pretraining.FEATURE_KEYS)
    for value in batch.values():
        assert value.shape == (4, SEQ) and value.dtype == np.int32
    assert (batch["input_ids"][:, 0] == 2).all()
    np.testing.assert_array_equal(batch["attention_mask"], (batch["input_ids"] != 0).astype(np.int32))


def test_word_starts_are_read_when_asked_and_old_shards_are_named(shard_dir, tmp_path):
    import tensorflow as tf

    pattern = f"{shard_dir}/train-00000-of-00004.tfrecord"
    it = pretraining.make_pretraining_iterator(pattern, batch_size=2, seq_length=SEQ, seed=0, word_starts=True)
    batch = next(it)
    assert sorted(batch) == sorted((*pretraining.FEATURE_KEYS, "word_starts"))
    # The pieces' marks (sentencepiece: "▁" starts a word; specials start one), 0 on padding.
    tokenizer = tokenizer_lib.load_tokenizer(f"{shard_dir}/../spm.model")
    starts, ids = batch["word_starts"], batch["input_ids"]
    expected = np.where(batch["attention_mask"] > 0, words.piece_word_start_table(tokenizer)[ids], 0)
    np.testing.assert_array_equal(starts, expected)
    assert 0 < starts[ids > 4].mean() < 1
    # A shard of an older version (no word_starts) still loads without, and is named with.
    old = str(tmp_path / "old.tfrecord")
    with tf.io.TFRecordWriter(old) as writer:
        for record in tf.data.TFRecordDataset(pattern).as_numpy_iterator():
            example = tf.train.Example.FromString(record)
            del example.features.feature["word_starts"]
            writer.write(example.SerializeToString())
    assert len(one_epoch(old)) == len(one_epoch(pattern))
    with pytest.raises(ValueError, match=r"old.tfrecord has no word_starts feature .*whole_word_masking=False"):
        pretraining.make_pretraining_iterator(old, batch_size=2, seq_length=SEQ, seed=0, word_starts=True)


def test_shuffled_repeating_epochs_cover_the_data(shard_dir):
    pattern = f"{shard_dir}/*.tfrecord"
    num_records = len(all_records(pattern))
    it = pretraining.make_pretraining_iterator(
        pattern, batch_size=1, seq_length=SEQ, seed=3, shuffle_buffer=64, process_index=0, process_count=1
    )
    first_epoch = [tuple(next(it)["input_ids"][0]) for _ in range(num_records)]
    second_epoch = [tuple(next(it)["input_ids"][0]) for _ in range(num_records)]
    assert collections.Counter(first_epoch) == collections.Counter(all_records(pattern))
    assert collections.Counter(second_epoch) == collections.Counter(first_epoch)
    assert first_epoch != second_epoch  # reshuffled every epoch
    assert first_epoch != one_epoch(pattern, process_index=0, process_count=1, shuffle_buffer=0)


def test_save_restore_continues_exactly(shard_dir, tmp_path):
    pattern = f"{shard_dir}/*.tfrecord"

    def make():
        return pretraining.make_pretraining_iterator(
            pattern, batch_size=8, seq_length=SEQ, seed=5, shuffle_buffer=32, process_index=1, process_count=2
        )

    uninterrupted = make()
    interrupted = make()
    for _ in range(3):
        next(uninterrupted)
        next(interrupted)
    interrupted.save(str(tmp_path))
    assert glob.glob(f"{tmp_path}/data_iterator.process_00001-of-00002*")
    # Enough batches to cross an epoch boundary (and the reshuffle) after the save.
    num_records = len(all_records(pattern))
    expected = [next(uninterrupted) for _ in range(num_records // 16 + 4)]
    resumed = make()
    resumed.restore(str(tmp_path))
    for want in expected:
        got = next(resumed)
        for key in pretraining.FEATURE_KEYS:
            np.testing.assert_array_equal(got[key], want[key])
    fresh = next(make())["input_ids"]
    assert not np.array_equal(fresh, expected[0]["input_ids"])  # restore did something


def test_restore_without_state_names_the_file(shard_dir, tmp_path):
    it = pretraining.make_pretraining_iterator(
        f"{shard_dir}/*.tfrecord", batch_size=2, seq_length=SEQ, seed=0, process_index=0, process_count=1
    )
    with pytest.raises(FileNotFoundError, match="data_iterator.process_00000-of-00001"):
        it.restore(str(tmp_path))


def test_restore_over_other_files_is_refused_naming_them(shard_dir, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shard_dir, copy)

    def make():
        return pretraining.make_pretraining_iterator(
            f"{copy}/train-*.tfrecord", batch_size=2, seq_length=SEQ, seed=0, process_index=0, process_count=1
        )

    it = make()
    next(it)
    it.save(str(tmp_path / "state"))
    make().restore(str(tmp_path / "state"))  # the same files: restored
    os.remove(copy / "train-00003-of-00004.tfrecord")
    with open(copy / "train-00000-of-00004.tfrecord", "ab") as f:
        f.write(b"x")
    with pytest.raises(
        pretraining.InputsChangedError,
        match=r"one in 4 training files, but 3 match now \(missing: train-00003-of-00004.tfrecord; "
        r"of another size: train-00000-of-00004.tfrecord\).*--config.data.reset_iterator=True",
    ):
        make().restore(str(tmp_path / "state"))


def test_a_position_saved_from_relative_paths_restores_from_another_directory(shard_dir, tmp_path, monkeypatch):
    # A run started with relative paths and resumed elsewhere found every checkpoint
    # "unreadable": tf.data's saved position named the file relative to the start directory.
    start = tmp_path / "start"
    shutil.copytree(shard_dir, start / "shards")
    (tmp_path / "elsewhere").mkdir()

    def make(pattern):
        return pretraining.make_pretraining_iterator(
            pattern, batch_size=2, seq_length=SEQ, seed=0, shuffle_buffer=16, process_index=0, process_count=1
        )

    monkeypatch.chdir(start)
    it = make("shards/train-*.tfrecord")
    for _ in range(3):
        next(it)
    it.save(str(tmp_path / "state"))
    expected = next(it)["input_ids"]
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = make(f"{start}/shards/train-*.tfrecord")
    resumed.restore(str(tmp_path / "state"))
    np.testing.assert_array_equal(next(resumed)["input_ids"], expected)

    # A position saved by an older version, which kept the relative paths: named, with the fix.
    monkeypatch.chdir(start)
    real_list_shards = pretraining.list_shards
    monkeypatch.setattr(pretraining, "list_shards", lambda p: [os.path.relpath(f) for f in real_list_shards(p)])
    old = make("shards/train-*.tfrecord")
    next(old)
    old.save(str(tmp_path / "old_state"))
    monkeypatch.setattr(pretraining, "list_shards", real_list_shards)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(pretraining.InputsChangedError, match=r"reads shards/train-.*relative to the directory"):
        make(f"{start}/shards/train-*.tfrecord").restore(str(tmp_path / "old_state"))


def test_seq_length_mismatch_names_both(shard_dir):
    with pytest.raises(ValueError, match=rf"seq_length=128 .* length {SEQ}"):
        pretraining.make_pretraining_iterator(
            f"{shard_dir}/*.tfrecord", batch_size=2, seq_length=128, seed=0, process_index=0, process_count=1
        )
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        pretraining.make_pretraining_iterator(
            f"{shard_dir}/nothing-*", batch_size=2, seq_length=SEQ, seed=0, process_index=0, process_count=1
        )


def test_a_file_that_is_not_a_shard_is_named_before_training(shard_dir, tmp_path):
    stray = tmp_path / "train-00009.txt"
    stray.write_text("this is a text file, not a TFRecord shard\n")
    pattern = f"{shard_dir}/*.tfrecord,{stray}"
    with pytest.raises(ValueError, match=rf"{stray} is not a TFRecord shard .*match only the \*\.tfrecord files"):
        pretraining.make_pretraining_iterator(
            pattern, batch_size=2, seq_length=SEQ, seed=0, process_index=0, process_count=1
        )


def test_a_truncated_shard_is_named_when_reading_reaches_it(shard_dir, tmp_path):
    copies = tmp_path / "copied"
    shutil.copytree(shard_dir, copies)
    truncated = sorted(glob.glob(f"{copies}/train-*.tfrecord"))[2]
    with open(truncated, "r+b") as f:  # an interrupted copy: its first record intact, the rest cut
        f.truncate(os.path.getsize(truncated) // 2)
    with pytest.raises(ValueError, match=rf"{truncated} is damaged .*copy it again or rebuild it"):
        one_epoch(f"{copies}/train-*.tfrecord", process_index=0, process_count=1)


def test_a_tokenizer_other_than_the_shards_is_refused(shard_dir, tmp_path):
    # Another tokenizer of the same size was accepted, and the export shipped it.
    from configs import pretrain as recipes
    from data_pipelines import input_pipeline

    root = os.path.dirname(shard_dir)
    other = tokenizer_lib.train_sentencepiece(
        f"{root}/corpus.txt", str(tmp_path / "spm.model"), vocab_size=300, model_type="bpe"
    )
    config = recipes.pretraining_config("tiny")
    config.data.source, config.model.vocab_size = "tfrecord", 300
    config.data.train_files = config.data.eval_files = f"{shard_dir}/train-*.tfrecord"
    config.data.tokenizer = f"{root}/spm.model"
    input_pipeline.check_tokenizer(config)
    config.data.tokenizer = other.path
    with pytest.raises(ValueError, match=rf"data.tokenizer={other.path} is not the tokenizer the shards of "):
        input_pipeline.check_tokenizer(config)


@pytest.mark.integration
def test_synthetic_iterator_needs_no_tensorflow(tmp_path):
    script = (
        "import sys\n"
        "from data_pipelines import pretraining\n"
        "it = pretraining.make_synthetic_iterator(batch_size=2, seq_length=16, vocab_size=50, seed=0,"
        " process_index=0, process_count=1)\n"
        "batch = next(it)\n"
        f"it.save({str(tmp_path)!r})\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "print(batch['input_ids'].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "(2, 16)" in result.stdout


def test_synthetic_batches_and_resume(tmp_path):
    def make(index):
        return pretraining.make_synthetic_iterator(
            batch_size=4, seq_length=10, vocab_size=30, seed=9, process_index=index, process_count=2
        )

    it = make(0)
    batch = next(it)
    ids = batch["input_ids"]
    assert ids.dtype == np.int32 and ids.shape == (4, 10)
    assert (ids[:, 0] == 2).all() and (ids[:, 5] == 3).all() and (ids[:, -1] == 3).all()
    body = np.delete(ids, [0, 5, 9], axis=1)
    assert body.min() >= 5 and body.max() < 30
    assert batch["token_type_ids"][0].tolist() == [0] * 6 + [1] * 4
    assert not np.array_equal(next(make(1))["input_ids"], ids)  # hosts differ
    it.save(str(tmp_path))
    expected = [next(it)["input_ids"] for _ in range(3)]
    resumed = make(0)
    resumed.restore(str(tmp_path))
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["input_ids"], want)


def test_to_global_batch_round_trips():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    batch = next(
        pretraining.make_synthetic_iterator(
            batch_size=2 * jax.device_count(), seq_length=8, vocab_size=20, seed=0, process_index=0, process_count=1
        )
    )
    global_batch = pretraining.to_global_batch(batch, sharding)
    for key, value in batch.items():
        assert isinstance(global_batch[key], jax.Array)
        assert global_batch[key].sharding == sharding
        np.testing.assert_array_equal(np.asarray(global_batch[key]), value)

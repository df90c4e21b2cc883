"""Shard building: ELECTRA packing, determinism, resume after a kill, clear errors."""

import glob
import os
import random
import shutil

import numpy as np
import pytest

from data_pipelines import build_shards as build_lib
from data_pipelines import default_corpus, files
from data_pipelines import tokenizer as tokenizer_lib

MAX_LEN = 64


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    corpus = str(root / "corpus.txt")
    default_corpus.write_default_corpus(corpus, max_documents=60)
    tokenizer = tokenizer_lib.train_sentencepiece(corpus, str(root / "spm.model"), vocab_size=400)
    return corpus, tokenizer


def build(corpus, tokenizer, output_dir, **kwargs):
    settings = dict(tokenizer_path=tokenizer.path, max_seq_length=MAX_LEN, num_shards=4, seed=7, show_progress=False)
    return build_lib.build_shards(corpus, str(output_dir), **{**settings, **kwargs})


def read_records(pattern):
    """Parses the shards with tf.train.Example directly (not through our reader)."""
    import tensorflow as tf

    examples = []
    for path in sorted(glob.glob(pattern)):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            features = tf.train.Example.FromString(record).features.feature
            examples.append({k: list(features[k].int64_list.value) for k in features})
    return examples


def shard_bytes(output_dir):
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(f"{output_dir}/*.tfrecord"))}


def test_same_seed_gives_byte_identical_shards(corpus_and_tokenizer, tmp_path):
    corpus, tokenizer = corpus_and_tokenizer
    first = build(corpus, tokenizer, tmp_path / "a")
    build(corpus, tokenizer, tmp_path / "b")
    build(corpus, tokenizer, tmp_path / "c", seed=8)
    assert first["shards_built"] == 4 and first["examples"] > 20
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert shard_bytes(tmp_path / "a") != shard_bytes(tmp_path / "c")  # the seed matters


def test_parallel_build_matches_serial(corpus_and_tokenizer, tmp_path):
    corpus, tokenizer = corpus_and_tokenizer
    build(corpus, tokenizer, tmp_path / "serial", num_shards=2)
    build(corpus, tokenizer, tmp_path / "parallel", num_shards=2, num_processes=2)
    assert shard_bytes(tmp_path / "serial") == shard_bytes(tmp_path / "parallel")


def test_examples_are_well_formed(corpus_and_tokenizer, tmp_path):
    corpus, tokenizer = corpus_and_tokenizer
    summary = build(corpus, tokenizer, tmp_path / "s", num_eval_shards=1)
    train = read_records(f"{tmp_path}/s/train-*.tfrecord")
    held_out = read_records(f"{tmp_path}/s/eval-*.tfrecord")
    examples = train + held_out
    assert len(examples) == summary["examples"] and held_out
    content_tokens = 0
    for example in examples:
        ids, mask, segments = (np.array(example[k]) for k in ("input_ids", "input_mask", "segment_ids"))
        assert len(ids) == len(mask) == len(segments) == MAX_LEN
        num_real = int(mask.sum())
        assert mask.tolist() == [1] * num_real + [0] * (MAX_LEN - num_real)
        assert ids[0] == tokenizer.cls_id and ids[num_real - 1] == tokenizer.sep_id
        assert (ids[num_real:] == tokenizer.pad_id).all()
        seps = np.flatnonzero(ids == tokenizer.sep_id)
        assert len(seps) in (1, 2)
        # segment A (with [CLS] and its [SEP]) is 0, segment B (with its [SEP]) is 1, padding 0.
        expected_segments = np.zeros(MAX_LEN, int)
        if len(seps) == 2:
            expected_segments[seps[0] + 1 : seps[1] + 1] = 1
        assert segments.tolist() == expected_segments.tolist()
        assert not np.isin(ids[1 : num_real - 1], [0, 2, 4]).any()  # no [PAD]/[CLS]/[MASK] inside
        content_tokens += num_real - 1 - len(seps)
    assert summary["tokens"] == summary["tokens_in_shards"] == content_tokens
    assert summary["truncated_tokens"] == 0 and summary["lost_fraction"] < 0.01
    padding = 1 - sum(sum(e["input_mask"]) for e in examples) / (len(examples) * MAX_LEN)
    assert summary["padding_fraction"] == pytest.approx(padding, abs=1e-4)
    assert summary["documents"] == 60


class FixedDraws(random.Random):
    """random() always returns `value`: makes the 50% coin in packing deterministic."""

    def __init__(self, value):
        super().__init__(0)
        self.value = value

    def random(self):
        return self.value


def packed(sentences, draw, max_len=16):
    class Specials:
        cls_id, sep_id, pad_id = 2, 3, 0

    packing = build_lib.PackingConfig(max_seq_length=max_len, single_segment_prob=0.0, random_length_prob=0.0)
    builder = build_lib.ExampleBuilder(Specials, packing, FixedDraws(draw))
    # Word starts mark each sentence's first token, so they show where its pieces went.
    examples = [e for s in sentences for e in builder.add_sentence(s, [1] + [0] * (len(s) - 1))]
    examples += builder.end_document()
    firsts = {s[0] for s in sentences}
    for e in examples:
        assert [int(t in (2, 3, *firsts)) for t in e["input_ids"][: sum(e["input_mask"])]] == (
            e["word_starts"][: sum(e["input_mask"])]
        )
    return [e["input_ids"] for e in examples], [e["segment_ids"] for e in examples]


def test_packing_hand_computed():
    a, b, c = [10, 11, 12], [20, 21, 22, 23], [30, 31, 32, 33, 34]
    # Target for segment A is (16 - 3) // 2 = 6. `a` starts A; `b` would overflow A (7 >= 6),
    # B is empty, so a coin decides: draw 0.9 (>= 0.5) sends b to B, and c follows it.
    ids, segments = packed([a, b, c], draw=0.9)
    assert ids == [[2, *a, 3, *b, *c, 3, 0]]
    assert segments == [[0] * 5 + [1] * 10 + [0]]
    # Draw 0.1 (< 0.5) keeps b in A; then A (7) is over target, so c goes to B.
    ids, _ = packed([a, b, c], draw=0.1)
    assert ids == [[2, *a, *b, 3, *c, 3, 0]]
    # 13 content tokens fill the target (16 - 3): the example closes and the next sentences
    # open the next one (ELECTRA would have added 7, 8, 9 and then trimmed them away).
    ids, _ = packed([list(range(100, 113)), [70, 8, 9], [40, 41]], draw=0.9)
    assert ids == [[2, *range(100, 113), 3, 0], [2, 70, 8, 9, 40, 41, 3] + [0] * 9]


def test_a_sentence_longer_than_an_example_is_cut_and_carried_not_dropped():
    long_sentence = [110, *range(111, 140)]  # 30 tokens; 13 fit in an example of 16
    ids, _ = packed([[10, 11], long_sentence, [50, 51]], draw=0.9)
    # [10, 11] + 11 tokens fill the first example; the rest of the sentence carries on.
    assert ids[0] == [2, 10, 11, 3, *range(110, 121), 3]
    assert ids[1] == [2, *range(121, 134), 3, 0]
    assert ids[2] == [2, *range(134, 140), 3, 50, 51, 3] + [0] * 5
    content = [t for example in ids for t in example if t not in (0, 2, 3)]
    assert content == [10, 11, *long_sentence, 50, 51]


def test_resume_after_a_kill_gives_the_same_shards(corpus_and_tokenizer, tmp_path, monkeypatch):
    corpus, tokenizer = corpus_and_tokenizer
    build(corpus, tokenizer, tmp_path / "clean")
    real_build_one_shard = build_lib.build_one_shard
    built = []

    def dies_on_third_shard(job):
        if len(built) == 2:
            # Simulate a kill mid-write: a half-written temp file and no final file.
            with open(job.output_path + ".tmp", "wb") as f:
                f.write(b"half a record")
            raise KeyboardInterrupt("killed")
        built.append(job.slot)
        return real_build_one_shard(job)

    monkeypatch.setattr(build_lib, "build_one_shard", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        build(corpus, tokenizer, tmp_path / "resumed")
    finished = sorted(os.path.basename(p) for p in glob.glob(f"{tmp_path}/resumed/*.tfrecord"))
    assert finished == ["train-00000-of-00004.tfrecord", "train-00001-of-00004.tfrecord"]
    monkeypatch.setattr(build_lib, "build_one_shard", real_build_one_shard)
    summary = build(corpus, tokenizer, tmp_path / "resumed")
    assert (summary["shards_skipped"], summary["shards_built"]) == (2, 2)
    assert shard_bytes(tmp_path / "resumed") == shard_bytes(tmp_path / "clean")
    assert not glob.glob(f"{tmp_path}/resumed/*.tmp")
    clean_summary = build(corpus, tokenizer, tmp_path / "clean")  # all skipped: same totals
    assert clean_summary["examples"] == summary["examples"] and clean_summary["shards_built"] == 0


def test_resume_with_other_settings_is_refused(corpus_and_tokenizer, tmp_path):
    corpus, tokenizer = corpus_and_tokenizer
    build(corpus, tokenizer, tmp_path / "s", num_shards=2)
    with pytest.raises(ValueError, match=r"different settings or inputs \(max_seq_length changed"):
        build(corpus, tokenizer, tmp_path / "s", num_shards=2, max_seq_length=32)


def test_shards_of_changed_text_or_a_replaced_tokenizer_are_refused_not_reused(corpus_and_tokenizer, tmp_path):
    # build_config.json once recorded paths only, so a rerun after the text or
    # the tokenizer changed kept the old shards and exited 0.
    corpus = tmp_path / "corpus.txt"
    shutil.copyfile(corpus_and_tokenizer[0], corpus)
    tokenizer_path = tmp_path / "spm.model"
    shutil.copyfile(corpus_and_tokenizer[1].path, tokenizer_path)
    tokenizer = tokenizer_lib.load_tokenizer(str(tokenizer_path))
    build(str(corpus), tokenizer, tmp_path / "s", num_shards=2)
    assert build(str(corpus), tokenizer, tmp_path / "s", num_shards=2)["shards_skipped"] == 2  # unchanged: resumes
    text = corpus.read_text()
    corpus.write_text(text.replace("the", "a", 1))  # same files, other content
    with pytest.raises(ValueError, match=r"different settings or inputs \(inputs: \.\./corpus\.txt changed"):
        build(str(corpus), tokenizer, tmp_path / "s", num_shards=2)
    corpus.write_text(text)
    os.utime(corpus, ns=(0, 0))
    build(str(corpus), tokenizer, tmp_path / "t", num_shards=2)
    other = tokenizer_lib.train_sentencepiece(str(corpus), str(tmp_path / "other.model"), vocab_size=300)
    shutil.copyfile(other.path, tokenizer_path)  # replaced under the same name
    with pytest.raises(ValueError, match=r"\(tokenizer changed"):
        build(str(corpus), tokenizer, tmp_path / "t", num_shards=2)


def test_a_directory_built_before_fingerprints_is_reused_once_and_then_checked(corpus_and_tokenizer, tmp_path):
    import json

    corpus, tokenizer = corpus_and_tokenizer
    build(corpus, tokenizer, tmp_path / "s", num_shards=2)
    record = tmp_path / "s" / build_lib.BUILD_CONFIG_FILE
    saved = json.loads(record.read_text())
    fingerprinted = dict(saved)
    saved.update(inputs=[corpus], tokenizer=os.path.abspath(tokenizer.path))  # as older versions wrote it
    record.write_text(json.dumps(saved))
    assert build(corpus, tokenizer, tmp_path / "s", num_shards=2)["shards_skipped"] == 2
    assert json.loads(record.read_text()) == fingerprinted


def test_bad_inputs_fail_before_writing(corpus_and_tokenizer, tmp_path):
    _, tokenizer = corpus_and_tokenizer
    output = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="missing"):
        build(str(tmp_path / "missing*.txt"), tokenizer, output)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="has no text"):
        build(str(tmp_path / "empty.txt"), tokenizer, output)
    (tmp_path / "short.txt").write_text("One document.\n\nTwo documents.\n")
    with pytest.raises(ValueError, match="2 documents, fewer than the 4 shards"):
        build(str(tmp_path / "short.txt"), tokenizer, output)
    (tmp_path / "latin1.txt").write_bytes("Good line.\n\nCaesar's caf\u00e9.\n\nAnother.\n\nLast.\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt:3: invalid UTF-8"):
        build(str(tmp_path / "latin1.txt"), tokenizer, output, on_invalid_utf8="error")
    assert not output.exists()
    with pytest.raises(FileNotFoundError, match="nope.model"):
        build_lib.build_shards(str(tmp_path / "short.txt"), str(output), tokenizer_path=str(tmp_path / "nope.model"))
    assert not output.exists()


def test_files_that_are_not_utf8_text_are_refused_naming_them(tmp_path, corpus_and_tokenizer):
    _, tokenizer = corpus_and_tokenizer
    output = tmp_path / "out"
    (tmp_path / "program.txt").write_bytes(b"ELF header\n\x7fELF\x02\x01\x00\x00 code\nmore\n")
    with pytest.raises(ValueError, match=r"program.txt:2: a NUL byte, so not UTF-8 text"):
        build(str(tmp_path / "program.txt"), tokenizer, output, num_shards=1)
    latin1 = "".join(f"Caf\u00e9 number {i}.\n\n" for i in range(3)) + "Plain line.\n"
    (tmp_path / "latin1.txt").write_bytes(latin1.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: 3 of 7 lines are not valid UTF-8 \(more than 25%\)"):
        build(str(tmp_path / "latin1.txt"), tokenizer, output, num_shards=1)
    assert not list(output.glob("*.tfrecord"))


def test_invalid_utf8_lines_are_skipped_and_counted(tmp_path, corpus_and_tokenizer):
    _, tokenizer = corpus_and_tokenizer
    text = "Good line.\n\nCaesar's caf\u00e9 is Latin-1.\n\nAnother line.\r\n\r\nLast one.\n"
    (tmp_path / "latin1.txt").write_bytes(text.encode("latin-1"))
    # The skipped line is 22 bytes (not whitespace) of 51: over the 1% threshold, so the build fails after
    # writing the shard and the summary, and a rerun that accepts the loss reuses them.
    with pytest.raises(build_lib.DataLossError, match=r"43\.14% of the corpus.* 1 lines were invalid UTF-8"):
        build(str(tmp_path / "latin1.txt"), tokenizer, tmp_path / "out", num_shards=1)
    summary = build(str(tmp_path / "latin1.txt"), tokenizer, tmp_path / "out", num_shards=1, max_lost_fraction=0.5)
    assert summary["invalid_utf8_lines"] == 1 and summary["shards_skipped"] == 1
    assert summary["documents"] == 3  # the bad line's paragraph is gone, CRLF is handled
    decoded = [tokenizer.decode(e["input_ids"]) for e in read_records(f"{tmp_path}/out/*.tfrecord")]
    assert decoded == ["Good line.", "Another line.", "Last one."]


def test_prepare_data_default_corpus_end_to_end(tmp_path):
    """The one command: embedded corpus -> tokenizer -> shards the reader accepts; reruns resume."""
    from data_pipelines import prepare_data, pretraining

    result = prepare_data.prepare_data(
        str(tmp_path), vocab_size=2000, max_seq_length=MAX_LEN, num_shards=2, show_progress=False
    )
    assert result["vocab_size"] == 2000 and result["shards"]["documents"] > 1000
    assert "--config.model.vocab_size=2000" in result["config_flags"]
    tokenizer = tokenizer_lib.load_tokenizer(result["tokenizer"])
    tokenizer_lib.check_vocab_size(2000, tokenizer)
    batch = next(
        pretraining.make_pretraining_iterator(
            result["eval_files"], batch_size=4, seq_length=MAX_LEN, seed=0, process_index=0, process_count=1
        )
    )
    assert batch["input_ids"].max() < 2000
    assert all(len(tokenizer.decode(row).split()) >= 2 for row in batch["input_ids"])  # real text back
    again = prepare_data.prepare_data(
        str(tmp_path), vocab_size=2000, max_seq_length=MAX_LEN, num_shards=2, show_progress=False
    )
    assert again["shards"]["shards_built"] == 0 and again["shards"]["examples"] == result["shards"]["examples"]


def test_prepare_data_with_fewer_documents_than_shards_fails_before_writing(tmp_path):
    from data_pipelines import prepare_data

    (tmp_path / "short.txt").write_text("One document.\n\nTwo documents.\n\nThree.\n")
    out = tmp_path / "prepared"
    with pytest.raises(ValueError, match="3 documents, fewer than the 9 shards asked for"):
        prepare_data.prepare_data(str(out), inputs=str(tmp_path / "short.txt"), vocab_size=100, show_progress=False)
    assert not out.exists()  # no tokenizer trained, no settings recorded: the fixed rerun is not refused


def test_a_prepare_that_failed_before_building_anything_does_not_refuse_the_fixed_rerun(tmp_path, corpus_and_tokenizer):
    # The failed run's prepare_settings.json made the corrected rerun "prepared with other settings".
    from data_pipelines import prepare_data

    out = str(tmp_path / "prepared")

    def prepare(vocab_size):
        return prepare_data.prepare_data(
            out, inputs=corpus_and_tokenizer[0], vocab_size=vocab_size, num_shards=2, show_progress=False
        )

    with pytest.raises(ValueError, match=r"vocab_size"):
        prepare(vocab_size=100_000)  # more pieces than the corpus has
    assert os.listdir(out) == ["prepare_settings.json"]
    assert prepare(vocab_size=100)["vocab_size"] == 100


def test_prepare_data_refuses_other_settings_or_changed_inputs_unless_rebuilt(tmp_path, corpus_and_tokenizer):
    from data_pipelines import prepare_data

    corpus = tmp_path / "corpus.txt"
    shutil.copyfile(corpus_and_tokenizer[0], corpus)
    out = str(tmp_path / "prepared")

    def prepare(**kwargs):
        return prepare_data.prepare_data(
            out,
            inputs=str(corpus),
            max_seq_length=MAX_LEN,
            num_shards=2,
            show_progress=False,
            **{"vocab_size": 100, **kwargs},
        )

    first = prepare()
    assert prepare()["shards"]["shards_built"] == 0  # the same settings resume
    with pytest.raises(
        ValueError,
        match=r"prepared with other settings or inputs \(model_type, vocab_size "
        r"changed; .*--config.rebuild=True",
    ):
        prepare(vocab_size=120, model_type="bpe")
    with open(corpus, "a") as f:
        f.write("One more sentence at the end.\n")
    with pytest.raises(ValueError, match=r"\(inputs changed"):
        prepare()
    rebuilt = prepare(vocab_size=120, rebuild=True)
    assert rebuilt["vocab_size"] == 120 and rebuilt["shards"]["shards_built"] == 3
    assert tokenizer_lib.load_tokenizer(rebuilt["tokenizer"]).vocab_size == 120 != first["vocab_size"]
    # The old tokenizer and shards were moved aside, not deleted.
    [aside] = glob.glob(f"{out}/replaced-*")
    assert sorted(os.listdir(aside)) == ["prepare_settings.json", "shards", "spm.model"]
    assert tokenizer_lib.load_tokenizer(f"{aside}/spm.model").vocab_size == first["vocab_size"]


def test_prepare_data_rebuild_never_removes_the_tokenizer_it_was_given(tmp_path, corpus_and_tokenizer):
    # Re-sharding with --config.tokenizer=D/spm.model --config.rebuild=True
    # deleted D/spm.model, then failed because it was gone.
    from data_pipelines import prepare_data

    corpus, _ = corpus_and_tokenizer
    out = tmp_path / "prepared"
    prepare_data.prepare_data(str(out), inputs=corpus, vocab_size=100, num_shards=2, show_progress=False)
    model_bytes = (out / "spm.model").read_bytes()
    with pytest.raises(ValueError, match=r"refusing to remove .*prepared/spm.model: it is tokenizer .*new output_dir"):
        prepare_data.prepare_data(
            str(out),
            inputs=corpus,
            tokenizer=str(out / "spm.model"),
            max_seq_length=32,
            num_shards=2,
            show_progress=False,
            rebuild=True,
        )
    assert (out / "spm.model").read_bytes() == model_bytes and not glob.glob(f"{out}/replaced-*")
    (out / "shards" / "notes.txt").write_text("A corpus kept among the shards.\n")
    with pytest.raises(ValueError, match=r"refusing to remove .*prepared/shards: it holds the corpus"):
        prepare_data.prepare_data(
            str(out),
            inputs=f"{out}/shards/notes.txt",
            num_shards=1,
            num_eval_shards=0,
            rebuild=True,
            show_progress=False,
        )
    # The way the message suggests: a new output_dir naming the old tokenizer.
    again = prepare_data.prepare_data(
        str(tmp_path / "seq32"),
        inputs=corpus,
        tokenizer=str(out / "spm.model"),
        max_seq_length=32,
        num_shards=2,
        show_progress=False,
    )
    assert again["shards"]["examples"] > 0 and (out / "spm.model").read_bytes() == model_bytes


def test_prepare_data_into_the_folder_of_its_inputs_reads_only_the_inputs(tmp_path, corpus_and_tokenizer):
    # The inputs' glob was expanded again after spm.model and spm.vocab were written beside them.
    from data_pipelines import prepare_data

    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copyfile(corpus_and_tokenizer[0], folder / "corpus.txt")
    prepare_data.prepare_data(
        str(folder), inputs=f"{folder}/*", vocab_size=100, num_shards=2, max_seq_length=MAX_LEN, show_progress=False
    )
    assert sorted(os.listdir(folder)) == ["corpus.txt", "prepare_settings.json", "shards", "spm.model"]
    build_config = files.read_json(folder / "shards" / "build_config.json")
    assert [entry["path"] for entry in build_config["inputs"]] == ["../corpus.txt"]
